/*
 * dgc, optimised: the momentum correction in one vectorised pass, the sample's threshold
 * by radix select instead of a sort, vectorised counting passes for the refinements and
 * one emitting pass. Same arithmetic and draws as ref/dgc.c, so the same entries.
 */
#include <stdlib.h>

#include "../rng.h"
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

/* v = x + m u; u = m u + (x - r); x = v; r = v (r NULL: ef = 0, g = x). */
static void dgc_cpu_momentum(float *restrict x, float *restrict u, float *restrict r, float m,
                             size_t n)
{
    size_t i = 0;
    if (r) {
        for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK)
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                float g = x[i + j] - r[i + j], v = x[i + j] + m * u[i + j];
                u[i + j] = m * u[i + j] + g;
                x[i + j] = v;
                r[i + j] = v;
            }
    } else {
        for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK)
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                float g = x[i + j], v = x[i + j] + m * u[i + j];
                u[i + j] = m * u[i + j] + g;
                x[i + j] = v;
            }
    }
    for (; i < n; i++) {
        float g = r ? x[i] - r[i] : x[i], v = x[i] + m * u[i];
        u[i] = m * u[i] + g;
        x[i] = v;
        if (r)
            r[i] = v;
    }
}

/* The nonzero elements with |x| >= thr are those with key >= max(key(thr), 1). */
static uint32_t dgc_cpu_key(float thr)
{
    uint32_t t = gk_sparse_key(thr);
    return t ? t : 1;
}

static int dgc_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_dgc_state *st = call->state;
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    if (!st)
        return GCOMP_INVALID;
    dgc_cpu_momentum(x, st->u, st->r, (float)call->spec->v[GK_DGC_MOMENTUM], n);
    size_t ns = gk_dgc_nsamples(n), nt = gk_dgc_ntop(n, call->spec->v[GK_SPARSE_DENSITY], ns);
    uint32_t *sample = malloc(ns * sizeof(*sample));
    if (!sample)
        return GCOMP_NOMEM;
    gk_rng r;
    gk_rng_seed(&r, call->seed, call->layer->id, call->step, gk_sparse_local_stream(call->node));
    for (size_t j = 0; j < ns; j++)
        sample[j] = gk_sparse_key(x[gk_rng_below(&r, n)]);
    size_t above;
    uint32_t tkey = gk_sel_kth_largest(sample, ns, nt, &above);
    free(sample);
    float thr;
    memcpy(&thr, &tkey, sizeof(thr));
    for (int it = 0;; it++) {
        uint32_t t = dgc_cpu_key(thr);
        size_t count;
        gk_sel_count_ge_multi(x, n, &t, 1, &count);
        float f = gk_dgc_factor(count, k);
        if (f == 0.0f || it == GK_DGC_REFINE)
            break;
        thr *= f;
    }
    *bytes = gk_sel_emit_ge(x, n, dgc_cpu_key(thr), send) * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int dgc_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                          const size_t *bytes, int nrecv, float *out)
{
    gk_dgc_state *st = call->state;
    if (!st)
        return GCOMP_INVALID;
    float *zero[2] = {st->u, st->r};
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, zero, st->r ? 2 : 1,
                         call->layer->numel);
}

const gk_codec_impl gk_dgc_cpu = {.encode = dgc_cpu_encode, .decode = dgc_cpu_decode};
