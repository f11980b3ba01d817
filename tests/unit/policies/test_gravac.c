/* GraVAC: collect() on known tensors (and from two threads), the window rules, scaling,
   saturation, checkpoints (restored, refused). */
#include <math.h>
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

/* 100 trainers: the EWMA smoothing factor is 1, so a gain is the last step's. */
static const gp_env env_sharp = {.nodes = 1, .trainers = 100, .seed = 7};
/* 4 trainers: smoothing factor 0.04, as in a small job. */
static const gp_env env_smooth = {.nodes = 1, .trainers = 4, .seed = 7};

static const gp_layer big = {.bucket = "a", .name = "w", .index = 0,
                             .geom = {.id = 1, .ndim = 2, .rows = 64, .cols = 64, .numel = 4096}};

static gp_instance *make(const char *spec, const gp_env *env)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    int rc = gp_instance_create(spec, env, &p, err, sizeof(err));
    if (rc)
        print_error("%s: %s\n", spec, err);
    assert_int_equal(rc, GCOMP_OK);
    assert_string_equal(p->policy->name, "gravac");
    return p;
}

/* The CF the policy sends a layer at a step (1: dense); why gets the reason. */
static double cf_for(gp_instance *p, const gp_layer *l, int64_t step, char *why, size_t len)
{
    gk_spec s;
    char w[256] = "";
    assert_int_equal(p->policy->decide(p->state, l, step, &s, w, sizeof(w)), GCOMP_OK);
    assert_true(w[0] != '\0');
    if (why)
        snprintf(why, len, "%s", w);
    if (strcmp(s.codec->name, "none") == 0)
        return 1;
    return 1.0 / gk_spec_get(&s, "density");
}

static double cf_at(gp_instance *p, int64_t step, char *why, size_t len)
{
    return cf_for(p, &big, step, why, len);
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

/* One bucket step of one layer with the given gains (|x|^2 = 100). */
static void feed(gp_instance *p, int64_t step, const char *bucket, double gmin, double gc,
                 double step_ms, int64_t samples)
{
    double st[3] = {100.0, 100.0 * gmin, 100.0 * gc};
    gp_hints h = {.has_samples = samples > 0, .samples = samples, .step = step};
    gp_layer l = big;
    l.bucket = bucket;
    gp_step_info info = {.step = step, .bucket = bucket, .nlayers = 1, .layers = &l,
                         .stats = st, .step_ms = step_ms, .nodes = 1, .hints = &h};
    assert_int_equal(p->policy->observe(p->state, &info), GCOMP_OK);
}

/* The gains (and step time) of a step, given the CF it was sent with. */
typedef void (*gains_fn)(int64_t step, double cf, double *gmin, double *gc, double *ms);

/* Run steps [from, to): decide, then observe; cf[step] and why[step] record decisions. */
static void drive(gp_instance *p, int64_t from, int64_t to, gains_fn fn, double *cf,
                  char (*why)[256])
{
    for (int64_t t = from; t < to; t++) {
        char w[256];
        double c = cf_at(p, t, w, sizeof(w));
        if (cf)
            cf[t] = c;
        if (why)
            snprintf(why[t], sizeof(why[t]), "%s", w);
        /* A step is faster with more compression unless fn says otherwise. */
        double gmin = 0, gc = 0, ms = 2 + 1000 / c;
        fn(t, c, &gmin, &gc, &ms);
        feed(p, t, "a", gmin, gc, ms, 32);
    }
}

static double sum_sq(int from, int to)
{
    double s = 0;
    for (int i = from; i <= to; i++)
        s += (double)i * i;
    return s;
}

/* collect(): |x|^2, top-k at theta_min, and top-k of the top-k by theta_s, by hand. */
static void test_collect(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk:min_elements=16,min=4", &env_sharp);
    gp_layer l = {.bucket = "a", .name = "w",
                  .geom = {.id = 3, .ndim = 2, .rows = 8, .cols = 8, .numel = 64}};
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)((i % 2 ? -1 : 1) * (i + 1));
    double s[3];
    assert_int_equal(tu_collect(p, &l, 0, x, x, s), GCOMP_OK);
    /* theta_min 4: the 16 largest |x| (49..64); theta_s 2: 8 of those (57..64). */
    assert_true(near(s[0], sum_sq(1, 64)));
    assert_true(near(s[1], sum_sq(49, 64)));
    assert_true(near(s[2], sum_sq(57, 64)));
    /* Layers the engine sends dense are exact: a 1-D one, and one under min_elements. */
    gp_layer vec = l, small = l;
    vec.geom.ndim = 1;
    vec.geom.rows = 64;
    vec.geom.cols = 1;
    small.geom.rows = 2;
    small.geom.cols = 4;
    small.geom.numel = 8;
    assert_int_equal(tu_collect(p, &vec, 0, x, x, s), GCOMP_OK);
    assert_true(s[0] == s[1] && s[1] == s[2] && near(s[0], sum_sq(1, 64)));
    assert_int_equal(tu_collect(p, &small, 0, x, x, s), GCOMP_OK);
    assert_true(s[0] == s[1] && s[1] == s[2] && near(s[0], sum_sq(1, 8)));
    char why[256];
    assert_true(cf_for(p, &vec, 0, why, sizeof(why)) == 1);
    assert_non_null(strstr(why, "does not compress"));
    gp_instance_destroy(p);

    /* Random-k of ones: 16 of 64 kept, then 8 of those 16 (multi-level, not 32 of 64). */
    p = make("gravac:codec=randomk:min_elements=16,min=4", &env_sharp);
    for (int i = 0; i < 64; i++)
        x[i] = 1.0f;
    assert_int_equal(tu_collect(p, &l, 5, x, x, s), GCOMP_OK);
    assert_true(s[0] == 64 && s[1] == 16 && s[2] == 8);
    /* All zero: no 0/0 anywhere. */
    memset(x, 0, sizeof(x));
    assert_int_equal(tu_collect(p, &l, 6, x, x, s), GCOMP_OK);
    assert_true(s[0] == 0 && s[1] == 0 && s[2] == 0);
    gp_instance_destroy(p);
}

static void gains_high(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    (void)t;
    (void)cf;
    (void)ms;
    *gmin = 0.99;
    *gc = 0.95;
}

/* Before the first window fills, theta_min is sent whatever the gains. */
static void test_first_window(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=dgc,window=6", &env_sharp);
    double cf[20];
    char why[20][256];
    drive(p, 0, 20, gains_high, cf, why);
    /* Steps 0..5 complete the window at the first bucket step of step 6: it decides 7. */
    for (int t = 0; t <= 6; t++) {
        assert_true(cf[t] == 10);
        assert_non_null(strstr(why[t], "first window"));
    }
    assert_non_null(strstr(why[7], "window 1: theta_s 2 -> 4"));
    assert_true(cf[7] == 10 && cf[8] == 10); /* candidate 40 being measured */
    assert_true(near(cf[9], 40));
    assert_non_null(strstr(why[9], "gain 0.95 >= eps 0.7: CF 40"));
    gp_instance_destroy(p);
}

static void gains_growing(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    (void)cf;
    (void)ms;
    *gmin = 0.99;
    *gc = fmin(0.95, 0.405 + 0.03 * (double)t);
}

/* A growing gain: GraVAC scales up at the window boundaries once it reaches eps. */
static void test_growing_gain_scales_up(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk,window=4", &env_sharp);
    double cf[40];
    char why[40][256];
    drive(p, 0, 40, gains_growing, cf, why);
    /* The candidate's gain stays under eps 0.7 until step 10: theta_min. */
    for (int t = 0; t <= 11; t++)
        assert_true(cf[t] == 10);
    assert_non_null(strstr(why[11], "< eps 0.7 at CF 160"));
    assert_true(near(cf[12], 160));
    assert_non_null(strstr(why[12], "gain 0.705 >= eps 0.7: CF 160"));
    for (int t = 15; t < 40; t++)
        assert_true(near(cf[t], 1000));
    /* The CF at the end of each window never goes down. */
    for (int t = 7; t + 4 < 40; t += 4)
        assert_true(cf[t + 4] >= cf[t]);
    gp_instance_destroy(p);
}

static int64_t drop_from, dense_from, back_from;

static void gains_falling(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    (void)cf;
    (void)ms;
    *gmin = t >= dense_from && t < back_from ? 0.5 : 0.9;
    *gc = t >= drop_from && t < back_from ? 0.5 : 0.95;
}

/* A gain under eps: back to theta_min, then dense; compression resumes when it recovers. */
static void test_scale_down(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=redsync,window=10", &env_sharp);
    drop_from = 14;
    dense_from = 17;
    back_from = 22;
    double cf[30];
    char why[30][256];
    drive(p, 0, 30, gains_falling, cf, why);
    for (int t = 13; t <= 15; t++)
        assert_true(near(cf[t], 40));
    for (int t = 16; t <= 18; t++)
        assert_true(cf[t] == 10);
    assert_non_null(strstr(why[16], "gain 0.5 < eps 0.7 at CF 40, 0.9 at theta_min: CF 10"));
    for (int t = 19; t <= 23; t++)
        assert_true(cf[t] == 1);
    assert_non_null(strstr(why[19], "gain 0.5 at theta_min 10 < eps 0.7: dense"));
    /* The window at step 20 moved the candidate to 160; gains recovered at step 22. */
    assert_true(near(cf[24], 160));
    gp_instance_destroy(p);

    /* With smoothing (4 trainers: 0.04) one bad step does not scale down. */
    p = make("gravac:codec=topk,window=10", &env_smooth);
    drop_from = 15;
    dense_from = 15;
    back_from = 16;
    drive(p, 0, 21, gains_falling, cf, NULL);
    for (int t = 13; t <= 20; t++)
        assert_true(near(cf[t], 40));
    gp_instance_destroy(p);
}

/* The distinct CFs sent, in order, ignoring returns to ones already seen. */
static int distinct(const double *cf, int n, double *out)
{
    int k = 0;
    for (int t = 0; t < n; t++) {
        bool seen = false;
        for (int j = 0; j < k; j++)
            seen |= near(out[j], cf[t]);
        if (!seen)
            out[k++] = cf[t];
    }
    return k;
}

/* Exponential and geometric scaling between min 10 and max 1000. */
static void test_exp_and_geo(void **st)
{
    (void)st;
    double cf[40], seq[16];
    gp_instance *p = make("gravac:codec=sidco,window=4,scaling=exp", &env_sharp);
    drive(p, 0, 40, gains_high, cf, NULL);
    static const double exp_seq[] = {10, 40, 160, 1000}; /* 20 is measured, never sent */
    assert_int_equal(distinct(cf, 40, seq), 4);
    for (int i = 0; i < 4; i++)
        assert_true(near(seq[i], exp_seq[i]));
    assert_true(near(cf[39], 1000));
    gp_instance_destroy(p);

    p = make("gravac:codec=mstopk,min=10,max=1000,window=4,scaling=geo", &env_sharp);
    drive(p, 0, 40, gains_high, cf, NULL);
    static const double geo_seq[] = {10, 40, 80, 160, 320, 640, 1000};
    assert_int_equal(distinct(cf, 40, seq), 7);
    for (int i = 0; i < 7; i++)
        assert_true(near(seq[i], geo_seq[i]));
    assert_true(near(cf[39], 1000));
    gp_instance_destroy(p);
}

static void gains_equal(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    (void)t;
    (void)cf;
    (void)ms;
    *gmin = *gc = 0.95;
}

/* Equal gains at theta_min and the candidate: theta_min moves up to the candidate. */
static void test_theta_min_scale_up(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk,window=4", &env_sharp);
    double cf[24];
    char why[24][256];
    drive(p, 0, 24, gains_equal, cf, why);
    assert_non_null(strstr(why[5], "window 1: theta_min 10 -> 20; theta_s 2 -> 4"));
    assert_true(near(cf[5], 20) && near(cf[6], 20)); /* the new theta_min, gain known */
    assert_true(near(cf[7], 80));
    /* Window 2: theta_min 80, theta_s 16 capped at 1000 / 80. */
    assert_non_null(strstr(why[9], "theta_min 20 -> 80; theta_s 4 -> 12.5"));
    for (int t = 11; t < 24; t++)
        assert_true(near(cf[t], 1000));
    gp_instance_destroy(p);
}

static void gains_timed(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    (void)t;
    *gmin = 0.99;
    *gc = 0.95;
    /* CF 80 is only 0.4% faster than CF 40 (within omega 1%); 160 would be faster. */
    *ms = near(cf, 10) ? 100 : near(cf, 40) ? 50 : near(cf, 80) ? 49.8 : 40;
}

/* Saturated throughput: GraVAC stays at the lower CF of the two best. */
static void test_saturation(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk,window=4,scaling=geo", &env_sharp);
    double cf[48];
    char why[48][256];
    drive(p, 0, 48, gains_timed, cf, why);
    assert_true(near(cf[11], 80));
    assert_non_null(strstr(why[13], "throughput saturated"));
    assert_non_null(strstr(why[13], "CF 40"));
    for (int t = 15; t < 48; t++)
        assert_true(near(cf[t], 40));
    gp_instance_destroy(p);

    /* Without sample hints the throughput is in steps per second: the same choice. */
    p = make("gravac:codec=topk,window=4,scaling=geo", &env_sharp);
    for (int64_t t = 0; t < 24; t++) {
        double c = cf_at(p, t, NULL, 0), gmin, gc, ms;
        gains_timed(t, c, &gmin, &gc, &ms);
        feed(p, t, "a", gmin, gc, ms, 0);
        cf[t] = c;
    }
    for (int t = 15; t < 24; t++)
        assert_true(near(cf[t], 40));
    gp_instance_destroy(p);
}

/* The gain is model-wide (all buckets of a step), and a step decides alike everywhere. */
static void test_buckets(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk,window=4", &env_sharp);
    gp_layer la = big, lb = big;
    lb.bucket = "b";
    lb.geom.id = 2;
    char why[256] = "";
    double last = 0;
    for (int64_t t = 0; t < 16; t++) {
        /* Bucket a: exact; bucket b (3x the norm): good at theta_min, poor beyond from
           step 8: model-wide 0.925 at theta_min and 0.475 at the candidate. */
        double ca = cf_for(p, &la, t, NULL, 0);
        double sa[3] = {1, 1, 1};
        gp_step_info ia = {.step = t, .bucket = "a", .nlayers = 1, .layers = &la,
                           .stats = sa, .step_ms = 10, .nodes = 1};
        assert_int_equal(p->policy->observe(p->state, &ia), GCOMP_OK);
        double cb = cf_for(p, &lb, t, why, sizeof(why));
        assert_true(ca == cb);
        double sb[3] = {3, 2.7, t >= 8 ? 0.9 : 2.85};
        gp_step_info ib = {.step = t, .bucket = "b", .nlayers = 1, .layers = &lb,
                           .stats = sb, .step_ms = 10, .nodes = 1};
        assert_int_equal(p->policy->observe(p->state, &ib), GCOMP_OK);
        if (t == 7)
            assert_true(ca > 10);
        last = cb;
    }
    assert_true(last == 10);
    assert_non_null(strstr(why, "gain 0.475 < eps 0.7"));
    gp_instance_destroy(p);
}

/* An end-to-end run through collect(): the noise fades, the gain grows, the CF rises. */
static void test_collect_observe(void **st)
{
    (void)st;
    gp_instance *p = make("gravac:codec=topk:min_elements=16,min=2,max=64,window=3,eps=0.9",
                          &env_sharp);
    gp_layer l = {.bucket = "a", .name = "w",
                  .geom = {.id = 4, .ndim = 2, .rows = 32, .cols = 32, .numel = 1024}};
    static float x[1024];
    double first = 0, lastcf = 0;
    for (int64_t t = 0; t < 30; t++) {
        double c = cf_for(p, &l, t, NULL, 0);
        if (t == 0)
            first = c;
        lastcf = c;
        double noise = 4.0 * pow(0.7, (double)t);
        for (int i = 0; i < 1024; i++)
            x[i] = i < 8 ? 10.0f : (float)(noise * (double)((i * 7919) % 13 - 6) / 6.0);
        double s[3];
        assert_int_equal(tu_collect(p, &l, t, x, x, s), GCOMP_OK);
        assert_true(s[2] <= s[1] && s[1] <= s[0]);
        gp_step_info info = {.step = t, .bucket = "a", .nlayers = 1, .layers = &l, .stats = s,
                             .step_ms = 10, .nodes = 1};
        assert_int_equal(p->policy->observe(p->state, &info), GCOMP_OK);
    }
    assert_true(first == 2);
    assert_true(near(lastcf, 64));
    gp_instance_destroy(p);
}

static void refused(const char *spec, const char *needle)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    assert_int_equal(gp_instance_create(spec, &env_sharp, &p, err, sizeof(err)), GCOMP_INVALID);
    if (!strstr(err, needle))
        print_error("%s: '%s' lacks '%s'\n", spec, err, needle);
    assert_non_null(strstr(err, needle));
    assert_null(p);
}

static void test_bad_specs(void **st)
{
    (void)st;
    refused("gravac:codec=maxmin:bits=4", "codec must be a density-based sparsifier");
    refused("gravac:codec=powersgd", "topk");
    refused("gravac:codec=fancy", "codec");
    refused("gravac:codec=topk,rank=2", "no key 'rank'");
    refused("gravac:min=0.5", "min");
    refused("gravac:max=abc", "max");
    refused("gravac:min=100,max=10", "max (10) must be at least min (100)");
    refused("gravac:eps=1.5", "eps");
    refused("gravac:omega=-0.1", "omega");
    refused("gravac:window=0", "window");
    refused("gravac:scaling=linear", "scaling must be exp or geo");
    refused("gravac:theta=3", "no key 'theta'");
    /* The codec spec continues after codec= and stops at gravac's own keys. */
    gp_instance *p = make("gravac:codec=topk:min_elements=16,ef=1,min=20,max=20", &env_sharp);
    gp_layer l = {.bucket = "a", .name = "w",
                  .geom = {.id = 4, .ndim = 2, .rows = 4, .cols = 8, .numel = 32}};
    gk_spec s;
    char why[256];
    assert_int_equal(p->policy->decide(p->state, &l, 0, &s, why, sizeof(why)), GCOMP_OK);
    assert_string_equal(s.codec->name, "topk");
    assert_int_equal(s.min_elements, 16);
    assert_true(near(gk_spec_get(&s, "density"), 0.05));
    gp_instance_destroy(p);
}

static void gains_mixed(int64_t t, double cf, double *gmin, double *gc, double *ms)
{
    *gmin = 0.8 + 0.1 * sin((double)t);
    *gc = 0.72 + 0.2 * cos(0.7 * (double)t);
    *ms = 20 + cf / 100 + (double)(t % 3);
}

/* A checkpoint restores the state: both copies decide alike from then on. */
static void test_save_load(void **st)
{
    (void)st;
    const char *spec = "gravac:codec=topk,window=5,omega=0.05,scaling=geo";
    gp_instance *a = make(spec, &env_smooth), *b = make(spec, &env_smooth);
    drive(a, 0, 13, gains_mixed, NULL, NULL);
    size_t size;
    unsigned char *ck = tu_save(a, &size);
    assert_memory_equal(ck, "GRVC", 4);
    char err[256];
    assert_int_equal(tu_load(b, ck, size, err, sizeof(err)), GCOMP_OK);
    double ca[60], cb[60];
    char wa[60][256], wb[60][256];
    drive(a, 13, 60, gains_mixed, ca, wa);
    drive(b, 13, 60, gains_mixed, cb, wb);
    for (int t = 13; t < 60; t++) {
        assert_true(ca[t] == cb[t]);
        assert_string_equal(wa[t], wb[t]);
    }
    tu_assert_same_state(a, b);
    /* Without the checkpoint the same steps decide otherwise (the first window). */
    gp_instance *fresh = make(spec, &env_smooth);
    drive(fresh, 13, 60, gains_mixed, cb, wb);
    assert_non_null(strstr(wb[13], "first window"));
    assert_null(strstr(wa[13], "first window"));
    gp_instance_destroy(fresh);
    /* Another configuration, or a short file, is refused. */
    gp_instance *c = make("gravac:codec=topk,window=6,omega=0.05,scaling=geo", &env_smooth);
    assert_int_equal(tu_load(c, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "gravac checkpoint made with window=5; this gravac has window=6");
    gp_instance_destroy(c);
    c = make("gravac:codec=redsync,window=5,omega=0.05,scaling=geo", &env_smooth);
    assert_int_equal(tu_load(c, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "codec=topk; this gravac has codec=redsync"));
    gp_instance_destroy(c);
    c = make("gravac:codec=topk,window=5,omega=0.05", &env_smooth);
    assert_int_equal(tu_load(c, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "scaling=geo; this gravac has scaling=exp"));
    assert_int_equal(tu_load(c, ck, 0, err, sizeof(err)), GCOMP_IO);
    gp_instance_destroy(c);
    /* Another version, every truncation: refused, the state left as it was. */
    c = make(spec, &env_smooth);
    drive(c, 0, 7, gains_mixed, NULL, NULL);
    tu_check_refusals(c, ck, size);
    gp_instance_destroy(c);
    free(ck);
    gp_instance_destroy(a);
    gp_instance_destroy(b);
}

/* collect() of different layers from two threads at once gives the serial numbers, with
   both compressions (theta_s > 1) and codecs of either collective. (With one buffer
   shared by the layers, as before the port, this fails.) */
static void test_collect_two_threads(void **st)
{
    (void)st;
    enum { NLAY = 8, SIDE = 96, N = SIDE * SIDE };
    const char *specs[] = {"gravac:codec=topk,min=4", "gravac:codec=randomk,min=4",
                           "gravac:codec=dgc,min=4"};
    static float x[NLAY][N];
    for (int i = 0; i < NLAY; i++)
        for (int k = 0; k < N; k++)
            x[i][k] = (float)sin(0.013 * (double)(k + 1) * (double)(i + 1)) * (float)(1 + k % 5);
    gp_layer ls[NLAY];
    for (int i = 0; i < NLAY; i++)
        ls[i] = (gp_layer){.bucket = "a", .name = "w", .index = i,
                           .geom = {.id = (uint64_t)3 << 32 | (uint64_t)i, .ndim = 2,
                                    .rows = SIDE, .cols = SIDE, .numel = N}};
    for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++) {
        gp_instance *p = make(specs[k], &env_sharp);
        double serial[NLAY][3], threaded[NLAY][3];
        tu_job jobs[NLAY];
        for (int i = 0; i < NLAY; i++) {
            assert_true(cf_for(p, &ls[i], 9, NULL, 0) == 4);
            assert_int_equal(tu_collect(p, &ls[i], 9, x[i], x[i], serial[i]), GCOMP_OK);
            /* Both compressions ran: g_c is a part of g_min, itself a part of x. */
            assert_true(serial[i][2] < serial[i][1] && serial[i][1] < serial[i][0]);
            jobs[i] = (tu_job){.layer = &ls[i], .step = 9, .g = x[i], .x = x[i],
                               .stats = threaded[i]};
        }
        /* collect() leaves the state as it is: repeat, for more chances to overlap. */
        for (int round = 0; round < 20; round++) {
            memset(threaded, 0, sizeof(threaded));
            tu_collect_two_threads(p, jobs, NLAY);
            assert_memory_equal(serial, threaded, sizeof(serial));
        }
        gp_instance_destroy(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collect),
        cmocka_unit_test(test_first_window),
        cmocka_unit_test(test_growing_gain_scales_up),
        cmocka_unit_test(test_scale_down),
        cmocka_unit_test(test_exp_and_geo),
        cmocka_unit_test(test_theta_min_scale_up),
        cmocka_unit_test(test_saturation),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_collect_observe),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_collect_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
