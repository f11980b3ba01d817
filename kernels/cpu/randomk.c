/*
 * randomk, optimised: the shared draw marks a bitmap (n / 8 bytes instead of n), and
 * the chosen indices are visited in ascending order by scanning its words, so the
 * passes cost O(k + n / 64) besides clearing out. Same values and order as ref/randomk.c.
 */
#include <stdlib.h>

#include "../sparse.h"
#include "gcomp.h"

static void randomk_cpu_mark(void *ctx, size_t i)
{
    ((uint64_t *)ctx)[i >> 6] |= (uint64_t)1 << (i & 63);
}

static bool randomk_cpu_marked(void *ctx, size_t i)
{
    return (((uint64_t *)ctx)[i >> 6] >> (i & 63)) & 1;
}

/* The bitmap of the shared draw; NULL when out of memory. */
static uint64_t *randomk_cpu_bitmap(const gk_call *call, size_t k)
{
    size_t n = call->layer->numel;
    uint64_t *bits = calloc((n + 63) / 64, sizeof(*bits));
    if (bits)
        gk_sparse_floyd(call->seed, call->layer->id, call->step, n, k, randomk_cpu_mark,
                        randomk_cpu_marked, bits);
    return bits;
}

static int randomk_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t k = gk_sparse_spec_k(call->spec, call->layer), j = 0;
    uint64_t *bits = randomk_cpu_bitmap(call, k);
    if (!bits)
        return GCOMP_NOMEM;
    float *val = send;
    for (size_t w = 0; w < (call->layer->numel + 63) / 64; w++)
        for (uint64_t b = bits[w]; b; b &= b - 1)
            val[j++] = x[w * 64 + (size_t)__builtin_ctzll(b)];
    free(bits);
    *bytes = k * sizeof(float);
    return GCOMP_OK;
}

static int randomk_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    size_t k = gk_sparse_spec_k(call->spec, call->layer), j = 0;
    if (nrecv != 1 || !recv || !recv[0] || bytes[0] != k * sizeof(float))
        return GCOMP_INVALID;
    uint64_t *bits = randomk_cpu_bitmap(call, k);
    if (!bits)
        return GCOMP_NOMEM;
    const float *sum = recv[0];
    float wf = (float)call->nodes;
    memset(out, 0, call->layer->numel * sizeof(*out));
    for (size_t w = 0; w < (call->layer->numel + 63) / 64; w++)
        for (uint64_t b = bits[w]; b; b &= b - 1) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(b);
            out[i] = sum[j++] / wf;
            x[i] = 0.0f;
        }
    free(bits);
    return GCOMP_OK;
}

const gk_codec_impl gk_randomk_cpu = {.encode = randomk_cpu_encode,
                                      .decode = randomk_cpu_decode};
