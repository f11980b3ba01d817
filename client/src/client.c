/*
 * client.c: libgcomp-client. One SOCK_SEQPACKET connection to the node's daemon;
 * buckets live in shared memory the daemon made (memfd, received by SCM_RIGHTS).
 *
 * Threads. Everything in a gcomp_client is under c->mu, and every send happens with it
 * held, so packets never interleave. Receiving is done by one thread at a time, the
 * reader: a thread that has to wait (gcomp_wait, gcomp_wait_any, a reply) and finds no
 * reader becomes it, polls the socket with c->mu released (so other threads submit,
 * hint and register meanwhile), then reads the packet with c->mu held and files it: a
 * completion goes into its bucket and the client's completion queue, anything else is
 * the reply to the request in progress. Threads that wait while another one reads sleep
 * on c->cv, which the reader broadcasts after every pass. Requests that expect a reply
 * (register, unregister) are serialised by c->req_mu, taken before c->mu.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "gcomp.h"
#include "wire.h"

/* Every field is under client->mu, except the ones set at registration and never
   changed (client, id, name, numel, data, result). */
struct gcomp_bucket {
    gcomp_client *client;
    gcomp_bucket *next;      /* the client's list of buckets */
    gcomp_bucket *done_next; /* the client's completion queue */
    uint32_t id;
    char name[GCOMP_MAX_NAME + 1];
    size_t numel;
    float *data;         /* this trainer's input region (read-write) */
    const float *result; /* the node's result region (read-only) */
    int64_t step;        /* last step submitted */
    int in_flight;       /* submitted, completion not yet returned by a wait */
    int done;            /* the completion of `step` arrived (the bucket is queued) */
    int status;          /* its status */
    char error[512];     /* its message */
};

struct gcomp_client {
    int fd;
    pthread_mutex_t mu;     /* everything below, and sending on fd */
    pthread_cond_t cv;      /* broadcast after each reader pass (CLOCK_MONOTONIC) */
    pthread_mutex_t req_mu; /* one request that awaits a reply at a time; before mu */
    int reading;            /* a thread polls fd with mu released */
    int expect_reply;       /* a request is waiting for its reply */
    Gcomp__DaemonMsg *reply; /* that reply once read, with its fds */
    int reply_fds[GW_MAX_FDS];
    int reply_nfds;
    gcomp_advice advice; /* latest from a completion; batch_size 0: none */
    int node, nodes;
    int lost;            /* the daemon connection is gone (or unusable): every call fails */
    int lost_status;     /* with this: GCOMP_DAEMON_LOST, or what the daemon's Goodbye said */
    char lost_why[256];  /* why */
    int reply_timeout_ms;
    gcomp_bucket *buckets;
    gcomp_bucket *done_head, *done_tail; /* completions not yet returned, in arrival order */
    int n_in_flight;                     /* buckets with in_flight set */
    uint8_t buf[GW_MAX_MSG];             /* the reader's receive buffer */
};

/* The calling thread's last failure: on which client, and its text. */
static _Thread_local struct {
    const gcomp_client *client;
    char text[1024];
} last_err;
/* Why the last gcomp_connect() of this thread failed (no client exists to hold it). */
static _Thread_local char connect_err[1024];

static int set_error(gcomp_client *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err.text, sizeof(last_err.text), fmt, ap);
    va_end(ap);
    last_err.client = c;
    return status;
}

/* now + timeout_ms, or -1 (no deadline) for a negative timeout. */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : gk_now_ms() + timeout_ms;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Connect, retrying while the daemon's socket does not exist or refuses. */
static int dial(const char *path, int timeout_ms, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return GCOMP_INVALID;
    strcpy(sa.sun_path, path);
    int64_t deadline = gk_now_ms() + timeout_ms;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return GCOMP_IO;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            *out = fd;
            return GCOMP_OK;
        }
        int e = errno;
        close(fd);
        if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || gk_now_ms() >= deadline) {
            errno = e;
            return e == ENOENT || e == ECONNREFUSED ? GCOMP_TIMEOUT : GCOMP_IO;
        }
        usleep(20000);
    }
}

static void close_fds(const int *fds, int nfds)
{
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* ---- the completion queue (under c->mu) ---- */

static void queue_done(gcomp_client *c, gcomp_bucket *b, int status, const char *error)
{
    b->done = 1;
    b->status = status;
    gw_strlcpy(b->error, error, sizeof(b->error));
    b->done_next = NULL;
    if (c->done_tail)
        c->done_tail->done_next = b;
    else
        c->done_head = b;
    c->done_tail = b;
}

/* Take b (done) out of the queue and end its step; returns its status. */
static int take_done(gcomp_client *c, gcomp_bucket *b)
{
    for (gcomp_bucket **p = &c->done_head, *prev = NULL; *p; prev = *p, p = &(*p)->done_next) {
        if (*p == b) {
            *p = b->done_next;
            if (c->done_tail == b)
                c->done_tail = prev;
            break;
        }
    }
    b->done_next = NULL;
    b->in_flight = 0;
    c->n_in_flight--;
    if (b->status)
        return set_error(c, b->status, "%s", b->error);
    return GCOMP_OK;
}

static gcomp_bucket *find_bucket(gcomp_client *c, uint32_t id)
{
    for (gcomp_bucket *b = c->buckets; b; b = b->next)
        if (b->id == id)
            return b;
    return NULL;
}

/* The error of every call after the connection was lost (under c->mu). */
static int lost_error(gcomp_client *c)
{
    if (c->lost_status != GCOMP_DAEMON_LOST)
        return set_error(c, c->lost_status, "%s", c->lost_why);
    return set_error(c, GCOMP_DAEMON_LOST, "connection to the daemon lost (%s)", c->lost_why);
}

/*
 * The connection is over (under c->mu): every step in flight fails with status, and so
 * does every later call. A daemon that goes away says why first (a Goodbye: status and
 * text are its own); otherwise status is GCOMP_DAEMON_LOST and the text says what broke.
 * The first reason stays. Returns its status.
 */
static int lose(gcomp_client *c, int status, const char *fmt, ...)
{
    if (!c->lost) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->lost_why, sizeof(c->lost_why), fmt, ap);
        va_end(ap);
        c->lost = 1;
        c->lost_status = status;
        char error[1024]; /* truncated into b->error */
        for (gcomp_bucket *b = c->buckets; b; b = b->next)
            if (b->in_flight && !b->done) {
                if (status == GCOMP_DAEMON_LOST)
                    snprintf(error, sizeof(error), "bucket '%s' step %lld: connection to the "
                             "daemon lost (%s)", b->name, (long long)b->step, c->lost_why);
                else
                    snprintf(error, sizeof(error), "bucket '%s' step %lld: %s", b->name,
                             (long long)b->step, c->lost_why);
                queue_done(c, b, status, error);
            }
        pthread_cond_broadcast(&c->cv); /* waiters whose bucket this ended */
    }
    return lost_error(c);
}

#define mark_lost(c, ...) lose((c), GCOMP_DAEMON_LOST, __VA_ARGS__)

/*
 * Read one packet (the socket is readable and this thread is the reader; under c->mu).
 * A completion is filed into its bucket and queued; any other message becomes c->reply,
 * which must be awaited. Returns GCOMP_OK or GCOMP_DAEMON_LOST.
 */
static int read_packet(gcomp_client *c)
{
    int fds[GW_MAX_FDS], nfds = 0;
    size_t len;
    int rc = gw_recv(c->fd, c->buf, &len, fds, &nfds);
    if (rc == GCOMP_DAEMON_LOST)
        return mark_lost(c, "closed by the daemon");
    if (rc == GCOMP_IO)
        return mark_lost(c, "receive: %s", strerror(errno));
    if (rc)
        return mark_lost(c, "oversized message from the daemon");
    Gcomp__DaemonMsg *m = gcomp__daemon_msg__unpack(NULL, len, c->buf);
    if (!m) {
        close_fds(fds, nfds);
        return mark_lost(c, "undecodable message from the daemon");
    }
    if (m->msg_case == GCOMP__DAEMON_MSG__MSG_GOODBYE) {
        const Gcomp__Goodbye *g = m->goodbye;
        int status = g->status < 0 ? g->status : GCOMP_SHUTDOWN;
        lose(c, status, "%s", g->error && *g->error ? g->error : gcomp_strerror(status));
        close_fds(fds, nfds);
        gcomp__daemon_msg__free_unpacked(m, NULL);
        return status;
    }
    if (m->msg_case == GCOMP__DAEMON_MSG__MSG_COMPLETE) {
        Gcomp__Complete *cm = m->complete;
        c->advice = (gcomp_advice){.batch_size = cm->advice_batch,
                                   .lr_scale = cm->advice_lr_scale,
                                   .step = cm->advice_step};
        gcomp_bucket *b = find_bucket(c, cm->bucket_id);
        if (b && b->in_flight && !b->done && cm->step == b->step)
            queue_done(c, b, cm->status, cm->error ? cm->error : "");
        close_fds(fds, nfds);
        gcomp__daemon_msg__free_unpacked(m, NULL);
        return GCOMP_OK;
    }
    if (!c->expect_reply || c->reply) {
        close_fds(fds, nfds);
        gcomp__daemon_msg__free_unpacked(m, NULL);
        return mark_lost(c, "unexpected message from the daemon");
    }
    c->reply = m;
    memcpy(c->reply_fds, fds, sizeof(int) * (size_t)nfds);
    c->reply_nfds = nfds;
    return GCOMP_OK;
}

typedef int (*ready_fn)(const gcomp_client *c, const void *arg);

/*
 * Wait until ready(c, arg) holds or the deadline (ms, CLOCK_MONOTONIC; < 0: none)
 * passes. Called and returns with c->mu held; releases it while polling or sleeping.
 * The socket is looked at at least once, so a deadline in the past polls. Returns
 * GCOMP_OK when ready holds, GCOMP_TIMEOUT, or GCOMP_DAEMON_LOST (c->lost; buckets in
 * flight are then queued with that status, so ready may hold as well).
 */
static int pump(gcomp_client *c, ready_fn ready, const void *arg, int64_t deadline)
{
    for (int looked = 0;; looked = 1) {
        if (ready(c, arg))
            return GCOMP_OK;
        if (c->lost)
            return lost_error(c);
        int64_t now = gk_now_ms();
        if (looked && deadline >= 0 && now >= deadline)
            return GCOMP_TIMEOUT;
        if (c->reading) {
            /* Another thread reads; it broadcasts after every packet. */
            if (deadline < 0) {
                pthread_cond_wait(&c->cv, &c->mu);
            } else {
                struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            }
            continue;
        }
        c->reading = 1;
        pthread_mutex_unlock(&c->mu);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int left = deadline < 0 ? -1 : deadline > now ? (int)(deadline - now) : 0;
        int pr;
        do
            pr = poll(&pfd, 1, left);
        while (pr < 0 && errno == EINTR);
        int e = errno;
        pthread_mutex_lock(&c->mu);
        c->reading = 0;
        if (pr > 0)
            read_packet(c);
        else if (pr < 0)
            mark_lost(c, "poll on the daemon socket: %s", strerror(e));
        pthread_cond_broadcast(&c->cv);
    }
}

/*
 * After a failed send (under c->mu): what the daemon said before it closed (a Goodbye
 * naming why) is still readable; read it, unless another thread is the reader (it will).
 */
static void read_what_is_left(gcomp_client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    while (!c->lost && !c->reading && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN))
        read_packet(c);
}

static int send_msg(gcomp_client *c, const Gcomp__TrainerMsg *m)
{
    if (c->lost)
        return lost_error(c);
    int rc = gw_send(c->fd, &m->base, NULL, 0);
    if (rc == GCOMP_LIMIT)
        return set_error(c, rc, "message larger than %d bytes", GW_MAX_MSG);
    if (rc) {
        int e = errno;
        read_what_is_left(c);
        if (rc == GCOMP_DAEMON_LOST)
            return mark_lost(c, "closed by the daemon");
        return mark_lost(c, "send: %s", strerror(e));
    }
    return GCOMP_OK;
}

static int reply_ready(const gcomp_client *c, const void *arg)
{
    (void)arg;
    return c->reply != NULL;
}

/*
 * Wait for the reply to the request just sent (under c->req_mu and c->mu, with
 * c->expect_reply set) and check that it is of the given kind. On success the caller
 * owns *out and fds[0..*nfds). A daemon that does not answer in reply_timeout_ms leaves
 * the connection unusable (a late reply could not be told from the next one).
 */
static int await_reply(gcomp_client *c, Gcomp__DaemonMsg__MsgCase kind, Gcomp__DaemonMsg **out,
                       int *fds, int *nfds)
{
    int rc = pump(c, reply_ready, NULL, gk_now_ms() + c->reply_timeout_ms);
    if (rc == GCOMP_TIMEOUT) {
        mark_lost(c, "no reply from the daemon in %d ms", c->reply_timeout_ms);
        return set_error(c, GCOMP_TIMEOUT, "no reply from the daemon in %d ms", c->reply_timeout_ms);
    }
    if (rc)
        return rc;
    Gcomp__DaemonMsg *m = c->reply;
    c->reply = NULL;
    *nfds = c->reply_nfds;
    memcpy(fds, c->reply_fds, sizeof(int) * (size_t)c->reply_nfds);
    c->reply_nfds = 0;
    if (m->msg_case != kind) {
        close_fds(fds, *nfds);
        gcomp__daemon_msg__free_unpacked(m, NULL);
        return mark_lost(c, "unexpected message from the daemon");
    }
    *out = m;
    return GCOMP_OK;
}

/* Start / end a request that awaits a reply: takes c->req_mu, then c->mu. */
static void request_begin(gcomp_client *c)
{
    pthread_mutex_lock(&c->req_mu);
    pthread_mutex_lock(&c->mu);
    c->expect_reply = 1;
}

static void request_end(gcomp_client *c)
{
    c->expect_reply = 0;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&c->req_mu);
}

/* Make the client's locks; GCOMP_NOMEM (nothing made) on failure. */
static int client_locks_init(gcomp_client *c)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        return GCOMP_NOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        return GCOMP_NOMEM;
    if (pthread_mutex_init(&c->mu, NULL))
        goto err_cv;
    if (pthread_mutex_init(&c->req_mu, NULL))
        goto err_mu;
    return GCOMP_OK;

err_mu:
    pthread_mutex_destroy(&c->mu);
err_cv:
    pthread_cond_destroy(&c->cv);
    return GCOMP_NOMEM;
}

static void client_locks_destroy(gcomp_client *c)
{
    pthread_mutex_destroy(&c->req_mu);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

int gcomp_connect(const gcomp_options *opts, gcomp_client **out)
{
    gcomp_options o = opts ? *opts : (gcomp_options){.local_rank = -1};
    if (!opts)
        o.local_rank = -1;
    if (!o.socket_path)
        o.socket_path = getenv("GCOMP_SOCKET");
    if (!o.job_id)
        o.job_id = getenv("GCOMP_JOB_ID");
    if (o.local_rank < 0)
        o.local_rank = env_int("GCOMP_LOCAL_RANK", -1);
    if (o.connect_timeout_ms <= 0)
        o.connect_timeout_ms = env_int("GCOMP_CONNECT_TIMEOUT_MS", 30000);
    if (!out || !o.socket_path || !*o.socket_path || !o.job_id || o.local_rank < 0) {
        snprintf(connect_err, sizeof(connect_err),
                 "gcomp_connect: %s missing (set it in gcomp_options or the environment)",
                 !out ? "output pointer" : !o.socket_path || !*o.socket_path ? "GCOMP_SOCKET"
                 : !o.job_id ? "GCOMP_JOB_ID" : "GCOMP_LOCAL_RANK");
        return GCOMP_INVALID;
    }

    gcomp_client *c = calloc(1, sizeof(*c));
    if (!c)
        return GCOMP_NOMEM;
    last_err.text[0] = '\0';
    int rc = client_locks_init(c);
    if (rc)
        goto err_free;
    c->reply_timeout_ms = o.connect_timeout_ms > 30000 ? o.connect_timeout_ms : 30000;
    rc = dial(o.socket_path, o.connect_timeout_ms, &c->fd);
    if (rc)
        goto err_locks;

    Gcomp__Hello hello = GCOMP__HELLO__INIT;
    hello.version = GCOMP_PROTOCOL_VERSION;
    hello.job_id = (char *)o.job_id;
    hello.local_rank = o.local_rank;
    hello.pid = getpid();
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_HELLO;
    m.hello = &hello;
    Gcomp__DaemonMsg *r = NULL;
    int fds[GW_MAX_FDS], nfds = 0;
    request_begin(c);
    rc = send_msg(c, &m);
    if (!rc)
        rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_WELCOME, &r, fds, &nfds);
    request_end(c);
    if (rc)
        goto err_close;
    close_fds(fds, nfds);
    rc = r->welcome->status;
    c->node = r->welcome->node;
    c->nodes = r->welcome->nodes;
    if (rc)
        set_error(c, rc, "%s: %s", o.socket_path, r->welcome->error);
    gcomp__daemon_msg__free_unpacked(r, NULL);
    if (rc)
        goto err_close;
    *out = c;
    connect_err[0] = '\0';
    return GCOMP_OK;

err_close:
    close(c->fd);
err_locks:
    client_locks_destroy(c);
err_free:
    if (last_err.client != c || !last_err.text[0])
        snprintf(last_err.text, sizeof(last_err.text), "%s: %s", o.socket_path,
                 rc == GCOMP_TIMEOUT ? "no daemon answered in time" : gcomp_strerror(rc));
    memcpy(connect_err, last_err.text, sizeof(connect_err));
    last_err.client = NULL;
    free(c);
    return rc;
}

static void bucket_free(gcomp_bucket *b)
{
    munmap(b->data, b->numel * sizeof(float));
    munmap((void *)b->result, b->numel * sizeof(float));
    free(b);
}

void gcomp_disconnect(gcomp_client *c)
{
    if (!c)
        return;
    for (gcomp_bucket *b = c->buckets, *next; b; b = next) {
        next = b->next;
        bucket_free(b);
    }
    if (c->reply) {
        close_fds(c->reply_fds, c->reply_nfds);
        gcomp__daemon_msg__free_unpacked(c->reply, NULL);
    }
    close(c->fd);
    client_locks_destroy(c);
    if (last_err.client == c)
        last_err.client = NULL;
    free(c);
}

const char *gcomp_last_error(const gcomp_client *c)
{
    if (!c)
        return connect_err;
    return last_err.client == c ? last_err.text : "";
}

int gcomp_node(const gcomp_client *c)
{
    return c->node;
}

int gcomp_nodes(const gcomp_client *c)
{
    return c->nodes;
}

/* Check one layer description; the daemon checks again, this gives early, local errors. */
static int check_layer(gcomp_client *c, const char *bucket, const gcomp_layer *l, size_t i)
{
    if (!l->name || !*l->name || strlen(l->name) > GCOMP_MAX_NAME)
        return set_error(c, GCOMP_INVALID, "bucket '%s' layer %zu: name missing or longer than %d bytes",
                         bucket, i, GCOMP_MAX_NAME);
    if (l->ndim < 1 || l->ndim > GCOMP_MAX_DIMS)
        return set_error(c, GCOMP_INVALID, "bucket '%s' layer '%s': ndim %d not in 1..%d", bucket,
                         l->name, l->ndim, GCOMP_MAX_DIMS);
    for (int d = 0; d < l->ndim; d++)
        if (l->shape[d] < 1)
            return set_error(c, GCOMP_INVALID, "bucket '%s' layer '%s': dimension %d is %lld",
                             bucket, l->name, d, (long long)l->shape[d]);
    if (l->dtype != GCOMP_FLOAT32)
        return set_error(c, GCOMP_INVALID, "bucket '%s' layer '%s': dtype %d is not float32",
                         bucket, l->name, (int)l->dtype);
    return GCOMP_OK;
}

static size_t varint_size(size_t v)
{
    size_t n = 1;
    for (; v >= 128; v >>= 7)
        n++;
    return n;
}

/*
 * Send the registration of layers[0..n) in as few Register packets as GW_MAX_MSG allows
 * (under c->req_mu and c->mu): every part names the bucket and carries the next layers,
 * the first one total_layers, all but the last more = true.
 */
static int send_register(gcomp_client *c, const char *name, Gcomp__Layer **layers, size_t n,
                         unsigned flags)
{
    Gcomp__Register reg = GCOMP__REGISTER__INIT;
    reg.bucket = (char *)name;
    reg.flags = flags;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_REGISTER;
    m.register_ = &reg;
    /* The fields every part has, at their largest. */
    reg.total_layers = (uint32_t)n;
    reg.more = 1;
    size_t fixed = gcomp__register__get_packed_size(&reg);
    for (size_t first = 0; first < n;) {
        size_t size = fixed, end = first;
        while (end < n) {
            size_t ls = gcomp__layer__get_packed_size(layers[end]);
            size_t add = 1 + varint_size(ls) + ls; /* tag, length, the layer */
            /* The TrainerMsg wraps the Register in a tag and a length. */
            if (end > first && 1 + varint_size(size + add) + size + add > GW_MAX_MSG)
                break;
            size += add;
            end++;
        }
        reg.layers = layers + first;
        reg.n_layers = end - first;
        reg.total_layers = first == 0 ? (uint32_t)n : 0;
        reg.more = end < n;
        int rc = send_msg(c, &m);
        if (rc)
            return rc;
        first = end;
    }
    return GCOMP_OK;
}

/* The Registered reply (under c->mu): map the two regions and add the bucket. */
static int bucket_from_reply(gcomp_client *c, const char *name, const Gcomp__Registered *r,
                             const int *fds, int nfds, gcomp_bucket **out)
{
    if (r->status)
        return set_error(c, r->status, "%s", r->error);
    if (nfds != 2)
        return set_error(c, GCOMP_PROTOCOL, "bucket '%s': the daemon sent %d fds, not 2", name, nfds);
    gcomp_bucket *b = calloc(1, sizeof(*b));
    if (!b)
        return set_error(c, GCOMP_NOMEM, "bucket '%s': out of memory", name);
    b->numel = r->numel;
    size_t bytes = b->numel * sizeof(float);
    b->data = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    b->result = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fds[1], 0);
    if (b->data == MAP_FAILED || b->result == MAP_FAILED) {
        int rc = set_error(c, GCOMP_NOMEM, "bucket '%s': mmap of %zu bytes: %s", name, bytes,
                           strerror(errno));
        if (b->data != MAP_FAILED)
            munmap(b->data, bytes);
        if (b->result != MAP_FAILED)
            munmap((void *)b->result, bytes);
        free(b);
        return rc;
    }
    b->client = c;
    b->id = r->bucket_id;
    gw_strlcpy(b->name, name, sizeof(b->name));
    b->next = c->buckets;
    c->buckets = b;
    *out = b;
    return GCOMP_OK;
}

int gcomp_bucket_register_flags(gcomp_client *c, const char *name, const gcomp_layer *layers,
                                size_t nlayers, unsigned flags, gcomp_bucket **out)
{
    if (!c || !name || !out || (!layers && nlayers))
        return GCOMP_INVALID;
    if (!*name || strlen(name) > GCOMP_MAX_NAME)
        return set_error(c, GCOMP_INVALID, "bucket name missing or longer than %d bytes",
                         GCOMP_MAX_NAME);
    if (nlayers < 1 || nlayers > GCOMP_MAX_LAYERS)
        return set_error(c, GCOMP_INVALID, "bucket '%s': %zu layers, must be 1..%d", name,
                         nlayers, GCOMP_MAX_LAYERS);
    if (flags & ~(unsigned)GCOMP_BUCKET_EXACT)
        return set_error(c, GCOMP_INVALID, "bucket '%s': unknown flags 0x%x", name,
                         flags & ~(unsigned)GCOMP_BUCKET_EXACT);

    Gcomp__Layer *pl = calloc(nlayers, sizeof(*pl));
    Gcomp__Layer **pp = calloc(nlayers, sizeof(*pp));
    int64_t (*shapes)[GCOMP_MAX_DIMS] = calloc(nlayers, sizeof(*shapes));
    int rc = GCOMP_NOMEM;
    if (!pl || !pp || !shapes)
        goto out_free;
    for (size_t i = 0; i < nlayers; i++) {
        rc = check_layer(c, name, &layers[i], i);
        if (rc)
            goto out_free;
        gcomp__layer__init(&pl[i]);
        pl[i].name = (char *)layers[i].name;
        memcpy(shapes[i], layers[i].shape, sizeof(shapes[i]));
        pl[i].shape = shapes[i];
        pl[i].n_shape = (size_t)layers[i].ndim;
        pl[i].dtype = layers[i].dtype;
        pp[i] = &pl[i];
    }

    request_begin(c);
    rc = GCOMP_OK;
    for (gcomp_bucket *b = c->buckets; b && !rc; b = b->next)
        if (strcmp(b->name, name) == 0)
            rc = set_error(c, GCOMP_INVALID, "bucket '%s' is already registered on this client", name);
    if (!rc)
        rc = send_register(c, name, pp, nlayers, flags);
    Gcomp__DaemonMsg *r = NULL;
    int fds[GW_MAX_FDS], nfds = 0;
    if (!rc)
        rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_REGISTERED, &r, fds, &nfds);
    if (!rc) {
        rc = bucket_from_reply(c, name, r->registered, fds, nfds, out);
        close_fds(fds, nfds);
        gcomp__daemon_msg__free_unpacked(r, NULL);
    }
    request_end(c);
out_free:
    free(pl);
    free(pp);
    free(shapes);
    return rc;
}

int gcomp_bucket_register(gcomp_client *c, const char *name, const gcomp_layer *layers,
                          size_t nlayers, gcomp_bucket **out)
{
    return gcomp_bucket_register_flags(c, name, layers, nlayers, 0, out);
}

int gcomp_bucket_unregister(gcomp_bucket *b)
{
    if (!b)
        return GCOMP_INVALID;
    gcomp_client *c = b->client;
    request_begin(c);
    int rc;
    if (b->in_flight) {
        rc = set_error(c, GCOMP_BUSY, "bucket '%s': step %lld was submitted and not waited for",
                       b->name, (long long)b->step);
        goto out;
    }
    Gcomp__Unregister u = GCOMP__UNREGISTER__INIT;
    u.bucket_id = b->id;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_UNREGISTER;
    m.unregister = &u;
    rc = send_msg(c, &m);
    Gcomp__DaemonMsg *r = NULL;
    int fds[GW_MAX_FDS], nfds = 0;
    if (!rc)
        rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_UNREGISTERED, &r, fds, &nfds);
    if (rc)
        goto out;
    close_fds(fds, nfds);
    if (r->unregistered->bucket_id != b->id)
        rc = mark_lost(c, "reply for bucket id %u to the unregistration of bucket '%s' (id %u)",
                       r->unregistered->bucket_id, b->name, b->id);
    else if (r->unregistered->status)
        rc = set_error(c, r->unregistered->status, "%s", r->unregistered->error);
    gcomp__daemon_msg__free_unpacked(r, NULL);
    if (rc)
        goto out;
    for (gcomp_bucket **p = &c->buckets; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    bucket_free(b);
out:
    request_end(c);
    return rc;
}

size_t gcomp_bucket_numel(const gcomp_bucket *b)
{
    return b->numel;
}

float *gcomp_bucket_data(gcomp_bucket *b)
{
    return b->data;
}

const float *gcomp_bucket_result(const gcomp_bucket *b)
{
    return b->result;
}

int gcomp_submit(gcomp_bucket *b, int64_t step)
{
    if (!b)
        return GCOMP_INVALID;
    gcomp_client *c = b->client;
    pthread_mutex_lock(&c->mu);
    int rc;
    if (b->in_flight) {
        rc = set_error(c, GCOMP_BUSY, "bucket '%s': step %lld was submitted and not waited for",
                       b->name, (long long)b->step);
        goto out;
    }
    Gcomp__Submit s = GCOMP__SUBMIT__INIT;
    s.bucket_id = b->id;
    s.step = step;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_SUBMIT;
    m.submit = &s;
    rc = send_msg(c, &m);
    if (rc)
        goto out;
    b->step = step;
    b->in_flight = 1;
    b->done = 0;
    c->n_in_flight++;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int bucket_done(const gcomp_client *c, const void *arg)
{
    (void)c;
    return ((const gcomp_bucket *)arg)->done;
}

int gcomp_wait(gcomp_bucket *b, int timeout_ms)
{
    if (!b)
        return GCOMP_INVALID;
    gcomp_client *c = b->client;
    pthread_mutex_lock(&c->mu);
    int rc;
    if (!b->in_flight) {
        rc = set_error(c, GCOMP_INVALID, "bucket '%s': nothing submitted to wait for", b->name);
        goto out;
    }
    rc = pump(c, bucket_done, b, deadline_after(timeout_ms));
    if (b->done)
        rc = take_done(c, b);
    else if (rc == GCOMP_TIMEOUT)
        set_error(c, rc, "bucket '%s' step %lld: not complete after %d ms", b->name,
                  (long long)b->step, timeout_ms);
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int any_done(const gcomp_client *c, const void *arg)
{
    (void)arg;
    return c->done_head != NULL || c->n_in_flight == 0;
}

int gcomp_wait_any(gcomp_client *c, int timeout_ms, gcomp_bucket **done)
{
    if (!c || !done)
        return GCOMP_INVALID;
    pthread_mutex_lock(&c->mu);
    int rc = GCOMP_OK;
    if (c->n_in_flight > 0)
        rc = pump(c, any_done, NULL, deadline_after(timeout_ms));
    gcomp_bucket *b = c->done_head;
    if (b) {
        rc = take_done(c, b);
        *done = b;
    } else if (c->n_in_flight == 0) {
        rc = set_error(c, GCOMP_NOT_FOUND, "no bucket is in flight");
    } else if (rc == GCOMP_TIMEOUT) {
        set_error(c, rc, "no step completed in %d ms", timeout_ms);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int gcomp_advice_get(const gcomp_client *c, gcomp_advice *out)
{
    if (!c || !out)
        return GCOMP_INVALID;
    gcomp_client *mc = (gcomp_client *)c; /* the lock, not the advice, changes */
    pthread_mutex_lock(&mc->mu);
    gcomp_advice a = c->advice;
    pthread_mutex_unlock(&mc->mu);
    if (a.batch_size <= 0)
        return GCOMP_NOT_FOUND;
    *out = a;
    return GCOMP_OK;
}

int gcomp_hint(gcomp_client *c, const gcomp_hints *h)
{
    if (!c || !h)
        return GCOMP_INVALID;
    Gcomp__Hint hint = GCOMP__HINT__INIT;
    hint.step = h->step;
    hint.fields = h->fields;
    hint.lr = h->lr;
    hint.samples = h->samples;
    hint.epoch_end = h->epoch_end != 0;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_HINT;
    m.hint = &hint;
    pthread_mutex_lock(&c->mu);
    int rc = send_msg(c, &m);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
