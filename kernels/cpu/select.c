/*
 * select.c: selection primitives of the optimised sparsifiers (see select.h).
 */
#include "select.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../sparse.h"
#include "gcomp.h"

/* Blocks per chunk of the masked sums: float lanes add at most this many values before
   they are moved to the double total, which keeps the sums vectorised and accurate. */
#define GK_SEL_CHUNK 64

uint32_t gk_sel_kth_largest(uint32_t *keys, size_t n, size_t k, size_t *above)
{
    uint32_t prefix = 0;
    size_t gt = 0;
    for (int shift = 24;; shift -= 8) {
        size_t hist[256] = {0};
        for (size_t i = 0; i < n; i++)
            hist[(keys[i] >> shift) & 0xffu]++;
        unsigned b = 255;
        while (k > hist[b]) {
            k -= hist[b];
            gt += hist[b];
            b--;
        }
        prefix |= (uint32_t)b << shift;
        if (shift == 0)
            break;
        /* Keep only the keys in the chosen bucket; the higher bytes already agree. */
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (((keys[i] >> shift) & 0xffu) == b)
                keys[m++] = keys[i];
        n = m;
    }
    *above = gt;
    return prefix;
}

void gk_sel_abs_stats(const float *x, size_t n, double *sum, uint32_t *maxkey)
{
    double s = 0.0;
    int32_t m = 0;
    size_t i = 0;
    while (i + GK_SEL_BLOCK <= n) {
        float acc[GK_SEL_BLOCK] = {0};
        int32_t mx[GK_SEL_BLOCK] = {0};
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK)
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                int32_t key = (int32_t)gk_sparse_key(x[i + j]);
                acc[j] += fabsf(x[i + j]);
                mx[j] = key > mx[j] ? key : mx[j];
            }
        for (int j = 0; j < GK_SEL_BLOCK; j++) {
            s += acc[j];
            m = mx[j] > m ? mx[j] : m;
        }
    }
    for (; i < n; i++) {
        int32_t key = (int32_t)gk_sparse_key(x[i]);
        s += (double)fabsf(x[i]);
        m = key > m ? key : m;
    }
    *sum = s;
    *maxkey = (uint32_t)m;
}

void gk_sel_grid8(const float *x, size_t n, double *a, float *u, uint32_t *maxkey, float *thr,
                  uint32_t *key)
{
    double sum;
    gk_sel_abs_stats(x, n, &sum, maxkey);
    *a = sum / (double)n;
    memcpy(u, maxkey, sizeof(*u));
    for (int j = 0; j < 8; j++) {
        thr[j] = gk_sparse_bisect_thr(*a, *u, j / 8.0);
        key[j] = gk_sparse_key(thr[j]);
    }
}

void gk_sel_count_ge_multi(const float *x, size_t n, const uint32_t *t, int nt,
                           size_t *counts)
{
    uint32_t lane[8][GK_SEL_BLOCK] = {{0}};
    for (int q = 0; q < nt; q++)
        counts[q] = 0;
    size_t i = 0, blocks = 0;
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
        uint32_t key[GK_SEL_BLOCK];
        for (int j = 0; j < GK_SEL_BLOCK; j++)
            key[j] = gk_sparse_key(x[i + j]);
        for (int q = 0; q < nt; q++)
            for (int j = 0; j < GK_SEL_BLOCK; j++)
                lane[q][j] += key[j] >= t[q];
        /* Flush the 32-bit lane counters before they can overflow. */
        if (++blocks == (size_t)1 << 30 || i + 2 * GK_SEL_BLOCK > n) {
            for (int q = 0; q < nt; q++)
                for (int j = 0; j < GK_SEL_BLOCK; j++) {
                    counts[q] += lane[q][j];
                    lane[q][j] = 0;
                }
            blocks = 0;
        }
    }
    for (; i < n; i++)
        for (int q = 0; q < nt; q++)
            counts[q] += gk_sparse_key(x[i]) >= t[q];
}

void gk_sel_masked_stats(const float *x, size_t n, uint32_t t, double *sum, size_t *count,
                         uint32_t *minkey)
{
    /* Keys are < 2^31, so signed compares (which SSE2 has) order them correctly. */
    int32_t tt = (int32_t)(t < INT32_MAX ? t : INT32_MAX), m = INT32_MAX;
    double s = 0.0;
    size_t c = 0, i = 0;
    while (i + GK_SEL_BLOCK <= n) {
        float acc[GK_SEL_BLOCK] = {0};
        int32_t cnt[GK_SEL_BLOCK] = {0}, mn[GK_SEL_BLOCK];
        for (int j = 0; j < GK_SEL_BLOCK; j++)
            mn[j] = INT32_MAX;
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK) {
            /* Branch-free masks so that GCC vectorises: in = -1 for kept elements. */
            int32_t kept[GK_SEL_BLOCK], mkey[GK_SEL_BLOCK], in[GK_SEL_BLOCK];
            float mag[GK_SEL_BLOCK];
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                int32_t key = (int32_t)gk_sparse_key(x[i + j]);
                in[j] = -(int32_t)(key >= tt);
                kept[j] = key & in[j];
                mkey[j] = kept[j] | (INT32_MAX & ~in[j]);
            }
            memcpy(mag, kept, sizeof(mag)); /* the kept |x|, 0.0f elsewhere */
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                acc[j] += mag[j];
                cnt[j] -= in[j];
                mn[j] = mkey[j] < mn[j] ? mkey[j] : mn[j];
            }
        }
        for (int j = 0; j < GK_SEL_BLOCK; j++) {
            s += acc[j];
            c += (size_t)cnt[j];
            m = mn[j] < m ? mn[j] : m;
        }
    }
    for (; i < n; i++) {
        int32_t key = (int32_t)gk_sparse_key(x[i]);
        if (key >= tt) {
            s += (double)fabsf(x[i]);
            c++;
            m = key < m ? key : m;
        }
    }
    *sum = s;
    *count = c;
    *minkey = m == INT32_MAX ? UINT32_MAX : (uint32_t)m;
}

/* Whether any key of the block x[0..GK_SEL_BLOCK-1] is >= t (vectorised). */
static inline bool block_any_ge(const float *x, uint32_t t)
{
    uint32_t any = 0;
    for (int j = 0; j < GK_SEL_BLOCK; j++)
        any |= gk_sparse_key(x[j]) >= t;
    return any != 0;
}

size_t gk_sel_emit_ge(const float *x, size_t n, uint32_t t, void *send)
{
    size_t c = 0, i = 0;
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
        if (!block_any_ge(x + i, t))
            continue;
        for (size_t r = i; r < i + GK_SEL_BLOCK; r++)
            if (gk_sparse_key(x[r]) >= t)
                gk_sparse_put(send, c++, (uint32_t)r, x[r]);
    }
    for (; i < n; i++)
        if (gk_sparse_key(x[i]) >= t)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    return c;
}

/* Indices of the elements with key >= t, in order, into idx (room for cap); returns the
   full count, which may exceed cap (then only cap were stored). */
static size_t collect_ge(const float *x, size_t n, uint32_t t, uint32_t *idx, size_t cap)
{
    size_t c = 0, i = 0;
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
        if (!block_any_ge(x + i, t))
            continue;
        for (size_t r = i; r < i + GK_SEL_BLOCK; r++)
            if (gk_sparse_key(x[r]) >= t) {
                if (c < cap)
                    idx[c] = (uint32_t)r;
                c++;
            }
    }
    for (; i < n; i++)
        if (gk_sparse_key(x[i]) >= t) {
            if (c < cap)
                idx[c] = (uint32_t)i;
            c++;
        }
    return c;
}

int gk_sel_topk(const float *x, size_t n, size_t k, void *send)
{
    if (k >= n) {
        for (size_t i = 0; i < n; i++)
            gk_sparse_put(send, i, (uint32_t)i, x[i]);
        return GCOMP_OK;
    }
    /*
     * Estimate a threshold t with count(key >= t) a little above k: the r-th largest of s
     * evenly strided samples, r set about three standard deviations above the expected
     * rank. With s == n the sample is the tensor and t is exact.
     */
    size_t s = n <= 4096 ? n : (n >> 8 > 4096 ? n >> 8 : 4096);
    double expect = (double)k * (double)s / (double)n;
    size_t r = s == n ? k : (size_t)(expect * 1.25 + 3.0 * sqrt(expect) + 2.0);
    uint32_t t = 0;
    uint32_t *keys = malloc((s > 1 ? s : 1) * sizeof(*keys));
    if (!keys)
        return GCOMP_NOMEM;
    if (r < s) {
        for (size_t j = 0; j < s; j++)
            keys[j] = gk_sparse_key(x[s == n ? j : (size_t)((double)j * (double)n / (double)s)]);
        size_t above;
        t = gk_sel_kth_largest(keys, s, r, &above);
    }
    free(keys);
    /* Collect the candidates, growing the buffer once if the estimate was low. */
    size_t cap = s == n ? n : (size_t)((double)r / (double)s * (double)n * 1.5) + 1024;
    cap = cap < n ? cap : n;
    uint32_t *cand = malloc(cap * sizeof(*cand));
    if (!cand)
        return GCOMP_NOMEM;
    size_t c = collect_ge(x, n, t, cand, cap);
    if (c < k) { /* the sample misled us: every element is a candidate */
        t = 0;
        c = n;
    }
    if (c > cap) {
        free(cand);
        cap = c;
        cand = malloc(cap * sizeof(*cand));
        if (!cand)
            return GCOMP_NOMEM;
        collect_ge(x, n, t, cand, cap);
    }
    uint32_t *ck = malloc(c * sizeof(*ck));
    if (!ck) {
        free(cand);
        return GCOMP_NOMEM;
    }
    for (size_t j = 0; j < c; j++)
        ck[j] = gk_sparse_key(x[cand[j]]);
    size_t above;
    uint32_t kth = gk_sel_kth_largest(ck, c, k, &above);
    free(ck);
    /* All keys above the k-th, then the ties at it in index order until k are taken. */
    size_t ties = k - above, out = 0;
    for (size_t j = 0; j < c && out < k; j++) {
        uint32_t key = gk_sparse_key(x[cand[j]]);
        if (key > kth || (key == kth && ties > 0)) {
            ties -= key == kth;
            gk_sparse_put(send, out++, cand[j], x[cand[j]]);
        }
    }
    free(cand);
    return GCOMP_OK;
}

int gk_sel_decode(const gk_call *call, float *x, const void *const *recv, const size_t *bytes,
                  int nrecv, float *out, float *const *zero, int nzero, size_t max_count)
{
    int rc = gk_sparse_check(call, recv, bytes, nrecv, max_count);
    if (rc)
        return rc;
    size_t n = call->layer->numel;
    memset(out, 0, n * sizeof(*out));
    for (int w = 0; w < nrecv; w++) {
        size_t count = bytes[w] / GK_SPARSE_ENTRY;
        for (size_t j = 0; j < count; j++)
            out[gk_sparse_idx(recv[w], j)] += gk_sparse_val(recv[w], j);
    }
    /* Divide each touched element once (untouched ones are 0 and stay 0); a bitmap
       remembers which were divided, cheaper than a pass over out when k << n. */
    if (nrecv > 1) {
        uint64_t *done = calloc((n + 63) / 64, sizeof(*done));
        if (!done)
            return GCOMP_NOMEM;
        float wf = (float)nrecv;
        for (int w = 0; w < nrecv; w++) {
            size_t count = bytes[w] / GK_SPARSE_ENTRY;
            for (size_t j = 0; j < count; j++) {
                uint32_t i = gk_sparse_idx(recv[w], j);
                uint64_t bit = (uint64_t)1 << (i & 63);
                if (!(done[i >> 6] & bit)) {
                    done[i >> 6] |= bit;
                    out[i] /= wf;
                }
            }
        }
        free(done);
    }
    const void *own = recv[call->node];
    size_t count = bytes[call->node] / GK_SPARSE_ENTRY;
    for (size_t j = 0; j < count; j++) {
        uint32_t i = gk_sparse_idx(own, j);
        x[i] = 0.0f;
        for (int z = 0; z < nzero; z++)
            zero[z][i] = 0.0f;
    }
    return GCOMP_OK;
}
