/*
 * topk, optimised: sampled threshold, one candidate pass and a radix select among the
 * candidates (gk_sel_topk); same entries as ref/topk.c, including the tie rule.
 */
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

static int topk_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t k = gk_sparse_spec_k(call->spec, call->layer);
    int rc = gk_sel_topk(x, call->layer->numel, k, send);
    if (rc)
        return rc;
    *bytes = k * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int topk_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0,
                         gk_sparse_spec_k(call->spec, call->layer));
}

const gk_codec_impl gk_topk_cpu = {.encode = topk_cpu_encode, .decode = topk_cpu_decode};
