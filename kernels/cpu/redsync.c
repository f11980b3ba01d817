/*
 * redsync, optimised: the search takes at most 3 steps, all at t = j/8, so one pass
 * counts at the 7 thresholds j/8 (j = 1..7) and the search runs on those counts; a second
 * pass emits. Same selection as ref/redsync.c for the same mean.
 */
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

static int redsync_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double a;
    float u, thr8[8];
    uint32_t maxkey, t8[8];
    size_t c8[8];
    gk_sel_grid8(x, n, &a, &u, &maxkey, thr8, t8);
    for (int j = 1; j < 8; j++)
        t8[j] += 1; /* count(|x| > thr) */
    gk_sel_count_ge_multi(x, n, t8 + 1, 7, c8 + 1);
    double l = 0.0, r = 1.0;
    float thr = 0.0f;
    while (r - l > GK_REDSYNC_EPS) {
        double t = l + (r - l) / 2;
        int j = (int)(t * 8);
        thr = thr8[j];
        if (gk_redsync_record(&l, &r, t, c8[j], k))
            break;
    }
    *bytes = gk_sel_emit_ge(x, n, gk_sparse_key(thr) + 1, send) * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int redsync_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

const gk_codec_impl gk_redsync_cpu = {.encode = redsync_cpu_encode,
                                      .decode = redsync_cpu_decode};
