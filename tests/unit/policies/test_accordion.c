/*
 * Accordion driven through its vtable with synthetic gradient traces: the level switches
 * exactly at a norm change >= eta and at a learning-rate decay, the first interval is
 * low, epoch mode (with the nodes' averaged epoch count), batch-size advice, spec errors,
 * a save/load round trip and refused checkpoints, layer ids that differ only in the
 * bucket number, and collect() from two threads.
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
#define MAXL 4
#define NSTEPS 100

/* One bucket of layers 8 x 8, ids (bucket << 32) | index as the engine makes them. */
typedef struct bucket {
    const char *name;
    int n;
    gp_layer layers[MAXL];
    gk_spec specs[MAXL];
    char why[MAXL][128];
} bucket;

static void bucket_init(bucket *b, const char *name, int bucket_index, int n)
{
    memset(b, 0, sizeof(*b));
    b->name = name;
    b->n = n;
    for (int i = 0; i < n; i++)
        b->layers[i] = (gp_layer){.bucket = name, .name = "w", .index = i,
                                  .geom = {.id = ((uint64_t)bucket_index << 32) | (uint64_t)i,
                                           .ndim = 2, .rows = 8, .cols = 8, .numel = NUMEL}};
}

static gp_instance *make(const char *spec)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    int rc = gp_instance_create(spec, NULL, &p, err, sizeof(err));
    if (rc)
        fail_msg("'%s' refused: %s", spec, err);
    return p;
}

/* decide() for every layer of the bucket (specs and why kept in b). */
static void decide_all(gp_instance *p, bucket *b, int64_t step)
{
    for (int i = 0; i < b->n; i++) {
        b->why[i][0] = '\0';
        assert_int_equal(p->policy->decide(p->state, &b->layers[i], step, &b->specs[i],
                                           b->why[i], sizeof(b->why[i])),
                         GCOMP_OK);
        assert_true(b->why[i][0] != '\0');
    }
}

/* collect() for every layer with gradient c[i] * (1, 1, ...) into stats. */
static void collect_all(gp_instance *p, bucket *b, int64_t step, const double *c, double *stats)
{
    int ns = p->policy->nstats;
    float g[NUMEL];
    for (int i = 0; i < b->n; i++) {
        for (int k = 0; k < NUMEL; k++)
            g[k] = (float)c[i];
        assert_int_equal(tu_collect(p, &b->layers[i], step, g, g, stats + i * ns), GCOMP_OK);
    }
}

static void observe_all(gp_instance *p, bucket *b, int64_t step, const double *stats,
                        const gp_hints *h)
{
    bool comp[MAXL] = {true, true, true, true};
    double payload[MAXL] = {0};
    gp_step_info info = {.step = step, .bucket = b->name, .nlayers = b->n, .layers = b->layers,
                         .specs = b->specs, .compressed = comp, .payload = payload,
                         .stats = stats, .step_ms = 10, .exchange_ms = 1, .nodes = 1,
                         .hints = h};
    assert_int_equal(p->policy->observe(p->state, &info), GCOMP_OK);
}

/* One bucket step on one node: decide, collect, observe. */
static void step_bucket(gp_instance *p, bucket *b, int64_t step, const double *c,
                        const gp_hints *h)
{
    double stats[MAXL * 4];
    decide_all(p, b, step);
    collect_all(p, b, step, c, stats);
    observe_all(p, b, step, stats, h);
}

static double level_of(const bucket *b, int i, const char *param)
{
    return gk_spec_get(&b->specs[i], param);
}

/* The trace of the first test: the gradient falls by 70% at step 40, the LR decays
   (0.1 -> 0.01) at step 73. */
static double trace_c(int64_t t)
{
    return t < 40 ? 1.0 : 0.3;
}

static double trace_lr(int64_t t)
{
    return t < 73 ? 0.1 : 0.01;
}

static void test_norm_drop_and_lr_decay(void **st)
{
    (void)st;
    gp_instance *p = make("accordion:codec=powersgd:rank=2,low=2,high=1");
    bucket b;
    bucket_init(&b, "b0", 0, 1);
    for (int64_t t = 0; t < NSTEPS; t++) {
        gp_hints h = {.has_lr = true, .lr = trace_lr(t), .step = t};
        double c = trace_c(t);
        step_bucket(p, &b, t, &c, &h);
        /* Checks after steps 9, 19, ...: first interval low (0-19), unchanged norm high,
           the 70% drop in steps 40-49 low for 50-59, the decay seen at 73 low for 74-79. */
        bool low = t < 20 || (t >= 50 && t < 60) || (t >= 74 && t < 80);
        if (level_of(&b, 0, "rank") != (low ? 2 : 1))
            fail_msg("step %lld: rank %g, expected %d (why: %s)", (long long)t,
                     level_of(&b, 0, "rank"), low ? 2 : 1, b.why[0]);
        if (t < 20)
            assert_string_equal(b.why[0], "first interval");
        if (t == 20)
            assert_string_equal(b.why[0], "norm changed 0% < eta 50%");
        if (t == 50)
            assert_string_equal(b.why[0], "critical: norm changed 70% >= eta 50%");
        if (t == 74)
            assert_string_equal(b.why[0], "lr decayed 0.1 -> 0.01");
    }
    gp_advice adv;
    assert_int_equal(p->policy->advice(p->state, &adv), GCOMP_NOT_FOUND);
    gp_instance_destroy(p);
}

/* Four layers whose norms change at step 30 by -60%, exactly -50%, -40% and +100%. */
static void test_threshold_per_layer(void **st)
{
    (void)st;
    gp_instance *p = make("accordion:codec=powersgd,interval=10");
    bucket b;
    bucket_init(&b, "b0", 0, 4);
    const double after[4] = {0.4, 0.5, 0.6, 2.0};
    const bool low[4] = {true, true, false, true};
    for (int64_t t = 0; t < 50; t++) {
        double c[4];
        for (int i = 0; i < 4; i++)
            c[i] = t < 30 ? 1.0 : after[i];
        step_bucket(p, &b, t, c, NULL);
        for (int i = 0; i < 4 && t >= 20; i++) {
            double want = (t >= 40 && t < 50 && low[i]) ? 2 : 1;
            if (level_of(&b, i, "rank") != want)
                fail_msg("step %lld layer %d: rank %g, expected %g (%s)", (long long)t, i,
                         level_of(&b, i, "rank"), want, b.why[i]);
        }
    }
    assert_string_equal(b.why[1], "critical: norm changed 50% >= eta 50%");
    assert_string_equal(b.why[2], "norm changed 40% < eta 50%");
    assert_string_equal(b.why[3], "critical: norm changed 100% >= eta 50%");
    gp_instance_destroy(p);
}

/* Two buckets; the LR decays at step 14, the end of an interval of 5: bucket a sees it
   after its own check, bucket b checks after the decay was seen at the same step. Both
   stay low until their next check (step 19). LR warm-up (a rising LR) is no decay. */
static void test_lr_decay_two_buckets(void **st)
{
    (void)st;
    gp_instance *p = make("accordion:codec=powersgd:rank=4,low=4,high=1,interval=5");
    bucket a, b;
    bucket_init(&a, "a", 0, 1);
    bucket_init(&b, "b", 1, 1);
    for (int64_t t = 0; t < 30; t++) {
        double lr = t < 5 ? 0.02 * (double)(t + 1) : t < 14 ? 0.1 : 0.05;
        gp_hints h = {.has_lr = true, .lr = lr, .step = t};
        double c = 1;
        step_bucket(p, &a, t, &c, &h);
        step_bucket(p, &b, t, &c, &h);
        for (int k = 0; k < 2; k++) {
            /* Bucket b's step 14 comes after bucket a's observe() saw the decay. */
            bool low_ = t < 10 || (t >= 15 - k && t < 20);
            const bucket *x = k ? &b : &a;
            if (level_of(x, 0, "rank") != (low_ ? 4 : 1))
                fail_msg("step %lld bucket %s: rank %g (%s)", (long long)t, x->name,
                         level_of(x, 0, "rank"), x->why[0]);
        }
        if (t == 15)
            assert_string_equal(b.why[0], "lr decayed 0.1 -> 0.05");
    }
    gp_instance_destroy(p);

    /* lr_drop=0.5: a gradual decay counts once it has fallen by half since the reference. */
    p = make("accordion:codec=powersgd,interval=1000,lr_drop=0.5");
    bucket_init(&a, "a", 0, 1);
    const double lrs[] = {0.1, 0.08, 0.06, 0.051, 0.049, 0.04};
    for (int64_t t = 0; t < 6; t++) {
        gp_hints h = {.has_lr = true, .lr = lrs[t], .step = t};
        double c = 1;
        step_bucket(p, &a, t, &c, &h);
        if (t == 5)
            assert_string_equal(a.why[0], "lr decayed 0.1 -> 0.049");
        else
            assert_string_equal(a.why[0], "first interval");
    }
    gp_instance_destroy(p);
}

/* Epoch mode: epoch ends every 10 steps (hints seen at steps 9, 19, ...), a check every
   second one; the gradient falls to a quarter at step 46. */
static void run_epochs(const char *spec, bool spike, double *levels)
{
    gp_instance *p = make(spec);
    bucket b;
    bucket_init(&b, "b0", 0, 1);
    for (int64_t t = 0; t < NSTEPS; t++) {
        gp_hints h = {.epochs = (t + 1) / 10, .step = t};
        double c = t < 46 ? 1.0 : 0.25;
        if (spike && t >= 23 && t < 28)
            c = 5;
        step_bucket(p, &b, t, &c, &h);
        levels[t] = level_of(&b, 0, "density");
    }
    gp_instance_destroy(p);
}

static void test_epochs_mode(void **st)
{
    (void)st;
    double lv[NSTEPS];
    const char *specs[] = {"accordion:codec=topk,low=0.5,high=0.05,epochs=2",
                           "accordion:codec=topk,low=0.5,high=0.05,epochs=2,window=all"};
    for (int k = 0; k < 2; k++) {
        run_epochs(specs[k], false, lv);
        /* The nodes' epoch count arrives one step late: checks at steps 20, 40, 60, 80. */
        for (int t = 0; t < NSTEPS; t++) {
            bool low = t <= 40 || (t > 60 && t <= 80);
            if (lv[t] != (low ? 0.5 : 0.05))
                fail_msg("%s step %d: density %g", specs[k], t, lv[t]);
        }
    }
    /* A spike inside an epoch that is not the last before the check: only the window of
       all epochs sees it. */
    run_epochs(specs[0], true, lv);
    assert_true(lv[45] == 0.05);
    run_epochs(specs[1], true, lv);
    assert_true(lv[45] == 0.5);

    /* Without epoch hints epoch mode never checks: the first interval lasts. */
    gp_instance *p = make(specs[0]);
    bucket b;
    bucket_init(&b, "b0", 0, 1);
    for (int64_t t = 0; t < 40; t++) {
        double c = t < 20 ? 1.0 : 0.01;
        step_bucket(p, &b, t, &c, NULL);
        assert_true(level_of(&b, 0, "density") == 0.5);
    }
    gp_instance_destroy(p);
}

/* Two nodes whose trainers report epoch ends one step apart: the decisions agree at
   every step because the epoch count comes from the averaged statistics. */
static void test_nodes_agree_on_epochs(void **st)
{
    (void)st;
    const char *spec = "accordion:codec=powersgd,epochs=1";
    gp_instance *node[2] = {make(spec), make(spec)};
    bucket b[2];
    bucket_init(&b[0], "b0", 0, 1);
    bucket_init(&b[1], "b0", 0, 1);
    int lows = 0, highs = 0;
    for (int64_t t = 0; t < 80; t++) {
        double stats[2][4], mean[4];
        for (int w = 0; w < 2; w++) {
            double c = (t < 40 ? 1.0 : 0.2) * (w + 1);
            decide_all(node[w], &b[w], t);
            collect_all(node[w], &b[w], t, &c, stats[w]);
        }
        for (int k = 0; k < 2; k++)
            mean[k] = (stats[0][k] + stats[1][k]) / 2;
        for (int w = 0; w < 2; w++) {
            gp_hints h = {.epochs = (t + 1 - w) / 10, .step = t};
            observe_all(node[w], &b[w], t, mean, &h);
        }
        double r0 = level_of(&b[0], 0, "rank"), r1 = level_of(&b[1], 0, "rank");
        if (r0 != r1)
            fail_msg("step %lld: node 0 rank %g, node 1 rank %g", (long long)t, r0, r1);
        assert_string_equal(b[0].why[0], b[1].why[0]);
        lows += t > 30 && r0 == 2;
        highs += t > 30 && r0 == 1;
    }
    assert_true(lows > 0 && highs > 0); /* the trace did switch */
    gp_instance_destroy(node[0]);
    gp_instance_destroy(node[1]);
}

/* Batch advice from the whole model's norm: a small layer's drop switches that layer but
   not the batch size; the large layer's drop and an LR decay do. */
static void run_batch(const char *spec, int64_t *batch, double *scale, int64_t *bstep,
                      double *rank1)
{
    gp_instance *p = make(spec);
    bucket b;
    bucket_init(&b, "b0", 0, 2);
    for (int64_t t = 0; t < 50; t++) {
        double c[2] = {t < 30 ? 1.0 : 0.2, t < 15 ? 0.01 : 0.001};
        gp_hints h = {.has_lr = true, .lr = t < 42 ? 0.4 : 0.04, .step = t};
        step_bucket(p, &b, t, c, &h);
        gp_advice adv = {0};
        assert_int_equal(p->policy->advice(p->state, &adv), GCOMP_OK);
        batch[t] = adv.batch_size;
        scale[t] = adv.lr_scale;
        bstep[t] = adv.step;
        rank1[t] = level_of(&b, 1, "rank");
    }
    gp_instance_destroy(p);
}

static void test_batch_advice(void **st)
{
    (void)st;
    int64_t batch[50], bstep[50];
    double scale[50], rank1[50];
    run_batch("accordion:codec=powersgd,interval=5,batch_low=512,batch_high=4096", batch, scale,
              bstep, rank1);
    for (int t = 0; t < 50; t++) {
        /* Model checks after steps 4 (first), 9, ... 34 (the large layer's drop), the LR
           decay at 42 until the check at 44. */
        bool low = t < 9 || (t >= 34 && t < 39) || (t >= 42 && t < 44);
        if (batch[t] != (low ? 512 : 4096))
            fail_msg("step %d: batch %lld", t, (long long)batch[t]);
        assert_true(scale[t] == (low ? 1.0 : 8.0));
    }
    assert_int_equal(bstep[20], 9);
    assert_int_equal(bstep[35], 34);
    assert_int_equal(bstep[42], 42);
    assert_int_equal(bstep[49], 44);
    /* The small layer itself went low after its drop (window 15-19). */
    assert_true(rank1[19] == 1 && rank1[20] == 2 && rank1[25] == 1);

    run_batch("accordion:codec=powersgd,interval=5,batch_low=512,batch_high=4096,batch_up_only=1",
              batch, scale, bstep, rank1);
    for (int t = 0; t < 50; t++)
        assert_int_equal(batch[t], t < 9 ? 512 : 4096);
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
    expect_refused("accordion:codec=none", "param");
    expect_refused("accordion:codec=maxmin", "low is required");
    expect_refused("accordion:codec=maxmin,low=8", "high is required");
    expect_refused("accordion:low=0", "low");
    expect_refused("accordion:high=2.5", "high must be a valid rank");
    expect_refused("accordion:codec=topk,low=1.5", "low");
    expect_refused("accordion:eta=-1", "eta");
    expect_refused("accordion:interval=0", "interval");
    expect_refused("accordion:epochs=0", "epochs");
    expect_refused("accordion:interval=5,epochs=2", "interval and epochs");
    expect_refused("accordion:window=all", "window");
    expect_refused("accordion:epochs=2,window=some", "window");
    expect_refused("accordion:batch_low=512", "batch_high");
    expect_refused("accordion:batch_low=512,batch_high=0", "batch_high");
    expect_refused("accordion:lr_drop=1", "lr_drop");
    expect_refused("accordion:codec=fancy", "codec");
    expect_refused("accordion:codec=maxmin,param=rank,low=2,high=1", "param");
    expect_refused("accordion:nope=1", "no key 'nope'");

    /* The codec spec continues over codec keys; low and high set the moved parameter. */
    gp_instance *p = make("accordion:codec=powersgd:rank=3,warm_start=0,low=3,high=1");
    bucket b;
    bucket_init(&b, "b0", 0, 1);
    decide_all(p, &b, 0);
    assert_string_equal(b.specs[0].codec->name, "powersgd");
    assert_true(level_of(&b, 0, "rank") == 3 && level_of(&b, 0, "warm_start") == 0);
    gp_instance_destroy(p);
    p = make("accordion:codec=maxmin:bucket=256,param=bits,low=8,high=2");
    bucket_init(&b, "b0", 0, 1);
    decide_all(p, &b, 0);
    assert_true(level_of(&b, 0, "bits") == 8 && level_of(&b, 0, "bucket") == 256);
    gp_instance_destroy(p);
}

/* Run steps [from, to) of the first test's trace, with a second bucket. */
static void run_trace(gp_instance *p, bucket *a, bucket *b, int64_t from, int64_t to,
                      char (*log)[2][192])
{
    for (int64_t t = from; t < to; t++) {
        gp_hints h = {.has_lr = true, .lr = trace_lr(t), .step = t};
        double c[2] = {trace_c(t), 0.5 * trace_c(t + 7)};
        step_bucket(p, a, t, c, &h);
        step_bucket(p, b, t, c + 1, &h);
        if (log) {
            snprintf(log[t][0], 192, "%g %s", level_of(a, 0, "rank"), a->why[0]);
            snprintf(log[t][1], 192, "%g %s", level_of(b, 0, "rank"), b->why[0]);
        }
    }
}

static void test_save_load(void **st)
{
    (void)st;
    const char *spec = "accordion:codec=powersgd,batch_low=64,batch_high=256";
    static char ref[NSTEPS][2][192], got[NSTEPS][2][192], fresh[NSTEPS][2][192];
    bucket a, b;
    gp_instance *p = make(spec);
    bucket_init(&a, "a", 0, 1);
    bucket_init(&b, "b", 1, 1);
    run_trace(p, &a, &b, 0, NSTEPS, ref);
    gp_instance_destroy(p);

    /* Stop at step 35 (mid-interval), save, load into a new instance, go on. */
    p = make(spec);
    run_trace(p, &a, &b, 0, 35, NULL);
    size_t size;
    unsigned char *ck = tu_save(p, &size);
    assert_memory_equal(ck, "ACCO", 4);
    gp_advice adv0, adv1;
    assert_int_equal(p->policy->advice(p->state, &adv0), GCOMP_OK);
    gp_instance_destroy(p);
    gp_instance *q = make(spec);
    char err[256];
    assert_int_equal(tu_load(q, ck, size, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(q->policy->advice(q->state, &adv1), GCOMP_OK);
    assert_int_equal(adv0.batch_size, adv1.batch_size);
    assert_int_equal(adv0.step, adv1.step);
    run_trace(q, &a, &b, 35, NSTEPS, got);
    for (int t = 35; t < NSTEPS; t++)
        for (int k = 0; k < 2; k++)
            if (strcmp(ref[t][k], got[t][k]) != 0)
                fail_msg("step %d layer %d: '%s' after load, '%s' without", t, k, got[t][k],
                         ref[t][k]);
    gp_instance_destroy(q);

    /* A fresh instance decides differently: the state mattered. */
    q = make(spec);
    run_trace(q, &a, &b, 35, NSTEPS, fresh);
    int differ = 0;
    for (int t = 35; t < NSTEPS; t++)
        differ += strcmp(ref[t][0], fresh[t][0]) != 0;
    assert_true(differ > 0);
    gp_instance_destroy(q);

    /* A truncated checkpoint or one of another version is refused, the state left as it
       was: the run goes on as if nothing had been loaded. */
    q = make(spec);
    run_trace(q, &a, &b, 0, 20, NULL);
    assert_int_equal(tu_load(q, ck, size - 10, err, sizeof(err)), GCOMP_IO);
    assert_non_null(strstr(err, "truncated"));
    tu_check_refusals(q, ck, size);
    run_trace(q, &a, &b, 20, NSTEPS, got);
    for (int s = 20; s < NSTEPS; s++)
        assert_string_equal(ref[s][0], got[s][0]);
    gp_instance_destroy(q);
    /* Other arguments are refused with the difference named. */
    q = make("accordion:codec=powersgd,low=3,batch_low=64,batch_high=256");
    assert_int_equal(tu_load(q, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "accordion checkpoint made with low=2; this accordion has low=3");
    gp_instance_destroy(q);
    q = make("accordion:codec=powersgd,interval=5,batch_low=64,batch_high=256");
    assert_int_equal(tu_load(q, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "accordion checkpoint made with interval=10; this accordion has "
                             "interval=5");
    gp_instance_destroy(q);
    /* Another policy's record is refused by its tag. */
    q = make("adaqs:codec=powersgd");
    assert_int_equal(tu_load(q, ck, size, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "expected a 'ADQS' record, found 'ACCO'");
    gp_instance_destroy(q);
    free(ck);
}

/* Two layers whose ids differ only in the bucket number (the upper 32 bits) are two
   layers: one's norm drop switches it alone. */
static void test_layer_ids_64bit(void **st)
{
    (void)st;
    gp_instance *p = make("accordion:codec=powersgd,interval=10");
    bucket a, b;
    bucket_init(&a, "a", 0, 1);
    bucket_init(&b, "b", 1, 1);
    assert_true(a.layers[0].geom.id != b.layers[0].geom.id &&
                (uint32_t)a.layers[0].geom.id == (uint32_t)b.layers[0].geom.id);
    for (int64_t t = 0; t < 36; t++) {
        double ca = t < 20 ? 1.0 : 0.1, cb = 1.0;
        step_bucket(p, &a, t, &ca, NULL);
        step_bucket(p, &b, t, &cb, NULL);
    }
    /* The check after step 29 saw a's 90% drop: low for 30-39; b stayed stable: high. */
    assert_true(level_of(&a, 0, "rank") == 2);
    assert_string_equal(a.why[0], "critical: norm changed 90% >= eta 50%");
    assert_true(level_of(&b, 0, "rank") == 1);
    assert_string_equal(b.why[0], "norm changed 0% < eta 50%");
    /* They survive a checkpoint as two layers. */
    size_t size;
    unsigned char *ck = tu_save(p, &size);
    gp_instance *q = make("accordion:codec=powersgd,interval=10");
    assert_int_equal(tu_load(q, ck, size, NULL, 0), GCOMP_OK);
    decide_all(q, &a, 36);
    decide_all(q, &b, 36);
    assert_true(level_of(&a, 0, "rank") == 2 && level_of(&b, 0, "rank") == 1);
    free(ck);
    gp_instance_destroy(p);
    gp_instance_destroy(q);
}

/* collect() of different layers from two threads at once gives the serial numbers, step
   after step (the accumulators are per layer), and so the same decisions. */
static void test_collect_two_threads(void **st)
{
    (void)st;
    enum { NLAY = 6, N = 1 << 14 };
    const char *spec = "accordion:codec=topk,interval=4";
    gp_instance *ser = make(spec), *par = make(spec);
    gp_layer ls[NLAY];
    static float g[NLAY][N];
    double s_ser[NLAY * 2], s_par[NLAY * 2];
    for (int i = 0; i < NLAY; i++)
        ls[i] = (gp_layer){.bucket = "b0", .name = "w", .index = i,
                           .geom = {.id = (uint64_t)i, .ndim = 2, .rows = 128, .cols = 128,
                                    .numel = N}};
    for (int64_t t = 0; t < 12; t++) {
        tu_job jobs[NLAY];
        gk_spec spec_ser[NLAY], spec_par[NLAY];
        for (int i = 0; i < NLAY; i++) {
            char w1[128], w2[128];
            assert_int_equal(ser->policy->decide(ser->state, &ls[i], t, &spec_ser[i], w1,
                                                 sizeof(w1)), GCOMP_OK);
            assert_int_equal(par->policy->decide(par->state, &ls[i], t, &spec_par[i], w2,
                                                 sizeof(w2)), GCOMP_OK);
            assert_string_equal(w1, w2);
            for (int k = 0; k < N; k++)
                g[i][k] = (float)(((k + 7 * i) % 23) - 11) * (t < 8 || i % 2 ? 1.0f : 0.2f);
            assert_int_equal(tu_collect(ser, &ls[i], t, g[i], g[i], s_ser + 2 * i), GCOMP_OK);
            jobs[i] = (tu_job){.layer = &ls[i], .step = t, .g = g[i], .x = g[i],
                               .stats = s_par + 2 * i};
        }
        tu_collect_two_threads(par, jobs, NLAY);
        assert_memory_equal(s_ser, s_par, sizeof(s_ser));
        bool comp[NLAY];
        double payload[NLAY] = {0};
        for (int i = 0; i < NLAY; i++)
            comp[i] = true;
        gp_step_info info = {.step = t, .bucket = "b0", .nlayers = NLAY, .layers = ls,
                             .specs = spec_ser, .compressed = comp, .payload = payload,
                             .stats = s_ser, .step_ms = 10, .exchange_ms = 1, .nodes = 1};
        assert_int_equal(ser->policy->observe(ser->state, &info), GCOMP_OK);
        info.specs = spec_par;
        info.stats = s_par;
        assert_int_equal(par->policy->observe(par->state, &info), GCOMP_OK);
    }
    /* The even layers fell at step 8 (seen by the check after step 11): they went low,
       the odd ones stayed high. */
    gk_spec s0, s1;
    char why[128];
    assert_int_equal(par->policy->decide(par->state, &ls[0], 12, &s0, why, sizeof(why)),
                     GCOMP_OK);
    assert_int_equal(par->policy->decide(par->state, &ls[1], 12, &s1, why, sizeof(why)),
                     GCOMP_OK);
    assert_true(gk_spec_get(&s0, "density") == 0.99 && gk_spec_get(&s1, "density") == 0.1);
    /* A layer decide() has not seen is refused. */
    gp_layer unseen = ls[0];
    unseen.geom.id = 99;
    double junk[2];
    assert_int_equal(tu_collect(par, &unseen, 12, g[0], g[0], junk), GCOMP_INVALID);
    gp_instance_destroy(ser);
    gp_instance_destroy(par);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_drop_and_lr_decay),
        cmocka_unit_test(test_threshold_per_layer),
        cmocka_unit_test(test_lr_decay_two_buckets),
        cmocka_unit_test(test_epochs_mode),
        cmocka_unit_test(test_nodes_agree_on_epochs),
        cmocka_unit_test(test_batch_advice),
        cmocka_unit_test(test_specs),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_layer_ids_64bit),
        cmocka_unit_test(test_collect_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
