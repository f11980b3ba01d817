/*
 * adaqs: the AdaQS baseline (Guo et al., ICASSP 2020; algorithms.md 3.5), the adaptive
 * policy Accordion compares against. Per layer it tracks the gradient's mean-to-standard-
 * deviation ratio (MSDR); whenever the MSDR has fallen by `factor` since the layer's last
 * switch (or since the first MSDR observed), it halves the compression by moving the
 * codec's compression knob (gk_codec.knob) a factor 2 towards less compression: doubling
 * the rank, density, bits or levels (knob_more -1), halving a knob that compresses more
 * when larger (threshold's lambda, knob_more +1), up to a limit:
 *   adaqs:codec=topk:density=0.01,factor=2,max=0.16
 *   adaqs:codec=maxmin,start=2,max=8
 *   adaqs:codec=threshold,start=0.01,min=0.001
 *
 * Keys (defaults): codec (powersgd), param (the knob; the only parameter AdaQS can move,
 * since only the knob's direction is known), start (the codec spec's value), factor (2),
 * max for a knob that compresses less when larger, min for one that compresses less when
 * smaller (the knob's largest or smallest value).
 *
 * collect() reports sum(g), sum(g^2) and numel per layer; observe() gets their averages
 * over the nodes, so mean = sum / numel and std = sqrt(sum2 / numel - mean^2) pool the
 * elements of every node's gradient. The MSDR is |mean| / std, checked every step.
 * collect() reads nothing of the state, so it may run for several layers at once.
 *
 * Checkpoint: record "ADQS" version 1: the arguments (codec, param, start, factor, the
 * limit), then per layer in insertion order its id, value, references and reason.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "gcomp.h"
#include "levels.h"
#include "policy.h"

#define AQ_NAME "adaqs"
#define AQ_TAG "ADQS"
#define AQ_VERSION 1

enum { WHY_START, WHY_SWITCH };

typedef struct aq_layer {
    double value;      /* the parameter's current value */
    double ref;        /* the MSDR at the last switch, or the first one observed */
    double from;       /* the switch: the value before it */
    double ref_from;   /* the switch: the reference MSDR it was measured against */
    uint8_t why;       /* WHY_START or WHY_SWITCH */
    uint8_t has_ref;   /* ref holds an MSDR */
} aq_layer;

typedef struct aq_state {
    gk_spec codec;   /* the codec as given; decide() sets param */
    char param[32];  /* the codec's knob */
    int more;        /* +1: a larger value compresses more (halve it); -1: double it */
    double start;    /* the value every layer starts with */
    double factor;   /* the fall of the MSDR that triggers a switch */
    double limit;    /* the least compressing value a switch may reach (max or min) */
    gp_lmap layers;  /* aq_layer by layer id, made by decide() */
} aq_state;

static const char *const aq_keys[] = {"codec", "param", "start", "factor", "max", "min", NULL};
static const char *const aq_spec_keys[] = {"codec", NULL};

static void aq_destroy(void *state)
{
    aq_state *s = state;
    if (!s)
        return;
    gp_lmap_clear(&s->layers, free);
    free(s);
}

static int aq_parse(aq_state *s, const gp_args *a, char *err, size_t errlen)
{
    const char *codec = "powersgd", *param = NULL, *start = NULL, *max = NULL, *min = NULL;
    int rc = GCOMP_OK;
    for (int i = 0; i < a->n && !rc; i++) {
        const char *k = a->keys[i], *v = a->vals[i];
        if (strcmp(k, "codec") == 0)
            codec = v;
        else if (strcmp(k, "param") == 0)
            param = v;
        else if (strcmp(k, "start") == 0)
            start = v;
        else if (strcmp(k, "max") == 0)
            max = v;
        else if (strcmp(k, "min") == 0)
            min = v;
        else if (strcmp(k, "factor") == 0)
            rc = gp_arg_double(AQ_NAME, k, v, 1, 1e12, &s->factor, err, errlen);
    }
    if (!rc)
        rc = gp_levels_codec(AQ_NAME, codec, param, &s->codec, s->param, sizeof(s->param), err,
                             errlen);
    if (rc)
        return rc;
    const gk_codec *c = s->codec.codec;
    if (strcmp(s->param, c->knob ? c->knob : "") != 0) {
        snprintf(err, errlen, "policy '%s': param: AdaQS moves the codec's compression knob "
                 "(%s%s), whose direction is known, not '%s'", AQ_NAME,
                 c->knob ? c->knob : "none for codec ", c->knob ? "" : c->name, s->param);
        return GCOMP_INVALID;
    }
    gk_spec_knob(&s->codec, &s->start, &s->more);
    /* The limit is on the side of less compression: max when larger compresses less. */
    const gk_param_desc *d = gp_levels_param(c, s->param);
    const char *lkey = s->more < 0 ? "max" : "min", *lval = s->more < 0 ? max : min;
    if (s->more < 0 ? min != NULL : max != NULL) {
        snprintf(err, errlen, "policy '%s': codec '%s' compresses less with a %s %s: the "
                 "limit is %s=, not %s=", AQ_NAME, c->name, s->more < 0 ? "larger" : "smaller",
                 s->param, lkey, s->more < 0 ? "min" : "max");
        return GCOMP_INVALID;
    }
    s->limit = s->more < 0 ? d->max : d->min;
    if (start)
        rc = gp_levels_value(AQ_NAME, "start", start, &s->codec, s->param, &s->start, err,
                             errlen);
    if (!rc && lval)
        rc = gp_levels_value(AQ_NAME, lkey, lval, &s->codec, s->param, &s->limit, err, errlen);
    if (!rc && !(s->start > 0)) {
        snprintf(err, errlen, "policy '%s': start must be > 0 (it is %s), not %g", AQ_NAME,
                 s->more < 0 ? "doubled" : "halved", s->start);
        rc = GCOMP_INVALID;
    }
    if (!rc && (s->more < 0 ? s->start > s->limit : s->start < s->limit)) {
        snprintf(err, errlen, "policy '%s': start (%g) must not %s %s (%g)", AQ_NAME, s->start,
                 s->more < 0 ? "exceed" : "be below", lkey, s->limit);
        rc = GCOMP_INVALID;
    }
    return rc;
}

static int aq_create(const gp_args *a, const gp_env *env, void **state, char *err, size_t errlen)
{
    (void)env;
    aq_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    s->factor = 2;
    int rc = aq_parse(s, a, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *state = s;
    return GCOMP_OK;
}

/* The layer's state, made (at start) when there is none; NULL when out of memory. */
static aq_layer *layer_get(aq_state *s, uint64_t id)
{
    aq_layer *l = gp_lmap_find(&s->layers, id);
    if (l)
        return l;
    l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->value = s->start;
    l->why = WHY_START;
    if (gp_lmap_add(&s->layers, id, l)) {
        free(l);
        return NULL;
    }
    return l;
}

static int aq_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out, char *why,
                     size_t whylen)
{
    (void)step;
    aq_state *s = state;
    const aq_layer *l = layer_get(s, layer->geom.id);
    if (!l)
        return GCOMP_NOMEM;
    int rc = gp_spec_with(&s->codec, s->param, l->value, out);
    if (rc)
        return rc;
    if (l->why == WHY_SWITCH)
        snprintf(why, whylen, "MSDR fell to %.4g from %.4g (factor %g): %s %g -> %g", l->ref,
                 l->ref_from, s->factor, s->param, l->from, l->value);
    else
        snprintf(why, whylen, "start: %s %g", s->param, l->value);
    return GCOMP_OK;
}

static int aq_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                      const float *x, double *stats, const gk_exec *exec)
{
    (void)state;
    (void)step;
    (void)x;
    (void)exec;
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < layer->geom.numel; i++) {
        sum += g[i];
        sum2 += (double)g[i] * g[i];
    }
    stats[0] = sum;
    stats[1] = sum2;
    stats[2] = (double)layer->geom.numel;
    return GCOMP_OK;
}

/* The value a factor 2 towards less compression, at most up to the limit (an integer
   parameter stays an integer). */
static double aq_less_compression(const aq_state *s, double v)
{
    if (s->more < 0)
        return fmin(2 * v, s->limit);
    double half = gp_levels_param(s->codec.codec, s->param)->integer ? floor(v / 2) : v / 2;
    return fmax(half, s->limit);
}

static int aq_observe(void *state, const gp_step_info *info)
{
    aq_state *s = state;
    for (int i = 0; i < info->nlayers && info->stats; i++) {
        aq_layer *l = layer_get(s, info->layers[i].geom.id);
        if (!l)
            return GCOMP_NOMEM;
        const double *st = info->stats + 3 * i;
        if (!(st[2] > 0))
            continue;
        double mean = st[0] / st[2], var = st[1] / st[2] - mean * mean;
        if (!(var > 0) || !isfinite(var) || !isfinite(mean))
            continue; /* a constant or empty gradient has no MSDR */
        double msdr = fabs(mean) / sqrt(var);
        if (!l->has_ref) {
            l->has_ref = 1;
            l->ref = msdr;
        } else if (msdr <= l->ref / s->factor && l->value != s->limit) {
            l->from = l->value;
            l->ref_from = l->ref;
            l->value = aq_less_compression(s, l->value);
            l->ref = msdr;
            l->why = WHY_SWITCH;
        }
    }
    return GCOMP_OK;
}

static int aq_save(void *state, gk_writer *w)
{
    const aq_state *s = state;
    gk_put_tag(w, AQ_TAG, AQ_VERSION);
    gk_put_str(w, s->codec.codec->name);
    gk_put_str(w, s->param);
    gk_put(w, s->start);
    gk_put(w, s->factor);
    gk_put(w, s->limit);
    gk_put(w, (uint64_t)s->layers.n);
    for (size_t i = 0; i < s->layers.n; i++) {
        const aq_layer *l = s->layers.items[i];
        gk_put(w, s->layers.ids[i]);
        gk_put(w, l->value);
        gk_put(w, l->ref);
        gk_put(w, l->from);
        gk_put(w, l->ref_from);
        gk_put(w, l->why);
        gk_put(w, l->has_ref);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

/* Whether v lies between start and the limit (the values a layer can hold). */
static bool aq_reachable(const aq_state *s, double v)
{
    gk_spec tmp;
    return fmin(s->start, s->limit) <= v && v <= fmax(s->start, s->limit) &&
           !gp_spec_with(&s->codec, s->param, v, &tmp);
}

static int aq_load(void *state, gk_reader *r)
{
    aq_state *s = state;
    uint64_t n = 0;
    bool ok = gk_get_tag(r, AQ_TAG, AQ_VERSION, NULL) &&
              gp_ckpt_arg_str(r, AQ_NAME, "codec", s->codec.codec->name) &&
              gp_ckpt_arg_str(r, AQ_NAME, "param", s->param) &&
              gp_ckpt_arg_f64(r, AQ_NAME, "start", s->start) &&
              gp_ckpt_arg_f64(r, AQ_NAME, "factor", s->factor) &&
              gp_ckpt_arg_f64(r, AQ_NAME, s->more < 0 ? "max" : "min", s->limit) &&
              gp_ckpt_count(r, "layers", UINT32_MAX, &n);
    gp_lmap m = {0};
    for (uint64_t i = 0; i < n && ok; i++) {
        uint64_t id;
        aq_layer *l = calloc(1, sizeof(*l));
        if (!l) {
            ok = gk_reader_fail(r, "out of memory");
            break;
        }
        ok = gk_get(r, &id) && gk_get(r, &l->value) && gk_get(r, &l->ref) &&
             gk_get(r, &l->from) && gk_get(r, &l->ref_from) && gk_get(r, &l->why) &&
             gk_get(r, &l->has_ref);
        if (ok && gp_lmap_find(&m, id))
            ok = gk_reader_fail(r, "%s checkpoint: layer %#llx twice", AQ_NAME,
                                (unsigned long long)id);
        if (ok && (l->why > WHY_SWITCH || !aq_reachable(s, l->value)))
            ok = gk_reader_fail(r, "%s checkpoint: layer %#llx at %s %g (reason %u), outside "
                                "%g..%g", AQ_NAME, (unsigned long long)id, s->param, l->value,
                                l->why, fmin(s->start, s->limit), fmax(s->start, s->limit));
        if (ok && gp_lmap_add(&m, id, l))
            ok = gk_reader_fail(r, "out of memory");
        if (!ok)
            free(l);
    }
    if (!ok) {
        gp_lmap_clear(&m, free);
        return gp_ckpt_status(r);
    }
    gp_lmap_clear(&s->layers, free);
    s->layers = m;
    return GCOMP_OK;
}

const gp_policy gp_policy_adaqs = {
    .name = AQ_NAME,
    .summary = "AdaQS baseline: per layer, double the codec parameter (halve the compression) "
               "whenever the gradient's mean/std ratio has fallen by factor since the last switch",
    .keys = aq_keys,
    .spec_keys = aq_spec_keys,
    .keys_help = "codec (powersgd); param (the knob); start (the spec's value); factor (2); max or min (the knob's limit)",
    .nstats = 3,
    .collect_concurrent = true,
    .create = aq_create,
    .destroy = aq_destroy,
    .decide = aq_decide,
    .collect = aq_collect,
    .observe = aq_observe,
    .save = aq_save,
    .load = aq_load,
};
