/*
 * codec_testutil.h: helpers the low-rank, sign, quantiser and cast tests share: node
 * buffers, seeded data, norms, and a side-by-side run of two implementations of one
 * codec through codec_sim. Header-only (static functions) so each test stays one file.
 */
#ifndef CODEC_TESTUTIL_H
#define CODEC_TESTUTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_sim.h"
#include "rng.h"

/* W arrays of d floats, zeroed; abort on out of memory (tests only). */
static inline float **tu_alloc(int W, size_t d)
{
    float **a = calloc((size_t)W, sizeof(*a));
    if (!a)
        abort();
    for (int w = 0; w < W; w++)
        if (!(a[w] = calloc(d ? d : 1, sizeof(float))))
            abort();
    return a;
}

static inline void tu_free(float **a, int W)
{
    for (int w = 0; w < W; w++)
        free(a[w]);
    free(a);
}

/* N(0, scale^2) data from a seed, different for every (seed, tag). */
static inline void tu_normal(float *a, size_t d, uint64_t seed, uint64_t tag, float scale)
{
    gk_rng r;
    gk_rng_seed(&r, seed, tag, 0x7e57, 0);
    for (size_t i = 0; i < d; i++)
        a[i] = scale * gk_rng_normal(&r);
}

/* Uniform data with mean 0 and standard deviation scale (cheaper than tu_normal for
   the large conformance shapes). */
static inline void tu_uniform(float *a, size_t d, uint64_t seed, uint64_t tag, float scale)
{
    gk_rng r;
    gk_rng_seed(&r, seed, tag, 0x7e58, 0);
    const float k = 3.4641016f * scale; /* 2 sqrt(3) */
    for (size_t i = 0; i < d; i++)
        a[i] = k * (gk_rng_uniform(&r) - 0.5f);
}

static inline double tu_norm(const float *a, size_t d)
{
    double s = 0.0;
    for (size_t i = 0; i < d; i++)
        s += (double)a[i] * a[i];
    return sqrt(s);
}

/* |a - b|_2 */
static inline double tu_dist(const float *a, const float *b, size_t d)
{
    double s = 0.0;
    for (size_t i = 0; i < d; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

static inline double tu_max_abs_diff(const float *a, const float *b, size_t d)
{
    double m = 0.0;
    for (size_t i = 0; i < d; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Elements of a and b (d each) that differ by more than 1e-5 |b|_inf. */
static inline size_t tu_count_bad(const float *a, const float *b, size_t d)
{
    double inf = 0.0;
    for (size_t i = 0; i < d; i++)
        inf = fmax(inf, fabs((double)b[i]));
    size_t n = 0;
    for (size_t i = 0; i < d; i++)
        n += fabs((double)a[i] - b[i]) > 1e-5 * inf;
    return n;
}

static inline bool tu_all_finite(const float *a, size_t d)
{
    for (size_t i = 0; i < d; i++)
        if (!isfinite(a[i]))
            return false;
    return true;
}

static inline bool tu_all_zero(const float *a, size_t d)
{
    for (size_t i = 0; i < d; i++)
        if (a[i] != 0.0f)
            return false;
    return true;
}

/* The mean over the nodes of g[w]. */
static inline void tu_mean(float *const *g, int W, size_t d, float *mean)
{
    for (size_t i = 0; i < d; i++) {
        double s = 0.0;
        for (int w = 0; w < W; w++)
            s += g[w][i];
        mean[i] = (float)(s / W);
    }
}

/* How a conformance run compares: the worst relative distances seen, over steps and
   nodes, between the two implementations' outputs and residuals. */
typedef struct tu_conf {
    double out_rel; /* max over steps and nodes of |out_a - out_b| / max(|out_b|, tiny) */
    double x_rel;   /* the same for the residuals x */
    double out_max; /* max elementwise |out_a - out_b| */
    double bad_frac; /* fraction of output and residual elements (all steps and nodes)
                        that differ by more than 1e-5 of the array's largest |value| */
    int rc_a, rc_b; /* first codec error of each run (0 if none) */
} tu_conf;

/* Run implementations a and b of spec side by side on W nodes for steps steps, node
   w's data at step t being uniform with standard deviation scale from
   (data_seed, t W + w) (all zero when scale is 0), and report the largest
   differences. */
static inline tu_conf tu_conformance(const char *spec, gk_layer layer, int W, int steps,
                                     uint64_t data_seed, float scale, bool use_ref_a)
{
    tu_conf c = {0};
    codec_sim a, b;
    if (codec_sim_init(&a, spec, &layer, W, NULL) || codec_sim_init(&b, spec, &layer, W, NULL)) {
        c.rc_a = c.rc_b = -1;
        return c;
    }
    const gk_codec *codec = a.spec.codec;
    a.impl = use_ref_a ? codec->impl[GK_BACKEND_REF] : gk_codec_impl_of(codec, GK_BACKEND_CPU);
    b.impl = codec->impl[GK_BACKEND_REF];
    size_t d = layer.numel;
    float **g = tu_alloc(W, d), **oa = tu_alloc(W, d), **ob = tu_alloc(W, d);
    size_t bad = 0, seen = 0;
    for (int t = 0; t < steps && !c.rc_a && !c.rc_b; t++) {
        for (int w = 0; w < W; w++)
            tu_uniform(g[w], d, data_seed, (uint64_t)(t * W + w), scale);
        c.rc_a = codec_sim_step(&a, (uint64_t)t, (const float *const *)g, oa);
        c.rc_b = codec_sim_step(&b, (uint64_t)t, (const float *const *)g, ob);
        for (int w = 0; w < W && !c.rc_a && !c.rc_b; w++) {
            double nb = fmax(tu_norm(ob[w], d), 1e-30), nx = fmax(tu_norm(b.x[w], d), 1e-30);
            c.out_rel = fmax(c.out_rel, tu_dist(oa[w], ob[w], d) / nb);
            c.x_rel = fmax(c.x_rel, tu_dist(a.x[w], b.x[w], d) / nx);
            c.out_max = fmax(c.out_max, tu_max_abs_diff(oa[w], ob[w], d));
            bad += tu_count_bad(oa[w], ob[w], d) + tu_count_bad(a.x[w], b.x[w], d);
            seen += 2 * d;
            if (!tu_all_finite(oa[w], d) || !tu_all_finite(a.x[w], d))
                c.rc_a = -100;
        }
    }
    c.bad_frac = seen ? (double)bad / (double)seen : 0.0;
    tu_free(g, W);
    tu_free(oa, W);
    tu_free(ob, W);
    codec_sim_free(&a);
    codec_sim_free(&b);
    return c;
}

#endif /* CODEC_TESTUTIL_H */
