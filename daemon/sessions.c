/*
 * sessions.c: the libuv loop thread's connections. Two SOCK_SEQPACKET listening
 * sockets per node: node{k}.sock for trainers (trainer.c speaks their protocol),
 * node{k}.ctl for gcompctl (control.c). Every byte read is untrusted: packets are
 * size-checked, decoded by protobuf-c, and a bad one closes that session only.
 *
 * Writes never block and never close a session on a full socket: every packet goes
 * through the session's outgoing queue, which drains when the socket is writable; a
 * peer that stops reading is closed once its oldest packet waited --timeout-ms, or
 * when GCD_OUT_MAX packets pile up. A peer of another uid is told why it is refused
 * (GCOMP_DENIED); a connection that says no hello within --hello-timeout-ms is closed;
 * when the process runs out of file descriptors, a reserved one lets the loop refuse
 * the connection instead of spinning on it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/clock.h"
#include "http.h"
#include "liveness.h"
#include "log.h"
#include "sessions.h"

/* Most packets waiting for one peer: thousands of completions at once fit. */
#define GCD_OUT_MAX 65536
/* The periodic check of deadlines (hello, stuck readers, registrations). */
#define GCD_TICK_MS 100

static uint64_t next_session_id = 1;

static void on_readable(uv_poll_t *h, int status, int events);

static void packet_free(gcd_packet *p)
{
    for (int i = 0; i < p->nfds; i++)
        close(p->fds[i]);
    free(p);
}

static void on_closed(uv_handle_t *h)
{
    gcd_session *s = h->data;
    while (s->out_head) {
        gcd_packet *p = s->out_head;
        s->out_head = p->next;
        packet_free(p);
    }
    close(s->fd);
    gcd_layout_free(&s->reg.layout);
    free(s);
}

void gcd_session_close(gcd_session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = true;
    gcd *d = s->d;
    if (why)
        gcd_log_warn("%s", why);
    if (!s->ctl && s->slot >= 0)
        gcd_trainer_lost(s);
    for (gcd_session **p = &d->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_closed);
}

static int poll_events(const gcd_session *s)
{
    return UV_READABLE | UV_DISCONNECT | (s->out_head ? UV_WRITABLE : 0);
}

/* A send that failed for another reason than a full socket: the peer is gone. */
static void send_failed(gcd_session *s, int rc)
{
    char why[200];
    snprintf(why, sizeof(why), "send to %s session %llu failed (%s): closing it",
             s->ctl ? "control" : "trainer", (unsigned long long)s->id, gcomp_strerror(rc));
    gcd_session_close(s, why);
}

/* Send queued packets while the socket takes them; poll for writable while some
   remain. */
static void flush(gcd_session *s)
{
    while (s->out_head) {
        gcd_packet *p = s->out_head;
        int rc = gw_send_packet(s->fd, p->data, p->len, p->fds, p->nfds);
        if (rc == GCOMP_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (rc) {
            send_failed(s, rc);
            return;
        }
        s->out_head = p->next;
        if (!s->out_head)
            s->out_tail = NULL;
        s->out_n--;
        s->out_since_ms = gk_now_ms();
        packet_free(p);
    }
    bool want = s->out_head != NULL;
    if (want != s->writable_polled && !s->closing) {
        s->writable_polled = want;
        uv_poll_start(&s->poll, poll_events(s), on_readable);
    }
}

int gcd_session_send(gcd_session *s, const ProtobufCMessage *m, const int *fds, int nfds)
{
    if (s->closing)
        return GCOMP_IO;
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > GW_MAX_MSG || nfds > GW_MAX_FDS) {
        gcd_log_error("a message of %zu bytes for session %llu is over the limit", len,
                      (unsigned long long)s->id);
        return GCOMP_LIMIT;
    }
    if (s->out_n >= GCD_OUT_MAX) {
        char why[200];
        snprintf(why, sizeof(why), "%s session %llu has %d messages it does not read: closing it",
                 s->ctl ? "control" : "trainer", (unsigned long long)s->id, GCD_OUT_MAX);
        gcd_session_close(s, why);
        return GCOMP_LIMIT;
    }
    gcd_packet *p = malloc(sizeof(*p) + (len ? len : 1));
    if (!p)
        return GCOMP_NOMEM;
    p->next = NULL;
    p->len = len;
    p->nfds = 0;
    protobuf_c_message_pack(m, p->data);
    if (!s->out_head) {
        /* Nothing waits before it: straight to the socket, the common case. */
        int rc = gw_send_packet(s->fd, p->data, p->len, fds, nfds);
        if (rc != GCOMP_IO || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            free(p);
            if (rc)
                send_failed(s, rc);
            return rc;
        }
    }
    for (int i = 0; i < nfds; i++) {
        /* Our own copies: the bucket may be freed before the packet goes. */
        if ((p->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0)) < 0) {
            packet_free(p);
            return GCOMP_IO;
        }
        p->nfds++;
    }
    if (!s->out_head)
        s->out_since_ms = gk_now_ms();
    if (s->out_tail)
        s->out_tail->next = p;
    else
        s->out_head = p;
    s->out_tail = p;
    s->out_n++;
    flush(s);
    return GCOMP_OK;
}

uint64_t gcd_session_id(const struct gcd_session *s)
{
    return s->id;
}

void gcd_session_denial(const gcd_session *s, char *out, size_t len)
{
    snprintf(out, len, "uid %d may not use this daemon (it runs as uid %d)", s->uid,
             (int)geteuid());
}

static void on_ctl_msg(gcd_session *s, const uint8_t *buf, size_t len)
{
    Gcomp__CtlRequest *r = gcomp__ctl_request__unpack(NULL, len, buf);
    if (!r) {
        gcd_session_close(s, "undecodable control request: closing the session");
        return;
    }
    if (s->foreign) {
        char err[160], why[200];
        gcd_session_denial(s, err, sizeof(err));
        Gcomp__CtlReply reply = GCOMP__CTL_REPLY__INIT;
        reply.status = GCOMP_DENIED;
        reply.text = err;
        gcd_session_send(s, &reply.base, NULL, 0);
        gcomp__ctl_request__free_unpacked(r, NULL);
        snprintf(why, sizeof(why), "refused a control connection: %s", err);
        gcd_session_close(s, why);
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
    gcd_session_send(s, &reply.base, NULL, 0);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    gcd_session *s = h->data;
    static uint8_t buf[GW_MAX_MSG];
    if (status < 0 || (events & UV_DISCONNECT)) {
        gcd_session_close(s, NULL);
        return;
    }
    if (events & UV_WRITABLE)
        flush(s);
    if (!(events & UV_READABLE))
        return;
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
            char why[120];
            snprintf(why, sizeof(why), "packet over %d bytes from a %s session: closing it",
                     GW_MAX_MSG, s->ctl ? "control" : "trainer");
            gcd_session_close(s, why);
            return;
        }
        if (rc) {
            gcd_session_close(s, NULL);
            return;
        }
        if (s->ctl)
            on_ctl_msg(s, buf, len);
        else
            gcd_trainer_msg(s, buf, len);
    }
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    (void)events;
    gcd *d = h->data;
    if (status < 0)
        return;
    bool ctl = h == &d->ctl_poll;
    int lfd = ctl ? d->ctl_fd : d->listen_fd;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        /* Out of descriptors: take the connection with the reserved one and close it,
           so the listening socket is not readable forever (a spin). */
        close(d->reserve_fd);
        fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            close(fd);
        d->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int64_t now = gk_now_ms();
        if (now - d->emfile_logged_ms > 1000) {
            gcd_log_error("out of file descriptors: refusing new connections (buckets hold "
                          "%d + 1 descriptors each; see --max-buckets)", d->trainers);
            d->emfile_logged_ms = now;
        }
        return;
    }
    if (fd < 0)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
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
    s->uid = (int)cred.uid;
    s->foreign = cred.uid != geteuid(); /* told why at its first request */
    s->id = next_session_id++;
    s->opened_ms = gk_now_ms();
    uv_poll_init(&d->loop, &s->poll, fd);
    s->poll.data = s;
    s->next = d->sessions;
    d->sessions = s;
    uv_poll_start(&s->poll, poll_events(s), on_readable);
}

/* Deadlines: a trainer that never said hello, a peer that stopped reading, a bucket
   step waiting for a slot that never registered it. */
static void on_tick(uv_timer_t *t)
{
    gcd *d = t->data;
    int64_t now = gk_now_ms();
    for (gcd_session *s = d->sessions, *next; s; s = next) {
        next = s->next;
        char why[200];
        if (!s->ctl && s->slot < 0 && now - s->opened_ms > d->cfg.hello_timeout_ms) {
            snprintf(why, sizeof(why), "a connection (pid %d) sent no hello within %d ms: "
                     "closing it", s->pid, d->cfg.hello_timeout_ms);
            gcd_session_close(s, why);
        } else if (s->out_head && now - s->out_since_ms > d->cfg.timeout_ms) {
            snprintf(why, sizeof(why), "%s session %llu (local rank %d) has not read its socket "
                     "for %d ms: closing it", s->ctl ? "control" : "trainer",
                     (unsigned long long)s->id, s->slot, d->cfg.timeout_ms);
            gcd_session_close(s, why);
        }
    }
    gcd_trainer_deadlines(d, now);
    gcd_http_deadlines(d, now);
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
                gcd_bucket_maybe_die(d, b);
            } else if (b && ev->status && ev->step > b->last_step) {
                b->failed_step = ev->step;
                b->failed_status = ev->status;
                snprintf(b->failed_error, sizeof(b->failed_error), "%s", ev->text);
            }
            pthread_mutex_unlock(&d->mu);
            gcd_trainer_complete(d, to, ev->bucket, ev->step, ev->status, ev->text);
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
                    gcd_session_send(s, &reply.base, NULL, 0);
                    break;
                }
        }
        free(ev);
        ev = next;
    }
    if (stopping) {
        /* Every trainer learns why, instead of finding its connection gone; what is
           queued for a session goes first, as far as the socket takes it now. */
        Gcomp__Goodbye bye = GCOMP__GOODBYE__INIT;
        pthread_mutex_lock(&d->mu);
        bye.status = d->bye_status ? d->bye_status : GCOMP_SHUTDOWN;
        char text[sizeof(d->bye_text)];
        snprintf(text, sizeof(text), "%s", d->bye_text[0] ? d->bye_text : "the job is shutting down");
        pthread_mutex_unlock(&d->mu);
        bye.error = text;
        Gcomp__DaemonMsg m = GCOMP__DAEMON_MSG__INIT;
        m.msg_case = GCOMP__DAEMON_MSG__MSG_GOODBYE;
        m.goodbye = &bye;
        for (gcd_session *s = d->sessions; s; s = s->next)
            if (!s->ctl && s->slot >= 0)
                gcd_session_send(s, &m.base, NULL, 0);
        while (d->sessions)
            gcd_session_close(d->sessions, NULL);
        uv_timer_stop(&d->tick);
        uv_close((uv_handle_t *)&d->tick, NULL);
        gcd_live_close(d->live);
        gcd_http_close(d);
        uv_poll_stop(&d->listen_poll);
        uv_poll_stop(&d->ctl_poll);
        uv_close((uv_handle_t *)&d->listen_poll, NULL);
        uv_close((uv_handle_t *)&d->ctl_poll, NULL);
        pthread_mutex_lock(&d->mu);
        d->wake_closed = true; /* a later wake (main's own) must not touch a closed loop */
        uv_close((uv_handle_t *)&d->wake, NULL);
        pthread_mutex_unlock(&d->mu);
    }
}

void gcd_sessions_wake(gcd *d)
{
    pthread_mutex_lock(&d->mu);
    if (!d->wake_closed)
        uv_async_send(&d->wake);
    pthread_mutex_unlock(&d->mu);
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
    if ((d->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        gcd_log_error("open /dev/null: %m");
        return GCOMP_IO;
    }
    int rc = uv_loop_init(&d->loop);
    if (rc)
        return GCOMP_IO;
    /* First: a bad address or a port in use fails before the sockets appear. */
    if ((rc = gcd_http_start(d)))
        return rc;
    if ((rc = listen_on(d->sock_path, &d->listen_fd))) {
        gcd_http_close(d);
        uv_run(&d->loop, UV_RUN_NOWAIT); /* its close callbacks */
        return rc;
    }
    if ((rc = listen_on(d->ctl_path, &d->ctl_fd))) {
        gcd_http_close(d);
        uv_run(&d->loop, UV_RUN_NOWAIT);
        close(d->listen_fd);
        unlink(d->sock_path);
        return rc;
    }
    uv_async_init(&d->loop, &d->wake, on_wake);
    d->wake.data = d;
    uv_timer_init(&d->loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, GCD_TICK_MS, GCD_TICK_MS);
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
    close(d->reserve_fd);
    unlink(d->sock_path);
    unlink(d->ctl_path);
    uv_loop_close(&d->loop);
    return NULL;
}
