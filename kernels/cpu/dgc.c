/*
 * dgc, optimised: the sample's threshold by radix select instead of a sort, then the
 * momentum correction fused with the first count and a speculative emit at that
 * threshold (one pass over x, u, r), vectorised counting passes for the rare
 * refinements and a second emitting pass only after them. Same arithmetic and draws as
 * ref/dgc.c, so the same entries.
 */
#include <stdlib.h>

#include "../rng.h"
#include "../sparse.h"
#include "gcomp.h"
#include "select.h"

/*
 * The momentum correction fused with the first counting pass: per block of GK_SEL_BLOCK
 * elements v = x + m u; u = m u + (x - r); x = v; r = v (r NULL: ef = 0, g = x), then an
 * entry for every v with key >= t is emitted while the block is still in registers or
 * L1. Returns the count. When that count needs no refinement (the usual case), the
 * entries are already the payload and encode reads x only once.
 */
static size_t dgc_cpu_momentum_emit(float *restrict x, float *restrict u, float *restrict r,
                                    float m, size_t n, uint32_t t, void *send)
{
    size_t i = 0, c = 0;
    for (; i + GK_SEL_BLOCK <= n; i += GK_SEL_BLOCK) {
#ifdef __SSE2__
        /* Whole-vector loads and stores: GCC leaves this loop scalar, and the block mask
           would then reload x with a vector load from scalar stores, which stalls on
           store forwarding. The operations are the scalar ones, in the same order. */
        const __m128 mv = _mm_set1_ps(m);
        for (int j = 0; j < GK_SEL_BLOCK; j += 4) {
            __m128 xv = _mm_loadu_ps(x + i + j), mu = _mm_mul_ps(mv, _mm_loadu_ps(u + i + j));
            __m128 g = r ? _mm_sub_ps(xv, _mm_loadu_ps(r + i + j)) : xv;
            __m128 v = _mm_add_ps(xv, mu);
            _mm_storeu_ps(u + i + j, _mm_add_ps(mu, g));
            _mm_storeu_ps(x + i + j, v);
            if (r)
                _mm_storeu_ps(r + i + j, v);
        }
#else
        if (r) {
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                float g = x[i + j] - r[i + j], v = x[i + j] + m * u[i + j];
                u[i + j] = m * u[i + j] + g;
                x[i + j] = v;
                r[i + j] = v;
            }
        } else {
            for (int j = 0; j < GK_SEL_BLOCK; j++) {
                float g = x[i + j], v = x[i + j] + m * u[i + j];
                u[i + j] = m * u[i + j] + g;
                x[i + j] = v;
            }
        }
#endif
        for (unsigned b = gk_sel_block_mask(x + i, t); b; b &= b - 1) {
            size_t e = i + (size_t)__builtin_ctz(b);
            gk_sparse_put(send, c++, (uint32_t)e, x[e]);
        }
    }
    for (; i < n; i++) {
        float g = r ? x[i] - r[i] : x[i], v = x[i] + m * u[i];
        u[i] = m * u[i] + g;
        x[i] = v;
        if (r)
            r[i] = v;
        if (gk_sparse_key(v) >= t)
            gk_sparse_put(send, c++, (uint32_t)i, v);
    }
    return c;
}

/* The nonzero elements with |x| >= thr are those with key >= max(key(thr), 1). */
static uint32_t dgc_cpu_key(float thr)
{
    uint32_t t = gk_sparse_key(thr);
    return t ? t : 1;
}

static int dgc_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    gk_dgc_state *st = call->state;
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    if (!st)
        return GCOMP_INVALID;
    float m = (float)call->spec->v[GK_DGC_MOMENTUM];
    size_t ns = gk_dgc_nsamples(n), nt = gk_dgc_ntop(n, call->spec->v[GK_SPARSE_DENSITY], ns);
    uint32_t *sample = malloc(ns * sizeof(*sample));
    if (!sample)
        return GCOMP_NOMEM;
    /* The sample is drawn before the momentum pass, so each sampled v is computed from
       x and u with the pass's own expression: the same value the reference reads back
       from x after its pass. */
    gk_rng r;
    gk_rng_seed(&r, call->seed, call->layer->id, call->step, gk_sparse_local_stream(call->node));
    for (size_t j = 0; j < ns; j++) {
        size_t i = (size_t)gk_rng_below(&r, n);
        sample[j] = gk_sparse_key(x[i] + m * st->u[i]);
    }
    size_t above;
    uint32_t tkey = gk_sel_kth_largest(sample, ns, nt, &above);
    free(sample);
    float thr;
    memcpy(&thr, &tkey, sizeof(thr));
    /* The reference's refinement loop, whose first count comes from the fused pass. */
    size_t count = dgc_cpu_momentum_emit(x, st->u, st->r, m, n, dgc_cpu_key(thr), send);
    float f = gk_dgc_factor(count, k);
    if (f == 0.0f) {
        *bytes = count * GK_SPARSE_ENTRY;
        return GCOMP_OK;
    }
    thr *= f;
    for (int it = 1;; it++) {
        uint32_t t = dgc_cpu_key(thr);
        gk_sel_count_ge_multi(x, n, &t, 1, &count);
        f = gk_dgc_factor(count, k);
        if (f == 0.0f || it == GK_DGC_REFINE)
            break;
        thr *= f;
    }
    *bytes = gk_sel_emit_ge(x, n, dgc_cpu_key(thr), send) * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int dgc_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                          const size_t *bytes, int nrecv, float *out)
{
    gk_dgc_state *st = call->state;
    if (!st)
        return GCOMP_INVALID;
    float *zero[2] = {st->u, st->r};
    return gk_sel_decode(call, x, recv, bytes, nrecv, out, zero, st->r ? 2 : 1,
                         call->layer->numel);
}

const gk_codec_impl gk_dgc_cpu = {.encode = dgc_cpu_encode, .decode = dgc_cpu_decode};
