/*
 * perfmodel: compress a bucket only where the performance model of algorithms.md 3.6
 * ("On the utility of gradient compression") predicts a shorter step.
 *
 *   perfmodel[:candidate=SPEC,...][,gamma=1.07][,probe=50][,warmup=5]
 *
 * candidate is repeatable and spec-valued ("perfmodel:candidate=powersgd:rank=4,
 * candidate=topk:density=0.01"); without any, powersgd:rank=4 and topk:density=0.01.
 * none is always a candidate. gamma is the slowdown of the backward pass while dense
 * communication overlaps it; probe the steps between codec timings; warmup the steps
 * every bucket runs dense before its first decision.
 *
 * The constants of the model:
 *  - alpha and BW: gp_env, measured by the engine on the real transport before this policy is made (uses_network)
 *    (0 on one node: nothing is exchanged, so compression never pays);
 *  - encode and decode times and allgather sizes: collect() runs every candidate on
 *    every layer's x (encode and decode timed per phase) every `probe` steps of the
 *    bucket, starting with the last warmup step; the engine averages them over nodes;
 *  - allreduce sizes: the codec's max_bytes (exact for allreduce phases);
 *  - T_comp, the compute time of an iteration: the model inverted on each measured round
 *    of buckets. With one bucket it is step_ms - exchange_ms, the training iteration
 *    minus the exchange. This is an approximation: step_ms is the time between two
 *    ready steps of the bucket, so it also holds the negotiation's wait and the trainers'
 *    time to read the result, which count as compute. Rounds in which a bucket probed the
 *    codecs, and the round after (whose step_ms holds the probe), are left out; T_comp is
 *    the median of the last GP_PERF_WINDOW rounds. With several buckets the inversion
 *    assumes the dense exchanges but the last one's overlap the backward pass; where the
 *    trainers submit every bucket at the end instead, those exchanges count as compute,
 *    which makes compression look worse than it is (the safe side).
 *
 * The model, with the buckets in the order the engine first ran them (the last one's
 * exchange cannot overlap the backward pass):
 *   step = max(g T_comp, sum of the dense buckets' exchanges but the last's)
 *          + the last bucket's exchange if dense
 *          + sum over compressed buckets of (encode + decode + their collectives)
 * with g = gamma when some dense exchange overlaps, else 1. A dense exchange is one
 * ring allreduce, 2 alpha (p-1) + 2 b (p-1) / (p BW); a compressed bucket pays its
 * still-dense layers' allreduce and one collective per phase, allreduce or allgather
 * (alpha (p-1) + b (p-1) / BW), and allgather decodes take p times their one-node time.
 * With one bucket that is the paper's syncSGD max(gamma T_comp, 0) + T_comm(b) with gamma
 * 1 (nothing overlaps) and its compressed T_comp + T_encode_decode + T_comm(b').
 *
 * Decisions: when a bucket is observed (after warmup, with timings and T_comp), every
 * option for it is predicted with the other buckets as they are, and the fastest taken
 * (none on ties) if it beats the current one by more than GP_PERF_HYSTERESIS; it applies
 * from the next decide(). The reason logged reads "predicted 12.3 ms (none 20.1 ms),
 * measured last step 13.0 ms". Everything decided comes from the averaged statistics and
 * env, identical on every node. Query: "whatif --nodes P --bandwidth B [--latency-us L]".
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gcomp.h"
#include "perfmodel.h"
#include "policy.h"

/* Rounds whose T_comp the median is taken over. */
#define GP_PERF_WINDOW 16
/* A switch must predict a step this much shorter than the current choice's: more than
   the model's median error (1.8% in the paper), so that noise does not flip a bucket
   between a lossy codec and none. */
#define GP_PERF_HYSTERESIS 0.05
/* Passes of the per-bucket search whatif makes for its best configuration. */
#define GP_PERF_PASSES 8

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

double gp_perf_predict_step_ms(double t_comp_ms, double gamma, double overlapped_ms,
                               double serial_ms)
{
    double g = overlapped_ms > 0 ? gamma : 1.0;
    return fmax(g * t_comp_ms, overlapped_ms) + serial_ms;
}

double gp_perf_compute_ms(double step_ms, double gamma, double overlapped_ms,
                          double serial_ms)
{
    double g = overlapped_ms > 0 ? gamma : 1.0;
    return fmax(0.0, (step_ms - serial_ms) / g);
}

bool gp_perf_compresses(const gk_spec *spec, const gk_layer *layer)
{
    const gk_codec *c = spec->codec;
    return layer->ndim >= 2 && (long)layer->numel >= spec->min_elements &&
           (!c->compresses || c->compresses(spec, layer));
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
    const gk_codec *c = spec ? spec->codec : NULL;
    int nph = c && c->nphases ? c->nphases(spec) : 1;
    if (nph > 16)
        nph = 16;
    for (int l = 0; l < nlayers; l++) {
        const gk_layer *g = &layers[l];
        if (!c || !gp_perf_compresses(spec, g)) {
            dense += (double)g->numel * sizeof(float);
            continue;
        }
        out->ncompressed++;
        const double *st = stats ? stats + (size_t)l * stride : NULL;
        for (int p = 0; p < nph; p++) {
            gk_coll coll = c->phase_coll ? c->phase_coll(spec, p) : GK_COLL_ALLREDUCE_F32;
            if (coll == GK_COLL_ALLGATHER) {
                any_ag = true;
                if (!st)
                    ag_bytes += align8((double)c->max_bytes(spec, g, p));
            } else {
                ar_bytes[p] += (double)c->max_bytes(spec, g, p);
            }
        }
        if (st) {
            ag_bytes += st[GP_PERF_AG_BYTES];
            out->encode_decode_ms += st[GP_PERF_ENCODE_MS] + st[GP_PERF_DECODE_AR_MS] +
                                     st[GP_PERF_DECODE_AG_MS] * (nodes > 1 ? nodes : 1);
        }
    }
    out->comm_ms = gp_perf_predict_allreduce_ms(dense, nodes, alpha_ms, bw_bytes_ms);
    out->sent_bytes = dense + ag_bytes;
    if (out->ncompressed > 0) {
        int n_ag = 0;
        for (int p = 0; p < nph; p++) {
            gk_coll coll = c->phase_coll ? c->phase_coll(spec, p) : GK_COLL_ALLREDUCE_F32;
            if (coll == GK_COLL_ALLGATHER) {
                n_ag++;
            } else {
                out->comm_ms += gp_perf_predict_allreduce_ms(ar_bytes[p], nodes, alpha_ms,
                                                             bw_bytes_ms);
                out->sent_bytes += ar_bytes[p];
            }
        }
        /* One allgather per phase: the latency per phase, the bytes summed over them. */
        if (any_ag && nodes > 1)
            out->comm_ms += n_ag * alpha_ms * (nodes - 1) +
                            gp_perf_predict_allgather_ms(ag_bytes, nodes, 0.0, bw_bytes_ms);
    }
}

int gp_perf_parse_bandwidth(const char *text, double *bytes_ms)
{
    static const struct {
        const char *unit;
        double bits;
    } units[] = {{"kbit", 1e3}, {"kbps", 1e3}, {"mbit", 1e6}, {"mbps", 1e6},
                 {"gbit", 1e9}, {"gbps", 1e9}, {"tbit", 1e12}, {"tbps", 1e12}};
    if (!text)
        return GCOMP_INVALID;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !isfinite(v) || v <= 0 || isspace((unsigned char)*text))
        return GCOMP_INVALID;
    double bytes_s;
    if (*end == '\0') {
        bytes_s = v;
    } else {
        size_t i = 0, n = sizeof(units) / sizeof(units[0]);
        while (i < n && strcasecmp(end, units[i].unit) != 0)
            i++;
        if (i == n)
            return GCOMP_INVALID;
        bytes_s = v * units[i].bits / 8.0;
    }
    if (!isfinite(bytes_s))
        return GCOMP_INVALID;
    *bytes_ms = bytes_s / 1e3;
    return GCOMP_OK;
}

/* ---- the policy's state ---- */

typedef struct perf_bucket {
    char *name;
    long count;        /* steps observed */
    int choice;        /* 0: none; i + 1: candidate i */
    bool has_probe;    /* stats hold a probe's numbers */
    bool meas_dense;   /* the last observed step sent every layer dense */
    double step_ms;    /* the last observed step's */
    double exchange_ms;
    double predicted;  /* the model's step time for the current choice (0: none yet) */
    int nlayers;
    gk_layer *geom;    /* [nlayers] */
    double *stats;     /* [nlayers][ncand][GP_PERF_NSTAT], averaged over the nodes */
    char why[256];
} perf_bucket;

typedef struct perf_state {
    int ncand;
    gk_spec cand[GP_PERF_MAX_CANDIDATES];
    char cand_text[GP_PERF_MAX_CANDIDATES][160];
    gk_spec none;
    double gamma;
    long probe, warmup;
    gp_env env;
    int nbuckets, capbuckets;
    perf_bucket *buckets; /* in the order first seen, identical on every node */
    long rounds;          /* observations of the last bucket */
    long probe_round;     /* the round of the latest probe */
    long ntcomp;          /* T_comp samples taken; the last GP_PERF_WINDOW kept */
    double tcomp[GP_PERF_WINDOW];
} perf_state;

static const char *const perf_keys[] = {"candidate", "gamma", "probe", "warmup", NULL};
static const char *const perf_spec_keys[] = {"candidate", NULL};

static int add_candidate(perf_state *s, const char *text, char *err, size_t errlen)
{
    gk_spec spec;
    char e[768];
    if (gk_spec_parse(text, &spec, e, sizeof(e))) {
        snprintf(err, errlen, "policy 'perfmodel': candidate '%s': %s", text, e);
        return GCOMP_INVALID;
    }
    if (strcmp(spec.codec->name, "none") == 0)
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
    s->env = *env;
    s->probe_round = -2;
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

/* The bucket's index, added (dense, no layers yet) when new; -1 when out of memory. */
static int bucket_of(perf_state *s, const char *name)
{
    int i = find_bucket(s, name);
    if (i >= 0)
        return i;
    if (s->nbuckets == s->capbuckets) {
        int cap = s->capbuckets ? 2 * s->capbuckets : 8;
        perf_bucket *nb = realloc(s->buckets, (size_t)cap * sizeof(*nb));
        if (!nb)
            return -1;
        s->buckets = nb;
        s->capbuckets = cap;
    }
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

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Run the codec on a copy of x as the only node, with a fresh state, timing encode and
   decode of every phase: st gets GP_PERF_NSTAT numbers. */
static int time_codec(const perf_state *s, const gk_spec *spec, const gk_layer *layer,
                      const float *x, int64_t step, double *st)
{
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c);
    int nph = c->nphases ? c->nphases(spec) : 1, rc = GCOMP_OK;
    size_t maxb = 1;
    for (int p = 0; p < nph; p++) {
        size_t m = c->max_bytes(spec, layer, p);
        maxb = m > maxb ? m : maxb;
    }
    void *state = NULL;
    float *in = malloc(layer->numel * sizeof(float));
    float *out = malloc(layer->numel * sizeof(float));
    void *buf = malloc(maxb);
    if (!in || !out || !buf) {
        rc = GCOMP_NOMEM;
        goto done;
    }
    memcpy(in, x, layer->numel * sizeof(float));
    if (c->state_new && (rc = c->state_new(spec, layer, &state)))
        goto done;
    for (int p = 0; p < nph && !rc; p++) {
        gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = p, .nodes = 1,
                        .node = 0, .step = (uint64_t)step, .seed = s->env.seed};
        gk_coll coll = c->phase_coll ? c->phase_coll(spec, p) : GK_COLL_ALLREDUCE_F32;
        size_t n = 0;
        double t0 = now_ms();
        rc = impl->encode(&call, in, buf, &n);
        double t1 = now_ms();
        if (rc)
            break;
        const void *recv = buf;
        rc = impl->decode(&call, in, &recv, &n, 1, out);
        double t2 = now_ms();
        st[GP_PERF_ENCODE_MS] += t1 - t0;
        if (coll == GK_COLL_ALLGATHER) {
            st[GP_PERF_DECODE_AG_MS] += t2 - t1;
            st[GP_PERF_AG_BYTES] += align8((double)n);
        } else {
            st[GP_PERF_DECODE_AR_MS] += t2 - t1;
        }
    }
done:
    if (state && c->state_free)
        c->state_free(state);
    free(in);
    free(out);
    free(buf);
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
        *cost = (gp_perf_cost){.encode_decode_ms = INFINITY, .comm_ms = INFINITY};
        return INFINITY;
    }
    const gk_spec *spec = o > 0 ? &s->cand[o - 1] : NULL;
    const double *st = o > 0 ? b->stats + (size_t)(o - 1) * GP_PERF_NSTAT : NULL;
    gp_perf_bucket_cost(b->geom, b->nlayers, spec, st, (size_t)s->ncand * GP_PERF_NSTAT,
                        nodes, alpha_ms, bw_bytes_ms, cost);
    return cost->encode_decode_ms + cost->comm_ms;
}

/* The job's step time with bucket i under choice[i] (the last bucket in first-seen
   order cannot overlap; compressed buckets never do). */
static double job_step_ms(const perf_state *s, const int *choice, int nodes, double alpha_ms,
                          double bw_bytes_ms, double t_comp)
{
    double overlapped = 0, serial = 0;
    for (int i = 0; i < s->nbuckets; i++) {
        double e = exchange_ms(s, &s->buckets[i], choice[i], nodes, alpha_ms, bw_bytes_ms, NULL);
        if (choice[i] == 0 && i < s->nbuckets - 1)
            overlapped += e;
        else
            serial += e;
    }
    return gp_perf_predict_step_ms(t_comp, s->gamma, overlapped, serial);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of the kept T_comp samples; -1 when there are none. */
static double t_comp_ms(const perf_state *s)
{
    int n = s->ntcomp < GP_PERF_WINDOW ? (int)s->ntcomp : GP_PERF_WINDOW;
    if (n == 0)
        return -1.0;
    double v[GP_PERF_WINDOW];
    memcpy(v, s->tcomp, (size_t)n * sizeof(double));
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Every option of bucket bi with the others under choice[]: t[0..ncand]. */
static void predict_options(const perf_state *s, int *choice, int bi, int nodes,
                            double alpha_ms, double bw_bytes_ms, double t_comp, double *t)
{
    int keep = choice[bi];
    for (int o = 0; o <= s->ncand; o++) {
        choice[bi] = o;
        t[o] = job_step_ms(s, choice, nodes, alpha_ms, bw_bytes_ms, t_comp);
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
    const perf_state *s = state;
    int i = find_bucket(s, layer->bucket);
    if (i < 0) {
        *out = s->none;
        snprintf(why, whylen, "dense during warmup (%ld steps)", s->warmup);
        return GCOMP_OK;
    }
    const perf_bucket *b = &s->buckets[i];
    *out = b->choice ? s->cand[b->choice - 1] : s->none;
    snprintf(why, whylen, "%s", b->why);
    return GCOMP_OK;
}

static int perf_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                        const float *x, double *stats)
{
    (void)g;
    perf_state *s = state;
    for (int k = 0; k < GP_PERF_NSTATS; k++)
        stats[k] = 0.0;
    int bi = bucket_of(s, layer->bucket);
    if (bi < 0)
        return GCOMP_NOMEM;
    if (!is_probe(s, s->buckets[bi].count))
        return GCOMP_OK;
    for (int c = 0; c < s->ncand; c++) {
        if (!gp_perf_compresses(&s->cand[c], &layer->geom))
            continue;
        int rc = time_codec(s, &s->cand[c], &layer->geom, x, step, stats + c * GP_PERF_NSTAT);
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

/* A T_comp sample from the round that ends with the last bucket: the model inverted on
   the measured exchange times, when every bucket has a step and none probed. */
static void sample_compute(perf_state *s)
{
    if (s->rounds - s->probe_round < 2)
        return;
    double overlapped = 0, serial = 0;
    for (int i = 0; i < s->nbuckets; i++) {
        const perf_bucket *b = &s->buckets[i];
        if (!(b->step_ms > 0))
            return;
        if (b->meas_dense && i < s->nbuckets - 1)
            overlapped += b->exchange_ms;
        else
            serial += b->exchange_ms;
    }
    double t = gp_perf_compute_ms(s->buckets[s->nbuckets - 1].step_ms, s->gamma, overlapped,
                                  serial);
    s->tcomp[s->ntcomp % GP_PERF_WINDOW] = t;
    s->ntcomp++;
}

/* Predict every option of bucket bi and switch to the fastest if it pays. */
static int decide_bucket(perf_state *s, int bi)
{
    perf_bucket *b = &s->buckets[bi];
    double tc = t_comp_ms(s);
    if (b->count < s->warmup) {
        snprintf(b->why, sizeof(b->why), "dense during warmup (%ld steps)", s->warmup);
        return GCOMP_OK;
    }
    if (s->env.nodes < 2) {
        b->choice = 0;
        snprintf(b->why, sizeof(b->why), "one node: nothing is exchanged, compression never pays");
        return GCOMP_OK;
    }
    if (!b->has_probe || tc < 0)
        return GCOMP_OK;
    int *choice = calloc((size_t)s->nbuckets, sizeof(int));
    if (!choice)
        return GCOMP_NOMEM;
    for (int i = 0; i < s->nbuckets; i++)
        choice[i] = s->buckets[i].choice;
    double t[GP_PERF_MAX_CANDIDATES + 1];
    predict_options(s, choice, bi, s->env.nodes, s->env.alpha_ms, s->env.bw_bytes_ms, tc, t);
    free(choice);
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
    }
    b->predicted = t[b->choice];
    return GCOMP_OK;
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
        s->probe_round = s->rounds;
    }
    b->step_ms = info->step_ms;
    b->exchange_ms = info->exchange_ms;
    b->meas_dense = true;
    for (int l = 0; l < info->nlayers; l++)
        if (info->compressed && info->compressed[l])
            b->meas_dense = false;
    if (bi == s->nbuckets - 1) {
        sample_compute(s);
        s->rounds++;
    }
    b->count++;
    return decide_bucket(s, bi);
}

/* ---- save and load ---- */

static void save_text(FILE *f, const char *tag, const char *text)
{
    fprintf(f, "%s %zu %s\n", tag, strlen(text), text);
}

/* Read "tag LEN TEXT\n" into buf (size n); NULL-terminated. */
static int load_text(FILE *f, const char *tag, char *buf, size_t n)
{
    char t[32];
    size_t len;
    if (fscanf(f, "%31s %zu", t, &len) != 2 || strcmp(t, tag) != 0 || len >= n ||
        fgetc(f) != ' ' || fread(buf, 1, len, f) != len || fgetc(f) != '\n')
        return GCOMP_IO;
    buf[len] = '\0';
    return GCOMP_OK;
}

static int perf_save(void *state, FILE *f)
{
    const perf_state *s = state;
    fprintf(f, "perfmodel 1\nncand %d\n", s->ncand);
    for (int c = 0; c < s->ncand; c++)
        save_text(f, "cand", s->cand_text[c]);
    fprintf(f, "rounds %ld %ld %ld\n", s->rounds, s->probe_round, s->ntcomp);
    for (int k = 0; k < GP_PERF_WINDOW; k++)
        fprintf(f, "%.17g\n", s->tcomp[k]);
    fprintf(f, "nbuckets %d\n", s->nbuckets);
    for (int i = 0; i < s->nbuckets; i++) {
        const perf_bucket *b = &s->buckets[i];
        save_text(f, "bucket", b->name);
        save_text(f, "why", b->why);
        fprintf(f, "%ld %d %d %d %.17g %.17g %.17g %d\n", b->count, b->choice, b->has_probe,
                b->meas_dense, b->step_ms, b->exchange_ms, b->predicted, b->nlayers);
        for (int l = 0; l < b->nlayers; l++) {
            const gk_layer *g = &b->geom[l];
            fprintf(f, "%u %d %zu %zu %zu\n", g->id, g->ndim, g->rows, g->cols, g->numel);
        }
        size_t ns = (size_t)b->nlayers * s->ncand * GP_PERF_NSTAT;
        for (size_t k = 0; k < ns; k++)
            fprintf(f, "%.17g\n", b->stats[k]);
    }
    fprintf(f, "end\n");
    return ferror(f) ? GCOMP_IO : GCOMP_OK;
}

static int load_bucket(perf_state *s, FILE *f, perf_bucket *b)
{
    char name[GCOMP_MAX_NAME + 1];
    int choice, has_probe, meas_dense, nl;
    if (load_text(f, "bucket", name, sizeof(name)) || load_text(f, "why", b->why, sizeof(b->why)))
        return GCOMP_IO;
    if (fscanf(f, "%ld %d %d %d %lf %lf %lf %d", &b->count, &choice, &has_probe, &meas_dense,
               &b->step_ms, &b->exchange_ms, &b->predicted, &nl) != 8 ||
        choice < 0 || choice > s->ncand || nl < 0 || nl > GCOMP_MAX_LAYERS)
        return GCOMP_IO;
    b->choice = choice;
    b->has_probe = has_probe != 0;
    b->meas_dense = meas_dense != 0;
    b->nlayers = nl;
    size_t n = nl > 0 ? (size_t)nl : 1;
    b->name = strdup(name);
    b->geom = calloc(n, sizeof(*b->geom));
    b->stats = calloc(n * (size_t)(s->ncand ? s->ncand : 1) * GP_PERF_NSTAT, sizeof(double));
    if (!b->name || !b->geom || !b->stats)
        return GCOMP_NOMEM;
    for (int l = 0; l < nl; l++) {
        gk_layer *g = &b->geom[l];
        if (fscanf(f, "%u %d %zu %zu %zu", &g->id, &g->ndim, &g->rows, &g->cols, &g->numel) != 5)
            return GCOMP_IO;
    }
    size_t ns = (size_t)nl * s->ncand * GP_PERF_NSTAT;
    for (size_t k = 0; k < ns; k++)
        if (fscanf(f, "%lf", &b->stats[k]) != 1)
            return GCOMP_IO;
    return GCOMP_OK;
}

static int perf_load(void *state, FILE *f)
{
    perf_state *s = state;
    int version, ncand, nb;
    if (fscanf(f, "perfmodel %d ncand %d", &version, &ncand) != 2 || version != 1 ||
        ncand != s->ncand || fgetc(f) != '\n')
        return GCOMP_INVALID;
    for (int c = 0; c < ncand; c++) {
        char text[sizeof(s->cand_text[0])];
        if (load_text(f, "cand", text, sizeof(text)) || strcmp(text, s->cand_text[c]) != 0)
            return GCOMP_INVALID;
    }
    long rounds, probe_round, ntcomp;
    double tcomp[GP_PERF_WINDOW];
    if (fscanf(f, " rounds %ld %ld %ld", &rounds, &probe_round, &ntcomp) != 3 || ntcomp < 0)
        return GCOMP_IO;
    for (int k = 0; k < GP_PERF_WINDOW; k++)
        if (fscanf(f, "%lf", &tcomp[k]) != 1)
            return GCOMP_IO;
    if (fscanf(f, " nbuckets %d", &nb) != 1 || nb < 0 || nb > 1 << 20 || fgetc(f) != '\n')
        return GCOMP_IO;
    perf_bucket *bs = calloc(nb > 0 ? (size_t)nb : 1, sizeof(*bs));
    if (!bs)
        return GCOMP_NOMEM;
    int rc = GCOMP_OK;
    for (int i = 0; i < nb && !rc; i++) {
        rc = load_bucket(s, f, &bs[i]);
        if (!rc && fgetc(f) != '\n')
            rc = GCOMP_IO;
    }
    char end[8];
    if (!rc && (fscanf(f, "%7s", end) != 1 || strcmp(end, "end") != 0))
        rc = GCOMP_IO;
    if (rc) {
        for (int i = 0; i < nb; i++)
            bucket_free(&bs[i]);
        free(bs);
        return rc;
    }
    /* Everything read: replace the state. */
    for (int i = 0; i < s->nbuckets; i++)
        bucket_free(&s->buckets[i]);
    free(s->buckets);
    s->buckets = nb > 0 ? bs : NULL;
    s->nbuckets = s->capbuckets = nb;
    if (nb == 0)
        free(bs);
    s->rounds = rounds;
    s->probe_round = probe_round;
    s->ntcomp = ntcomp;
    memcpy(s->tcomp, tcomp, sizeof(tcomp));
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

/* A JSON string literal of text. */
static void put_json_str(outbuf *o, const char *text)
{
    put(o, "\"");
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\')
            put(o, "\\%c", *c);
        else if (*c < 0x20)
            put(o, "\\u%04x", *c);
        else
            put(o, "%c", *c);
    }
    put(o, "\"");
}

static const char whatif_usage[] = "whatif --nodes P --bandwidth B [--latency-us L] "
                                   "(B: 10gbit, 1gbit, 100mbit, 25gbps... or bytes/s)";

static int whatif_args(int argc, const char *const *argv, int *nodes, double *bw,
                       double *alpha_ms, char *out, size_t len)
{
    bool has_nodes = false, has_bw = false;
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(k, "--nodes") && strcmp(k, "--bandwidth") && strcmp(k, "--latency-us")) {
            snprintf(out, len, "whatif: unknown option '%s'; usage: %s", k, whatif_usage);
            return GCOMP_INVALID;
        }
        if (!v) {
            snprintf(out, len, "whatif: %s needs a value; usage: %s", k, whatif_usage);
            return GCOMP_INVALID;
        }
        char *end;
        errno = 0;
        if (strcmp(k, "--nodes") == 0) {
            long p = strtol(v, &end, 10);
            if (errno || end == v || *end || p < 1 || p > 1000000) {
                snprintf(out, len, "whatif: --nodes must be an integer in 1..1000000, not '%s'", v);
                return GCOMP_INVALID;
            }
            *nodes = (int)p;
            has_nodes = true;
        } else if (strcmp(k, "--bandwidth") == 0) {
            if (gp_perf_parse_bandwidth(v, bw)) {
                snprintf(out, len,
                         "whatif: --bandwidth must be a positive number with kbit, mbit, gbit, "
                         "tbit (or kbps, mbps, gbps, tbps), or bytes per second, not '%s'", v);
                return GCOMP_INVALID;
            }
            has_bw = true;
        } else {
            double us = strtod(v, &end);
            if (errno || end == v || *end || !isfinite(us) || us < 0 || us > 1e9) {
                snprintf(out, len, "whatif: --latency-us must be a number of microseconds "
                                   ">= 0, not '%s'", v);
                return GCOMP_INVALID;
            }
            *alpha_ms = us * 1e-3;
        }
    }
    if (!has_nodes || !has_bw) {
        snprintf(out, len, "whatif: %s missing; usage: %s", has_nodes ? "--bandwidth" : "--nodes",
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
    double tc = t_comp_ms(s);
    if (tc < 0 || s->nbuckets == 0) {
        snprintf(out, len, "whatif: nothing measured yet: perfmodel needs a few steps of every "
                           "bucket (warmup %ld) to know the compute time", s->warmup);
        return GCOMP_NOT_FOUND;
    }
    /* The best configuration on that cluster: per bucket, with the others as they are,
       until nothing changes. */
    int *choice = calloc((size_t)s->nbuckets, sizeof(int));
    int *none = calloc((size_t)s->nbuckets, sizeof(int));
    if (!choice || !none) {
        free(choice);
        free(none);
        return GCOMP_NOMEM;
    }
    double t[GP_PERF_MAX_CANDIDATES + 1];
    for (int pass = 0, changed = 1; pass < GP_PERF_PASSES && changed; pass++) {
        changed = 0;
        for (int i = 0; i < s->nbuckets; i++) {
            predict_options(s, choice, i, nodes, alpha, bw, tc, t);
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
    double total = job_step_ms(s, choice, nodes, alpha, bw, tc);
    double dense = job_step_ms(s, none, nodes, alpha, bw, tc);
    outbuf o = {.p = out, .len = len};
    out[0] = '\0';
    if (json) {
        put(&o, "{\"nodes\":%d,\"bandwidth_bytes_s\":%.10g,\"latency_us\":%.10g,\"gamma\":%.10g,"
                "\"compute_ms\":%.10g,\"measured\":{\"nodes\":%d,\"bandwidth_bytes_s\":%.10g,"
                "\"latency_us\":%.10g},\"buckets\":[",
            nodes, bw * 1e3, alpha * 1e3, s->gamma, tc, s->env.nodes, s->env.bw_bytes_ms * 1e3,
            s->env.alpha_ms * 1e3);
    } else {
        put(&o, "whatif: %d nodes, bandwidth %.4g Gbit/s, latency %.4g us, gamma %.3g\n", nodes,
            bw * 8e3 * 1e-9, alpha * 1e3, s->gamma);
        put(&o, "measured: compute %.2f ms per step; network on %d nodes: %.4g Gbit/s, "
                "latency %.4g us\n",
            tc, s->env.nodes, s->env.bw_bytes_ms * 8e3 * 1e-9, s->env.alpha_ms * 1e3);
    }
    for (int i = 0; i < s->nbuckets; i++) {
        const perf_bucket *b = &s->buckets[i];
        predict_options(s, choice, i, nodes, alpha, bw, tc, t);
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
    .nstats = GP_PERF_NSTATS,
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
