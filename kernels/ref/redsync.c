/*
 * redsync: trimmed Top-K (RedSync, Fang et al. 2019, as in GraVAC; algorithms.md 2.3).
 * With a = mean|x| and u = max|x|, bisect t in [0, 1] on thr = a + t (u - a) until the
 * interval is narrower than 0.2 (at most 3 steps): accept as soon as
 * k/2 < count(|x| > thr) < 2k, raise l when the count is >= 2k, lower r otherwise.
 * Sends {|x| > thr} for the last thr tried: a variable count by allgather (sparse.h).
 */
#include <math.h>

#include "../sparse.h"
#include "gcomp.h"

static int redsync_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double a;
    float u;
    gk_sparse_abs_mean_max_ref(x, n, &a, &u);
    double l = 0.0, r = 1.0;
    float thr = 0.0f;
    while (r - l > GK_REDSYNC_EPS) {
        double t = l + (r - l) / 2;
        thr = gk_sparse_bisect_thr(a, u, t);
        size_t nnz = 0;
        for (size_t i = 0; i < n; i++)
            nnz += fabsf(x[i]) > thr;
        if (gk_redsync_record(&l, &r, t, nnz, k))
            break;
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) > thr)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int redsync_ref_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

static const gk_codec_impl redsync_ref = {.encode = redsync_ref_encode,
                                          .decode = redsync_ref_decode};

static const gk_param_desc redsync_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "target fraction sent: accepts k/2 < count < 2k, k = max(1, floor(density * numel))"},
};

const gk_codec gk_codec_redsync = {
    .name = "redsync",
    .summary = "RedSync trimmed Top-K: coarse threshold search, variable size, allgather",
    .params = redsync_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_any,
    .impl = {[GK_BACKEND_REF] = &redsync_ref, [GK_BACKEND_CPU] = &gk_redsync_cpu},
};
