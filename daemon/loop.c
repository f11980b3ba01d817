/*
 * loop.c: the engine, on the main thread (it owns MPI). Each turn takes the loop
 * thread's events, advances the negotiation and every bucket step in flight, and then
 * waits: briefly (polling the network) while collectives are in flight, else until an
 * event, a finished worker batch or the next negotiation cycle is due.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "engine.h"
#include "liveness.h"
#include "log.h"

void eng_fail_everything(engine *e, int status, const char *why)
{
    gcd *d = e->d;
    pthread_mutex_lock(&d->mu);
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i] && d->buckets[i]->pending_step >= 0)
            gcd_queue_push(&d->to_loop, GCD_EV_COMPLETE, i, d->buckets[i]->pending_step, status,
                           0, why);
    pthread_mutex_unlock(&d->mu);
    gcd_sessions_wake(d);
}

/* Why the daemon goes away, for the trainers' Goodbye (the first reason wins). */
static void say_goodbye(gcd *d, int status, const char *why)
{
    pthread_mutex_lock(&d->mu);
    if (!d->bye_status) {
        d->bye_status = status;
        snprintf(d->bye_text, sizeof(d->bye_text), "%s", why);
    }
    pthread_mutex_unlock(&d->mu);
}

int gcd_silent_node(gcd *d, int wait_ms)
{
    int node = -1;
    return gcd_live_check(d->live, wait_ms, &node) == GCOMP_OK ? node : -2;
}

int eng_fatal_transport(engine *e, int status, const char *what)
{
    gcd *d = e->d;
    int node = gcd_silent_node(d, d->cfg.timeout_ms < 1000 ? d->cfg.timeout_ms : 1000);
    char why[900];
    if (node >= 0)
        snprintf(why, sizeof(why), "%s failed on node %d: node %d stopped answering (%s): the "
                 "job is going down", what, d->node, node, gcomp_strerror(status));
    else
        snprintf(why, sizeof(why), "%s failed on node %d: %s", what, d->node,
                 gcomp_strerror(status));
    return eng_fatal(e, node >= 0 ? GCOMP_PEER_LOST : status, why);
}

int eng_fatal(engine *e, int status, const char *why)
{
    gcd_log_error("%s", why);
    eng_fail_everything(e, status, why);
    say_goodbye(e->d, status < 0 ? status : GCOMP_INTERNAL, why);
    return status < 0 ? status : GCOMP_INTERNAL;
}

/* A worker finished a batch: wake the engine if it sleeps. */
static void wake_engine(void *ctx)
{
    gcd *d = ctx;
    pthread_mutex_lock(&d->mu);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* Sleep until something happens or ms pass. */
static void wait_for_work(gcd *d, double ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(ms * 1e6);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&d->mu);
    if (!d->to_engine.head)
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    pthread_mutex_unlock(&d->mu);
}

/* The default worker count: the cores this process may use, at most 8. */
static int default_threads(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

/* The checkpoint a decision asked for, once nothing is in flight. */
static void checkpoint_if_drained(engine *e)
{
    if (!e->ckpt_dir || e->in_flight || !eng_collects_done(e) || gcd_pool_busy(e->pool))
        return;
    /* Every node drains alike, so every node holds the same statistics now. */
    eng_observe_through(e, e->next_seq);
    eng_checkpoint_take(e, e->ckpt_dir, e->ckpt_origin);
    free(e->ckpt_dir);
    e->ckpt_dir = NULL;
}

int gcd_engine_run(gcd *d)
{
    engine e = {.d = d, .lanes = d->cfg.lanes};
    char err[1024];
    e.threads = d->cfg.threads > 0 ? d->cfg.threads : default_threads();
    e.env = (gp_env){.nodes = d->nodes, .trainers = d->total_trainers, .seed = d->cfg.seed};
    for (int i = 0; i < ENG_ITERS; i++)
        e.iters[i].step = -1;
    int rc = gcd_pool_new(e.threads, wake_engine, d, &e.pool);
    if (!rc)
        rc = eng_pipeline_init(&e);
    if (!rc && d->node == 0 && !(e.coord = gcd_coord_new(d->nodes, 2 * d->cfg.timeout_ms)))
        rc = GCOMP_NOMEM;
    gp_instance *p0 = NULL;
    if (!rc && d->cfg.restore[0] && eng_checkpoint_read(&e, d->cfg.restore, &p0))
        rc = GCOMP_IO;
    if (!rc && !p0 && eng_policy_make(&e, d->cfg.policy, &p0, err, sizeof(err))) {
        gcd_log_error("%s", err);
        rc = GCOMP_INVALID;
    }
    if (!rc)
        rc = eng_policies_init(&e, p0);
    if (!rc)
        rc = eng_negotiate_init(&e);
    gcd_stats tmp;
    if (!rc && gcd_stats_open(&tmp, d->cfg.decision_log, d->node, err, sizeof(err))) {
        gcd_log_error("decision log: %s", err);
        rc = GCOMP_IO;
    } else if (!rc && (e.declog = tmp.file)) {
        setvbuf(e.declog, NULL, _IOLBF, 0);
    }
    if (!rc) {
        gcd_log_info("engine: %d worker thread(s), %d lane(s)", e.threads, e.lanes);
        gcd_live_verify(d->live, 3000);
    }
    while (!rc) {
        int work = 0, r;
        if ((r = eng_take_events(&e)) < 0) {
            rc = r;
            break;
        }
        work |= r;
        if ((r = eng_negotiate(&e)) < 0) {
            rc = r;
            break;
        }
        work |= r;
        if ((r = eng_pipeline_progress(&e)) < 0) {
            rc = r;
            break;
        }
        work |= r;
        checkpoint_if_drained(&e);
        eng_answer_queries(&e);
        eng_trace_poll(&e);
        if (e.shutting_down && !e.in_flight && !gcd_pool_busy(e.pool) && eng_collects_done(&e)) {
            /* Every node drained alike: the statistics left are held everywhere. */
            eng_observe_through(&e, e.next_seq);
            break;
        }
        if (work)
            continue;
        if (eng_pipeline_waiting_on_network(&e) || eng_negotiation_waiting(&e)) {
            /* Collectives and the negotiation progress only when we call into the
               transport: poll every 50 us, sleeping in between so the cores are left to
               the workers and the trainers (spinning costs a core per daemon). */
            wait_for_work(d, 0.05);
        } else {
            wait_for_work(d, e.in_flight || gcd_pool_busy(e.pool) ? 1.0 : d->cfg.cycle_ms);
        }
    }
    if (!rc) {
        eng_fail_everything(&e, GCOMP_SHUTDOWN, "the job is shutting down");
        say_goodbye(d, GCOMP_SHUTDOWN, "the job is shutting down");
    }
    /* Workers first: they may still touch the buckets' state. */
    gcd_pool_free(e.pool);
    eng_trace_shutdown(&e);
    eng_pipeline_free(&e);
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i])
            eng_bucket_free(&e, d->buckets[i]);
    while (e.saved) {
        saved_bucket *s = e.saved;
        e.saved = s->next;
        eng_checkpoint_saved_free(s);
    }
    while (e.queries) {
        gcd_event *ev = e.queries;
        e.queries = ev->next;
        free(ev);
    }
    eng_negotiate_free(&e);
    eng_policies_free(&e);
    free(e.asks);
    free(e.ckpt_asks);
    free(e.ckpt_dir);
    return rc;
}
