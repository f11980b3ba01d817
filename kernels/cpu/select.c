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

/* Forces inlining of the pass templates below, so that each call with a constant number
   of thresholds becomes its own loop with the counters in registers. */
#if defined(__GNUC__)
#define SEL_INLINE static inline __attribute__((always_inline))
#else
#define SEL_INLINE static inline
#endif

/* Elements per chunk of the counting passes: 32-bit lane counters are moved to the
   size_t totals after at most this many elements, long before they could overflow. */
#define GK_SEL_COUNT_CHUNK ((size_t)1 << 24)

/* Index of the lowest set bit of m != 0. */
static inline unsigned sel_ctz(unsigned m)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctz(m);
#else
    unsigned j = 0;
    while (!(m & 1u)) {
        m >>= 1;
        j++;
    }
    return j;
#endif
}

void gk_sel_abs_stats(const float *x, size_t n, double *sum, uint32_t *maxkey)
{
    double s = 0.0;
    float mx = 0.0f;
    size_t i = 0;
#ifdef __SSE2__
    /* Four independent float accumulators hide the add latency; each chunk's float sums
       are moved to a double total. For non-negative floats maxps orders like the keys. */
    const __m128 abs = _mm_castsi128_ps(_mm_set1_epi32(INT32_MAX));
    __m128d sd = _mm_setzero_pd();
    __m128 m0 = _mm_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    while (i + GK_SEL_BLOCK <= n) {
        __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK) {
            __m128 v0 = _mm_and_ps(_mm_loadu_ps(x + i), abs);
            __m128 v1 = _mm_and_ps(_mm_loadu_ps(x + i + 4), abs);
            __m128 v2 = _mm_and_ps(_mm_loadu_ps(x + i + 8), abs);
            __m128 v3 = _mm_and_ps(_mm_loadu_ps(x + i + 12), abs);
            a0 = _mm_add_ps(a0, v0);
            a1 = _mm_add_ps(a1, v1);
            a2 = _mm_add_ps(a2, v2);
            a3 = _mm_add_ps(a3, v3);
            m0 = _mm_max_ps(m0, v0);
            m1 = _mm_max_ps(m1, v1);
            m2 = _mm_max_ps(m2, v2);
            m3 = _mm_max_ps(m3, v3);
        }
        __m128 a = _mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3));
        sd = _mm_add_pd(sd, _mm_add_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(_mm_movehl_ps(a, a))));
    }
    double sl[2];
    float ml[4];
    _mm_storeu_pd(sl, sd);
    _mm_storeu_ps(ml, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
    s = sl[0] + sl[1];
    for (int j = 0; j < 4; j++)
        mx = ml[j] > mx ? ml[j] : mx;
#else
    while (i + GK_SEL_BLOCK <= n) {
        float acc[GK_SEL_BLOCK] = {0}, mv[GK_SEL_BLOCK] = {0};
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK)
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                float m = fabsf(x[i + j]);
                acc[j] += m;
                mv[j] = m > mv[j] ? m : mv[j];
            }
        for (int j = 0; j < GK_SEL_BLOCK; j++) {
            s += acc[j];
            mx = mv[j] > mx ? mv[j] : mx;
        }
    }
#endif
    for (; i < n; i++) {
        float m = fabsf(x[i]);
        s += (double)m;
        mx = m > mx ? m : mx;
    }
    *sum = s;
    *maxkey = gk_sparse_key(mx);
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

/*
 * The pass template of the counting and emitting passes: counts[q] += number of keys
 * > tm1[q] for q < nt, and with send != NULL an entry for every key > etm1 (returned
 * count). nt is a constant at every call site, so the forced inlining turns the
 * threshold loops into straight-line code with the lane counters in registers.
 */
SEL_INLINE size_t sel_pass(const float *x, size_t n, const int32_t *tm1, int nt,
                           size_t *counts, int32_t etm1, void *send)
{
    size_t c = 0, i = 0;
    for (int q = 0; q < nt; q++)
        counts[q] = 0;
#ifdef __SSE2__
    const __m128i abs = _mm_set1_epi32(INT32_MAX);
    __m128i tv[8];
    for (int q = 0; q < nt; q++)
        tv[q] = _mm_set1_epi32(tm1[q]);
    while (i + GK_SEL_BLOCK <= n) {
        __m128i cnt[8];
        for (int q = 0; q < nt; q++)
            cnt[q] = _mm_setzero_si128();
        size_t len = (n - i) / GK_SEL_BLOCK * GK_SEL_BLOCK;
        size_t end = i + (len < GK_SEL_COUNT_CHUNK ? len : GK_SEL_COUNT_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK) {
            if (nt > 0) {
                __m128i k[4];
                for (int v = 0; v < 4; v++)
                    k[v] = _mm_and_si128(_mm_loadu_si128((const __m128i *)(x + i + 4 * v)), abs);
                for (int q = 0; q < nt; q++)
                    for (int v = 0; v < 4; v++)
                        cnt[q] = _mm_sub_epi32(cnt[q], _mm_cmpgt_epi32(k[v], tv[q]));
            }
            if (send) {
                unsigned m = gk_sel_mask_tm1(x + i, etm1);
                while (m) {
                    unsigned j = sel_ctz(m);
                    m &= m - 1;
                    gk_sparse_put(send, c++, (uint32_t)(i + j), x[i + j]);
                }
            }
        }
        for (int q = 0; q < nt; q++) {
            uint32_t l[4];
            _mm_storeu_si128((__m128i *)l, cnt[q]);
            counts[q] += (size_t)l[0] + l[1] + l[2] + l[3];
        }
    }
#else
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
        int32_t key[GK_SEL_BLOCK];
        for (int j = 0; j < GK_SEL_BLOCK; j++)
            key[j] = (int32_t)gk_sparse_key(x[i + j]);
        for (int q = 0; q < nt; q++) {
            uint32_t cq = 0;
            for (int j = 0; j < GK_SEL_BLOCK; j++)
                cq += key[j] > tm1[q];
            counts[q] += cq;
        }
        if (send) {
            unsigned m = gk_sel_mask_tm1(x + i, etm1);
            while (m) {
                unsigned j = sel_ctz(m);
                m &= m - 1;
                gk_sparse_put(send, c++, (uint32_t)(i + j), x[i + j]);
            }
        }
    }
#endif
    for (; i < n; i++) {
        int32_t key = (int32_t)gk_sparse_key(x[i]);
        for (int q = 0; q < nt; q++)
            counts[q] += key > tm1[q];
        if (send && key > etm1)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    }
    return c;
}

void gk_sel_count_ge_multi(const float *x, size_t n, const uint32_t *t, int nt,
                           size_t *counts)
{
    int32_t tm1[8];
    for (int q = 0; q < nt && q < 8; q++)
        tm1[q] = gk_sel_tm1(t[q]);
    /* One specialised loop per threshold count (see sel_pass). */
    switch (nt) {
    case 1: sel_pass(x, n, tm1, 1, counts, 0, NULL); break;
    case 2: sel_pass(x, n, tm1, 2, counts, 0, NULL); break;
    case 3: sel_pass(x, n, tm1, 3, counts, 0, NULL); break;
    case 4: sel_pass(x, n, tm1, 4, counts, 0, NULL); break;
    case 5: sel_pass(x, n, tm1, 5, counts, 0, NULL); break;
    case 6: sel_pass(x, n, tm1, 6, counts, 0, NULL); break;
    case 7: sel_pass(x, n, tm1, 7, counts, 0, NULL); break;
    case 8: sel_pass(x, n, tm1, 8, counts, 0, NULL); break;
    default: break;
    }
}

size_t gk_sel_emit_ge(const float *x, size_t n, uint32_t t, void *send)
{
    return sel_pass(x, n, NULL, 0, NULL, gk_sel_tm1(t), send);
}

size_t gk_sel_emit_ge_count(const float *x, size_t n, uint32_t t, void *send,
                            const uint32_t *ct, int nct, size_t *counts)
{
    int32_t tm1[4];
    for (int q = 0; q < nct && q < 4; q++)
        tm1[q] = gk_sel_tm1(ct[q]);
    switch (nct) {
    case 1: return sel_pass(x, n, tm1, 1, counts, gk_sel_tm1(t), send);
    case 2: return sel_pass(x, n, tm1, 2, counts, gk_sel_tm1(t), send);
    case 3: return sel_pass(x, n, tm1, 3, counts, gk_sel_tm1(t), send);
    case 4: return sel_pass(x, n, tm1, 4, counts, gk_sel_tm1(t), send);
    default: return sel_pass(x, n, NULL, 0, NULL, gk_sel_tm1(t), send);
    }
}

void gk_sel_masked_stats(const float *x, size_t n, uint32_t t, double *sum, size_t *count,
                         uint32_t *minkey)
{
    int32_t tm1 = gk_sel_tm1(t);
    double s = 0.0;
    size_t c = 0, i = 0;
    float mn = INFINITY;
#ifdef __SSE2__
    /*
     * Per vector: in = key > tm1 (-1 / 0 lanes); the kept magnitudes key & in (0.0f
     * elsewhere) go to the float sums; the count subtracts in; the minimum takes
     * key | ~in, which is a NaN pattern (all ones) for dropped lanes: minps(a, b)
     * returns b when a is NaN, so with a the candidate they never win. Four independent
     * accumulators of each kind hide the latencies.
     */
    const __m128i abs = _mm_set1_epi32(INT32_MAX), tv = _mm_set1_epi32(tm1),
                  ones = _mm_set1_epi32(-1);
    __m128 mv[4];
    __m128d sd = _mm_setzero_pd();
    for (int v = 0; v < 4; v++)
        mv[v] = _mm_set1_ps(INFINITY);
    while (i + GK_SEL_BLOCK <= n) {
        __m128 acc[4];
        __m128i cnt = _mm_setzero_si128();
        for (int v = 0; v < 4; v++)
            acc[v] = _mm_setzero_ps();
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK)
            for (int v = 0; v < 4; v++) {
                __m128i k = _mm_and_si128(_mm_loadu_si128((const __m128i *)(x + i + 4 * v)), abs);
                __m128i in = _mm_cmpgt_epi32(k, tv);
                acc[v] = _mm_add_ps(acc[v], _mm_castsi128_ps(_mm_and_si128(k, in)));
                cnt = _mm_sub_epi32(cnt, in);
                __m128 cand = _mm_castsi128_ps(_mm_or_si128(k, _mm_xor_si128(in, ones)));
                mv[v] = _mm_min_ps(cand, mv[v]);
            }
        __m128 a = _mm_add_ps(_mm_add_ps(acc[0], acc[1]), _mm_add_ps(acc[2], acc[3]));
        sd = _mm_add_pd(sd, _mm_add_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(_mm_movehl_ps(a, a))));
        uint32_t l[4];
        _mm_storeu_si128((__m128i *)l, cnt);
        c += (size_t)l[0] + l[1] + l[2] + l[3];
    }
    double sl[2];
    float ml[4];
    _mm_storeu_pd(sl, sd);
    _mm_storeu_ps(ml, _mm_min_ps(_mm_min_ps(mv[0], mv[1]), _mm_min_ps(mv[2], mv[3])));
    s = sl[0] + sl[1];
    for (int j = 0; j < 4; j++)
        mn = ml[j] < mn ? ml[j] : mn;
#else
    while (i + GK_SEL_BLOCK <= n) {
        float acc[GK_SEL_BLOCK] = {0}, mv[GK_SEL_BLOCK];
        int32_t cnt[GK_SEL_BLOCK] = {0};
        for (int j = 0; j < GK_SEL_BLOCK; j++)
            mv[j] = INFINITY;
        size_t blocks = (n - i) / GK_SEL_BLOCK;
        size_t end = i + GK_SEL_BLOCK * (blocks < GK_SEL_CHUNK ? blocks : GK_SEL_CHUNK);
        for (; i < end; i += GK_SEL_BLOCK)
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                /* Branch-free so that the compiler vectorises: the kept |x| or 0. */
                float m = fabsf(x[i + j]);
                int in = (int32_t)gk_sparse_key(x[i + j]) > tm1;
                acc[j] += in ? m : 0.0f;
                cnt[j] += in;
                mv[j] = in && m < mv[j] ? m : mv[j];
            }
        for (int j = 0; j < GK_SEL_BLOCK; j++) {
            s += acc[j];
            c += (size_t)cnt[j];
            mn = mv[j] < mn ? mv[j] : mn;
        }
    }
#endif
    for (; i < n; i++) {
        if ((int32_t)gk_sparse_key(x[i]) > tm1) {
            float m = fabsf(x[i]);
            s += (double)m;
            c++;
            mn = m < mn ? m : mn;
        }
    }
    *sum = s;
    *count = c;
    *minkey = c ? gk_sparse_key(mn) : UINT32_MAX;
}

/* Indices of the elements with key >= t, in order, into idx (room for cap); returns the
   full count, which may exceed cap (then only cap were stored). */
static size_t collect_ge(const float *x, size_t n, uint32_t t, uint32_t *idx, size_t cap)
{
    int32_t tm1 = gk_sel_tm1(t);
    size_t c = 0, i = 0;
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
        unsigned m = gk_sel_mask_tm1(x + i, tm1);
        while (m) {
            unsigned j = sel_ctz(m);
            m &= m - 1;
            if (c < cap)
                idx[c] = (uint32_t)(i + j);
            c++;
        }
    }
    for (; i < n; i++)
        if ((int32_t)gk_sparse_key(x[i]) > tm1) {
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

/* Floats of out that the decode finishes at a time: small enough to stay in L1 between
   the zero fill, the scatter-adds and the division. */
#define GK_SEL_DECODE_CHUNK 2048
/* Most segments the chunked decode merges (it keeps a cursor per node on the stack). */
#define GK_SEL_DECODE_MAXW 64

int gk_sel_decode(const gk_call *call, float *x, const void *const *recv, const size_t *bytes,
                  int nrecv, float *out, float *const *zero, int nzero, size_t max_count)
{
    bool sorted;
    int rc = gk_sparse_check(call, recv, bytes, nrecv, max_count, &sorted);
    if (rc)
        return rc;
    size_t n = call->layer->numel;
    float wf = (float)nrecv;
    if (sorted && nrecv <= GK_SEL_DECODE_MAXW) {
        /*
         * One sweep over out in L1-sized chunks: zero the chunk, add every node's entries
         * that fall in it (a cursor per node walks its sorted segment, so the additions
         * happen in the reference's order: node by node, entry by entry), then divide
         * the touched elements once each. out is written once instead of being zeroed,
         * scattered into and divided in three sweeps; the untouched zeros need no
         * division (0 / W = 0), and a per-chunk bitmap marks the divided ones.
         */
        size_t pos[GK_SEL_DECODE_MAXW] = {0}, first[GK_SEL_DECODE_MAXW];
        for (size_t lo = 0; lo < n; lo += GK_SEL_DECODE_CHUNK) {
            size_t hi = n - lo < GK_SEL_DECODE_CHUNK ? n : lo + GK_SEL_DECODE_CHUNK;
            memset(out + lo, 0, (hi - lo) * sizeof(*out));
            bool touched = false;
            for (int w = 0; w < nrecv; w++) {
                size_t count = bytes[w] / GK_SPARSE_ENTRY, j = pos[w];
                first[w] = j;
                for (; j < count; j++) {
                    uint32_t i = gk_sparse_idx(recv[w], j);
                    if (i >= hi)
                        break;
                    out[i] += gk_sparse_val(recv[w], j);
                }
                touched |= j > pos[w];
                pos[w] = j;
            }
            if (nrecv == 1 || !touched)
                continue; /* x / 1 = x: the reference's division changes nothing */
            uint64_t done[GK_SEL_DECODE_CHUNK / 64] = {0};
            for (int w = 0; w < nrecv; w++)
                for (size_t j = first[w]; j < pos[w]; j++) {
                    uint32_t i = gk_sparse_idx(recv[w], j);
                    uint32_t b = (uint32_t)(i - lo);
                    uint64_t bit = (uint64_t)1 << (b & 63);
                    if (!(done[b >> 6] & bit)) {
                        done[b >> 6] |= bit;
                        out[i] /= wf;
                    }
                }
        }
    } else {
        /* Unsorted segments (never written by an encoder, but valid) or very many
           nodes: the reference's three sweeps. */
        memset(out, 0, n * sizeof(*out));
        for (int w = 0; w < nrecv; w++) {
            size_t count = bytes[w] / GK_SPARSE_ENTRY;
            for (size_t j = 0; j < count; j++)
                out[gk_sparse_idx(recv[w], j)] += gk_sparse_val(recv[w], j);
        }
        if (nrecv > 1)
            for (size_t i = 0; i < n; i++)
                out[i] /= wf;
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
