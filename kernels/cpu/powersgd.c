/*
 * powersgd, powersgd_unbiased: the optimised CPU implementation. The products are
 * cblas_sgemm calls on the column-major factors (see cpu_mq and lowrank.h for the
 * layout); orthogonalisation is Gram-Schmidt with BLAS level-1 calls for r_t <= 2 and a
 * Householder QR (LAPACKE sgeqrf + sorgqr) above, as PyTorch's hook does. The QR
 * result is rescaled column by column to what Gram-Schmidt with eps gives: the
 * residual of column j before normalisation is Q_j R_jj, so Gram-Schmidt yields
 * Q_j R_jj / (|R_jj| + eps). That keeps the signs of the reference and keeps a zero
 * column (R_jj = 0) at zero instead of the unit vector QR would return.
 * The algorithm is described in ref/powersgd.c.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "../base/floats.h"
#include "../lowrank.h"
#include "gcomp.h"

/* Declared in lowrank.h: Gram-Schmidt for r <= 2, rescaled QR above. */
int gk_lowrank_orthogonalise_cpu(float *a, size_t len, size_t r, float *work)
{
    blasint n = (blasint)len;
    if (r <= 2) {
        for (size_t i = 0; i < r; i++) {
            float *ci = a + i * len;
            for (int pass = 0; pass < GK_LOWRANK_GS_PASSES; pass++)
                for (size_t j = 0; j < i; j++) {
                    const float *cj = a + j * len;
                    float jj = cblas_sdot(n, cj, 1, cj, 1);
                    if (jj > 0.0f)
                        cblas_saxpy(n, -cblas_sdot(n, cj, 1, ci, 1) / jj, cj, 1, ci, 1);
                }
            cblas_sscal(n, 1.0f / (cblas_snrm2(n, ci, 1) + GK_LOWRANK_EPS), ci, 1);
        }
        return GCOMP_OK;
    }
    /* Gram-Schmidt leaves an exactly zero column out of the basis, where Householder
       QR would give it a unit direction and project the later columns off it: move
       the nonzero columns to the front, factor those, and put the zeros back. */
    size_t k = 0;
    unsigned char zero[r];
    for (size_t j = 0; j < r; j++) {
        zero[j] = gk_lowrank_all_zero(a + j * len, len);
        if (!zero[j]) {
            if (k != j)
                memcpy(a + k * len, a + j * len, len * sizeof(float));
            k++;
        }
    }
    if (k > 0) {
        float *tau = work, *diag = work + r;
        if (LAPACKE_sgeqrf(LAPACK_COL_MAJOR, (lapack_int)len, (lapack_int)k, a, (lapack_int)len,
                           tau) != 0)
            return GCOMP_INTERNAL;
        for (size_t j = 0; j < k; j++)
            diag[j] = a[j * len + j];
        if (LAPACKE_sorgqr(LAPACK_COL_MAJOR, (lapack_int)len, (lapack_int)k, (lapack_int)k, a,
                           (lapack_int)len, tau) != 0)
            return GCOMP_INTERNAL;
        for (size_t j = 0; j < k; j++)
            cblas_sscal(n, diag[j] / (fabsf(diag[j]) + GK_LOWRANK_EPS), a + j * len, 1);
    }
    /* Spread back from the last column: column j takes factored column k - 1. */
    for (size_t j = r; j-- > 0;) {
        if (zero[j]) {
            memset(a + j * len, 0, len * sizeof(float));
        } else {
            k--;
            if (k != j)
                memcpy(a + j * len, a + k * len, len * sizeof(float));
        }
    }
    return GCOMP_OK;
}

/*
 * The products are cblas_sgemm calls on the column-major views of the row-major
 * factors. OpenBLAS must run single-threaded here (gcompd sets it at start-up): its
 * threads would compete with the trainers for the node's cores and spin in
 * sched_yield on these skinny products.
 */

/* p (n x r) = M q; M = x row-major n x m is the column-major m x n matrix M^T. */
static void cpu_mq(const float *x, const gk_lowrank_state *st, const float *q, float *p)
{
    size_t n = st->n, m = st->m, r = st->r;
    cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, (blasint)n, (blasint)r, (blasint)m,
                1.0f, x, (blasint)m, q, (blasint)m, 0.0f, p, (blasint)n);
}

/* q (m x r) = M^T p. */
static void cpu_mtp(const float *x, const gk_lowrank_state *st, const float *p, float *q)
{
    size_t n = st->n, m = st->m, r = st->r;
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)r, (blasint)n,
                1.0f, x, (blasint)m, p, (blasint)n, 0.0f, q, (blasint)m);
}

/* x[k] -= o[k]. */
static void psgd_sub(float *restrict x, const float *restrict o, size_t len)
{
    for (size_t k = 0; k < len; k++)
        x[k] -= o[k];
}

/*
 * out = P Q^T (row-major n x m, i.e. the column-major m x n matrix Q P^T) and the
 * residual: x -= out, or x -= P qres^T when qres is not NULL (powersgd's local
 * residual, qres = this node's Q before the allreduce). The product is memory-bound
 * (the rank is small), so it runs in blocks of rows of about 64 KB: each block of the
 * product goes into a scratch block that stays in cache, the residual reads it there,
 * and it is streamed into out (written once, never read from memory). GCOMP_NOMEM if
 * no scratch.
 */
enum { OUTER_BLOCK_FLOATS = 16384 };

static int cpu_outer(const gk_call *call, gk_lowrank_state *st, float *x, float *out,
                     const float *qres)
{
    size_t n = st->n, m = st->m, r = st->r;
    size_t rows = m >= OUTER_BLOCK_FLOATS ? 1 : OUTER_BLOCK_FLOATS / m;
    float *tmp = gk_scratch_get(call, (rows < n ? rows : n) * m * sizeof(float));
    if (!tmp)
        return GCOMP_NOMEM;
    for (size_t i = 0; i < n; i += rows) {
        size_t nb = n - i < rows ? n - i : rows;
        float *xb = x + i * m;
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, (blasint)m, (blasint)nb, (blasint)r,
                    1.0f, st->q, (blasint)m, st->p + i, (blasint)n, 0.0f, tmp, (blasint)m);
        if (qres)
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, (blasint)m, (blasint)nb,
                        (blasint)r, -1.0f, qres, (blasint)m, st->p + i, (blasint)n, 1.0f, xb,
                        (blasint)m);
        else
            psgd_sub(xb, tmp, nb * m);
        gk_stream_scale(out + i * m, tmp, nb * m, 1.0f);
    }
    gk_stream_fence();
    gk_scratch_put(call, tmp);
    return GCOMP_OK;
}

/* dst = src / W. */
static void scale_copy(float *dst, const float *src, size_t len, int nodes)
{
    float inv = 1.0f / (float)nodes;
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] * inv;
}

static int powersgd_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_lowrank_state *st = call->state;
    if (call->phase % 2 == 0) {
        bool warm = call->spec->v[GK_PSGD_WARM_START] != 0.0;
        if (call->phase == 0 && (!warm || !st->have_q || gk_lowrank_all_zero(st->q, st->m * st->r)))
            gk_lowrank_random(call, st->q, st->m * st->r);
        cpu_mq(x, st, st->q, send);
        *bytes = st->n * st->r * sizeof(float);
    } else {
        cpu_mtp(x, st, st->p, send);
        *bytes = st->m * st->r * sizeof(float);
        if (st->qloc) /* the local residual needs this node's Q; only the last counts */
            memcpy(st->qloc, send, *bytes);
    }
    return GCOMP_OK;
}

static int powersgd_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    gk_lowrank_state *st = call->state;
    if (call->phase % 2 == 0) {
        if (gk_lowrank_check(recv, bytes, nrecv, st->n * st->r))
            return GCOMP_PROTOCOL;
        memcpy(st->p, recv[0], st->n * st->r * sizeof(float));
        return gk_lowrank_orthogonalise_cpu(st->p, st->n, st->r, st->work);
    }
    if (gk_lowrank_check(recv, bytes, nrecv, st->m * st->r))
        return GCOMP_PROTOCOL;
    scale_copy(st->q, recv[0], st->m * st->r, call->nodes);
    if (call->phase == 2 * (int)call->spec->v[GK_PSGD_POWER_ITERS] - 1) {
        st->have_q = true;
        return cpu_outer(call, st, x, out, st->qloc);
    }
    return GCOMP_OK;
}

static int unbiased_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_lowrank_state *st = call->state;
    int rc;
    if (call->step % 2 == 0) {
        if (!st->have_q || gk_lowrank_all_zero(st->q, st->m * st->r)) {
            gk_lowrank_random(call, st->q, st->m * st->r);
            st->have_q = true;
        }
        if ((rc = gk_lowrank_orthogonalise_cpu(st->q, st->m, st->r, st->work)))
            return rc;
        cpu_mq(x, st, st->q, send);
        *bytes = st->n * st->r * sizeof(float);
    } else {
        if (!st->have_p || gk_lowrank_all_zero(st->p, st->n * st->r)) {
            gk_lowrank_random(call, st->p, st->n * st->r);
            st->have_p = true;
        }
        if ((rc = gk_lowrank_orthogonalise_cpu(st->p, st->n, st->r, st->work)))
            return rc;
        cpu_mtp(x, st, st->p, send);
        *bytes = st->m * st->r * sizeof(float);
    }
    return GCOMP_OK;
}

static int unbiased_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    gk_lowrank_state *st = call->state;
    bool pstep = call->step % 2 == 0;
    if (gk_lowrank_check(recv, bytes, nrecv, gk_lowrank_unbiased_floats(st, call->step)))
        return GCOMP_PROTOCOL;
    if (pstep) {
        scale_copy(st->p, recv[0], st->n * st->r, call->nodes);
        st->have_p = true;
    } else {
        scale_copy(st->q, recv[0], st->m * st->r, call->nodes);
        st->have_q = true;
    }
    return cpu_outer(call, st, x, out, NULL);
}

const gk_codec_impl gk_powersgd_cpu = {.encode = powersgd_cpu_encode,
                                       .decode = powersgd_cpu_decode};
const gk_codec_impl gk_powersgd_unbiased_cpu = {.encode = unbiased_cpu_encode,
                                                .decode = unbiased_cpu_decode};
