/*
 * mstopk: approximate Top-K without sorting (MSTop-K, Shi et al. 2021; algorithms.md
 * 2.3). With a = mean|x| and u = max|x|, 20 bisection steps on thr = a + t (u - a)
 * track k1 = the largest count(|x| >= thr) <= k (at thr1) and k2 = the smallest count
 * > k (at thr2); the selection is {|x| >= thr1} plus a run of k - k1 consecutive
 * elements (in index order) of {thr2 <= |x| < thr1}, starting at a node-local random
 * offset. Exactly k entries by allgather (sparse.h). Before any count <= k is seen,
 * thr1 is +inf (the paper's 0 would select everything).
 */
#include <math.h>

#include "../sparse.h"
#include "gcomp.h"

static size_t mstopk_ref_count(const float *x, size_t n, float thr)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += fabsf(x[i]) >= thr;
    return c;
}

static int mstopk_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double a;
    float u;
    gk_sparse_abs_mean_max_ref(x, n, &a, &u);
    gk_mstopk_search s = gk_mstopk_start(k, n);
    for (int step = 0; step < GK_MSTOPK_STEPS; step++) {
        double t = gk_mstopk_next_t(&s);
        float thr = gk_sparse_bisect_thr(a, u, t);
        gk_mstopk_record(&s, t, thr, mstopk_ref_count(x, n, thr));
    }
    size_t start = gk_mstopk_run_start(call, &s), need = k - s.k1, pos = 0, c = 0;
    for (size_t i = 0; i < n; i++) {
        float m = fabsf(x[i]);
        if (m >= s.thr1) {
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
        } else if (m >= s.thr2) {
            if (pos >= start && pos < start + need)
                gk_sparse_put(send, c++, (uint32_t)i, x[i]);
            pos++;
        }
    }
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int mstopk_ref_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, NULL, 0,
                                gk_sparse_spec_k(call->spec, call->layer));
}

static const gk_codec_impl mstopk_ref = {.encode = mstopk_ref_encode,
                                         .decode = mstopk_ref_decode};

static const gk_param_desc mstopk_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "fraction of each layer's elements sent, k = max(1, floor(density * numel))"},
};

const gk_codec gk_codec_mstopk = {
    .name = "mstopk",
    .summary = "MSTop-K: Top-K by 20-step threshold bisection, exactly k, allgather",
    .params = mstopk_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_k,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &mstopk_ref, [GK_BACKEND_CPU] = &gk_mstopk_cpu},
};
