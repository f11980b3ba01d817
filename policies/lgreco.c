/*
 * lgreco: L-GreCo (Markov et al., MLSys 2024; algorithms.md 3.4): per-layer compression
 * parameters chosen by dynamic programming to minimise the total compressed size
 * subject to a total error of at most alpha times the error of the uniform default:
 *   lgreco:codec=powersgd:rank=4,alpha=1,interval=100
 *   lgreco:codec=topk:density=0.01,min=0.001,max=0.1,count=7
 *   lgreco:codec=maxmin:bits=4,bucket=512
 *
 * Keys:
 *   codec     the codec spec (default "powersgd"): one with a compression knob
 *             (gk_codec.knob: rank, density, bits...) whose payloads have a fixed size
 *             (allreduce phases, or allgather phases that say fixed_bytes), so that the
 *             sizes the DP minimises are exact: powersgd, topk, maxmin, randomk, qsgd...
 *             The knob's value in the spec is the uniform default r0 that the error
 *             budget refers to.
 *   alpha     the error budget relative to the uniform default (default 1).
 *   interval  window length in steps, the paper's adjust_freq (default 100).
 *   min, max  the candidate range, in the knob's range. Defaults by the knob: densities
 *             [0.001, 0.1] (the paper's Table 6), bits [2, 8]; any other integer knob
 *             (ranks, levels) [max(1, floor(r0 / 2)), ceil(2 r0)] within its range, any
 *             other real-valued one [r0 / 10, 10 r0] within its range.
 *   count     candidates taken from the range (1..31). Defaults: every integer of an
 *             integer range (evenly spaced integers when there are more than 31), 7
 *             log-spaced values of a real-valued one (three per decade). r0 itself is
 *             always a candidate.
 *   method    auto, svd or power (low-rank codecs only, whose knob is the rank; default
 *             auto): how the low-rank errors are computed, see below.
 *   delta     the accumulation factor (default 1e-2).
 *   handover  dense or direct (default direct): see "Parameter changes" below.
 *
 * Statistics. collect() runs on every node for every layer with x = the EF-corrected
 * input M_l. During the last min(10, interval) steps of each window it accumulates
 * A_l += (delta / 10) x in a buffer of the layer (the entry decide() made for geom.id;
 * collect() never adds one); at the window's last
 * step it computes err[j] = |A_l - C_j(A_l)|_F for every candidate j, returns them in
 * stats[0 .. ncand-1] with stats[LG_FLAG] = 1 ("measured"), and frees the buffer. At
 * every other step the stats are 0. Errors per candidate:
 *  - Low-rank codecs (the knob is a rank: PowerSGD; for powersgd_unbiased, which has no
 *    error feedback and one power step, these errors are a lower bound): C_j is the
 *    best rank-r_t approximation, r_t = min(n, m, rank_j). With
 *    method svd, one singular-value decomposition (LAPACK sgesdd, values only) gives
 *    every rank at once: err = sqrt(sum_{i > r_t} sigma_i^2). With method power, each
 *    rank runs 5 power iterations from a random Q (GEMMs and a Householder QR, the
 *    paper's appendix B.2) and measures the residual. auto compares the costs per layer
 *    (appendix B.3: SVD when the rank range is wide): about 4 n m min(n, m) flops for
 *    the SVD against 22 n m r per rank (5 iterations of two GEMMs and the residual), so
 *    power iterations when 22 sum_j r_t,j < 4 min(n, m).
 *  - Any other codec (Top-K, max-min...): C_j(A_l) by gk_codec_roundtrip with candidate
 *    j, measured; the candidates share one output buffer and the arena's memory.
 *  A candidate under which the codec does not compress the layer (gk_spec_compresses():
 *  PowerSGD's min_compression_rate rule) sends it dense: error 0, size numel * 4 bytes.
 *  Layers no candidate compresses (fewer than 2 dimensions or fewer than the codec's
 *  min_elements elements) take no part.
 *  These computations are L-GreCo's own cost, once per window per layer; they run on
 *  the engine's worker threads from the scratch arena, and for several layers at once
 *  (collect_concurrent): collect() only reads the policy's state besides its own
 *  layer's entry.
 *
 * Agreement across nodes. The engine averages the stats over the nodes before observe()
 * sees them, so every node holds the same errors (the mean over the nodes of each
 * node's |A_w - C_j(A_w)|, where the paper measures on one worker and broadcasts the
 * decision). Every node then runs the same deterministic DP on the same numbers and
 * decides alike: the averaging replaces the paper's broadcast.
 *
 * Decision. observe() at a window's last step, per bucket: size[l][j] = the bytes the
 * codec sends for layer l with candidate j (gp_payload_mean() over its phases: exact,
 * the payloads have a fixed size; a step's mean for powersgd_unbiased, which sends P
 * and Q in turn), target = alpha * sum_l
 * err[l][r0], and the dynamic program of lgreco_dp.h (10000 buckets of target / 10000)
 * over the bucket's measured layers. One DP per bucket: each bucket gets the budget of
 * its own layers, so the sum over buckets, the model-wide constraint of the paper, is
 * met as well (the paper's single DP may trade error between buckets; this one cannot,
 * since observe() sees one bucket at a time). Guards: target 0 (e.g. zero gradients)
 * or no feasible combination keep the previous parameters. The chosen parameters apply
 * from the next decide() on (the bucket's next step, the same step on every node).
 *
 * Parameter changes. The engine (gk_layer_respec()) remakes a layer's codec state when
 * its parameters change and keeps the EF residual, so with handover=direct (the
 * default) a new rank applies at once. handover=dense instead sends a layer whose
 * stateful codec changes parameters exactly for one step (which also drops its
 * residual), as a more conservative switch. Codecs without state (topk, maxmin) always
 * switch directly.
 *
 * Every input of a decision is an argument or a number observe() received (identical
 * on every node), so every node decides alike.
 *
 * Checkpoint: record "LGRC" version 1: the arguments (codec, knob, the candidates,
 * alpha, delta, interval), then per layer in id order its id, decision, the decision
 * log's numbers and its accumulator.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "ckpt.h"
#include "gcomp.h"
#include "lgreco_dp.h"
#include "policy.h"
#include "rng.h"

#define LG_NAME "lgreco"
#define LG_MAX_CAND 32              /* candidates per layer, r0 included */
#define LG_FLAG LG_MAX_CAND         /* the stats slot saying the errors were measured */
#define LG_NSTATS (LG_MAX_CAND + 1)
#define LG_NBUCKETS 10000           /* the DP's error discretisation (algorithms.md 3.4) */
#define LG_ACC_STEPS 10             /* steps accumulated at the end of a window */
#define LG_POWER_STEPS 5            /* power iterations per rank (paper appendix B.2) */
#define LG_SVD_FLOPS 4.0            /* per n m min(n, m): singular values only */
#define LG_POWER_FLOPS 22.0         /* per n m r: 5 x (2 GEMMs of 2 n m r) + residual */
#define LG_RNG_STREAM 0x4c4752ULL   /* separates the power iterations' draws */
#define LG_TAG "LGRC"
#define LG_VERSION 1
#define LG_RANK_KNOB "rank"         /* a knob that is a rank: a low-rank approximation */

/* How the errors are found: from the spectrum (a low-rank codec) or by running it. */
typedef enum lg_kind { LG_LOWRANK, LG_MEASURED } lg_kind;
typedef enum lg_method { LG_AUTO, LG_SVD, LG_POWER } lg_method;

/* What the policy knows of one layer. */
typedef struct lg_layer {
    uint64_t id;     /* gk_layer.id */
    /* The decision: cur applies from step eff on, prev before it. */
    double prev, cur;
    int64_t eff;
    int64_t window;  /* the 1-based window whose end chose cur; 0: none yet */
    double err;      /* cur's error and bytes, for the decision log */
    double bytes;
    /* The accumulator of window acc_window (-1: none). */
    int64_t acc_window;
    size_t numel;    /* elements of acc */
    float *acc;      /* the sum A_l of the window's last steps; NULL when none */
} lg_layer;

typedef struct lg_state {
    gk_spec codec;        /* as given: its knob is r0 */
    gk_spec exact;        /* "none", for the handover step */
    lg_kind kind;
    const char *key;      /* the codec's knob (gk_codec.knob) */
    bool integer;         /* the knob takes integers */
    double def;           /* r0 */
    int ncand, idef;      /* candidates (ascending) and r0's index among them */
    double cand[LG_MAX_CAND];
    gk_spec cspec[LG_MAX_CAND]; /* the codec at each candidate */
    double alpha, delta;
    int64_t interval;
    lg_method method;
    bool handover;        /* handover=dense */
    uint64_t seed;        /* the job's seed, for the codecs' and power iterations' draws */
    int nlayers;          /* layers, sorted by id */
    size_t cap;           /* entries allocated */
    lg_layer *layers;     /* made by decide() */
} lg_state;

static const char *const lg_keys[] = {"codec", "alpha", "interval", "min", "max", "count",
                                      "method", "delta", "handover", NULL};
static const char *const lg_spec_keys[] = {"codec", NULL};

/* ---- layers ---- */

static int lg_cmp_id(const void *key, const void *elem)
{
    uint64_t a = *(const uint64_t *)key, b = ((const lg_layer *)elem)->id;
    return a < b ? -1 : a > b;
}

/* The layer's entry; NULL when there is none. Only reads the state. */
static lg_layer *lg_find(const lg_state *s, uint64_t id)
{
    return s->nlayers ? bsearch(&id, s->layers, (size_t)s->nlayers, sizeof(lg_layer), lg_cmp_id)
                      : NULL;
}

/* The layer's entry, made (with the uniform default) when there is none. The pointer
   is valid until the next call. Not for collect(): it may move every entry. */
static lg_layer *lg_add(lg_state *s, uint64_t id)
{
    lg_layer *l = lg_find(s, id);
    if (l)
        return l;
    if (s->nlayers == INT32_MAX)
        return NULL;
    lg_layer *t = gk_grow(s->layers, &s->cap, (size_t)s->nlayers + 1, sizeof(*t));
    if (!t)
        return NULL;
    s->layers = t;
    int at = 0;
    while (at < s->nlayers && s->layers[at].id < id)
        at++;
    memmove(s->layers + at + 1, s->layers + at, (size_t)(s->nlayers - at) * sizeof(lg_layer));
    s->nlayers++;
    l = &s->layers[at];
    *l = (lg_layer){.id = id, .prev = s->def, .cur = s->def, .eff = INT64_MIN,
                    .acc_window = -1};
    return l;
}

static double lg_value_at(const lg_layer *l, int64_t step)
{
    return step >= l->eff ? l->cur : l->prev;
}

/* ---- candidates and the codec ---- */

static int lg_spec(const lg_state *s, double v, gk_spec *out)
{
    return gp_spec_with(&s->codec, s->key, v, out);
}

/* The index of a candidate value; -1 when v is none of them. */
static int lg_cand_index(const lg_state *s, double v)
{
    for (int j = 0; j < s->ncand; j++)
        if (s->cand[j] == v)
            return j;
    return -1;
}

/* Whether the layer takes part: some candidate compresses it. */
static bool lg_takes_part(const lg_state *s, const gk_layer *g)
{
    for (int j = 0; j < s->ncand; j++)
        if (gk_spec_compresses(&s->cspec[j], g))
            return true;
    return false;
}

/* The bytes one node sends per step for the layer with candidate j: the mean payload
   over the codec's phases, or the dense layer when the candidate does not compress it. */
static double lg_bytes(const lg_state *s, const gk_layer *g, int j)
{
    const gk_spec *sp = &s->cspec[j];
    if (!gk_spec_compresses(sp, g))
        return (double)g->numel * sizeof(float);
    double total = 0;
    for (int p = 0; p < gk_spec_nphases(sp); p++)
        total += gp_payload_mean(sp, g, p);
    return total;
}

static size_t lg_rank_t(const gk_layer *g, double rank)
{
    size_t k = g->rows < g->cols ? g->rows : g->cols, r = (size_t)rank;
    return r < k ? r : k;
}

/* Whether the change prev -> cur at its first step needs an exact step, so that the
   engine makes the codec's state anew (see "Parameter changes" above). */
static bool lg_needs_handover(const lg_state *s, const lg_layer *l, const gk_layer *g)
{
    if (!s->handover || !s->codec.codec->state_new || l->prev == l->cur)
        return false;
    gk_spec a, b;
    if (lg_spec(s, l->prev, &a) || lg_spec(s, l->cur, &b) || !gk_spec_compresses(&a, g) ||
        !gk_spec_compresses(&b, g))
        return false;
    return s->kind != LG_LOWRANK || lg_rank_t(g, l->prev) != lg_rank_t(g, l->cur);
}

static void lg_fmt_bytes(double b, char *buf, size_t len)
{
    if (b < 1024)
        snprintf(buf, len, "%.0f B", b);
    else if (b < 1024.0 * 1024.0)
        snprintf(buf, len, "%.1f KB", b / 1024.0);
    else
        snprintf(buf, len, "%.1f MB", b / (1024.0 * 1024.0));
}

/* ---- arguments ---- */

static int lg_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The candidates: count values spread over [lo, hi] (evenly spaced integers for an
   integer knob, log-spaced values for a real-valued one), plus r0; sorted, without
   duplicates. */
static void lg_make_candidates(lg_state *s, double lo, double hi, long count)
{
    double v[LG_MAX_CAND];
    int n = 0;
    for (long i = 0; i < count; i++) {
        double t = count > 1 ? (double)i / (double)(count - 1) : 0.0;
        double x = s->integer ? floor(lo + t * (hi - lo) + 0.5) : lo * pow(hi / lo, t);
        if (!s->integer && fabs(x - s->def) <= 1e-9 * s->def)
            x = s->def;
        v[n++] = x;
    }
    v[n++] = s->def;
    qsort(v, (size_t)n, sizeof(double), lg_cmp_double);
    s->ncand = 0;
    for (int i = 0; i < n; i++)
        if (s->ncand == 0 || v[i] != s->cand[s->ncand - 1])
            s->cand[s->ncand++] = v[i];
    for (int j = 0; j < s->ncand; j++)
        if (s->cand[j] == s->def)
            s->idef = j;
}

/* A candidate bound (min, max) in the knob's range; an integer for an integer knob. */
static int lg_arg_param(const char *key, const char *val, bool integer, double min, double max,
                        double *out, char *err, size_t errlen)
{
    if (!integer)
        return gp_arg_double(LG_NAME, key, val, min, max, out, err, errlen);
    long v;
    int rc = gp_arg_long(LG_NAME, key, val, (long)min, (long)max, &v, err, errlen);
    if (!rc)
        *out = (double)v;
    return rc;
}

/* Whether L-GreCo can tune the codec under the spec: it has a compression knob and its
   payloads have a fixed size in every phase (so the sizes the DP minimises are exact). */
static bool lg_tunable(const gk_spec *sp)
{
    if (gk_spec_knob(sp, NULL, NULL) < 0)
        return false;
    for (int p = 0; p < gk_spec_nphases(sp); p++)
        if (!gk_payload_fixed(sp, p))
            return false;
    return true;
}

/* The codecs lg_tunable() accepts at their defaults, for error messages. */
static void lg_tunable_codecs(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < gk_ncodecs && n < len; i++) {
        gk_spec sp;
        char e[256];
        if (!gk_spec_parse(gk_codecs[i]->name, &sp, e, sizeof(e)) && lg_tunable(&sp))
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", gk_codecs[i]->name);
    }
}

/* The default candidate range of the knob, within [pmin, pmax] (see the file's
   comment). */
static void lg_default_range(const lg_state *s, double pmin, double pmax, double *lo,
                             double *hi)
{
    static const struct {
        const char *knob;
        double lo, hi;
    } given[] = {{"density", 1e-3, 0.1}, {"bits", 2, 8}};
    for (size_t i = 0; i < sizeof(given) / sizeof(given[0]); i++)
        if (strcmp(s->key, given[i].knob) == 0) {
            *lo = given[i].lo;
            *hi = given[i].hi;
            return;
        }
    if (s->integer) {
        *lo = fmax(pmin, floor(0.5 * s->def));
        *hi = fmin(pmax, ceil(2.0 * s->def));
    } else {
        *lo = fmax(pmin, s->def / 10);
        *hi = fmin(pmax, s->def * 10);
    }
}

static int lg_create(const gp_args *a, const gp_env *env, void **state, char *err,
                     size_t errlen)
{
    lg_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    const char *codec = "powersgd", *method = "auto", *handover = "direct";
    const char *vmin = NULL, *vmax = NULL, *vcount = NULL;
    long interval = 100, count = 0;
    s->alpha = 1.0;
    s->delta = 1e-2;
    int rc = GCOMP_OK;
    for (int i = 0; i < a->n && !rc; i++) {
        const char *k = a->keys[i], *v = a->vals[i];
        if (strcmp(k, "codec") == 0)
            codec = v;
        else if (strcmp(k, "alpha") == 0)
            rc = gp_arg_double(LG_NAME, k, v, 1e-3, 1e3, &s->alpha, err, errlen);
        else if (strcmp(k, "interval") == 0)
            rc = gp_arg_long(LG_NAME, k, v, 1, INT32_MAX, &interval, err, errlen);
        else if (strcmp(k, "delta") == 0)
            rc = gp_arg_double(LG_NAME, k, v, 1e-12, 1e12, &s->delta, err, errlen);
        else if (strcmp(k, "min") == 0)
            vmin = v;
        else if (strcmp(k, "max") == 0)
            vmax = v;
        else if (strcmp(k, "count") == 0)
            vcount = v;
        else if (strcmp(k, "method") == 0)
            method = v;
        else if (strcmp(k, "handover") == 0)
            handover = v;
    }
    if (!rc) {
        char cerr[768];
        if (gk_spec_parse(codec, &s->codec, cerr, sizeof(cerr))) {
            snprintf(err, errlen, "policy '%s': codec: %s", LG_NAME, cerr);
            rc = GCOMP_INVALID;
        }
    }
    if (!rc && !lg_tunable(&s->codec)) {
        char list[256];
        lg_tunable_codecs(list, sizeof(list));
        snprintf(err, errlen, "policy '%s': codec must be one with a compression knob and "
                 "payloads of a fixed size (%s), not '%s'", LG_NAME, list, codec);
        rc = GCOMP_INVALID;
    }
    if (!rc) {
        s->key = s->codec.codec->knob;
        s->kind = strcmp(s->key, LG_RANK_KNOB) == 0 ? LG_LOWRANK : LG_MEASURED;
    }
    if (!rc) {
        if (strcmp(method, "auto") == 0)
            s->method = LG_AUTO;
        else if (strcmp(method, "svd") == 0)
            s->method = LG_SVD;
        else if (strcmp(method, "power") == 0)
            s->method = LG_POWER;
        else {
            snprintf(err, errlen, "policy '%s': method must be auto, svd or power, not '%s'",
                     LG_NAME, method);
            rc = GCOMP_INVALID;
        }
        if (!rc && s->method != LG_AUTO && s->kind != LG_LOWRANK) {
            snprintf(err, errlen, "policy '%s': method %s applies to low-rank codecs (knob "
                     "%s) only", LG_NAME, method, LG_RANK_KNOB);
            rc = GCOMP_INVALID;
        }
    }
    if (!rc && strcmp(handover, "dense") != 0 && strcmp(handover, "direct") != 0) {
        snprintf(err, errlen, "policy '%s': handover must be dense or direct, not '%s'", LG_NAME,
                 handover);
        rc = GCOMP_INVALID;
    }
    double lo = 0, hi = 0;
    if (!rc) {
        int knob = gk_spec_knob(&s->codec, &s->def, NULL);
        const gk_param_desc *d = &s->codec.codec->params[knob];
        s->integer = d->integer;
        /* Log spacing needs a positive lower bound. */
        double pmin = d->integer ? d->min : fmax(d->min, 1e-9), pmax = d->max;
        lg_default_range(s, pmin, pmax, &lo, &hi);
        if (vmin)
            rc = lg_arg_param("min", vmin, d->integer, pmin, pmax, &lo, err, errlen);
        if (!rc && vmax)
            rc = lg_arg_param("max", vmax, d->integer, pmin, pmax, &hi, err, errlen);
        if (!rc && lo > hi) {
            snprintf(err, errlen, "policy '%s': min (%g) must not exceed max (%g)", LG_NAME, lo,
                     hi);
            rc = GCOMP_INVALID;
        }
        if (!rc)
            count = d->integer ? (long)fmin(hi - lo + 1, LG_MAX_CAND - 1) : 7;
        if (!rc && vcount)
            rc = gp_arg_long(LG_NAME, "count", vcount, 1, LG_MAX_CAND - 1, &count, err, errlen);
    }
    if (!rc) {
        lg_make_candidates(s, lo, hi, count);
        for (int j = 0; j < s->ncand && !rc; j++)
            if (lg_spec(s, s->cand[j], &s->cspec[j]) || !lg_tunable(&s->cspec[j])) {
                snprintf(err, errlen, "policy '%s': candidate %s %g is out of the codec's range "
                         "or has payloads of a variable size", LG_NAME, s->key, s->cand[j]);
                rc = GCOMP_INVALID;
            }
    }
    if (!rc)
        rc = gk_spec_parse("none", &s->exact, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    s->interval = interval;
    s->handover = strcmp(handover, "dense") == 0;
    s->seed = env->seed;
    *state = s;
    return GCOMP_OK;
}

static void lg_destroy(void *state)
{
    lg_state *s = state;
    if (!s)
        return;
    for (int i = 0; i < s->nlayers; i++)
        free(s->layers[i].acc);
    free(s->layers);
    free(s);
}

/* ---- decide ---- */

static int lg_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out, char *why,
                     size_t whylen)
{
    lg_state *s = state;
    const gk_layer *g = &layer->geom;
    if (!lg_takes_part(s, g)) {
        *out = s->codec;
        snprintf(why, whylen, "lgreco: layer sent dense (no candidate compresses it: fewer than "
                 "2 dimensions or %ld elements)", s->codec.min_elements);
        return GCOMP_OK;
    }
    /* The entry collect() accumulates in. */
    const lg_layer *l = lg_add(s, g->id);
    if (!l)
        return GCOMP_NOMEM;
    if (l->window == 0) {
        *out = s->codec;
        snprintf(why, whylen, "lgreco: uniform default %s %g until window 1 ends", s->key, s->def);
        return GCOMP_OK;
    }
    if (step < l->eff) {
        snprintf(why, whylen, "lgreco: %s %g (window %lld's choice applies from step %lld)",
                 s->key, l->prev, (long long)l->window, (long long)l->eff);
        return lg_spec(s, l->prev, out);
    }
    if (step == l->eff && lg_needs_handover(s, l, g)) {
        *out = s->exact;
        snprintf(why, whylen,
                 "lgreco window %lld: %s %g -> %g: one exact step so that the engine makes the "
                 "%s state anew",
                 (long long)l->window, s->key, l->prev, l->cur, s->codec.codec->name);
        return GCOMP_OK;
    }
    char b[32];
    lg_fmt_bytes(l->bytes, b, sizeof(b));
    snprintf(why, whylen, "lgreco window %lld: %s %.4g -> %.4g (err %.3g, %s)",
             (long long)l->window, s->key, l->prev, l->cur, l->err, b);
    return lg_spec(s, l->cur, out);
}

/* ---- errors ---- */

static double lg_norm(const float *a, size_t n)
{
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += (double)a[i] * (double)a[i];
    return sqrt(acc);
}

static double lg_diff_norm(const float *a, const float *b, size_t n)
{
    double acc = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        acc += d * d;
    }
    return sqrt(acc);
}

/* The singular values of the n x m row-major A (min(n, m) of them, descending) into sv.
   A row-major n x m matrix is the column-major m x n matrix A^T: same values.
   The copy sgesdd destroys comes from the arena (A itself is kept for the fallback). */
static int lg_singular_values(const float *A, size_t n, size_t m, float *sv, gk_arena *ar)
{
    float *a = gk_arena_alloc(ar, n * m * sizeof(float));
    if (!a)
        return GCOMP_NOMEM;
    memcpy(a, A, n * m * sizeof(float));
    float dummy = 0;
    lapack_int info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)m, (lapack_int)n, a,
                                     (lapack_int)m, sv, &dummy, 1, &dummy, 1);
    return info == 0 ? GCOMP_OK : GCOMP_INTERNAL;
}

/* Orthonormalise the columns of the column-major n x r P (Householder QR, Q factor). */
static int lg_orthonormalise(float *P, size_t n, size_t r, float *tau)
{
    if (LAPACKE_sgeqrf(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)r, P, (lapack_int)n, tau))
        return GCOMP_INTERNAL;
    if (LAPACKE_sorgqr(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)r, (lapack_int)r, P,
                       (lapack_int)n, tau))
        return GCOMP_INTERNAL;
    return GCOMP_OK;
}

/* Power-iteration errors (the paper's appendix B.2) of the n x m row-major A for the
   ranks r_t of the compressed candidates, in ascending order: for each distinct rank r,
   LG_POWER_STEPS iterations P = orth(A Q), Q = A^T P, then |A - P Q^T|_F. The first
   rank starts from a Q drawn from the job's generator; each later rank starts from the
   previous rank's Q (already near the leading subspace) extended by fresh random
   columns, which costs nothing and makes a badly drawn start rarer. In BLAS terms A is
   the column-major m x n matrix At = A^T; P (n x r) and Q (m x r) are column-major.
   The buffers come from the arena. */
static int lg_power_errors(const lg_state *s, const gk_layer *g, const float *A,
                           int64_t window, const bool *comp, double *errs, gk_arena *ar)
{
    size_t n = g->rows, m = g->cols, k = n < m ? n : m, rmax = 0;
    for (int j = 0; j < s->ncand; j++)
        if (comp[j] && lg_rank_t(g, s->cand[j]) < k && lg_rank_t(g, s->cand[j]) > rmax)
            rmax = lg_rank_t(g, s->cand[j]);
    if (rmax == 0)
        return GCOMP_OK;
    float *P = gk_arena_alloc(ar, n * rmax * sizeof(float));
    float *Q = gk_arena_alloc(ar, m * rmax * sizeof(float));
    float *R = gk_arena_alloc(ar, n * m * sizeof(float));
    float *tau = gk_arena_alloc(ar, rmax * sizeof(float));
    int rc = P && Q && R && tau ? GCOMP_OK : GCOMP_NOMEM;
    gk_rng rng;
    gk_rng_seed(&rng, s->seed, g->id, (uint64_t)window, LG_RNG_STREAM);
    const blasint bn = (blasint)n, bm = (blasint)m;
    size_t last = 0;
    double last_err = 0;
    for (int j = 0; j < s->ncand && !rc; j++) {
        size_t r = lg_rank_t(g, s->cand[j]);
        if (!comp[j] || r >= k)
            continue;
        if (r != last) {
            const blasint br = (blasint)r;
            for (size_t i = m * last; i < m * r; i++)
                Q[i] = gk_rng_normal(&rng);
            for (int it = 0; it < LG_POWER_STEPS && !rc; it++) {
                /* P = A Q = At^T Q, orthonormalised; Q = A^T P = At P. */
                cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, bn, br, bm, 1.0f, A, bm,
                            Q, bm, 0.0f, P, bn);
                rc = lg_orthonormalise(P, n, r, tau);
                if (!rc)
                    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, bm, br, bn, 1.0f, A,
                                bm, P, bn, 0.0f, Q, bm);
            }
            if (rc)
                break;
            /* R^T = At - Q P^T, i.e. R = A - P Q^T. */
            memcpy(R, A, n * m * sizeof(float));
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, bm, bn, br, -1.0f, Q, bm, P,
                        bn, 1.0f, R, bm);
            last_err = lg_norm(R, n * m);
            last = r;
        }
        errs[j] = last_err;
    }
    return rc;
}

/* A low-rank codec's errors for every candidate (see the file's comment). */
static int lg_lowrank_errors(const lg_state *s, const gk_layer *g, const float *A,
                             int64_t window, const bool *comp, double *errs, gk_arena *ar)
{
    size_t n = g->rows, m = g->cols, k = n < m ? n : m, prev = 0;
    /* The sum of the distinct ranks to compute (candidates ascend, so do their r_t). */
    double rsum = 0;
    for (int j = 0; j < s->ncand; j++) {
        size_t r = lg_rank_t(g, s->cand[j]);
        if (comp[j] && r < k && r != prev) {
            rsum += (double)r;
            prev = r;
        }
    }
    if (rsum == 0)
        return GCOMP_OK; /* every candidate is dense or exact: errors 0 */
    bool svd = s->method == LG_SVD ||
               (s->method == LG_AUTO && LG_POWER_FLOPS * rsum >= LG_SVD_FLOPS * (double)k);
    if (svd) {
        gk_arena_mark mark = gk_arena_mark_get(ar);
        float *sv = gk_arena_alloc(ar, k * sizeof(float));
        double *tail = gk_arena_alloc(ar, (k + 1) * sizeof(double));
        int rc = sv && tail ? lg_singular_values(A, n, m, sv, ar) : GCOMP_NOMEM;
        if (!rc) {
            /* tail[i] = sum_{t >= i} sigma_t^2, summed from the smallest. */
            tail[k] = 0;
            for (size_t i = k; i-- > 0;)
                tail[i] = tail[i + 1] + (double)sv[i] * (double)sv[i];
            for (int j = 0; j < s->ncand; j++)
                errs[j] = comp[j] ? sqrt(tail[lg_rank_t(g, s->cand[j])]) : 0.0;
        }
        if (rc != GCOMP_INTERNAL)
            return rc;
        /* sgesdd did not converge: the power iterations still give the errors. */
        gk_arena_release(ar, mark);
    }
    return lg_power_errors(s, g, A, window, comp, errs, ar);
}

/* err[j] = |A - C_j(A)|_F for every candidate of the layer, with temporaries from
   exec's arena. */
static int lg_errors(const lg_state *s, const gk_layer *g, const float *A, int64_t step,
                     int64_t window, double *errs, const gk_exec *exec)
{
    bool comp[LG_MAX_CAND];
    for (int j = 0; j < s->ncand; j++) {
        comp[j] = gk_spec_compresses(&s->cspec[j], g);
        errs[j] = 0;
    }
    if (lg_norm(A, g->numel) == 0)
        return GCOMP_OK;
    gk_exec host = gp_exec_host(exec);
    if (s->kind == LG_LOWRANK)
        return lg_lowrank_errors(s, g, A, window, comp, errs, host.scratch);
    float *out = gk_arena_alloc(host.scratch, g->numel * sizeof(float));
    if (!out)
        return GCOMP_NOMEM;
    /* Each candidate's temporaries go back to the arena before the next one's. */
    gk_arena_mark mark = gk_arena_mark_get(host.scratch);
    int rc = GCOMP_OK;
    for (int j = 0; j < s->ncand && !rc; j++) {
        if (!comp[j])
            continue;
        rc = gk_codec_roundtrip(&s->cspec[j], g, A, out, s->seed, (uint64_t)step, NULL, &host);
        if (!rc)
            errs[j] = lg_diff_norm(A, out, g->numel);
        gk_arena_release(host.scratch, mark);
    }
    return rc;
}

/* ---- collect and observe ---- */

static int64_t lg_window_of(const lg_state *s, int64_t step)
{
    int64_t w = step / s->interval;
    return step % s->interval < 0 ? w - 1 : w;
}

static int lg_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                      const float *x, double *stats, const gk_exec *exec)
{
    (void)g;
    const lg_state *s = state;
    const gk_layer *geom = &layer->geom;
    for (int i = 0; i < LG_NSTATS; i++)
        stats[i] = 0;
    if (!lg_takes_part(s, geom))
        return GCOMP_OK;
    int64_t w = lg_window_of(s, step), pos = step - w * s->interval;
    int64_t nacc = s->interval < LG_ACC_STEPS ? s->interval : LG_ACC_STEPS;
    if (pos < s->interval - nacc)
        return GCOMP_OK;
    lg_layer *l = lg_find(s, geom->id);
    if (!l)
        return GCOMP_INVALID; /* decide() has not seen the layer */
    if (l->acc_window != w || !l->acc || l->numel != geom->numel) {
        /* A new accumulation (a stale one, from a window whose end was not seen, goes). */
        if (l->numel != geom->numel || !l->acc) {
            free(l->acc);
            l->acc = malloc(geom->numel * sizeof(float));
            if (!l->acc)
                return GCOMP_NOMEM;
            l->numel = geom->numel;
        }
        memset(l->acc, 0, geom->numel * sizeof(float));
        l->acc_window = w;
    }
    const float a = (float)(s->delta / LG_ACC_STEPS);
    for (size_t i = 0; i < geom->numel; i++)
        l->acc[i] += a * x[i];
    if (pos != s->interval - 1)
        return GCOMP_OK;
    int rc = lg_errors(s, geom, l->acc, step, w, stats, exec);
    stats[LG_FLAG] = 1;
    free(l->acc);
    l->acc = NULL;
    l->acc_window = -1;
    return rc;
}

static int lg_observe(void *state, const gp_step_info *info)
{
    lg_state *s = state;
    int64_t w = lg_window_of(s, info->step);
    if (info->step - w * s->interval != s->interval - 1 || !info->stats || info->nlayers <= 0)
        return GCOMP_OK;
    const size_t nc = (size_t)s->ncand;
    int *idx = malloc((size_t)info->nlayers * sizeof(int));
    int *choice = malloc((size_t)info->nlayers * sizeof(int));
    double *err = malloc((size_t)info->nlayers * nc * sizeof(double));
    double *size = malloc((size_t)info->nlayers * nc * sizeof(double));
    int rc = idx && choice && err && size ? GCOMP_OK : GCOMP_NOMEM;
    int n = 0;
    double target = 0;
    for (int i = 0; i < info->nlayers && !rc; i++) {
        const gk_layer *g = &info->layers[i].geom;
        const double *st = info->stats + (size_t)i * LG_NSTATS;
        if (!lg_takes_part(s, g) || !(st[LG_FLAG] > 0.5))
            continue;
        for (size_t j = 0; j < nc; j++) {
            err[(size_t)n * nc + j] = st[j];
            size[(size_t)n * nc + j] = lg_bytes(s, g, (int)j);
        }
        target += st[s->idef];
        idx[n++] = i;
    }
    target *= s->alpha;
    gp_lgreco_dp_result res;
    if (!rc && n > 0)
        rc = gp_lgreco_dp(n, s->ncand, err, size, target, LG_NBUCKETS, choice, &res);
    /* The guards: target 0 or no feasible combination keep the previous parameters. */
    if (rc == GCOMP_NOT_FOUND || (!rc && n == 0)) {
        rc = GCOMP_OK;
        n = 0;
    }
    for (int k = 0; k < n && !rc; k++) {
        const gk_layer *g = &info->layers[idx[k]].geom;
        lg_layer *l = lg_add(s, g->id);
        if (!l) {
            rc = GCOMP_NOMEM;
            break;
        }
        size_t j = (size_t)choice[k];
        l->prev = lg_value_at(l, info->step + 1);
        l->cur = s->cand[j];
        l->eff = info->step + 1;
        l->window = w + 1;
        l->err = err[(size_t)k * nc + j];
        l->bytes = size[(size_t)k * nc + j];
    }
    free(idx);
    free(choice);
    free(err);
    free(size);
    return rc;
}

/* ---- checkpoints ---- */

static int lg_save(void *state, gk_writer *w)
{
    const lg_state *s = state;
    gk_put_tag(w, LG_TAG, LG_VERSION);
    gk_put_str(w, s->codec.codec->name);
    gk_put_str(w, s->key);
    gk_put(w, (int64_t)s->ncand);
    for (int j = 0; j < s->ncand; j++)
        gk_put(w, s->cand[j]);
    gk_put(w, s->alpha);
    gk_put(w, s->delta);
    gk_put(w, s->interval);
    gk_put(w, (uint64_t)s->nlayers);
    for (int i = 0; i < s->nlayers; i++) {
        const lg_layer *l = &s->layers[i];
        uint64_t numel = l->acc ? l->numel : 0;
        gk_put(w, l->id);
        gk_put(w, l->prev);
        gk_put(w, l->cur);
        gk_put(w, l->eff);
        gk_put(w, l->window);
        gk_put(w, l->err);
        gk_put(w, l->bytes);
        gk_put(w, l->acc_window);
        gk_put(w, numel);
        gk_put_f32s(w, l->acc, numel);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

static bool lg_get_args(gk_reader *r, const lg_state *s)
{
    bool ok = gp_ckpt_arg_str(r, LG_NAME, "codec", s->codec.codec->name) &&
              gp_ckpt_arg_str(r, LG_NAME, "knob", s->key) &&
              gp_ckpt_arg_i64(r, LG_NAME, "candidates", s->ncand);
    for (int j = 0; j < s->ncand && ok; j++)
        ok = gp_ckpt_arg_f64(r, LG_NAME, "candidate", s->cand[j]);
    return ok && gp_ckpt_arg_f64(r, LG_NAME, "alpha", s->alpha) &&
           gp_ckpt_arg_f64(r, LG_NAME, "delta", s->delta) &&
           gp_ckpt_arg_i64(r, LG_NAME, "interval", s->interval);
}

/* Read one layer record into l (zeroed); prev, the record before it (NULL: none). */
static bool lg_get_layer(gk_reader *r, const lg_state *s, const lg_layer *prev, lg_layer *l)
{
    uint64_t numel;
    if (!(gk_get(r, &l->id) && gk_get(r, &l->prev) && gk_get(r, &l->cur) &&
          gk_get(r, &l->eff) && gk_get(r, &l->window) && gk_get(r, &l->err) &&
          gk_get(r, &l->bytes) && gk_get(r, &l->acc_window) && gk_get(r, &numel)))
        return false;
    if (prev && l->id <= prev->id)
        return gk_reader_fail(r, "%s checkpoint: layer %#llx after %#llx (not in id order)",
                              LG_NAME, (unsigned long long)l->id,
                              (unsigned long long)prev->id);
    if (lg_cand_index(s, l->prev) < 0 || lg_cand_index(s, l->cur) < 0 || l->window < 0)
        return gk_reader_fail(r, "%s checkpoint: layer %#llx at %s %g -> %g (window %lld), "
                              "not among the candidates", LG_NAME, (unsigned long long)l->id,
                              s->key, l->prev, l->cur, (long long)l->window);
    l->numel = (size_t)numel;
    return gp_ckpt_get_f32s_new(r, numel, &l->acc);
}

static int lg_load(void *state, gk_reader *r)
{
    lg_state *s = state;
    uint64_t nl = 0;
    bool ok = gk_get_tag(r, LG_TAG, LG_VERSION, NULL) && lg_get_args(r, s) &&
              gp_ckpt_count(r, "layers", INT32_MAX / 2, &nl);
    if (!ok)
        return gp_ckpt_status(r);
    /* The entries are read one by one, so a count larger than the data fails as truncated
       before it is allocated. */
    int got = 0;
    size_t cap = 0;
    lg_layer *t = NULL;
    for (; ok && (uint64_t)got < nl; got++) {
        lg_layer *u = gk_grow(t, &cap, (size_t)got + 1, sizeof(*u));
        if (!u) {
            ok = gk_reader_fail(r, "out of memory");
            break;
        }
        t = u;
        t[got] = (lg_layer){0};
        ok = lg_get_layer(r, s, got ? &t[got - 1] : NULL, &t[got]);
    }
    if (!ok) {
        for (int i = 0; i < got; i++)
            free(t[i].acc);
        free(t);
        return gp_ckpt_status(r);
    }
    for (int i = 0; i < s->nlayers; i++)
        free(s->layers[i].acc);
    free(s->layers);
    s->layers = t;
    s->nlayers = got;
    s->cap = cap;
    return GCOMP_OK;
}

const gp_policy gp_policy_lgreco = {
    .name = LG_NAME,
    .summary = "L-GreCo: per-layer compression knob (rank, density, bits...) chosen every "
               "interval steps by a dynamic program minimising the size within alpha times "
               "the uniform default's error",
    .keys = lg_keys,
    .spec_keys = lg_spec_keys,
    .keys_help = "codec (powersgd; a knob with fixed-size payloads); alpha (1); interval (100 steps); min, max (by the knob); count; method (auto|svd|power, auto); delta (0.01); handover (dense|direct, direct)",
    .nstats = LG_NSTATS,
    .collect_concurrent = true,
    .create = lg_create,
    .destroy = lg_destroy,
    .decide = lg_decide,
    .collect = lg_collect,
    .observe = lg_observe,
    .save = lg_save,
    .load = lg_load,
};
