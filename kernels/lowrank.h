/*
 * lowrank.h: what the scalar reference (ref/powersgd.c) and the BLAS version
 * (cpu/powersgd.c) of the low-rank codecs share: parameter indices, the per-layer
 * state and its layout, and the shared random draw.
 *
 * Layout: P (n x r_t) and Q (m x r_t) are column-major (column j of P is
 * p[j * n .. j * n + n - 1]); the payloads of the P and Q phases are exactly these
 * arrays as float32. The layer matrix x is row-major n x m (rows = shape[0]).
 */
#ifndef GK_LOWRANK_H
#define GK_LOWRANK_H

#include <stdbool.h>
#include <string.h>
#include <stddef.h>

#include "base/floats.h"
#include "codec.h"
#include "gcomp.h"
#include "rng.h"

/* Indices into gk_spec.v for powersgd's keys (the order of its params table). */
enum {
    GK_PSGD_RANK = 0,
    GK_PSGD_WARM_START = 1,
    GK_PSGD_POWER_ITERS = 2,
    GK_PSGD_MIN_RATE = 3,
    GK_PSGD_RESIDUAL = 4,
};

/* Values of powersgd's residual key (algorithms.md 1, "Error feedback"). */
enum {
    GK_PSGD_RESIDUAL_GLOBAL = 0, /* e = M - out, the averaged reconstruction (paper code) */
    GK_PSGD_RESIDUAL_LOCAL = 1,  /* e_w = M_w - P^ Q_w^T with this node's own Q_w */
};

/* The eps of the Gram-Schmidt normalisation c /= (|c| + eps) (algorithms.md 2.2). */
#define GK_LOWRANK_EPS 1e-8f

/* Projection passes of the Gram-Schmidt (see gk_lowrank_orthogonalise_ref). */
#define GK_LOWRANK_GS_PASSES 2

/* Per layer and node state of powersgd and powersgd_unbiased. */
typedef struct gk_lowrank_state {
    size_t n, m, r; /* rows, cols, r_t = min(n, m, rank) */
    float *p;       /* n x r column-major; never NULL */
    float *q;       /* m x r column-major; never NULL */
    float *work;    /* 2 r floats for the QR path (tau and diag R); never NULL */
    float *qloc;    /* m x r: this node's Q = M^T P^ of the last power iteration, before
                       the allreduce, for the local residual; NULL with the global one */
    bool have_p;    /* p holds an averaged P from an earlier step (powersgd_unbiased) */
    bool have_q;    /* q holds an averaged Q from an earlier step */
} gk_lowrank_state;

/* r_t = min(n, m, rank) for a layer under a spec whose first key is the rank. */
static inline size_t gk_lowrank_rank(const gk_spec *spec, const gk_layer *layer)
{
    size_t r = (size_t)spec->v[GK_PSGD_RANK];
    if (r > layer->rows)
        r = layer->rows;
    if (r > layer->cols)
        r = layer->cols;
    return r;
}

/*
 * Fill a[0 .. len-1] with N(0,1) from the shared generator seeded (seed, layer id,
 * step, 0), in index order, so every node and both implementations draw the same.
 */
static inline void gk_lowrank_random(const gk_call *call, float *a, size_t len)
{
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 0);
    for (size_t i = 0; i < len; i++)
        a[i] = gk_rng_normal(&rng);
}

/* Whether every element of a[0 .. len-1] is zero. A factor that is all zero (the
   layer's gradient was zero) would keep every later step's output at zero through
   the warm start, so the codecs draw a fresh one instead. */
static inline bool gk_lowrank_all_zero(const float *a, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (a[i] != 0.0f)
            return false;
    return true;
}

/*
 * The one check of an allreduced factor, shared by the reference and the optimised
 * decoders so both refuse the same payloads: one segment of exactly floats float32, all
 * finite (sums of finite factors are, unless they overflow; a NaN would spread through
 * the orthogonalisation into every output and the residual). GCOMP_PROTOCOL otherwise.
 */
static inline int gk_lowrank_check(const void *const *recv, const size_t *bytes, int nrecv,
                                   size_t floats)
{
    if (nrecv != 1 || bytes[0] != floats * sizeof(float))
        return GCOMP_PROTOCOL;
    uint32_t bad = gk_any_nonfinite(recv[0], floats);
    return bad ? GCOMP_PROTOCOL : GCOMP_OK;
}

/* powersgd_unbiased's payload in floats at a step: P (n r_t) on even steps, Q (m r_t)
   on odd ones (unbiased_max_bytes in ref/powersgd.c says the same). */
static inline size_t gk_lowrank_unbiased_floats(const gk_lowrank_state *st, uint64_t step)
{
    return (step % 2 == 0 ? st->n : st->m) * st->r;
}

/*
 * Orthogonalise the r columns (each of length len >= r) of the column-major a in
 * place: Gram-Schmidt with eps as the paper code, c_i -= <c_j, c_i> / <c_j, c_j> c_j
 * for j < i, then c_i /= (|c_i| + eps); a zero column stays zero. Two differences from
 * the paper code, both invisible for a well-conditioned P (where <c_j, c_j> = 1 to
 * ~1e-8 and one pass is exact to float precision): the projections are applied twice
 * ("twice is enough"), and divide by <c_j, c_j>, which eps makes a little less than 1
 * for a short column. Both matter when P is rank deficient (a gradient of rank < r):
 * the later columns are then normalised rounding noise, which a single inexact pass
 * leaves far from orthogonal to the earlier columns, breaking P^ P^T M = M.
 * The reference uses plain loops; the optimised version BLAS level-1 calls for
 * r <= 2 and LAPACK QR above, rescaled to the same result (work holds 2 r floats;
 * returns 0 or GCOMP_INTERNAL). Exposed for the tests.
 */
void gk_lowrank_orthogonalise_ref(float *a, size_t len, size_t r);
int gk_lowrank_orthogonalise_cpu(float *a, size_t len, size_t r, float *work);

/* The optimised implementations (cpu/powersgd.c); the codec entries live in
   ref/powersgd.c next to the reference. */
extern const gk_codec_impl gk_powersgd_cpu;
extern const gk_codec_impl gk_powersgd_unbiased_cpu;

#endif /* GK_LOWRANK_H */
