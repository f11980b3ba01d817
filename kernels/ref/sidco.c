/*
 * sidco: SIDCo's exponential-model threshold (Abdelmoniem et al. 2021; algorithms.md
 * 2.3), no sort. Stage 1: thr = -mean(|x|) ln(ratio_1); each later stage fits the
 * elements kept so far (|x| >= thr): thr = -(mean - min) ln(ratio_s) + min. The stage
 * ratios multiply to the target density k/n (gk_sidco_ratios). Sends the nonzero
 * elements with |x| >= the last thr: a variable count by allgather (sparse.h).
 * The paper's normalisation x = |g| / |g|_2 scales every threshold and |x| alike, so it
 * is left out: the selection is the same and a zero layer needs no special case.
 */
#include <math.h>

#include "../sparse.h"
#include "gcomp.h"

static int sidco_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double ratios[GK_SIDCO_MAX_STAGES];
    int stages = gk_sidco_ratios((double)k / (double)n, (int)call->spec->v[GK_SIDCO_STAGES],
                                 ratios);
    float thr = 0.0f;
    for (int s = 0; s < stages; s++) {
        double sum = 0.0;
        size_t kept = 0;
        float mn = INFINITY;
        for (size_t i = 0; i < n; i++) {
            float m = fabsf(x[i]);
            if (m >= thr) {
                sum += m;
                kept++;
                mn = m < mn ? m : mn;
            }
        }
        if (kept == 0)
            break;
        double mean = sum / (double)kept, shift = s == 0 ? 0.0 : (double)mn;
        thr = (float)(-(mean - shift) * log(ratios[s]) + shift);
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) >= thr && x[i] != 0.0f)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int sidco_ref_decode(const gk_call *call, float *x, const void *const *recv,
                            const size_t *bytes, int nrecv, float *out)
{
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

static const gk_codec_impl sidco_ref = {.encode = sidco_ref_encode, .decode = sidco_ref_decode};

static const gk_param_desc sidco_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "target fraction sent, k = max(1, floor(density * numel))"},
    {.key = "stages", .def = 0, .min = 0, .max = GK_SIDCO_MAX_STAGES, .integer = true,
     .help = "most fitting stages; 0: as many as the 0.75/0.25 schedule needs"},
};

const gk_codec gk_codec_sidco = {
    .name = "sidco",
    .summary = "SIDCo: multi-stage exponential-fit threshold, variable size, allgather",
    .params = sidco_params,
    .nparams = 2,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_any,
    .impl = {[GK_BACKEND_REF] = &sidco_ref, [GK_BACKEND_CPU] = &gk_sidco_cpu},
};
