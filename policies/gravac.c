/*
 * gravac: GraVAC (Tyagi and Swany, algorithms.md 3.3, paper Algorithm 1): one
 * compression factor (CF, theta = dense size / compressed size) for the whole model,
 * chosen from the compression gain of two candidates and the measured throughput:
 *   gravac:codec=topk,min=10,max=1000,eps=0.7,omega=0.01,window=500,scaling=exp
 * The codec is one whose compression knob is its density (gk_codec.knob "density":
 * topk, dgc, redsync...): a CF theta is density 1/theta. Layers the codec does not
 * compress (gk_spec_compresses(): fewer than 2 dimensions, fewer than min_elements
 * elements, or the codec's compresses() says no) are sent dense and count as exact in
 * the gain.
 *
 * Statistics. collect() compresses the EF-corrected input x locally (gk_codec_roundtrip)
 * to g_min = C(x, theta_min) and, multi-level, g_c = C(g_min, theta_s): the nonzero
 * entries of g_min (the compressed tensor) packed into a 1-D tensor and compressed at
 * density 1/theta_s, so g_c has CF theta_s * theta_min. It returns
 * [|x|^2, |g_min|^2, |g_c|^2]. For the dense layers all three are |x|^2. Its buffers
 * come from the worker's scratch arena and it only reads the policy's state, so it may
 * run for several layers at once (collect_concurrent): observe(), the only writer of
 * the state, never runs beside a collect(). The two compressions are the extra work
 * GraVAC costs each step: the second one runs on the packed nonzeros only, and the
 * arena is rewound between them so that they share its memory.
 *
 * Steps. GraVAC's gain is model-wide: observe() sums the three norms over all layers of
 * all buckets of one training step. A step is complete when a bucket step with a larger
 * step number arrives (or one more than a step smaller: the steps started again); a
 * bucket step one step behind (a bucket running late) is added to the step being
 * collected. A completed step s is processed at the first
 * bucket step of step t > s, and what it decides applies from step t + 1 on, so every
 * bucket of one step uses the same CF and the same candidates (the data of step s
 * decide step s + 2 when steps are consecutive).
 *
 * Per completed step (Algorithm 1):
 *  - delta_min and delta_c are EWMAs of |g_min|^2 / |x|^2 and |g_c|^2 / |x|^2 with
 *    smoothing factor a = N / 100 (N = the job's trainers, the paper's workers; clamped
 *    to 0.01..1): delta = (1 - a) delta + a * sample, the first sample taken as is. Each
 *    EWMA belongs to the candidate it measured; when theta_min or theta_s change, the
 *    old one is dropped and the next sample of the new candidate starts it anew (a step
 *    with |x| = 0 carries no information and is skipped: no 0/0).
 *  - T[CF] = Tsys * delta for the CF the step was sent with (dense: T[1] = Tsys), with
 *    Tsys = samples / step seconds (samples from the trainers' hints; without a samples
 *    hint 1 sample per step, and T is cleared when the unit changes). The step time is
 *    the mean of the step's buckets' step_ms, each the slowest node's: the node that
 *    paces the synchronous job, so Tsys is the job's throughput. T[CF] is the mean over
 *    the steps of the latest window in which CF was sent.
 *  - From the end of the first window on, the CF of the next step is Algorithm 1's:
 *    theta_s * theta_min if delta_c >= eps, else theta_min if delta_min >= eps, else
 *    dense (which also clears the residual: the engine zeroes x on a codec change).
 *    A candidate not measured yet (right after a window changed it) does not qualify:
 *    theta_min is sent until it is (two steps, so a window of fewer than 3 steps never
 *    sends its candidate). No decision is made before the first window fills
 *    (the EWMAs are not established yet): until then every step sends theta_min.
 *  - Every `window` steps (CheckGraVAC):
 *    1. theta_min scale-up: if |delta_min - delta_c| / delta_min <= omega and
 *       delta_c >= eps, theta_min becomes the candidate just evaluated
 *       (theta_s * theta_min) and delta_min takes over delta_c. The paper scales theta_s
 *       first and then multiplies; that would make theta_min a CF nobody has measured,
 *       so the candidate whose gain matched is taken, as the paper's text describes
 *       ("escalate theta_min to the currently evaluated CF"). The paper has no eps
 *       condition here; without it two equally poor gains (both under eps, the job
 *       sending dense) would raise the fallback CF.
 *    2. theta_s = ScalingPolicy(theta_s): exp squares it (2, 4, 16, 256...; below 2 it
 *       restarts at 2, or it would stay at 1 forever), geo doubles it; capped so that
 *       theta_s * theta_min <= theta_max. With min 10, max 1000: exp candidates 20, 40,
 *       160, 1000; geo 20, 40, 80, 160, 320, 640, 1000.
 *    3. Throughput saturation: if the two largest T values differ by at most omega
 *       (relative to the smaller), theta_ideal is the lower CF of the two and
 *       theta_s = theta_ideal / theta_min (at least 1, capped as above).
 *
 * Every input of a decision is one of the arguments or a number observe() received
 * (identical on every node), so every node decides alike.
 *
 * Checkpoint: record "GRVC" version 1: the arguments (codec, min, max, eps, omega,
 * window, scaling), the step being collected, the live parameters and EWMAs, the regimes
 * with their reasons and the throughput table, field by field.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "gcomp.h"
#include "policy.h"

#define GV_NAME "gravac"
#define GV_TAG "GRVC"
#define GV_VERSION 1
#define GV_NSTATS 3
#define GV_MAX_T 32
#define GV_WHY 256
#define GV_KNOB "density" /* the knob a CF sets (as its inverse) */

enum { GV_DENSE = 0, GV_MIN = 1, GV_C = 2 };

/* What the steps from some step on use: the CF sent and the candidates measured. */
typedef struct gv_regime {
    uint8_t kind;        /* GV_DENSE, GV_MIN or GV_C */
    double cf;           /* the CF sent: 1 when dense */
    double theta_min;    /* the candidates collect() measures: theta_min and theta_s */
    double theta_s;
    char why[GV_WHY];    /* the reason, for the decision log */
} gv_regime;

/* An EWMA of one candidate's gain, tagged with the candidate it measures. */
typedef struct gv_ewma {
    uint8_t valid;       /* value holds a sample */
    double value;        /* the smoothed gain */
    double theta_min, theta_s; /* the candidate; theta_s is 0 for delta_min */
} gv_ewma;

/* The compression throughput of one CF: the mean over the steps of window `win`. */
typedef struct gv_tput {
    double cf;       /* the CF sent */
    double sum;      /* Tsys * gain summed over the steps of window win */
    int64_t n;       /* steps summed */
    int64_t win;     /* the window index */
    int64_t touched; /* the completed-step count when last updated (for eviction) */
} gv_tput;

/* The state (what a checkpoint keeps) and the arguments the rules read. */
typedef struct gv_persist {
    /* The arguments. */
    double arg_min, arg_max, arg_eps, arg_omega;
    int64_t arg_window;
    uint8_t arg_geo;     /* scaling=geo; 0: exp */
    /* The step being collected: its number and the sums over its bucket steps. */
    uint8_t open;        /* a step is being collected */
    int64_t step;
    double sx, smin, sc; /* |x|^2, |g_min|^2, |g_c|^2 over all layers */
    double ms_sum;       /* step_ms summed over the bucket steps that had one */
    double samples;      /* the latest samples hint */
    uint32_t ms_n;       /* bucket steps in ms_sum */
    uint8_t has_samples; /* samples holds a hint */
    /* Completed steps and the live parameters. */
    int64_t nsteps;
    double theta_min, theta_s;
    gv_ewma dmin, dc;    /* delta_min and delta_c */
    /* The regime before and from step `eff`. */
    gv_regime prev, cur;
    int64_t eff;
    /* Throughputs: unit 0 = steps per second, 1 = samples per second. */
    uint8_t t_unit;
    uint32_t nt;         /* entries of t in use */
    gv_tput t[GV_MAX_T];
} gv_persist;

typedef struct gv_state {
    gk_spec codec;   /* the codec as given (its density is replaced) */
    gk_spec dense;   /* "none" */
    double alpha;    /* EWMA smoothing factor */
    uint64_t seed;   /* the job's seed, for the codecs' shared randomness */
    gv_persist p;
} gv_state;

static const char *const gv_keys[] = {"codec", "min", "max", "eps", "omega", "window",
                                      "scaling", NULL};
static const char *const gv_spec_keys[] = {"codec", NULL};

/* The regime a step uses. */
static const gv_regime *gv_regime_at(const gv_state *s, int64_t step)
{
    return step >= s->p.eff ? &s->p.cur : &s->p.prev;
}

/* The codec at CF theta. */
static int gv_spec_cf(const gv_state *s, double theta, gk_spec *out)
{
    return gp_spec_with(&s->codec, GV_KNOB, 1.0 / theta, out);
}

/* Whether the codec's compression knob is its density. */
static bool gv_knob_is_density(const gk_codec *c)
{
    return c->knob && strcmp(c->knob, GV_KNOB) == 0;
}

/* A list of the codecs whose knob is the density, for error messages. */
static void gv_density_codecs(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < gk_ncodecs && n < len; i++)
        if (gv_knob_is_density(gk_codecs[i]))
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", gk_codecs[i]->name);
}

static int gv_create(const gp_args *a, const gp_env *env, void **state, char *err,
                     size_t errlen)
{
    gv_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    const char *codec = "topk", *scaling = "exp";
    double tmin = 10, tmax = 1000, eps = 0.7, omega = 0.01;
    long window = 500;
    int rc = GCOMP_OK;
    for (int i = 0; i < a->n && !rc; i++) {
        const char *k = a->keys[i], *v = a->vals[i];
        if (strcmp(k, "codec") == 0)
            codec = v;
        else if (strcmp(k, "min") == 0)
            rc = gp_arg_double(GV_NAME, k, v, 1, 1e9, &tmin, err, errlen);
        else if (strcmp(k, "max") == 0)
            rc = gp_arg_double(GV_NAME, k, v, 1, 1e9, &tmax, err, errlen);
        else if (strcmp(k, "eps") == 0)
            rc = gp_arg_double(GV_NAME, k, v, 0, 1, &eps, err, errlen);
        else if (strcmp(k, "omega") == 0)
            rc = gp_arg_double(GV_NAME, k, v, 0, 1, &omega, err, errlen);
        else if (strcmp(k, "window") == 0)
            rc = gp_arg_long(GV_NAME, k, v, 1, INT32_MAX, &window, err, errlen);
        else if (strcmp(k, "scaling") == 0)
            scaling = v;
    }
    if (!rc && strcmp(scaling, "exp") != 0 && strcmp(scaling, "geo") != 0) {
        snprintf(err, errlen, "policy '%s': scaling must be exp or geo, not '%s'", GV_NAME,
                 scaling);
        rc = GCOMP_INVALID;
    }
    if (!rc && tmin > tmax) {
        snprintf(err, errlen, "policy '%s': max (%g) must be at least min (%g)", GV_NAME, tmax,
                 tmin);
        rc = GCOMP_INVALID;
    }
    if (!rc) {
        char cerr[768];
        if (gk_spec_parse(codec, &s->codec, cerr, sizeof(cerr))) {
            snprintf(err, errlen, "policy '%s': codec: %s", GV_NAME, cerr);
            rc = GCOMP_INVALID;
        }
    }
    gk_spec probe;
    if (!rc && (!gv_knob_is_density(s->codec.codec) || gv_spec_cf(s, tmin, &probe) ||
                gv_spec_cf(s, tmax, &probe))) {
        char list[256];
        gv_density_codecs(list, sizeof(list));
        snprintf(err, errlen,
                 "policy '%s': codec must be a density-based sparsifier (its compression knob "
                 "the density: %s), not '%s'",
                 GV_NAME, list, codec);
        rc = GCOMP_INVALID;
    }
    if (!rc)
        rc = gk_spec_parse("none", &s->dense, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    int n = env->trainers > 0 ? env->trainers : (env->nodes > 0 ? env->nodes : 1);
    s->alpha = fmin(1.0, fmax(0.01, n / 100.0));
    s->seed = env->seed;
    gv_persist *p = &s->p;
    p->arg_min = tmin;
    p->arg_max = tmax;
    p->arg_eps = eps;
    p->arg_omega = omega;
    p->arg_window = window;
    p->arg_geo = strcmp(scaling, "geo") == 0;
    p->theta_min = tmin;
    /* The first step size is 2 for both policies (paper: CF 10x -> 20x). */
    p->theta_s = fmax(1.0, fmin(2.0, tmax / tmin));
    p->cur = (gv_regime){.kind = GV_MIN, .cf = tmin, .theta_min = tmin, .theta_s = p->theta_s};
    snprintf(p->cur.why, sizeof(p->cur.why), "first window (%ld steps): CF %g (theta_min)",
             window, tmin);
    p->prev = p->cur;
    *state = s;
    return GCOMP_OK;
}

static void gv_destroy(void *state)
{
    free(state);
}

static int gv_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out, char *why,
                     size_t whylen)
{
    const gv_state *s = state;
    const gv_regime *r = gv_regime_at(s, step);
    gk_spec sp;
    int rc = gv_spec_cf(s, r->kind == GV_DENSE ? r->theta_min : r->cf, &sp);
    if (rc)
        return rc;
    if (!gk_spec_compresses(&sp, &layer->geom)) {
        *out = s->dense;
        snprintf(why, whylen, "dense: %s does not compress this layer", s->codec.codec->name);
        return GCOMP_OK;
    }
    snprintf(why, whylen, "%s", r->why);
    *out = r->kind == GV_DENSE ? s->dense : sp;
    return GCOMP_OK;
}

static double gv_norm2(const float *v, size_t n)
{
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += (double)v[i] * (double)v[i];
    return acc;
}

static int gv_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                      const float *x, double *stats, const gk_exec *exec)
{
    (void)g;
    const gv_state *s = state;
    const gk_layer *geom = &layer->geom;
    const gv_regime *r = gv_regime_at(s, step);
    double nx = gv_norm2(x, geom->numel);
    stats[0] = stats[1] = stats[2] = nx;
    gk_spec smin, sc;
    int rc = gv_spec_cf(s, r->theta_min, &smin);
    if (rc || !gk_spec_compresses(&smin, geom))
        return rc;
    gk_exec host = gp_exec_host(exec);
    gk_arena *a = host.scratch;
    float *buf_min = gk_arena_alloc(a, geom->numel * sizeof(float));
    if (!buf_min)
        return GCOMP_NOMEM;
    gk_arena_mark mark = gk_arena_mark_get(a);
    rc = gk_codec_roundtrip(&smin, geom, x, buf_min, s->seed, (uint64_t)step, NULL, &host);
    if (rc)
        return rc;
    stats[1] = gv_norm2(buf_min, geom->numel);
    if (r->theta_s <= 1.0) {
        stats[2] = stats[1];
        return GCOMP_OK;
    }
    /* Multi-level: compress the compressed tensor (its nonzero entries) by theta_s, in the
       arena's memory the first compression's temporaries held. */
    gk_arena_release(a, mark);
    size_t nnz = 0;
    for (size_t i = 0; i < geom->numel; i++)
        nnz += buf_min[i] != 0.0f;
    if (nnz == 0) {
        stats[2] = 0;
        return GCOMP_OK;
    }
    float *pack = gk_arena_alloc(a, nnz * sizeof(float));
    float *out = gk_arena_alloc(a, nnz * sizeof(float));
    if (!pack || !out)
        return GCOMP_NOMEM;
    for (size_t i = 0, k = 0; i < geom->numel; i++)
        if (buf_min[i] != 0.0f)
            pack[k++] = buf_min[i];
    gk_layer packed = {.id = geom->id, .ndim = 1, .rows = nnz, .cols = 1, .numel = nnz};
    rc = gv_spec_cf(s, r->theta_s, &sc);
    if (!rc)
        rc = gk_codec_roundtrip(&sc, &packed, pack, out, s->seed, (uint64_t)step, NULL, &host);
    if (rc)
        return rc;
    stats[2] = gv_norm2(out, nnz);
    return GCOMP_OK;
}

/* Add a sample to an EWMA: it belongs to candidate (tm, ts); `live` says whether that
   is the candidate measured now (then a sample of it restarts a dropped EWMA). */
static void gv_ewma_add(gv_ewma *e, double tm, double ts, bool live, double sample,
                        double alpha)
{
    if (e->valid && e->theta_min == tm && e->theta_s == ts)
        e->value = (1.0 - alpha) * e->value + alpha * sample;
    else if (live)
        *e = (gv_ewma){.valid = 1, .value = sample, .theta_min = tm, .theta_s = ts};
}

/* Whether an EWMA measures candidate (tm, ts). */
static bool gv_ewma_is(const gv_ewma *e, double tm, double ts)
{
    return e->valid && e->theta_min == tm && e->theta_s == ts;
}

/* Record Tsys * gain for a CF in the mean of the current window. */
static void gv_tput_add(gv_persist *p, double cf, double value, int64_t win)
{
    gv_tput *t = NULL;
    for (uint32_t i = 0; i < p->nt && !t; i++)
        if (p->t[i].cf == cf)
            t = &p->t[i];
    if (!t && p->nt < GV_MAX_T)
        t = &p->t[p->nt++];
    if (!t) {
        /* Full: the entry updated least recently gives way. */
        t = &p->t[0];
        for (uint32_t i = 1; i < p->nt; i++)
            if (p->t[i].touched < t->touched)
                t = &p->t[i];
    }
    if (t->cf != cf || t->win != win)
        *t = (gv_tput){.cf = cf, .win = win};
    t->sum += value;
    t->n++;
    t->touched = p->nsteps;
}

static double gv_cap(const gv_persist *p, double ts)
{
    double cap = p->arg_max / p->theta_min;
    return fmax(1.0, fmin(ts, cap));
}

/* CheckGraVAC at a window's end; appends what changed to ev. */
static void gv_check(gv_state *s, char *ev, size_t evlen)
{
    gv_persist *p = &s->p;
    double tm0 = p->theta_min, ts0 = p->theta_s, cand = tm0 * ts0;
    size_t n = (size_t)snprintf(ev, evlen, "window %lld:", (long long)(p->nsteps / p->arg_window));
    /* 1. theta_min scale-up when the candidate's gain is within omega of theta_min's. */
    if (ts0 > 1.0 && gv_ewma_is(&p->dmin, tm0, 0) && gv_ewma_is(&p->dc, tm0, ts0) &&
        p->dmin.value > 0 && p->dc.value >= p->arg_eps &&
        fabs(p->dmin.value - p->dc.value) / p->dmin.value <= p->arg_omega) {
        p->theta_min = cand;
        p->dmin = (gv_ewma){.valid = 1, .value = p->dc.value, .theta_min = cand};
        if (n < evlen)
            n += (size_t)snprintf(ev + n, evlen - n, " theta_min %g -> %g;", tm0, cand);
    }
    /* 2. The scaling policy. */
    double ts = p->arg_geo ? 2.0 * ts0 : (ts0 < 2.0 ? 2.0 : ts0 * ts0);
    p->theta_s = gv_cap(p, ts);
    /* 3. Throughput saturation: the two largest T within omega -> the lower CF. */
    const gv_tput *a = NULL, *b = NULL;
    for (uint32_t i = 0; i < p->nt; i++) {
        const gv_tput *t = &p->t[i];
        if (t->n == 0)
            continue;
        double v = t->sum / (double)t->n;
        if (!a || v > a->sum / (double)a->n) {
            b = a;
            a = t;
        } else if (!b || v > b->sum / (double)b->n) {
            b = t;
        }
    }
    if (a && b) {
        double va = a->sum / (double)a->n, vb = b->sum / (double)b->n;
        if (vb > 0 && fabs(va - vb) / vb <= p->arg_omega) {
            double ideal = fmin(a->cf, b->cf);
            p->theta_s = gv_cap(p, ideal / p->theta_min);
            if (n < evlen)
                n += (size_t)snprintf(ev + n, evlen - n,
                                      " throughput saturated (T[%g] %.4g, T[%g] %.4g): CF %g;",
                                      a->cf, va, b->cf, vb, ideal);
        }
    }
    if (n < evlen)
        snprintf(ev + n, evlen - n, " theta_s %g -> %g", ts0, p->theta_s);
}

/* Algorithm 1's choice for the steps to come. */
static void gv_choose(const gv_state *s, gv_regime *r, const char *ev)
{
    const gv_persist *p = &s->p;
    double tm = p->theta_min, ts = p->theta_s, eps = p->arg_eps;
    bool has_c = gv_ewma_is(&p->dc, tm, ts), has_min = gv_ewma_is(&p->dmin, tm, 0);
    char w[100];
    *r = (gv_regime){.kind = GV_MIN, .cf = tm, .theta_min = tm, .theta_s = ts};
    if (p->nsteps < p->arg_window) {
        snprintf(w, sizeof(w), "first window (%lld of %lld steps): CF %g (theta_min)",
                 (long long)p->nsteps, (long long)p->arg_window, tm);
    } else if (has_c && p->dc.value >= eps) {
        r->kind = GV_C;
        r->cf = tm * ts;
        snprintf(w, sizeof(w), "gain %.3g >= eps %g: CF %g", p->dc.value, eps, r->cf);
    } else if (has_min && p->dmin.value >= eps) {
        if (has_c)
            snprintf(w, sizeof(w), "gain %.3g < eps %g at CF %g, %.3g at theta_min: CF %g",
                     p->dc.value, eps, tm * ts, p->dmin.value, tm);
        else
            snprintf(w, sizeof(w), "CF %g not measured yet, gain %.3g >= eps %g: CF %g", tm * ts,
                     p->dmin.value, eps, tm);
    } else if (!has_min) {
        snprintf(w, sizeof(w), "gain at theta_min %g not measured yet: CF %g", tm, tm);
    } else {
        r->kind = GV_DENSE;
        r->cf = 1;
        snprintf(w, sizeof(w), "gain %.3g at theta_min %g < eps %g: dense", p->dmin.value, tm,
                 eps);
    }
    if (ev[0])
        snprintf(r->why, sizeof(r->why), "%s; %s", ev, w);
    else
        snprintf(r->why, sizeof(r->why), "%s", w);
}

/* A step is complete: update the gains and the throughputs, decide from step `next`. */
static void gv_finish_step(gv_state *s, int64_t next)
{
    gv_persist *p = &s->p;
    const gv_regime used = *gv_regime_at(s, p->step);
    double tm = p->theta_min, ts = p->theta_s;
    bool has_gain = p->sx > 0;
    double gmin = has_gain ? p->smin / p->sx : 0, gc = has_gain ? p->sc / p->sx : 0;
    if (has_gain) {
        gv_ewma_add(&p->dmin, used.theta_min, 0, used.theta_min == tm, gmin, s->alpha);
        gv_ewma_add(&p->dc, used.theta_min, used.theta_s,
                    used.theta_min == tm && used.theta_s == ts, gc, s->alpha);
    }
    /* The throughput of the CF this step was sent with. */
    double ms = p->ms_n ? p->ms_sum / p->ms_n : 0;
    if (ms > 0) {
        uint8_t unit = p->has_samples && p->samples > 0;
        if (unit != p->t_unit) {
            p->nt = 0;
            p->t_unit = unit;
        }
        double tsys = (unit ? p->samples : 1.0) * 1000.0 / ms, gain = -1;
        if (used.kind == GV_DENSE)
            gain = 1;
        else if (used.kind == GV_C && used.cf == used.theta_min * used.theta_s)
            gain = gv_ewma_is(&p->dc, used.theta_min, used.theta_s) ? p->dc.value : gc;
        else if (used.cf == used.theta_min)
            gain = gv_ewma_is(&p->dmin, used.theta_min, 0) ? p->dmin.value : gmin;
        if (gain >= 0 && (used.kind == GV_DENSE || has_gain))
            gv_tput_add(p, used.cf, tsys * gain, p->nsteps / p->arg_window);
    }
    p->nsteps++;
    char ev[150] = "";
    if (p->nsteps % p->arg_window == 0)
        gv_check(s, ev, sizeof(ev));
    gv_regime r;
    gv_choose(s, &r, ev);
    p->prev = *gv_regime_at(s, next);
    p->cur = r;
    p->eff = next + 1;
}

static int gv_observe(void *state, const gp_step_info *info)
{
    gv_state *s = state;
    gv_persist *p = &s->p;
    /* A larger step number completes the step being collected; one more than a step
       behind means the steps started again (a restart): that completes it as well. */
    bool next = p->open && (info->step > p->step || info->step < p->step - 1);
    if (next)
        gv_finish_step(s, info->step);
    if (!p->open || next) {
        p->open = 1;
        p->step = info->step;
        p->sx = p->smin = p->sc = p->ms_sum = p->samples = 0;
        p->ms_n = p->has_samples = 0;
    }
    for (int i = 0; info->stats && i < info->nlayers; i++) {
        const double *st = info->stats + (size_t)i * GV_NSTATS;
        p->sx += st[0];
        p->smin += st[1];
        p->sc += st[2];
    }
    if (info->step_ms > 0) {
        p->ms_sum += info->step_ms;
        p->ms_n++;
    }
    if (info->hints && info->hints->has_samples) {
        p->has_samples = 1;
        p->samples = (double)info->hints->samples;
    }
    return GCOMP_OK;
}

static void gv_put_regime(gk_writer *w, const gv_regime *r)
{
    gk_put(w, r->kind);
    gk_put(w, r->cf);
    gk_put(w, r->theta_min);
    gk_put(w, r->theta_s);
    gk_put_str(w, r->why);
}

static bool gv_get_regime(gk_reader *r, gv_regime *g)
{
    if (!(gk_get(r, &g->kind) && gk_get(r, &g->cf) && gk_get(r, &g->theta_min) &&
          gk_get(r, &g->theta_s) && gk_get_str(r, g->why, sizeof(g->why))))
        return false;
    if (g->kind > GV_C || !(g->cf >= 1) || !(g->theta_min >= 1) || !(g->theta_s >= 1))
        return gk_reader_fail(r, "%s checkpoint: regime %u with CF %g (theta_min %g, theta_s "
                              "%g) out of range", GV_NAME, g->kind, g->cf, g->theta_min,
                              g->theta_s);
    return true;
}

static void gv_put_ewma(gk_writer *w, const gv_ewma *e)
{
    gk_put(w, e->valid);
    gk_put(w, e->value);
    gk_put(w, e->theta_min);
    gk_put(w, e->theta_s);
}

static bool gv_get_ewma(gk_reader *r, gv_ewma *e)
{
    return gk_get(r, &e->valid) && gk_get(r, &e->value) && gk_get(r, &e->theta_min) &&
           gk_get(r, &e->theta_s);
}

static int gv_save(void *state, gk_writer *w)
{
    const gv_state *s = state;
    const gv_persist *p = &s->p;
    gk_put_tag(w, GV_TAG, GV_VERSION);
    gk_put_str(w, s->codec.codec->name);
    gk_put(w, p->arg_min);
    gk_put(w, p->arg_max);
    gk_put(w, p->arg_eps);
    gk_put(w, p->arg_omega);
    gk_put(w, p->arg_window);
    gk_put_str(w, p->arg_geo ? "geo" : "exp");
    gk_put(w, p->open);
    gk_put(w, p->step);
    gk_put(w, p->sx);
    gk_put(w, p->smin);
    gk_put(w, p->sc);
    gk_put(w, p->ms_sum);
    gk_put(w, p->samples);
    gk_put(w, p->ms_n);
    gk_put(w, p->has_samples);
    gk_put(w, p->nsteps);
    gk_put(w, p->theta_min);
    gk_put(w, p->theta_s);
    gv_put_ewma(w, &p->dmin);
    gv_put_ewma(w, &p->dc);
    gv_put_regime(w, &p->prev);
    gv_put_regime(w, &p->cur);
    gk_put(w, p->eff);
    gk_put(w, p->t_unit);
    gk_put(w, p->nt);
    for (uint32_t i = 0; i < p->nt; i++) {
        gk_put(w, p->t[i].cf);
        gk_put(w, p->t[i].sum);
        gk_put(w, p->t[i].n);
        gk_put(w, p->t[i].win);
        gk_put(w, p->t[i].touched);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

static int gv_load(void *state, gk_reader *r)
{
    gv_state *s = state;
    const gv_persist *p = &s->p;
    gv_persist q = *p; /* the arguments stay; the state is read over them */
    bool ok = gk_get_tag(r, GV_TAG, GV_VERSION, NULL) &&
              gp_ckpt_arg_str(r, GV_NAME, "codec", s->codec.codec->name) &&
              gp_ckpt_arg_f64(r, GV_NAME, "min", p->arg_min) &&
              gp_ckpt_arg_f64(r, GV_NAME, "max", p->arg_max) &&
              gp_ckpt_arg_f64(r, GV_NAME, "eps", p->arg_eps) &&
              gp_ckpt_arg_f64(r, GV_NAME, "omega", p->arg_omega) &&
              gp_ckpt_arg_i64(r, GV_NAME, "window", p->arg_window) &&
              gp_ckpt_arg_str(r, GV_NAME, "scaling", p->arg_geo ? "geo" : "exp") &&
              gk_get(r, &q.open) && gk_get(r, &q.step) && gk_get(r, &q.sx) &&
              gk_get(r, &q.smin) && gk_get(r, &q.sc) && gk_get(r, &q.ms_sum) &&
              gk_get(r, &q.samples) && gk_get(r, &q.ms_n) && gk_get(r, &q.has_samples) &&
              gk_get(r, &q.nsteps) && gk_get(r, &q.theta_min) && gk_get(r, &q.theta_s) &&
              gv_get_ewma(r, &q.dmin) && gv_get_ewma(r, &q.dc) &&
              gv_get_regime(r, &q.prev) && gv_get_regime(r, &q.cur) && gk_get(r, &q.eff) &&
              gk_get(r, &q.t_unit) && gk_get(r, &q.nt);
    if (ok && (q.nt > GV_MAX_T || !(q.theta_min >= 1) || !(q.theta_s >= 1) || q.nsteps < 0))
        ok = gk_reader_fail(r, "%s checkpoint: %u throughputs (at most %d), theta_min %g, "
                            "theta_s %g, %lld steps", GV_NAME, q.nt, GV_MAX_T, q.theta_min,
                            q.theta_s, (long long)q.nsteps);
    for (uint32_t i = 0; ok && i < q.nt; i++)
        ok = gk_get(r, &q.t[i].cf) && gk_get(r, &q.t[i].sum) && gk_get(r, &q.t[i].n) &&
             gk_get(r, &q.t[i].win) && gk_get(r, &q.t[i].touched);
    if (!ok)
        return gp_ckpt_status(r);
    s->p = q;
    return GCOMP_OK;
}

const gp_policy gp_policy_gravac = {
    .name = GV_NAME,
    .summary = "GraVAC: one model-wide compression factor scaled up while the compression "
               "gain stays above eps, capped where the throughput saturates",
    .keys = gv_keys,
    .spec_keys = gv_spec_keys,
    .keys_help = "codec (topk; its knob must be density); min (10), max (1000): CF range; eps (0.7); omega (0.01); window (500 steps); scaling (exp|geo, exp)",
    .nstats = GV_NSTATS,
    .collect_concurrent = true,
    .create = gv_create,
    .destroy = gv_destroy,
    .decide = gv_decide,
    .collect = gv_collect,
    .observe = gv_observe,
    .save = gv_save,
    .load = gv_load,
};
