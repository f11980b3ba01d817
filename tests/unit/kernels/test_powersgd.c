/*
 * powersgd and powersgd_unbiased: the properties of algorithms.md section 4 (skip
 * rule, orthogonalisation, exactness at full rank, warm start convergence, error
 * feedback), the zero-gradient cases, the payload sizes, and the residual key (local
 * and global agree on the outputs; only local keeps each node's residual bounded), on
 * both implementations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "codec_testutil.h"
#include "gcomp.h"
#include "lowrank.h"

static gk_spec parse(const char *text)
{
    gk_spec s;
    char err[512] = "";
    int rc = gk_spec_parse(text, &s, err, sizeof(err));
    if (rc)
        print_message("%s: %s\n", text, err);
    assert_int_equal(rc, GCOMP_OK);
    return s;
}

static gk_layer layer2(size_t n, size_t m)
{
    const size_t dims[] = {n, m};
    return codec_sim_layer(0x20001, 2, dims);
}

static void test_spec_and_skip_rule(void **st)
{
    (void)st;
    gk_spec s = parse("powersgd");
    assert_true(s.ef);
    assert_int_equal(s.codec->nphases(&s), 2);
    gk_layer big = layer2(64, 576);
    assert_true(s.codec->compresses(&s, &big));
    gk_spec s4 = parse("powersgd:rank=4,power_iters=3");
    assert_int_equal(s4.codec->nphases(&s4), 6);
    gk_layer tiny = layer2(3, 3);
    assert_false(s4.codec->compresses(&s4, &tiny));
    /* A 1-D layer (n x 1) never passes for any rate >= 1. */
    const size_t len[] = {100000};
    gk_layer vec = codec_sim_layer(1, 1, len);
    gk_spec s1 = parse("powersgd:min_compression_rate=1");
    assert_false(s1.codec->compresses(&s1, &vec));
    /* The rate itself: 64 x 576 at r = 1 costs 640 floats against 36864: compressed
       at rate 57 (36480 < 36864), not at rate 58. */
    gk_spec r57 = parse("powersgd:min_compression_rate=57"),
            r58 = parse("powersgd:min_compression_rate=58");
    assert_true(r57.codec->compresses(&r57, &big));
    assert_false(r58.codec->compresses(&r58, &big));
    gk_spec u = parse("powersgd_unbiased:rank=2");
    assert_false(u.ef);
    assert_true(u.codec->compresses(&u, &big));
    assert_false(u.codec->compresses(&u, &tiny));
    gk_spec bad;
    char err[512];
    assert_int_equal(gk_spec_parse("powersgd_unbiased:ef=1", &bad, err, sizeof(err)),
                     GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("powersgd:rank=0", &bad, err, sizeof(err)), GCOMP_INVALID);
}

/* Both orthogonalisations: a zero column stays zero, the others are orthonormal, and
   the two agree column by column (same signs), for the Gram-Schmidt (r <= 2) and the
   QR (r > 2) paths of the cpu version. */
static void test_orthogonalise(void **st)
{
    (void)st;
    const size_t len = 40;
    const size_t ranks[] = {1, 2, 3, 5, 8};
    for (size_t t = 0; t < sizeof(ranks) / sizeof(ranks[0]); t++) {
        size_t r = ranks[t], zero = r > 1 ? 1 : len; /* column 1 zero when there is one */
        float *a = malloc(len * r * sizeof(float)), *b = malloc(len * r * sizeof(float));
        float work[16];
        tu_normal(a, len * r, 5, r, 1.0f);
        if (zero < r)
            memset(a + zero * len, 0, len * sizeof(float));
        memcpy(b, a, len * r * sizeof(float));
        gk_lowrank_orthogonalise_ref(a, len, r);
        assert_int_equal(gk_lowrank_orthogonalise_cpu(b, len, r, work), GCOMP_OK);
        for (size_t i = 0; i < r; i++)
            for (size_t j = 0; j < r; j++) {
                double da = 0.0, db = 0.0;
                for (size_t k = 0; k < len; k++) {
                    da += (double)a[i * len + k] * a[j * len + k];
                    db += (double)b[i * len + k] * b[j * len + k];
                }
                double want = i == j && i != zero ? 1.0 : 0.0;
                assert_true(fabs(da - want) < 1e-5);
                assert_true(fabs(db - want) < 1e-5);
            }
        if (zero < r) {
            assert_true(tu_all_zero(a + zero * len, len));
            assert_true(tu_all_zero(b + zero * len, len));
        }
        assert_true(tu_max_abs_diff(a, b, len * r) < 1e-5);
        /* Rank deficient, as P = M Q is for a gradient of rank 2 < r: every column a
           random combination of two vectors. The columns after the second are
           normalised rounding noise (norms ~1e-6, so eps makes them a little
           shorter than 1 and the projections on them inexact by ~1e-2 each); with the
           second pass they stay orthogonal to ~1e-3, where one pass gives O(1). */
        float v[80], coef[16];
        tu_normal(v, 2 * len, 6, r, 1.0f);
        tu_normal(coef, 2 * r, 7, r, 1.0f);
        for (size_t j = 0; j < r; j++)
            for (size_t k = 0; k < len; k++)
                a[j * len + k] = b[j * len + k] = coef[2 * j] * v[k] + coef[2 * j + 1] * v[len + k];
        gk_lowrank_orthogonalise_ref(a, len, r);
        assert_int_equal(gk_lowrank_orthogonalise_cpu(b, len, r, work), GCOMP_OK);
        for (size_t i = 0; i < r; i++)
            for (size_t j = 0; j < i; j++) {
                double da = 0.0, db = 0.0;
                for (size_t k = 0; k < len; k++) {
                    da += (double)a[i * len + k] * a[j * len + k];
                    db += (double)b[i * len + k] * b[j * len + k];
                }
                if (fabs(da) >= 2e-3 || fabs(db) >= 2e-3)
                    print_message("r %zu cols %zu,%zu: %g %g\n", r, i, j, da, db);
                assert_true(fabs(da) < 2e-3);
                assert_true(fabs(db) < 2e-3);
            }
        /* An all-zero matrix stays all zero (no NaN from 0/0). */
        memset(a, 0, len * r * sizeof(float));
        memset(b, 0, len * r * sizeof(float));
        gk_lowrank_orthogonalise_ref(a, len, r);
        assert_int_equal(gk_lowrank_orthogonalise_cpu(b, len, r, work), GCOMP_OK);
        assert_true(tu_all_zero(a, len * r));
        assert_true(tu_all_zero(b, len * r));
        free(a);
        free(b);
    }
}

/* Run spec on W nodes for steps steps with fixed per-node gradients g (both
   implementations); return the relative error |out - mean g| / |mean g| of node 0 at
   each step in err[steps]. */
static void run_fixed(const char *spec, gk_layer l, int W, float **g, int steps, bool ref,
                      double *err, codec_sim *keep)
{
    codec_sim s;
    assert_int_equal(codec_sim_init(&s, spec, &l, W, NULL), 0);
    if (ref)
        s.impl = s.spec.codec->impl[GK_BACKEND_REF];
    float **out = tu_alloc(W, l.numel), *mean = malloc(l.numel * sizeof(float));
    tu_mean(g, W, l.numel, mean);
    for (int t = 0; t < steps; t++) {
        assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
        for (int w = 1; w < W; w++) /* every node reconstructs the same mean */
            assert_true(tu_max_abs_diff(out[0], out[w], l.numel) <= 1e-6 * tu_norm(mean, l.numel));
        err[t] = tu_dist(out[0], mean, l.numel) / tu_norm(mean, l.numel);
    }
    free(mean);
    tu_free(out, W);
    if (keep)
        *keep = s;
    else
        codec_sim_free(&s);
}

/* At r = min(n, m) the approximation is exact (up to float rounding). */
static void test_full_rank_is_exact(void **st)
{
    (void)st;
    const size_t shapes[][2] = {{8, 5}, {5, 8}, {3, 3}, {1, 1}, {1, 6}};
    const char *specs[] = {"powersgd:rank=5,ef=0", "powersgd:rank=8", "powersgd:rank=3",
                           "powersgd:rank=1", "powersgd:rank=2,power_iters=2"};
    for (size_t c = 0; c < 5; c++)
        for (int ref = 0; ref < 2; ref++) {
            gk_layer l = layer2(shapes[c][0], shapes[c][1]);
            float **g = tu_alloc(3, l.numel);
            for (int w = 0; w < 3; w++)
                tu_normal(g[w], l.numel, 11, (uint64_t)w, 1.0f);
            double err[3];
            run_fixed(specs[c], l, 3, g, 3, ref, err, NULL);
            for (int t = 0; t < 3; t++) {
                if (err[t] > 1e-5)
                    print_message("%s %s step %d: err %g\n", specs[c], ref ? "ref" : "cpu", t,
                                  err[t]);
                assert_true(err[t] < 1e-5);
            }
            tu_free(g, 3);
        }
}

/* A matrix sum_i sigma_i u_i v_i^T with orthonormal u, v (n x k, m x k). */
static void make_spectrum(float *M, size_t n, size_t m, const double *sigma, size_t k)
{
    float *u = malloc(n * k * sizeof(float)), *v = malloc(m * k * sizeof(float));
    tu_normal(u, n * k, 21, 1, 1.0f);
    tu_normal(v, m * k, 21, 2, 1.0f);
    gk_lowrank_orthogonalise_ref(u, n, k);
    gk_lowrank_orthogonalise_ref(v, m, k);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) {
            double a = 0.0;
            for (size_t c = 0; c < k; c++)
                a += sigma[c] * u[c * n + i] * v[c * m + j];
            M[i * m + j] = (float)a;
        }
    free(u);
    free(v);
}

/* Warm start: on a fixed gradient with a decaying spectrum the error falls over the
   steps to the best rank-2 error; on a gradient of rank <= r it is exact from the
   first step on. */
static void test_warm_start_converges(void **st)
{
    (void)st;
    const size_t n = 60, m = 40;
    const double sigma[] = {8, 4, 1, 0.5, 0.25, 0.1};
    gk_layer l = layer2(n, m);
    float **g = tu_alloc(3, n * m);
    make_spectrum(g[0], n, m, sigma, 6);
    for (int w = 1; w < 3; w++) /* node w sends (w + 1) M / 2: the mean is 1.5 M */
        for (size_t i = 0; i < n * m; i++)
            g[w][i] = g[0][i] * (float)(w + 1) * 0.5f;
    double best = sqrt(1 + 0.25 + 0.0625 + 0.01) / sqrt(64 + 16 + 1 + 0.25 + 0.0625 + 0.01);
    for (int ref = 0; ref < 2; ref++) {
        double err[12], err2[1];
        run_fixed("powersgd:rank=2,ef=0", l, 3, g, 12, ref, err, NULL);
        for (int t = 1; t < 12; t++)
            assert_true(err[t] <= err[t - 1] + 1e-6);
        assert_true(err[0] > err[11] * 1.02);
        assert_true(err[11] < best * 1.001);
        assert_true(err[11] > best * 0.999);
        /* Without warm start every step starts from a fresh random Q. */
        double cold[4];
        run_fixed("powersgd:rank=2,ef=0,warm_start=0", l, 3, g, 4, ref, cold, NULL);
        assert_true(cold[3] > err[11] * 1.01);
        /* Two power iterations get closer on the first step than one. */
        run_fixed("powersgd:rank=2,ef=0,power_iters=2", l, 3, g, 1, ref, err2, NULL);
        assert_true(err2[0] < err[0]);
    }
    /* Rank 2 gradient, rank 2 codec: exact at every step. */
    const double low[] = {3, 1};
    make_spectrum(g[0], n, m, low, 2);
    for (int w = 1; w < 3; w++)
        for (size_t i = 0; i < n * m; i++)
            g[w][i] = g[0][i] * (float)(w + 1);
    for (int ref = 0; ref < 2; ref++) {
        double err[4];
        run_fixed("powersgd:rank=2", l, 3, g, 4, ref, err, NULL);
        for (int t = 0; t < 4; t++)
            assert_true(err[t] < 1e-5);
    }
    tu_free(g, 3);
}

/* Error feedback with a constant gradient: the sum of the outputs over T steps
   follows T g, the difference (the mean residual) staying bounded. */
static void test_error_feedback_constant_gradient(void **st)
{
    (void)st;
    gk_layer l = layer2(30, 20);
    float **g = tu_alloc(3, l.numel), **out = tu_alloc(3, l.numel);
    float *mean = malloc(l.numel * sizeof(float));
    double *sum = calloc(l.numel, sizeof(double));
    for (int w = 0; w < 3; w++)
        tu_normal(g[w], l.numel, 31, (uint64_t)w, 1.0f);
    tu_mean(g, 3, l.numel, mean);
    double gn = tu_norm(mean, l.numel);
    for (int ref = 0; ref < 2; ref++) {
        codec_sim s;
        assert_int_equal(codec_sim_init(&s, "powersgd:rank=1", &l, 3, NULL), 0);
        if (ref)
            s.impl = s.spec.codec->impl[GK_BACKEND_REF];
        memset(sum, 0, l.numel * sizeof(double));
        double worst = 0.0, at10 = 0.0, atT = 0.0;
        const int T = 200;
        for (int t = 1; t <= T; t++) {
            assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
            double d2 = 0.0;
            for (size_t i = 0; i < l.numel; i++) {
                sum[i] += out[0][i];
                d2 += (sum[i] - t * (double)mean[i]) * (sum[i] - t * (double)mean[i]);
            }
            worst = fmax(worst, sqrt(d2));
            if (t == 10)
                at10 = sqrt(d2) / (10 * gn);
            if (t == T)
                atT = sqrt(d2) / (T * gn);
        }
        /* Bounded: the gap never exceeds a few |g| (it would grow like T |g| without
           memory), so the relative gap shrinks like 1/T. */
        assert_true(worst < 20.0 * gn);
        assert_true(atT < 0.1);
        assert_true(atT < at10 / 5.0);
        codec_sim_free(&s);
    }
    free(sum);
    free(mean);
    tu_free(g, 3);
    tu_free(out, 3);
}

/* A zero gradient gives zero; a gradient after it is approximated again (the zero
   warm-start Q is replaced by a fresh random one rather than kept forever). */
static void test_zero_then_nonzero(void **st)
{
    (void)st;
    const char *specs[] = {"powersgd:rank=2", "powersgd:rank=4", "powersgd_unbiased:rank=2"};
    gk_layer l = layer2(24, 16);
    const double low[] = {2, 1};
    float **z = tu_alloc(3, l.numel), **g = tu_alloc(3, l.numel), **out = tu_alloc(3, l.numel);
    make_spectrum(g[0], 24, 16, low, 2);
    memcpy(g[1], g[0], l.numel * sizeof(float));
    memcpy(g[2], g[0], l.numel * sizeof(float));
    for (size_t c = 0; c < 3; c++)
        for (int ref = 0; ref < 2; ref++) {
            codec_sim s;
            assert_int_equal(codec_sim_init(&s, specs[c], &l, 3, NULL), 0);
            if (ref)
                s.impl = s.spec.codec->impl[GK_BACKEND_REF];
            for (int t = 0; t < 3; t++) {
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)z, out), 0);
                assert_true(tu_all_zero(out[0], l.numel));
            }
            double err = 0.0;
            for (int t = 3; t < 6; t++) {
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
                assert_true(tu_all_finite(out[0], l.numel));
                err = tu_dist(out[0], g[0], l.numel) / tu_norm(g[0], l.numel);
            }
            /* powersgd is exact on this rank-2 gradient; the unbiased variant after one
               P and one Q step on it is too (the Q step projects on P's span). */
            if (err > 1e-4)
                print_message("%s (%s): err %g after zeros\n", specs[c], ref ? "ref" : "cpu", err);
            assert_true(err < 1e-4);
            codec_sim_free(&s);
        }
    tu_free(z, 3);
    tu_free(g, 3);
    tu_free(out, 3);
}

/* Payload sizes: r_t (n + m) floats per power iteration; the unbiased variant sends
   only the factor of the step, r_t n floats (P) on even steps and r_t m (Q) on odd
   ones, no padding (unbiased_max_bytes). */
static void test_payload_bytes(void **st)
{
    (void)st;
    const size_t shapes[][2] = {{64, 576}, {5, 3}, {2, 9}, {1, 1}};
    for (size_t c = 0; c < 4; c++) {
        size_t n = shapes[c][0], m = shapes[c][1];
        gk_layer l = layer2(n, m);
        float **g = tu_alloc(3, l.numel), **out = tu_alloc(3, l.numel);
        for (int w = 0; w < 3; w++)
            tu_normal(g[w], l.numel, 41, (uint64_t)w, 1.0f);
        const struct {
            const char *spec;
            size_t rank, iters;
        } cases[] = {{"powersgd:rank=1", 1, 1}, {"powersgd:rank=4,power_iters=2", 4, 2},
                     {"powersgd_unbiased:rank=3", 3, 0}};
        for (size_t k = 0; k < 3; k++) {
            codec_sim s;
            assert_int_equal(codec_sim_init(&s, cases[k].spec, &l, 3, NULL), 0);
            size_t r = cases[k].rank < n ? cases[k].rank : n;
            r = r < m ? r : m;
            for (int t = 0; t < 2; t++) {
                size_t want = cases[k].iters ? cases[k].iters * r * (n + m) * 4
                                             : r * (t % 2 == 0 ? n : m) * 4;
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
                for (int w = 0; w < 3; w++)
                    assert_int_equal(s.sent[w], want);
            }
            codec_sim_free(&s);
        }
        tu_free(g, 3);
        tu_free(out, 3);
    }
}

/* powersgd_unbiased on a fixed rank-1 gradient: the P step (random Q) is not exact,
   the Q step that follows (P's span = the gradient's column space) is; the P state
   after the P step is the averaged P, the same on every node. */
static void test_unbiased_alternates(void **st)
{
    (void)st;
    gk_layer l = layer2(20, 12);
    const double one[] = {3};
    float **g = tu_alloc(3, l.numel);
    make_spectrum(g[0], 20, 12, one, 1);
    memcpy(g[1], g[0], l.numel * sizeof(float));
    memcpy(g[2], g[0], l.numel * sizeof(float));
    for (int ref = 0; ref < 2; ref++) {
        double err[4];
        codec_sim s;
        run_fixed("powersgd_unbiased:rank=1", l, 3, g, 4, ref, err, &s);
        assert_true(err[0] > 0.05);
        assert_true(err[1] < 1e-5);
        assert_true(err[3] < 1e-5);
        gk_lowrank_state *a = s.state[0], *b = s.state[2];
        assert_true(tu_max_abs_diff(a->p, b->p, a->n * a->r) == 0.0);
        assert_true(tu_max_abs_diff(a->q, b->q, a->m * a->r) == 0.0);
        codec_sim_free(&s);
    }
    tu_free(g, 3);
}

/* After a powersgd step every node holds the same Q, and the P it used is orthonormal. */
static void test_state_after_step(void **st)
{
    (void)st;
    gk_layer l = layer2(50, 30);
    float **g = tu_alloc(3, l.numel);
    for (int w = 0; w < 3; w++)
        tu_normal(g[w], l.numel, 51, (uint64_t)w, 1.0f);
    for (int ref = 0; ref < 2; ref++) {
        double err[2];
        codec_sim s;
        run_fixed("powersgd:rank=3", l, 3, g, 2, ref, err, &s);
        gk_lowrank_state *a = s.state[0];
        for (int w = 1; w < 3; w++) {
            gk_lowrank_state *b = s.state[w];
            assert_true(tu_max_abs_diff(a->q, b->q, a->m * a->r) == 0.0);
        }
        for (size_t i = 0; i < a->r; i++)
            for (size_t j = 0; j < a->r; j++) {
                double dot = 0.0;
                for (size_t k = 0; k < a->n; k++)
                    dot += (double)a->p[i * a->n + k] * a->p[j * a->n + k];
                assert_true(fabs(dot - (i == j)) < 1e-5);
            }
        codec_sim_free(&s);
    }
    tu_free(g, 3);
}

/* The residual key: local (1) and global (0) leave the same sum of the residuals over
   the nodes, so over a few steps of different random per-node gradients every node's
   output, and that sum, agree up to float rounding, for both implementations. */
static void test_residual_local_matches_global(void **st)
{
    (void)st;
    const char *pairs[][2] = {{"powersgd:rank=1", "powersgd:rank=1,residual=1"},
                              {"powersgd:rank=2", "powersgd:rank=2,residual=1"},
                              {"powersgd:rank=4,power_iters=2",
                               "powersgd:rank=4,power_iters=2,residual=1"},
                              {"powersgd:rank=12", "powersgd:rank=12,residual=1"}};
    gk_layer l = layer2(40, 36);
    size_t d = l.numel;
    float **g = tu_alloc(3, d), **og = tu_alloc(3, d), **ol = tu_alloc(3, d);
    float *sg = malloc(d * sizeof(float)), *sl = malloc(d * sizeof(float));
    for (size_t c = 0; c < sizeof(pairs) / sizeof(pairs[0]); c++)
        for (int ref = 0; ref < 2; ref++) {
            codec_sim a, b;
            assert_int_equal(codec_sim_init(&a, pairs[c][0], &l, 3, NULL), 0);
            assert_int_equal(codec_sim_init(&b, pairs[c][1], &l, 3, NULL), 0);
            assert_true(gk_spec_get(&b.spec, "residual") == 1.0);
            if (ref) {
                a.impl = a.spec.codec->impl[GK_BACKEND_REF];
                b.impl = b.spec.codec->impl[GK_BACKEND_REF];
            }
            double worst_out = 0.0, worst_sum = 0.0, worst_split = 0.0;
            for (int t = 0; t < 6; t++) {
                for (int w = 0; w < 3; w++)
                    tu_normal(g[w], d, 61, (uint64_t)(3 * t + w), 1.0f + (float)w);
                assert_int_equal(codec_sim_step(&a, (uint64_t)t, (const float *const *)g, og), 0);
                assert_int_equal(codec_sim_step(&b, (uint64_t)t, (const float *const *)g, ol), 0);
                for (int w = 0; w < 3; w++)
                    worst_out = fmax(worst_out, tu_dist(og[w], ol[w], d) / tu_norm(og[w], d));
                tu_mean(a.x, 3, d, sg);
                tu_mean(b.x, 3, d, sl);
                worst_sum = fmax(worst_sum, tu_dist(sg, sl, d) / tu_norm(sg, d));
                /* The split over the nodes differs: that is the point of the key. */
                worst_split = fmax(worst_split, tu_dist(a.x[0], b.x[0], d) / tu_norm(a.x[0], d));
            }
            if (worst_out > 1e-4 || worst_sum > 1e-4 || getenv("GK_TEST_VERBOSE"))
                print_message("%s (%s): out %g, residual sum %g, node 0 residual %g\n",
                              pairs[c][1], ref ? "ref" : "cpu", worst_out, worst_sum,
                              worst_split);
            assert_true(worst_out < 1e-4);
            assert_true(worst_sum < 1e-4);
            assert_true(worst_split > 1e-2);
            codec_sim_free(&a);
            codec_sim_free(&b);
        }
    free(sg);
    free(sl);
    tu_free(g, 3);
    tu_free(og, 3);
    tu_free(ol, 3);
}

/* Persistently different per-node gradients g_w = c_w G (c = 0.5, 1, 1.5; G with a
   decaying spectrum, so the residual of the mean settles at a few |G|): with the
   global residual node w keeps (c_w - 1) G of every step, so |x_w| grows linearly;
   the local residual stays bounded (x_w = c_w y with y the residual of the mean). */
static void test_residual_local_bounded(void **st)
{
    (void)st;
    gk_layer l = layer2(30, 20);
    size_t d = l.numel;
    float **g = tu_alloc(3, d), **out = tu_alloc(3, d);
    const double sigma[] = {4, 2, 1, 0.5, 0.25, 0.1};
    make_spectrum(g[1], 30, 20, sigma, 6);
    for (size_t i = 0; i < d; i++) {
        g[0][i] = 0.5f * g[1][i];
        g[2][i] = 1.5f * g[1][i];
    }
    double gn = tu_norm(g[1], d);
    const char *specs[] = {"powersgd:rank=1", "powersgd:rank=1,residual=1",
                           "powersgd:rank=2", "powersgd:rank=2,residual=1"};
    for (size_t c = 0; c < 4; c++)
        for (int ref = 0; ref < 2; ref++) {
            codec_sim s;
            assert_int_equal(codec_sim_init(&s, specs[c], &l, 3, NULL), 0);
            if (ref)
                s.impl = s.spec.codec->impl[GK_BACKEND_REF];
            double worst = 0.0, at20 = 0.0;
            const int T = 200;
            for (int t = 1; t <= T; t++) {
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
                double big = 0.0;
                for (int w = 0; w < 3; w++)
                    big = fmax(big, tu_norm(s.x[w], d) / gn);
                worst = fmax(worst, big);
                if (t == 20)
                    at20 = big;
            }
            bool local = c % 2 == 1;
            if (getenv("GK_TEST_VERBOSE"))
                print_message("%s (%s): max |x_w| / |G| %g at step 20, %g over %d steps\n",
                              specs[c], ref ? "ref" : "cpu", at20, worst, T);
            if (local) {
                assert_true(worst < 10.0);
                assert_true(worst < 2.0 * at20);
            } else {
                assert_true(worst > 5.0 * at20); /* 0.5 G per step on nodes 0 and 2 */
                assert_true(worst > 0.4 * T);
            }
            codec_sim_free(&s);
        }
    tu_free(g, 3);
    tu_free(out, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_and_skip_rule),
        cmocka_unit_test(test_orthogonalise),
        cmocka_unit_test(test_full_rank_is_exact),
        cmocka_unit_test(test_warm_start_converges),
        cmocka_unit_test(test_error_feedback_constant_gradient),
        cmocka_unit_test(test_zero_then_nonzero),
        cmocka_unit_test(test_payload_bytes),
        cmocka_unit_test(test_unbiased_alternates),
        cmocka_unit_test(test_state_after_step),
        cmocka_unit_test(test_residual_local_matches_global),
        cmocka_unit_test(test_residual_local_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
