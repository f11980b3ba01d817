/*
 * mstopk, optimised: the same 20 bisection steps as ref/mstopk.c without 20 passes.
 * The first 3 steps only try t = j/8, so one pass counts at t = 0, 1/8, ..., 7/8; the
 * later thresholds lie between thr(l) and thr(r), so a second pass keeps the keys in
 * that interval and the 17 remaining steps count and halve that candidate set. A third
 * pass emits {|x| >= thr1} and the run from {thr2 <= |x| < thr1}.
 */
#include <stdlib.h>

#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

/* Keys of x in [lo, hi) into cand (room for cap); returns how many were stored. Two
   block masks (key >= lo, key >= hi) leave the in-window bits set, so blocks without a
   candidate cost one branch. */
static size_t mstopk_collect(const float *x, size_t n, uint32_t lo, uint32_t hi, uint32_t *cand,
                             size_t cap)
{
    size_t c = 0, i = 0;
    for (; i + GK_SEL_BLOCK <= n && c < cap; i += GK_SEL_BLOCK) {
        unsigned m = gk_sel_block_mask(x + i, lo) & ~gk_sel_block_mask(x + i, hi);
        for (; m && c < cap; m &= m - 1)
            cand[c++] = gk_sparse_key(x[i + (size_t)__builtin_ctz(m)]);
    }
    for (; i < n && c < cap; i++) {
        uint32_t key = gk_sparse_key(x[i]);
        if (key >= lo && key < hi)
            cand[c++] = key;
    }
    return c;
}

/* Emits {key >= key1} and the elements of {key2 <= key < key1} whose rank pos among
   them lies in [start, start + need); returns the count. Only blocks with a key >= key2
   are looked at, bit by bit. */
static size_t mstopk_emit(const float *x, size_t n, uint32_t key1, uint32_t key2, size_t start,
                          size_t need, void *send)
{
    size_t pos = 0, c = 0, i = 0;
    for (; i < n; i += GK_SEL_BLOCK) {
        size_t len = n - i < GK_SEL_BLOCK ? n - i : GK_SEL_BLOCK;
        unsigned m;
        if (len == GK_SEL_BLOCK) {
            m = gk_sel_block_mask(x + i, key2);
        } else {
            m = 0;
            for (size_t j = 0; j < len; j++)
                m |= (unsigned)(gk_sparse_key(x[i + j]) >= key2) << j;
        }
        for (; m; m &= m - 1) {
            size_t r = i + (size_t)__builtin_ctz(m);
            if (gk_sparse_key(x[r]) >= key1) {
                gk_sparse_put(send, c++, (uint32_t)r, x[r]);
            } else {
                if (pos >= start && pos < start + need)
                    gk_sparse_put(send, c++, (uint32_t)r, x[r]);
                pos++;
            }
        }
    }
    return c;
}

static int mstopk_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    double a;
    float u, thr8[8];
    uint32_t maxkey, t8[8];
    size_t c8[8];
    gk_sel_grid8(x, n, &a, &u, &maxkey, thr8, t8);
    gk_sel_count_ge_multi(x, n, t8, 8, c8);
    gk_mstopk_search s = gk_mstopk_start(k, n);
    for (int step = 0; step < 3; step++) {
        double t = gk_mstopk_next_t(&s);
        int j = (int)(t * 8);
        gk_mstopk_record(&s, t, thr8[j], c8[j]);
    }
    /* Keys at or above hi are counted in base; the candidates lie in [lo, hi). */
    int jl = (int)(s.l * 8);
    uint32_t lo = t8[jl], hi = s.r < 1.0 ? t8[(int)(s.r * 8)] : maxkey + 1;
    size_t base = s.r < 1.0 ? c8[(int)(s.r * 8)] : 0;
    size_t nc = c8[jl] - base;
    uint32_t *cand = malloc((nc ? nc : 1) * sizeof(*cand));
    if (!cand)
        return GCOMP_NOMEM;
    nc = mstopk_collect(x, n, lo, hi, cand, nc);
    for (int step = 3; step < GK_MSTOPK_STEPS; step++) {
        double t = gk_mstopk_next_t(&s);
        float thr = gk_sparse_bisect_thr(a, u, t);
        uint32_t kt = gk_sparse_key(thr);
        size_t above = 0;
        for (size_t j = 0; j < nc; j++)
            above += cand[j] >= kt;
        size_t nnz = base + above;
        gk_mstopk_record(&s, t, thr, nnz);
        /* Keep the half of the candidates the next thresholds can still split. */
        bool low = nnz <= k;
        size_t m = 0;
        for (size_t j = 0; j < nc; j++)
            if ((cand[j] < kt) == low)
                cand[m++] = cand[j];
        nc = m;
        base = low ? nnz : base;
    }
    free(cand);
    uint32_t key1 = gk_sparse_key(s.thr1), key2 = gk_sparse_key(s.thr2);
    size_t start = gk_mstopk_run_start(call, &s);
    size_t c = mstopk_emit(x, n, key1, key2, start, k - s.k1, send);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int mstopk_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, NULL, 0,
                         gk_sparse_spec_k(call->spec, call->layer));
}

const gk_codec_impl gk_mstopk_cpu = {.encode = mstopk_cpu_encode, .decode = mstopk_cpu_decode};
