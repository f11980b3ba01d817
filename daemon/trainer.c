/*
 * trainer.c: the trainer protocol on the loop thread: hello, registrations (in parts),
 * unregistrations, submits, hints, and what happens to a node's steps when one of its
 * trainers leaves, registers a different layout, or never registers a bucket the
 * others submit: every trainer waiting on such a step gets an error that names the
 * bucket, the slot and the cause (the other nodes through the engine's next report).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "log.h"
#include "sessions.h"

static uint64_t all_slots(const gcd_bucket *b)
{
    return b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1;
}

/* Under mu: the pending step of b can never complete: its trainers that submitted get
   the error now, the other nodes through the engine's next report. */
static void fail_pending(gcd *d, gcd_bucket *b, int status, const char *why)
{
    if (b->pending_step < 0 || b->queued)
        return;
    gcd_queue_push(&d->to_loop, GCD_EV_COMPLETE, b->id, b->pending_step, status, 0, why);
    gcd_queue_push(&d->to_engine, GCD_EV_FAIL, b->id, b->pending_step, status, 0, why);
    pthread_cond_signal(&d->cv);
    uv_async_send(&d->wake);
}

/*
 * Slot `slot` leaves bucket b (its trainer disconnected or unregistered it), under mu:
 * a step pending without it fails; later steps fail with b->lost until the slot
 * registers the bucket again. A slot that unregistered (released) is gone for good:
 * once every slot released the bucket and nothing is pending it dies. Returns 1 if a
 * step failed.
 */
static int slot_leaves(gcd *d, gcd_bucket *b, int slot, bool released, const char *why)
{
    int failed = b->pending_step >= 0 && !b->queued;
    b->registered &= ~(1ull << slot);
    if (released)
        b->released |= 1ull << slot;
    snprintf(b->lost, sizeof(b->lost), "bucket '%s': %s", b->name, why);
    b->lost_status = GCOMP_PEER_LOST;
    fail_pending(d, b, GCOMP_PEER_LOST, b->lost);
    gcd_bucket_maybe_die(d, b);
    return failed;
}

void gcd_trainer_lost(gcd_session *s)
{
    gcd *d = s->d;
    char why[256];
    snprintf(why, sizeof(why), "trainer local rank %d (pid %d) on node %d disconnected", s->slot,
             s->pid, d->node);
    uint64_t bit = 1ull << s->slot;
    int failed = 0;
    pthread_mutex_lock(&d->mu);
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        gcd_bucket *b = d->buckets[i];
        if (b && !b->dying && (b->registered & bit))
            failed += slot_leaves(d, b, s->slot, false, why);
    }
    d->slots[s->slot] = NULL;
    d->connected--;
    gcd_metrics_trainers(d->metrics, d->connected);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (failed)
        gcd_log_warn("%s: %d step(s) in progress fail", why, failed);
    else
        gcd_log_info("%s", why);
    uv_async_send(&d->wake);
}

void gcd_trainer_complete(gcd *d, uint64_t to, uint32_t bucket, int64_t step, int status,
                          const char *error)
{
    Gcomp__Complete c = GCOMP__COMPLETE__INIT;
    pthread_mutex_lock(&d->mu);
    c.advice_batch = d->advice_batch;
    c.advice_lr_scale = d->advice_lr_scale;
    c.advice_step = d->advice_step;
    pthread_mutex_unlock(&d->mu);
    c.bucket_id = bucket;
    c.step = step;
    c.status = status;
    c.error = (char *)(error ? error : "");
    Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
    m.msg_case = GCOMP__DAEMON_MSG__MSG_COMPLETE;
    m.complete = &c;
    for (int t = 0; t < GCD_MAX_TRAINERS && to; t++)
        if ((to >> t) & 1) {
            to &= ~(1ull << t);
            if (d->slots[t])
                gcd_session_send(d->slots[t], &m.base, NULL, 0);
        }
}

static void on_hello(gcd_session *s, const Gcomp__Hello *h)
{
    gcd *d = s->d;
    Gcomp__Welcome w = GCOMP__WELCOME__INIT;
    char err[512] = "";
    if (s->foreign) {
        w.status = GCOMP_DENIED;
        gcd_session_denial(s, err, sizeof(err));
    } else if (s->slot >= 0) {
        w.status = GCOMP_PROTOCOL;
        snprintf(err, sizeof(err), "hello sent twice");
    } else if (h->version != GCOMP_PROTOCOL_VERSION) {
        w.status = GCOMP_VERSION;
        snprintf(err, sizeof(err), "protocol version %u, this daemon speaks %d", h->version,
                 GCOMP_PROTOCOL_VERSION);
    } else if (strcmp(h->job_id, d->cfg.job_id) != 0) {
        w.status = GCOMP_VERSION;
        snprintf(err, sizeof(err), "job id '%.64s' is not this daemon's job", h->job_id);
    } else if (h->local_rank < 0 || h->local_rank >= d->trainers) {
        w.status = GCOMP_INVALID;
        snprintf(err, sizeof(err), "local rank %d: node %d expects local ranks 0..%d",
                 h->local_rank, d->node, d->trainers - 1);
    } else if (d->slots[h->local_rank]) {
        w.status = GCOMP_INVALID;
        snprintf(err, sizeof(err), "local rank %d is already connected (pid %d)", h->local_rank,
                 d->slots[h->local_rank]->pid);
    }
    if (!w.status) {
        s->slot = h->local_rank;
        s->pid = h->pid;
        d->slots[s->slot] = s;
        pthread_mutex_lock(&d->mu);
        d->connected++;
        gcd_metrics_trainers(d->metrics, d->connected);
        pthread_mutex_unlock(&d->mu);
        w.node = d->node;
        w.nodes = d->nodes;
        w.local_size = d->trainers;
        gcd_log_debug("trainer local rank %d (pid %d) connected", s->slot, s->pid);
    } else {
        gcd_log_warn("refused a trainer: %s", err);
    }
    w.error = err;
    Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
    m.msg_case = GCOMP__DAEMON_MSG__MSG_WELCOME;
    m.welcome = &w;
    if (!gcd_session_send(s, &m.base, NULL, 0) && w.status)
        gcd_session_close(s, NULL);
}

static void send_registered(gcd_session *s, int status, const char *err, const gcd_bucket *b)
{
    Gcomp__Registered reply = GCOMP__REGISTERED__INIT;
    int fds[2], nfds = 0;
    reply.status = status;
    reply.error = (char *)err;
    if (!status) {
        reply.bucket_id = b->id;
        reply.numel = b->layout.numel;
        fds[0] = b->in_fd[s->slot];
        fds[1] = b->res_fd;
        nfds = 2;
    } else {
        gcd_log_warn("registration refused: %s", err);
    }
    Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
    m.msg_case = GCOMP__DAEMON_MSG__MSG_REGISTERED;
    m.registered = &reply;
    gcd_session_send(s, &m.base, fds, nfds);
}

/* A Register packet: the whole bucket, or one part of it (see proto/gcomp.proto). The
   bucket is registered, and answered, after its last part. */
static void on_register(gcd_session *s, const Gcomp__Register *r)
{
    gcd *d = s->d;
    char err[1024] = "";
    const char *name = r->bucket ? r->bucket : "";
    int status = GCOMP_OK;
    if (!s->reg.open) {
        uint32_t total = r->total_layers ? r->total_layers : (uint32_t)r->n_layers;
        if (!*name || strlen(name) > GCOMP_MAX_NAME) {
            status = GCOMP_INVALID;
            snprintf(err, sizeof(err), "bucket name missing or longer than %d bytes", GCOMP_MAX_NAME);
        } else if (r->flags & ~(uint32_t)GCOMP_BUCKET_EXACT) {
            status = GCOMP_INVALID;
            snprintf(err, sizeof(err), "bucket '%s': unknown flags 0x%x", name, r->flags);
        } else if (total < 1 || total > GCOMP_MAX_LAYERS) {
            status = GCOMP_INVALID;
            snprintf(err, sizeof(err), "bucket '%s': %u layers, must be 1..%d", name, total,
                     GCOMP_MAX_LAYERS);
        } else {
            gw_strlcpy(s->reg.name, name, sizeof(s->reg.name));
            s->reg.total = total;
            s->reg.layout = (gcd_layout){.flags = r->flags};
            s->reg.open = true;
        }
    } else if (strcmp(name, s->reg.name) != 0) {
        status = GCOMP_PROTOCOL;
        snprintf(err, sizeof(err), "bucket '%.200s': a part of it arrived while bucket '%.200s' "
                 "was being registered", name, s->reg.name);
    }
    if (!status)
        status = gcd_layout_append(s->reg.name, r->layers, r->n_layers, s->reg.total,
                                   &s->reg.layout, err, sizeof(err));
    if (!status && r->more)
        return; /* more parts follow */
    if (!status && s->reg.layout.n != s->reg.total) {
        status = GCOMP_PROTOCOL;
        snprintf(err, sizeof(err), "bucket '%s': the registration ended after %zu of %u layers",
                 s->reg.name, s->reg.layout.n, s->reg.total);
    }
    gcd_bucket *b = NULL;
    if (!status && s->nbuckets >= (unsigned)d->cfg.max_buckets) {
        status = GCOMP_LIMIT;
        snprintf(err, sizeof(err), "bucket '%s': local rank %d already holds %u buckets "
                 "(--max-buckets %d); unregister some first", s->reg.name, s->slot, s->nbuckets,
                 d->cfg.max_buckets);
    }
    if (!status) {
        pthread_mutex_lock(&d->mu);
        status = gcd_bucket_register(d, s->reg.name, &s->reg.layout, s->slot, &b, err, sizeof(err));
        if (status == GCOMP_MISMATCH && (b = gcd_bucket_by_name(d, s->reg.name))) {
            /* The node's other trainers wait on this bucket: they learn why now. */
            snprintf(b->lost, sizeof(b->lost), "%s", err);
            b->lost_status = GCOMP_MISMATCH;
            fail_pending(d, b, GCOMP_MISMATCH, err);
            b = NULL;
        }
        pthread_mutex_unlock(&d->mu);
    }
    if (!status)
        s->nbuckets++;
    gcd_layout_free(&s->reg.layout);
    s->reg.open = false;
    send_registered(s, status, err, b);
}

/* The trainer is done with a bucket; the client refuses while its step is in flight,
   so a submitted step here is a protocol error answered with GCOMP_BUSY. */
static void on_unregister(gcd_session *s, const Gcomp__Unregister *u)
{
    gcd *d = s->d;
    uint64_t bit = 1ull << s->slot;
    Gcomp__Unregistered reply = GCOMP__UNREGISTERED__INIT;
    char err[700] = "";
    reply.bucket_id = u->bucket_id;
    pthread_mutex_lock(&d->mu);
    gcd_bucket *b = gcd_bucket_by_id(d, u->bucket_id);
    if (!b || b->dying || !(b->registered & bit)) {
        reply.status = GCOMP_NOT_FOUND;
        snprintf(err, sizeof(err), "bucket id %u is not registered by local rank %d",
                 u->bucket_id, s->slot);
    } else if (b->submitted & bit) {
        reply.status = GCOMP_BUSY;
        snprintf(err, sizeof(err), "bucket '%s': local rank %d submitted step %lld and has not "
                 "waited for it", b->name, s->slot, (long long)b->pending_step);
    } else {
        char why[256];
        snprintf(why, sizeof(why), "local rank %d on node %d unregistered it", s->slot, d->node);
        slot_leaves(d, b, s->slot, true, why);
        s->nbuckets--;
    }
    pthread_mutex_unlock(&d->mu);
    if (reply.status)
        gcd_log_warn("unregister refused: %s", err);
    reply.error = err;
    Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
    m.msg_case = GCOMP__DAEMON_MSG__MSG_UNREGISTERED;
    m.unregistered = &reply;
    gcd_session_send(s, &m.base, NULL, 0);
}

static void on_submit(gcd_session *s, const Gcomp__Submit *sub)
{
    gcd *d = s->d;
    uint64_t bit = 1ull << s->slot;
    int status = GCOMP_OK;
    char err[700] = "";
    pthread_mutex_lock(&d->mu);
    gcd_bucket *b = gcd_bucket_by_id(d, sub->bucket_id);
    if (!b || b->dying || !(b->registered & bit)) {
        status = GCOMP_NOT_FOUND;
        snprintf(err, sizeof(err), "bucket id %u is not registered by local rank %d",
                 sub->bucket_id, s->slot);
    } else if (b->lost[0]) {
        status = b->lost_status ? b->lost_status : GCOMP_PEER_LOST;
        snprintf(err, sizeof(err), "%s", b->lost);
    } else if (b->failed_step == sub->step) {
        status = b->failed_status;
        snprintf(err, sizeof(err), "%s", b->failed_error);
    } else if (sub->step <= b->last_step) {
        status = GCOMP_STEP;
        snprintf(err, sizeof(err), "bucket '%s': step %lld submitted after step %lld", b->name,
                 (long long)sub->step, (long long)b->last_step);
    } else if (b->submitted & bit) {
        status = GCOMP_BUSY;
        snprintf(err, sizeof(err), "bucket '%s': local rank %d already submitted step %lld",
                 b->name, s->slot, (long long)b->pending_step);
    } else if (b->pending_step >= 0 && b->pending_step != sub->step) {
        status = GCOMP_STEP;
        snprintf(err, sizeof(err),
                 "bucket '%s': local rank %d submitted step %lld while step %lld is pending on node %d",
                 b->name, s->slot, (long long)sub->step, (long long)b->pending_step, d->node);
    } else {
        if (b->pending_step < 0) {
            b->first_submit_s = gk_now_s();
            b->first_submit_ms = (int64_t)(b->first_submit_s * 1e3);
        }
        b->pending_step = sub->step;
        b->submitted |= bit;
        if (sub->step > d->max_step)
            d->max_step = sub->step;
        if (b->submitted == all_slots(b)) {
            b->queued = true;
            if (gcd_queue_push(&d->to_engine, GCD_EV_READY, b->id, b->pending_step, 0, 0, NULL)) {
                status = GCOMP_NOMEM;
                snprintf(err, sizeof(err), "out of memory");
            }
            pthread_cond_signal(&d->cv);
        }
    }
    pthread_mutex_unlock(&d->mu);
    if (status) {
        gcd_log_debug("submit refused: %s", err);
        gcd_trainer_complete(d, bit, sub->bucket_id, sub->step, status, err);
    }
}

static void on_hint(gcd_session *s, const Gcomp__Hint *h)
{
    gcd *d = s->d;
    pthread_mutex_lock(&d->mu);
    d->hints.count++;
    d->hints.step = h->step;
    if (h->fields & GCOMP_HINT_LR) {
        d->hints.lr = h->lr;
        d->hints.has_lr = true;
    }
    if (h->fields & GCOMP_HINT_SAMPLES) {
        d->hints.samples[s->slot] = h->samples;
        d->hints.has_samples = true;
    }
    if ((h->fields & GCOMP_HINT_EPOCH_END) && h->epoch_end && s->slot == 0)
        d->hints.epochs++;
    if (s->slot == 0 && h->step >= 0) {
        /* Kept for a trace recording (trace.c): a second hint for a step adds to it. */
        gcd_hint_rec *r = &d->hint_ring[h->step % GCD_HINT_RING];
        if (r->step != h->step)
            *r = (gcd_hint_rec){.step = h->step};
        r->fields |= h->fields & (GCOMP_HINT_LR | GCOMP_HINT_SAMPLES | GCOMP_HINT_EPOCH_END);
        if (h->fields & GCOMP_HINT_LR)
            r->lr = h->lr;
        if (h->fields & GCOMP_HINT_SAMPLES)
            r->samples = h->samples;
        if (h->fields & GCOMP_HINT_EPOCH_END)
            r->epoch_end = h->epoch_end;
    }
    pthread_mutex_unlock(&d->mu);
}

void gcd_trainer_msg(gcd_session *s, const uint8_t *buf, size_t len)
{
    Gcomp__TrainerMsg *m = gcomp__trainer_msg__unpack(NULL, len, buf);
    if (!m) {
        gcd_session_close(s, "undecodable message from a trainer: closing its session");
        return;
    }
    if (m->msg_case != GCOMP__TRAINER_MSG__MSG_HELLO && s->slot < 0) {
        gcd_session_close(s, "trainer message before hello: closing the session");
    } else {
        switch (m->msg_case) {
        case GCOMP__TRAINER_MSG__MSG_HELLO:
            on_hello(s, m->hello);
            break;
        case GCOMP__TRAINER_MSG__MSG_REGISTER:
            on_register(s, m->register_);
            break;
        case GCOMP__TRAINER_MSG__MSG_SUBMIT:
            on_submit(s, m->submit);
            break;
        case GCOMP__TRAINER_MSG__MSG_HINT:
            on_hint(s, m->hint);
            break;
        case GCOMP__TRAINER_MSG__MSG_UNREGISTER:
            on_unregister(s, m->unregister);
            break;
        default:
            gcd_session_close(s, "empty message from a trainer: closing its session");
        }
    }
    gcomp__trainer_msg__free_unpacked(m, NULL);
}

/* Whether local rank t holds any bucket (d->mu held). */
static bool slot_registered_any(const gcd *d, int t)
{
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i] && !d->buckets[i]->dying && ((d->buckets[i]->registered >> t) & 1))
            return true;
    return false;
}

void gcd_trainer_deadlines(gcd *d, int64_t now_ms)
{
    pthread_mutex_lock(&d->mu);
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        gcd_bucket *b = d->buckets[i];
        if (!b || b->dying || b->pending_step < 0 || b->queued || b->lost[0] ||
            now_ms - b->first_submit_ms <= d->cfg.timeout_ms)
            continue;
        uint64_t missing = all_slots(b) & ~b->registered;
        if (!missing) {
            /* Every slot holds it, some never submitted: stopped, or far behind. */
            uint64_t late = all_slots(b) & ~b->submitted;
            char who[200] = "", why[512];
            size_t n = 0;
            for (int t = 0; t < b->trainers && n < sizeof(who); t++)
                if ((late >> t) & 1)
                    n += (size_t)snprintf(who + n, sizeof(who) - n, "%s%d (pid %d)", n ? ", " : "",
                                          t, d->slots[t] ? d->slots[t]->pid : 0);
            snprintf(why, sizeof(why), "bucket '%s' step %lld: local rank %s on node %d did not "
                     "submit it within %d ms of the first submit (stopped?)", b->name,
                     (long long)b->pending_step, who, d->node, d->cfg.timeout_ms);
            gcd_log_warn("%s", why);
            fail_pending(d, b, GCOMP_STALL, why);
            b->first_submit_ms = now_ms;
            continue;
        }
        /* A slot that registered other buckets registers different names (a mismatch); a
           connected one that registered nothing is stopped or far behind; an unconnected
           one never came, or died before registering. */
        char who[200] = "";
        size_t n = 0;
        bool other = false, idle = false;
        for (int t = 0; t < b->trainers && n < sizeof(who); t++)
            if ((missing >> t) & 1) {
                bool any = d->slots[t] && slot_registered_any(d, t);
                n += (size_t)snprintf(who + n, sizeof(who) - n, "%s%d (%s)", n ? ", " : "", t,
                                      !d->slots[t] ? "not connected"
                                      : any        ? "registered other buckets"
                                                   : "connected, registered nothing: stopped?");
                other |= any;
                idle |= d->slots[t] && !any;
            }
        char why[512];
        snprintf(why, sizeof(why), "bucket '%s' step %lld: local rank %s on node %d did not "
                 "register it within %d ms of the first submit%s", b->name,
                 (long long)b->pending_step, who, d->node, d->cfg.timeout_ms,
                 other ? " (do the trainers register different bucket names?)" : "");
        gcd_log_warn("%s", why);
        fail_pending(d, b, other ? GCOMP_MISMATCH : idle ? GCOMP_STALL : GCOMP_PEER_LOST, why);
        b->first_submit_ms = now_ms; /* reported once */
    }
    pthread_mutex_unlock(&d->mu);
}
