/*
 * sidco, optimised: each stage is one vectorised masked pass (sum, count and minimum of
 * the kept elements), then one emitting pass. Same stages as ref/sidco.c.
 */
#include <math.h>

#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

static int sidco_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double ratios[GK_SIDCO_MAX_STAGES];
    int stages = gk_sidco_ratios((double)k / (double)n, (int)call->spec->v[GK_SIDCO_STAGES],
                                 ratios);
    float thr = 0.0f;
    for (int s = 0; s < stages; s++) {
        double sum;
        size_t kept;
        uint32_t minkey;
        gk_sel_masked_stats(x, n, gk_sparse_key(thr), &sum, &kept, &minkey);
        if (kept == 0)
            break;
        float mn;
        memcpy(&mn, &minkey, sizeof(mn));
        double mean = sum / (double)kept, shift = s == 0 ? 0.0 : (double)mn;
        thr = (float)(-(mean - shift) * log(ratios[s]) + shift);
    }
    uint32_t t = gk_sparse_key(thr);
    *bytes = gk_sel_emit_ge(x, n, t ? t : 1, send) * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int sidco_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                            const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

const gk_codec_impl gk_sidco_cpu = {.encode = sidco_cpu_encode, .decode = sidco_cpu_decode};
