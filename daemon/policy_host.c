/*
 * policy_host.c: the policies in force and everything the engine does for them.
 *
 * Every node must call a policy's state-changing functions in the same order with the
 * same numbers (policy.h). Bucket steps are pipelined, so the order is tied to the
 * negotiation, not to when a node finishes a step: negotiate.c applies a decision by
 * first observing every finished step all nodes hold the statistics of
 * (eng_observe_through, Decision.observe_through), then deciding the steps it runs
 * (eng_policy_decide), in the decision's order. collect() runs on the workers between
 * a step's decide and the next decision's calls (the decision waits for it). A step
 * whose policy observes hands its result to the trainers when it is observed, so the
 * policy has seen step s before the trainers go on to step s + 1, as without a
 * pipeline; a node reports new statistics at once, so this costs one negotiation
 * round trip per step of an adaptive policy (none for static ones).
 *
 * The statistics vector of a step (eng_stats_len): nstats numbers per layer from
 * collect(), then a payload per layer, then TAIL_N values (hints); summed over the
 * nodes by one allreduce and averaged, except samples (a sum). The step and exchange
 * times travel in a second, 2-element vector reduced with MAX: policies see the
 * slowest node's (design.md section 4).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "base/json.h"
#include "engine.h"
#include "log.h"

enum {
    TAIL_SAMPLES, TAIL_LR, TAIL_HAS_LR, TAIL_HAS_SAMPLES, TAIL_EPOCHS, TAIL_HINT_STEP, TAIL_N
};
enum { MAX_STEP_MS, MAX_XCHG_MS, MAX_READY_MS, MAX_GAP_MS, MAX_N };
_Static_assert(MAX_N == ENG_STATS_MAX, "engine.h's ENG_STATS_MAX counts the MAX values");

int eng_policies_init(engine *e, gp_instance *first)
{
    policy_slot *arr = gk_grow(e->pol, &e->cappol, 1, sizeof(*arr));
    if (!arr)
        return GCOMP_NOMEM;
    e->pol = arr;
    e->pol[0] = (policy_slot){.from_step = INT64_MIN, .p = first};
    e->npol = 1;
    pthread_mutex_init(&e->collect_mu, NULL);
    return GCOMP_OK;
}

static void obs_free(eng_obs *o)
{
    if (!o)
        return;
    free(o->bucket);
    free(o->layers);
    free(o->specs);
    free(o->compressed);
    free(o->vec);
    free(o);
}

void eng_policies_free(engine *e)
{
    for (size_t i = 0; i < e->npol; i++)
        gp_instance_destroy(e->pol[i].p);
    if (e->npol)
        pthread_mutex_destroy(&e->collect_mu);
    free(e->pol);
    e->pol = NULL;
    e->npol = e->cappol = 0;
    while (e->obs) {
        eng_obs *o = e->obs;
        e->obs = o->next;
        obs_free(o);
    }
    free(e->collects);
    free(e->done_seqs);
    if (e->declog)
        fclose(e->declog);
    e->declog = NULL;
}

gp_instance *eng_policy_at(engine *e, int64_t step)
{
    for (size_t i = e->npol; i-- > 0;)
        if (step >= e->pol[i].from_step)
            return e->pol[i].p;
    return e->pol[0].p;
}

/* Drop the oldest policies beyond MAX_POLICIES that no step in flight and no
   statistics waiting to be observed refer to. */
static void prune_policies(engine *e)
{
    while (e->npol > MAX_POLICIES) {
        gp_instance *old = e->pol[0].p;
        bool used = eng_pipeline_uses(e, old);
        for (const eng_obs *o = e->obs; o && !used; o = o->next)
            used = o->p == old;
        if (used)
            return;
        gp_instance_destroy(old);
        memmove(e->pol, e->pol + 1, (e->npol - 1) * sizeof(e->pol[0]));
        e->npol--;
    }
}

/* ---- the network probe ---- */

/* Run one data-plane allreduce of n floats from v into v + n to the end (start-up and
   decided switches only: every node is here at the same point). Out of place, as the
   pipeline's exchanges are. */
static int allreduce_now(engine *e, float *v, size_t n)
{
    gcd_data *dp = &e->d->data;
    gcd_buf send = {.ptr = v, .bytes = n * sizeof(float), .mem = GK_MEM_HOST};
    gcd_buf recv = {.ptr = v + n, .bytes = n * sizeof(float), .mem = GK_MEM_HOST};
    gcd_dreq *req;
    int rc = dp->ops->allreduce(dp->priv, 0, GK_COLL_ALLREDUCE_F32, &send, &recv, 0, n, &req);
    int64_t deadline = gk_now_ms() + e->d->cfg.timeout_ms;
    for (bool done = false; !rc && !done;) {
        rc = dp->ops->test(dp->priv, req, &done);
        if (!rc && !done && gk_now_ms() > deadline)
            rc = GCOMP_STALL;
    }
    return rc;
}

/*
 * Measure the data plane for the policies that model it (gp_env): latency from 4-byte
 * allreduces (alpha = t / (p - 1), as algorithms.md 3.6 says), bandwidth from 16 MiB
 * ones (T = 2 alpha (p-1) + 2 b (p-1) / (p BW)). Each the fastest of its repetitions:
 * the probe runs at start-up, beside trainers that load their frameworks on the same
 * cores, and the fastest run is the one they disturbed least. The slowest node's
 * numbers, so every node models the same.
 */
static void probe_network(engine *e)
{
    gcd *d = e->d;
    e->probed = true;
    int p = d->nodes;
    if (p < 2)
        return;
    enum { SMALL_REPS = 20, LARGE_REPS = 10 };
    size_t n = 4u << 20; /* floats: 16 MiB */
    float one[2] = {0}, *big = calloc(2 * n, sizeof(float));
    if (!big)
        return;
    /* The first one waits for every node to arrive here (a barrier): not timed. */
    int rc = allreduce_now(e, one, 1);
    double t_small = INFINITY, t_large = INFINITY;
    for (int i = 0; i < SMALL_REPS && !rc; i++) {
        double t0 = gk_now_s();
        rc = allreduce_now(e, one, 1);
        t_small = fmin(t_small, (gk_now_s() - t0) * 1e3);
    }
    for (int i = 0; i <= LARGE_REPS && !rc; i++) {
        double t0 = gk_now_s();
        rc = allreduce_now(e, big, n);
        if (i > 0) /* the first touches the pages */
            t_large = fmin(t_large, (gk_now_s() - t0) * 1e3);
    }
    free(big);
    double v[2] = {t_small, t_large};
    gcd_ctl_req *req;
    bool done = false;
    if (!rc)
        rc = gcd_ctl_iallreduce(d->ctl, 0, v, 2, GCD_CTL_MAX, &req);
    while (!rc && !done)
        rc = gcd_ctl_test(d->ctl, req, &done);
    if (rc) {
        gcd_log_warn("network probe failed (%s): policies model an unmeasured network",
                     gcomp_strerror(rc));
        return;
    }
    e->env.alpha_ms = v[0] / (p - 1);
    double wire = v[1] - 2.0 * e->env.alpha_ms * (p - 1);
    double bytes = (double)n * sizeof(float);
    e->env.bw_bytes_ms = 2.0 * bytes * (p - 1) / (p * (wire > 0 ? wire : v[1]));
    gcd_log_info("network probe: latency %.4f ms, bandwidth %.2f GB/s", e->env.alpha_ms,
                 e->env.bw_bytes_ms * 1e-6);
}

int eng_policy_make(engine *e, const char *spec, gp_instance **out, char *err, size_t errlen)
{
    const gp_policy *pol = gp_policy_of_spec(spec);
    if (pol && pol->uses_network && !e->probed)
        probe_network(e);
    return gp_instance_create(spec, &e->env, out, err, errlen);
}

int eng_policy_switch(engine *e, const char *spec, uint64_t epoch, int64_t from_step, int origin)
{
    gcd *d = e->d;
    e->epoch = epoch;
    char err[1024], text[1200];
    gp_instance *p = NULL;
    int rc = eng_policy_make(e, spec, &p, err, sizeof(err));
    if (rc) {
        /* Validated where it was asked; every node fails alike, so keep the old one. */
        snprintf(text, sizeof(text), "policy not switched: %s", err);
        gcd_log_error("%s", text);
    } else {
        policy_slot *arr = gk_grow(e->pol, &e->cappol, e->npol + 1, sizeof(*arr));
        if (!arr) {
            gp_instance_destroy(p);
            return GCOMP_NOMEM;
        }
        e->pol = arr;
        e->pol[e->npol++] = (policy_slot){.from_step = from_step, .p = p};
        prune_policies(e);
        snprintf(text, sizeof(text), "policy '%s' applies from step %lld on all %d nodes", spec,
                 (long long)from_step, d->nodes);
        gcd_log_info("%s", text);
        if (d->timeline) {
            char q[2][6 * sizeof(d->policy_spec) + 8];
            gk_json_str(q[0], sizeof(q[0]), e->pol[e->npol - 2].p->spec);
            gk_json_str(q[1], sizeof(q[1]), spec);
            gcd_timeline_instant(d->timeline, GCD_TL_POLICY, "policy switch",
                                 "\"old\":%s,\"new\":%s,\"from_step\":%lld,\"epoch\":%llu,"
                                 "\"origin\":%d", q[0], q[1], (long long)from_step,
                                 (unsigned long long)epoch, origin);
        }
        pthread_mutex_lock(&d->mu);
        snprintf(d->policy_spec, sizeof(d->policy_spec), "%s", spec);
        d->policy_epoch = epoch;
        d->policy_step = from_step;
        pthread_mutex_unlock(&d->mu);
    }
    if (origin == d->node && e->nasks > 0) {
        gcd_to_loop(d, GCD_EV_CTL_REPLY, 0, 0, rc, e->asks[0].ctl_id, text);
        memmove(e->asks, e->asks + 1, (e->nasks - 1) * sizeof(*e->asks));
        e->nasks--;
        e->sent_asks--;
    }
    return GCOMP_OK;
}

/* ---- decide ---- */

void eng_log_decision(engine *e, const gcd_bucket *b, size_t i, int64_t step, const gk_spec *old,
                      bool first, const gk_spec *now, const char *why)
{
    gcd *d = e->d;
    char o[512] = "none", n[512] = "none", line[3200], q[4][600], oq[600] = "null";
    if (old)
        gk_spec_format(old, o, sizeof(o));
    if (now)
        gk_spec_format(now, n, sizeof(n));
    gk_json_str(q[0], sizeof(q[0]), b->name);
    gk_json_str(q[1], sizeof(q[1]), b->layout.layers[i].name);
    gk_json_str(q[2], sizeof(q[2]), why);
    gk_json_str(q[3], sizeof(q[3]), n);
    if (!first)
        gk_json_str(oq, sizeof(oq), o);
    snprintf(line, sizeof(line), "{\"step\":%lld,\"bucket\":%s,\"layer\":%s,\"old\":%s,\"new\":%s,"
             "\"why\":%s}", (long long)step, q[0], q[1], oq, q[3], q[2]);
    if (e->declog)
        fprintf(e->declog, "%s\n", line);
    if (d->timeline)
        gcd_timeline_instant(d->timeline, GCD_TL_POLICY, "codec switch",
                             "\"step\":%lld,\"bucket\":%s,\"layer\":%s,\"old\":%s,\"new\":%s,"
                             "\"why\":%s", (long long)step, q[0], q[1], oq, q[3], q[2]);
    pthread_mutex_lock(&d->mu);
    size_t slot = d->declog_total++ % GCD_DECLOG_LINES;
    free(d->declog[slot]);
    d->declog[slot] = strdup(line);
    pthread_mutex_unlock(&d->mu);
}

static bool spec_equal(const gk_spec *a, const gk_spec *b)
{
    return a->codec == b->codec && a->ef == b->ef && a->min_elements == b->min_elements &&
           memcmp(a->v, b->v, sizeof(a->v)) == 0;
}

int eng_policy_decide(engine *e, eng_bucket *eb, int64_t step)
{
    gcd_bucket *b = eb->b;
    gp_instance *p = eng_policy_at(e, step);
    bool exact = (b->layout.flags & GCOMP_BUCKET_EXACT) != 0;
    for (size_t i = 0; i < b->layout.n; i++) {
        eng_layer *l = &eb->layers[i];
        gk_spec s = {0};
        bool comp = false;
        char why[256] = "";
        if (!exact) {
            gp_layer pl = {.bucket = b->name, .name = b->layout.layers[i].name,
                           .index = (int)i, .geom = l->geom};
            int rc = p->policy->decide(p->state, &pl, step, &s, why, sizeof(why));
            if (rc)
                return rc;
            comp = gk_spec_compresses(&s, &l->geom);
            if (!l->has_spec || comp != l->compressed || (comp && !spec_equal(&l->spec, &s)))
                eng_log_decision(e, b, i, step, l->has_spec && l->compressed ? &l->spec : NULL,
                                 !l->has_spec, comp ? &s : NULL, why);
        }
        int rc = gk_layer_respec(&l->spec, l->has_spec && l->compressed, &s, comp, &l->geom,
                                 &l->state, &l->x);
        if (rc)
            return rc;
        if (!exact) {
            l->spec = s;
            l->has_spec = true;
        }
        l->compressed = comp;
    }
    return GCOMP_OK;
}

bool eng_policy_observes(engine *e, const eng_bucket *eb, int64_t step)
{
    const gp_policy *pol = eng_policy_at(e, step)->policy;
    return !(eb->b->layout.flags & GCOMP_BUCKET_EXACT) &&
           (pol->collect || pol->observe || pol->advice);
}

/* ---- collect ---- */

size_t eng_stats_len(const gp_instance *p, size_t nlayers)
{
    return nlayers * ((size_t)p->policy->nstats + 1) + TAIL_N;
}

/* One layer's collect(): g is the node's gradient (W times its share in the local sum), x the
   codec's input (g for layers sent dense). */
static int collect_layer(const eng_collect *c, size_t i, const gk_exec *exec)
{
    gcd_bucket *b = c->eb->b;
    eng_layer *l = &c->eb->layers[i];
    float W = (float)c->e->d->nodes;
    float *g = gk_arena_alloc(exec->scratch, l->geom.numel * sizeof(float));
    if (!g)
        return GCOMP_NOMEM;
    const float *local = (const float *)c->eb->local.ptr + b->layout.layers[i].offset;
    for (size_t k = 0; k < l->geom.numel; k++)
        g[k] = W * local[k];
    gp_layer pl = {.bucket = b->name, .name = b->layout.layers[i].name, .index = (int)i,
                   .geom = l->geom};
    return c->p->policy->collect(c->p->state, &pl, c->step, g, l->compressed ? l->x : g,
                                 c->vec + i * (size_t)c->p->policy->nstats, exec);
}

static int collect_one(void *arg, size_t i, const gk_exec *exec)
{
    return collect_layer(arg, i, exec);
}

/* A policy whose collect() is not safe to run concurrently: every layer of the bucket
   in one job, under the engine's collect mutex (so other buckets' jobs wait). */
static int collect_serial(void *arg, size_t unused, const gk_exec *exec)
{
    (void)unused;
    const eng_collect *c = arg;
    int rc = GCOMP_OK;
    pthread_mutex_lock(&c->e->collect_mu);
    for (size_t i = 0; i < c->eb->b->layout.n && !rc; i++) {
        gk_arena_mark m = gk_arena_mark_get(exec->scratch);
        rc = collect_layer(c, i, exec);
        gk_arena_release(exec->scratch, m);
    }
    pthread_mutex_unlock(&c->e->collect_mu);
    return rc;
}

int eng_collect_run(engine *e, eng_collect *c, gcd_batch *b)
{
    const gp_policy *pol = c->p->policy;
    size_t n = c->eb->b->layout.n;
    if (!pol->collect || pol->nstats <= 0)
        return gcd_pool_run(e->pool, b, collect_one, c, 0);
    gcd_batch **arr = gk_grow(e->collects, &e->capcollects, e->ncollects + 1, sizeof(*arr));
    if (!arr)
        return GCOMP_NOMEM;
    e->collects = arr;
    arr[e->ncollects++] = b;
    if (pol->collect_concurrent)
        return gcd_pool_run(e->pool, b, collect_one, c, n);
    return gcd_pool_run(e->pool, b, collect_serial, c, 1);
}

void eng_collect_end(engine *e, const gcd_batch *b)
{
    for (size_t i = 0; i < e->ncollects; i++)
        if (e->collects[i] == b) {
            e->collects[i] = e->collects[--e->ncollects];
            return;
        }
}

bool eng_collects_done(engine *e)
{
    size_t keep = 0;
    for (size_t i = 0; i < e->ncollects; i++)
        if (!gcd_batch_done(e->collects[i]))
            e->collects[keep++] = e->collects[i];
    e->ncollects = keep;
    return keep == 0;
}

/* ---- the statistics exchange ---- */

/* The iteration of `step` if it is still in the window. */
static eng_iter *iter_of(engine *e, int64_t step)
{
    eng_iter *it = &e->iters[(uint64_t)step % ENG_ITERS];
    return step >= 0 && it->step == step ? it : NULL;
}

void eng_stats_fill(engine *e, eng_bucket *eb, int64_t step, gp_instance *p, double *vec,
                    double *max, double exchange_ms)
{
    gcd *d = e->d;
    size_t nl = eb->b->layout.n, ns = (size_t)p->policy->nstats, tail = nl * ns + nl;
    for (size_t i = 0; i < nl; i++)
        vec[nl * ns + i] = (double)eb->layers[i].payload;
    pthread_mutex_lock(&d->mu);
    double samples = 0;
    for (int t = 0; t < d->trainers; t++)
        samples += (double)d->hints.samples[t];
    vec[tail + TAIL_SAMPLES] = samples;
    vec[tail + TAIL_LR] = d->hints.lr;
    vec[tail + TAIL_HAS_LR] = d->hints.has_lr;
    vec[tail + TAIL_HAS_SAMPLES] = d->hints.has_samples;
    vec[tail + TAIL_EPOCHS] = (double)d->hints.epochs;
    vec[tail + TAIL_HINT_STEP] = (double)d->hints.step;
    pthread_mutex_unlock(&d->mu);
    /* The iteration (the training step as the trainers run it): from the previous
       step's first submission to this one's, or, when the previous step is not known
       (steps numbered with gaps), the time between this bucket's two ready steps. */
    const eng_iter *it = iter_of(e, step), *prev = iter_of(e, step - 1);
    if (it && prev)
        max[MAX_STEP_MS] = (it->first_submit - prev->first_submit) * 1e3;
    else
        max[MAX_STEP_MS] = eb->t_prev_ready > 0 ? (eb->t_ready - eb->t_prev_ready) * 1e3 : 0.0;
    max[MAX_XCHG_MS] = exchange_ms;
    /* The backward pass before this bucket was ready (its last trainer submitted it),
       and the forward pass and optimizer before the iteration (from the previous one's
       last result to its first submission); -1: not known. */
    max[MAX_READY_MS] = it ? fmax(0.0, (eb->t_ready - it->first_submit) * 1e3) : -1.0;
    max[MAX_GAP_MS] = it && prev && prev->last_result > 0
                          ? fmax(0.0, (it->first_submit - prev->last_result) * 1e3)
                          : -1.0;
}

void eng_iter_submitted(engine *e, int64_t step, double t)
{
    if (step < 0 || !(t > 0))
        return;
    eng_iter *it = &e->iters[(uint64_t)step % ENG_ITERS];
    if (it->step != step)
        *it = (eng_iter){.step = step, .first_submit = t};
    else if (t < it->first_submit)
        it->first_submit = t;
}

void eng_iter_result(engine *e, int64_t step, double t)
{
    eng_iter *it = iter_of(e, step);
    if (it && t > it->last_result)
        it->last_result = t;
}

int eng_stats_arrived(engine *e, eng_bucket *eb, int64_t step, uint64_t seq, gp_instance *p,
                      const double *vec, const double *max, double t_result)
{
    gcd_bucket *b = eb->b;
    size_t nl = b->layout.n, ns = (size_t)p->policy->nstats, tail = nl * ns + nl;
    size_t len = eng_stats_len(p, nl), names = 0;
    for (size_t i = 0; i < nl; i++)
        names += strlen(b->layout.layers[i].name) + 1;
    eng_obs *o = calloc(1, sizeof(*o));
    char *text = NULL;
    if (!o || !(o->bucket = strdup(b->name)) || !(o->layers = calloc(nl, sizeof(gp_layer))) ||
        !(o->specs = calloc(nl, sizeof(gk_spec))) || !(o->compressed = calloc(nl, sizeof(bool))) ||
        !(o->vec = malloc(len * sizeof(double))) || !(text = malloc(names ? names : 1))) {
        obs_free(o);
        free(text);
        return GCOMP_NOMEM;
    }
    /* The layer names live after the bucket's copy (one block, freed with it). */
    size_t blen = strlen(b->name) + 1;
    char *both = realloc(o->bucket, blen + names);
    free(text);
    if (!both) {
        obs_free(o);
        return GCOMP_NOMEM;
    }
    o->bucket = both;
    char *at = both + blen;
    o->seq = seq;
    o->p = p;
    o->step = step;
    o->bucket_id = b->id;
    o->nlayers = nl;
    double inv = 1.0 / e->d->nodes;
    for (size_t k = 0; k < len; k++)
        o->vec[k] = k == tail + TAIL_SAMPLES ? vec[k] : vec[k] * inv;
    for (size_t i = 0; i < nl; i++) {
        size_t n = strlen(b->layout.layers[i].name) + 1;
        memcpy(at, b->layout.layers[i].name, n);
        o->layers[i] = (gp_layer){.bucket = o->bucket, .name = at, .index = (int)i,
                                  .geom = eb->layers[i].geom};
        at += n;
        o->specs[i] = eb->layers[i].spec;
        o->compressed[i] = eb->layers[i].compressed;
    }
    /* Every node now holds the same numbers; so are the hints the policy sees. */
    o->hints.samples = (int64_t)o->vec[tail + TAIL_SAMPLES];
    o->hints.lr = o->vec[tail + TAIL_LR];
    o->hints.has_lr = o->vec[tail + TAIL_HAS_LR] == 1.0;
    o->hints.has_samples = o->vec[tail + TAIL_HAS_SAMPLES] == 1.0;
    /* Nodes may see an epoch end a step apart: the floor of the mean is the same on all. */
    o->hints.epochs = (int64_t)floor(o->vec[tail + TAIL_EPOCHS]);
    o->hints.step = (int64_t)floor(o->vec[tail + TAIL_HINT_STEP]);
    o->step_ms = max[MAX_STEP_MS];
    o->exchange_ms = max[MAX_XCHG_MS];
    o->ready_ms = max[MAX_READY_MS];
    o->gap_ms = max[MAX_GAP_MS];
    o->t_result = t_result;
    /* Keep the list in seq order. */
    eng_obs **pp = &e->obs;
    while (*pp && (*pp)->seq < seq)
        pp = &(*pp)->next;
    o->next = *pp;
    *pp = o;
    eng_stats_held(e, seq);
    return GCOMP_OK;
}

void eng_stats_held(engine *e, uint64_t seq)
{
    if (seq == e->stats_done + 1) {
        e->stats_done = seq;
        /* Later ones that were waiting for this one. */
        for (bool more = true; more;) {
            more = false;
            for (size_t i = 0; i < e->ndone; i++)
                if (e->done_seqs[i] == e->stats_done + 1) {
                    e->stats_done++;
                    e->done_seqs[i] = e->done_seqs[--e->ndone];
                    more = true;
                    break;
                }
        }
        return;
    }
    uint64_t *arr = gk_grow(e->done_seqs, &e->capdone, e->ndone + 1, sizeof(*arr));
    if (!arr) {
        gcd_log_error("out of memory tracking bucket step %llu", (unsigned long long)seq);
        return;
    }
    e->done_seqs = arr;
    arr[e->ndone++] = seq;
}

int eng_observe_through(engine *e, uint64_t seq)
{
    gcd *d = e->d;
    int rc = GCOMP_OK;
    while (e->obs && e->obs->seq <= seq && !rc) {
        eng_obs *o = e->obs;
        e->obs = o->next;
        const gp_policy *pol = o->p->policy;
        size_t nl = o->nlayers, ns = (size_t)pol->nstats;
        gp_step_info info = {.step = o->step, .bucket = o->bucket, .nlayers = (int)nl,
                             .layers = o->layers, .specs = o->specs, .compressed = o->compressed,
                             .payload = o->vec + nl * ns, .stats = o->vec,
                             .step_ms = o->step_ms, .exchange_ms = o->exchange_ms,
                             .ready_ms = o->ready_ms, .gap_ms = o->gap_ms,
                             .nodes = d->nodes, .hints = &o->hints};
        gcd_timeline *tl = d->timeline;
        double t_obs = tl ? gk_now_s() : 0;
        if (pol->observe)
            rc = pol->observe(o->p->state, &info);
        gp_advice adv;
        if (!rc && pol->advice && pol->advice(o->p->state, &adv) == GCOMP_OK) {
            pthread_mutex_lock(&d->mu);
            d->advice_batch = adv.batch_size;
            d->advice_lr_scale = adv.lr_scale;
            d->advice_step = adv.step;
            pthread_mutex_unlock(&d->mu);
        }
        if (rc)
            gcd_log_error("policy '%s' failed to observe bucket '%s' step %lld: %s", o->p->spec,
                          o->bucket, (long long)o->step, gcomp_strerror(rc));
        if (tl) {
            /* On the bucket's track: the policy's observe, inside the result's wait. */
            int tid = gcd_timeline_bucket(tl, o->bucket_id, o->bucket);
            if (pol->observe || pol->advice)
                gcd_timeline_span(tl, tid, "observe", t_obs, gk_now_s(), o->bucket, o->step,
                                  ",\"policy\":\"%s\"", pol->name);
            gcd_timeline_span(tl, tid, "result", o->t_result, gk_now_s(), o->bucket, o->step,
                              ",\"observed\":true");
            gcd_timeline_flush(tl);
        }
        eng_iter_result(e, o->step, gk_now_s());
        gcd_to_loop(d, GCD_EV_COMPLETE, o->bucket_id, o->step, GCOMP_OK, 0, "");
        obs_free(o);
    }
    if (seq > e->observed_seq)
        e->observed_seq = seq;
    return rc;
}

/* ---- queries ---- */

/* A gcompctl query for the policy in force (e.g. perfmodel's whatif), answered when
   no collect() runs: it reads the policy's state. */
static void answer_query(engine *e, const gcd_event *ev)
{
    gp_instance *p = e->pol[e->npol - 1].p;
    char args[1024], *argv[32], *save = NULL;
    int argc = 0;
    snprintf(args, sizeof(args), "%s", ev->text);
    for (char *t = strtok_r(args, "\n", &save); t && argc < 32; t = strtok_r(NULL, "\n", &save))
        argv[argc++] = t;
    static char out[64 * 1024];
    int rc;
    if (!p->policy->query) {
        snprintf(out, sizeof(out), "policy '%s' answers no queries%s", p->policy->name,
                 argc && strcmp(argv[0], "whatif") == 0 ? " (whatif needs --policy perfmodel)"
                                                        : "");
        rc = GCOMP_NOT_FOUND;
    } else {
        out[0] = '\0';
        rc = p->policy->query(p->state, argc, (const char *const *)argv, ev->status, out,
                              sizeof(out));
    }
    gcd_to_loop(e->d, GCD_EV_CTL_REPLY, 0, 0, rc, ev->ctl_id, out);
}

void eng_answer_queries(engine *e)
{
    if (!e->queries || !eng_collects_done(e))
        return;
    while (e->queries) {
        gcd_event *ev = e->queries;
        e->queries = ev->next;
        answer_query(e, ev);
        free(ev);
    }
}
