/*
 * sparse.h: what the scalar references (ref/) and the optimised versions (cpu/) of the
 * sparsifiers share: the payload layout, k, the allgather decode with its checks, the
 * shared random draws of Random-K / Random-block, and DGC's state.
 *
 * Allgather payload (topk, mstopk, dgc, redsync, sidco, threshold): count entries of
 * 8 bytes, entry j = { uint32 index, float32 value } at byte offset 8 j, indices in
 * ascending order, little-endian host layout. There is no count field: decode gets each
 * node's segment size (codec.h: bytes[w]) and count = bytes[w] / 8, so the bytes encode
 * reports are exactly the entries. Entries are read and written with memcpy, so segments
 * need no alignment.
 *
 * Allreduce payload (randomk, randomblock): the k selected values as float32, in the
 * order of the shared indices (ascending for randomk, block order for randomblock).
 */
#ifndef GK_SPARSE_H
#define GK_SPARSE_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"

/* Bytes of one allgather entry (index + value). */
#define GK_SPARSE_ENTRY 8

/* Every sparsifier keeps its density (or lambda for threshold) at index 0 of spec->v. */
enum { GK_SPARSE_DENSITY = 0, GK_SPARSE_SECOND = 1 };

static inline void gk_sparse_put(void *send, size_t j, uint32_t idx, float val)
{
    unsigned char *p = (unsigned char *)send + j * GK_SPARSE_ENTRY;
    memcpy(p, &idx, 4);
    memcpy(p + 4, &val, 4);
}

static inline uint32_t gk_sparse_idx(const void *seg, size_t j)
{
    uint32_t idx;
    memcpy(&idx, (const unsigned char *)seg + j * GK_SPARSE_ENTRY, 4);
    return idx;
}

static inline float gk_sparse_val(const void *seg, size_t j)
{
    float v;
    memcpy(&v, (const unsigned char *)seg + j * GK_SPARSE_ENTRY + 4, 4);
    return v;
}

/* The magnitude key of a float: its bits without the sign. For finite x, |a| < |b| iff
   key(a) < key(b), so selections compare integers. */
static inline uint32_t gk_sparse_key(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7fffffffu;
}

/* k = max(1, floor(density * numel)), at most numel (numel >= 1). */
size_t gk_sparse_k(double density, size_t numel);

/* The k of a spec's density for a layer. */
static inline size_t gk_sparse_spec_k(const gk_spec *spec, const gk_layer *layer)
{
    return gk_sparse_k(spec->v[GK_SPARSE_DENSITY], layer->numel);
}

/* phase_coll of the allgather sparsifiers. */
gk_coll gk_sparse_coll_allgather(const gk_spec *spec, int phase);
/* max_bytes for exactly k entries (topk, mstopk). */
size_t gk_sparse_max_bytes_k(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step);
/* max_bytes for a variable count, at most one entry per element (dgc, redsync, sidco,
   threshold). */
size_t gk_sparse_max_bytes_any(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step);
/* max_bytes of the allreduce sparsifiers: k float32 values. */
size_t gk_sparse_max_bytes_values(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step);

/*
 * Check W allgathered segments before they are used: nrecv == call->nodes, each size a
 * multiple of 8 and at most max_count entries, every index < numel. Returns 0, or
 * GCOMP_PROTOCOL for a malformed segment (they come from other nodes), GCOMP_INVALID for
 * a call that breaks the contract. If sorted is not NULL it says whether every segment's
 * indices are non-decreasing, as the encoders write them.
 */
int gk_sparse_check(const gk_call *call, const void *const *recv, const size_t *bytes,
                    int nrecv, size_t max_count, bool *sorted);

/*
 * The reference allgather decode: out = (1/W) sum_w scatter_add(idx_w, val_w), then
 * x[i] = 0 and zero[z][i] = 0 (nzero extra buffers, e.g. DGC's momentum) at this node's
 * own indices (recv[call->node]). Returns 0 or the error of gk_sparse_check().
 */
int gk_sparse_decode_ref(const gk_call *call, float *x, const void *const *recv,
                         const size_t *bytes, int nrecv, float *out, float *const *zero,
                         int nzero, size_t max_count);

/*
 * Random-K's shared draw: Floyd's algorithm picks a uniform k-subset of 0..n-1 from the
 * generator, consuming exactly k draws; mark(ctx, i) is called for each chosen i and
 * marked(ctx, i) says whether i was already chosen. Every implementation runs this
 * same draw, so all nodes (and ref and cpu) choose the same set.
 */
void gk_sparse_floyd(uint64_t seed, uint64_t layer_id, uint64_t step, size_t n, size_t k,
                     void (*mark)(void *ctx, size_t i), bool (*marked)(void *ctx, size_t i),
                     void *ctx);

/* Random-block's shared offset: uniform in 0..n-1 from the generator. */
size_t gk_sparse_block_offset(uint64_t seed, uint64_t layer_id, uint64_t step, size_t n);

/* The generator stream a node uses for its own (not shared) draws: DGC's sample,
   MSTop-K's run offset. Stream 0 is the shared one. */
static inline uint64_t gk_sparse_local_stream(int node)
{
    return 1 + (uint64_t)node;
}

/*
 * DGC's state per layer and node (algorithms.md 2.3): the momentum u, and with error
 * feedback the residual r that decode left in x, from which the next encode recovers
 * this step's gradient g = x - r (the engine only adds g to x between steps).
 * The accumulation v of the paper is x itself.
 */
typedef struct gk_dgc_state {
    float *u; /* numel; never NULL */
    float *r; /* numel; NULL when the spec has ef = 0 */
} gk_dgc_state;

/* Index of DGC's momentum in spec->v. */
enum { GK_DGC_MOMENTUM = GK_SPARSE_SECOND };


/*
 * MSTop-K's and RedSync's search threshold thr = a + t (u - a) for a = mean|x|,
 * u = max|x|, rounded once to float; non-decreasing in t.
 */
static inline float gk_sparse_bisect_thr(double a, float u, double t)
{
    return (float)(a + t * ((double)u - a));
}

/* The reference mean and max of |x| (sequential double sum), as MSTop-K and RedSync use. */
void gk_sparse_abs_mean_max_ref(const float *x, size_t n, double *mean, float *max);

/* MSTop-K's search state (algorithms.md 2.3): the bisection interval [l, r] on t, and
   k1 = the largest count <= k seen (at thr1), k2 = the smallest count > k (at thr2). */
typedef struct gk_mstopk_search {
    double l, r;
    size_t k, k1, k2;
    float thr1, thr2; /* thr1 = +inf: nothing counted yet at or below k */
} gk_mstopk_search;

#define GK_MSTOPK_STEPS 20

static inline gk_mstopk_search gk_mstopk_start(size_t k, size_t n)
{
    gk_mstopk_search s = {.l = 0.0, .r = 1.0, .k = k, .k1 = 0, .k2 = n,
                          .thr1 = INFINITY, .thr2 = 0.0f};
    return s;
}

/* The t of the next bisection step. */
static inline double gk_mstopk_next_t(const gk_mstopk_search *s)
{
    return s->l + (s->r - s->l) / 2;
}

/* Record nnz = count(|x| >= thr) at t. */
static inline void gk_mstopk_record(gk_mstopk_search *s, double t, float thr, size_t nnz)
{
    if (nnz <= s->k) {
        s->r = t;
        if (nnz > s->k1) {
            s->k1 = nnz;
            s->thr1 = thr;
        }
    } else {
        s->l = t;
        if (nnz < s->k2) {
            s->k2 = nnz;
            s->thr2 = thr;
        }
    }
}

/* MSTop-K's offset of the run of k - k1 elements taken from the k2 - k1 with
   thr2 <= |x| < thr1 (node-local draw, uniform like the paper's randint). */
size_t gk_mstopk_run_start(const gk_call *call, const gk_mstopk_search *s);

/* RedSync (algorithms.md 2.3): the search stops when r - l < 0.2. */
#define GK_REDSYNC_EPS 0.2

/* Record nnz = count(|x| > thr) at t; true when k/2 < nnz < 2k (accepted). */
static inline bool gk_redsync_record(double *l, double *r, double t, size_t nnz, size_t k)
{
    if (2 * nnz > k && nnz < 2 * k)
        return true;
    if (nnz >= 2 * k)
        *l = t;
    else
        *r = t;
    return false;
}

/* DGC's sample (algorithms.md 2.3): max(1, 1% of n) draws with replacement from the
   node-local stream, keeping the top max(1, 1% n density) of them. */
size_t gk_dgc_nsamples(size_t n);
size_t gk_dgc_ntop(size_t n, double density, size_t nsamples);
/* The refinements: at most 10, x1.3 when count > 1.3 k, x0.7 when count < 0.7 k. */
#define GK_DGC_REFINE 10
/* 0: count within [0.7 k, 1.3 k]; else the factor to apply to the threshold. */
static inline float gk_dgc_factor(size_t count, size_t k)
{
    if ((double)count > 1.3 * (double)k)
        return 1.3f;
    if ((double)count < 0.7 * (double)k)
        return 0.7f;
    return 0.0f;
}

/*
 * SIDCo's stage ratios (algorithms.md 2.3) for the target density k/n: one stage when
 * it is >= 0.75, else 0.75, then 0.25 while the product stays above the target, then
 * the remainder; max_stages > 0 caps the number of stages (the last takes the
 * remainder). Writes at most GK_SIDCO_MAX_STAGES ratios; returns how many.
 */
#define GK_SIDCO_MAX_STAGES 16
enum { GK_SIDCO_STAGES = GK_SPARSE_SECOND };
int gk_sidco_ratios(double density, int max_stages, double *ratios);

/* The optimised implementations, one per cpu/<name>.c. */
extern const gk_codec_impl gk_topk_cpu, gk_mstopk_cpu, gk_dgc_cpu, gk_redsync_cpu,
    gk_sidco_cpu, gk_threshold_cpu, gk_randomk_cpu, gk_randomblock_cpu;
/* The CUDA implementations (cuda/<name>.cu), defined only when GCOMP_HAVE_CUDA. */
extern const gk_codec_impl gk_randomk_cuda;

#endif /* GK_SPARSE_H */
