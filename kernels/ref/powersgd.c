/*
 * powersgd, powersgd_unbiased: low-rank compression (algorithms.md 2.2), scalar
 * reference and the codec entries. Plain loops with double accumulators: this is the
 * oracle the BLAS version (cpu/powersgd.c) is tested against.
 *
 * powersgd (paper code RankKReducer), per power iteration k (phases 2k and 2k+1):
 *   phase 2k   encode: P = M Q (on phase 0, Q is drawn N(0,1) from the shared
 *                      generator on first use, when warm_start=0, or when the warm
 *                      Q is all zero); payload P, allreduce sum
 *              decode: P^ = orthogonalise(sum P) (Gram-Schmidt, eps 1e-8)
 *   phase 2k+1 encode: Q = M^T P^; payload Q, allreduce sum
 *              decode: Q = sum Q / W; on the last phase out = P^ Q^T and the
 *                      residual (key residual):
 *                        0 (global, default, the paper code): x = M - out, the
 *                          averaged reconstruction;
 *                        1 (local): x = M_w - P^ Q_w^T with Q_w = M_w^T P^ this
 *                          node's own Q of the last power iteration, before the
 *                          allreduce.
 * Both leave the same sum of the residuals over the nodes (sum_w Q_w = W Q), so the
 * next step's sum of P and Q, and with it every output, are the same in exact
 * arithmetic (algorithms.md 1). They differ in what each node keeps: with the global
 * residual a node whose gradient differs persistently from the mean accumulates that
 * difference (its part outside the rank-r approximation of the mean is never taken
 * off), so |x_w| can grow without bound while the sum stays bounded; the local residual
 * takes off each node's own projection, which keeps every x_w bounded.
 * Q is kept for the next step's warm start. Q is not orthogonalised before use (the
 * paper code does not; PyTorch's hook does): P^ is, which makes the result
 * independent of Q's scale.
 *
 * powersgd_unbiased (paper code HalfRankKReducer, run without memory): one factor per
 * step, by step parity. Even step ("P step"): Q^ = orthogonalise(Q) (a fresh N(0,1) Q
 * on first use), P = M Q^, allreduce, P /= W, out = P Q^T. Odd step ("Q step"):
 * P^ = orthogonalise(P) (a fresh P on first use), Q = M^T P^, allreduce, Q /= W,
 * out = P Q^T. The residual x - out is left in x, and discarded (ef is refused).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lowrank.h"
#include "gcomp.h"

/* Gram-Schmidt with eps and a second projection pass (declared in lowrank.h). */
void gk_lowrank_orthogonalise_ref(float *a, size_t len, size_t r)
{
    for (size_t i = 0; i < r; i++) {
        float *ci = a + i * len;
        for (int pass = 0; pass < GK_LOWRANK_GS_PASSES; pass++)
            for (size_t j = 0; j < i; j++) {
                const float *cj = a + j * len;
                double d = 0.0, jj = 0.0;
                for (size_t k = 0; k < len; k++) {
                    d += (double)cj[k] * ci[k];
                    jj += (double)cj[k] * cj[k];
                }
                if (jj == 0.0)
                    continue; /* a zero column spans nothing */
                for (size_t k = 0; k < len; k++)
                    ci[k] -= (float)(d / jj) * cj[k];
            }
        double ss = 0.0;
        for (size_t k = 0; k < len; k++)
            ss += (double)ci[k] * ci[k];
        float scale = (float)sqrt(ss) + GK_LOWRANK_EPS;
        for (size_t k = 0; k < len; k++)
            ci[k] /= scale;
    }
}

/* p (n x r) = M q, M = x row-major n x m. */
static void ref_mq(const float *x, size_t n, size_t m, size_t r, const float *q, float *p)
{
    for (size_t j = 0; j < r; j++)
        for (size_t i = 0; i < n; i++) {
            double acc = 0.0;
            for (size_t k = 0; k < m; k++)
                acc += (double)x[i * m + k] * q[j * m + k];
            p[j * n + i] = (float)acc;
        }
}

/* q (m x r) = M^T p, row by row of M into double accumulators. */
static int ref_mtp(const float *x, size_t n, size_t m, size_t r, const float *p, float *q)
{
    double *acc = calloc(m, sizeof(double));
    if (!acc)
        return GCOMP_NOMEM;
    for (size_t j = 0; j < r; j++) {
        for (size_t k = 0; k < m; k++)
            acc[k] = 0.0;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < m; k++)
                acc[k] += (double)x[i * m + k] * p[j * n + i];
        for (size_t k = 0; k < m; k++)
            q[j * m + k] = (float)acc[k];
    }
    free(acc);
    return GCOMP_OK;
}

/* out = P Q^T (row-major n x m) and x -= out, or x -= P qres^T when qres is not NULL
   (powersgd's local residual). */
static void ref_outer(const gk_lowrank_state *st, float *x, float *out, const float *qres)
{
    for (size_t i = 0; i < st->n; i++)
        for (size_t k = 0; k < st->m; k++) {
            double acc = 0.0, res = 0.0;
            for (size_t j = 0; j < st->r; j++) {
                acc += (double)st->p[j * st->n + i] * st->q[j * st->m + k];
                if (qres)
                    res += (double)st->p[j * st->n + i] * qres[j * st->m + k];
            }
            out[i * st->m + k] = (float)acc;
            x[i * st->m + k] -= (float)(qres ? res : acc);
        }
}

static int powersgd_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_lowrank_state *st = call->state;
    if (call->phase % 2 == 0) {
        bool warm = call->spec->v[GK_PSGD_WARM_START] != 0.0;
        if (call->phase == 0 && (!warm || !st->have_q || gk_lowrank_all_zero(st->q, st->m * st->r)))
            gk_lowrank_random(call, st->q, st->m * st->r);
        ref_mq(x, st->n, st->m, st->r, st->q, send);
        *bytes = st->n * st->r * sizeof(float);
    } else {
        if (ref_mtp(x, st->n, st->m, st->r, st->p, send))
            return GCOMP_NOMEM;
        *bytes = st->m * st->r * sizeof(float);
        if (st->qloc) /* the local residual needs this node's Q; only the last counts */
            memcpy(st->qloc, send, *bytes);
    }
    return GCOMP_OK;
}

static int powersgd_ref_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    gk_lowrank_state *st = call->state;
    const float *sum = recv[0];
    if (call->phase % 2 == 0) {
        if (gk_lowrank_check(recv, bytes, nrecv, st->n * st->r))
            return GCOMP_PROTOCOL;
        memcpy(st->p, sum, st->n * st->r * sizeof(float));
        gk_lowrank_orthogonalise_ref(st->p, st->n, st->r);
        return GCOMP_OK;
    }
    if (gk_lowrank_check(recv, bytes, nrecv, st->m * st->r))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < st->m * st->r; i++)
        st->q[i] = sum[i] / (float)call->nodes;
    if (call->phase == 2 * (int)call->spec->v[GK_PSGD_POWER_ITERS] - 1) {
        ref_outer(st, x, out, st->qloc);
        st->have_q = true;
    }
    return GCOMP_OK;
}

static int unbiased_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_lowrank_state *st = call->state;
    if (call->step % 2 == 0) {
        if (!st->have_q || gk_lowrank_all_zero(st->q, st->m * st->r)) {
            gk_lowrank_random(call, st->q, st->m * st->r);
            st->have_q = true;
        }
        gk_lowrank_orthogonalise_ref(st->q, st->m, st->r);
        ref_mq(x, st->n, st->m, st->r, st->q, send);
        *bytes = st->n * st->r * sizeof(float);
    } else {
        if (!st->have_p || gk_lowrank_all_zero(st->p, st->n * st->r)) {
            gk_lowrank_random(call, st->p, st->n * st->r);
            st->have_p = true;
        }
        gk_lowrank_orthogonalise_ref(st->p, st->n, st->r);
        if (ref_mtp(x, st->n, st->m, st->r, st->p, send))
            return GCOMP_NOMEM;
        *bytes = st->m * st->r * sizeof(float);
    }
    return GCOMP_OK;
}

static int unbiased_ref_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    gk_lowrank_state *st = call->state;
    bool pstep = call->step % 2 == 0;
    float *f = pstep ? st->p : st->q;
    size_t len = (pstep ? st->n : st->m) * st->r;
    if (gk_lowrank_check(recv, bytes, nrecv, gk_lowrank_unbiased_floats(st, call->step)))
        return GCOMP_PROTOCOL;
    const float *sum = recv[0];
    for (size_t i = 0; i < len; i++)
        f[i] = sum[i] / (float)call->nodes;
    if (pstep)
        st->have_p = true;
    else
        st->have_q = true;
    ref_outer(st, x, out, NULL);
    return GCOMP_OK;
}

/* Codec entries: metadata shared by both implementations. */

static int powersgd_nphases(const gk_spec *spec)
{
    return 2 * (int)spec->v[GK_PSGD_POWER_ITERS];
}

/* The PyTorch rule: compress iff (n + m) r_t min_compression_rate < n m. */
static bool powersgd_compresses(const gk_spec *spec, const gk_layer *layer)
{
    double r = (double)gk_lowrank_rank(spec, layer);
    double n = (double)layer->rows, m = (double)layer->cols;
    return (n + m) * r * spec->v[GK_PSGD_MIN_RATE] < n * m;
}

/* powersgd_unbiased has no min_compression_rate key: the same rule at the default 2. */
static bool unbiased_compresses(const gk_spec *spec, const gk_layer *layer)
{
    double r = (double)gk_lowrank_rank(spec, layer);
    double n = (double)layer->rows, m = (double)layer->cols;
    return (n + m) * r * 2.0 < n * m;
}

static size_t powersgd_max_bytes(const gk_spec *spec, const gk_layer *layer,
                                 int phase, uint64_t step)
{
    (void)step;
    (void)step;
    size_t len = phase % 2 == 0 ? layer->rows : layer->cols;
    return len * gk_lowrank_rank(spec, layer) * sizeof(float);
}

static size_t unbiased_max_bytes(const gk_spec *spec, const gk_layer *layer,
                                 int phase, uint64_t step)
{
    (void)phase;
    /* P (n r_t floats) on even steps, Q (m r_t) on odd ones. */
    size_t len = step % 2 == 0 ? layer->rows : layer->cols;
    return len * gk_lowrank_rank(spec, layer) * sizeof(float);
}

static void lowrank_state_free(void *state)
{
    gk_lowrank_state *st = state;
    if (!st)
        return;
    free(st->p);
    free(st->q);
    free(st->work);
    free(st->qloc);
    free(st);
}

static int lowrank_state_new(const gk_spec *spec, const gk_layer *layer, void **state)
{
    gk_lowrank_state *st = calloc(1, sizeof(*st));
    if (!st)
        return GCOMP_NOMEM;
    st->n = layer->rows;
    st->m = layer->cols;
    st->r = gk_lowrank_rank(spec, layer);
    st->p = calloc(st->n * st->r + 1, sizeof(float));
    st->q = calloc(st->m * st->r + 1, sizeof(float));
    st->work = calloc(2 * st->r + 1, sizeof(float));
    if (!st->p || !st->q || !st->work) {
        lowrank_state_free(st);
        return GCOMP_NOMEM;
    }
    *state = st;
    return GCOMP_OK;
}

/* powersgd's state: the shared one, plus this node's Q for the local residual. */
static int powersgd_state_new(const gk_spec *spec, const gk_layer *layer, void **state)
{
    int rc = lowrank_state_new(spec, layer, state);
    if (rc || spec->v[GK_PSGD_RESIDUAL] != GK_PSGD_RESIDUAL_LOCAL)
        return rc;
    gk_lowrank_state *st = *state;
    st->qloc = calloc(st->m * st->r + 1, sizeof(float));
    if (!st->qloc) {
        lowrank_state_free(st);
        *state = NULL;
        return GCOMP_NOMEM;
    }
    return GCOMP_OK;
}

/* Checkpoints ('PSGD' record, version 1): n, m, r, whether P and Q hold a step's
   values and whether this node's Q is kept, then P, Q and this node's Q. */
static int lowrank_state_save(const void *state, const gk_layer *layer, gk_writer *w)
{
    (void)layer;
    const gk_lowrank_state *st = state;
    gk_put_tag(w, "PSGD", 1);
    gk_put_u64(w, st->n);
    gk_put_u64(w, st->m);
    gk_put_u64(w, st->r);
    gk_put_u8(w, st->have_p);
    gk_put_u8(w, st->have_q);
    gk_put_u8(w, st->qloc != NULL);
    gk_put_f32s(w, st->p, st->n * st->r);
    gk_put_f32s(w, st->q, st->m * st->r);
    if (st->qloc)
        gk_put_f32s(w, st->qloc, st->m * st->r);
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

static int lowrank_state_load(void *state, const gk_layer *layer, gk_reader *r)
{
    (void)layer;
    gk_lowrank_state *st = state;
    uint64_t n, m, rank;
    uint8_t have_p, have_q, has_qloc;
    if (gk_get_tag(r, "PSGD", 1, NULL) && gk_get_u64(r, &n) && gk_get_u64(r, &m) &&
        gk_get_u64(r, &rank) && gk_get_u8(r, &have_p) && gk_get_u8(r, &have_q) &&
        gk_get_u8(r, &has_qloc) &&
        (n != st->n || m != st->m || rank != st->r || (has_qloc != 0) != (st->qloc != NULL)))
        gk_reader_fail(r, "powersgd state of a %llux%llu layer at rank %llu, the layer is "
                       "%zux%zu at rank %zu", (unsigned long long)n, (unsigned long long)m,
                       (unsigned long long)rank, st->n, st->m, st->r);
    if (r->failed)
        return GCOMP_PROTOCOL;
    /* Read P, Q and this node's Q into a copy, so that a refused state leaves st as it
       was. */
    size_t np = st->n * st->r, nq = st->m * st->r, total = np + nq + (st->qloc ? nq : 0);
    float *in = malloc(total * sizeof(float) + 1);
    if (!in) {
        gk_reader_fail(r, "out of memory for a powersgd state of %zu floats", total);
        return GCOMP_NOMEM;
    }
    if (gk_get_f32s(r, in, total)) {
        memcpy(st->p, in, np * sizeof(float));
        memcpy(st->q, in + np, nq * sizeof(float));
        if (st->qloc)
            memcpy(st->qloc, in + np + nq, nq * sizeof(float));
        st->have_p = have_p;
        st->have_q = have_q;
    }
    free(in);
    return r->failed ? GCOMP_PROTOCOL : GCOMP_OK;
}

static const gk_param_desc powersgd_params[] = {
    {"rank", 1, 1, 1024, true, "rank r of the approximation (r_t = min(n, m, r))"},
    {"warm_start", 1, 0, 1, true, "1: reuse the previous step's Q; 0: a fresh random Q each step"},
    {"power_iters", 1, 1, 8, true, "power iterations per step (2 allreduces each)"},
    {"min_compression_rate", 2, 1, 1e6, false,
     "compress a layer only if (n + m) r_t rate < n m; smaller layers go dense"},
    {"residual", GK_PSGD_RESIDUAL_GLOBAL, 0, 1, true,
     "error feedback residual: 0 = M - out (global, paper code); 1 = M - P Q_w^T (local)"},
};

static const gk_param_desc unbiased_params[] = {
    {"rank", 1, 1, 1024, true, "rank r of the factor sent each step (r_t = min(n, m, r))"},
};

static const gk_codec_impl powersgd_ref = {.encode = powersgd_ref_encode,
                                           .decode = powersgd_ref_decode};
static const gk_codec_impl unbiased_ref = {.encode = unbiased_ref_encode,
                                           .decode = unbiased_ref_decode};

const gk_codec gk_codec_powersgd = {
    .name = "powersgd",
    .summary = "PowerSGD rank-r power iteration with warm start (allreduce of P and Q)",
    .params = powersgd_params,
    .nparams = sizeof(powersgd_params) / sizeof(powersgd_params[0]),
    .ef_default = true,
    .ef_allowed = true,
    .nphases = powersgd_nphases,
    .knob = "rank",
    .knob_more = -1,
    .compresses = powersgd_compresses,
    .max_bytes = powersgd_max_bytes,
    .state_new = powersgd_state_new,
    .state_free = lowrank_state_free,
    .state_save = lowrank_state_save,
    .state_load = lowrank_state_load,
    .impl = {[GK_BACKEND_REF] = &powersgd_ref, [GK_BACKEND_CPU] = &gk_powersgd_cpu},
};

const gk_codec gk_codec_powersgd_unbiased = {
    .name = "powersgd_unbiased",
    .summary = "PowerSGD 'unbiased rank r': one factor per step, alternating, no memory",
    .params = unbiased_params,
    .nparams = sizeof(unbiased_params) / sizeof(unbiased_params[0]),
    .ef_default = false,
    .ef_allowed = false,
    .knob = "rank",
    .knob_more = -1,
    .compresses = unbiased_compresses,
    .max_bytes = unbiased_max_bytes,
    .state_new = lowrank_state_new,
    .state_free = lowrank_state_free,
    .state_save = lowrank_state_save,
    .state_load = lowrank_state_load,
    .impl = {[GK_BACKEND_REF] = &unbiased_ref, [GK_BACKEND_CPU] = &gk_powersgd_unbiased_cpu},
};
