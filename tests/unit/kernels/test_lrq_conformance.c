/*
 * Conformance of the optimised CPU implementation against the scalar reference for
 * the low-rank, sign, quantiser and cast codecs, on many shapes and parameters, run
 * through codec_sim on 3 nodes for 3 steps (so warm starts, step parity and error
 * feedback are exercised), the large shapes on 2 nodes. Also: zero
 * gradients give zero, finite outputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>

#include "codec_testutil.h"
#include "gcomp.h"

typedef struct conf_case {
    const char *spec;
    double l2_tol;   /* relative l2 distance allowed between cpu and ref (out and x) */
    double bad_tol;  /* fraction of elements allowed to differ by more than 1e-5 |.|_inf */
} conf_case;

/*
 * Tolerances: PowerSGD compares float32 BLAS with double-accumulated loops (and QR
 * with Gram-Schmidt for r > 2): a small l2 distance, any number of elements. The sign
 * codecs, TernGrad and the casts must agree element for element. QSGD and max-min
 * draw the same random numbers but the optimised version quantises in float32, which
 * moves a level by one where x sits on a rounding boundary (about one element in a
 * million); with error feedback the residual then differs there, which can move the
 * min or max of that bucket at the next step: a few buckets' worth of elements (bounded
 * at 0.5%), which moves the l2 distance of the small residuals by a few percent.
 */
static const conf_case cases[] = {
    {"powersgd:rank=1", 1e-4, 1},
    {"powersgd:rank=2", 1e-4, 1},
    {"powersgd:rank=4", 1e-4, 1},
    {"powersgd:rank=4,power_iters=2", 1e-4, 1},
    {"powersgd:rank=3,warm_start=0,ef=0", 1e-4, 1},
    {"powersgd_unbiased:rank=1", 1e-4, 1},
    {"powersgd_unbiased:rank=4", 1e-4, 1},
    {"signsgd", 0, 0},
    {"signnorm", 1e-6, 0},
    {"onebit", 1e-6, 0},
    {"qsgd", 0.1, 0.005},
    {"qsgd:levels=3,bucket=7,ef=1", 0.1, 0.005},
    {"terngrad", 1e-6, 0},
    {"terngrad:ef=1", 1e-6, 0},
    {"maxmin", 0.1, 0.005},
    {"maxmin:bits=1,bucket=5", 0.1, 0.005},
    {"maxmin:bits=8,bucket=300,stochastic=1", 0.1, 0.005},
    {"maxmin:bits=3,stochastic=1", 0.1, 0.005},
    {"fp16", 0, 0},
    {"fp16:ef=1", 0, 0},
    {"bf16", 0, 0},
};

typedef struct shape {
    int ndim;
    size_t dims[3];
} shape;

static const shape shapes[] = {
    {1, {1}},       {2, {1, 1}},     {2, {2, 3}},     {2, {3, 2}},
    {1, {7}},       {3, {4, 3, 3}},  {2, {33, 17}},   {2, {64, 576}},
};

static void run_case(const conf_case *cc, const shape *sh, float scale, int nodes, int steps)
{
    gk_layer l = codec_sim_layer(0x10002, sh->ndim, sh->dims);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tu_conf c = tu_conformance(cc->spec, l, nodes, steps, 1234, scale, false);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    bool ok = c.out_rel <= cc->l2_tol && c.x_rel <= cc->l2_tol && c.bad_frac <= cc->bad_tol;
    if (c.rc_a || c.rc_b || !ok || getenv("GK_TEST_VERBOSE"))
        print_message("%s on %zux%zu (scale %g): rc %d/%d out_rel %g x_rel %g bad %g (%.2f s)\n",
                      cc->spec, l.rows, l.cols, scale, c.rc_a, c.rc_b, c.out_rel, c.x_rel,
                      c.bad_frac, secs);
    assert_int_equal(c.rc_a, 0);
    assert_int_equal(c.rc_b, 0);
    assert_true(ok);
}

static void test_cpu_matches_ref_small_shapes(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
            run_case(&cases[i], &shapes[s], 1.0f, 3, 3);
}

/* The large shapes on 2 nodes, which keeps the reference's O(W^2 d) decode cheap:
   256 x 2304 for 2 steps (still a warm start, a parity change and an error-feedback
   step), 1024 x 1024 for one step at a gradient-like scale. */
static void test_cpu_matches_ref_large(void **st)
{
    (void)st;
    const shape wide = {2, {256, 2304}}, square = {2, {1024, 1024}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_case(&cases[i], &wide, 1.0f, 2, 2);
        run_case(&cases[i], &square, 1e-3f, 2, 1);
    }
}

/* Zero gradients on every node: both implementations give exactly zero, never NaN. */
static void test_zero_gradient_gives_zero(void **st)
{
    (void)st;
    const size_t dims[] = {48, 40};
    gk_layer l = codec_sim_layer(7, 2, dims);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (int which = 0; which < 2; which++) {
            codec_sim s;
            assert_int_equal(codec_sim_init(&s, cases[i].spec, &l, 3, NULL), 0);
            if (which)
                s.impl = s.spec.codec->impl[GK_BACKEND_REF];
            float **g = tu_alloc(3, l.numel), **out = tu_alloc(3, l.numel);
            for (int t = 0; t < 3; t++) {
                for (int w = 0; w < 3; w++)
                    for (size_t k = 0; k < l.numel; k++)
                        out[w][k] = 123.0f; /* must be overwritten */
                assert_int_equal(codec_sim_step(&s, (uint64_t)t, (const float *const *)g, out), 0);
                for (int w = 0; w < 3; w++) {
                    if (!tu_all_zero(out[w], l.numel))
                        print_message("%s (%s) step %d: nonzero output\n", cases[i].spec,
                                      which ? "ref" : "cpu", t);
                    assert_true(tu_all_zero(out[w], l.numel));
                    assert_true(tu_all_zero(s.x[w], l.numel));
                }
            }
            tu_free(g, 3);
            tu_free(out, 3);
            codec_sim_free(&s);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_matches_ref_small_shapes),
        cmocka_unit_test(test_cpu_matches_ref_large),
        cmocka_unit_test(test_zero_gradient_gives_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
