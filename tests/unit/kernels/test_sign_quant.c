/*
 * The sign family, the quantisers and the casts: exact payload sizes, hand-checked
 * decodes (majority vote, sign+norm, 1-bit means), unbiasedness of QSGD and TernGrad
 * over many seeds, max-min's constant buckets and error bound, fp16 overflow safety,
 * and error feedback with a constant gradient, on both implementations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "codec_testutil.h"
#include "gcomp.h"
#include "quant.h"

static gk_layer vec(size_t d)
{
    const size_t dims[] = {d};
    return codec_sim_layer(0x30001, 1, dims);
}

/* One step of spec on W nodes with node w's data g[w]; out and x of node 0 are
   returned through out0 / x0 (either may be NULL), the bytes node 0 sent through
   sent. impl_ref picks the reference. */
static void one_step(const char *spec, gk_layer l, int W, float **g, bool impl_ref,
                     uint64_t step, float *out0, float *x0, size_t *sent)
{
    codec_sim s;
    assert_int_equal(codec_sim_init(&s, spec, &l, W, NULL), 0);
    if (impl_ref)
        s.impl = s.spec.codec->impl[GK_BACKEND_REF];
    float **out = tu_alloc(W, l.numel);
    assert_int_equal(codec_sim_step(&s, step, (const float *const *)g, out), 0);
    for (int w = 1; w < W; w++) /* every node decodes the same mean */
        assert_true(tu_max_abs_diff(out[0], out[w], l.numel) == 0.0);
    if (out0)
        memcpy(out0, out[0], l.numel * sizeof(float));
    if (x0)
        memcpy(x0, s.x[0], l.numel * sizeof(float));
    if (sent)
        *sent = s.sent[0];
    tu_free(out, W);
    codec_sim_free(&s);
}

static void test_payload_bytes(void **st)
{
    (void)st;
    const size_t sizes[] = {1, 3, 31, 32, 33, 100, 1000, 4099};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t d = sizes[k];
        gk_layer l = vec(d);
        float **g = tu_alloc(3, d);
        for (int w = 0; w < 3; w++)
            tu_normal(g[w], d, 3, (uint64_t)w, 1.0f);
        size_t nb128 = (d + 127) / 128, nb512 = (d + 511) / 512, nb7 = (d + 6) / 7;
        /* Bytes of max-min bits=3 with bucket 512: per bucket ceil(B 3 / 8) + 8. */
        size_t mm3 = 0;
        for (size_t lo = 0; lo < d; lo += 512)
            mm3 += ((d - lo < 512 ? d - lo : 512) * 3 + 7) / 8 + 8;
        const struct {
            const char *spec;
            size_t bytes;
        } cases[] = {
            {"signsgd", 4 + 4 * ((d + 31) / 32)},
            {"signnorm", (32 * ((d + 31) / 32) + 32) / 8}, /* algorithms.md 2.5 */
            {"onebit", 8 + 4 * ((d + 31) / 32)},
            {"qsgd", 4 * nb128 + d},
            {"qsgd:bucket=7", 4 * nb7 + d},
            {"terngrad", 4 + (d + 3) / 4},
            {"maxmin", 8 * nb512 + (d * 4 + 7) / 8}, /* 4 bits: buckets end on a byte */
            {"maxmin:bits=3", mm3},
            {"fp16", 2 * d},
            {"bf16", 2 * d},
        };
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
            for (int ref = 0; ref < 2; ref++) {
                size_t sent = 0;
                one_step(cases[c].spec, l, 3, g, ref, 0, NULL, NULL, &sent);
                if (sent != cases[c].bytes)
                    print_message("%s d=%zu: sent %zu, want %zu\n", cases[c].spec, d, sent,
                                  cases[c].bytes);
                assert_int_equal(sent, cases[c].bytes);
            }
        tu_free(g, 3);
    }
}

/* signsgd: majority of 3, ties (a node abstaining) give 0, 0 votes +. */
static void test_signsgd_vote(void **st)
{
    (void)st;
    const float g0[] = {1, 1, -1, -1, 2, 0, -3, 5};
    const float g1[] = {1, -1, -1, 1, -2, 0, 0, 5};
    const float g2[] = {-1, 1, 1, -1, -2, -1, -1, 5};
    const float want3[] = {1, 1, -1, -1, -1, 1, -1, 1};
    gk_layer l = vec(8);
    float **g = tu_alloc(3, 8), out[8];
    memcpy(g[0], g0, sizeof(g0));
    memcpy(g[1], g1, sizeof(g1));
    memcpy(g[2], g2, sizeof(g2));
    for (int ref = 0; ref < 2; ref++) {
        one_step("signsgd", l, 3, g, ref, 0, out, NULL, NULL);
        for (int i = 0; i < 8; i++)
            assert_true(out[i] == want3[i]);
    }
    /* Node 2 all zero: it abstains; node 0 and 1 tie where they differ. */
    const float want2[] = {1, 0, -1, 0, 0, 1, 0, 1};
    memset(g[2], 0, 8 * sizeof(float));
    for (int ref = 0; ref < 2; ref++) {
        one_step("signsgd", l, 3, g, ref, 0, out, NULL, NULL);
        for (int i = 0; i < 8; i++)
            assert_true(out[i] == want2[i]);
    }
    tu_free(g, 3);
    gk_spec s;
    char err[256];
    assert_int_equal(gk_spec_parse("signsgd:ef=1", &s, err, sizeof(err)), GCOMP_INVALID);
}

/* signnorm: out = (1/W) sum_w (|x_w|_1 / d) sign_w; residual x - (|x|_1 / d) sign(x). */
static void test_signnorm_values(void **st)
{
    (void)st;
    gk_layer l = vec(4);
    float **g = tu_alloc(2, 4), out[4], x[4];
    const float a[] = {1, -2, 3, 0}, b[] = {-4, -4, 4, 4};
    memcpy(g[0], a, sizeof(a));
    memcpy(g[1], b, sizeof(b));
    /* s0 = 6/4 = 1.5, s1 = 4; zero counts as +. */
    const float want[] = {(1.5f - 4) / 2, (-1.5f - 4) / 2, (1.5f + 4) / 2, (1.5f + 4) / 2};
    const float res[] = {1 - 1.5f, -2 + 1.5f, 3 - 1.5f, 0 - 1.5f};
    for (int ref = 0; ref < 2; ref++) {
        one_step("signnorm", l, 2, g, ref, 0, out, x, NULL);
        for (int i = 0; i < 4; i++) {
            assert_true(fabsf(out[i] - want[i]) < 1e-6f);
            assert_true(fabsf(x[i] - res[i]) < 1e-6f);
        }
    }
    tu_free(g, 2);
}

/* onebit: mu0 = mean of the negatives, mu1 = mean of the rest (0 included). */
static void test_onebit_values(void **st)
{
    (void)st;
    gk_layer l = vec(5);
    float **g = tu_alloc(1, 5), out[5], x[5];
    const float a[] = {-1, -3, 2, 4, 0};
    memcpy(g[0], a, sizeof(a));
    const float want[] = {-2, -2, 2, 2, 2}, res[] = {1, -1, 0, 2, -2};
    for (int ref = 0; ref < 2; ref++) {
        one_step("onebit", l, 1, g, ref, 0, out, x, NULL);
        for (int i = 0; i < 5; i++) {
            assert_true(out[i] == want[i]);
            assert_true(x[i] == res[i]);
        }
    }
    /* All positive: no negatives, mu0 = 0 (not 0/0). */
    const float p[] = {1, 2, 3, 4, 5};
    memcpy(g[0], p, sizeof(p));
    for (int ref = 0; ref < 2; ref++) {
        one_step("onebit", l, 1, g, ref, 0, out, NULL, NULL);
        for (int i = 0; i < 5; i++)
            assert_true(out[i] == 3.0f);
    }
    tu_free(g, 1);
}

/* Mean over many steps (fresh node-local randomness each) of a stochastic codec's
   output on fixed data; returns max |mean - x| / scale and checks one draw is not x. */
static double unbiased_gap(const char *spec, bool ref, const float *data, size_t d, int runs,
                           float scale)
{
    gk_layer l = vec(d);
    codec_sim s;
    assert_int_equal(codec_sim_init(&s, spec, &l, 1, NULL), 0);
    if (ref)
        s.impl = s.spec.codec->impl[GK_BACKEND_REF];
    float **g = tu_alloc(1, d), **out = tu_alloc(1, d);
    memcpy(g[0], data, d * sizeof(float));
    double *acc = calloc(d, sizeof(double)), single = 0.0;
    for (int t = 0; t < runs; t++) {
        assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
        if (t == 0)
            single = tu_max_abs_diff(out[0], data, d);
        for (size_t i = 0; i < d; i++)
            acc[i] += out[0][i];
    }
    double gap = 0.0;
    for (size_t i = 0; i < d; i++)
        gap = fmax(gap, fabs(acc[i] / runs - data[i]));
    /* A single draw is visibly random: the test could fail if the codec were biased. */
    assert_true(single > 0.05 * scale);
    free(acc);
    tu_free(g, 1);
    tu_free(out, 1);
    codec_sim_free(&s);
    return gap / scale;
}

static void test_qsgd_terngrad_unbiased(void **st)
{
    (void)st;
    const size_t d = 64;
    float data[64];
    tu_uniform(data, d, 9, 0, 1.0f); /* |x| <= sqrt(3) < 2.5 sigma: TernGrad clips nothing */
    for (int ref = 0; ref < 2; ref++) {
        /* Per-element standard deviation <= |b| / (2 s) ~ 1 for QSGD (|b| ~ 4 over 16
           elements), <= s / 2 ~ 0.87 for TernGrad, <= unit / 2 ~ 0.6 for max-min with
           2 bits; 2000 runs shrink it by 45: the bounds are about 5 sigma. A biased
           codec (say, rounding to nearest) misses them by far: its gap is the
           rounding error, up to half a level (0.5 to 1 here). */
        double q = unbiased_gap("qsgd:levels=2,bucket=16", ref, data, d, 2000, 1.0f);
        double t = unbiased_gap("terngrad", ref, data, d, 2000, 1.0f);
        double m = unbiased_gap("maxmin:bits=2,bucket=16,stochastic=1,ef=0", ref, data, d, 2000,
                                1.0f);
        assert_true(q < 0.12);
        assert_true(t < 0.1);
        assert_true(m < 0.07);
    }
    /* The same gap for deterministic max-min is the rounding bias: far above. */
    assert_true(unbiased_gap("maxmin:bits=2,bucket=16,ef=0", false, data, d, 50, 1.0f) > 0.15);
}

/* QSGD: a zero bucket among nonzero ones decodes to exactly 0; a bucket whose only
   nonzero is one element decodes it exactly (level = s). */
static void test_qsgd_buckets(void **st)
{
    (void)st;
    float **g = tu_alloc(1, 24), out[24];
    for (int i = 0; i < 8; i++)
        g[0][i] = (float)(i + 1);
    g[0][20] = -3.5f;
    for (int ref = 0; ref < 2; ref++) {
        one_step("qsgd:bucket=8", vec(24), 1, g, ref, 5, out, NULL, NULL);
        for (int i = 8; i < 16; i++)
            assert_true(out[i] == 0.0f);
        for (int i = 16; i < 24; i++)
            assert_true(out[i] == (i == 20 ? -3.5f : 0.0f));
    }
    tu_free(g, 1);
}

/* TernGrad: a constant layer (sigma 0) is sent exactly; an outlier is clipped at
   2.5 sigma (in expectation). */
static void test_terngrad_clip(void **st)
{
    (void)st;
    float **g = tu_alloc(1, 10), out[10];
    for (int i = 0; i < 10; i++)
        g[0][i] = 0.25f;
    for (int ref = 0; ref < 2; ref++) {
        one_step("terngrad", vec(10), 1, g, ref, 1, out, NULL, NULL);
        for (int i = 0; i < 10; i++)
            assert_true(out[i] == 0.25f);
    }
    /* 99 zeros and one 100: sigma = sqrt(99) ~ 9.95, clip ~ 24.87 = s: the outlier
       decodes to s every time. */
    float **h = tu_alloc(1, 100), o[100];
    h[0][42] = 100.0f;
    for (int ref = 0; ref < 2; ref++) {
        one_step("terngrad", vec(100), 1, h, ref, 1, o, NULL, NULL);
        assert_true(fabsf(o[42] - 2.5f * sqrtf(99.0f)) < 1e-3f);
    }
    tu_free(g, 1);
    tu_free(h, 1);
}

/* Max-min: a constant bucket decodes exactly, for every bit width and both rounding
   modes; deterministic rounding is within half a unit. */
static void test_maxmin_exact_and_bound(void **st)
{
    (void)st;
    const char *specs[] = {"maxmin:bits=1,bucket=16", "maxmin:bits=4,bucket=16",
                           "maxmin:bits=8,bucket=16,stochastic=1", "maxmin:bits=3,bucket=5"};
    const size_t d = 40;
    float **g = tu_alloc(1, d), out[40];
    for (size_t i = 0; i < d; i++) /* buckets of 16: [0,16) constant, the rest varies */
        g[0][i] = i < 16 ? 0.3f : (float)i * 0.01f - 3.0f;
    for (size_t c = 0; c < 4; c++)
        for (int ref = 0; ref < 2; ref++) {
            one_step(specs[c], vec(d), 1, g, ref, 2, out, NULL, NULL);
            for (size_t i = 0; i < 5; i++)
                assert_true(out[i] == 0.3f);
        }
    tu_normal(g[0], d, 13, 0, 1.0f);
    for (int ref = 0; ref < 2; ref++) {
        one_step("maxmin:bits=4,bucket=8", vec(d), 1, g, ref, 0, out, NULL, NULL);
        for (size_t k = 0; k < d; k += 8) {
            float mn = g[0][k], mx = g[0][k];
            for (size_t i = k; i < k + 8; i++) {
                mn = fminf(mn, g[0][i]);
                mx = fmaxf(mx, g[0][i]);
            }
            for (size_t i = k; i < k + 8; i++)
                assert_true(fabsf(out[i] - g[0][i]) <= (mx - mn) / 15.0f * 0.5f * 1.0001f);
        }
    }
    tu_free(g, 1);
}

/* fp16: W nodes each sending 60000 do not overflow the half sum (pre-division), and a
   mean beyond 65504 saturates instead of becoming Inf; bf16 near FLT_MAX stays finite. */
static void test_cast_overflow(void **st)
{
    (void)st;
    for (int W = 1; W <= 8; W++) {
        gk_layer l = vec(16);
        float **g = tu_alloc(W, 16), out[16], x[16];
        for (int w = 0; w < W; w++)
            for (int i = 0; i < 16; i++)
                g[w][i] = i % 2 ? 60000.0f : -60000.0f;
        for (int ref = 0; ref < 2; ref++) {
            one_step("fp16", l, W, g, ref, 0, out, NULL, NULL);
            for (int i = 0; i < 16; i++) {
                assert_true(isfinite(out[i]));
                assert_true(fabsf(fabsf(out[i]) - 60000.0f) <= 60000.0f / 1024.0f);
            }
            for (int w = 0; w < W; w++)
                for (int i = 0; i < 16; i++)
                    g[w][i] = 70000.0f;
            one_step("fp16:ef=1", l, W, g, ref, 0, out, x, NULL);
            for (int i = 0; i < 16; i++) {
                assert_true(out[i] == 65504.0f || (W > 1 && out[i] > 65000.0f && out[i] <= 65504.0f));
                assert_true(x[i] > 0.0f && isfinite(x[i])); /* the excess stays in memory */
            }
            for (int w = 0; w < W; w++)
                for (int i = 0; i < 16; i++)
                    g[w][i] = i % 2 ? 3.4e38f : -3.4e38f;
            one_step("bf16", l, W, g, ref, 0, out, NULL, NULL);
            for (int i = 0; i < 16; i++)
                assert_true(isfinite(out[i]) && fabsf(out[i]) > 3.3e38f);
            for (int w = 0; w < W; w++)
                for (int i = 0; i < 16; i++)
                    g[w][i] = i % 2 ? 60000.0f : -60000.0f;
        }
        tu_free(g, W);
    }
}

/* Error feedback with a constant gradient: the sum of T outputs follows T g with a
   bounded gap (the mean residual), so the relative gap falls like 1/T. */
static void test_error_feedback_constant_gradient(void **st)
{
    (void)st;
    /* QSGD with error feedback needs a variance below |x|^2 (levels >= about
       sqrt(bucket)); with levels=1 the residual grows without bound (see ref/qsgd.c). */
    const char *specs[] = {"signnorm", "onebit", "maxmin:bits=2", "qsgd:ef=1",
                           "qsgd:levels=16,ef=1", "terngrad:ef=1", "fp16:ef=1", "bf16:ef=1"};
    const size_t d = 300;
    gk_layer l = vec(d);
    float **g = tu_alloc(3, d), **out = tu_alloc(3, d), mean[300], base[300];
    tu_normal(base, d, 17, 9, 1.0f);
    for (int w = 0; w < 3; w++) { /* a shared gradient plus each node's own noise */
        tu_normal(g[w], d, 17, (uint64_t)w, 0.3f);
        for (size_t i = 0; i < d; i++)
            g[w][i] += base[i];
    }
    tu_mean(g, 3, d, mean);
    double gn = tu_norm(mean, d);
    for (size_t c = 0; c < sizeof(specs) / sizeof(specs[0]); c++)
        for (int ref = 0; ref < 2; ref++) {
            codec_sim s;
            assert_int_equal(codec_sim_init(&s, specs[c], &l, 3, NULL), 0);
            assert_true(s.spec.ef);
            if (ref)
                s.impl = s.spec.codec->impl[GK_BACKEND_REF];
            double sum[300] = {0}, at10 = 0.0, atT = 0.0;
            const int T = 400;
            for (int t = 1; t <= T; t++) {
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
                double d2 = 0.0;
                for (size_t i = 0; i < d; i++) {
                    sum[i] += out[0][i];
                    d2 += (sum[i] - t * (double)mean[i]) * (sum[i] - t * (double)mean[i]);
                }
                if (t == 10)
                    at10 = sqrt(d2) / (10 * gn);
                if (t == T)
                    atT = sqrt(d2) / (T * gn);
            }
            /* The relative gap shrinks (without memory a biased codec keeps it
               constant); the casts' gap is the transport's rounding of the sum, which
               no residual holds: ~1e-4 (fp16) or ~1e-3 (bf16) of |g| per step. */
            if (!(atT < 0.05 && (atT < at10 / 2.0 || atT < 4e-3)))
                print_message("%s (%s): relative gap %.4f at 10, %.4f at %d\n", specs[c],
                              ref ? "ref" : "cpu", at10, atT, T);
            assert_true(atT < 0.05);
            assert_true(atT < at10 / 2.0 || atT < 4e-3);
            codec_sim_free(&s);
        }
    tu_free(g, 3);
    tu_free(out, 3);
}

/* Decoders refuse payloads of the wrong size or with non-finite scales. */
static void test_decode_rejects_bad_payloads(void **st)
{
    (void)st;
    const char *specs[] = {"signsgd", "signnorm", "onebit", "qsgd", "terngrad", "maxmin"};
    gk_layer l = vec(100);
    for (size_t c = 0; c < 6; c++) {
        gk_spec s;
        char err[256];
        assert_int_equal(gk_spec_parse(specs[c], &s, err, sizeof(err)), GCOMP_OK);
        size_t n = gk_payload_bytes(&s, &l, 0, 0);
        uint8_t *p = calloc(n, 1);
        float x[100] = {0}, out[100];
        tu_normal(x, 100, 1, 1, 1.0f);
        gk_call call = {.spec = &s, .layer = &l, .nodes = 1, .node = 0, .seed = 1};
        const gk_codec_impl *impls[] = {s.codec->impl[GK_BACKEND_REF], gk_codec_impl_of(s.codec, GK_BACKEND_CPU)};
        for (int k = 0; k < 2; k++) {
            size_t bytes = 0;
            assert_int_equal(impls[k]->encode(&call, x, p, &bytes), 0);
            assert_int_equal(bytes, n);
            const void *recv[1] = {p};
            size_t shorter = n - 1;
            assert_int_equal(impls[k]->decode(&call, x, recv, &shorter, 1, out), GCOMP_PROTOCOL);
            if (strcmp(specs[c], "signsgd") != 0) {
                gk_store_f32(p, NAN);
                assert_int_equal(impls[k]->decode(&call, x, recv, &n, 1, out), GCOMP_PROTOCOL);
            }
        }
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload_bytes),
        cmocka_unit_test(test_signsgd_vote),
        cmocka_unit_test(test_signnorm_values),
        cmocka_unit_test(test_onebit_values),
        cmocka_unit_test(test_qsgd_terngrad_unbiased),
        cmocka_unit_test(test_qsgd_buckets),
        cmocka_unit_test(test_terngrad_clip),
        cmocka_unit_test(test_maxmin_exact_and_bound),
        cmocka_unit_test(test_cast_overflow),
        cmocka_unit_test(test_error_feedback_constant_gradient),
        cmocka_unit_test(test_decode_rejects_bad_payloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
