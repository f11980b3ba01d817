/*
 * trace.c: gcompctl trace start / stop, recording what every trainer submitted as a
 * gcomp-trace/1 trace (design.md section 5; gcomp/trace.py reads it):
 *
 *   DIR/manifest.json                  node 0: workers, steps, buckets, hints
 *   DIR/w{worker}/s{k}/{bucket}.npy    flat float32 (npy 1.0), worker = the job-wide
 *                                      trainer number (node-major, as GCOMP_RANK), k =
 *                                      the step's number in the trace (step - from)
 *
 * A start and a stop travel like a policy switch: asked with the node's next report,
 * decided by the coordinator (coord.c) with a step from which (or before which) every
 * node records, applied everywhere in the same decision. When a recorded bucket step
 * is decided to run, the engine copies each trainer's input region into one malloc'd
 * buffer (the trainers do not touch their input until the result comes back) and hands
 * it to this recording's writer thread, which writes the .npy files: the copy is all
 * the job waits for. The writer's queue is bounded (TRACE_MAX_QUEUED): a disk slower
 * than the job stops the recording with an error, not the job.
 *
 * Every node reports the steps it has completely written (every recorded bucket, every
 * local trainer) and whether it is done; when every node is (or one failed), the
 * coordinator decides the finish, and node 0 writes the final manifest with "steps" =
 * the steps complete on every node. A recording that ends early (an error, the daemons
 * stopping) says so in the manifest ("complete": false, "error").
 *
 * Thread context: everything here is the engine thread's, except the writer thread
 * (writer_main) and the fields of eng_trace marked "under mu".
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/grow.h"
#include "base/json.h"
#include "engine.h"
#include "log.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "trace files are little-endian float32, written as they are in memory");

/* Bytes of copied gradients the writer may hold before the recording gives up. */
#define TRACE_MAX_QUEUED ((size_t)1 << 30)

/* One unit of the writer's work: a bucket step of every local trainer, or a manifest. */
typedef struct trace_job {
    struct trace_job *next;
    int64_t k;                     /* the step in the trace; -1: `text` is the manifest */
    char bucket[GCOMP_MAX_NAME + 1];
    int trainers;
    size_t numel;
    size_t bytes;                  /* counted in queued */
    char *text;
    float data[];                  /* [trainers][numel] */
} trace_job;

/* Node 0's copy of a recorded step's hint. */
typedef struct trace_hint {
    bool seen;                     /* looked up (when the step's first bucket ran) */
    gcd_hint_rec h;
} trace_hint;

struct eng_trace {
    uint64_t id;
    char dir[GCD_TRACE_DIR_MAX + 1];
    int64_t from, end;             /* end -1: until trace stop */
    int first, trainers;           /* this node's first worker and trainer count */
    char (*names)[GCOMP_MAX_NAME + 1]; /* the recorded buckets */
    size_t nset;
    char *buckets_json;            /* node 0: the manifest's "buckets" value */
    trace_hint *hints;             /* node 0: [k] */
    size_t caphints;
    bool queuing;                  /* recorded steps are still copied */
    bool has_thread;               /* the writer was started (and is joined once) */
    char report_error[2100];       /* the error as last reported */
    bool finished;                 /* the finish was decided (or the daemon stops) */
    int64_t reported_written;
    bool reported_done, reported_error;

    pthread_t thread;
    pthread_mutex_t mu;            /* the writer's side: */
    pthread_cond_t cv;
    trace_job *head, *tail;        /* under mu */
    size_t queued;                 /* under mu: bytes */
    bool quit;                     /* under mu: exit once the queue is empty */
    bool discard;                  /* under mu: drop gradient jobs (it failed) */
    bool exited;                   /* under mu */
    bool busy;                     /* under mu: a job is being written */
    uint32_t *counts;              /* under mu: [k] buckets written of step k */
    size_t capcounts;
    int64_t written;               /* under mu: steps 0..written-1 complete */
    char error[2100];              /* under mu: the first failure ("" = none) */
    gcd *d;
};

/* ---- a growable string for the manifest ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool failed;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            s->failed = true;
            return;
        }
        if (s->p && s->n + (size_t)k < s->cap) {
            s->n += (size_t)k;
            return;
        }
        size_t cap = s->cap ? s->cap : 1024;
        while (cap <= s->n + (size_t)k)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->failed = true;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
}

static void sb_json_str(sbuf *s, const char *text)
{
    size_t need = gk_json_str(NULL, 0, text);
    char *q = malloc(need + 1);
    if (!q) {
        s->failed = true;
        return;
    }
    gk_json_str(q, need + 1, text);
    sb_printf(s, "%s", q);
    free(q);
}

/* ---- the writer thread ---- */

/* The NPY 1.0 header of a flat little-endian float32 array of n elements: magic,
   version, header length, the header dict padded with spaces to a multiple of 64
   bytes in all and ended by '\n'. Returns its length. */
static size_t npy_header(char *out, size_t numel)
{
    char dict[128];
    int k = snprintf(dict, sizeof(dict), "{'descr': '<f4', 'fortran_order': False, "
                                         "'shape': (%zu,), }", numel);
    size_t total = 10 + (size_t)k + 1;
    total = (total + 63) / 64 * 64;
    size_t hlen = total - 10;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (char)(hlen & 0xff);
    out[9] = (char)(hlen >> 8);
    memcpy(out + 10, dict, (size_t)k);
    memset(out + 10 + k, ' ', hlen - (size_t)k - 1);
    out[total - 1] = '\n';
    return total;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int mkdir_one(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Write one file (tmp for the manifest: replaced whole). err names the path. */
static int write_file(const char *path, const char *head, size_t hlen, const void *data,
                      size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (write_all(fd, head, hlen) || write_all(fd, data, len)) {
        snprintf(err, errlen, "writing %s failed: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        snprintf(err, errlen, "writing %s failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_job(struct eng_trace *t, const trace_job *j, char *err, size_t errlen)
{
    char path[GCD_TRACE_DIR_MAX + GCOMP_MAX_NAME + 64];
    if (j->k < 0) {
        char tmp[sizeof(path)];
        snprintf(path, sizeof(path), "%s/manifest.json", t->dir);
        snprintf(tmp, sizeof(tmp), "%s/.manifest.json.tmp", t->dir);
        if (write_file(tmp, "", 0, j->text, strlen(j->text), err, errlen))
            return -1;
        if (rename(tmp, path) < 0) {
            snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
            return -1;
        }
        return 0;
    }
    char head[128];
    size_t hlen = npy_header(head, j->numel);
    for (int i = 0; i < j->trainers; i++) {
        int w = t->first + i;
        snprintf(path, sizeof(path), "%s/w%d", t->dir, w);
        if (mkdir_one(path, err, errlen))
            return -1;
        snprintf(path, sizeof(path), "%s/w%d/s%lld", t->dir, w, (long long)j->k);
        if (mkdir_one(path, err, errlen))
            return -1;
        snprintf(path, sizeof(path), "%s/w%d/s%lld/%s.npy", t->dir, w, (long long)j->k,
                 j->bucket);
        if (write_file(path, head, hlen, j->data + (size_t)i * j->numel,
                       j->numel * sizeof(float), err, errlen))
            return -1;
    }
    return 0;
}

/* Wake the engine (it reports the progress). */
static void wake_engine(gcd *d)
{
    pthread_mutex_lock(&d->mu);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void *writer_main(void *arg)
{
    struct eng_trace *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->head && !t->quit)
            pthread_cond_wait(&t->cv, &t->mu);
        trace_job *j = t->head;
        if (!j)
            break;
        t->head = j->next;
        if (!t->head)
            t->tail = NULL;
        bool skip = j->k >= 0 && (t->discard || t->error[0]);
        t->busy = true;
        pthread_mutex_unlock(&t->mu);
        char err[2048] = "";
        int rc = skip ? 0 : write_job(t, j, err, sizeof(err));
        if (rc)
            gcd_log_error("trace %s: %s", t->dir, err);
        pthread_mutex_lock(&t->mu);
        t->queued -= j->bytes;
        if (rc && !t->error[0])
            snprintf(t->error, sizeof(t->error), "%s: the recording stopped", err);
        if (!rc && !skip && j->k >= 0) {
            t->counts[j->k]++;
            while ((size_t)t->written < t->capcounts && t->counts[t->written] == t->nset)
                t->written++;
        }
        free(j->text);
        free(j);
        t->busy = false;
        pthread_cond_broadcast(&t->cv); /* eng_trace_shutdown waits for the queue to empty */
        pthread_mutex_unlock(&t->mu);
        wake_engine(t->d);
        pthread_mutex_lock(&t->mu);
    }
    t->exited = true;
    pthread_mutex_unlock(&t->mu);
    wake_engine(t->d);
    return NULL;
}

/* Queue a job (engine thread); the writer frees it. */
static void enqueue(struct eng_trace *t, trace_job *j)
{
    pthread_mutex_lock(&t->mu);
    t->queued += j->bytes;
    j->next = NULL;
    if (t->tail)
        t->tail->next = j;
    else
        t->head = j;
    t->tail = j;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* The recording failed here: keep the first reason, stop copying. */
static void trace_fail(engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace_fail(engine *e, const char *fmt, ...)
{
    struct eng_trace *t = e->trace;
    char why[sizeof(t->error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    gcd_log_error("trace %s: %s", t->dir, why);
    t->queuing = false;
    pthread_mutex_lock(&t->mu);
    if (!t->error[0])
        snprintf(t->error, sizeof(t->error), "%s", why);
    t->discard = true;
    pthread_mutex_unlock(&t->mu);
}

/* ---- the manifest (node 0) ---- */

static char *buckets_json(gcd *d, struct eng_trace *t)
{
    sbuf s = {0};
    sb_printf(&s, "[");
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < t->nset; i++) {
        const gcd_bucket *b = gcd_bucket_by_name(d, t->names[i]);
        if (!b)
            continue;
        sb_printf(&s, "%s\n  {\"name\": ", i ? "," : "");
        sb_json_str(&s, b->name);
        sb_printf(&s, ", \"layers\": [");
        for (size_t l = 0; l < b->layout.n; l++) {
            const gcd_layer *ly = &b->layout.layers[l];
            sb_printf(&s, "%s\n   {\"name\": ", l ? "," : "");
            sb_json_str(&s, ly->name);
            sb_printf(&s, ", \"shape\": [");
            for (int k = 0; k < ly->ndim; k++)
                sb_printf(&s, "%s%lld", k ? ", " : "", (long long)ly->shape[k]);
            sb_printf(&s, "], \"dtype\": \"float32\"}");
        }
        sb_printf(&s, "]}");
    }
    pthread_mutex_unlock(&d->mu);
    sb_printf(&s, "]");
    if (s.failed) {
        free(s.p);
        return NULL;
    }
    return s.p;
}

/* Queue the manifest: `steps` complete on every node; recording: still going on. */
static void queue_manifest(engine *e, int64_t steps, bool recording, const char *error)
{
    gcd *d = e->d;
    struct eng_trace *t = e->trace;
    if (d->node != 0 || !t->buckets_json)
        return;
    int64_t want = t->end >= 0 ? t->end - t->from : -1;
    sbuf s = {0};
    sb_printf(&s, "{\"format\": \"gcomp-trace/1\", \"workers\": %d, \"steps\": %lld,\n"
                  " \"recording\": %s, \"complete\": %s, \"error\": ",
              d->total_trainers, (long long)steps, recording ? "true" : "false",
              !recording && !error[0] && steps == want ? "true" : "false");
    if (error[0])
        sb_json_str(&s, error);
    else
        sb_printf(&s, "null");
    sb_printf(&s, ",\n \"first_step\": %lld, \"trainers_per_node\": [", (long long)t->from);
    for (int w = 0; w < d->nodes; w++)
        sb_printf(&s, "%s%d", w ? ", " : "", d->node_trainers[w]);
    sb_printf(&s, "],\n \"buckets\": %s,\n \"hints\": [", t->buckets_json);
    int nh = 0;
    for (int64_t k = 0; k < steps && (size_t)k < t->caphints; k++) {
        const trace_hint *h = &t->hints[k];
        if (!h->seen || !h->h.fields)
            continue;
        sb_printf(&s, "%s\n  {\"step\": %lld", nh++ ? "," : "", (long long)k);
        if (h->h.fields & GCOMP_HINT_LR) {
            char num[40];
            gk_json_num(num, sizeof(num), h->h.lr, 17);
            sb_printf(&s, ", \"lr\": %s", num);
        }
        if (h->h.fields & GCOMP_HINT_SAMPLES)
            sb_printf(&s, ", \"samples\": %lld", (long long)h->h.samples);
        if (h->h.fields & GCOMP_HINT_EPOCH_END)
            sb_printf(&s, ", \"epoch_end\": %s", h->h.epoch_end ? "true" : "false");
        sb_printf(&s, "}");
    }
    sb_printf(&s, "]}\n");
    trace_job *j = s.failed ? NULL : calloc(1, sizeof(*j));
    if (!j) {
        free(s.p);
        gcd_log_error("trace %s: out of memory building the manifest", t->dir);
        return;
    }
    j->k = -1;
    j->text = s.p;
    enqueue(t, j);
}

/* ---- gcompctl's view ---- */

static void publish(engine *e, int state, int64_t complete)
{
    gcd *d = e->d;
    struct eng_trace *t = e->trace;
    pthread_mutex_lock(&t->mu);
    int64_t written = t->written;
    char error[sizeof(t->error)];
    snprintf(error, sizeof(error), "%s", t->error);
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_lock(&d->mu);
    if (state >= 0) {
        d->trace.state = state;
        d->trace.complete = complete;
    }
    d->trace.id = t->id;
    snprintf(d->trace.dir, sizeof(d->trace.dir), "%s", t->dir);
    d->trace.from = t->from;
    d->trace.end = t->end;
    d->trace.written = written;
    if (error[0] || state == GCD_TRACE_RECORDING)
        snprintf(d->trace.error, sizeof(d->trace.error), "%s", error);
    pthread_mutex_unlock(&d->mu);
}

/* ---- the engine's side ---- */

/* Reap a finished recording whose writer has exited; wait for it if `block`. */
static void reap(engine *e, bool block)
{
    struct eng_trace *t = e->trace;
    if (!t || !t->finished)
        return;
    pthread_mutex_lock(&t->mu);
    t->quit = true;
    pthread_cond_signal(&t->cv);
    bool exited = t->exited;
    pthread_mutex_unlock(&t->mu);
    if (!exited && !block)
        return;
    if (t->has_thread)
        pthread_join(t->thread, NULL);
    publish(e, -1, 0);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    while (t->head) {
        trace_job *j = t->head;
        t->head = j->next;
        free(j->text);
        free(j);
    }
    free(t->names);
    free(t->buckets_json);
    free(t->hints);
    free(t->counts);
    free(t);
    e->trace = NULL;
}

int eng_trace_ask(engine *e, uint64_t ctl_id, bool start, int64_t steps, const char *text)
{
    /* text: "GLOB\nDIR" for a start (control.c checked both: with the steps they fit
       ctl_wait.text). */
    ctl_wait *a = realloc(e->trace_asks, (e->ntrace + 1) * sizeof(*a));
    if (!a)
        return GCOMP_NOMEM;
    e->trace_asks = a;
    a[e->ntrace].ctl_id = ctl_id;
    if (start)
        snprintf(a[e->ntrace].text, sizeof(a[e->ntrace].text), "S%lld\n%s", (long long)steps,
                 text);
    else
        snprintf(a[e->ntrace].text, sizeof(a[e->ntrace].text), "X");
    e->ntrace++;
    return GCOMP_OK;
}

bool eng_trace_news(engine *e)
{
    if (e->sent_trace < e->ntrace)
        return true;
    struct eng_trace *t = e->trace;
    if (!t || t->finished)
        return false;
    pthread_mutex_lock(&t->mu);
    bool news = t->written != t->reported_written || (t->error[0] && !t->reported_error);
    bool done = !t->queuing || (t->end >= 0 && t->written == t->end - t->from);
    pthread_mutex_unlock(&t->mu);
    return news || done != t->reported_done;
}

void eng_trace_report(engine *e, Gcomp__NodeReport *r, Gcomp__TraceAsk *ask, char *glob,
                      size_t globlen)
{
    if (e->sent_trace < e->ntrace) {
        /* One ask per cycle, as policy switches. */
        const char *text = e->trace_asks[e->sent_trace++].text;
        gcomp__trace_ask__init(ask);
        if (text[0] == 'X') {
            ask->stop = true;
        } else {
            char *end;
            ask->steps = strtoll(text + 1, &end, 10);
            const char *nl = strchr(end + 1, '\n');
            size_t n = nl ? (size_t)(nl - end - 1) : 0;
            snprintf(glob, globlen, "%.*s", (int)n, end + 1);
            ask->buckets = glob;
            ask->dir = (char *)(nl ? nl + 1 : "");
        }
        r->trace_ask = ask;
    }
    struct eng_trace *t = e->trace;
    if (!t || t->finished)
        return;
    pthread_mutex_lock(&t->mu);
    t->reported_written = t->written;
    t->reported_error = t->error[0] != '\0';
    snprintf(t->report_error, sizeof(t->report_error), "%s", t->error);
    pthread_mutex_unlock(&t->mu);
    t->reported_done = !t->queuing || (t->end >= 0 && t->reported_written == t->end - t->from);
    r->trace_id = t->id;
    r->trace_written = t->reported_written;
    r->trace_done = t->reported_done;
    if (t->report_error[0])
        r->trace_error = t->report_error;
}

/* Answer the oldest trace ask of this node's gcompctl. */
static void answer(engine *e, int status, const char *text)
{
    if (e->ntrace == 0)
        return;
    gcd_to_loop(e->d, GCD_EV_CTL_REPLY, 0, 0, status, e->trace_asks[0].ctl_id, text);
    bool start = e->trace_asks[0].text[0] == 'S';
    memmove(e->trace_asks, e->trace_asks + 1, (e->ntrace - 1) * sizeof(*e->trace_asks));
    e->ntrace--;
    e->sent_trace--;
    if (start) {
        pthread_mutex_lock(&e->d->mu);
        e->d->trace.asked = false;
        pthread_mutex_unlock(&e->d->mu);
    }
}

/* A decided start: the buckets matching the pattern, the writer. */
static int start(engine *e, const Gcomp__TraceDecision *td)
{
    gcd *d = e->d;
    if (e->trace && !e->trace->finished) {
        /* Every node finishes a recording in the same decision: not reached, but a
           writer is never left behind. */
        e->trace->queuing = false;
        e->trace->finished = true;
    }
    reap(e, true); /* a previous recording whose writer still finishes: rare */
    struct eng_trace *t = calloc(1, sizeof(*t));
    if (!t)
        return GCOMP_NOMEM;
    t->d = d;
    t->id = td->id;
    snprintf(t->dir, sizeof(t->dir), "%s", td->dir);
    t->from = td->from_step;
    t->end = td->end_step;
    t->first = d->first_trainer;
    t->trainers = d->trainers;
    t->queuing = true;
    t->reported_written = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    e->trace = t;
    char bad[GCOMP_MAX_NAME + 1] = "";
    pthread_mutex_lock(&d->mu);
    size_t cap = 0;
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        const gcd_bucket *b = d->buckets[i];
        if (!b || b->dying || fnmatch(td->buckets, b->name, 0) != 0)
            continue;
        if (strchr(b->name, '/') || !strcmp(b->name, ".") || !strcmp(b->name, "..")) {
            snprintf(bad, sizeof(bad), "%s", b->name);
            continue;
        }
        char (*arr)[GCOMP_MAX_NAME + 1] = gk_grow(t->names, &cap, t->nset + 1, sizeof(*arr));
        if (!arr)
            break;
        t->names = arr;
        snprintf(t->names[t->nset++], sizeof(*arr), "%s", b->name);
    }
    pthread_mutex_unlock(&d->mu);
    int rc = pthread_create(&t->thread, NULL, writer_main, t);
    t->has_thread = rc == 0;
    if (rc) {
        t->exited = true;
        trace_fail(e, "cannot start the writer thread: %s", strerror(rc));
    } else if (bad[0])
        trace_fail(e, "bucket '%s' matches '%s' but its name cannot be a file name (it holds "
                   "'/'): choose the buckets with --buckets", bad, td->buckets);
    else if (!t->nset)
        trace_fail(e, "no bucket registered on node %d matches '%s'", d->node, td->buckets);
    else if (d->node == 0 && !(t->buckets_json = buckets_json(d, t)))
        trace_fail(e, "out of memory");
    if (t->queuing)
        queue_manifest(e, 0, true, "");
    publish(e, GCD_TRACE_RECORDING, 0);
    char until[64];
    if (td->end_step >= 0)
        snprintf(until, sizeof(until), "to step %lld", (long long)td->end_step - 1);
    else
        snprintf(until, sizeof(until), "until trace stop");
    gcd_log_info("trace: recording %zu bucket(s) matching '%s' from step %lld %s into %s",
                 t->nset, td->buckets, (long long)t->from, until, t->dir);
    return GCOMP_OK;
}

int eng_trace_apply(engine *e, const Gcomp__TraceDecision *td)
{
    gcd *d = e->d;
    char text[1200];
    bool mine = td->origin == d->node;
    struct eng_trace *t = e->trace;
    switch (td->kind) {
    case GCD_TRACE_START: {
        int rc = start(e, td);
        if (rc)
            return rc;
        if (td->end_step >= 0)
            snprintf(text, sizeof(text), "recording steps %lld..%lld of every trainer into %s "
                     "(trace %llu; gcompctl trace status shows its progress)",
                     (long long)td->from_step, (long long)td->end_step - 1, td->dir,
                     (unsigned long long)td->id);
        else
            snprintf(text, sizeof(text), "recording every trainer from step %lld into %s until "
                     "gcompctl trace stop (trace %llu)", (long long)td->from_step, td->dir,
                     (unsigned long long)td->id);
        if (mine)
            answer(e, GCOMP_OK, text);
        return GCOMP_OK;
    }
    case GCD_TRACE_STOP:
        if (t && t->id == td->id && !t->finished) {
            t->end = td->end_step;
            publish(e, GCD_TRACE_RECORDING, 0);
        }
        snprintf(text, sizeof(text), "the recording into %s stops before step %lld (steps "
                 "%lld..%lld); the manifest is final once every node has written them",
                 td->dir, (long long)td->end_step, (long long)td->from_step,
                 (long long)td->end_step - 1);
        gcd_log_info("trace: %s", text);
        if (mine)
            answer(e, GCOMP_OK, text);
        return GCOMP_OK;
    case GCD_TRACE_REFUSE: {
        if (mine) {
            bool stop = e->ntrace && e->trace_asks[0].text[0] == 'X';
            answer(e, stop ? GCOMP_INVALID : GCOMP_BUSY, td->error);
        }
        return GCOMP_OK;
    }
    case GCD_TRACE_FINISH:
        if (!t || t->id != td->id || t->finished)
            return GCOMP_OK;
        t->queuing = false;
        t->finished = true;
        if (td->error[0]) {
            pthread_mutex_lock(&t->mu);
            t->discard = true;
            pthread_mutex_unlock(&t->mu);
        }
        queue_manifest(e, td->complete, false, td->error);
        if (td->error[0])
            gcd_log_error("trace %s ended early: %s (%lld complete steps recorded)", td->dir,
                          td->error, (long long)td->complete);
        else
            gcd_log_info("trace %s: %lld steps recorded", td->dir, (long long)td->complete);
        publish(e, td->error[0] ? GCD_TRACE_FAILED : GCD_TRACE_FINISHED, td->complete);
        pthread_mutex_lock(&d->mu);
        snprintf(d->trace.error, sizeof(d->trace.error), "%s", td->error);
        pthread_mutex_unlock(&d->mu);
        return GCOMP_OK;
    default:
        gcd_log_error("trace: decision of unknown kind %d ignored", td->kind);
        return GCOMP_OK;
    }
}

/* Node 0: the hint local rank 0 sent for step (the loop keeps the last ones). */
static void take_hint(engine *e, int64_t step, int64_t k)
{
    struct eng_trace *t = e->trace;
    if ((size_t)k >= t->caphints) {
        size_t cap = t->caphints;
        trace_hint *h = gk_grow(t->hints, &cap, (size_t)k + 1, sizeof(*h));
        if (!h)
            return;
        memset(h + t->caphints, 0, (cap - t->caphints) * sizeof(*h));
        t->hints = h;
        t->caphints = cap;
    }
    trace_hint *h = &t->hints[k];
    if (h->seen)
        return;
    h->seen = true;
    gcd *d = e->d;
    pthread_mutex_lock(&d->mu);
    const gcd_hint_rec *r = &d->hint_ring[step % GCD_HINT_RING];
    if (r->step == step)
        h->h = *r;
    pthread_mutex_unlock(&d->mu);
}

void eng_trace_step(engine *e, eng_bucket *eb, int64_t step)
{
    struct eng_trace *t = e->trace;
    if (!t || !t->queuing || step < t->from || (t->end >= 0 && step >= t->end))
        return;
    gcd_bucket *b = eb->b;
    size_t i = 0;
    while (i < t->nset && strcmp(t->names[i], b->name))
        i++;
    if (i == t->nset)
        return;
    int64_t k = step - t->from;
    if (e->d->node == 0)
        take_hint(e, step, k);
    pthread_mutex_lock(&t->mu);
    if ((size_t)k >= t->capcounts) {
        size_t cap = t->capcounts;
        uint32_t *c = gk_grow(t->counts, &cap, (size_t)k + 1, sizeof(*c));
        if (c) {
            memset(c + t->capcounts, 0, (cap - t->capcounts) * sizeof(*c));
            t->counts = c;
            t->capcounts = cap;
        }
    }
    bool grown = (size_t)k < t->capcounts;
    size_t bytes = (size_t)b->trainers * b->layout.numel * sizeof(float);
    /* One bucket step is always taken (the queue holds nothing else then). */
    bool behind = t->queued && t->queued + bytes > TRACE_MAX_QUEUED;
    pthread_mutex_unlock(&t->mu);
    if (behind) {
        trace_fail(e, "the writer is more than %zu MiB behind at bucket '%s' step %lld (the "
                   "disk is slower than the job): the recording stopped, the job goes on",
                   TRACE_MAX_QUEUED >> 20, b->name, (long long)step);
        return;
    }
    trace_job *j = grown ? malloc(sizeof(*j) + bytes) : NULL;
    if (!j) {
        trace_fail(e, "out of memory copying bucket '%s' step %lld (%zu bytes)", b->name,
                   (long long)step, bytes);
        return;
    }
    memset(j, 0, sizeof(*j));
    j->k = k;
    snprintf(j->bucket, sizeof(j->bucket), "%s", b->name);
    j->trainers = b->trainers;
    j->numel = b->layout.numel;
    j->bytes = bytes;
    /* The copy the job waits for: the trainers leave their input alone until the
       result comes back. */
    for (int tr = 0; tr < b->trainers; tr++)
        memcpy(j->data + (size_t)tr * j->numel, b->in[tr], j->numel * sizeof(float));
    enqueue(t, j);
}

void eng_trace_bucket_gone(engine *e, const char *bucket)
{
    struct eng_trace *t = e->trace;
    if (!t || !t->queuing)
        return;
    for (size_t i = 0; i < t->nset; i++)
        if (!strcmp(t->names[i], bucket)) {
            int64_t end = t->end;
            pthread_mutex_lock(&t->mu);
            bool all = end >= 0 && t->written >= end - t->from;
            pthread_mutex_unlock(&t->mu);
            if (!all)
                trace_fail(e, "bucket '%s' was unregistered while it was recorded", bucket);
            return;
        }
}

void eng_trace_poll(engine *e)
{
    struct eng_trace *t = e->trace;
    if (!t)
        return;
    if (t->finished) {
        reap(e, false);
        return;
    }
    pthread_mutex_lock(&t->mu);
    bool changed = t->written != e->d->trace.written || (t->error[0] && !e->d->trace.error[0]);
    pthread_mutex_unlock(&t->mu);
    if (changed)
        publish(e, GCD_TRACE_RECORDING, 0);
}

void eng_trace_shutdown(engine *e)
{
    struct eng_trace *t = e->trace;
    if (t && !t->finished) {
        /* Flush what was copied (bounded by TRACE_MAX_QUEUED); node 0 then marks the
           trace partial with the steps every node reported complete (its own now). */
        t->queuing = false;
        t->finished = true;
        pthread_mutex_lock(&t->mu);
        while (!t->exited && (t->head || t->busy))
            pthread_cond_wait(&t->cv, &t->mu);
        int64_t complete = t->written;
        char error[sizeof(t->error)];
        snprintf(error, sizeof(error), "%s", t->error);
        pthread_mutex_unlock(&t->mu);
        if (e->coord) {
            int64_t *written = calloc((size_t)e->d->nodes, sizeof(*written));
            if (written && gcd_coord_trace(e->coord, written) == t->id)
                for (int w = 1; w < e->d->nodes; w++)
                    complete = written[w] < complete ? written[w] : complete;
            else
                complete = e->d->nodes == 1 ? complete : 0;
            free(written);
        }
        if (!error[0])
            snprintf(error, sizeof(error), "the daemons stopped while recording");
        gcd_log_warn("trace %s: %s; %lld steps complete on every node", t->dir, error,
                     (long long)complete);
        queue_manifest(e, complete, false, error);
        publish(e, GCD_TRACE_FAILED, complete);
    }
    reap(e, true);
    free(e->trace_asks);
    e->trace_asks = NULL;
}
