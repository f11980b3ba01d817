/*
 * threshold, optimised: one vectorised pass that skips blocks with nothing above lambda.
 */
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

static int threshold_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    /* |x| > lambda is key >= key(lambda) + 1. */
    uint32_t t = gk_sparse_key((float)call->spec->v[GK_SPARSE_DENSITY]) + 1;
    *bytes = gk_sel_emit_ge(x, call->layer->numel, t, send) * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int threshold_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                                const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

const gk_codec_impl gk_threshold_cpu = {.encode = threshold_cpu_encode,
                                        .decode = threshold_cpu_decode};
