/*
 * perfmodel: compress a bucket only where the performance model of algorithms.md 3.6
 * ("On the utility of gradient compression") predicts a shorter step.
 *
 *   perfmodel[:candidate=SPEC,...][,gamma=1.07][,probe=50][,warmup=5][,verify=5]
 *            [,recheck=500]
 *
 * candidate is repeatable and spec-valued ("perfmodel:candidate=powersgd:rank=4,
 * candidate=topk:density=0.01"); without any, powersgd:rank=4 and topk:density=0.01.
 * none is always a candidate. gamma is the slowdown of the backward pass while
 * communication runs beside it; probe the steps between codec timings; warmup the steps
 * every bucket runs dense before its first decision; verify and recheck: see "The
 * measured check" below (verify=0: no check).
 *
 * The constants of the model:
 *  - alpha and BW: gp_env, measured by the engine on the real transport before this policy is made (uses_network)
 *    (0 on one node: nothing is exchanged, so compression never pays);
 *  - encode and decode times and allgather sizes: collect() runs every candidate on
 *    every layer's x (encode and decode timed per phase) every `probe` steps of the
 *    bucket, starting with the last warmup step; the engine averages them over nodes.
 *    collect() runs on the engine's worker threads, for several layers at once
 *    (collect_concurrent: it reads the bucket that decide() made and writes only its
 *    stats, its buffers from the worker's arena), so a timing can include the wait
 *    for a core that another worker holds, as the engine's own encodes do;
 *  - allreduce sizes: gk_payload_bytes (exact for allreduce phases), per step on
 *    average (gp_payload_mean: powersgd_unbiased sends P and Q in turn);
 *  - the trainers' timeline (the engine's, gp_step_info, the slowest node's): per
 *    bucket step ready_ms, when the bucket was ready (its last trainer submitted it)
 *    after the iteration's first submission of any bucket: the backward pass before
 *    it; and gap_ms, from the previous iteration's last result to this one's first
 *    submission: the forward pass and optimizer. Each the median of its last
 *    GP_PERF_WINDOW samples (ready per bucket, the gap once per iteration). Waiting for
 *    results is neither: it is what the model predicts.
 *
 * The model (gp_perf_timeline_ms), an iteration as the engine runs it: the buckets in
 * the order they become ready; each one encodes on the daemon's workers from its ready
 * time, runs its collectives on the network, and decodes on the workers; the workers
 * and the network each do one thing at a time, first come first served, so one bucket's
 * encode overlaps another's collective and a dense exchange overlaps the backward pass
 * that follows its bucket. The iteration ends when the last result is complete (not
 * before the last bucket is ready), plus the gap:
 *   step = max(last ready, end of every bucket's exchange) + gap
 * The backward pass runs up to gamma times slower beside communication (the paper's
 * gamma): with the network busy for a fraction phi of it, (1 + (gamma - 1) phi) times;
 * the measured ready times are rescaled from the measured configuration's phi to the
 * predicted one's. A dense exchange is one ring allreduce, 2 alpha (p-1) + 2 b (p-1) /
 * (p BW); a compressed bucket pays its still-dense layers' allreduce and one collective
 * per phase, allreduce or allgather (alpha (p-1) + b (p-1) / BW), and allgather decodes
 * take p times their one-node time. An allgather phase whose payloads vary in size
 * (gk_payload_fixed() false) is preceded by the exchange of the sizes, an allgather of 8
 * bytes per node; fixed-size ones skip it, as the engine does. With one bucket ready at
 * the end of the backward pass this is the paper's syncSGD T_comp + T_comm(b) and its
 * compressed T_comp + T_encode_decode + T_comm(b'); with several, a dense bucket whose
 * exchange the rest of the backward pass hides costs nothing, as in the paper's
 * max(gamma T_comp, (k - 1) T_comm) + T_comm(last). The workers are modelled as one:
 * the codec timings are one worker's, and the node's cores are shared with its
 * trainers (the safe side where more cores are free).
 *
 * Decisions: when a bucket is observed (after warmup, with timings and a timeline),
 * every option for it is predicted with the other buckets as they are, and the fastest
 * taken (none on ties) if it beats the current one by more than GP_PERF_HYSTERESIS; it
 * applies from the next decide(). The reason logged reads "predicted 12.3 ms (none 20.1
 * ms), measured last step 13.0 ms" (step: the training iteration). Everything decided
 * comes from the averaged statistics and env, identical on every node. Query: "whatif
 * --nodes P --bandwidth B [--latency-us L]", B with a unit (10gbit, 25gbps,
 * 1.25GB/s...), answered by the same model.
 *
 * The measured check: the model can be wrong where its resources are not what it
 * assumes (unshaped TCP on loopback: the kernel copies every byte on the cores that
 * encode, so the "network" and the workers are not independent). Once per iteration
 * (at the last bucket's observe) the iteration time, the slowest node's, is sampled:
 * into the dense window when every bucket ran dense, else into the window of the
 * current compressed configuration (emptied whenever a bucket's choice changes; the
 * next GP_PERF_SETTLE iterations are not sampled, nor the iteration after one that
 * timed the codecs). When the latter holds `verify` samples and its median is more
 * than GP_PERF_HYSTERESIS above the fastest dense iteration (not the dense median: a
 * job's first iterations, which fill the dense window, run slower; and on a tie dense
 * wins, as in the model), compression does not pay here whatever the model says:
 * every bucket goes back to none for `recheck` iterations (the dense window refills
 * meanwhile), then the model decides again. The reason logged reads, from an unshaped
 * run of deploy/dev.sh bench-link's job: "measured 230.7 ms per iteration compressed
 * against 194.5 ms dense (model: 229.0 ms): dense for 500 iterations".
 *
 * Checkpoint: record "PERF" version 2: the arguments (the candidates' canonical texts,
 * gamma, verify, recheck), the gap samples, the measured check's state (iterations,
 * windows, settle and hold), then per bucket in first-seen order its name, choice and
 * reason, measurements and ready-time samples, layers (id and shape) and probe
 * statistics. (Version 1 held compute-time samples of the earlier model: refused.)
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/grow.h"
#include "ckpt.h"
#include "gcomp.h"
#include "base/json.h"
#include "perfmodel.h"
#include "policy.h"

/* Samples of the trainers' timeline the medians are taken over. */
#define GP_PERF_WINDOW 16
/* A switch must predict a step this much shorter than the current choice's: more than
   the model's median error (1.8% in the paper), so that noise does not flip a bucket
   between a lossy codec and none. */
#define GP_PERF_HYSTERESIS 0.05
/* Iterations the measured check skips after a change of choice: a choice made in the
   observe() of step s applies from the bucket's decide() of s + 1, and the step_ms
   observed at step k is the iteration of step k - 1. */
#define GP_PERF_SETTLE 2
/* Passes of the per-bucket search whatif makes for its best configuration. */
#define GP_PERF_PASSES 8
/* The bytes each node contributes to the exchange of sizes before a variable-size
   allgather. */
#define GP_PERF_SIZE_BYTES 8.0
#define GP_PERF_TAG "PERF"
#define GP_PERF_VERSION 2

/* ---- the model ---- */

double gp_perf_predict_allreduce_ms(double bytes, int nodes, double alpha_ms,
                                    double bw_bytes_ms)
{
    if (nodes < 2 || bytes <= 0)
        return 0.0;
    double p = nodes;
    double wire = bw_bytes_ms > 0 ? 2.0 * bytes * (p - 1) / (p * bw_bytes_ms) : 0.0;
    return 2.0 * alpha_ms * (p - 1) + wire;
}

double gp_perf_predict_allgather_ms(double bytes_per_node, int nodes, double alpha_ms,
                                    double bw_bytes_ms)
{
    if (nodes < 2)
        return 0.0;
    double p = nodes;
    double wire = bw_bytes_ms > 0 ? bytes_per_node * (p - 1) / bw_bytes_ms : 0.0;
    return alpha_ms * (p - 1) + wire;
}

double gp_perf_timeline_ms(const gp_perf_stage *st, int n, double gap_ms, double *busy_ms)
{
    double last_ready = n > 0 ? st[n - 1].ready_ms : 0, busy = 0;
    double *comm_end = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!comm_end)
        return INFINITY;
    double cpu = 0, net = 0, end = 0;
    int enc = 0, dec = 0; /* the next bucket to encode, the next to decode */
    while (dec < n) {
        if (enc < n && (dec == enc || st[enc].ready_ms <= comm_end[dec])) {
            double done = st[enc].ready_ms;
            if (st[enc].encode_ms > 0)
                done = cpu = fmax(cpu, done) + st[enc].encode_ms;
            double start = fmax(net, done);
            net = start + st[enc].comm_ms;
            busy += fmax(0.0, fmin(net, last_ready) - start);
            comm_end[enc++] = net;
        } else {
            double done = comm_end[dec];
            if (st[dec].decode_ms > 0)
                done = cpu = fmax(cpu, done) + st[dec].decode_ms;
            end = fmax(end, done);
            dec++;
        }
    }
    free(comm_end);
    if (busy_ms)
        *busy_ms = busy;
    return fmax(end, last_ready) + gap_ms;
}

static double align8(double bytes)
{
    return ceil(bytes / 8.0) * 8.0;
}

void gp_perf_bucket_cost(const gk_layer *layers, int nlayers, const gk_spec *spec,
                         const double *stats, size_t stride, int nodes, double alpha_ms,
                         double bw_bytes_ms, gp_perf_cost *out)
{
    *out = (gp_perf_cost){0};
    double dense = 0, ag_bytes = 0, ar_bytes[16] = {0};
    bool any_ag = false;
    int nph = spec ? gk_spec_nphases(spec) : 1;
    if (nph > 16)
        nph = 16;
    for (int l = 0; l < nlayers; l++) {
        const gk_layer *g = &layers[l];
        if (!spec || !gk_spec_compresses(spec, g)) {
            dense += (double)g->numel * sizeof(float);
            continue;
        }
        out->ncompressed++;
        const double *st = stats ? stats + (size_t)l * stride : NULL;
        for (int p = 0; p < nph; p++) {
            if (gk_spec_coll(spec, p) == GK_COLL_ALLGATHER) {
                any_ag = true;
                if (!st)
                    ag_bytes += align8(gp_payload_mean(spec, g, p));
            } else {
                ar_bytes[p] += gp_payload_mean(spec, g, p);
            }
        }
        if (st) {
            ag_bytes += st[GP_PERF_AG_BYTES];
            out->encode_ms += st[GP_PERF_ENCODE_MS];
            out->decode_ms += st[GP_PERF_DECODE_AR_MS] +
                              st[GP_PERF_DECODE_AG_MS] * (nodes > 1 ? nodes : 1);
        }
    }
    out->encode_decode_ms = out->encode_ms + out->decode_ms;
    out->comm_ms = gp_perf_predict_allreduce_ms(dense, nodes, alpha_ms, bw_bytes_ms);
    out->sent_bytes = dense + ag_bytes;
    if (out->ncompressed > 0) {
        int n_ag = 0, n_sizes = 0;
        for (int p = 0; p < nph; p++) {
            if (gk_spec_coll(spec, p) == GK_COLL_ALLGATHER) {
                n_ag++;
                n_sizes += !gk_payload_fixed(spec, p);
            } else {
                out->comm_ms += gp_perf_predict_allreduce_ms(ar_bytes[p], nodes, alpha_ms,
                                                             bw_bytes_ms);
                out->sent_bytes += ar_bytes[p];
            }
        }
        /* One allgather per phase: the latency per phase, the bytes summed over them; and
           the exchange of sizes before each variable-size one. */
        if (any_ag && nodes > 1)
            out->comm_ms += n_ag * alpha_ms * (nodes - 1) +
                            gp_perf_predict_allgather_ms(ag_bytes, nodes, 0.0, bw_bytes_ms) +
                            n_sizes * gp_perf_predict_allgather_ms(GP_PERF_SIZE_BYTES, nodes,
                                                                   alpha_ms, bw_bytes_ms);
    }
}

/* The bandwidth units whatif accepts, as bytes per second per unit. The b or B that
   tells bits from bytes (before "/s" or "ps") is matched exactly, so that "GBps" is not
   read as gigabits; every other letter in any case ("1GBit", "25Gbps"). */
static const struct {
    const char *unit;
    double bytes_s;
} bw_units[] = {
    {"kbit", 1e3 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8}, {"tbit", 1e12 / 8},
    {"kbps", 1e3 / 8}, {"mbps", 1e6 / 8}, {"gbps", 1e9 / 8}, {"tbps", 1e12 / 8},
    {"kb/s", 1e3 / 8}, {"mb/s", 1e6 / 8}, {"gb/s", 1e9 / 8}, {"tb/s", 1e12 / 8},
    {"B/s", 1},        {"kB/s", 1e3},     {"MB/s", 1e6},     {"GB/s", 1e9},
    {"TB/s", 1e12},
};

static bool unit_is(const char *text, const char *unit)
{
    size_t n = strlen(unit);
    if (strlen(text) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool exact = (unit[i] == 'b' || unit[i] == 'B') && (unit[i + 1] == '/' ||
                                                             unit[i + 1] == 'p');
        if (exact ? text[i] != unit[i]
                  : tolower((unsigned char)text[i]) != tolower((unsigned char)unit[i]))
            return false;
    }
    return true;
}

size_t gp_perf_bandwidth_units(char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(bw_units) / sizeof(bw_units[0]); i++)
        n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, "%s%s",
                              i ? ", " : "", bw_units[i].unit);
    return n;
}

int gp_perf_parse_bandwidth(const char *text, double *bytes_ms)
{
    if (!text || isspace((unsigned char)*text))
        return GCOMP_INVALID;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !isfinite(v) || v <= 0)
        return GCOMP_INVALID;
    for (size_t i = 0; i < sizeof(bw_units) / sizeof(bw_units[0]); i++)
        if (unit_is(end, bw_units[i].unit)) {
            double bytes_s = v * bw_units[i].bytes_s;
            if (!isfinite(bytes_s))
                return GCOMP_INVALID;
            *bytes_ms = bytes_s / 1e3;
            return GCOMP_OK;
        }
    return GCOMP_INVALID; /* no unit (a bare number) or an unknown one */
}

/* ---- the policy's state ---- */

typedef struct perf_bucket {
    char *name;        /* the bucket's name (gp_layer.bucket) */
    int64_t count;     /* steps observed */
    int choice;        /* 0: none; i + 1: candidate i */
    bool has_probe;    /* stats hold a probe's numbers */
    bool meas_dense;   /* the last observed step sent every layer dense */
    double step_ms;    /* the last observed step's (the slowest node's) */
    double exchange_ms; /* the last observed step's exchange (the slowest node's) */
    double predicted;  /* the model's step time for the current choice (0: none yet) */
    int64_t nready;    /* ready-time samples taken (ms after the iteration's first
                          submission); the last GP_PERF_WINDOW kept */
    double ready[GP_PERF_WINDOW];
    int nlayers;       /* layers of geom */
    gk_layer *geom;    /* [nlayers]: the layers as the last observed step had them */
    double *stats;     /* [nlayers][ncand][GP_PERF_NSTAT], averaged over the nodes */
    char why[256];     /* the reason for the choice, for the decision log */
} perf_bucket;

typedef struct perf_state {
    int ncand;                                   /* candidates besides none */
    gk_spec cand[GP_PERF_MAX_CANDIDATES];
    char cand_text[GP_PERF_MAX_CANDIDATES][160]; /* their canonical specs */
    gk_spec none;
    double gamma;       /* the backward pass's slowdown under overlapping communication */
    long probe, warmup; /* steps between codec timings; dense steps before deciding */
    gp_env env;         /* the job and the measured network */
    int nbuckets;         /* buckets in use */
    size_t capbuckets;    /* buckets allocated */
    perf_bucket *buckets; /* in the order first seen, identical on every node */
    long verify, recheck; /* the measured check (header) */
    int64_t iters;        /* iterations observed (at the last bucket's observe) */
    int64_t ndense, ncomp; /* iteration-time samples taken: all dense, and in the current
                              compressed configuration; the last GP_PERF_WINDOW kept */
    double dense[GP_PERF_WINDOW], comp[GP_PERF_WINDOW];
    int64_t settle;       /* iterations before the configuration's times are sampled */
    int64_t hold_until;   /* every bucket stays dense before this iteration */
    int64_t ngap;         /* gap samples taken (forward pass and optimizer, ms; once
                             per iteration); the last GP_PERF_WINDOW kept */
    double gap[GP_PERF_WINDOW];
} perf_state;

static const char *const perf_keys[] = {"candidate", "gamma",  "probe",   "warmup",
                                        "verify",    "recheck", NULL};
static const char *const perf_spec_keys[] = {"candidate", NULL};
static const char *const perf_multi_keys[] = {"candidate", NULL};

static int add_candidate(perf_state *s, const char *text, char *err, size_t errlen)
{
    gk_spec spec;
    char e[768];
    if (gk_spec_parse(text, &spec, e, sizeof(e))) {
        snprintf(err, errlen, "policy 'perfmodel': candidate '%s': %s", text, e);
        return GCOMP_INVALID;
    }
    if (spec.codec == s->none.codec)
        return GCOMP_OK; /* none is always a candidate */
    for (int i = 0; i < s->ncand; i++)
        if (s->cand[i].codec == spec.codec && s->cand[i].ef == spec.ef &&
            s->cand[i].min_elements == spec.min_elements &&
            memcmp(s->cand[i].v, spec.v, sizeof(spec.v)) == 0)
            return GCOMP_OK; /* the same candidate twice */
    if (s->ncand == GP_PERF_MAX_CANDIDATES) {
        snprintf(err, errlen, "policy 'perfmodel': at most %d candidates besides none",
                 GP_PERF_MAX_CANDIDATES);
        return GCOMP_INVALID;
    }
    s->cand[s->ncand] = spec;
    /* The canonical text, with min_elements where it is not the default (that of none). */
    char *t = s->cand_text[s->ncand];
    int n = gk_spec_format(&spec, t, sizeof(s->cand_text[0]));
    if (spec.min_elements != s->none.min_elements && n > 0 && (size_t)n < sizeof(s->cand_text[0]))
        snprintf(t + n, sizeof(s->cand_text[0]) - (size_t)n, ",min_elements=%ld",
                 spec.min_elements);
    s->ncand++;
    return GCOMP_OK;
}

static int perf_create(const gp_args *a, const gp_env *env, void **state, char *err,
                       size_t errlen)
{
    perf_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    s->gamma = 1.07;
    s->probe = 50;
    s->warmup = 5;
    s->verify = 5;
    s->recheck = 500;
    s->env = *env;
    int rc = gk_spec_parse("none", &s->none, err, errlen);
    bool given = false;
    for (int i = 0; i < a->n && !rc; i++) {
        if (strcmp(a->keys[i], "candidate") == 0) {
            given = true;
            rc = add_candidate(s, a->vals[i], err, errlen);
        } else if (strcmp(a->keys[i], "gamma") == 0) {
            rc = gp_arg_double("perfmodel", "gamma", a->vals[i], 1.0, 2.0, &s->gamma, err,
                               errlen);
        } else if (strcmp(a->keys[i], "probe") == 0) {
            rc = gp_arg_long("perfmodel", "probe", a->vals[i], 1, 1000000, &s->probe, err,
                             errlen);
        } else if (strcmp(a->keys[i], "warmup") == 0) {
            rc = gp_arg_long("perfmodel", "warmup", a->vals[i], 0, 1000000, &s->warmup, err,
                             errlen);
        } else if (strcmp(a->keys[i], "verify") == 0) {
            rc = gp_arg_long("perfmodel", "verify", a->vals[i], 0, GP_PERF_WINDOW, &s->verify,
                             err, errlen);
        } else if (strcmp(a->keys[i], "recheck") == 0) {
            rc = gp_arg_long("perfmodel", "recheck", a->vals[i], 1, 1000000000, &s->recheck,
                             err, errlen);
        }
    }
    if (!rc && !given) {
        rc = add_candidate(s, "powersgd:rank=4", err, errlen);
        if (!rc)
            rc = add_candidate(s, "topk:density=0.01", err, errlen);
    }
    if (rc) {
        free(s);
        return rc;
    }
    *state = s;
    return GCOMP_OK;
}

static void bucket_free(perf_bucket *b)
{
    free(b->name);
    free(b->geom);
    free(b->stats);
}

static void perf_destroy(void *state)
{
    perf_state *s = state;
    if (!s)
        return;
    for (int i = 0; i < s->nbuckets; i++)
        bucket_free(&s->buckets[i]);
    free(s->buckets);
    free(s);
}

static int find_bucket(const perf_state *s, const char *name)
{
    for (int i = 0; i < s->nbuckets; i++)
        if (strcmp(s->buckets[i].name, name) == 0)
            return i;
    return -1;
}

/* The bucket's index, added (dense, no layers yet) when new; -1 when out of memory. Not
   for collect(): it may move every bucket. */
static int bucket_of(perf_state *s, const char *name)
{
    int i = find_bucket(s, name);
    if (i >= 0)
        return i;
    perf_bucket *nb = gk_grow(s->buckets, &s->capbuckets, (size_t)s->nbuckets + 1,
                              sizeof(*nb));
    if (!nb)
        return -1;
    s->buckets = nb;
    perf_bucket *b = &s->buckets[s->nbuckets];
    *b = (perf_bucket){.name = strdup(name), .meas_dense = true};
    if (!b->name)
        return -1;
    snprintf(b->why, sizeof(b->why), "dense during warmup (%ld steps)", s->warmup);
    return s->nbuckets++;
}

/* Whether collect() times the codecs at the bucket's count-th step: the last warmup step,
   then every probe steps. */
static bool is_probe(const perf_state *s, long count)
{
    long first = s->warmup > 0 ? s->warmup - 1 : 0;
    return count >= first && (count - first) % s->probe == 0;
}

/* Run the codec's CPU implementation on a copy of x as the only node, with a fresh
   state, timing encode and decode of every phase: st gets GP_PERF_NSTAT numbers. The
   buffers, and the codec's temporaries, come from exec's arena. */
static int time_codec(const perf_state *s, const gk_spec *spec, const gk_layer *layer,
                      const float *x, int64_t step, double *st, const gk_exec *exec)
{
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c, GK_BACKEND_CPU);
    gk_exec host = gp_exec_host(exec);
    int nph = gk_spec_nphases(spec), rc = GCOMP_OK;
    size_t maxb = 1;
    for (int p = 0; p < nph; p++) {
        size_t m = gk_payload_bytes(spec, layer, p, (uint64_t)step);
        maxb = m > maxb ? m : maxb;
    }
    void *state = NULL;
    float *in = gk_arena_alloc(host.scratch, layer->numel * sizeof(float));
    float *out = gk_arena_alloc(host.scratch, layer->numel * sizeof(float));
    void *buf = gk_arena_alloc(host.scratch, maxb);
    if (!in || !out || !buf)
        return GCOMP_NOMEM;
    memcpy(in, x, layer->numel * sizeof(float));
    if (c->state_new && (rc = c->state_new(spec, layer, &state)))
        return rc;
    for (int p = 0; p < nph && !rc; p++) {
        gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = p, .nodes = 1,
                        .node = 0, .step = (uint64_t)step, .seed = s->env.seed, .exec = &host};
        size_t n = 0;
        double t0 = gk_now_s();
        rc = impl->encode(&call, in, buf, &n);
        double t1 = gk_now_s();
        if (rc)
            break;
        const void *recv = buf;
        rc = impl->decode(&call, in, &recv, &n, 1, out);
        double t2 = gk_now_s();
        st[GP_PERF_ENCODE_MS] += (t1 - t0) * 1e3;
        if (gk_spec_coll(spec, p) == GK_COLL_ALLGATHER) {
            st[GP_PERF_DECODE_AG_MS] += (t2 - t1) * 1e3;
            st[GP_PERF_AG_BYTES] += align8((double)n);
        } else {
            st[GP_PERF_DECODE_AR_MS] += (t2 - t1) * 1e3;
        }
    }
    if (state && c->state_free)
        c->state_free(state);
    return rc;
}

/* ---- predictions ---- */

/* The exchange time of bucket b under option o (0: none) with the given constants;
   INFINITY for a codec not timed yet. cost (may be NULL) gets the details. */
static double exchange_ms(const perf_state *s, const perf_bucket *b, int o, int nodes,
                          double alpha_ms, double bw_bytes_ms, gp_perf_cost *cost)
{
    gp_perf_cost tmp;
    cost = cost ? cost : &tmp;
    if (o > 0 && !b->has_probe) {
        *cost = (gp_perf_cost){.encode_ms = INFINITY, .decode_ms = INFINITY,
                               .encode_decode_ms = INFINITY, .comm_ms = INFINITY};
        return INFINITY;
    }
    const gk_spec *spec = o > 0 ? &s->cand[o - 1] : NULL;
    const double *st = o > 0 ? b->stats + (size_t)(o - 1) * GP_PERF_NSTAT : NULL;
    gp_perf_bucket_cost(b->geom, b->nlayers, spec, st, (size_t)s->ncand * GP_PERF_NSTAT,
                        nodes, alpha_ms, bw_bytes_ms, cost);
    return cost->encode_decode_ms + cost->comm_ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of a window of samples (count taken so far, the last GP_PERF_WINDOW
   kept); -1 when there are none. */
static double median(const double *w, int64_t count)
{
    int n = count < GP_PERF_WINDOW ? (int)count : GP_PERF_WINDOW;
    if (n == 0)
        return -1.0;
    double v[GP_PERF_WINDOW];
    memcpy(v, w, (size_t)n * sizeof(double));
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void sample(double *w, int64_t *count, double v)
{
    w[*count % GP_PERF_WINDOW] = v;
    (*count)++;
}

typedef struct ready_at {
    double ms;
    int bucket;
} ready_at;

static int cmp_ready(const void *a, const void *b)
{
    const ready_at *x = a, *y = b;
    return x->ms != y->ms ? (x->ms > y->ms) - (x->ms < y->ms) : x->bucket - y->bucket;
}

/* The buckets as the model sees an iteration: each one's median ready time (0 before
   it has one), in ready order. NULL when out of memory; the caller frees it. */
static ready_at *ready_order(const perf_state *s)
{
    ready_at *r = malloc((size_t)(s->nbuckets > 0 ? s->nbuckets : 1) * sizeof(*r));
    if (!r)
        return NULL;
    for (int i = 0; i < s->nbuckets; i++)
        r[i] = (ready_at){.ms = fmax(0.0, median(s->buckets[i].ready, s->buckets[i].nready)),
                          .bucket = i};
    qsort(r, (size_t)s->nbuckets, sizeof(*r), cmp_ready);
    return r;
}

/* The model's stages with every bucket i under choice[i] (the configuration the
   buckets last ran: choice NULL), the ready times scaled by f; INFINITY costs for a
   codec not timed yet. */
static void stages(const perf_state *s, const ready_at *order, const int *choice, int nodes,
                   double alpha_ms, double bw_bytes_ms, double f, gp_perf_stage *st)
{
    for (int k = 0; k < s->nbuckets; k++) {
        int i = order[k].bucket;
        const perf_bucket *b = &s->buckets[i];
        int o = choice ? choice[i] : b->meas_dense ? 0 : b->choice;
        gp_perf_cost c;
        exchange_ms(s, b, o, nodes, alpha_ms, bw_bytes_ms, &c);
        st[k] = (gp_perf_stage){.ready_ms = order[k].ms * f, .encode_ms = c.encode_ms,
                                .comm_ms = c.comm_ms, .decode_ms = c.decode_ms};
    }
}

/*
 * The iteration time with every bucket i under choice[i]: the timeline model
 * (gp_perf_timeline_ms) on the measured ready times and gap. The backward pass runs up
 * to gamma times slower beside communication (the paper's gamma): the ready times were
 * measured with the network busy for a fraction phi_m of the backward pass (the
 * configuration the buckets last ran, on the measured network), so under choice[], busy
 * for phi, they scale by (1 + (gamma - 1) phi) / (1 + (gamma - 1) phi_m). INFINITY for a
 * codec not timed yet, or when out of memory.
 */
static double job_step_ms(const perf_state *s, const ready_at *order, const int *choice,
                          int nodes, double alpha_ms, double bw_bytes_ms)
{
    int n = s->nbuckets;
    gp_perf_stage *st = malloc((size_t)(n > 0 ? n : 1) * sizeof(*st));
    if (!st)
        return INFINITY;
    double gap = fmax(0.0, median(s->gap, s->ngap)), back = n > 0 ? order[n - 1].ms : 0;
    double busy_m = 0, busy = 0, f = 1.0;
    stages(s, order, NULL, s->env.nodes, s->env.alpha_ms, s->env.bw_bytes_ms, 1.0, st);
    gp_perf_timeline_ms(st, n, gap, &busy_m);
    stages(s, order, choice, nodes, alpha_ms, bw_bytes_ms, 1.0, st);
    gp_perf_timeline_ms(st, n, gap, &busy);
    if (back > 0)
        f = (1.0 + (s->gamma - 1.0) * busy / back) / (1.0 + (s->gamma - 1.0) * busy_m / back);
    stages(s, order, choice, nodes, alpha_ms, bw_bytes_ms, f, st);
    double t = gp_perf_timeline_ms(st, n, gap, NULL);
    free(st);
    return t;
}

/* Every option of bucket bi with the others under choice[]: t[0..ncand]. */
static void predict_options(const perf_state *s, const ready_at *order, int *choice, int bi,
                            int nodes, double alpha_ms, double bw_bytes_ms, double *t)
{
    int keep = choice[bi];
    for (int o = 0; o <= s->ncand; o++) {
        choice[bi] = o;
        t[o] = job_step_ms(s, order, choice, nodes, alpha_ms, bw_bytes_ms);
    }
    choice[bi] = keep;
}

static int argmin(const double *t, int n)
{
    int best = 0;
    for (int o = 1; o < n; o++)
        if (t[o] < t[best])
            best = o;
    return best;
}

/* ---- the vtable ---- */

static int perf_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out,
                       char *why, size_t whylen)
{
    (void)step;
    perf_state *s = state;
    /* The bucket collect() reads (first seen here: the same order on every node). */
    int i = bucket_of(s, layer->bucket);
    if (i < 0)
        return GCOMP_NOMEM;
    const perf_bucket *b = &s->buckets[i];
    *out = b->choice ? s->cand[b->choice - 1] : s->none;
    snprintf(why, whylen, "%s", b->why);
    return GCOMP_OK;
}

static int perf_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                        const float *x, double *stats, const gk_exec *exec)
{
    (void)g;
    const perf_state *s = state;
    for (int k = 0; k < GP_PERF_NSTATS; k++)
        stats[k] = 0.0;
    int bi = find_bucket(s, layer->bucket);
    if (bi < 0)
        return GCOMP_INVALID; /* decide() has not seen the bucket */
    if (!is_probe(s, s->buckets[bi].count))
        return GCOMP_OK;
    /* Each candidate's buffers go back to the arena before the next one's. */
    gk_arena_mark mark = gk_arena_mark_get(exec->scratch);
    for (int c = 0; c < s->ncand; c++) {
        if (!gk_spec_compresses(&s->cand[c], &layer->geom))
            continue;
        int rc = time_codec(s, &s->cand[c], &layer->geom, x, step, stats + c * GP_PERF_NSTAT,
                            exec);
        gk_arena_release(exec->scratch, mark);
        if (rc)
            return rc;
    }
    return GCOMP_OK;
}

/* Make the bucket's layer list match the step's; a changed list forgets the timings. */
static int sync_layers(perf_state *s, perf_bucket *b, const gp_step_info *info)
{
    bool same = b->nlayers == info->nlayers;
    for (int l = 0; same && l < info->nlayers; l++) {
        const gk_layer *a = &b->geom[l], *c = &info->layers[l].geom;
        same = a->ndim == c->ndim && a->rows == c->rows && a->cols == c->cols &&
               a->numel == c->numel;
    }
    if (same)
        return GCOMP_OK;
    size_t n = info->nlayers > 0 ? (size_t)info->nlayers : 1;
    gk_layer *geom = calloc(n, sizeof(*geom));
    double *stats = calloc(n * (size_t)(s->ncand ? s->ncand : 1) * GP_PERF_NSTAT, sizeof(double));
    if (!geom || !stats) {
        free(geom);
        free(stats);
        return GCOMP_NOMEM;
    }
    for (int l = 0; l < info->nlayers; l++)
        geom[l] = info->layers[l].geom;
    free(b->geom);
    free(b->stats);
    b->geom = geom;
    b->stats = stats;
    if (b->nlayers > 0 && b->choice > 0) {
        b->choice = 0;
        snprintf(b->why, sizeof(b->why), "layers changed: dense until the codecs are timed again");
    }
    b->nlayers = info->nlayers;
    b->has_probe = false;
    return GCOMP_OK;
}

/* Predict every option of bucket bi and switch to the fastest if it pays. */
static int decide_bucket(perf_state *s, int bi)
{
    perf_bucket *b = &s->buckets[bi];
    if (b->count < s->warmup) {
        snprintf(b->why, sizeof(b->why), "dense during warmup (%ld steps)", s->warmup);
        return GCOMP_OK;
    }
    if (s->env.nodes < 2) {
        b->choice = 0;
        snprintf(b->why, sizeof(b->why), "one node: nothing is exchanged, compression never pays");
        return GCOMP_OK;
    }
    if (!b->has_probe || b->nready == 0 || s->ngap == 0)
        return GCOMP_OK; /* not timed, or the trainers' timeline not known yet */
    if (s->iters < s->hold_until)
        return GCOMP_OK; /* dense after a failed measured check (b->why says so) */
    int *choice = calloc((size_t)s->nbuckets, sizeof(int));
    ready_at *order = ready_order(s);
    if (!choice || !order) {
        free(choice);
        free(order);
        return GCOMP_NOMEM;
    }
    for (int i = 0; i < s->nbuckets; i++)
        choice[i] = s->buckets[i].choice;
    double t[GP_PERF_MAX_CANDIDATES + 1];
    predict_options(s, order, choice, bi, s->env.nodes, s->env.alpha_ms, s->env.bw_bytes_ms, t);
    free(choice);
    free(order);
    int best = argmin(t, s->ncand + 1);
    if (best != b->choice && t[best] < t[b->choice] * (1.0 - GP_PERF_HYSTERESIS)) {
        if (best > 0) {
            snprintf(b->why, sizeof(b->why),
                     "predicted %.1f ms (none %.1f ms), measured last step %.1f ms", t[best],
                     t[0], b->step_ms);
        } else {
            int c = argmin(t + 1, s->ncand) + 1;
            snprintf(b->why, sizeof(b->why),
                     "predicted %.1f ms (best codec %s %.1f ms), measured last step %.1f ms",
                     t[0], s->cand_text[c - 1], t[c], b->step_ms);
        }
        b->choice = best;
        s->ncomp = 0; /* another configuration */
        s->settle = GP_PERF_SETTLE;
    }
    b->predicted = t[b->choice];
    return GCOMP_OK;
}

/* The measured check (header), once per iteration with its time (step_ms: from the
   previous step's first submission to this one's, so the previous step's exchange); not
   sampled after a step that timed the codecs (probed): collect()'s timings slowed it. */
static void check_measured(perf_state *s, double iter_ms, bool probed)
{
    s->iters++;
    if (s->settle > 0) {
        s->settle--;
        return;
    }
    if (!(iter_ms > 0) || probed)
        return;
    bool dense = true;
    for (int i = 0; i < s->nbuckets; i++)
        dense = dense && s->buckets[i].meas_dense;
    if (dense) {
        sample(s->dense, &s->ndense, iter_ms);
        return;
    }
    sample(s->comp, &s->ncomp, iter_ms);
    if (s->verify == 0 || s->ncomp < s->verify || s->ndense == 0)
        return;
    double comp = median(s->comp, s->ncomp), base = s->dense[0];
    for (int64_t k = 1; k < s->ndense && k < GP_PERF_WINDOW; k++)
        base = fmin(base, s->dense[k]);
    if (comp <= base * (1.0 + GP_PERF_HYSTERESIS))
        return;
    double predicted = 0;
    for (int i = 0; i < s->nbuckets; i++)
        predicted = fmax(predicted, s->buckets[i].predicted);
    for (int i = 0; i < s->nbuckets; i++) {
        perf_bucket *b = &s->buckets[i];
        b->choice = 0;
        b->predicted = 0;
        snprintf(b->why, sizeof(b->why), "measured %.1f ms per iteration compressed against "
                 "%.1f ms dense (model: %.1f ms): dense for %ld iterations", comp, base,
                 predicted, s->recheck);
    }
    s->hold_until = s->iters + s->recheck;
    s->ncomp = 0;
    s->settle = GP_PERF_SETTLE;
}

static int perf_observe(void *state, const gp_step_info *info)
{
    perf_state *s = state;
    int bi = bucket_of(s, info->bucket);
    if (bi < 0)
        return GCOMP_NOMEM;
    perf_bucket *b = &s->buckets[bi];
    int rc = sync_layers(s, b, info);
    if (rc)
        return rc;
    if (is_probe(s, b->count) && info->stats) {
        for (int l = 0; l < b->nlayers; l++)
            memcpy(b->stats + (size_t)l * s->ncand * GP_PERF_NSTAT,
                   info->stats + (size_t)l * GP_PERF_NSTATS,
                   (size_t)s->ncand * GP_PERF_NSTAT * sizeof(double));
        b->has_probe = true;
    }
    b->step_ms = info->step_ms;
    b->exchange_ms = info->exchange_ms;
    b->meas_dense = true;
    for (int l = 0; l < info->nlayers; l++)
        if (info->compressed && info->compressed[l])
            b->meas_dense = false;
    if (info->ready_ms >= 0)
        sample(b->ready, &b->nready, info->ready_ms);
    if (bi == s->nbuckets - 1) { /* once per iteration */
        if (info->gap_ms >= 0)
            sample(s->gap, &s->ngap, info->gap_ms);
        check_measured(s, info->step_ms, b->count > 0 && is_probe(s, b->count - 1));
    }
    b->count++;
    return decide_bucket(s, bi);
}

/* ---- save and load ---- */

static int perf_save(void *state, gk_writer *w)
{
    const perf_state *s = state;
    gk_put_tag(w, GP_PERF_TAG, GP_PERF_VERSION);
    gk_put(w, (int64_t)s->ncand);
    for (int c = 0; c < s->ncand; c++)
        gk_put_str(w, s->cand_text[c]);
    gk_put(w, s->gamma);
    gk_put(w, (int64_t)s->verify);
    gk_put(w, (int64_t)s->recheck);
    gk_put(w, s->ngap);
    for (int k = 0; k < GP_PERF_WINDOW; k++)
        gk_put(w, s->gap[k]);
    gk_put(w, s->iters);
    gk_put(w, s->ndense);
    gk_put(w, s->ncomp);
    for (int k = 0; k < GP_PERF_WINDOW; k++) {
        gk_put(w, s->dense[k]);
        gk_put(w, s->comp[k]);
    }
    gk_put(w, s->settle);
    gk_put(w, s->hold_until);
    gk_put(w, (uint64_t)s->nbuckets);
    for (int i = 0; i < s->nbuckets; i++) {
        const perf_bucket *b = &s->buckets[i];
        gk_put_str(w, b->name);
        gk_put_str(w, b->why);
        gk_put(w, b->count);
        gk_put(w, (uint32_t)b->choice);
        gk_put(w, (uint8_t)b->has_probe);
        gk_put(w, (uint8_t)b->meas_dense);
        gk_put(w, b->step_ms);
        gk_put(w, b->exchange_ms);
        gk_put(w, b->predicted);
        gk_put(w, b->nready);
        for (int k = 0; k < GP_PERF_WINDOW; k++)
            gk_put(w, b->ready[k]);
        gk_put(w, (uint32_t)b->nlayers);
        for (int l = 0; l < b->nlayers; l++) {
            const gk_layer *g = &b->geom[l];
            gk_put(w, g->id);
            gk_put(w, (uint32_t)g->ndim);
            gk_put(w, (uint64_t)g->rows);
            gk_put(w, (uint64_t)g->cols);
            gk_put(w, (uint64_t)g->numel);
        }
        size_t ns = (size_t)b->nlayers * (size_t)s->ncand * GP_PERF_NSTAT;
        for (size_t k = 0; k < ns; k++)
            gk_put(w, b->stats[k]);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

/* Read a layer's id and shape: 1..GCOMP_MAX_DIMS dimensions, rows x cols = numel. */
static bool load_layer(gk_reader *r, gk_layer *g)
{
    uint32_t ndim;
    uint64_t rows, cols, numel;
    if (!(gk_get(r, &g->id) && gk_get(r, &ndim) && gk_get(r, &rows) && gk_get(r, &cols) &&
          gk_get(r, &numel)))
        return false;
    if (ndim < 1 || ndim > GCOMP_MAX_DIMS || rows < 1 || cols < 1 || numel / rows != cols ||
        numel % rows != 0 || numel > SIZE_MAX / sizeof(float))
        return gk_reader_fail(r, "perfmodel checkpoint: layer %#llx of %u dimensions, %llu x "
                              "%llu = %llu elements", (unsigned long long)g->id, ndim,
                              (unsigned long long)rows, (unsigned long long)cols,
                              (unsigned long long)numel);
    g->ndim = (int)ndim;
    g->rows = (size_t)rows;
    g->cols = (size_t)cols;
    g->numel = (size_t)numel;
    return true;
}

/* Read one bucket record into b (zeroed; freed by the caller on failure). */
static bool load_bucket(const perf_state *s, gk_reader *r, perf_bucket *b)
{
    char name[GCOMP_MAX_NAME + 1];
    uint32_t choice, nl;
    uint8_t has_probe, meas_dense;
    if (!(gk_get_str(r, name, sizeof(name)) && gk_get_str(r, b->why, sizeof(b->why)) &&
          gk_get(r, &b->count) && gk_get(r, &choice) && gk_get(r, &has_probe) &&
          gk_get(r, &meas_dense) && gk_get(r, &b->step_ms) && gk_get(r, &b->exchange_ms) &&
          gk_get(r, &b->predicted) && gk_get(r, &b->nready)))
        return false;
    for (int k = 0; k < GP_PERF_WINDOW; k++)
        if (!gk_get(r, &b->ready[k]))
            return false;
    if (!gk_get(r, &nl))
        return false;
    if (b->nready < 0)
        return gk_reader_fail(r, "perfmodel checkpoint: bucket '%s' with %lld ready-time samples",
                              name, (long long)b->nready);
    if (b->count < 0 || choice > (uint32_t)s->ncand || nl > GCOMP_MAX_LAYERS)
        return gk_reader_fail(r, "perfmodel checkpoint: bucket '%s' with %lld steps, choice %u "
                              "of %d candidates, %u layers (at most %d)", name,
                              (long long)b->count, choice, s->ncand, nl, GCOMP_MAX_LAYERS);
    b->choice = (int)choice;
    b->has_probe = has_probe != 0;
    b->meas_dense = meas_dense != 0;
    b->nlayers = (int)nl;
    size_t n = nl > 0 ? nl : 1, ns = (size_t)nl * (size_t)s->ncand * GP_PERF_NSTAT;
    b->name = strdup(name);
    b->geom = calloc(n, sizeof(*b->geom));
    b->stats = calloc(ns ? ns : 1, sizeof(double));
    if (!b->name || !b->geom || !b->stats)
        return gk_reader_fail(r, "out of memory");
    for (uint32_t l = 0; l < nl; l++)
        if (!load_layer(r, &b->geom[l]))
            return false;
    for (size_t k = 0; k < ns; k++)
        if (!gk_get(r, &b->stats[k]))
            return false;
    return true;
}

static int perf_load(void *state, gk_reader *r)
{
    perf_state *s = state;
    int64_t ngap, iters, ndense, ncomp, settle, hold_until;
    double gap[GP_PERF_WINDOW], dense[GP_PERF_WINDOW], comp[GP_PERF_WINDOW];
    uint64_t nb = 0;
    bool ok = gk_get_tag(r, GP_PERF_TAG, GP_PERF_VERSION, NULL) &&
              gp_ckpt_arg_i64(r, "perfmodel", "candidates", s->ncand);
    for (int c = 0; c < s->ncand && ok; c++)
        ok = gp_ckpt_arg_str(r, "perfmodel", "candidate", s->cand_text[c]);
    ok = ok && gp_ckpt_arg_f64(r, "perfmodel", "gamma", s->gamma) &&
         gp_ckpt_arg_i64(r, "perfmodel", "verify", s->verify) &&
         gp_ckpt_arg_i64(r, "perfmodel", "recheck", s->recheck) && gk_get(r, &ngap);
    for (int k = 0; k < GP_PERF_WINDOW && ok; k++)
        ok = gk_get(r, &gap[k]);
    ok = ok && gk_get(r, &iters) && gk_get(r, &ndense) && gk_get(r, &ncomp);
    for (int k = 0; k < GP_PERF_WINDOW && ok; k++)
        ok = gk_get(r, &dense[k]) && gk_get(r, &comp[k]);
    ok = ok && gk_get(r, &settle) && gk_get(r, &hold_until);
    if (ok && (ngap < 0 || iters < 0 || ndense < 0 || ncomp < 0 || settle < 0 ||
               hold_until < 0))
        ok = gk_reader_fail(r, "perfmodel checkpoint: negative counts (%lld gap samples, "
                            "%lld iterations, %lld and %lld iteration samples, settle %lld, "
                            "hold until %lld)", (long long)ngap, (long long)iters,
                            (long long)ndense, (long long)ncomp, (long long)settle,
                            (long long)hold_until);
    ok = ok && gp_ckpt_count(r, "buckets", INT32_MAX / 2, &nb);
    /* The buckets are read one by one, so a count larger than the data fails as
       truncated before it is allocated. */
    perf_bucket *bs = NULL;
    int got = 0;
    size_t cap = 0;
    for (; ok && (uint64_t)got < nb; got++) {
        perf_bucket *nbs = gk_grow(bs, &cap, (size_t)got + 1, sizeof(*nbs));
        if (!nbs) {
            ok = gk_reader_fail(r, "out of memory");
            break;
        }
        bs = nbs;
        bs[got] = (perf_bucket){0};
        ok = load_bucket(s, r, &bs[got]);
        for (int i = 0; ok && i < got; i++)
            if (strcmp(bs[i].name, bs[got].name) == 0)
                ok = gk_reader_fail(r, "perfmodel checkpoint: bucket '%s' twice", bs[i].name);
    }
    if (!ok) {
        for (int i = 0; i < got; i++)
            bucket_free(&bs[i]);
        free(bs);
        return gp_ckpt_status(r);
    }
    /* Everything read: replace the state. */
    for (int i = 0; i < s->nbuckets; i++)
        bucket_free(&s->buckets[i]);
    free(s->buckets);
    s->buckets = bs;
    s->nbuckets = got;
    s->capbuckets = cap;
    s->ngap = ngap;
    memcpy(s->gap, gap, sizeof(gap));
    s->iters = iters;
    s->ndense = ndense;
    s->ncomp = ncomp;
    memcpy(s->dense, dense, sizeof(dense));
    memcpy(s->comp, comp, sizeof(comp));
    s->settle = settle;
    s->hold_until = hold_until;
    return GCOMP_OK;
}

/* ---- whatif ---- */

typedef struct outbuf {
    char *p;
    size_t len, n;
    bool full;
} outbuf;

static void put(outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(outbuf *o, const char *fmt, ...)
{
    if (o->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(o->p + o->n, o->len - o->n, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= o->len - o->n) {
        o->full = true;
        o->p[o->n] = '\0';
        return;
    }
    o->n += (size_t)w;
}

/* A JSON string literal of text (base/json.h's escaping). */
static void put_json_str(outbuf *o, const char *text)
{
    char q[2 * GCOMP_MAX_NAME + 8];
    gk_json_str(q, sizeof(q), text);
    put(o, "%s", q);
}

static const char whatif_usage[] = "whatif --nodes P --bandwidth B [--latency-us L] "
                                   "(B with a unit: 10gbit, 25gbps, 1.25GB/s, 100mbit...)";

static int whatif_args(int argc, const char *const *argv, int *nodes, double *bw,
                       double *alpha_ms, char *out, size_t len)
{
    static const char *const opts[] = {"--nodes", "--bandwidth", "--latency-us"};
    bool seen[3] = {false, false, false};
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int o = 0;
        while (o < 3 && strcmp(k, opts[o]) != 0)
            o++;
        if (o == 3) {
            snprintf(out, len, "whatif: unknown option '%s'; usage: %s", k, whatif_usage);
            return GCOMP_INVALID;
        }
        if (seen[o]) {
            snprintf(out, len, "whatif: %s given twice; usage: %s", k, whatif_usage);
            return GCOMP_INVALID;
        }
        seen[o] = true;
        if (!v) {
            snprintf(out, len, "whatif: %s needs a value; usage: %s", k, whatif_usage);
            return GCOMP_INVALID;
        }
        char *end;
        errno = 0;
        if (o == 0) {
            long p = strtol(v, &end, 10);
            if (errno || end == v || *end || p < 1 || p > 1000000) {
                snprintf(out, len, "whatif: --nodes must be an integer in 1..1000000, not '%s'", v);
                return GCOMP_INVALID;
            }
            *nodes = (int)p;
        } else if (o == 1) {
            if (gp_perf_parse_bandwidth(v, bw)) {
                int n = snprintf(out, len, "whatif: --bandwidth must be a positive number with "
                                 "a unit (");
                if (n >= 0 && (size_t)n < len)
                    n += (int)gp_perf_bandwidth_units(out + n, len - (size_t)n);
                if (n >= 0 && (size_t)n < len)
                    snprintf(out + n, len - (size_t)n, "), e.g. 10gbit or 1.25GB/s, not '%s'",
                             v);
                return GCOMP_INVALID;
            }
        } else {
            double us = strtod(v, &end);
            if (errno || end == v || *end || !isfinite(us) || us < 0 || us > 1e9) {
                snprintf(out, len, "whatif: --latency-us must be a number of microseconds "
                                   "in 0..1e9, not '%s'", v);
                return GCOMP_INVALID;
            }
            *alpha_ms = us * 1e-3;
        }
    }
    if (!seen[0] || !seen[1]) {
        snprintf(out, len, "whatif: %s missing; usage: %s", seen[0] ? "--bandwidth" : "--nodes",
                 whatif_usage);
        return GCOMP_INVALID;
    }
    return GCOMP_OK;
}

static int perf_query(void *state, int argc, const char *const *argv, int json, char *out,
                      size_t len)
{
    const perf_state *s = state;
    if (argc < 1 || strcmp(argv[0], "whatif") != 0) {
        snprintf(out, len, "perfmodel answers '%s', not '%s'", whatif_usage,
                 argc ? argv[0] : "");
        return GCOMP_INVALID;
    }
    int nodes = 0;
    double bw = 0, alpha = s->env.alpha_ms;
    int rc = whatif_args(argc, argv, &nodes, &bw, &alpha, out, len);
    if (rc)
        return rc;
    if (s->ngap == 0 || s->nbuckets == 0) {
        snprintf(out, len, "whatif: nothing measured yet: perfmodel needs a few steps of every "
                           "bucket (warmup %ld) to know the trainers' timeline", s->warmup);
        return GCOMP_NOT_FOUND;
    }
    /* The best configuration on that cluster: per bucket, with the others as they are,
       until nothing changes. */
    int *choice = calloc((size_t)s->nbuckets, sizeof(int));
    int *none = calloc((size_t)s->nbuckets, sizeof(int));
    ready_at *order = ready_order(s);
    if (!choice || !none || !order) {
        free(choice);
        free(none);
        free(order);
        return GCOMP_NOMEM;
    }
    double backward = s->nbuckets ? order[s->nbuckets - 1].ms : 0, gap = median(s->gap, s->ngap);
    double t[GP_PERF_MAX_CANDIDATES + 1];
    for (int pass = 0, changed = 1; pass < GP_PERF_PASSES && changed; pass++) {
        changed = 0;
        for (int i = 0; i < s->nbuckets; i++) {
            predict_options(s, order, choice, i, nodes, alpha, bw, t);
            int best = argmin(t, s->ncand + 1);
            if (best != choice[i] && t[best] < t[choice[i]]) {
                choice[i] = best;
                changed = 1;
            }
        }
    }
    int width = 4; /* "none" */
    for (int c = 0; c < s->ncand; c++)
        if ((int)strlen(s->cand_text[c]) > width)
            width = (int)strlen(s->cand_text[c]);
    double total = job_step_ms(s, order, choice, nodes, alpha, bw);
    double dense = job_step_ms(s, order, none, nodes, alpha, bw);
    outbuf o = {.p = out, .len = len};
    out[0] = '\0';
    if (json) {
        put(&o, "{\"nodes\":%d,\"bandwidth_bytes_s\":%.10g,\"latency_us\":%.10g,\"gamma\":%.10g,"
                "\"compute_ms\":%.10g,\"backward_ms\":%.10g,\"gap_ms\":%.10g,"
                "\"measured\":{\"nodes\":%d,\"bandwidth_bytes_s\":%.10g,"
                "\"latency_us\":%.10g},\"buckets\":[",
            nodes, bw * 1e3, alpha * 1e3, s->gamma, backward + gap, backward, gap, s->env.nodes,
            s->env.bw_bytes_ms * 1e3, s->env.alpha_ms * 1e3);
    } else {
        put(&o, "whatif: %d nodes, bandwidth %.4g Gbit/s, latency %.4g us, gamma %.3g\n", nodes,
            bw * 8e3 * 1e-9, alpha * 1e3, s->gamma);
        put(&o, "measured: backward %.2f ms to the last bucket, forward and optimizer "
                "%.2f ms; network on %d nodes: %.4g Gbit/s, latency %.4g us\n",
            backward, gap, s->env.nodes, s->env.bw_bytes_ms * 8e3 * 1e-9, s->env.alpha_ms * 1e3);
    }
    for (int i = 0; i < s->nbuckets; i++) {
        const perf_bucket *b = &s->buckets[i];
        predict_options(s, order, choice, i, nodes, alpha, bw, t);
        double dense_bytes = 0;
        for (int l = 0; l < b->nlayers; l++)
            dense_bytes += (double)b->geom[l].numel * sizeof(float);
        const char *best = choice[i] ? s->cand_text[choice[i] - 1] : "none";
        if (json) {
            put(&o, "%s{\"bucket\":", i ? "," : "");
            put_json_str(&o, b->name);
            put(&o, ",\"best\":");
            put_json_str(&o, best);
            put(&o, ",\"layers\":%d,\"dense_bytes\":%.0f,\"timed\":%s,"
                    "\"measured_step_ms\":%.10g,\"predicted_step_ms\":%.10g,\"candidates\":[",
                b->nlayers, dense_bytes, b->has_probe ? "true" : "false", b->step_ms,
                b->predicted);
        } else {
            put(&o, "bucket '%s' (%d layers, %.2f MiB dense%s): last step measured %.2f ms, "
                    "predicted %.2f ms here\n",
                b->name, b->nlayers, dense_bytes / 1048576.0,
                b->has_probe ? "" : ", codecs not timed yet", b->step_ms, b->predicted);
        }
        for (int c = 0; c <= s->ncand; c++) {
            if (c > 0 && !b->has_probe)
                continue;
            gp_perf_cost cost;
            exchange_ms(s, b, c, nodes, alpha, bw, &cost);
            const char *name = c ? s->cand_text[c - 1] : "none";
            if (json) {
                put(&o, "%s{\"codec\":", c ? "," : "");
                put_json_str(&o, name);
                put(&o, ",\"step_ms\":%.10g,\"encode_decode_ms\":%.10g,\"comm_ms\":%.10g,"
                        "\"sent_bytes\":%.0f,\"compressed_layers\":%d}",
                    t[c], cost.encode_decode_ms, cost.comm_ms, cost.sent_bytes,
                    cost.ncompressed);
            } else {
                put(&o, "  %-*s %10.2f ms  (encode+decode %.2f ms, exchange %.2f ms, "
                        "%.3f MiB sent)%s\n",
                    width, name, t[c], cost.encode_decode_ms, cost.comm_ms,
                    cost.sent_bytes / 1048576.0, c == choice[i] ? "  <- best" : "");
            }
        }
        if (json)
            put(&o, "]}");
    }
    if (json)
        put(&o, "],\"total_ms\":%.10g,\"none_ms\":%.10g,\"speedup\":%.10g}\n", total, dense,
            total > 0 ? dense / total : 1.0);
    else
        put(&o, "model total: %.2f ms per step with the best codec per bucket, %.2f ms all "
                "none (%.2fx)\n",
            total, dense, total > 0 ? dense / total : 1.0);
    free(choice);
    free(none);
    free(order);
    if (o.full) {
        snprintf(out, len, "whatif: the answer does not fit in %zu bytes", len);
        return GCOMP_LIMIT;
    }
    return GCOMP_OK;
}

const gp_policy gp_policy_perfmodel = {
    .name = "perfmodel",
    .summary = "per bucket, the codec (or none) with the shortest step predicted by the "
               "performance model of 'On the utility of gradient compression'",
    .keys = perf_keys,
    .spec_keys = perf_spec_keys,
    .multi_keys = perf_multi_keys,
    .keys_help = "candidate=SPEC (repeatable; default powersgd:rank=4 and topk:density=0.01, none always); gamma (1.07); probe (50 steps); warmup (5 steps)",
    .nstats = GP_PERF_NSTATS,
    .collect_concurrent = true,
    .uses_network = true,
    .create = perf_create,
    .destroy = perf_destroy,
    .decide = perf_decide,
    .collect = perf_collect,
    .observe = perf_observe,
    .save = perf_save,
    .load = perf_load,
    .query = perf_query,
};
