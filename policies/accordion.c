/*
 * accordion: Accordion (Agarwal et al., MLSys 2021; algorithms.md 3.2). Each layer uses
 * one of two values of one codec parameter: low (less compression, for critical
 * regimes) or high (more compression, elsewhere):
 *   accordion:codec=powersgd:rank=2,low=2,high=1,interval=10
 *   accordion:codec=topk,low=0.99,high=0.1,epochs=10,batch_low=512,batch_high=4096
 *
 * Per layer the policy sums the gradient over a window (collect() adds g to a per-node
 * accumulator and reports ||acc||^2; the engine averages that over the nodes). At every
 * check the window's norm N is compared with the previous window's:
 *   first check (no previous norm)   -> low ("first interval")
 *   previous norm 0                  -> low (critical)
 *   |N_prev - N| / N_prev >= eta     -> low (critical regime), else high
 * and the accumulator starts again. The norm is thus the root of the nodes' mean of
 * their own accumulated squared norms, not the norm of the job's mean gradient summed
 * over the window (which no policy is handed); the noise it adds shrinks relative to
 * the signal as the window grows. Checks come every `interval` steps (at the end of
 * steps interval-1, 2*interval-1, ...) or, with epochs=F, at every F-th epoch end the
 * trainers report. Whenever the learning rate (from the hints) decays, every layer goes
 * to low until its next check. With batch_low and batch_high the same rule, applied to
 * the whole model's norm once every layer has had its check of a round, chooses the
 * batch size the trainers are advised to use (lr_scale = batch / batch_low).
 *
 * Keys (defaults): codec (powersgd), param (rank for powersgd*, bits for maxmin, levels
 * for qsgd, density otherwise), low and high (rank 2 and 1, density 0.99 and 0.1; other
 * parameters must be given), eta (0.5), interval (10 steps) or epochs (F), window (epochs
 * mode: last = the epoch before each check, the paper's; all = every epoch since the
 * previous check), lr_drop (0: any decrease of the LR is a decay; f > 0: only a fall
 * below (1 - f) times the LR of the previous decay or the highest LR since, for schedules
 * that lower the LR a little every step), batch_low and batch_high (no
 * advice without them), batch_up_only (0; 1: never advise batch_low again once batch_high
 * was advised, as the paper's batch-size runs did).
 *
 * Epoch counts: the hints' epoch counter is this node's own count (not averaged by the
 * engine), so it cannot drive a decision directly: every node must decide the same.
 * collect() therefore reports the count this node had seen at its previous observe() as
 * a second statistic; observe() uses the nodes' average of it, identical everywhere
 * (floored: an epoch counts once the average reaches it). The price is one step of lag.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "levels.h"
#include "policy.h"

#define ACC_NAME "accordion"
#define ACC_MAGIC "GPACCRD1"

enum { ACC_LOW = 0, ACC_HIGH = 1 };
enum { WHY_FIRST, WHY_CRITICAL, WHY_PREV_ZERO, WHY_STABLE, WHY_LR };

/* A level and the reason for it, for one layer or (batch size) the whole model. */
typedef struct acc_level {
    int32_t level, why;
    double ratio;           /* the relative norm change found by the latest check */
    double lr_from, lr_to;  /* the learning-rate decay that forced low */
    int64_t lr_step;        /* step at which that decay was seen; -1: none pending */
} acc_level;

typedef struct acc_layer {
    acc_level lv;
    int64_t nchecks;   /* checks done */
    int64_t round;     /* round of the latest check (interval or F-epoch index); -1 none */
    int64_t epochs;    /* (averaged) epoch count at the layer's latest observe; -1 unknown */
    int64_t nacc;      /* steps in the accumulator */
    double prev_sq;    /* ||acc||^2 (mean over nodes) of the window before the latest */
    double last_sq;    /* ||acc||^2 (mean over nodes) of the latest checked window */
    uint64_t numel;
    float *acc;        /* sum of this node's g over the current window; NULL before collect */
} acc_layer;

typedef struct acc_state {
    gk_spec codec;
    char param[32];
    double low, high, eta, lr_drop;
    long interval;      /* steps between checks (steps mode) */
    long epochs;        /* F: check at every F-th epoch end; 0: steps mode */
    long window_all;    /* epochs mode: 1 = sum over all F epochs, 0 = the last epoch only */
    long batch_low, batch_high, batch_up_only;
    gp_lmap layers;     /* acc_layer by layer id */
    int64_t local_epochs; /* this node's epoch count from the hints; -1 before any */
    uint8_t has_lr;
    double lr_ref;      /* the learning rate a decay is measured against */
    acc_level model;    /* the whole model's level (batch size) */
    int64_t model_round;
    int64_t batch, batch_step;
} acc_state;

static const char *const acc_keys[] = {"codec",     "param",      "low",          "high",
                                       "eta",       "interval",   "epochs",       "window",
                                       "lr_drop",   "batch_low",  "batch_high",
                                       "batch_up_only", NULL};
static const char *const acc_spec_keys[] = {"codec", NULL};

static void layer_free(void *p)
{
    acc_layer *l = p;
    if (l)
        free(l->acc);
    free(l);
}

static void acc_destroy(void *state)
{
    acc_state *s = state;
    if (!s)
        return;
    gp_lmap_clear(&s->layers, layer_free);
    free(s);
}

/* The paper's levels, where it gives them: PowerSGD rank 2 / 1, Top-K 99% / 10%. */
static int default_level(const char *param, int high, double *out)
{
    if (strcmp(param, "rank") == 0)
        *out = high ? 1 : 2;
    else if (strcmp(param, "density") == 0)
        *out = high ? 0.1 : 0.99;
    else
        return GCOMP_INVALID;
    return GCOMP_OK;
}

static int acc_parse(acc_state *s, const gp_args *a, char *err, size_t errlen)
{
    const char *codec = "powersgd", *param = NULL, *low = NULL, *high = NULL, *window = NULL;
    bool has_interval = false, has_batch_low = false, has_batch_high = false;
    int rc = GCOMP_OK;
    for (int i = 0; i < a->n && !rc; i++) {
        const char *k = a->keys[i], *v = a->vals[i];
        if (strcmp(k, "codec") == 0)
            codec = v;
        else if (strcmp(k, "param") == 0)
            param = v;
        else if (strcmp(k, "low") == 0)
            low = v;
        else if (strcmp(k, "high") == 0)
            high = v;
        else if (strcmp(k, "window") == 0)
            window = v;
        else if (strcmp(k, "eta") == 0)
            rc = gp_arg_double(ACC_NAME, k, v, 0, 1e6, &s->eta, err, errlen);
        else if (strcmp(k, "lr_drop") == 0)
            rc = gp_arg_double(ACC_NAME, k, v, 0, 0.999999, &s->lr_drop, err, errlen);
        else if (strcmp(k, "interval") == 0) {
            has_interval = true;
            rc = gp_arg_long(ACC_NAME, k, v, 1, INT32_MAX, &s->interval, err, errlen);
        } else if (strcmp(k, "epochs") == 0)
            rc = gp_arg_long(ACC_NAME, k, v, 1, INT32_MAX, &s->epochs, err, errlen);
        else if (strcmp(k, "batch_low") == 0) {
            has_batch_low = true;
            rc = gp_arg_long(ACC_NAME, k, v, 1, INT32_MAX, &s->batch_low, err, errlen);
        } else if (strcmp(k, "batch_high") == 0) {
            has_batch_high = true;
            rc = gp_arg_long(ACC_NAME, k, v, 1, INT32_MAX, &s->batch_high, err, errlen);
        } else if (strcmp(k, "batch_up_only") == 0)
            rc = gp_arg_long(ACC_NAME, k, v, 0, 1, &s->batch_up_only, err, errlen);
    }
    if (rc)
        return rc;
    if (has_interval && s->epochs) {
        snprintf(err, errlen, "policy '%s': interval and epochs exclude each other (interval "
                 "counts steps, epochs counts the trainers' epoch ends)", ACC_NAME);
        return GCOMP_INVALID;
    }
    if (window) {
        if (!s->epochs) {
            snprintf(err, errlen, "policy '%s': window applies only with epochs=F", ACC_NAME);
            return GCOMP_INVALID;
        }
        if (strcmp(window, "all") != 0 && strcmp(window, "last") != 0) {
            snprintf(err, errlen, "policy '%s': window must be 'last' (the epoch before each "
                     "check, the paper's) or 'all' (every epoch since the previous check), "
                     "not '%s'", ACC_NAME, window);
            return GCOMP_INVALID;
        }
        s->window_all = strcmp(window, "all") == 0;
    }
    if (has_batch_low != has_batch_high) {
        snprintf(err, errlen, "policy '%s': %s needs %s as well (batch advice switches between "
                 "the two)", ACC_NAME, has_batch_low ? "batch_low" : "batch_high",
                 has_batch_low ? "batch_high" : "batch_low");
        return GCOMP_INVALID;
    }
    rc = gp_levels_codec(ACC_NAME, codec, param, &s->codec, s->param, sizeof(s->param), err,
                         errlen);
    const char *vals[2] = {low, high}, *keys[2] = {"low", "high"};
    double *outs[2] = {&s->low, &s->high};
    for (int i = 0; i < 2 && !rc; i++) {
        if (vals[i])
            rc = gp_levels_value(ACC_NAME, keys[i], vals[i], &s->codec, s->param, outs[i], err,
                                 errlen);
        else if (default_level(s->param, i, outs[i])) {
            snprintf(err, errlen, "policy '%s': %s is required for param '%s' (defaults exist "
                     "only for rank and density)", ACC_NAME, keys[i], s->param);
            rc = GCOMP_INVALID;
        }
    }
    return rc;
}

static int acc_create(const gp_args *a, const gp_env *env, void **state, char *err,
                      size_t errlen)
{
    (void)env;
    acc_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    s->eta = 0.5;
    s->interval = 10;
    s->local_epochs = -1;
    s->model = (acc_level){.level = ACC_LOW, .why = WHY_FIRST, .lr_step = -1};
    s->model_round = -1;
    int rc = acc_parse(s, a, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    s->batch = s->batch_low;
    *state = s;
    return GCOMP_OK;
}

static acc_layer *layer_get(acc_state *s, uint32_t id)
{
    acc_layer *l = gp_lmap_find(&s->layers, id);
    if (l)
        return l;
    l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->lv = (acc_level){.level = ACC_LOW, .why = WHY_FIRST, .lr_step = -1};
    l->round = -1;
    l->epochs = -1;
    if (gp_lmap_add(&s->layers, id, l)) {
        free(l);
        return NULL;
    }
    return l;
}

static void level_why(const acc_state *s, const acc_level *lv, char *why, size_t len)
{
    switch (lv->why) {
    case WHY_CRITICAL:
        snprintf(why, len, "critical: norm changed %.0f%% >= eta %g%%", lv->ratio * 100,
                 s->eta * 100);
        break;
    case WHY_PREV_ZERO:
        snprintf(why, len, "critical: previous norm 0");
        break;
    case WHY_STABLE:
        snprintf(why, len, "norm changed %.0f%% < eta %g%%", lv->ratio * 100, s->eta * 100);
        break;
    case WHY_LR:
        snprintf(why, len, "lr decayed %g -> %g", lv->lr_from, lv->lr_to);
        break;
    default:
        snprintf(why, len, "first interval");
    }
}

static int acc_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out, char *why,
                      size_t whylen)
{
    (void)step;
    acc_state *s = state;
    const acc_layer *l = layer_get(s, layer->geom.id);
    if (!l)
        return GCOMP_NOMEM;
    int rc = gp_spec_with(&s->codec, s->param, l->lv.level == ACC_LOW ? s->low : s->high, out);
    if (rc)
        return rc;
    level_why(s, &l->lv, why, whylen);
    return GCOMP_OK;
}

static int acc_collect(void *state, const gp_layer *layer, int64_t step, const float *g,
                       const float *x, double *stats)
{
    (void)step;
    (void)x;
    acc_state *s = state;
    acc_layer *l = layer_get(s, layer->geom.id);
    if (!l)
        return GCOMP_NOMEM;
    if (!l->acc || l->numel != layer->geom.numel) {
        /* A layer's size never changes; should it, its window starts again. */
        float *acc = calloc(layer->geom.numel ? layer->geom.numel : 1, sizeof(*acc));
        if (!acc)
            return GCOMP_NOMEM;
        free(l->acc);
        l->acc = acc;
        l->numel = layer->geom.numel;
        l->nacc = 0;
    }
    double sq = 0;
    for (size_t i = 0; i < l->numel; i++) {
        l->acc[i] += g[i];
        sq += (double)l->acc[i] * l->acc[i];
    }
    l->nacc++;
    stats[0] = sq;
    stats[1] = (double)s->local_epochs;
    return GCOMP_OK;
}

/* The rule of algorithms.md 3.2 for one level at a check (first: no previous window). An
   LR decay seen at this very step keeps low until the next check. */
static void apply_rule(const acc_state *s, acc_level *lv, bool first, double prev_sq,
                       double cur_sq, int64_t step)
{
    if (lv->lr_step == step)
        return;
    lv->lr_step = -1;
    if (first) {
        lv->level = ACC_LOW;
        lv->why = WHY_FIRST;
        return;
    }
    double prev = sqrt(prev_sq > 0 ? prev_sq : 0), cur = sqrt(cur_sq > 0 ? cur_sq : 0);
    if (!(prev > 0)) {
        lv->level = ACC_LOW;
        lv->why = WHY_PREV_ZERO;
        return;
    }
    lv->ratio = fabs(prev - cur) / prev;
    lv->level = lv->ratio >= s->eta ? ACC_LOW : ACC_HIGH;
    lv->why = lv->ratio >= s->eta ? WHY_CRITICAL : WHY_STABLE;
}

static void reset_window(acc_layer *l)
{
    if (l->acc)
        memset(l->acc, 0, l->numel * sizeof(*l->acc));
    l->nacc = 0;
}

static void check_layer(acc_state *s, acc_layer *l, double sq, int64_t step, int64_t round)
{
    apply_rule(s, &l->lv, l->nchecks == 0, l->last_sq, sq, step);
    l->prev_sq = l->last_sq;
    l->last_sq = sq;
    l->nchecks++;
    l->round = round;
    reset_window(l);
}

static void update_batch(acc_state *s, int64_t step)
{
    int64_t b = s->model.level == ACC_LOW ? s->batch_low : s->batch_high;
    if (s->batch_up_only && s->batch == s->batch_high)
        b = s->batch_high;
    if (b != s->batch) {
        s->batch = b;
        s->batch_step = step;
    }
}

/* The whole model's check of a round, once every layer has had its own. */
static void check_model(acc_state *s, int64_t round, int64_t step)
{
    if (!s->batch_low || round <= s->model_round)
        return;
    double cur = 0, prev = 0;
    bool first = false;
    for (size_t i = 0; i < s->layers.n; i++) {
        const acc_layer *l = s->layers.items[i];
        if (l->nchecks == 0 || l->round != round)
            return;
        first = first || l->nchecks < 2;
        cur += l->last_sq;
        prev += l->prev_sq;
    }
    apply_rule(s, &s->model, first, prev, cur, step);
    s->model_round = round;
    update_batch(s, step);
}

static void lr_decay(acc_state *s, double from, double to, int64_t step)
{
    acc_level lv = {.level = ACC_LOW, .why = WHY_LR, .lr_from = from, .lr_to = to,
                    .lr_step = step};
    for (size_t i = 0; i < s->layers.n; i++) {
        acc_layer *l = s->layers.items[i];
        lv.ratio = l->lv.ratio;
        l->lv = lv;
    }
    lv.ratio = s->model.ratio;
    s->model = lv;
    if (s->batch_low)
        update_batch(s, step);
}

static int acc_observe(void *state, const gp_step_info *info)
{
    acc_state *s = state;
    int64_t step = info->step, round = -1;
    for (int i = 0; i < info->nlayers && info->stats; i++) {
        acc_layer *l = layer_get(s, info->layers[i].geom.id);
        if (!l)
            return GCOMP_NOMEM;
        double sq = info->stats[2 * i], ep = info->stats[2 * i + 1];
        if (!s->epochs) {
            if ((step + 1) % s->interval == 0) {
                check_layer(s, l, sq, step, (step + 1) / s->interval);
                round = (step + 1) / s->interval;
            }
            continue;
        }
        if (!(ep >= 0))
            continue; /* no node has seen a hint yet */
        int64_t e = (int64_t)floor(ep + 1e-6);
        if (l->epochs < 0) {
            l->epochs = e;
        } else if (e > l->epochs) {
            if (e / s->epochs > l->epochs / s->epochs) {
                check_layer(s, l, sq, step, e / s->epochs);
                round = e / s->epochs;
            } else if (!s->window_all) {
                reset_window(l); /* the paper's window: the last epoch before a check */
            }
            l->epochs = e;
        }
    }
    if (round >= 0)
        check_model(s, round, step);
    const gp_hints *h = info->hints;
    if (h && h->epochs > s->local_epochs)
        s->local_epochs = h->epochs;
    if (h && h->has_lr && isfinite(h->lr)) {
        if (!s->has_lr) {
            s->has_lr = 1;
            s->lr_ref = h->lr;
        } else if (h->lr < s->lr_ref * (1 - s->lr_drop)) {
            lr_decay(s, s->lr_ref, h->lr, step);
            s->lr_ref = h->lr;
        } else if (h->lr > s->lr_ref) {
            s->lr_ref = h->lr;
        }
    }
    return GCOMP_OK;
}

static int acc_advice(void *state, gp_advice *out)
{
    const acc_state *s = state;
    if (!s->batch_low)
        return GCOMP_NOT_FOUND;
    out->batch_size = s->batch;
    out->lr_scale = (double)s->batch / (double)s->batch_low;
    out->step = s->batch_step;
    return GCOMP_OK;
}

static int put_level(FILE *f, const acc_level *lv)
{
    return GP_PUT(f, lv->level) || GP_PUT(f, lv->why) || GP_PUT(f, lv->ratio) ||
                   GP_PUT(f, lv->lr_from) || GP_PUT(f, lv->lr_to) || GP_PUT(f, lv->lr_step)
               ? GCOMP_IO
               : GCOMP_OK;
}

static int get_level(FILE *f, acc_level *lv)
{
    if (GP_GET(f, lv->level) || GP_GET(f, lv->why) || GP_GET(f, lv->ratio) ||
        GP_GET(f, lv->lr_from) || GP_GET(f, lv->lr_to) || GP_GET(f, lv->lr_step))
        return GCOMP_IO;
    return (lv->level == ACC_LOW || lv->level == ACC_HIGH) && lv->why >= WHY_FIRST &&
                   lv->why <= WHY_LR
               ? GCOMP_OK
               : GCOMP_INVALID;
}

/* The arguments the saved state depends on, to refuse a checkpoint of another spec. */
static void fingerprint(const acc_state *s, double fp[4])
{
    fp[0] = s->low;
    fp[1] = s->high;
    fp[2] = (double)s->interval;
    fp[3] = (double)s->epochs;
}

static int acc_save(void *state, FILE *f)
{
    const acc_state *s = state;
    double fp[4];
    fingerprint(s, fp);
    uint64_t n = s->layers.n;
    int rc = gp_levels_put(f, ACC_MAGIC, 8) || gp_levels_put(f, fp, sizeof(fp)) ||
                     GP_PUT(f, s->local_epochs) || GP_PUT(f, s->has_lr) || GP_PUT(f, s->lr_ref) ||
                     put_level(f, &s->model) || GP_PUT(f, s->model_round) ||
                     GP_PUT(f, s->batch) || GP_PUT(f, s->batch_step) || GP_PUT(f, n)
                 ? GCOMP_IO
                 : GCOMP_OK;
    for (size_t i = 0; i < s->layers.n && !rc; i++) {
        const acc_layer *l = s->layers.items[i];
        uint64_t numel = l->acc ? l->numel : 0;
        rc = GP_PUT(f, s->layers.ids[i]) || put_level(f, &l->lv) || GP_PUT(f, l->nchecks) ||
                     GP_PUT(f, l->round) || GP_PUT(f, l->epochs) || GP_PUT(f, l->nacc) ||
                     GP_PUT(f, l->prev_sq) || GP_PUT(f, l->last_sq) || GP_PUT(f, numel) ||
                     (numel && gp_levels_put(f, l->acc, numel * sizeof(*l->acc)))
                 ? GCOMP_IO
                 : GCOMP_OK;
    }
    return rc;
}

/* Read one layer record into a new item of m. */
static int load_layer(gp_lmap *m, FILE *f)
{
    uint32_t id;
    uint64_t numel;
    acc_layer *l = calloc(1, sizeof(*l));
    if (!l)
        return GCOMP_NOMEM;
    int rc = GP_GET(f, id) || get_level(f, &l->lv) || GP_GET(f, l->nchecks) ||
                     GP_GET(f, l->round) || GP_GET(f, l->epochs) || GP_GET(f, l->nacc) ||
                     GP_GET(f, l->prev_sq) || GP_GET(f, l->last_sq) || GP_GET(f, numel)
                 ? GCOMP_IO
                 : GCOMP_OK;
    if (!rc && (numel > ((uint64_t)1 << 40) || gp_lmap_find(m, id)))
        rc = GCOMP_INVALID;
    if (!rc && numel) {
        l->numel = numel;
        l->acc = malloc(numel * sizeof(*l->acc));
        rc = !l->acc ? GCOMP_NOMEM : gp_levels_get(f, l->acc, numel * sizeof(*l->acc));
    }
    if (!rc)
        rc = gp_lmap_add(m, id, l);
    if (rc)
        layer_free(l);
    return rc;
}

static int acc_load(void *state, FILE *f)
{
    acc_state *s = state, t = *s;
    char magic[8];
    double fp[4], want[4];
    uint64_t n;
    fingerprint(s, want);
    memset(&t.layers, 0, sizeof(t.layers));
    if (gp_levels_get(f, magic, 8) || memcmp(magic, ACC_MAGIC, 8) ||
        gp_levels_get(f, fp, sizeof(fp)) || memcmp(fp, want, sizeof(fp)))
        return GCOMP_INVALID;
    int rc = GP_GET(f, t.local_epochs) || GP_GET(f, t.has_lr) || GP_GET(f, t.lr_ref) ||
                     get_level(f, &t.model) || GP_GET(f, t.model_round) || GP_GET(f, t.batch) ||
                     GP_GET(f, t.batch_step) || GP_GET(f, n)
                 ? GCOMP_IO
                 : GCOMP_OK;
    if (!rc && n > UINT32_MAX)
        rc = GCOMP_INVALID;
    for (uint64_t i = 0; i < n && !rc; i++)
        rc = load_layer(&t.layers, f);
    if (rc) {
        gp_lmap_clear(&t.layers, layer_free);
        return rc;
    }
    gp_lmap_clear(&s->layers, layer_free);
    *s = t;
    return GCOMP_OK;
}

const gp_policy gp_policy_accordion = {
    .name = ACC_NAME,
    .summary = "Accordion: per layer, low compression in critical regimes (gradient norm "
               "change >= eta over an interval, or LR decay) and high elsewhere; batch advice",
    .keys = acc_keys,
    .spec_keys = acc_spec_keys,
    .nstats = 2,
    .create = acc_create,
    .destroy = acc_destroy,
    .decide = acc_decide,
    .collect = acc_collect,
    .observe = acc_observe,
    .save = acc_save,
    .load = acc_load,
    .advice = acc_advice,
};
