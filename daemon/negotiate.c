/*
 * negotiate.c: the engine's side of the negotiation (Horovod's). Each cycle every node
 * sends node 0 a report: the bucket steps whose local sum is done (or that failed
 * here), buckets that died here, policy switches, checkpoints and shutdowns asked
 * here, and how far it holds the statistics of finished steps. Node 0's coordinator
 * (coord.c) answers every node with one decision, which every node applies alike: it
 * observes the finished steps every node has statistics for, switches policy, decides
 * the layers' specs of the steps to run and queues them on the pipeline in the
 * decision's order, fails the failed ones, saves a checkpoint or shuts down.
 *
 * Nothing here blocks: a node sends its report and polls for the decision (node 0
 * polls for the reports), the pipeline runs meanwhile. A cycle starts when there is
 * something to report, or --cycle-ms after the last one. A node silent for
 * --timeout-ms is named and the job taken down.
 *
 * A decision is applied only when no collect() job runs (policy.h's order), and no
 * new cycle starts while a decided checkpoint waits for the pipeline to drain.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "engine.h"
#include "log.h"

/* The report being built between cycles. */
typedef struct report_build {
    Gcomp__ReadyEntry **entries; /* each owns its layout arrays, if it carries one */
    size_t n, cap;
    char **unregistered;         /* names of buckets that died here */
    size_t nunreg, capunreg;
} report_build;

/* A bucket whose local sum runs, and the step it sums. */
typedef struct summing {
    eng_bucket *eb;
    int64_t step;
} summing;

struct eng_negotiation {
    report_build rb;
    gcd_event *later;            /* events to retry next turn (a bucket's old sum runs) */
    summing *summing;            /* buckets whose local sum runs */
    size_t nsumming, capsumming;
    bool waiting;                /* our report is out, its decision not applied yet */
    uint64_t reported_observed;  /* Report.observed of our last report */
    int64_t sent_ms;             /* when it went out */
    int64_t last_ms;             /* when the last decision was applied */
    Gcomp__Decision *pending;    /* received, applied once no collect() runs */
    /* Node 0: this cycle's reports. */
    void **reports;
    size_t *lens;
    int ngot;
};

int eng_negotiate_init(engine *e)
{
    struct eng_negotiation *n = calloc(1, sizeof(*n));
    if (!n)
        return GCOMP_NOMEM;
    int W = e->d->nodes;
    if (!(n->reports = calloc((size_t)W, sizeof(void *))) ||
        !(n->lens = calloc((size_t)W, sizeof(size_t)))) {
        free(n->reports);
        free(n);
        return GCOMP_NOMEM;
    }
    n->last_ms = gk_now_ms();
    e->neg = n;
    if (e->d->node == 0 && !e->coord && !(e->coord = gcd_coord_new(W, 2 * e->d->cfg.timeout_ms)))
        return GCOMP_NOMEM;
    return GCOMP_OK;
}

static void report_clear(report_build *rb)
{
    for (size_t i = 0; i < rb->n; i++) {
        Gcomp__ReadyEntry *en = rb->entries[i];
        if (en->n_layers) {
            free(en->layers[0]); /* the messages' block (gcd_layout_to_proto) */
            free(en->layers);
        }
        free(en->bucket);
        free(en->error);
        free(en);
    }
    rb->n = 0;
    for (size_t i = 0; i < rb->nunreg; i++)
        free(rb->unregistered[i]);
    rb->nunreg = 0;
}

void eng_negotiate_free(engine *e)
{
    struct eng_negotiation *n = e->neg;
    if (!n)
        return;
    report_clear(&n->rb);
    free(n->rb.entries);
    free(n->rb.unregistered);
    free(n->summing);
    while (n->later) {
        gcd_event *ev = n->later;
        n->later = ev->next;
        free(ev);
    }
    if (n->pending)
        gcomp__decision__free_unpacked(n->pending, NULL);
    for (int w = 0; w < e->d->nodes; w++)
        free(n->reports[w]);
    free(n->reports);
    free(n->lens);
    free(n);
    e->neg = NULL;
    gcd_coord_free(e->coord);
    e->coord = NULL;
}

static Gcomp__ReadyEntry *report_add(report_build *rb, const char *bucket, int64_t step,
                                     int status, const char *error)
{
    Gcomp__ReadyEntry **arr = gk_grow(rb->entries, &rb->cap, rb->n + 1, sizeof(*arr));
    if (!arr)
        return NULL;
    rb->entries = arr;
    Gcomp__ReadyEntry *en = calloc(1, sizeof(*en));
    if (!en)
        return NULL;
    gcomp__ready_entry__init(en);
    en->bucket = strdup(bucket);
    en->step = step;
    en->status = status;
    en->error = strdup(error ? error : "");
    if (!en->bucket || !en->error) {
        free(en->bucket);
        free(en->error);
        free(en);
        return NULL;
    }
    rb->entries[rb->n++] = en;
    return en;
}

eng_bucket *eng_bucket_get(engine *e, gcd_bucket *b)
{
    if (b->eng)
        return b->eng;
    eng_bucket *eb = calloc(1, sizeof(*eb));
    if (!eb || !(eb->layers = calloc(b->layout.n ? b->layout.n : 1, sizeof(eng_layer)))) {
        free(eb);
        return NULL;
    }
    eb->b = b;
    eb->sum_step = -1;
    eb->scale = 1.0f / (float)e->d->total_trainers;
    for (size_t i = 0; i < b->layout.n; i++) {
        const gcd_layer *l = &b->layout.layers[i];
        gk_layer *g = &eb->layers[i].geom;
        g->ndim = l->ndim;
        g->numel = l->numel;
        g->rows = (size_t)l->shape[0];
        g->cols = l->numel / g->rows;
    }
    b->eng = eb;
    return eb;
}

void eng_bucket_free(engine *e, gcd_bucket *b)
{
    eng_bucket *eb = b->eng;
    if (!eb)
        return;
    if (eb->local.ptr != b->res)
        gcd_data_release(&e->d->data, &eb->local);
    for (size_t i = 0; i < b->layout.n; i++)
        eng_layer_reset(&eb->layers[i]);
    free(eb->layers);
    free(eb->sum_bad);
    free(eb);
    b->eng = NULL;
}

static int ask(ctl_wait **arr, size_t *n, uint64_t ctl_id, const char *text)
{
    ctl_wait *a = realloc(*arr, (*n + 1) * sizeof(*a));
    if (!a)
        return GCOMP_NOMEM;
    *arr = a;
    a[*n].ctl_id = ctl_id;
    snprintf(a[*n].text, sizeof(a[*n].text), "%s", text);
    (*n)++;
    return GCOMP_OK;
}

int eng_take_events(engine *e)
{
    gcd *d = e->d;
    struct eng_negotiation *n = e->neg;
    pthread_mutex_lock(&d->mu);
    gcd_event *ev = gcd_queue_take_all(&d->to_engine);
    pthread_mutex_unlock(&d->mu);
    int work = ev != NULL;
    /* Events put off last turn go first, in their order. */
    if (n->later) {
        gcd_event *last = n->later;
        while (last->next)
            last = last->next;
        last->next = ev;
        ev = n->later;
        n->later = NULL;
    }
    gcd_event **later_tail = &n->later;
    while (ev) {
        gcd_event *next = ev->next;
        gcd_bucket *b = NULL;
        double first_submit = 0;
        if (ev->kind == GCD_EV_READY || ev->kind == GCD_EV_FAIL || ev->kind == GCD_EV_UNREGISTER) {
            pthread_mutex_lock(&d->mu);
            b = gcd_bucket_by_id(d, ev->bucket);
            first_submit = b ? b->first_submit_s : 0;
            pthread_mutex_unlock(&d->mu);
        }
        bool keep = false;
        /* A bucket whose previous sum still runs (its step failed elsewhere before the
           sum ended): this event waits until the sum is done. */
        if (b && b->eng && !gcd_batch_done(&b->eng->sum) &&
            (ev->kind == GCD_EV_READY || ev->kind == GCD_EV_UNREGISTER)) {
            ev->next = NULL;
            *later_tail = ev;
            later_tail = &ev->next;
            ev = next;
            continue;
        }
        switch (ev->kind) {
        case GCD_EV_READY: {
            eng_bucket *eb = eng_bucket_get(e, b);
            summing *arr = gk_grow(n->summing, &n->capsumming, n->nsumming + 1, sizeof(*arr));
            int rc = eb && arr ? GCOMP_OK : GCOMP_NOMEM;
            if (arr)
                n->summing = arr;
            if (!rc) {
                eb->t_prev_ready = eb->t_ready;
                eb->t_ready = gk_now_s();
                eb->t_first_submit = first_submit;
                eng_iter_submitted(e, ev->step, first_submit);
                rc = eng_reduce_start(e, eb, ev->step);
            }
            if (rc)
                report_add(&n->rb, b->name, ev->step, rc, "out of memory");
            else
                n->summing[n->nsumming++] = (summing){.eb = eb, .step = ev->step};
            break;
        }
        case GCD_EV_FAIL:
            report_add(&n->rb, b->name, ev->step, ev->status, ev->text);
            break;
        case GCD_EV_UNREGISTER: {
            /* Every slot left it: drop the engine's state, tell the coordinator (so the
               name may come back with another layout), let the loop free the memory. */
            char **names = gk_grow(n->rb.unregistered, &n->rb.capunreg, n->rb.nunreg + 1,
                                   sizeof(*names));
            if (names) {
                n->rb.unregistered = names;
                if ((names[n->rb.nunreg] = strdup(b->name)))
                    n->rb.nunreg++;
            }
            eng_trace_bucket_gone(e, b->name);
            eng_bucket_free(e, b);
            gcd_to_loop(d, GCD_EV_FREED, b->id, 0, 0, 0, NULL);
            break;
        }
        case GCD_EV_POLICY:
            ask(&e->asks, &e->nasks, ev->ctl_id, ev->text);
            break;
        case GCD_EV_CHECKPOINT:
            ask(&e->ckpt_asks, &e->nckpt, ev->ctl_id, ev->text);
            break;
        case GCD_EV_TRACE:
            if (eng_trace_ask(e, ev->ctl_id, ev->status == 1, ev->step, ev->text))
                gcd_to_loop(d, GCD_EV_CTL_REPLY, 0, 0, GCOMP_NOMEM, ev->ctl_id, "out of memory");
            break;
        case GCD_EV_SHUTDOWN:
            e->shutdown_asked = true;
            break;
        case GCD_EV_SIGNAL: {
            /* mpirun sends SIGTERM when a peer died: find out, so the trainers learn
               which node, before it kills us. Otherwise a job-wide shutdown. */
            int node = gcd_silent_node(d, 300);
            if (node >= 0) {
                char why[256];
                snprintf(why, sizeof(why), "node %d stopped answering (its daemon is gone): "
                         "the job is going down", node);
                free(ev);
                for (gcd_event *rest = next; rest;) {
                    gcd_event *n2 = rest->next;
                    free(rest);
                    rest = n2;
                }
                return eng_fatal(e, GCOMP_PEER_LOST, why);
            }
            gcd_log_info("signal %d: shutting the job down", ev->status);
            e->shutdown_asked = true;
            break;
        }
        case GCD_EV_QUERY:
            ev->next = e->queries; /* answered when no collect() runs (policy_host.c) */
            e->queries = ev;
            keep = true;
            break;
        default:
            break;
        }
        if (!keep)
            free(ev);
        ev = next;
    }
    /* Local sums that finished go into the report. */
    size_t keep = 0;
    for (size_t i = 0; i < n->nsumming; i++) {
        eng_bucket *eb = n->summing[i].eb;
        gcd_bucket *b = eb->b;
        int status;
        char err[512] = "";
        if (!eng_reduce_done(e, eb, &status, err, sizeof(err))) {
            n->summing[keep++] = n->summing[i];
            continue;
        }
        work = 1;
        if (eb->sum_step != n->summing[i].step)
            continue; /* decided (failed) while it summed: nothing to report */
        if (status) {
            gcd_log_warn("%s", err);
            report_add(&n->rb, b->name, eb->sum_step, status, err);
            continue;
        }
        /* The first report of a bucket carries its layout, for the coordinator to
           compare across nodes. */
        Gcomp__Layer *msgs, **ptrs;
        if (!b->announced && gcd_layout_to_proto(&b->layout, &msgs, &ptrs)) {
            report_add(&n->rb, b->name, eb->sum_step, GCOMP_NOMEM, "out of memory");
            continue;
        }
        Gcomp__ReadyEntry *en = report_add(&n->rb, b->name, eb->sum_step, 0, NULL);
        if (en && !b->announced) {
            en->layers = ptrs;
            en->n_layers = b->layout.n;
            en->flags = b->layout.flags;
            b->announced = true;
        } else if (!b->announced) {
            free(msgs);
            free(ptrs);
        }
    }
    n->nsumming = keep;
    return work;
}

/* Pack this cycle's report (the caller frees *out). */
static int build_report(engine *e, uint8_t **out, size_t *len)
{
    gcd *d = e->d;
    struct eng_negotiation *n = e->neg;
    Gcomp__NodeReport r = GCOMP__NODE_REPORT__INIT;
    /* A bucket with a lost trainer fails whatever step the other nodes start, until
       every slot holds it again: each change is reported once. */
    char **recovered = NULL;
    size_t nrec = 0;
    pthread_mutex_lock(&d->mu);
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        gcd_bucket *b = d->buckets[i];
        if (!b || b->dying)
            continue;
        if (b->lost[0] && !b->lost_reported) {
            report_add(&n->rb, b->name, -1, b->lost_status ? b->lost_status : GCOMP_PEER_LOST,
                       b->lost);
            b->lost_reported = true;
        } else if (!b->lost[0] && b->lost_reported) {
            char **arr = realloc(recovered, (nrec + 1) * sizeof(*arr));
            if (arr) {
                recovered = arr;
                recovered[nrec++] = b->name;
                b->lost_reported = false;
            }
        }
    }
    r.max_step = d->max_step;
    pthread_mutex_unlock(&d->mu);
    r.recovered = recovered;
    r.n_recovered = nrec;
    r.node = d->node;
    r.ready = n->rb.entries;
    r.n_ready = n->rb.n;
    r.unregistered = n->rb.unregistered;
    r.n_unregistered = n->rb.nunreg;
    r.shutdown = e->shutdown_asked;
    r.observed = e->stats_done;
    /* One policy switch and one checkpoint per cycle; the coordinator queues them. */
    if (e->sent_asks < e->nasks)
        r.policy_spec = e->asks[e->sent_asks++].text;
    if (e->sent_ckpt < e->nckpt)
        r.checkpoint_dir = e->ckpt_asks[e->sent_ckpt++].text;
    Gcomp__TraceAsk trace_ask;
    char glob[sizeof(e->trace_asks[0].text)];
    eng_trace_report(e, &r, &trace_ask, glob, sizeof(glob));
    *len = gcomp__node_report__get_packed_size(&r);
    *out = malloc(*len ? *len : 1);
    if (*out)
        gcomp__node_report__pack(&r, *out);
    free(recovered); /* the names belong to the buckets, which only the loop frees */
    report_clear(&n->rb);
    return *out ? GCOMP_OK : GCOMP_NOMEM;
}

/* Node 0: unpack the reports, decide, pack the decision. */
static int coordinate(engine *e, uint8_t **out, size_t *outlen)
{
    struct eng_negotiation *n = e->neg;
    int W = e->d->nodes, rc = GCOMP_OK;
    Gcomp__NodeReport **r = calloc((size_t)W, sizeof(*r));
    if (!r)
        return GCOMP_NOMEM;
    for (int w = 0; w < W && !rc; w++)
        if (!(r[w] = gcomp__node_report__unpack(NULL, n->lens[w], n->reports[w]))) {
            gcd_log_error("undecodable negotiation report from node %d", w);
            rc = GCOMP_PROTOCOL;
        }
    Gcomp__Decision dec = GCOMP__DECISION__INIT;
    if (!rc)
        rc = gcd_coord_step(e->coord, r, gk_now_ms(), &dec);
    if (!rc) {
        *outlen = gcomp__decision__get_packed_size(&dec);
        *out = malloc(*outlen ? *outlen : 1);
        if (*out)
            gcomp__decision__pack(&dec, *out);
        else
            rc = GCOMP_NOMEM;
    }
    gcd_coord_decision_clear(&dec);
    for (int w = 0; w < W; w++)
        if (r[w])
            gcomp__node_report__free_unpacked(r[w], NULL);
    free(r);
    return rc;
}

/* A bucket step decided to run: its number, its specs, the pipeline. */
static int run_entry(engine *e, gcd_bucket *b, const Gcomp__DecisionEntry *en)
{
    eng_bucket *eb = b->eng;
    if (!eb->uid) {
        /* Its number arrives with its first run: layer ids are unique by construction. */
        eb->uid = en->uid;
        for (size_t i = 0; i < b->layout.n; i++)
            eb->layers[i].geom.id = ((uint64_t)en->uid << 32) | (uint64_t)i;
        if (e->saved)
            eng_checkpoint_adopt(e, eb);
    }
    uint64_t seq = ++e->next_seq;
    int rc = eng_policy_decide(e, eb, en->step);
    if (rc) {
        gcd_log_error("bucket '%s' step %lld: the policy's decision failed: %s", b->name,
                      (long long)en->step, gcomp_strerror(rc));
        return rc;
    }
    if (!eng_policy_observes(e, eb, en->step))
        eng_stats_held(e, seq);
    eng_trace_step(e, eb, en->step);
    return eng_pipeline_start(e, eb, en->step, seq);
}

/* Apply one decision entry: run the step, or fail it here. */
static int apply_entry(engine *e, const Gcomp__DecisionEntry *en)
{
    gcd *d = e->d;
    pthread_mutex_lock(&d->mu);
    gcd_bucket *b = gcd_bucket_by_name(d, en->bucket);
    bool mine = b && b->queued && b->pending_step == en->step && b->eng &&
                b->eng->sum_step == en->step;
    pthread_mutex_unlock(&d->mu);
    if (mine)
        b->eng->sum_step = -1;
    if (en->status) {
        if (b) {
            if (mine) {
                gcd_step_record r = {.bucket = b->name, .step = en->step};
                gcd_stats_record(d, &r, en->status);
            }
            gcd_to_loop(d, GCD_EV_COMPLETE, b->id, en->step, en->status, 0, en->error);
        }
        return GCOMP_OK;
    }
    if (!mine) {
        gcd_log_error("decision runs bucket '%s' step %lld that this node does not hold",
                      en->bucket, (long long)en->step);
        return GCOMP_INTERNAL;
    }
    return run_entry(e, b, en);
}

static int apply_decision(engine *e, Gcomp__Decision *dec)
{
    gcd *d = e->d;
    int rc = eng_observe_through(e, dec->observe_through);
    if (!rc && dec->policy_spec && *dec->policy_spec && dec->policy_epoch > e->epoch)
        rc = eng_policy_switch(e, dec->policy_spec, dec->policy_epoch, dec->policy_step,
                               dec->policy_origin);
    if (!rc && dec->trace)
        rc = eng_trace_apply(e, dec->trace);
    for (size_t i = 0; i < dec->n_run && !rc; i++)
        rc = apply_entry(e, dec->run[i]);
    if (!rc && dec->checkpoint_dir && *dec->checkpoint_dir) {
        e->ckpt_dir = strdup(dec->checkpoint_dir);
        e->ckpt_origin = dec->checkpoint_origin;
        if (!e->ckpt_dir)
            rc = GCOMP_NOMEM;
    }
    if (dec->shutdown)
        e->shutting_down = true;
    if (d->stats.file)
        fflush(d->stats.file);
    return rc;
}

/* A node went silent in the negotiation: name it (node 0 knows; others ask) and take
   the job down. */
static int negotiation_stall(engine *e, int node)
{
    gcd *d = e->d;
    if (node < 0)
        node = gcd_silent_node(d, d->cfg.timeout_ms < 2000 ? d->cfg.timeout_ms : 2000);
    char why[256];
    if (node >= 0)
        snprintf(why, sizeof(why), "node %d stopped answering for %d ms: job aborted", node,
                 d->cfg.timeout_ms);
    else if (node == -2)
        snprintf(why, sizeof(why), "a node stopped answering for %d ms (which one is unknown: "
                 "liveness pings do not get through): job aborted", d->cfg.timeout_ms);
    else
        snprintf(why, sizeof(why), "the negotiation did not finish in %d ms (every node "
                 "answers): job aborted", d->cfg.timeout_ms);
    return eng_fatal(e, GCOMP_STALL, why);
}

bool eng_negotiation_waiting(const engine *e)
{
    return e->neg->waiting && !e->neg->pending;
}

int eng_negotiate(engine *e)
{
    gcd *d = e->d;
    struct eng_negotiation *n = e->neg;
    int rc, work = 0;
    int64_t now = gk_now_ms();
    if (n->pending) {
        /* Policy calls are ordered: no collect() may run while a decision applies. */
        if (!eng_collects_done(e))
            return 0;
        Gcomp__Decision *dec = n->pending;
        n->pending = NULL;
        rc = apply_decision(e, dec);
        gcomp__decision__free_unpacked(dec, NULL);
        n->waiting = false;
        n->last_ms = now;
        if (rc) {
            char why[256];
            snprintf(why, sizeof(why), "applying a decision failed on node %d: %s", d->node,
                     gcomp_strerror(rc));
            return eng_fatal(e, rc, why);
        }
        return 1;
    }
    if (!n->waiting) {
        /* A new cycle: something to say, or the idle interval is over. Not while a
           decided checkpoint drains the pipeline or the job shuts down. */
        if (e->ckpt_dir || e->shutting_down)
            return 0;
        bool news = n->rb.n || n->rb.nunreg || e->sent_asks < e->nasks ||
                    e->sent_ckpt < e->nckpt || e->shutdown_asked || eng_trace_news(e) ||
                    e->stats_done != n->reported_observed;
        if (!news && now - n->last_ms < d->cfg.cycle_ms)
            return 0;
        uint8_t *buf;
        size_t len;
        n->reported_observed = e->stats_done;
        if ((rc = build_report(e, &buf, &len)))
            return eng_fatal(e, rc, "out of memory building a report");
        if (d->node == 0) {
            n->reports[0] = buf;
            n->lens[0] = len;
            n->ngot = 1;
        } else {
            rc = gcd_ctl_report_send(d->ctl, buf, len);
            free(buf);
            if (rc)
                return eng_fatal_transport(e, rc, "sending the report to node 0");
        }
        n->waiting = true;
        n->sent_ms = now;
        work = 1;
    }
    if (d->node == 0) {
        for (int w = 1; w < d->nodes; w++) {
            if (n->reports[w])
                continue;
            bool got;
            if ((rc = gcd_ctl_report_poll(d->ctl, w, &n->reports[w], &n->lens[w], &got)))
                return eng_fatal_transport(e, rc, "receiving a report");
            if (got) {
                n->ngot++;
                work = 1;
            } else if (now - n->sent_ms > d->cfg.timeout_ms) {
                return negotiation_stall(e, w);
            }
        }
        if (n->ngot < d->nodes)
            return work;
        uint8_t *dbuf = NULL;
        size_t dlen = 0;
        rc = coordinate(e, &dbuf, &dlen);
        for (int w = 0; w < d->nodes; w++) {
            free(n->reports[w]);
            n->reports[w] = NULL;
        }
        n->ngot = 0;
        if (!rc)
            rc = gcd_ctl_decision_send(d->ctl, dbuf, dlen);
        if (!rc && !(n->pending = gcomp__decision__unpack(NULL, dlen, dbuf)))
            rc = GCOMP_PROTOCOL;
        free(dbuf);
        if (rc)
            return eng_fatal(e, rc, "coordinating the nodes failed");
        return 1;
    }
    void *got_buf = NULL;
    size_t got_len = 0;
    bool got;
    if ((rc = gcd_ctl_decision_poll(d->ctl, &got_buf, &got_len, &got)))
        return eng_fatal_transport(e, rc, "receiving the decision");
    if (!got)
        return now - n->sent_ms > d->cfg.timeout_ms ? negotiation_stall(e, -1) : work;
    n->pending = gcomp__decision__unpack(NULL, got_len, got_buf);
    free(got_buf);
    if (!n->pending)
        return eng_fatal(e, GCOMP_PROTOCOL, "undecodable decision from node 0");
    return 1;
}
