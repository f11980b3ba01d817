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
 * Keys (defaults): codec (powersgd), param (the codec's compression knob, gk_codec.knob:
 * rank for powersgd, density for topk, bits for maxmin...), low and high (the paper's
 * levels where the knob is rank or density: rank 2 and 1, density 0.99 and 0.1; for
 * other parameters they must be given), eta (0.5), interval (10 steps) or epochs (F),
 * window (epochs mode: last = the epoch before each check, the paper's; all = every
 * epoch since the previous check), lr_drop (0: any decrease of the LR is a decay;
 * f > 0: only a fall below (1 - f) times the LR of the previous decay or the highest LR
 * since, for schedules that lower the LR a little every step), batch_low and batch_high
 * (no advice without them), batch_up_only (0; 1: never advise batch_low again once
 * batch_high was advised, as the paper's batch-size runs did).
 *
 * Epoch counts: the hints' epoch counter is this node's own count (not averaged by the
 * engine), so it cannot drive a decision directly: every node must decide the same.
 * collect() therefore reports the count this node had seen at its previous observe() as
 * a second statistic; observe() uses the nodes' average of it, identical everywhere
 * (floored: an epoch counts once the average reaches it). The price is one step of lag.
 *
 * Threads: collect() may run for several layers at once (collect_concurrent). It finds
 * the layer that decide() made (it never adds one), adds g to that layer's own
 * accumulator (made on the layer's first collect) and reads local_epochs, which only
 * observe() writes, and observe() never runs beside a collect().
 *
 * Checkpoint: record "ACCO" version 1: the arguments (codec, param, low, high,
 * interval, epochs, window, batch_low, batch_high), the node's epoch count and learning
 * rate reference, the model's level and batch advice, then per layer in insertion
 * order its id, level, counters, norms and accumulator.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "gcomp.h"
#include "levels.h"
#include "policy.h"

#define ACC_NAME "accordion"
#define ACC_TAG "ACCO"
#define ACC_VERSION 1

enum { ACC_LOW = 0, ACC_HIGH = 1 };
enum { WHY_FIRST, WHY_CRITICAL, WHY_PREV_ZERO, WHY_STABLE, WHY_LR };

/* A level and the reason for it, for one layer or (batch size) the whole model. */
typedef struct acc_level {
    uint8_t level;          /* ACC_LOW or ACC_HIGH */
    uint8_t why;            /* WHY_*: the reason for the level */
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
    uint64_t numel;    /* elements of acc */
    float *acc;        /* sum of this node's g over the current window; NULL before collect */
} acc_layer;

typedef struct acc_state {
    gk_spec codec;      /* the codec as given; decide() sets param to low or high */
    char param[32];     /* the codec parameter moved */
    double low, high;   /* its values in critical regimes and elsewhere */
    double eta;         /* the relative norm change that makes a regime critical */
    double lr_drop;     /* the fall of the LR that counts as a decay (0: any) */
    long interval;      /* steps between checks (steps mode) */
    long epochs;        /* F: check at every F-th epoch end; 0: steps mode */
    long window_all;    /* epochs mode: 1 = sum over all F epochs, 0 = the last epoch only */
    long batch_low, batch_high; /* the advised batch sizes; 0: no advice */
    long batch_up_only; /* 1: never advise batch_low again after batch_high */
    gp_lmap layers;     /* acc_layer by layer id, made by decide() (or observe()) */
    int64_t local_epochs; /* this node's epoch count from the hints; -1 before any */
    uint8_t has_lr;     /* lr_ref holds a learning rate */
    double lr_ref;      /* the learning rate a decay is measured against */
    acc_level model;    /* the whole model's level (batch size) */
    int64_t model_round; /* the round of the model's latest check; -1 none */
    int64_t batch;      /* the batch size advised now (batch_low or batch_high) */
    int64_t batch_step; /* the step at which it was advised */
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

/* The paper's levels, where it gives them, by the codec's knob: PowerSGD's rank 2 / 1,
   Top-K's density 99% / 10%. */
static const struct {
    const char *knob;
    double low, high;
} acc_defaults[] = {{"rank", 2, 1}, {"density", 0.99, 0.1}};

/* The default low (high = 0) or high (1) value of the parameter the policy moves: only
   for a codec's knob the paper gives levels for. */
static int default_level(const acc_state *s, int high, double *out)
{
    const char *knob = s->codec.codec->knob;
    for (size_t i = 0; knob && i < sizeof(acc_defaults) / sizeof(acc_defaults[0]); i++)
        if (strcmp(s->param, knob) == 0 && strcmp(knob, acc_defaults[i].knob) == 0) {
            *out = high ? acc_defaults[i].high : acc_defaults[i].low;
            return GCOMP_OK;
        }
    return GCOMP_INVALID;
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
        else if (default_level(s, i, outs[i])) {
            snprintf(err, errlen, "policy '%s': %s is required for param '%s' (defaults exist "
                     "only for the knobs rank and density)", ACC_NAME, keys[i], s->param);
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

/* The layer's state, made (low, first interval) when there is none; NULL when out of
   memory. Not for collect(): it may add to the map. */
static acc_layer *layer_get(acc_state *s, uint64_t id)
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
                       const float *x, double *stats, const gk_exec *exec)
{
    (void)step;
    (void)x;
    (void)exec;
    const acc_state *s = state;
    acc_layer *l = gp_lmap_find(&s->layers, layer->geom.id);
    if (!l)
        return GCOMP_INVALID; /* decide() has not seen the layer */
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

static void put_level(gk_writer *w, const acc_level *lv)
{
    gk_put(w, lv->level);
    gk_put(w, lv->why);
    gk_put(w, lv->ratio);
    gk_put(w, lv->lr_from);
    gk_put(w, lv->lr_to);
    gk_put(w, lv->lr_step);
}

static bool get_level(gk_reader *r, acc_level *lv)
{
    if (!(gk_get(r, &lv->level) && gk_get(r, &lv->why) && gk_get(r, &lv->ratio) &&
          gk_get(r, &lv->lr_from) && gk_get(r, &lv->lr_to) && gk_get(r, &lv->lr_step)))
        return false;
    if (lv->level > ACC_HIGH || lv->why > WHY_LR)
        return gk_reader_fail(r, "%s checkpoint: level %u with reason %u, not a valid pair",
                              ACC_NAME, lv->level, lv->why);
    return true;
}

static int acc_save(void *state, gk_writer *w)
{
    const acc_state *s = state;
    gk_put_tag(w, ACC_TAG, ACC_VERSION);
    /* The arguments the state depends on. */
    gk_put_str(w, s->codec.codec->name);
    gk_put_str(w, s->param);
    gk_put(w, s->low);
    gk_put(w, s->high);
    gk_put(w, (int64_t)s->interval);
    gk_put(w, (int64_t)s->epochs);
    gk_put(w, (int64_t)s->window_all);
    gk_put(w, (int64_t)s->batch_low);
    gk_put(w, (int64_t)s->batch_high);
    /* The state. */
    gk_put(w, s->local_epochs);
    gk_put(w, s->has_lr);
    gk_put(w, s->lr_ref);
    put_level(w, &s->model);
    gk_put(w, s->model_round);
    gk_put(w, s->batch);
    gk_put(w, s->batch_step);
    gk_put(w, (uint64_t)s->layers.n);
    for (size_t i = 0; i < s->layers.n; i++) {
        const acc_layer *l = s->layers.items[i];
        uint64_t numel = l->acc ? l->numel : 0;
        gk_put(w, s->layers.ids[i]);
        put_level(w, &l->lv);
        gk_put(w, l->nchecks);
        gk_put(w, l->round);
        gk_put(w, l->epochs);
        gk_put(w, l->nacc);
        gk_put(w, l->prev_sq);
        gk_put(w, l->last_sq);
        gk_put(w, numel);
        gk_put_f32s(w, l->acc, numel);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

static bool get_args(gk_reader *r, const acc_state *s)
{
    return gp_ckpt_arg_str(r, ACC_NAME, "codec", s->codec.codec->name) &&
           gp_ckpt_arg_str(r, ACC_NAME, "param", s->param) &&
           gp_ckpt_arg_f64(r, ACC_NAME, "low", s->low) &&
           gp_ckpt_arg_f64(r, ACC_NAME, "high", s->high) &&
           gp_ckpt_arg_i64(r, ACC_NAME, "interval", s->interval) &&
           gp_ckpt_arg_i64(r, ACC_NAME, "epochs", s->epochs) &&
           gp_ckpt_arg_i64(r, ACC_NAME, "window_all", s->window_all) &&
           gp_ckpt_arg_i64(r, ACC_NAME, "batch_low", s->batch_low) &&
           gp_ckpt_arg_i64(r, ACC_NAME, "batch_high", s->batch_high);
}

/* Read one layer record into a new item of m. */
static bool load_layer(gk_reader *r, gp_lmap *m)
{
    uint64_t id, numel;
    acc_layer *l = calloc(1, sizeof(*l));
    if (!l)
        return gk_reader_fail(r, "out of memory");
    bool ok = gk_get(r, &id) && get_level(r, &l->lv) && gk_get(r, &l->nchecks) &&
              gk_get(r, &l->round) && gk_get(r, &l->epochs) && gk_get(r, &l->nacc) &&
              gk_get(r, &l->prev_sq) && gk_get(r, &l->last_sq) && gk_get(r, &numel);
    if (ok && gp_lmap_find(m, id))
        ok = gk_reader_fail(r, "%s checkpoint: layer %#llx twice", ACC_NAME,
                            (unsigned long long)id);
    if (ok && (l->nchecks < 0 || l->nacc < 0))
        ok = gk_reader_fail(r, "%s checkpoint: layer %#llx has %lld checks and %lld steps "
                            "accumulated", ACC_NAME, (unsigned long long)id,
                            (long long)l->nchecks, (long long)l->nacc);
    if (ok && numel) {
        l->numel = numel;
        ok = gp_ckpt_get_f32s_new(r, numel, &l->acc);
    }
    if (ok && gp_lmap_add(m, id, l))
        ok = gk_reader_fail(r, "out of memory");
    if (!ok)
        layer_free(l);
    return ok;
}

static int acc_load(void *state, gk_reader *r)
{
    acc_state *s = state, t = *s;
    memset(&t.layers, 0, sizeof(t.layers));
    uint64_t n = 0;
    bool ok = gk_get_tag(r, ACC_TAG, ACC_VERSION, NULL) && get_args(r, s) &&
              gk_get(r, &t.local_epochs) && gk_get(r, &t.has_lr) && gk_get(r, &t.lr_ref) &&
              get_level(r, &t.model) && gk_get(r, &t.model_round) && gk_get(r, &t.batch) &&
              gk_get(r, &t.batch_step) && gp_ckpt_count(r, "layers", UINT32_MAX, &n);
    if (ok && t.batch != s->batch_low && t.batch != s->batch_high)
        ok = gk_reader_fail(r, "%s checkpoint: batch size %lld is neither batch_low nor "
                            "batch_high", ACC_NAME, (long long)t.batch);
    for (uint64_t i = 0; i < n && ok; i++)
        ok = load_layer(r, &t.layers);
    if (!ok) {
        gp_lmap_clear(&t.layers, layer_free);
        return gp_ckpt_status(r);
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
    .keys_help = "codec (powersgd); param (the codec's knob); low, high (rank 2/1, density 0.99/0.1; else required); eta (0.5); interval (10 steps) or epochs (F); window (last|all, last); lr_drop (0); batch_low, batch_high (no advice without them); batch_up_only (0)",
    .nstats = 2,
    .collect_concurrent = true,
    .create = acc_create,
    .destroy = acc_destroy,
    .decide = acc_decide,
    .collect = acc_collect,
    .observe = acc_observe,
    .save = acc_save,
    .load = acc_load,
    .advice = acc_advice,
};
