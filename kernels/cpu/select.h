/*
 * select.h: the selection primitives the optimised sparsifiers (cpu/topk.c, mstopk.c,
 * dgc.c, redsync.c, sidco.c, threshold.c) share. Magnitudes are compared as keys
 * (gk_sparse_key: the float's bits without the sign), so every threshold test is an
 * integer compare; "key >= t" is |x| >= the float whose key is t.
 *
 * Hot loops run over blocks of GK_SEL_BLOCK elements with a fixed trip count, which GCC
 * vectorises at -O2 (its cheap cost model refuses loops that need a scalar epilogue).
 * All functions are called from the engine thread; they keep no state.
 */
#ifndef GK_SELECT_H
#define GK_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "../codec.h"

#define GK_SEL_BLOCK 16

/*
 * The k-th largest of keys[0..n-1] (1 <= k <= n) by a radix select over bytes; keys is
 * reordered and overwritten. *above gets how many keys are strictly larger.
 */
uint32_t gk_sel_kth_largest(uint32_t *keys, size_t n, size_t k, size_t *above);

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
