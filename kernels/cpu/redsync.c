/*
 * redsync, optimised. The search takes at most 3 steps, all at t = j/8: t = 1/2, then
 * 1/4 or 3/4, then an odd eighth; after the third step the interval is 1/8 < 0.2, so
 * the loop ends at that threshold whatever its count. Only the counts at j = 2, 4, 6
 * can decide the search. After the stats pass, the search is first run on a strided
 * sample to guess the final threshold; one pass then emits at the guess and counts
 * exactly at j = 2, 4, 6. The search rerun on those exact counts confirms the guess
 * (the usual case: 2 passes) or names the threshold for one more emitting pass. Same
 * selection as ref/redsync.c for the same mean.
 */
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

/* Elements of the strided sample that guesses the search's outcome. */
#define REDSYNC_SAMPLE 8192

/* The search on counts cnt[j] at t = j/8 (only j = 2, 4, 6 are read); returns the j of
   the threshold it ends at. */
static int redsync_cpu_search(const size_t *cnt, size_t k)
{
    double l = 0.0, r = 1.0;
    int j = 0;
    while (r - l > GK_REDSYNC_EPS) {
        double t = l + (r - l) / 2;
        j = (int)(t * 8);
        if (j % 2) /* the third step: its count is never used */
            break;
        if (gk_redsync_record(&l, &r, t, cnt[j], k))
            break;
    }
    return j;
}

static int redsync_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double a;
    float u, thr8[8];
    uint32_t maxkey, t8[8];
    gk_sel_grid8(x, n, &a, &u, &maxkey, thr8, t8);
    for (int j = 0; j < 8; j++)
        t8[j] += 1; /* count(|x| > thr) */
    /* The guess: counts of the sample at j = 2, 4, 6, scaled to n. */
    size_t s = n < REDSYNC_SAMPLE ? n : REDSYNC_SAMPLE, cnt[8] = {0};
    for (size_t q = 0; q < s; q++) {
        uint32_t key = gk_sparse_key(x[s == n ? q : (size_t)((double)q * (double)n / (double)s)]);
        for (int j = 2; j < 8; j += 2)
            cnt[j] += key >= t8[j];
    }
    for (int j = 2; j < 8; j += 2)
        cnt[j] = (size_t)((double)cnt[j] * (double)n / (double)s);
    int guess = redsync_cpu_search(cnt, k);
    /* The pass: emit at the guess, count exactly at j = 2, 4, 6. */
    const uint32_t ct[3] = {t8[2], t8[4], t8[6]};
    size_t exact[3];
    size_t c = gk_sel_emit_ge_count(x, n, t8[guess], send, ct, 3, exact);
    cnt[2] = exact[0];
    cnt[4] = exact[1];
    cnt[6] = exact[2];
    int j = redsync_cpu_search(cnt, k);
    if (j != guess)
        c = gk_sel_emit_ge(x, n, t8[j], send);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int redsync_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

const gk_codec_impl gk_redsync_cpu = {.encode = redsync_cpu_encode,
                                      .decode = redsync_cpu_decode};
