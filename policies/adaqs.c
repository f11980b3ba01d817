/*
 * adaqs: the AdaQS baseline (Guo et al., ICASSP 2020; algorithms.md 3.5), the adaptive
 * policy Accordion compares against. Per layer it tracks the gradient's mean-to-standard-
 * deviation ratio (MSDR); whenever the MSDR has fallen by `factor` since the layer's last
 * switch (or since the first MSDR observed), it halves the compression by doubling the
 * codec parameter (rank, density, bits, levels), capped at max:
 *   adaqs:codec=topk:density=0.01,factor=2,max=0.16
 *   adaqs:codec=maxmin,start=2,max=8
 *
 * collect() reports sum(g), sum(g^2) and numel per layer; observe() gets their averages
 * over the nodes, so mean = sum / numel and std = sqrt(sum2 / numel - mean^2) pool the
 * elements of every node's gradient. The MSDR is |mean| / std, checked every step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "levels.h"
#include "policy.h"

#define AQ_NAME "adaqs"
#define AQ_MAGIC "GPADAQS1"

enum { WHY_START, WHY_SWITCH };

typedef struct aq_layer {
    double value;      /* the parameter's current value */
    double ref;        /* the MSDR at the last switch, or the first one observed */
    double from;       /* the switch: the value before it */
    double ref_from;   /* the switch: the reference MSDR it was measured against */
    int32_t why;       /* WHY_START or WHY_SWITCH */
    uint8_t has_ref;
} aq_layer;

typedef struct aq_state {
    gk_spec codec;
    char param[32];
    double start, factor, max;
    gp_lmap layers;  /* aq_layer by layer id */
} aq_state;

static const char *const aq_keys[] = {"codec", "param", "start", "factor", "max", NULL};
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
    const char *codec = "powersgd", *param = NULL, *start = NULL, *max = NULL;
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
        else if (strcmp(k, "factor") == 0)
            rc = gp_arg_double(AQ_NAME, k, v, 1, 1e12, &s->factor, err, errlen);
    }
    if (!rc)
        rc = gp_levels_codec(AQ_NAME, codec, param, &s->codec, s->param, sizeof(s->param), err,
                             errlen);
    if (rc)
        return rc;
    /* Defaults: the codec spec's own value to start from, the codec's largest to stop at. */
    s->start = gk_spec_get(&s->codec, s->param);
    s->max = gp_levels_param(s->codec.codec, s->param)->max;
    if (start)
        rc = gp_levels_value(AQ_NAME, "start", start, &s->codec, s->param, &s->start, err,
                             errlen);
    if (!rc && max)
        rc = gp_levels_value(AQ_NAME, "max", max, &s->codec, s->param, &s->max, err, errlen);
    if (!rc && !(s->start > 0)) {
        snprintf(err, errlen, "policy '%s': start must be > 0 (it is doubled), not %g", AQ_NAME,
                 s->start);
        rc = GCOMP_INVALID;
    }
    if (!rc && s->start > s->max) {
        snprintf(err, errlen, "policy '%s': start (%g) must not exceed max (%g)", AQ_NAME,
                 s->start, s->max);
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

static aq_layer *layer_get(aq_state *s, uint32_t id)
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
                      const float *x, double *stats)
{
    (void)state;
    (void)step;
    (void)x;
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
        } else if (msdr <= l->ref / s->factor && l->value < s->max) {
            l->from = l->value;
            l->ref_from = l->ref;
            l->value = fmin(2 * l->value, s->max);
            l->ref = msdr;
            l->why = WHY_SWITCH;
        }
    }
    return GCOMP_OK;
}

static int aq_save(void *state, FILE *f)
{
    const aq_state *s = state;
    double fp[3] = {s->start, s->factor, s->max};
    uint64_t n = s->layers.n;
    int rc = gp_levels_put(f, AQ_MAGIC, 8) || gp_levels_put(f, fp, sizeof(fp)) || GP_PUT(f, n)
                 ? GCOMP_IO
                 : GCOMP_OK;
    for (size_t i = 0; i < s->layers.n && !rc; i++) {
        const aq_layer *l = s->layers.items[i];
        rc = GP_PUT(f, s->layers.ids[i]) || GP_PUT(f, l->value) || GP_PUT(f, l->ref) ||
                     GP_PUT(f, l->from) || GP_PUT(f, l->ref_from) || GP_PUT(f, l->why) ||
                     GP_PUT(f, l->has_ref)
                 ? GCOMP_IO
                 : GCOMP_OK;
    }
    return rc;
}

static int aq_load(void *state, FILE *f)
{
    aq_state *s = state;
    char magic[8];
    double fp[3], want[3] = {s->start, s->factor, s->max};
    uint64_t n;
    if (gp_levels_get(f, magic, 8) || memcmp(magic, AQ_MAGIC, 8) ||
        gp_levels_get(f, fp, sizeof(fp)) || memcmp(fp, want, sizeof(fp)) || GP_GET(f, n) ||
        n > UINT32_MAX)
        return GCOMP_INVALID;
    gp_lmap m = {0};
    int rc = GCOMP_OK;
    for (uint64_t i = 0; i < n && !rc; i++) {
        uint32_t id;
        aq_layer *l = calloc(1, sizeof(*l));
        if (!l) {
            rc = GCOMP_NOMEM;
            break;
        }
        rc = GP_GET(f, id) || GP_GET(f, l->value) || GP_GET(f, l->ref) || GP_GET(f, l->from) ||
                     GP_GET(f, l->ref_from) || GP_GET(f, l->why) || GP_GET(f, l->has_ref)
                 ? GCOMP_IO
                 : GCOMP_OK;
        gk_spec tmp;
        if (!rc && (gp_lmap_find(&m, id) || (l->why != WHY_START && l->why != WHY_SWITCH) ||
                    l->value > s->max || gp_spec_with(&s->codec, s->param, l->value, &tmp)))
            rc = GCOMP_INVALID;
        if (!rc)
            rc = gp_lmap_add(&m, id, l);
        if (rc)
            free(l);
    }
    if (rc) {
        gp_lmap_clear(&m, free);
        return rc;
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
    .nstats = 3,
    .create = aq_create,
    .destroy = aq_destroy,
    .decide = aq_decide,
    .collect = aq_collect,
    .observe = aq_observe,
    .save = aq_save,
    .load = aq_load,
};
