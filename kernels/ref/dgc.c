/*
 * dgc: Deep Gradient Compression (Lin et al. 2018; algorithms.md 2.3). Momentum
 * correction u = m u + g, v = v + u (v is the EF buffer x), then a threshold estimated
 * from a sample: max(1, 1% of n) elements drawn from the node-local stream, thr = the
 * smallest of their top max(1, 1% n density); up to 10 refinements (x1.3 when
 * count(|x| >= thr) > 1.3 k, x0.7 when < 0.7 k). Sends the nonzero elements with
 * |x| >= thr, a variable count by allgather (sparse.h); u and x are zeroed where sent.
 *
 * The engine adds this step's g to x before encode, so with error feedback the state
 * keeps r = the residual decode left in x and recovers g = x - r; with ef = 0, x = g.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../rng.h"
#include "../sparse.h"
#include "gcomp.h"

static int dgc_state_new(const gk_spec *spec, const gk_layer *layer, void **state)
{
    gk_dgc_state *st = calloc(1, sizeof(*st));
    if (!st)
        return GCOMP_NOMEM;
    st->u = calloc(layer->numel, sizeof(float));
    st->r = spec->ef ? calloc(layer->numel, sizeof(float)) : NULL;
    if (!st->u || (spec->ef && !st->r)) {
        free(st->u);
        free(st->r);
        free(st);
        return GCOMP_NOMEM;
    }
    *state = st;
    return GCOMP_OK;
}

static void dgc_state_free(void *state)
{
    gk_dgc_state *st = state;
    if (!st)
        return;
    free(st->u);
    free(st->r);
    free(st);
}

static int dgc_descending(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return a > b ? -1 : a < b;
}

/* Count of the nonzero elements with |x| >= thr. */
static size_t dgc_ref_count(const float *x, size_t n, float thr)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += fabsf(x[i]) >= thr && x[i] != 0.0f;
    return c;
}

static int dgc_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_dgc_state *st = call->state;
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    float m = (float)call->spec->v[GK_DGC_MOMENTUM];
    if (!st)
        return GCOMP_INVALID;
    for (size_t i = 0; i < n; i++) {
        float g = st->r ? x[i] - st->r[i] : x[i];
        float v = x[i] + m * st->u[i];
        st->u[i] = m * st->u[i] + g;
        x[i] = v;
        if (st->r)
            st->r[i] = v;
    }
    size_t ns = gk_dgc_nsamples(n), nt = gk_dgc_ntop(n, call->spec->v[GK_SPARSE_DENSITY], ns);
    float *sample = malloc(ns * sizeof(*sample));
    if (!sample)
        return GCOMP_NOMEM;
    gk_rng r;
    gk_rng_seed(&r, call->seed, call->layer->id, call->step, gk_sparse_local_stream(call->node));
    for (size_t j = 0; j < ns; j++)
        sample[j] = fabsf(x[gk_rng_below(&r, n)]);
    qsort(sample, ns, sizeof(*sample), dgc_descending);
    float thr = sample[nt - 1];
    free(sample);
    for (int it = 0;; it++) {
        float f = gk_dgc_factor(dgc_ref_count(x, n, thr), k);
        if (f == 0.0f || it == GK_DGC_REFINE)
            break;
        thr *= f;
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) >= thr && x[i] != 0.0f)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int dgc_ref_decode(const gk_call *call, float *x, const void *const *recv,
                          const size_t *bytes, int nrecv, float *out)
{
    gk_dgc_state *st = call->state;
    if (!st)
        return GCOMP_INVALID;
    float *zero[2] = {st->u, st->r};
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, zero, st->r ? 2 : 1,
                                call->layer->numel);
}

/* The momentum and the residual do not depend on the density or the momentum factor:
   a change of those keeps them (rebuilding would fold the old residual, still in x,
   into the momentum a second time). Error feedback on or off changes what r means. */
static bool dgc_state_keeps(const gk_spec *from, const gk_spec *to)
{
    return from->ef == to->ef;
}

/* Checkpoints ('DGC ' record, version 1): numel, whether r is kept, u, then r. */
static int dgc_state_save(const void *state, const gk_layer *layer, gk_writer *w)
{
    const gk_dgc_state *st = state;
    size_t n = layer->numel;
    gk_put_tag(w, "DGC ", 1);
    gk_put_u64(w, n);
    gk_put_u8(w, st->r != NULL);
    gk_put_f32s(w, st->u, n);
    if (st->r)
        gk_put_f32s(w, st->r, n);
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

static int dgc_state_load(void *state, const gk_layer *layer, gk_reader *r)
{
    gk_dgc_state *st = state;
    size_t n = layer->numel;
    uint64_t numel;
    uint8_t has_r;
    if (gk_get_tag(r, "DGC ", 1, NULL) && gk_get_u64(r, &numel) && gk_get_u8(r, &has_r) &&
        (numel != n || (has_r != 0) != (st->r != NULL)))
        gk_reader_fail(r, "dgc state of %llu elements%s, the layer has %zu%s",
                       (unsigned long long)numel, has_r ? " with a residual" : "", n,
                       st->r ? " with a residual" : "");
    if (r->failed)
        return GCOMP_PROTOCOL;
    /* Read into a copy, so that a refused state leaves st as it was. */
    size_t total = st->r ? 2 * n : n;
    float *in = malloc(total * sizeof(float) + 1);
    if (!in) {
        gk_reader_fail(r, "out of memory for a dgc state of %zu elements", n);
        return GCOMP_NOMEM;
    }
    if (gk_get_f32s(r, in, total)) {
        memcpy(st->u, in, n * sizeof(float));
        if (st->r)
            memcpy(st->r, in + n, n * sizeof(float));
    }
    free(in);
    return r->failed ? GCOMP_PROTOCOL : GCOMP_OK;
}

static const gk_codec_impl dgc_ref = {.encode = dgc_ref_encode, .decode = dgc_ref_decode};

static const gk_param_desc dgc_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "target fraction sent, k = max(1, floor(density * numel))"},
    {.key = "momentum", .def = 0.9, .min = 0.0, .max = 1.0,
     .help = "momentum m of the correction u = m u + g"},
};

const gk_codec gk_codec_dgc = {
    .name = "dgc",
    .summary = "DGC: sampled threshold with momentum correction, variable size, allgather",
    .params = dgc_params,
    .nparams = 2,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_any,
    .state_new = dgc_state_new,
    .state_free = dgc_state_free,
    .state_keeps = dgc_state_keeps,
    .state_save = dgc_state_save,
    .state_load = dgc_state_load,
    .impl = {[GK_BACKEND_REF] = &dgc_ref, [GK_BACKEND_CPU] = &gk_dgc_cpu},
};
