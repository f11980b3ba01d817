/*
 * select.h: the selection primitives the optimised sparsifiers (cpu/topk.c, mstopk.c,
 * dgc.c, redsync.c, sidco.c, threshold.c) share. Magnitudes are compared as keys
 * (gk_sparse_key: the float's bits without the sign), so every threshold test is an
 * integer compare; "key >= t" is |x| >= the float whose key is t.
 *
 * Hot loops run over blocks of GK_SEL_BLOCK elements. With SSE2 (every x86-64) they use
 * intrinsics: a block's 16 threshold tests become one 16-bit mask (movemask), so the
 * loops that emit the few selected elements skip empty blocks with one branch and walk
 * the set bits of the others without a mispredicted branch per element. Without SSE2
 * the same functions run fixed-trip scalar loops that the compiler can vectorise.
 * All functions are called from the engine thread; they keep no state.
 */
#ifndef GK_SELECT_H
#define GK_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "../codec.h"
#include "../sparse.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define GK_SEL_BLOCK 16

/*
 * The k-th largest of keys[0..n-1] (1 <= k <= n) by a radix select over bytes; keys is
 * reordered and overwritten. *above gets how many keys are strictly larger.
 */
uint32_t gk_sel_kth_largest(uint32_t *keys, size_t n, size_t k, size_t *above);

/*
 * Block masks, inline because the emitting loops call them once per block.
 *
 * The test key >= t as the signed compare key > gk_sel_tm1(t). Keys are below 2^31, and
 * SSE2 only has a signed 32-bit compare (pcmpgtd); t - 1 maps t = 0 to -1 (every key
 * passes) and any t >= 2^31 to INT32_MAX (no key passes).
 */
static inline int32_t gk_sel_tm1(uint32_t t)
{
    if (t == 0)
        return -1;
    if (t > 0x80000000u)
        t = 0x80000000u;
    return (int32_t)(t - 1);
}

/* Bit j set when key(x[j]) > tm1 for the 16 elements x[0..15]. */
static inline unsigned gk_sel_mask_tm1(const float *x, int32_t tm1)
{
#ifdef __SSE2__
    /* Four compares give -1 / 0 lanes; two signed packs narrow them to 16 bytes in
       element order, and movemask collects one bit per byte. */
    const __m128i abs = _mm_set1_epi32(INT32_MAX), tv = _mm_set1_epi32(tm1);
    __m128i c0 = _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128((const __m128i *)x), abs), tv);
    __m128i c1 =
        _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128((const __m128i *)(x + 4)), abs), tv);
    __m128i c2 =
        _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128((const __m128i *)(x + 8)), abs), tv);
    __m128i c3 =
        _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128((const __m128i *)(x + 12)), abs), tv);
    __m128i p = _mm_packs_epi16(_mm_packs_epi32(c0, c1), _mm_packs_epi32(c2, c3));
    return (unsigned)_mm_movemask_epi8(p);
#else
    unsigned m = 0;
    for (int j = 0; j < GK_SEL_BLOCK; j++)
        m |= (unsigned)((int32_t)gk_sparse_key(x[j]) > tm1) << j;
    return m;
#endif
}

/* Bit j set when key(x[j]) >= t for the GK_SEL_BLOCK elements x[0..15]. */
static inline unsigned gk_sel_block_mask(const float *x, uint32_t t)
{
    return gk_sel_mask_tm1(x, gk_sel_tm1(t));
}

/* One pass: sum of |x| (double) and the largest key. */
void gk_sel_abs_stats(const float *x, size_t n, double *sum, uint32_t *maxkey);

/*
 * MSTop-K's and RedSync's first pass: a = mean|x| and u = max|x| (via gk_sel_abs_stats),
 * then thr[j] = gk_sparse_bisect_thr(a, u, j / 8) for j = 0..7 and its key in key[j].
 */
void gk_sel_grid8(const float *x, size_t n, double *a, float *u, uint32_t *maxkey, float *thr,
                  uint32_t *key);

/* One pass: counts[j] = number of keys >= t[j] for j < nt (nt <= 8). */
void gk_sel_count_ge_multi(const float *x, size_t n, const uint32_t *t, int nt,
                           size_t *counts);

/* One pass over the keys >= t: their sum (double), count and smallest key (UINT32_MAX
   when none). */
void gk_sel_masked_stats(const float *x, size_t n, uint32_t t, double *sum, size_t *count,
                         uint32_t *minkey);

/* One pass: write an allgather entry (sparse.h) for every element with key >= t into
   send, in index order; returns the count. send must hold n entries. */
size_t gk_sel_emit_ge(const float *x, size_t n, uint32_t t, void *send);

/*
 * gk_sel_emit_ge() that also counts, in the same pass, the keys >= ct[j] for j < nct
 * (nct <= 4) into counts[j]: lets a search verify a guessed threshold while it already
 * emits at it.
 */
size_t gk_sel_emit_ge_count(const float *x, size_t n, uint32_t t, void *send,
                            const uint32_t *ct, int nct, size_t *counts);

/*
 * Exact Top-K: write k entries (k <= n) for the k largest |x| into send, in index order;
 * ties at the k-th value go to the lowest indices (the reference's rule). Estimates a
 * threshold from a strided sample, collects the candidates above it in one pass and
 * selects among them; no sort. Returns 0 or GCOMP_NOMEM.
 */
int gk_sel_topk(const float *x, size_t n, size_t k, void *send);

/*
 * The optimised allgather decode, same result as gk_sparse_decode_ref() (sparse.h):
 * out = (1/W) sum_w scatter_add, then x and zero[0..nzero-1] cleared at this node's
 * indices. Returns 0, a gk_sparse_check() error, or GCOMP_NOMEM.
 */
int gk_sel_decode(const gk_call *call, float *x, const void *const *recv, const size_t *bytes,
                  int nrecv, float *out, float *const *zero, int nzero, size_t max_count);

#endif /* GK_SELECT_H */
