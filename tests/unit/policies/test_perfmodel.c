/*
 * perfmodel: the model's formulas against hand-computed values, decisions on a slow and a
 * fast emulated link (synthetic statistics through the vtable), warmup, whatif (units,
 * text and JSON), refused specs and queries, collect()'s timings (and from two threads),
 * save/load and refused checkpoints.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gcomp.h"
#include "perfmodel.h"
#include "policy.h"
#include "policy_testutil.h"

#define EPS 1e-9

/* |a - b| <= eps, with both numbers in the failure message. */
#define assert_double_equal(a, b, eps) assert_near((a), (b), (eps), #a, __LINE__)

static void assert_near(double a, double b, double eps, const char *what, int line)
{
    if (!(fabs(a - b) <= eps))
        fail_msg("line %d: %s = %.17g, expected %.17g (within %g)", line, what, a, b, eps);
}

/* ---- a synthetic job: buckets of 1024 x 1024 layers and a bias ---- */

#define NL 5
#define SIDE 1024

typedef struct job {
    gp_instance *p;
    gp_env env;
    int nlayers;
    gp_layer layers[NL];
    gk_spec specs[NL];
    bool compressed[NL];
    double payload[NL];
    double stats[NL * GP_PERF_NSTATS];
    double probe[2][GP_PERF_NSTAT]; /* what a probe measures per 2-D layer */
    double ready_ms, gap_ms; /* the trainers' timeline each step reports (but the first's
                                gap: not known) */
} job;

/* The statistics a probe would average, per 2-D layer and candidate slot; by default
   PowerSGD (slot 0) 1.0 ms encode, 0.5 ms decode; Top-K (slot 1) 2.0 ms encode, 0.25 ms
   decode per node and its k entries of 8 bytes (-1: max_bytes of topk:density=0.01). */
static const double default_probe[2][GP_PERF_NSTAT] = {{1.0, 0.5, 0.0, 0.0},
                                                       {2.0, 0.0, 0.25, -1.0}};

/* Layers 0..3: 1024 x 1024; layer 4: a bias of 1024. */
static void make_layers(job *j, const char *bucket, uint64_t bucket_index)
{
    j->nlayers = NL;
    for (int l = 0; l < NL; l++) {
        gk_layer g = l < NL - 1 ? (gk_layer){.ndim = 2, .rows = SIDE, .cols = SIDE,
                                             .numel = (size_t)SIDE * SIDE}
                                : (gk_layer){.ndim = 1, .rows = SIDE, .cols = 1, .numel = SIDE};
        g.id = (bucket_index << 32) | (uint64_t)l;
        j->layers[l] = (gp_layer){.bucket = bucket, .name = "layer", .index = l, .geom = g};
    }
    memcpy(j->probe, default_probe, sizeof(j->probe));
    /* A 100 ms backward pass before the bucket is ready; the forward pass and optimizer
       take no time. */
    j->ready_ms = 100.0;
    j->gap_ms = 0.0;
}

static void fill_probe_stats(job *j)
{
    gk_spec topk;
    char err[256];
    assert_int_equal(gk_spec_parse("topk:density=0.01", &topk, err, sizeof(err)), GCOMP_OK);
    memset(j->stats, 0, sizeof(j->stats));
    for (int l = 0; l < j->nlayers; l++) {
        if (j->layers[l].geom.ndim < 2)
            continue;
        for (int c = 0; c < 2; c++) {
            double *st = j->stats + l * GP_PERF_NSTATS + c * GP_PERF_NSTAT;
            memcpy(st, j->probe[c], sizeof(j->probe[c]));
            if (st[GP_PERF_AG_BYTES] < 0)
                st[GP_PERF_AG_BYTES] =
                    (double)gk_payload_bytes(&topk, &j->layers[l].geom, 0, 0);
        }
    }
}

static int create(job *j, const char *spec, double alpha_ms, double bw_bytes_ms, int nodes)
{
    char err[1024] = "";
    j->env = (gp_env){.nodes = nodes, .trainers = nodes, .seed = 7, .alpha_ms = alpha_ms,
                      .bw_bytes_ms = bw_bytes_ms};
    int rc = gp_instance_create(spec, &j->env, &j->p, err, sizeof(err));
    if (rc)
        fprintf(stderr, "create '%s': %s\n", spec, err);
    return rc;
}

/* One bucket step: decide every layer, then observe with the given timing; probe
   statistics when `probe`. Returns the spec of layer 0 decided at this step. */
static gk_spec run_step(job *j, const char *bucket, int64_t step, double step_ms,
                        double exchange_ms, bool probe, char *why, size_t whylen)
{
    for (int l = 0; l < j->nlayers; l++) {
        char w[256] = "";
        assert_int_equal(j->p->policy->decide(j->p->state, &j->layers[l], step, &j->specs[l], w,
                                              sizeof(w)),
                         GCOMP_OK);
        if (l == 0 && why)
            snprintf(why, whylen, "%s", w);
        j->compressed[l] = gk_spec_compresses(&j->specs[l], &j->layers[l].geom);
    }
    if (probe)
        fill_probe_stats(j);
    else
        memset(j->stats, 0, sizeof(j->stats));
    gp_hints h = {0};
    gp_step_info info = {.step = step, .bucket = bucket, .nlayers = j->nlayers,
                         .layers = j->layers, .specs = j->specs, .compressed = j->compressed,
                         .payload = j->payload, .stats = j->stats, .step_ms = step_ms,
                         .exchange_ms = exchange_ms, .ready_ms = j->ready_ms,
                         .gap_ms = step ? j->gap_ms : -1.0, .nodes = j->env.nodes, .hints = &h};
    assert_int_equal(j->p->policy->observe(j->p->state, &info), GCOMP_OK);
    return j->specs[0];
}

/* Run steps 0..n-1 of one bucket with warmup w (probe at step w - 1), ready 100 ms after
   the step's start, no gap: step_ms = 100 + exchange_ms (0 at the first step, as the
   engine reports it). */
static gk_spec run_job(job *j, int n, int w, double exchange_ms, char *why, size_t whylen)
{
    gk_spec s = {0};
    for (int64_t step = 0; step < n; step++) {
        double sm = step == 0 ? 0.0 : 100.0 + exchange_ms;
        bool probe = step >= w - 1 && (step - (w - 1)) % 50 == 0;
        char wy[256];
        s = run_step(j, "b0", step, sm, exchange_ms, probe, wy, sizeof(wy));
        if (why && strcmp(wy, "") != 0)
            snprintf(why, whylen, "%s", wy);
    }
    return s;
}

/* Go on with steps from..to-1 of run_job's job. */
static void run_job_from(job *j, int64_t from, int64_t to, int w, double exchange_ms)
{
    for (int64_t step = from; step < to; step++)
        run_step(j, "b0", step, 100.0 + exchange_ms, exchange_ms,
                 step >= w - 1 && (step - (w - 1)) % 50 == 0, NULL, 0);
}

/* The decision after the job ran: what decide() gives at step n. */
static gk_spec decision(job *j, int64_t step, char *why, size_t whylen)
{
    gk_spec s;
    char w[256] = "";
    assert_int_equal(j->p->policy->decide(j->p->state, &j->layers[0], step, &s, w, sizeof(w)),
                     GCOMP_OK);
    if (why)
        snprintf(why, whylen, "%s", w);
    return s;
}

/* 1 Gbit/s and 400 Gbit/s in bytes per millisecond. */
#define BW_SLOW 125000.0
#define BW_FAST 50000000.0

/* ---- the formulas ---- */

static void test_formulas(void **st)
{
    (void)st;
    /* 2 * 0.1 * 3 + 2 * 1e6 * 3 / (4 * 1000) = 0.6 + 1500. */
    assert_double_equal(gp_perf_predict_allreduce_ms(1e6, 4, 0.1, 1000), 1500.6, EPS);
    /* 0.1 * 3 + 1e6 * 3 / 1000. */
    assert_double_equal(gp_perf_predict_allgather_ms(1e6, 4, 0.1, 1000), 3000.3, EPS);
    assert_double_equal(gp_perf_predict_allreduce_ms(1e6, 1, 0.1, 1000), 0.0, EPS);
    assert_double_equal(gp_perf_predict_allgather_ms(1e6, 1, 0.1, 1000), 0.0, EPS);
    assert_double_equal(gp_perf_predict_allreduce_ms(0, 4, 0.1, 1000), 0.0, EPS);
    assert_double_equal(gp_perf_predict_allreduce_ms(1e6, 4, 0.1, 0), 0.6, EPS);
}

/* The timeline model: {ready, encode, comm, decode} per bucket in ready order. */
static void test_timeline(void **st)
{
    (void)st;
    /* No buckets: the gap alone. One bucket: ready + encode + comm + decode + gap. */
    assert_double_equal(gp_perf_timeline_ms(NULL, 0, 7, NULL), 7.0, EPS);
    gp_perf_stage one[] = {{100, 4, 10, 2}};
    assert_double_equal(gp_perf_timeline_ms(one, 1, 5, NULL), 121.0, EPS);
    /* Two dense exchanges share the network: the second waits for the first. */
    gp_perf_stage shared[] = {{0, 0, 30, 0}, {10, 0, 30, 0}};
    assert_double_equal(gp_perf_timeline_ms(shared, 2, 0, NULL), 60.0, EPS);
    /* The backward pass hides the first exchange: only the last one shows. */
    gp_perf_stage hidden[] = {{0, 0, 5, 0}, {100, 0, 5, 0}};
    double busy = -1;
    assert_double_equal(gp_perf_timeline_ms(hidden, 2, 0, &busy), 105.0, EPS);
    assert_double_equal(busy, 5.0, EPS); /* beside the backward pass: the first exchange */
    /* Pipelining: bucket 1 encodes (10-20) during bucket 0's collective (10-30), its
       collective follows (30-50); bucket 0 decodes 30-40, bucket 1 50-60. */
    gp_perf_stage pipe[] = {{0, 10, 20, 10}, {0, 10, 20, 10}};
    assert_double_equal(gp_perf_timeline_ms(pipe, 2, 0, NULL), 60.0, EPS);
    /* First come, first served on the workers: bucket 0's decode (10-15) runs before
       bucket 1 is ready (50); bucket 1 encodes 50-55, exchanges 55-65. */
    gp_perf_stage fifo[] = {{0, 0, 10, 5}, {50, 5, 10, 0}};
    assert_double_equal(gp_perf_timeline_ms(fifo, 2, 0, NULL), 65.0, EPS);
    /* Nothing ends before the last bucket is ready. */
    gp_perf_stage late[] = {{0, 0, 1, 0}, {80, 0, 0, 0}};
    assert_double_equal(gp_perf_timeline_ms(late, 2, 3, NULL), 83.0, EPS);
}

static void test_bucket_cost(void **st)
{
    (void)st;
    gk_layer l[2] = {{.ndim = 2, .rows = SIDE, .cols = SIDE, .numel = SIDE * SIDE},
                     {.ndim = 1, .rows = SIDE, .cols = 1, .numel = SIDE}};
    char err[256];
    gk_spec psgd, topk;
    assert_int_equal(gk_spec_parse("powersgd:rank=4", &psgd, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(gk_spec_parse("topk:density=0.01", &topk, err, sizeof(err)), GCOMP_OK);
    gp_perf_cost c;
    /* Dense: one allreduce of 4 MiB + 4 KiB on 8 nodes at 1 Gbit/s, 50 us. */
    double dense = (SIDE * SIDE + SIDE) * 4.0;
    gp_perf_bucket_cost(l, 2, NULL, NULL, 0, 8, 0.05, BW_SLOW, &c);
    assert_double_equal(c.comm_ms, 0.7 + 2 * dense * 7 / (8 * BW_SLOW), EPS);
    assert_double_equal(c.encode_decode_ms, 0.0, EPS);
    assert_int_equal(c.ncompressed, 0);
    assert_double_equal(c.sent_bytes, dense, EPS);
    /* PowerSGD: the bias's allreduce (0.757344) and two of 16 KiB (0.929376 each). */
    double stats[2 * GP_PERF_NSTAT] = {[GP_PERF_ENCODE_MS] = 1.0, [GP_PERF_DECODE_AR_MS] = 0.5};
    gp_perf_bucket_cost(l, 2, &psgd, stats, GP_PERF_NSTAT, 8, 0.05, BW_SLOW, &c);
    assert_int_equal(c.ncompressed, 1);
    assert_double_equal(c.comm_ms, 0.757344 + 2 * 0.929376, 1e-9);
    assert_double_equal(c.encode_decode_ms, 1.5, EPS);
    assert_double_equal(c.sent_bytes, 4096 + 2 * 16384, EPS);
    /* Top-K with measured bytes: the allgather decode grows with the nodes. */
    double tk[2 * GP_PERF_NSTAT] = {[GP_PERF_ENCODE_MS] = 2.0, [GP_PERF_DECODE_AG_MS] = 0.25,
                                    [GP_PERF_AG_BYTES] = 83888};
    gp_perf_bucket_cost(l, 2, &topk, tk, GP_PERF_NSTAT, 8, 0.05, BW_SLOW, &c);
    assert_double_equal(c.encode_decode_ms, 2.0 + 0.25 * 8, EPS);
    assert_double_equal(c.comm_ms, 0.757344 + 0.35 + 83888.0 * 7 / BW_SLOW, 1e-9);
    /* Without stats: max_bytes (8-byte aligned) and no encode/decode time. */
    gp_perf_bucket_cost(l, 2, &topk, NULL, 0, 8, 0.05, BW_SLOW, &c);
    double mb = ceil((double)gk_payload_bytes(&topk, &l[0], 0, 0) / 8) * 8;
    assert_double_equal(c.comm_ms, 0.757344 + 0.35 + mb * 7 / BW_SLOW, 1e-9);
    assert_double_equal(c.encode_decode_ms, 0.0, EPS);
    /* One node: nothing to exchange. */
    gp_perf_bucket_cost(l, 2, &topk, tk, GP_PERF_NSTAT, 1, 0.05, BW_SLOW, &c);
    assert_double_equal(c.comm_ms, 0.0, EPS);
    /* The engine's rule: small and 1-D layers stay dense. */
    assert_true(gk_spec_compresses(&topk, &l[0]));
    assert_false(gk_spec_compresses(&topk, &l[1]));
    gk_layer small = {.ndim = 2, .rows = 16, .cols = 16, .numel = 256};
    assert_false(gk_spec_compresses(&topk, &small));
    /* A variable-size allgather (DGC) pays the exchange of sizes first, an allgather of 8
       bytes per node; fixed-size Top-K with the same bytes does not. */
    gk_spec dgc;
    assert_int_equal(gk_spec_parse("dgc:density=0.01", &dgc, err, sizeof(err)), GCOMP_OK);
    assert_false(gk_payload_fixed(&dgc, 0));
    assert_true(gk_payload_fixed(&topk, 0));
    gp_perf_cost cd;
    gp_perf_bucket_cost(l, 2, &topk, tk, GP_PERF_NSTAT, 8, 0.05, BW_SLOW, &c);
    gp_perf_bucket_cost(l, 2, &dgc, tk, GP_PERF_NSTAT, 8, 0.05, BW_SLOW, &cd);
    assert_double_equal(cd.comm_ms - c.comm_ms, 0.35 + 8.0 * 7 / BW_SLOW, 1e-9);
    assert_double_equal(cd.sent_bytes, c.sent_bytes, EPS);
    /* powersgd_unbiased sends P (64 floats per rank) and Q (64) in turn: per step on average
       their mean, in one allreduce. */
    gk_spec ub;
    gk_layer tall = {.ndim = 2, .rows = 1024, .cols = 64, .numel = 1024 * 64};
    assert_int_equal(gk_spec_parse("powersgd_unbiased:rank=2", &ub, err, sizeof(err)), GCOMP_OK);
    double p_bytes = (double)gk_payload_bytes(&ub, &tall, 0, 0);
    double q_bytes = (double)gk_payload_bytes(&ub, &tall, 0, 1);
    assert_true(p_bytes != q_bytes);
    gp_perf_bucket_cost(&tall, 1, &ub, NULL, 0, 8, 0.05, BW_SLOW, &c);
    assert_double_equal(c.sent_bytes, 0.5 * (p_bytes + q_bytes), EPS);
}

static void test_bandwidth_units(void **st)
{
    (void)st;
    double b;
    assert_int_equal(gp_perf_parse_bandwidth("10gbit", &b), GCOMP_OK);
    assert_double_equal(b, 1.25e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("1GBit", &b), GCOMP_OK);
    assert_double_equal(b, 1.25e5, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("100mbit", &b), GCOMP_OK);
    assert_double_equal(b, 12500, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("25gbps", &b), GCOMP_OK);
    assert_double_equal(b, 3.125e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("1tbit", &b), GCOMP_OK);
    assert_double_equal(b, 1.25e8, EPS);
    /* Bytes per second with a capital B; bits with b/s. */
    assert_int_equal(gp_perf_parse_bandwidth("1.25GB/s", &b), GCOMP_OK);
    assert_double_equal(b, 1.25e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("100MB/s", &b), GCOMP_OK);
    assert_double_equal(b, 1e5, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("2.5e9B/s", &b), GCOMP_OK);
    assert_double_equal(b, 2.5e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("10Gb/s", &b), GCOMP_OK);
    assert_double_equal(b, 1.25e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("25Gbps", &b), GCOMP_OK);
    assert_double_equal(b, 3.125e6, EPS);
    assert_int_equal(gp_perf_parse_bandwidth("10GB/S", &b), GCOMP_OK);
    assert_double_equal(b, 1e7, EPS);
    /* A bare number (bytes? bits?) and units that could be misread are refused. */
    const char *bad[] = {"", "gbit", "0gbit", "-1gbit", "10 gbit", "10gb", "10furlongs",
                         " 10gbit", "nan", "inf", "0", "10", "2.5e9", "10GBps", "10gbit/s",
                         "10b/s", "1e400gbit", "10gbitx"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(gp_perf_parse_bandwidth(bad[i], &b), GCOMP_INVALID);
    assert_int_equal(gp_perf_parse_bandwidth(NULL, &b), GCOMP_INVALID);
}

/* ---- specs ---- */

/* The candidate count of a checkpoint: the little-endian int64 after the record header
   ("PERF" and the u32 version). */
static int64_t saved_candidates(const unsigned char *ck, size_t len)
{
    assert_true(len >= 16);
    assert_memory_equal(ck, "PERF", 4);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)ck[8 + i] << (8 * i);
    return (int64_t)v;
}

static void test_specs(void **st)
{
    (void)st;
    char err[1024];
    gp_instance *p = NULL;
    struct {
        const char *spec, *msg;
    } bad[] = {
        {"perfmodel:candidate=zip", "candidate 'zip'"},
        {"perfmodel:candidate=topk:density=7", "density"},
        {"perfmodel:candidate=topk,rank=2", "no key 'rank'"},
        {"perfmodel:gamma=0.5", "gamma must be a number in 1..2"},
        {"perfmodel:gamma=x", "gamma"},
        {"perfmodel:probe=0", "probe must be an integer"},
        {"perfmodel:warmup=-1", "warmup must be an integer"},
        {"perfmodel:foo=1", "has no key 'foo'"},
        {"perfmodel:candidate=topk:density=0.1,candidate=topk:density=0.2,"
         "candidate=topk:density=0.3,candidate=topk:density=0.4,candidate=topk:density=0.5,"
         "candidate=topk:density=0.6,candidate=topk:density=0.7,candidate=topk:density=0.8,"
         "candidate=topk:density=0.9",
         "at most 8 candidates"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(gp_instance_create(bad[i].spec, NULL, &p, err, sizeof(err)),
                         GCOMP_INVALID);
        if (!strstr(err, bad[i].msg))
            fail_msg("'%s': '%s' lacks '%s'", bad[i].spec, err, bad[i].msg);
    }
    /* The candidate spec continues over later codec keys; none and duplicates are taken
       once. */
    assert_int_equal(gp_instance_create("perfmodel:candidate=powersgd:rank=2,min_elements=10,"
                                        "candidate=none,candidate=topk:density=0.05,"
                                        "candidate=topk:density=0.05,gamma=1.1,probe=7,warmup=3",
                                        NULL, &p, err, sizeof(err)),
                     GCOMP_OK);
    size_t len = 0;
    unsigned char *ck = tu_save(p, &len);
    assert_int_equal(saved_candidates(ck, len), 2);
    assert_non_null(memmem(ck, len, "powersgd:rank=2", 15));
    assert_non_null(memmem(ck, len, "min_elements=10", 15));
    assert_non_null(memmem(ck, len, "topk:density=0.05", 17));
    free(ck);
    gp_instance_destroy(p);
    /* The defaults. */
    assert_int_equal(gp_instance_create("perfmodel", NULL, &p, err, sizeof(err)), GCOMP_OK);
    ck = tu_save(p, &len);
    assert_int_equal(saved_candidates(ck, len), 2);
    assert_non_null(memmem(ck, len, "powersgd:rank=4", 15));
    assert_non_null(memmem(ck, len, "topk:density=0.01", 17));
    free(ck);
    gp_instance_destroy(p);
}

/* ---- decisions ---- */

static void test_slow_link_compresses(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel", 0.05, BW_SLOW, 8), GCOMP_OK);
    /* The dense exchange: 0.7 + 2 * 16781312 * 7 / 1e6 = 235.6 ms. */
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.05, BW_SLOW);
    char why[256] = "";
    gk_spec s = run_job(&j, 5, 5, dense, NULL, 0);
    s = decision(&j, 5, why, sizeof(why));
    assert_string_equal(s.codec->name, "powersgd");
    /* PowerSGD: 100 + 4 * 1.5 + bias allreduce + 2 allreduces of 4 x 16 KiB. */
    double want = 100 + 6 + gp_perf_predict_allreduce_ms(4096, 8, 0.05, BW_SLOW) +
                  2 * gp_perf_predict_allreduce_ms(4 * 16384, 8, 0.05, BW_SLOW);
    char expect[256];
    snprintf(expect, sizeof(expect), "predicted %.1f ms (none %.1f ms), measured last step %.1f ms",
             want, 100 + dense, 100 + dense);
    assert_string_equal(why, expect);
    gp_instance_destroy(j.p);
}

static void test_fast_link_stays_dense(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel", 0.005, BW_FAST, 8), GCOMP_OK);
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.005, BW_FAST);
    assert_true(dense < 1.0);
    for (int64_t step = 0; step < 60; step++) {
        char why[256];
        gk_spec s = run_step(&j, "b0", step, step ? 100 + dense : 0, dense,
                             step >= 4 && (step - 4) % 50 == 0, why, sizeof(why));
        assert_string_equal(s.codec->name, "none");
    }
    gp_instance_destroy(j.p);
}

static void test_one_node_never_compresses(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel:warmup=1", 0.0, 0.0, 1), GCOMP_OK);
    run_job(&j, 10, 1, 1.0, NULL, 0);
    char why[256];
    gk_spec s = decision(&j, 10, why, sizeof(why));
    assert_string_equal(s.codec->name, "none");
    assert_non_null(strstr(why, "one node"));
    gp_instance_destroy(j.p);
}

static void test_warmup(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel:warmup=8", 0.05, BW_SLOW, 8), GCOMP_OK);
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.05, BW_SLOW);
    for (int64_t step = 0; step < 8; step++) {
        char why[256];
        gk_spec s = run_step(&j, "b0", step, step ? 100 + dense : 0, dense, step == 7, why,
                             sizeof(why));
        assert_string_equal(s.codec->name, "none");
        assert_non_null(strstr(why, "warmup"));
    }
    assert_string_equal(decision(&j, 8, NULL, 0).codec->name, "powersgd");
    gp_instance_destroy(j.p);
}

/* Run steps from..to-1 of one bucket whose iteration takes dense_ms when the step
   runs dense and comp_ms when compressed; returns the decision at step `to`. */
static gk_spec run_measured(job *j, int64_t from, int64_t to, double dense_ms, double comp_ms,
                            char *why, size_t whylen)
{
    for (int64_t step = from; step < to; step++) {
        bool comp = strcmp(decision(j, step, NULL, 0).codec->name, "none") != 0;
        run_step(j, "b0", step, step ? (comp ? comp_ms : dense_ms) : 0, 0, step == 4, NULL, 0);
    }
    return decision(j, to, why, whylen);
}

/* The measured check: where compressed iterations measure slower than dense ones
   (the model assumed a network independent of the cores), every bucket goes back to
   none for `recheck` iterations, then the model decides again; where they measure
   faster, the model's choice stays. */
static void test_measured_check(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel:recheck=10", 0.05, BW_SLOW, 8), GCOMP_OK);
    char why[256] = "";
    /* Steps 0-4 dense (iterations 1-4 measured at 300 ms), PowerSGD from step 5; its
       iterations show from step 7 (two to settle), 5 of them by step 11. */
    assert_string_equal(run_measured(&j, 0, 5, 300, 600, NULL, 0).codec->name, "powersgd");
    assert_string_equal(run_measured(&j, 5, 11, 300, 600, NULL, 0).codec->name, "powersgd");
    gk_spec s = run_measured(&j, 11, 12, 300, 600, why, sizeof(why));
    assert_string_equal(s.codec->name, "none");
    assert_non_null(strstr(why, "measured 600.0 ms per iteration compressed against 300.0 ms "
                                "dense (model: "));
    assert_non_null(strstr(why, "dense for 10 iterations"));
    /* Held dense for 10 iterations (12-21), then the model compresses again. */
    assert_string_equal(run_measured(&j, 12, 21, 300, 600, NULL, 0).codec->name, "none");
    assert_string_equal(run_measured(&j, 21, 22, 300, 600, NULL, 0).codec->name, "powersgd");
    gp_instance_destroy(j.p);

    /* Compressed iterations faster: nothing changes. Nor with verify=0, slower. */
    const char *specs[] = {"perfmodel", "perfmodel:verify=0"};
    const double comp_ms[] = {150, 600};
    for (int k = 0; k < 2; k++) {
        job q = {0};
        make_layers(&q, "b0", 0);
        assert_int_equal(create(&q, specs[k], 0.05, BW_SLOW, 8), GCOMP_OK);
        assert_string_equal(run_measured(&q, 0, 40, 300, comp_ms[k], NULL, 0).codec->name,
                            "powersgd");
        gp_instance_destroy(q.p);
    }
}

/* Top-K wins where PowerSGD's encode is slow: the candidates' timings decide. */
static void test_timings_decide(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel:candidate=topk:density=0.01,"
                                "candidate=powersgd:rank=4,warmup=2",
                            0.05, BW_SLOW, 4),
                     GCOMP_OK);
    /* Slot 0 is Top-K here, slot 1 a PowerSGD taking 40 ms per layer. */
    const double probe[2][GP_PERF_NSTAT] = {{2.0, 0.0, 0.25, -1.0}, {30.0, 10.0, 0.0, 0.0}};
    memcpy(j.probe, probe, sizeof(probe));
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 4, 0.05, BW_SLOW);
    /* The probe at step 1, the last warmup step; the first decision comes with it (the
       trainers' timeline is known from step 1) and applies from step 2. */
    run_job(&j, 1, 2, dense, NULL, 0);
    assert_string_equal(decision(&j, 1, NULL, 0).codec->name, "none");
    run_job_from(&j, 1, 2, 2, dense);
    char why[256];
    assert_string_equal(decision(&j, 2, why, sizeof(why)).codec->name, "topk");
    /* 100 + 4 x (2 + 4 x 0.25) + the bias's allreduce + the allgather of 4 x k entries. */
    gk_spec topk;
    char err[256];
    assert_int_equal(gk_spec_parse("topk:density=0.01", &topk, err, sizeof(err)), GCOMP_OK);
    double kb = (double)gk_payload_bytes(&topk, &j.layers[0].geom, 0, 0);
    double want = 100 + 12 + gp_perf_predict_allreduce_ms(4096, 4, 0.05, BW_SLOW) +
                  gp_perf_predict_allgather_ms(4 * kb, 4, 0.05, BW_SLOW);
    char expect[128];
    snprintf(expect, sizeof(expect), "predicted %.1f ms (none %.1f ms)", want, 100 + dense);
    assert_non_null(strstr(why, expect));
    gp_instance_destroy(j.p);
}

static double json_number(const char *out, const char *key);

/* Two buckets: the first one's dense exchange overlaps the backward pass. */
static void test_two_buckets_overlap(void **st)
{
    (void)st;
    job a = {0}, b = {0};
    make_layers(&a, "b0", 0);
    make_layers(&b, "b1", 1);
    assert_int_equal(create(&a, "perfmodel:warmup=1", 0.005, BW_FAST, 8), GCOMP_OK);
    b.p = a.p;
    b.env = a.env;
    /* b0 is ready 50 ms into the backward pass, b1 at its end (100 ms); 10 ms of forward
       pass and optimizer. */
    a.ready_ms = 50;
    b.ready_ms = 100;
    a.gap_ms = b.gap_ms = 10;
    for (int64_t step = 0; step < 4; step++) {
        run_step(&a, "b0", step, step ? 110 : 0, 2.0, step == 0, NULL, 0);
        run_step(&b, "b1", step, step ? 110 : 0, 3.0, step == 0, NULL, 0);
    }
    char out[8192];
    const char *argv[] = {"whatif", "--nodes", "8", "--bandwidth", "400gbit", "--latency-us", "5"};
    assert_int_equal(a.p->policy->query(a.p->state, 7, argv, 1, out, sizeof(out)), GCOMP_OK);
    double e = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.005, BW_FAST);
    /* All dense: b0's exchange (50 to 50 + e) is hidden by the backward pass, b1's
       follows it (100 to 100 + e), then the gap. */
    const char *n = strstr(out, "\"none_ms\":");
    assert_non_null(n);
    assert_double_equal(strtod(n + 10, NULL), 110 + e, 1e-4);
    const char *c = strstr(out, "\"compute_ms\":");
    assert_non_null(c);
    assert_double_equal(strtod(c + 13, NULL), 110.0, 1e-4);
    assert_double_equal(json_number(out, "backward_ms"), 100.0, 1e-4);
    assert_double_equal(json_number(out, "gap_ms"), 10.0, 1e-4);
    gp_instance_destroy(a.p);
}

/* ---- whatif ---- */

static double json_number(const char *out, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(out, k);
    assert_non_null(p);
    return strtod(p + strlen(k), NULL);
}

static void test_whatif(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b0", 0);
    assert_int_equal(create(&j, "perfmodel", 0.005, BW_FAST, 8), GCOMP_OK);
    char out[16384];
    const char *argv[] = {"whatif", "--nodes", "16", "--bandwidth", "1gbit", "--latency-us", "50"};
    /* Nothing measured yet. */
    assert_int_equal(j.p->policy->query(j.p->state, 7, argv, 0, out, sizeof(out)),
                     GCOMP_NOT_FOUND);
    assert_non_null(strstr(out, "nothing measured yet"));
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.005, BW_FAST);
    run_job(&j, 10, 5, dense, NULL, 0);
    assert_string_equal(decision(&j, 10, NULL, 0).codec->name, "none");

    /* On 16 nodes at 1 Gbit/s, 50 us: the model with P and B substituted. */
    double none = 100 + gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 16, 0.05,
                                                     BW_SLOW);
    double psgd = 100 + 4 * 1.5 + gp_perf_predict_allreduce_ms(4096, 16, 0.05, BW_SLOW) +
                  2 * gp_perf_predict_allreduce_ms(4 * 16384, 16, 0.05, BW_SLOW);
    assert_int_equal(j.p->policy->query(j.p->state, 7, argv, 1, out, sizeof(out)), GCOMP_OK);
    assert_double_equal(json_number(out, "none_ms"), none, 1e-3);
    assert_double_equal(json_number(out, "total_ms"), psgd, 1e-3);
    assert_double_equal(json_number(out, "speedup"), none / psgd, 1e-4);
    assert_double_equal(json_number(out, "nodes"), 16, EPS);
    assert_double_equal(json_number(out, "bandwidth_bytes_s"), 1.25e8, 1);
    assert_double_equal(json_number(out, "compute_ms"), 100, 1e-6);
    assert_non_null(strstr(out, "\"best\":\"powersgd:rank=4"));
    assert_non_null(strstr(out, "\"bucket\":\"b0\""));
    /* Top-K: 2 ms + 0.25 ms x 16 per layer, its k entries allgathered. */
    gk_spec topk;
    char err[256];
    assert_int_equal(gk_spec_parse("topk:density=0.01", &topk, err, sizeof(err)), GCOMP_OK);
    double kb = (double)gk_payload_bytes(&topk, &j.layers[0].geom, 0, 0);
    double tk = 100 + 4 * (2 + 0.25 * 16) + gp_perf_predict_allreduce_ms(4096, 16, 0.05, BW_SLOW) +
                gp_perf_predict_allgather_ms(4 * kb, 16, 0.05, BW_SLOW);
    const char *t = strstr(out, "{\"codec\":\"topk");
    assert_non_null(t);
    assert_double_equal(json_number(t, "step_ms"), tk, 1e-3);

    /* Text: a row per candidate, the best marked, the total. */
    assert_int_equal(j.p->policy->query(j.p->state, 7, argv, 0, out, sizeof(out)), GCOMP_OK);
    assert_non_null(strstr(out, "whatif: 16 nodes, bandwidth 1 Gbit/s, latency 50 us"));
    assert_non_null(strstr(out, "bucket 'b0'"));
    const char *row = strstr(out, "\n  powersgd:rank=4");
    assert_non_null(row);
    const char *eol = strchr(row + 1, '\n');
    assert_non_null(strstr(row, "<- best"));
    assert_true(strstr(row, "<- best") < eol);
    char total[128];
    snprintf(total, sizeof(total), "model total: %.2f ms per step", psgd);
    assert_non_null(strstr(out, total));

    /* Without --latency-us the measured latency is used; the fast cluster keeps none. */
    const char *fast[] = {"whatif", "--bandwidth", "400gbit", "--nodes", "8"};
    assert_int_equal(j.p->policy->query(j.p->state, 5, fast, 1, out, sizeof(out)), GCOMP_OK);
    assert_double_equal(json_number(out, "latency_us"), 5, 1e-9);
    assert_double_equal(json_number(out, "total_ms"), 100 + dense, 1e-3);
    assert_non_null(strstr(out, "\"best\":\"none\""));

    /* Refused. */
    struct {
        int argc;
        const char *argv[8];
        const char *msg;
    } bad[] = {
        {1, {"status"}, "perfmodel answers 'whatif"},
        {3, {"whatif", "--nodes", "8"}, "--bandwidth missing"},
        {3, {"whatif", "--bandwidth", "1gbit"}, "--nodes missing"},
        {5, {"whatif", "--nodes", "0", "--bandwidth", "1gbit"}, "--nodes must be"},
        {5, {"whatif", "--nodes", "x8", "--bandwidth", "1gbit"}, "--nodes must be"},
        {5, {"whatif", "--nodes", "8", "--bandwidth", "10furlongs"}, "--bandwidth must be"},
        /* A bare number is not read as bytes per second: the accepted units are listed. */
        {5, {"whatif", "--nodes", "8", "--bandwidth", "10"}, "with a unit (kbit, mbit"},
        {5, {"whatif", "--nodes", "8", "--bandwidth", "10"}, "GB/s, TB/s), e.g. 10gbit"},
        {5, {"whatif", "--nodes", "8", "--bandwidth", "-10gbit"}, "--bandwidth must be"},
        {5, {"whatif", "--nodes", "8", "--bandwidth", "0gbit"}, "--bandwidth must be"},
        {5, {"whatif", "--nodes", "8.5", "--bandwidth", "1gbit"}, "--nodes must be"},
        {5, {"whatif", "--nodes", "-2", "--bandwidth", "1gbit"}, "--nodes must be"},
        {5, {"whatif", "--nodes", "", "--bandwidth", "1gbit"}, "--nodes must be"},
        {7, {"whatif", "--nodes", "8", "--bandwidth", "1gbit", "--latency-us", "5us"},
         "--latency-us must be"},
        {7, {"whatif", "--nodes", "8", "--bandwidth", "1gbit", "--latency-us", "nan"},
         "--latency-us must be"},
        {7, {"whatif", "--nodes", "8", "--bandwidth", "1gbit", "--nodes", "4"},
         "--nodes given twice"},
        {7, {"whatif", "--bandwidth", "1gbit", "--nodes", "8", "--bandwidth", "1MB/s"},
         "--bandwidth given twice"},
        {7, {"whatif", "--nodes", "8", "--bandwidth", "1gbit", "--latency-us", "-3"},
         "--latency-us must be"},
        {4, {"whatif", "--nodes", "8", "--bandwidth"}, "--bandwidth needs a value"},
        {5, {"whatif", "--hosts", "8", "--bandwidth", "1gbit"}, "unknown option '--hosts'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        out[0] = '\0';
        assert_int_equal(j.p->policy->query(j.p->state, bad[i].argc, bad[i].argv, 0, out,
                                            sizeof(out)),
                         GCOMP_INVALID);
        if (!strstr(out, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, out, bad[i].msg);
    }
    /* Too small an answer buffer is a clear error, not a truncated table. */
    char tiny[64];
    assert_int_equal(j.p->policy->query(j.p->state, 7, argv, 0, tiny, sizeof(tiny)), GCOMP_LIMIT);
    assert_non_null(strstr(tiny, "does not fit"));
    gp_instance_destroy(j.p);
}

/* ---- collect ---- */

static void test_collect_times_codecs(void **st)
{
    (void)st;
    gp_instance *p;
    char err[512];
    gp_env env = {.nodes = 2, .trainers = 2, .seed = 3, .alpha_ms = 0.01, .bw_bytes_ms = 1e6};
    assert_int_equal(gp_instance_create("perfmodel:candidate=powersgd:rank=2,"
                                        "candidate=topk:density=0.05,warmup=1,probe=3",
                                        &env, &p, err, sizeof(err)),
                     GCOMP_OK);
    assert_int_equal(p->policy->nstats, GP_PERF_NSTATS);
    gp_layer l = {.bucket = "b", .name = "w", .index = 0,
                  .geom = {.id = 0, .ndim = 2, .rows = 64, .cols = 256, .numel = 64 * 256}};
    gp_layer bias = {.bucket = "b", .name = "bias", .index = 1,
                     .geom = {.id = 1, .ndim = 1, .rows = 64, .cols = 1, .numel = 64}};
    float *x = malloc(l.geom.numel * sizeof(float));
    for (size_t i = 0; i < l.geom.numel; i++)
        x[i] = (float)sin(0.37 * (double)i) * (float)(1 + i % 7);
    double stats[GP_PERF_NSTATS];
    /* Step 0 is the probe (warmup 1); decide() first, as the engine does. */
    gk_spec spec;
    char why[256];
    assert_int_equal(p->policy->decide(p->state, &l, 0, &spec, why, sizeof(why)), GCOMP_OK);
    assert_int_equal(tu_collect(p, &l, 0, x, x, stats), GCOMP_OK);
    const double *ps = stats, *tk = stats + GP_PERF_NSTAT;
    assert_true(ps[GP_PERF_ENCODE_MS] > 0);
    assert_true(ps[GP_PERF_DECODE_AR_MS] > 0);
    assert_double_equal(ps[GP_PERF_DECODE_AG_MS], 0, EPS);
    assert_double_equal(ps[GP_PERF_AG_BYTES], 0, EPS);
    assert_true(tk[GP_PERF_ENCODE_MS] > 0);
    assert_true(tk[GP_PERF_DECODE_AG_MS] > 0);
    gk_spec topk;
    assert_int_equal(gk_spec_parse("topk:density=0.05", &topk, err, sizeof(err)), GCOMP_OK);
    assert_double_equal(tk[GP_PERF_AG_BYTES],
                        ceil((double)gk_payload_bytes(&topk, &l.geom, 0, 0) / 8) * 8, EPS);
    for (int k = 2 * GP_PERF_NSTAT; k < GP_PERF_NSTATS; k++)
        assert_double_equal(stats[k], 0, EPS);
    /* A layer the engine sends dense is not timed. */
    assert_int_equal(tu_collect(p, &bias, 0, x, x, stats), GCOMP_OK);
    for (int k = 0; k < GP_PERF_NSTATS; k++)
        assert_double_equal(stats[k], 0, EPS);
    /* A bucket decide() has not seen is refused. */
    gp_layer other = l;
    other.bucket = "never decided";
    assert_int_equal(tu_collect(p, &other, 0, x, x, stats), GCOMP_INVALID);

    /* From two threads at once, on different layers: the same sizes measured, every
       timing taken, as serially. */
    enum { NLAY = 6 };
    gp_layer ls[NLAY];
    double serial[NLAY][GP_PERF_NSTATS], threaded[NLAY][GP_PERF_NSTATS];
    tu_job jobs[NLAY];
    for (int i = 0; i < NLAY; i++) {
        ls[i] = l;
        ls[i].index = i;
        ls[i].geom.id = (uint64_t)5 << 32 | (uint64_t)i;
        assert_int_equal(tu_collect(p, &ls[i], 0, x, x, serial[i]), GCOMP_OK);
        jobs[i] = (tu_job){.layer = &ls[i], .step = 0, .g = x, .x = x, .stats = threaded[i]};
    }
    tu_collect_two_threads(p, jobs, NLAY);
    for (int i = 0; i < NLAY; i++)
        for (int k = 0; k < GP_PERF_NSTATS; k++) {
            bool bytes = k % GP_PERF_NSTAT == GP_PERF_AG_BYTES;
            if (bytes)
                assert_double_equal(threaded[i][k], serial[i][k], EPS);
            else
                assert_true((threaded[i][k] > 0) == (serial[i][k] > 0));
        }
    free(x);
    gp_instance_destroy(p);
}

/* ---- save and load ---- */

static void test_save_load(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "bucket with spaces", 0);
    assert_int_equal(create(&j, "perfmodel", 0.05, BW_SLOW, 8), GCOMP_OK);
    double dense = gp_perf_predict_allreduce_ms(4.0 * (4 * SIDE * SIDE + SIDE), 8, 0.05, BW_SLOW);
    for (int64_t step = 0; step < 8; step++)
        run_step(&j, "bucket with spaces", step, step ? 100 + dense : 0, dense, step == 4, NULL, 0);
    size_t la;
    unsigned char *a = tu_save(j.p, &la);

    job k = {0};
    make_layers(&k, "bucket with spaces", 0);
    assert_int_equal(create(&k, "perfmodel", 0.05, BW_SLOW, 8), GCOMP_OK);
    char err[256];
    assert_int_equal(tu_load(k.p, a, la, err, sizeof(err)), GCOMP_OK);
    tu_assert_same_state(j.p, k.p);
    char wa[256], wb[256];
    gk_spec sa = decision(&j, 8, wa, sizeof(wa)), sb = decision(&k, 8, wb, sizeof(wb));
    assert_string_equal(sa.codec->name, "powersgd");
    assert_ptr_equal(sa.codec, sb.codec);
    assert_string_equal(wa, wb);
    char oa[8192], ob[8192];
    const char *argv[] = {"whatif", "--nodes", "32", "--bandwidth", "10gbit"};
    assert_int_equal(j.p->policy->query(j.p->state, 5, argv, 0, oa, sizeof(oa)), GCOMP_OK);
    assert_int_equal(k.p->policy->query(k.p->state, 5, argv, 0, ob, sizeof(ob)), GCOMP_OK);
    assert_string_equal(oa, ob);
    /* Both go on identically. */
    for (int64_t step = 8; step < 12; step++) {
        gk_spec x = run_step(&j, "bucket with spaces", step, 120, 20, false, NULL, 0);
        gk_spec y = run_step(&k, "bucket with spaces", step, 120, 20, false, NULL, 0);
        assert_ptr_equal(x.codec, y.codec);
    }
    tu_assert_same_state(j.p, k.p);

    /* Other candidates or gamma, a truncated file, garbage, another version: refused, the
       state untouched. */
    job m = {0};
    assert_int_equal(create(&m, "perfmodel:candidate=topk:density=0.01", 0.05, BW_SLOW, 8),
                     GCOMP_OK);
    assert_int_equal(tu_load(m.p, a, la, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "perfmodel checkpoint made with candidates=2; this perfmodel has "
                             "candidates=1");
    gp_instance_destroy(m.p);
    assert_int_equal(create(&m, "perfmodel:candidate=topk:density=0.01,candidate=powersgd:rank=4",
                            0.05, BW_SLOW, 8),
                     GCOMP_OK);
    assert_int_equal(tu_load(m.p, a, la, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "candidate=powersgd:rank=4"));
    gp_instance_destroy(m.p);
    assert_int_equal(create(&m, "perfmodel:gamma=1.2", 0.05, BW_SLOW, 8), GCOMP_OK);
    assert_int_equal(tu_load(m.p, a, la, err, sizeof(err)), GCOMP_INVALID);
    assert_string_equal(err, "perfmodel checkpoint made with gamma=1.07; this perfmodel has "
                             "gamma=1.2");
    gp_instance_destroy(m.p);
    assert_int_not_equal(tu_load(k.p, a, la / 2, err, sizeof(err)), GCOMP_OK);
    char junk[] = "perfmodel 9\n";
    assert_int_equal(tu_load(k.p, junk, strlen(junk), err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "expected a 'PERF' record"));
    tu_check_refusals(k.p, a, la);
    tu_assert_same_state(j.p, k.p);
    free(a);
    gp_instance_destroy(j.p);
    gp_instance_destroy(k.p);
}

/* 64-bit layer ids survive a checkpoint: the ids of buckets beyond 2^16 and layers with
   the same low 32 bits are kept apart. */
static void test_save_load_ids(void **st)
{
    (void)st;
    job j = {0};
    make_layers(&j, "b", (uint64_t)0x12345 << 8);
    assert_int_equal(create(&j, "perfmodel:warmup=1", 0.05, BW_SLOW, 8), GCOMP_OK);
    run_step(&j, "b", 0, 0, 1, true, NULL, 0);
    size_t len;
    unsigned char *ck = tu_save(j.p, &len);
    uint64_t id = j.layers[3].geom.id;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(id >> (8 * i));
    assert_true(id >> 32 == 0x1234500);
    assert_non_null(memmem(ck, len, le, 8));
    job k = {0};
    assert_int_equal(create(&k, "perfmodel:warmup=1", 0.05, BW_SLOW, 8), GCOMP_OK);
    assert_int_equal(tu_load(k.p, ck, len, NULL, 0), GCOMP_OK);
    tu_assert_same_state(j.p, k.p);
    free(ck);
    gp_instance_destroy(j.p);
    gp_instance_destroy(k.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formulas),
        cmocka_unit_test(test_timeline),
        cmocka_unit_test(test_bucket_cost),
        cmocka_unit_test(test_bandwidth_units),
        cmocka_unit_test(test_specs),
        cmocka_unit_test(test_slow_link_compresses),
        cmocka_unit_test(test_fast_link_stays_dense),
        cmocka_unit_test(test_one_node_never_compresses),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_timings_decide),
        cmocka_unit_test(test_measured_check),
        cmocka_unit_test(test_two_buckets_overlap),
        cmocka_unit_test(test_whatif),
        cmocka_unit_test(test_collect_times_codecs),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_save_load_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
