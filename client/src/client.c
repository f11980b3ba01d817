/*
 * client.c: libgcomp-client. One SOCK_SEQPACKET connection to the node's daemon;
 * buckets live in shared memory the daemon made (memfd, received by SCM_RIGHTS).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "gcomp.h"
#include "wire.h"

struct gcomp_bucket {
    gcomp_client *client;
    gcomp_bucket *next;
    uint32_t id;
    char name[GCOMP_MAX_NAME + 1];
    size_t numel;
    float *data;         /* this trainer's input region (read-write) */
    const float *result; /* the node's result region (read-only) */
    int64_t step;        /* last step submitted */
    int in_flight;       /* submitted, completion not yet seen by gcomp_wait */
    int done;            /* the completion of `step` arrived */
    int status;          /* its status */
    char error[512];     /* its message */
};

struct gcomp_client {
    int fd;
    gcomp_advice advice; /* latest from a completion; batch_size 0: none */
    int node, nodes;
    int lost; /* the daemon connection is gone */
    int reply_timeout_ms;
    gcomp_bucket *buckets;
    char err[1024];
    uint8_t buf[GW_MAX_MSG];
};

/* Why the last gcomp_connect() of this thread failed (no client exists to hold it). */
static _Thread_local char connect_err[1024];

static int set_error(gcomp_client *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return status;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    int64_t deadline = now_ms() + timeout_ms;
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
        if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || now_ms() >= deadline) {
            errno = e;
            return e == ENOENT || e == ECONNREFUSED ? GCOMP_TIMEOUT : GCOMP_IO;
        }
        usleep(20000);
    }
}

static gcomp_bucket *find_bucket(gcomp_client *c, uint32_t id)
{
    for (gcomp_bucket *b = c->buckets; b; b = b->next)
        if (b->id == id)
            return b;
    return NULL;
}

/* The connection broke: every bucket in flight fails with GCOMP_DAEMON_LOST. */
static int mark_lost(gcomp_client *c, int status)
{
    c->lost = 1;
    for (gcomp_bucket *b = c->buckets; b; b = b->next)
        if (b->in_flight && !b->done) {
            b->done = 1;
            b->status = GCOMP_DAEMON_LOST;
            snprintf(b->error, sizeof(b->error), "bucket '%s' step %lld: connection to the daemon lost",
                     b->name, (long long)b->step);
        }
    return set_error(c, GCOMP_DAEMON_LOST, "connection to the daemon lost (%s)",
                     status == GCOMP_DAEMON_LOST ? "closed by the daemon" : strerror(errno));
}

/*
 * Receive one daemon message within timeout_ms (< 0: forever). Completions are filed
 * into their buckets; any other message is returned in *out (caller frees) with its fds.
 */
static int recv_one(gcomp_client *c, int timeout_ms, Gcomp__DaemonMsg **out, int *fds, int *nfds)
{
    if (c->lost)
        return set_error(c, GCOMP_DAEMON_LOST, "connection to the daemon lost");
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr;
    do
        pr = poll(&pfd, 1, timeout_ms);
    while (pr < 0 && errno == EINTR);
    if (pr == 0)
        return GCOMP_TIMEOUT;
    if (pr < 0)
        return set_error(c, GCOMP_IO, "poll on the daemon socket: %s", strerror(errno));
    size_t len;
    int rc = gw_recv(c->fd, c->buf, &len, fds, nfds);
    if (rc == GCOMP_DAEMON_LOST || rc == GCOMP_IO)
        return mark_lost(c, rc);
    if (rc)
        return set_error(c, rc, "oversized message from the daemon");
    Gcomp__DaemonMsg *m = gcomp__daemon_msg__unpack(NULL, len, c->buf);
    if (!m) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        return set_error(c, GCOMP_PROTOCOL, "undecodable message from the daemon");
    }
    if (m->msg_case == GCOMP__DAEMON_MSG__MSG_COMPLETE) {
        Gcomp__Complete *cm = m->complete;
        c->advice = (gcomp_advice){.batch_size = cm->advice_batch,
                                   .lr_scale = cm->advice_lr_scale,
                                   .step = cm->advice_step};
        gcomp_bucket *b = find_bucket(c, cm->bucket_id);
        if (b && b->in_flight && cm->step == b->step) {
            b->done = 1;
            b->status = cm->status;
            gw_strlcpy(b->error, cm->error ? cm->error : "", sizeof(b->error));
        }
        gcomp__daemon_msg__free_unpacked(m, NULL);
        *out = NULL;
        return GCOMP_OK;
    }
    *out = m;
    return GCOMP_OK;
}

/* Wait for a reply of the given kind, filing completions that arrive meanwhile. */
static int await_reply(gcomp_client *c, Gcomp__DaemonMsg__MsgCase kind, Gcomp__DaemonMsg **out,
                       int *fds, int *nfds)
{
    int64_t deadline = now_ms() + c->reply_timeout_ms;
    for (;;) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            return set_error(c, GCOMP_TIMEOUT, "no reply from the daemon in %d ms",
                             c->reply_timeout_ms);
        Gcomp__DaemonMsg *m = NULL;
        *nfds = 0;
        int rc = recv_one(c, left, &m, fds, nfds);
        if (rc == GCOMP_TIMEOUT)
            continue;
        if (rc)
            return rc;
        if (!m)
            continue;
        if (m->msg_case == kind) {
            *out = m;
            return GCOMP_OK;
        }
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        gcomp__daemon_msg__free_unpacked(m, NULL);
        return set_error(c, GCOMP_PROTOCOL, "unexpected message from the daemon");
    }
}

static int send_msg(gcomp_client *c, const Gcomp__TrainerMsg *m)
{
    if (c->lost)
        return set_error(c, GCOMP_DAEMON_LOST, "connection to the daemon lost");
    int rc = gw_send(c->fd, &m->base, NULL, 0);
    if (rc == GCOMP_LIMIT)
        return set_error(c, rc, "message larger than %d bytes", GW_MAX_MSG);
    if (rc)
        return mark_lost(c, rc);
    return GCOMP_OK;
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
    c->reply_timeout_ms = o.connect_timeout_ms > 30000 ? o.connect_timeout_ms : 30000;
    int rc = dial(o.socket_path, o.connect_timeout_ms, &c->fd);
    if (rc)
        goto err_free;

    Gcomp__Hello hello = GCOMP__HELLO__INIT;
    hello.version = GCOMP_PROTOCOL_VERSION;
    hello.job_id = (char *)o.job_id;
    hello.local_rank = o.local_rank;
    hello.pid = getpid();
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_HELLO;
    m.hello = &hello;
    rc = send_msg(c, &m);
    if (rc)
        goto err_close;
    Gcomp__DaemonMsg *r;
    int fds[GW_MAX_FDS], nfds;
    rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_WELCOME, &r, fds, &nfds);
    if (rc)
        goto err_close;
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
err_free:
    if (!c->err[0])
        snprintf(c->err, sizeof(c->err), "%s: %s", o.socket_path,
                 rc == GCOMP_TIMEOUT ? "no daemon answered in time" : gcomp_strerror(rc));
    memcpy(connect_err, c->err, sizeof(connect_err));
    free(c);
    return rc;
}

static void bucket_unmap(gcomp_bucket *b)
{
    munmap(b->data, b->numel * sizeof(float));
    munmap((void *)b->result, b->numel * sizeof(float));
}

void gcomp_disconnect(gcomp_client *c)
{
    if (!c)
        return;
    for (gcomp_bucket *b = c->buckets, *next; b; b = next) {
        next = b->next;
        bucket_unmap(b);
        free(b);
    }
    close(c->fd);
    free(c);
}

const char *gcomp_last_error(const gcomp_client *c)
{
    return c ? c->err : connect_err;
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

/* Send the registration in packets of at most GW_MAX_MSG bytes (proto/gcomp.proto:
   every part names the bucket, the first gives total_layers, all but the last more). */
static int send_register(gcomp_client *c, const char *name, Gcomp__Layer **pp, size_t nlayers,
                         unsigned flags)
{
    size_t at = 0;
    do {
        Gcomp__Register reg = GCOMP__REGISTER__INIT;
        reg.bucket = (char *)name;
        reg.flags = flags;
        reg.total_layers = at == 0 ? (uint32_t)nlayers : 0;
        reg.layers = pp + at;
        /* As many layers as fit, leaving room for the header fields. */
        size_t n = 0, bytes = 64 + strlen(name);
        while (at + n < nlayers) {
            size_t one = protobuf_c_message_get_packed_size(&pp[at + n]->base) + 8;
            if (n > 0 && bytes + one > GW_MAX_MSG)
                break;
            bytes += one;
            n++;
        }
        reg.n_layers = n;
        reg.more = at + n < nlayers;
        Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
        m.msg_case = GCOMP__TRAINER_MSG__MSG_REGISTER;
        m.register_ = &reg;
        int rc = send_msg(c, &m);
        if (rc)
            return rc;
        at += n;
    } while (at < nlayers);
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
        return set_error(c, GCOMP_INVALID, "bucket '%s': unknown flags 0x%x", name, flags);
    for (gcomp_bucket *b = c->buckets; b; b = b->next)
        if (strcmp(b->name, name) == 0)
            return set_error(c, GCOMP_INVALID, "bucket '%s' is already registered on this client",
                             name);

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
    rc = send_register(c, name, pp, nlayers, flags);
    if (rc)
        goto out_free;

    Gcomp__DaemonMsg *r;
    int fds[GW_MAX_FDS], nfds = 0;
    rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_REGISTERED, &r, fds, &nfds);
    if (rc)
        goto out_free;
    rc = r->registered->status;
    if (rc) {
        set_error(c, rc, "%s", r->registered->error);
        goto out_reply;
    }
    if (nfds != 2) {
        rc = set_error(c, GCOMP_PROTOCOL, "bucket '%s': the daemon sent %d fds, not 2", name, nfds);
        goto out_reply;
    }
    gcomp_bucket *b = calloc(1, sizeof(*b));
    if (!b) {
        rc = GCOMP_NOMEM;
        goto out_reply;
    }
    b->numel = r->registered->numel;
    size_t bytes = b->numel * sizeof(float);
    b->data = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    b->result = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fds[1], 0);
    if (b->data == MAP_FAILED || b->result == MAP_FAILED) {
        rc = set_error(c, GCOMP_NOMEM, "bucket '%s': mmap of %zu bytes: %s", name, bytes,
                       strerror(errno));
        if (b->data != MAP_FAILED)
            munmap(b->data, bytes);
        if (b->result != MAP_FAILED)
            munmap((void *)b->result, bytes);
        free(b);
        goto out_reply;
    }
    b->client = c;
    b->id = r->registered->bucket_id;
    gw_strlcpy(b->name, name, sizeof(b->name));
    b->next = c->buckets;
    c->buckets = b;
    *out = b;
out_reply:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    gcomp__daemon_msg__free_unpacked(r, NULL);
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
    if (b->in_flight)
        return set_error(c, GCOMP_BUSY, "bucket '%s': step %lld was submitted and not waited for",
                         b->name, (long long)b->step);
    Gcomp__Unregister u = GCOMP__UNREGISTER__INIT;
    u.bucket_id = b->id;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_UNREGISTER;
    m.unregister = &u;
    int rc = send_msg(c, &m);
    Gcomp__DaemonMsg *r = NULL;
    int fds[GW_MAX_FDS], nfds = 0;
    if (!rc)
        rc = await_reply(c, GCOMP__DAEMON_MSG__MSG_UNREGISTERED, &r, fds, &nfds);
    if (!rc) {
        rc = r->unregistered->status;
        if (rc)
            set_error(c, rc, "%s", r->unregistered->error);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        gcomp__daemon_msg__free_unpacked(r, NULL);
    }
    if (rc)
        return rc;
    for (gcomp_bucket **p = &c->buckets; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    bucket_unmap(b);
    free(b);
    return GCOMP_OK;
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
    if (b->in_flight)
        return set_error(c, GCOMP_BUSY, "bucket '%s': step %lld was submitted and not waited for",
                         b->name, (long long)b->step);
    Gcomp__Submit s = GCOMP__SUBMIT__INIT;
    s.bucket_id = b->id;
    s.step = step;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_SUBMIT;
    m.submit = &s;
    int rc = send_msg(c, &m);
    if (rc)
        return rc;
    b->step = step;
    b->in_flight = 1;
    b->done = 0;
    return GCOMP_OK;
}

int gcomp_wait(gcomp_bucket *b, int timeout_ms)
{
    if (!b)
        return GCOMP_INVALID;
    gcomp_client *c = b->client;
    if (!b->in_flight)
        return set_error(c, GCOMP_INVALID, "bucket '%s': nothing submitted to wait for", b->name);
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (int polled = 0; !b->done; polled = 1) {
        int left = deadline < 0 ? -1 : (int)(deadline - now_ms());
        /* Always look at the socket once, so a zero timeout polls. */
        if (deadline >= 0 && left <= 0) {
            if (polled)
                return set_error(c, GCOMP_TIMEOUT, "bucket '%s' step %lld: not complete after %d ms",
                                 b->name, (long long)b->step, timeout_ms);
            left = 0;
        }
        Gcomp__DaemonMsg *m = NULL;
        int fds[GW_MAX_FDS], nfds = 0;
        int rc = recv_one(c, left, &m, fds, &nfds);
        if (rc == GCOMP_TIMEOUT) {
            if (deadline >= 0 && now_ms() >= deadline)
                return set_error(c, GCOMP_TIMEOUT, "bucket '%s' step %lld: not complete after %d ms",
                                 b->name, (long long)b->step, timeout_ms);
            continue;
        }
        if (m) {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            gcomp__daemon_msg__free_unpacked(m, NULL);
            return set_error(c, GCOMP_PROTOCOL, "unexpected message from the daemon");
        }
        if (rc && !b->done)
            return rc;
    }
    b->in_flight = 0;
    if (b->status)
        return set_error(c, b->status, "%s", b->error);
    return GCOMP_OK;
}

int gcomp_advice_get(const gcomp_client *c, gcomp_advice *out)
{
    if (!c || !out)
        return GCOMP_INVALID;
    if (c->advice.batch_size <= 0)
        return GCOMP_NOT_FOUND;
    *out = c->advice;
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
    return send_msg(c, &m);
}
