/*
 * sessions.c: the libuv loop thread. Two SOCK_SEQPACKET listening sockets per node:
 * node{k}.sock for trainers, node{k}.ctl for gcompctl. Every byte read is untrusted:
 * packets are size-checked, decoded by protobuf-c, and a bad one closes that session
 * only. A trainer that goes away fails the steps it was part of, and the buckets it
 * had registered until a trainer takes its slot again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "wire.h"

typedef struct gcd_session {
    gcd *d;
    uv_poll_t poll;
    int fd;
    bool ctl;         /* a gcompctl session */
    bool closing;
    int slot;         /* trainer's local rank once it said hello, else -1 */
    int pid;
    uint64_t id;
    struct {          /* a registration sent in several packets, until its last part */
        char name[GCOMP_MAX_NAME + 1];
        gcd_layout layout;
        uint32_t total;
        bool open;
    } reg;
    struct gcd_session *next;
} gcd_session;

static uint64_t next_session_id = 1;

static void on_readable(uv_poll_t *h, int status, int events);

static void on_closed(uv_handle_t *h)
{
    gcd_session *s = h->data;
    close(s->fd);
    gcd_layout_free(&s->reg.layout);
    free(s);
}

/* Under mu: a bucket every slot released, with no step pending, dies (see slot_leaves). */
static void maybe_die(gcd *d, gcd_bucket *b)
{
    uint64_t all = b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1;
    if (b->released == all && b->pending_step < 0 && !b->dying) {
        b->dying = true;
        gcd_queue_push(&d->to_engine, GCD_EV_UNREGISTER, b->id, 0, 0, 0, NULL);
        pthread_cond_signal(&d->cv);
    }
}

/*
 * Slot `slot` leaves bucket b (its trainer disconnected or unregistered it), under mu:
 * a step pending without it can never complete, so it fails here and, through the
 * engine's next report, on the other nodes; later steps fail with b->lost until the
 * slot registers the bucket again. A slot that unregistered (released) is gone for
 * good: once every slot released the bucket and nothing is pending it dies, the engine
 * drops its state and the loop frees it. Returns 1 if a step failed.
 */
static int slot_leaves(gcd *d, gcd_bucket *b, int slot, bool released, const char *why)
{
    int failed = 0;
    b->registered &= ~(1ull << slot);
    if (released)
        b->released |= 1ull << slot;
    snprintf(b->lost, sizeof(b->lost), "bucket '%s': %s", b->name, why);
    if (b->pending_step >= 0 && !b->queued) {
        failed = 1;
        /* Its trainers that submitted get the error now; the other nodes through the
           engine's next report. */
        gcd_queue_push(&d->to_loop, GCD_EV_COMPLETE, b->id, b->pending_step, GCOMP_PEER_LOST, 0,
                       b->lost);
        gcd_queue_push(&d->to_engine, GCD_EV_FAIL, b->id, b->pending_step, GCOMP_PEER_LOST, 0,
                       b->lost);
    }
    maybe_die(d, b);
    pthread_cond_signal(&d->cv);
    return failed;
}

/* Steps this trainer was part of fail; its buckets wait for a new trainer in its slot. */
static void trainer_lost(gcd *d, gcd_session *s)
{
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
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (failed)
        gcd_log_warn("%s: %d step(s) in progress fail", why, failed);
    else
        gcd_log_info("%s", why);
    uv_async_send(&d->wake);
}

static void session_close(gcd_session *s)
{
    if (s->closing)
        return;
    s->closing = true;
    gcd *d = s->d;
    if (!s->ctl && s->slot >= 0)
        trainer_lost(d, s);
    for (gcd_session **p = &d->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_closed);
}

static int send_daemon_msg(gcd_session *s, Gcomp__DaemonMsg *m, const int *fds, int nfds)
{
    int rc = gw_send(s->fd, &m->base, fds, nfds);
    if (rc) {
        gcd_log_warn("send to %s session %llu failed (%s): closing it", s->ctl ? "control" : "trainer",
                     (unsigned long long)s->id, gcomp_strerror(rc));
        session_close(s);
    }
    return rc;
}

static void send_complete(gcd_session *s, uint32_t bucket, int64_t step, int status, const char *error)
{
    Gcomp__Complete c = GCOMP__COMPLETE__INIT;
    gcd *d = s->d;
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
    send_daemon_msg(s, &m, NULL, 0);
}

static void on_hello(gcd_session *s, const Gcomp__Hello *h)
{
    gcd *d = s->d;
    Gcomp__Welcome w = GCOMP__WELCOME__INIT;
    char err[512] = "";
    if (s->slot >= 0) {
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
    if (!send_daemon_msg(s, &m, NULL, 0) && w.status)
        session_close(s);
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
    send_daemon_msg(s, &m, fds, nfds);
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
    if (!status) {
        pthread_mutex_lock(&d->mu);
        status = gcd_bucket_register(d, s->reg.name, &s->reg.layout, s->slot, &b, err, sizeof(err));
        pthread_mutex_unlock(&d->mu);
    }
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
    }
    pthread_mutex_unlock(&d->mu);
    if (reply.status)
        gcd_log_warn("unregister refused: %s", err);
    reply.error = err;
    Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
    m.msg_case = GCOMP__DAEMON_MSG__MSG_UNREGISTERED;
    m.unregistered = &reply;
    send_daemon_msg(s, &m, NULL, 0);
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
        status = GCOMP_PEER_LOST;
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
        b->pending_step = sub->step;
        b->submitted |= bit;
        if (sub->step > d->max_step)
            d->max_step = sub->step;
        uint64_t all = b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1;
        if (b->submitted == all) {
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
        send_complete(s, sub->bucket_id, sub->step, status, err);
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
    pthread_mutex_unlock(&d->mu);
}

static void on_trainer_msg(gcd_session *s, const uint8_t *buf, size_t len)
{
    Gcomp__TrainerMsg *m = gcomp__trainer_msg__unpack(NULL, len, buf);
    if (!m) {
        gcd_log_warn("undecodable message from a trainer (%zu bytes): closing its session", len);
        session_close(s);
        return;
    }
    if (m->msg_case != GCOMP__TRAINER_MSG__MSG_HELLO && s->slot < 0) {
        gcd_log_warn("trainer message before hello: closing the session");
        session_close(s);
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
            gcd_log_warn("empty message from local rank %d: closing its session", s->slot);
            session_close(s);
        }
    }
    gcomp__trainer_msg__free_unpacked(m, NULL);
}

static void on_ctl_msg(gcd_session *s, const uint8_t *buf, size_t len)
{
    Gcomp__CtlRequest *r = gcomp__ctl_request__unpack(NULL, len, buf);
    if (!r) {
        gcd_log_warn("undecodable control request (%zu bytes): closing the session", len);
        session_close(s);
        return;
    }
    static char text[64 * 1024];
    text[0] = '\0';
    int rc = gcd_control_handle(s->d, s, r->cmd, r->args, r->n_args, r->json, text, sizeof(text));
    gcomp__ctl_request__free_unpacked(r, NULL);
    if (rc == 1)
        return; /* answered later by the engine */
    Gcomp__CtlReply reply = GCOMP__CTL_REPLY__INIT;
    reply.status = rc;
    reply.text = text;
    gw_send(s->fd, &reply.base, NULL, 0);
}

uint64_t gcd_session_id(const struct gcd_session *s)
{
    return s->id;
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    gcd_session *s = h->data;
    static uint8_t buf[GW_MAX_MSG];
    if (status < 0 || (events & UV_DISCONNECT)) {
        session_close(s);
        return;
    }
    /* A few packets per wake-up, so one busy peer cannot starve the others. */
    for (int i = 0; i < 16 && !s->closing; i++) {
        size_t len;
        int fds[GW_MAX_FDS], nfds = 0;
        int rc = gw_recv(s->fd, buf, &len, fds, &nfds);
        for (int k = 0; k < nfds; k++)
            close(fds[k]); /* peers never send fds */
        if (rc == GCOMP_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (rc == GCOMP_LIMIT) {
            gcd_log_warn("packet over %d bytes from a %s session: closing it", GW_MAX_MSG,
                         s->ctl ? "control" : "trainer");
            session_close(s);
            return;
        }
        if (rc) {
            session_close(s);
            return;
        }
        if (s->ctl)
            on_ctl_msg(s, buf, len);
        else
            on_trainer_msg(s, buf, len);
    }
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    (void)events;
    gcd *d = h->data;
    if (status < 0)
        return;
    bool ctl = h == &d->ctl_poll;
    int fd = accept4(ctl ? d->ctl_fd : d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != geteuid()) {
        gcd_log_warn("refused a connection from uid %d (this daemon runs as uid %d)",
                     (int)cred.uid, (int)geteuid());
        close(fd);
        return;
    }
    gcd_session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return;
    }
    s->d = d;
    s->fd = fd;
    s->ctl = ctl;
    s->slot = -1;
    s->pid = cred.pid;
    s->id = next_session_id++;
    uv_poll_init(&d->loop, &s->poll, fd);
    s->poll.data = s;
    s->next = d->sessions;
    d->sessions = s;
    uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT, on_readable);
}

/* Deliver the engine's events: completions to trainers, control replies. */
static void on_wake(uv_async_t *h)
{
    gcd *d = h->data;
    pthread_mutex_lock(&d->mu);
    gcd_event *ev = gcd_queue_take_all(&d->to_loop);
    bool stopping = d->stopping;
    pthread_mutex_unlock(&d->mu);
    while (ev) {
        gcd_event *next = ev->next;
        if (ev->kind == GCD_EV_COMPLETE) {
            uint64_t to = 0;
            pthread_mutex_lock(&d->mu);
            gcd_bucket *b = gcd_bucket_by_id(d, ev->bucket);
            if (b && b->pending_step == ev->step) {
                to = b->submitted;
                if (ev->status && !b->queued) {
                    /* Not everyone here submitted it yet: the rest fail on submit. */
                    b->failed_step = ev->step;
                    b->failed_status = ev->status;
                    snprintf(b->failed_error, sizeof(b->failed_error), "%s", ev->text);
                }
                b->pending_step = -1;
                b->submitted = 0;
                b->queued = false;
                b->last_step = ev->step;
                maybe_die(d, b);
            } else if (b && ev->status && ev->step > b->last_step) {
                b->failed_step = ev->step;
                b->failed_status = ev->status;
                snprintf(b->failed_error, sizeof(b->failed_error), "%s", ev->text);
            }
            pthread_mutex_unlock(&d->mu);
            for (int t = 0; t < GCD_MAX_TRAINERS && to; t++)
                if ((to >> t) & 1) {
                    to &= ~(1ull << t);
                    if (d->slots[t])
                        send_complete(d->slots[t], ev->bucket, ev->step, ev->status, ev->text);
                }
        } else if (ev->kind == GCD_EV_FREED) {
            pthread_mutex_lock(&d->mu);
            gcd_bucket *b = gcd_bucket_by_id(d, ev->bucket);
            if (b && b->dying)
                gcd_bucket_free(d, b);
            pthread_mutex_unlock(&d->mu);
        } else if (ev->kind == GCD_EV_CTL_REPLY) {
            for (gcd_session *s = d->sessions; s; s = s->next)
                if (s->ctl && s->id == ev->ctl_id) {
                    Gcomp__CtlReply reply = GCOMP__CTL_REPLY__INIT;
                    reply.status = ev->status;
                    reply.text = ev->text;
                    gw_send(s->fd, &reply.base, NULL, 0);
                    break;
                }
        }
        free(ev);
        ev = next;
    }
    if (stopping) {
        while (d->sessions)
            session_close(d->sessions);
        uv_poll_stop(&d->listen_poll);
        uv_poll_stop(&d->ctl_poll);
        uv_close((uv_handle_t *)&d->listen_poll, NULL);
        uv_close((uv_handle_t *)&d->ctl_poll, NULL);
        uv_close((uv_handle_t *)&d->wake, NULL);
    }
}

void gcd_sessions_wake(gcd *d)
{
    uv_async_send(&d->wake);
}

static int listen_on(const char *path, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        gcd_log_error("socket path %s is longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
        return GCOMP_INVALID;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gcd_log_error("socket: %m");
        return GCOMP_IO;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        gcd_log_error("listen on %s: %m", path);
        close(fd);
        return GCOMP_IO;
    }
    *out = fd;
    return GCOMP_OK;
}

int gcd_sessions_start(gcd *d)
{
    if (mkdir(d->cfg.dir, 0700) < 0 && errno != EEXIST) {
        gcd_log_error("socket directory %s: %m", d->cfg.dir);
        return GCOMP_IO;
    }
    struct stat st;
    if (stat(d->cfg.dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077)) {
        gcd_log_error("socket directory %s must be a directory of uid %d with mode 0700",
                      d->cfg.dir, (int)geteuid());
        return GCOMP_DENIED;
    }
    snprintf(d->sock_path, sizeof(d->sock_path), "%s/node%d.sock", d->cfg.dir, d->node);
    snprintf(d->ctl_path, sizeof(d->ctl_path), "%s/node%d.ctl", d->cfg.dir, d->node);
    int rc = uv_loop_init(&d->loop);
    if (rc)
        return GCOMP_IO;
    if ((rc = listen_on(d->sock_path, &d->listen_fd)))
        return rc;
    if ((rc = listen_on(d->ctl_path, &d->ctl_fd))) {
        close(d->listen_fd);
        unlink(d->sock_path);
        return rc;
    }
    uv_async_init(&d->loop, &d->wake, on_wake);
    d->wake.data = d;
    uv_poll_init(&d->loop, &d->listen_poll, d->listen_fd);
    uv_poll_init(&d->loop, &d->ctl_poll, d->ctl_fd);
    d->listen_poll.data = d;
    d->ctl_poll.data = d;
    uv_poll_start(&d->listen_poll, UV_READABLE, on_accept);
    uv_poll_start(&d->ctl_poll, UV_READABLE, on_accept);
    return GCOMP_OK;
}

void *gcd_sessions_run(void *arg)
{
    gcd *d = arg;
    uv_run(&d->loop, UV_RUN_DEFAULT);
    close(d->listen_fd);
    close(d->ctl_fd);
    unlink(d->sock_path);
    unlink(d->ctl_path);
    uv_loop_close(&d->loop);
    return NULL;
}
