/*
 * sparse.c: the parts of the sparsifiers that ref/ and cpu/ share (see sparse.h).
 */
#include "sparse.h"

#include <math.h>

#include "gcomp.h"
#include "rng.h"

size_t gk_sparse_k(double density, size_t numel)
{
    double k = floor(density * (double)numel);
    if (k < 1.0)
        return 1;
    if (k >= (double)numel)
        return numel;
    return (size_t)k;
}

gk_coll gk_sparse_coll_allgather(const gk_spec *spec, int phase)
{
    (void)spec;
    (void)phase;
    return GK_COLL_ALLGATHER;
}

size_t gk_sparse_max_bytes_k(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)phase;
    return gk_sparse_spec_k(spec, layer) * GK_SPARSE_ENTRY;
}

size_t gk_sparse_max_bytes_any(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return layer->numel * GK_SPARSE_ENTRY;
}

size_t gk_sparse_max_bytes_values(const gk_spec *spec, const gk_layer *layer,
                                  int phase, uint64_t step)
{
    (void)step;
    (void)phase;
    return gk_sparse_spec_k(spec, layer) * sizeof(float);
}

int gk_sparse_check(const gk_call *call, const void *const *recv, const size_t *bytes,
                    int nrecv, size_t max_count, bool *sorted)
{
    size_t n = call->layer->numel;
    bool inorder = true;
    if (nrecv != call->nodes || call->node < 0 || call->node >= nrecv || !recv || !bytes)
        return GCOMP_INVALID;
    for (int w = 0; w < nrecv; w++) {
        if (bytes[w] % GK_SPARSE_ENTRY || bytes[w] / GK_SPARSE_ENTRY > max_count)
            return GCOMP_PROTOCOL;
        size_t count = bytes[w] / GK_SPARSE_ENTRY;
        if (count && !recv[w])
            return GCOMP_INVALID;
        uint32_t prev = 0;
        for (size_t j = 0; j < count; j++) {
            uint32_t i = gk_sparse_idx(recv[w], j);
            if (i >= n)
                return GCOMP_PROTOCOL;
            inorder = inorder && i >= prev;
            prev = i;
        }
    }
    if (sorted)
        *sorted = inorder;
    return GCOMP_OK;
}

int gk_sparse_decode_ref(const gk_call *call, float *x, const void *const *recv,
                         const size_t *bytes, int nrecv, float *out, float *const *zero,
                         int nzero, size_t max_count)
{
    int rc = gk_sparse_check(call, recv, bytes, nrecv, max_count, NULL);
    if (rc)
        return rc;
    size_t n = call->layer->numel;
    for (size_t i = 0; i < n; i++)
        out[i] = 0.0f;
    for (int w = 0; w < nrecv; w++)
        for (size_t j = 0; j < bytes[w] / GK_SPARSE_ENTRY; j++)
            out[gk_sparse_idx(recv[w], j)] += gk_sparse_val(recv[w], j);
    for (size_t i = 0; i < n; i++)
        out[i] /= (float)call->nodes;
    const void *own = recv[call->node];
    for (size_t j = 0; j < bytes[call->node] / GK_SPARSE_ENTRY; j++) {
        uint32_t i = gk_sparse_idx(own, j);
        x[i] = 0.0f;
        for (int z = 0; z < nzero; z++)
            zero[z][i] = 0.0f;
    }
    return GCOMP_OK;
}

void gk_sparse_floyd(uint64_t seed, uint64_t layer_id, uint64_t step, size_t n, size_t k,
                     void (*mark)(void *ctx, size_t i), bool (*marked)(void *ctx, size_t i),
                     void *ctx)
{
    gk_rng r;
    gk_rng_seed(&r, seed, layer_id, step, 0);
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)gk_rng_below(&r, (uint64_t)j + 1);
        mark(ctx, marked(ctx, t) ? j : t);
    }
}

size_t gk_sparse_block_offset(uint64_t seed, uint64_t layer_id, uint64_t step, size_t n)
{
    gk_rng r;
    gk_rng_seed(&r, seed, layer_id, step, 0);
    return (size_t)gk_rng_below(&r, n);
}

size_t gk_mstopk_run_start(const gk_call *call, const gk_mstopk_search *s)
{
    gk_rng r;
    gk_rng_seed(&r, call->seed, call->layer->id, call->step, gk_sparse_local_stream(call->node));
    size_t need = s->k - s->k1, len = s->k2 - s->k1;
    return (size_t)gk_rng_below(&r, (uint64_t)(len - need) + 1);
}

size_t gk_dgc_nsamples(size_t n)
{
    size_t s = n / 100;
    return s ? s : 1;
}

size_t gk_dgc_ntop(size_t n, double density, size_t nsamples)
{
    double t = floor(0.01 * (double)n * density);
    if (t < 1.0)
        return 1;
    return t < (double)nsamples ? (size_t)t : nsamples;
}

int gk_sidco_ratios(double density, int max_stages, double *ratios)
{
    int cap = max_stages > 0 && max_stages < GK_SIDCO_MAX_STAGES ? max_stages
                                                                 : GK_SIDCO_MAX_STAGES;
    if (density >= 0.75 || cap == 1) {
        ratios[0] = density;
        return 1;
    }
    int s = 0;
    double prod = 0.75;
    ratios[s++] = 0.75;
    while (prod * 0.25 > density && s + 1 < cap) {
        ratios[s++] = 0.25;
        prod *= 0.25;
    }
    ratios[s++] = density / prod;
    return s;
}

void gk_sparse_abs_mean_max_ref(const float *x, size_t n, double *mean, float *max)
{
    double sum = 0.0;
    float u = 0.0f;
    for (size_t i = 0; i < n; i++) {
        sum += fabsf(x[i]);
        u = fabsf(x[i]) > u ? fabsf(x[i]) : u;
    }
    *mean = sum / (double)n;
    *max = u;
}
