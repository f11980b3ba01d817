/*
 * AdaQS driven through its vtable with synthetic gradients of known mean and standard
 * deviation: the parameter doubles exactly when the MSDR has halved since the last
 * switch and stops at max (or halves down to min for a knob that compresses more when
 * larger); spec errors; a save/load round trip and refused checkpoints; collect() from
 * two threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gcomp.h"
#include "policy.h"
#include "policy_testutil.h"

#define NUMEL 64
#define MAXL 2

typedef struct bucket {
    int n;
    gp_layer layers[MAXL];
    gk_spec specs[MAXL];
    char why[MAXL][160];
} bucket;

static void bucket_init(bucket *b, int n)
{
    memset(b, 0, sizeof(*b));
    b->n = n;
    for (int i = 0; i < n; i++)
        b->layers[i] = (gp_layer){.bucket = "b0", .name = "w", .index = i,
                                  .geom = {.id = (uint64_t)7 << 32 | (uint64_t)i, .ndim = 2,
                                           .rows = 8, .cols = 8, .numel = NUMEL}};
}

static gp_instance *make(const char *spec)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    if (gp_instance_create(spec, NULL, &p, err, sizeof(err)))
        fail_msg("'%s' refused: %s", spec, err);
    return p;
}

/* One step: layer i's gradient alternates mean[i] + std[i] and mean[i] - std[i], so its
   mean and standard deviation (over the elements) are exactly mean[i] and std[i]. */
static void step(gp_instance *p, bucket *b, int64_t t, const double *mean, const double *std)
{
    double stats[MAXL * 3];
    float g[NUMEL];
    for (int i = 0; i < b->n; i++) {
        b->why[i][0] = '\0';
        assert_int_equal(p->policy->decide(p->state, &b->layers[i], t, &b->specs[i], b->why[i],
                                           sizeof(b->why[i])),
                         GCOMP_OK);
        assert_true(b->why[i][0] != '\0');
        for (int k = 0; k < NUMEL; k++)
            g[k] = (float)(mean[i] + (k % 2 ? -std[i] : std[i]));
        assert_int_equal(tu_collect(p, &b->layers[i], t, g, g, stats + 3 * i), GCOMP_OK);
    }
    bool comp[MAXL] = {true, true};
    double payload[MAXL] = {0};
    gp_hints h = {.step = t};
    gp_step_info info = {.step = t, .bucket = "b0", .nlayers = b->n, .layers = b->layers,
                         .specs = b->specs, .compressed = comp, .payload = payload,
                         .stats = stats, .nodes = 1, .hints = &h};
    assert_int_equal(p->policy->observe(p->state, &info), GCOMP_OK);
}

/* MSDR per step of the trace: 1, then 0.6 (not halved), exactly 0.5 (halved: switch),
   0.3 (not halved again), 0.2 (switch), 0.05 (would switch, but max is reached). */
static double trace_msdr(int64_t t)
{
    return t < 10 ? 1.0 : t < 20 ? 0.6 : t < 30 ? 0.5 : t < 40 ? 0.3 : t < 50 ? 0.2 : 0.05;
}

static void test_doubles_when_msdr_halves(void **st)
{
    (void)st;
    gp_instance *p = make("adaqs:codec=topk:density=0.01,max=0.04");
    bucket b;
    bucket_init(&b, 2);
    for (int64_t t = 0; t < 60; t++) {
        /* Layer 1 has a constant MSDR (scaled gradient): it never switches. */
        double mean[2] = {trace_msdr(t), 3 * (t + 1)}, std[2] = {1, 6 * (t + 1)};
        step(p, &b, t, mean, std);
        double want = t <= 20 ? 0.01 : t <= 40 ? 0.02 : 0.04;
        if (gk_spec_get(&b.specs[0], "density") != want)
            fail_msg("step %lld: density %g, expected %g (%s)", (long long)t,
                     gk_spec_get(&b.specs[0], "density"), want, b.why[0]);
        assert_true(gk_spec_get(&b.specs[1], "density") == 0.01);
        if (t == 0)
            assert_string_equal(b.why[0], "start: density 0.01");
        if (t == 21)
            assert_string_equal(b.why[0], "MSDR fell to 0.5 from 1 (factor 2): density 0.01 -> 0.02");
    }
    gp_instance_destroy(p);

    /* Integer parameters double up to max, the last step capped: bits 2 -> 4 -> 6. */
    p = make("adaqs:codec=maxmin,start=2,max=6,factor=4");
    bucket_init(&b, 1);
    for (int64_t t = 0; t < 40; t++) {
        double mean = t < 10 ? 1.0 : t < 20 ? 0.3 : t < 30 ? 0.25 : 0.0625, std = 1;
        step(p, &b, t, &mean, &std);
        double want = t <= 20 ? 2 : t <= 30 ? 4 : 6;
        if (gk_spec_get(&b.specs[0], "bits") != want)
            fail_msg("step %lld: bits %g, expected %g (%s)", (long long)t,
                     gk_spec_get(&b.specs[0], "bits"), want, b.why[0]);
    }
    gp_instance_destroy(p);

    /* The default codec is PowerSGD, its rank from the codec spec. */
    p = make("adaqs:codec=powersgd:rank=2,max=8");
    bucket_init(&b, 1);
    for (int64_t t = 0; t < 4; t++) {
        double mean = t < 2 ? 1 : 0.4, std = 1;
        step(p, &b, t, &mean, &std);
    }
    assert_true(gk_spec_get(&b.specs[0], "rank") == 4);
    gp_instance_destroy(p);
}

static void expect_refused(const char *spec, const char *needle)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    assert_int_equal(gp_instance_create(spec, NULL, &p, err, sizeof(err)), GCOMP_INVALID);
    assert_null(p);
    if (!strstr(err, needle))
        fail_msg("'%s': message '%s' lacks '%s'", spec, err, needle);
}

static void test_specs(void **st)
{
    (void)st;
    expect_refused("adaqs:factor=0.5", "factor");
    expect_refused("adaqs:codec=topk,start=2", "start");
    expect_refused("adaqs:codec=topk,start=0.5,max=0.1", "start (0.5) must not exceed max");
    expect_refused("adaqs:max=2000", "max");
    expect_refused("adaqs:max=2.5", "max must be a valid rank");
    expect_refused("adaqs:codec=topk,start=0", "start must be > 0");
    expect_refused("adaqs:codec=signsgd", "param");
    expect_refused("adaqs:codec=signsgd", "no compression knob");
    expect_refused("adaqs:codec=maxmin,param=nope", "param");
    /* Only the knob's direction is known: another parameter is refused. */
    expect_refused("adaqs:codec=maxmin,param=bucket", "compression knob (bits)");
    /* The limit is on the side of less compression. */
    expect_refused("adaqs:codec=topk,min=0.5", "the limit is max=");
    expect_refused("adaqs:codec=threshold,max=0.5", "the limit is min=");
    expect_refused("adaqs:codec=threshold,start=0.01,min=0.1", "must not be below min");
    expect_refused("adaqs:codec=nope", "codec");
    expect_refused("adaqs:low=1", "no key 'low'");
    gp_instance *p = make("adaqs:codec=qsgd:bucket=64,start=8");
    bucket b;
    bucket_init(&b, 1);
    double mean = 1, std = 1;
    step(p, &b, 0, &mean, &std);
    assert_true(gk_spec_get(&b.specs[0], "levels") == 8 && gk_spec_get(&b.specs[0], "bucket") == 64);
    gp_instance_destroy(p);
}

static void run(gp_instance *p, bucket *b, int64_t from, int64_t to, double *log)
{
    for (int64_t t = from; t < to; t++) {
        double mean[2] = {trace_msdr(t), trace_msdr(t + 15)}, std[2] = {1, 2};
        step(p, b, t, mean, std);
        if (log) {
            log[2 * t] = gk_spec_get(&b->specs[0], "density");
            log[2 * t + 1] = gk_spec_get(&b->specs[1], "density");
        }
    }
}

static void test_save_load(void **st)
{
    (void)st;
    const char *spec = "adaqs:codec=topk:density=0.01";
    double ref[120], got[120], fresh[120];
    bucket b;
    bucket_init(&b, 2);
    gp_instance *p = make(spec);
    run(p, &b, 0, 60, ref);
    gp_instance_destroy(p);

    p = make(spec);
    run(p, &b, 0, 25, NULL);
    size_t size;
    unsigned char *ck = tu_save(p, &size);
    assert_memory_equal(ck, "ADQS", 4);
    gp_instance_destroy(p);
    p = make(spec);
    char err[256];
    assert_int_equal(tu_load(p, ck, size, err, sizeof(err)), GCOMP_OK);
    run(p, &b, 25, 60, got);
    assert_memory_equal(ref + 50, got + 50, 70 * sizeof(double));
    gp_instance_destroy(p);

    p = make(spec);
    run(p, &b, 25, 60, fresh);
    assert_true(memcmp(ref + 50, fresh + 50, 70 * sizeof(double)) != 0);
    gp_instance_destroy(p);

    /* Another spec's checkpoint is refused, naming the difference. */
    p = make("adaqs:codec=topk:density=0.01,factor=3");
    assert_int_equal(tu_load(p, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "adaqs checkpoint made with factor=2; this adaqs has factor=3");
    gp_instance_destroy(p);
    p = make("adaqs:codec=randomk:density=0.01");
    assert_int_equal(tu_load(p, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "codec=topk; this adaqs has codec=randomk"));
    gp_instance_destroy(p);
    /* Another version, truncations: refused, the state untouched. */
    p = make(spec);
    run(p, &b, 0, 10, NULL);
    tu_check_refusals(p, ck, size);
    gp_instance_destroy(p);
    free(ck);
}

/* A knob that compresses more when larger (threshold's lambda) halves down to min. */
static void test_halves_a_growing_knob(void **st)
{
    (void)st;
    gp_instance *p = make("adaqs:codec=threshold,start=0.04,min=0.01");
    bucket b;
    bucket_init(&b, 1);
    for (int64_t t = 0; t < 60; t++) {
        double mean = trace_msdr(t), std = 1;
        step(p, &b, t, &mean, &std);
        double want = t <= 20 ? 0.04 : t <= 40 ? 0.02 : 0.01;
        if (gk_spec_get(&b.specs[0], "lambda") != want)
            fail_msg("step %lld: lambda %g, expected %g (%s)", (long long)t,
                     gk_spec_get(&b.specs[0], "lambda"), want, b.why[0]);
        if (t == 21)
            assert_string_equal(b.why[0], "MSDR fell to 0.5 from 1 (factor 2): lambda 0.04 -> 0.02");
    }
    gp_instance_destroy(p);
}

/* collect() of different layers from two threads at once gives the serial numbers. */
static void test_collect_two_threads(void **st)
{
    (void)st;
    enum { NL = 8, N = 4096 };
    gp_instance *p = make("adaqs:codec=topk:density=0.01");
    gp_layer ls[NL];
    static float g[NL][N];
    double serial[NL][3], threaded[NL][3];
    tu_job jobs[NL];
    for (int i = 0; i < NL; i++) {
        ls[i] = (gp_layer){.bucket = "b0", .name = "w", .index = i,
                           .geom = {.id = (uint64_t)i, .ndim = 2, .rows = 64, .cols = 64,
                                    .numel = N}};
        for (int k = 0; k < N; k++)
            g[i][k] = (float)((k * (i + 3)) % 17) - 8.0f + 0.25f * (float)i;
        gk_spec s;
        char why[160];
        assert_int_equal(p->policy->decide(p->state, &ls[i], 0, &s, why, sizeof(why)),
                         GCOMP_OK);
        assert_int_equal(tu_collect(p, &ls[i], 0, g[i], g[i], serial[i]), GCOMP_OK);
        jobs[i] = (tu_job){.layer = &ls[i], .step = 0, .g = g[i], .x = g[i],
                           .stats = threaded[i]};
    }
    tu_collect_two_threads(p, jobs, NL);
    assert_memory_equal(serial, threaded, sizeof(serial));
    gp_instance_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_when_msdr_halves),
        cmocka_unit_test(test_specs),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_halves_a_growing_knob),
        cmocka_unit_test(test_collect_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
