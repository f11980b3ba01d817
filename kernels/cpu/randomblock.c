/*
 * randomblock, optimised: the block is at most two contiguous pieces, copied and
 * cleared with memcpy / memset. Same values and order as ref/randomblock.c.
 */
#include "../sparse.h"
#include "gcomp.h"

static int randomblock_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    size_t off = gk_sparse_block_offset(call->seed, call->layer->id, call->step, n);
    size_t first = k < n - off ? k : n - off;
    memcpy(send, x + off, first * sizeof(float));
    memcpy((float *)send + first, x, (k - first) * sizeof(float));
    *bytes = k * sizeof(float);
    return GCOMP_OK;
}

/* out[i] = sum[i] / wf and x[i] = 0 for i < len. */
static void randomblock_cpu_piece(float *restrict out, float *restrict x,
                                  const float *restrict sum, float wf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = sum[i] / wf;
    memset(x, 0, len * sizeof(float));
}

static int randomblock_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                                  const size_t *bytes, int nrecv, float *out)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    if (nrecv != 1 || !recv || !recv[0] || bytes[0] != k * sizeof(float))
        return GCOMP_INVALID;
    size_t off = gk_sparse_block_offset(call->seed, call->layer->id, call->step, n);
    size_t first = k < n - off ? k : n - off, wrap = k - first;
    const float *sum = recv[0];
    float wf = (float)call->nodes;
    /* Outside the block: [wrap, off) and [off + first, n). */
    memset(out + wrap, 0, (off - wrap) * sizeof(float));
    memset(out + off + first, 0, (n - off - first) * sizeof(float));
    randomblock_cpu_piece(out + off, x + off, sum, wf, first);
    randomblock_cpu_piece(out, x, sum + first, wf, wrap);
    return GCOMP_OK;
}

const gk_codec_impl gk_randomblock_cpu = {.encode = randomblock_cpu_encode,
                                          .decode = randomblock_cpu_decode};
