#include "coord.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "base/grow.h"
#include "layout.h"

/* A bucket step that some nodes have reported ready. */
typedef struct pending {
    char *bucket;
    int64_t step;
    int64_t first_ms;  /* when the first node reported it */
    int nready;
    bool *ready;  /* [nodes] */
    int status;   /* non-zero: fails this cycle */
    char *error;
} pending;

/* What the coordinator knows of a bucket's layout, per node. */
enum { LAYOUT_UNKNOWN = 0, LAYOUT_OK, LAYOUT_BAD, LAYOUT_GONE /* unregistered there */ };
typedef struct known {
    char *bucket;
    gcd_layout layout; /* from node `first` */
    int first;
    int *state;        /* [nodes]: LAYOUT_* */
    char **why;        /* [nodes]: message for LAYOUT_BAD */
    uint32_t uid;      /* the bucket's number in the job (take_uid; never 0) */
} known;

/* A bucket a node reported lost (a trainer left): its steps fail until it recovers. */
typedef struct lost {
    char *bucket;
    int node;
    char *why;
} lost;

/* A number restored from a checkpoint, for a bucket not announced again yet. */
typedef struct reserved {
    char *bucket;
    uint32_t uid;
} reserved;

typedef struct policy_req {
    char *spec;
    int origin;
} policy_req;

/* A gcompctl trace start/stop, queued until decided. */
typedef struct trace_req {
    bool stop;
    char *dir, *buckets;
    int64_t steps;
    int origin;
} trace_req;

/* The recording in progress, as the nodes report it. */
typedef struct trace_state {
    uint64_t id;         /* the last one started (0: none yet) */
    bool active;
    int64_t from, end;   /* end -1: until a trace stop */
    char *dir;
    int64_t *written;    /* [nodes]: steps completely written there */
    bool *done;          /* [nodes]: wrote all it will */
    char *error;         /* the first failure a node reported */
} trace_state;

struct gcd_coord {
    int nodes;
    int timeout_ms;      /* a step some nodes never report fails after this long */
    int64_t now_ms;      /* the cycle's time (gcd_coord_step) */
    lost *lost;
    size_t nlost, caplost;
    policy_req *ckpt;  /* checkpoint requests (dir, origin), one decided per cycle */
    size_t nckpt, capckpt;
    pending *pend;
    size_t npend, cappend;
    known *known;
    size_t nknown, capknown;
    policy_req *preq;
    size_t npreq, cappreq;
    uint64_t epoch;
    int64_t max_step;
    uint32_t *given;     /* every bucket number given in the job (restored ones too) */
    size_t ngiven, capgiven;
    reserved *res;
    size_t nres, capres;
    trace_req *treq;
    size_t ntreq, captreq;
    trace_state trace;
};

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return strdup(buf);
}

gcd_coord *gcd_coord_new(int nodes, int timeout_ms)
{
    gcd_coord *c = calloc(1, sizeof(*c));
    if (c) {
        c->nodes = nodes;
        c->timeout_ms = timeout_ms;
        c->max_step = -1;
        c->trace.written = calloc((size_t)nodes, sizeof(int64_t));
        c->trace.done = calloc((size_t)nodes, sizeof(bool));
        if (!c->trace.written || !c->trace.done) {
            free(c->trace.written);
            free(c->trace.done);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void pending_free(pending *p)
{
    free(p->bucket);
    free(p->ready);
    free(p->error);
}

void gcd_coord_free(gcd_coord *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->npend; i++)
        pending_free(&c->pend[i]);
    for (size_t i = 0; i < c->nknown; i++) {
        free(c->known[i].bucket);
        gcd_layout_free(&c->known[i].layout);
        for (int w = 0; w < c->nodes; w++)
            free(c->known[i].why[w]);
        free(c->known[i].state);
        free(c->known[i].why);
    }
    for (size_t i = 0; i < c->npreq; i++)
        free(c->preq[i].spec);
    for (size_t i = 0; i < c->nckpt; i++)
        free(c->ckpt[i].spec);
    for (size_t i = 0; i < c->nres; i++)
        free(c->res[i].bucket);
    free(c->res);
    free(c->given);
    for (size_t i = 0; i < c->nlost; i++) {
        free(c->lost[i].bucket);
        free(c->lost[i].why);
    }
    free(c->lost);
    for (size_t i = 0; i < c->ntreq; i++) {
        free(c->treq[i].dir);
        free(c->treq[i].buckets);
    }
    free(c->treq);
    free(c->trace.dir);
    free(c->trace.error);
    free(c->trace.written);
    free(c->trace.done);
    free(c->ckpt);
    free(c->pend);
    free(c->known);
    free(c->preq);
    free(c);
}

static pending *find_pending(gcd_coord *c, const char *bucket)
{
    for (size_t i = 0; i < c->npend; i++)
        if (strcmp(c->pend[i].bucket, bucket) == 0)
            return &c->pend[i];
    return NULL;
}

static pending *add_pending(gcd_coord *c, const char *bucket, int64_t step)
{
    pending *arr = gk_grow(c->pend, &c->cappend, c->npend + 1, sizeof(*arr));
    if (!arr)
        return NULL;
    c->pend = arr;
    pending *p = &arr[c->npend];
    memset(p, 0, sizeof(*p));
    p->bucket = strdup(bucket);
    p->ready = calloc(c->nodes, sizeof(bool));
    p->step = step;
    p->first_ms = c->now_ms;
    if (!p->bucket || !p->ready) {
        pending_free(p);
        return NULL;
    }
    c->npend++;
    return p;
}

/* Fail p with the first error given (later ones add nothing). Takes ownership of error. */
static void fail(pending *p, int status, char *error)
{
    if (p->status) {
        free(error);
        return;
    }
    p->status = status;
    p->error = error;
}

static known *find_known(gcd_coord *c, const char *bucket)
{
    for (size_t i = 0; i < c->nknown; i++)
        if (strcmp(c->known[i].bucket, bucket) == 0)
            return &c->known[i];
    return NULL;
}

static bool uid_given(const gcd_coord *c, uint32_t uid)
{
    for (size_t i = 0; i < c->ngiven; i++)
        if (c->given[i] == uid)
            return true;
    return false;
}

static int give_uid(gcd_coord *c, uint32_t uid)
{
    uint32_t *arr = gk_grow(c->given, &c->capgiven, c->ngiven + 1, sizeof(*arr));
    if (!arr)
        return GCOMP_NOMEM;
    c->given = arr;
    arr[c->ngiven++] = uid;
    return GCOMP_OK;
}

/* The number of a bucket seen for the first time: the one a checkpoint kept for it,
   else the FNV-1a hash of its name, so that its layer ids (and the random streams the
   codecs seed with them) are the same in every run of the job, whatever order the
   buckets first arrive in; a number given before (a collision: about n^2 / 2^33 for n
   buckets) moves to the next free one. Numbers are never given twice (they make layer
   ids unique), nor 0 (no number yet). */
static int take_uid(gcd_coord *c, const char *bucket, uint32_t *out)
{
    for (size_t i = 0; i < c->nres; i++)
        if (strcmp(c->res[i].bucket, bucket) == 0) {
            *out = c->res[i].uid;
            free(c->res[i].bucket);
            c->res[i] = c->res[--c->nres];
            return GCOMP_OK;
        }
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)bucket; *p; p++)
        h = (h ^ *p) * 16777619u;
    while (h == 0 || uid_given(c, h))
        h++;
    *out = h;
    return give_uid(c, h);
}

/*
 * Check node w's layout for the entry's bucket. Returns 0 if it matches what the other
 * nodes registered, else a status with *why (malloc'd) naming the bucket and difference.
 */
static int check_layout(gcd_coord *c, int w, const Gcomp__ReadyEntry *e, char **why)
{
    known *k = find_known(c, e->bucket);
    if (k && k->state[w] == LAYOUT_OK)
        return GCOMP_OK;
    if (k && k->state[w] == LAYOUT_GONE && e->n_layers == 0) {
        *why = fmt("bucket '%s': node %d reported it after unregistering it", e->bucket, w);
        return GCOMP_PROTOCOL;
    }
    if (k && k->state[w] == LAYOUT_BAD) {
        *why = strdup(k->why[w]);
        return GCOMP_MISMATCH;
    }
    if (e->n_layers == 0) {
        *why = fmt("bucket '%s': node %d reported it without its layout", e->bucket, w);
        return GCOMP_PROTOCOL;
    }
    gcd_layout l;
    char err[512];
    int rc = gcd_layout_from_proto(e->bucket, e->layers, e->n_layers, &l, err, sizeof(err));
    if (rc) {
        *why = strdup(err);
        return rc;
    }
    l.flags = e->flags;
    if (!k) {
        known *arr = gk_grow(c->known, &c->capknown, c->nknown + 1, sizeof(*arr));
        if (!arr) {
            gcd_layout_free(&l);
            return GCOMP_NOMEM;
        }
        c->known = arr;
        k = &arr[c->nknown++];
        memset(k, 0, sizeof(*k));
        k->bucket = strdup(e->bucket);
        k->layout = l;
        k->first = w;
        k->state = calloc(c->nodes, sizeof(int));
        k->why = calloc(c->nodes, sizeof(char *));
        if (!k->bucket || !k->state || !k->why)
            return GCOMP_NOMEM;
        k->state[w] = LAYOUT_OK;
        return take_uid(c, e->bucket, &k->uid);
    }
    char diff[512];
    if (gcd_layout_diff(&k->layout, &l, diff, sizeof(diff))) {
        k->state[w] = LAYOUT_BAD;
        k->why[w] = fmt("bucket '%s' differs between node %d and node %d: %s", e->bucket,
                        k->first, w, diff);
        *why = strdup(k->why[w]);
        gcd_layout_free(&l);
        return GCOMP_MISMATCH;
    }
    gcd_layout_free(&l);
    k->state[w] = LAYOUT_OK;
    return GCOMP_OK;
}

static int add_entry(gcd_coord *c, Gcomp__Decision *dec, const char *bucket, int64_t step,
                     int status, const char *error)
{
    const known *k = find_known(c, bucket);
    Gcomp__DecisionEntry **arr = realloc(dec->run, (dec->n_run + 1) * sizeof(*arr));
    if (!arr)
        return GCOMP_NOMEM;
    dec->run = arr;
    Gcomp__DecisionEntry *e = malloc(sizeof(*e));
    if (!e)
        return GCOMP_NOMEM;
    gcomp__decision_entry__init(e);
    e->bucket = strdup(bucket);
    e->step = step;
    e->status = status;
    e->error = strdup(error ? error : "");
    e->uid = k ? k->uid : 0;
    arr[dec->n_run++] = e;
    return e->bucket && e->error ? GCOMP_OK : GCOMP_NOMEM;
}

/* A node reported this bucket step ready. */
static int on_ready(gcd_coord *c, int w, const Gcomp__ReadyEntry *e, Gcomp__Decision *dec)
{
    char *why = NULL;
    int lrc = check_layout(c, w, e, &why);
    if (lrc == GCOMP_NOMEM)
        return lrc;
    pending *p = find_pending(c, e->bucket);
    if (p && p->step != e->step) {
        /* Two nodes are at different steps of one bucket: both steps fail. */
        char *msg = fmt("bucket '%s': node %d submitted step %lld while other nodes are at step %lld",
                        e->bucket, w, (long long)e->step, (long long)p->step);
        int rc = msg ? add_entry(c, dec, e->bucket, e->step, GCOMP_STEP, msg) : GCOMP_NOMEM;
        fail(p, GCOMP_STEP, msg);
        free(why);
        return rc;
    }
    if (!p && !(p = add_pending(c, e->bucket, e->step))) {
        free(why);
        return GCOMP_NOMEM;
    }
    if (lrc)
        fail(p, lrc, why);
    else
        free(why);
    if (!p->ready[w]) {
        p->ready[w] = true;
        p->nready++;
    }
    return GCOMP_OK;
}

static lost *find_lost(gcd_coord *c, const char *bucket, int w)
{
    for (size_t i = 0; i < c->nlost; i++)
        if (c->lost[i].node == w && strcmp(c->lost[i].bucket, bucket) == 0)
            return &c->lost[i];
    return NULL;
}

/* Node w holds the bucket whole again (or let go of it): its steps run again. */
static void forget_lost(gcd_coord *c, const char *bucket, int w)
{
    lost *l = find_lost(c, bucket, w);
    if (!l)
        return;
    free(l->bucket);
    free(l->why);
    *l = c->lost[--c->nlost];
}

/* A node failed a step (step < 0: the bucket is lost there: whatever step of it is
   pending, and every later one until it recovers). */
static int on_failure(gcd_coord *c, int w, const Gcomp__ReadyEntry *e, Gcomp__Decision *dec)
{
    pending *p = find_pending(c, e->bucket);
    const char *err = e->error && *e->error ? e->error : "failed";
    if (e->step < 0) {
        lost *l = find_lost(c, e->bucket, w);
        if (!l) {
            lost *arr = gk_grow(c->lost, &c->caplost, c->nlost + 1, sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            c->lost = arr;
            l = &arr[c->nlost++];
            *l = (lost){.bucket = strdup(e->bucket), .node = w};
            if (!l->bucket)
                return GCOMP_NOMEM;
        }
        free(l->why);
        if (!(l->why = fmt("node %d: %s", w, err)))
            return GCOMP_NOMEM;
    }
    if (p && (e->step < 0 || e->step == p->step)) {
        fail(p, e->status, fmt("node %d: %s", w, err));
        return GCOMP_OK;
    }
    if (e->step < 0)
        return GCOMP_OK;
    char *msg = fmt("node %d: %s", w, err);
    int rc = msg ? add_entry(c, dec, e->bucket, e->step, e->status, msg) : GCOMP_NOMEM;
    free(msg);
    return rc;
}

/* Every trainer of node w unregistered the bucket: forget w's layout (the name may come
   back with another), and forget the bucket once no node holds it. A step waiting for w
   fails when decisions are emitted (it would never come). */
static void on_unregistered(gcd_coord *c, int w, const char *bucket)
{
    known *k = find_known(c, bucket);
    if (!k)
        return;
    k->state[w] = LAYOUT_GONE;
    free(k->why[w]);
    k->why[w] = NULL;
    int held = 0;
    for (int v = 0; v < c->nodes; v++)
        held += k->state[v] == LAYOUT_OK || k->state[v] == LAYOUT_BAD;
    if (!held) {
        free(k->bucket);
        gcd_layout_free(&k->layout);
        for (int v = 0; v < c->nodes; v++)
            free(k->why[v]);
        free(k->state);
        free(k->why);
        *k = c->known[--c->nknown];
    }
}

/* The first node that no longer holds a pending step's bucket, or -1. */
static int gone_node(gcd_coord *c, const pending *p)
{
    const known *k = find_known(c, p->bucket);
    for (int w = 0; k && w < c->nodes; w++)
        if (k->state[w] == LAYOUT_GONE && !p->ready[w])
            return w;
    return -1;
}

/* The names of the buckets node w holds (for a message), into out. */
static void held_by(const gcd_coord *c, int w, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < c->nknown && n + 1 < len; i++)
        if (c->known[i].state[w] == LAYOUT_OK)
            n += (size_t)snprintf(out + n, len - n, "%s'%s'", n ? ", " : "", c->known[i].bucket);
    if (!n)
        snprintf(out, len, "none announced yet");
}

/* A pending step that cannot run: a node lost the bucket, or some nodes never reported
   it within the timeout (their trainers registered other buckets, or stopped). */
static void check_pending(gcd_coord *c, pending *p)
{
    if (p->status)
        return;
    for (int w = 0; w < c->nodes; w++) {
        const lost *l = p->ready[w] ? NULL : find_lost((gcd_coord *)c, p->bucket, w);
        if (l) {
            fail(p, GCOMP_PEER_LOST, strdup(l->why));
            return;
        }
    }
    if (c->now_ms - p->first_ms <= c->timeout_ms)
        return;
    char who[256] = "", held[512];
    size_t n = 0;
    int first = -1;
    for (int w = 0; w < c->nodes && n < sizeof(who); w++)
        if (!p->ready[w]) {
            n += (size_t)snprintf(who + n, sizeof(who) - n, "%s%d", n ? ", " : "", w);
            first = first < 0 ? w : first;
        }
    held_by(c, first, held, sizeof(held));
    fail(p, GCOMP_MISMATCH, fmt("bucket '%s' step %lld: node %s did not submit it within %d ms "
                                "(node %d holds %s)", p->bucket, (long long)p->step, who,
                                c->timeout_ms, first, held));
}

/* Queue node w's trace ask; take what it reports of the recording in progress. */
static int trace_take(gcd_coord *c, int w, const Gcomp__NodeReport *r)
{
    trace_state *t = &c->trace;
    if (r->trace_ask) {
        const Gcomp__TraceAsk *a = r->trace_ask;
        trace_req *arr = gk_grow(c->treq, &c->captreq, c->ntreq + 1, sizeof(*arr));
        if (!arr)
            return GCOMP_NOMEM;
        c->treq = arr;
        trace_req *q = &arr[c->ntreq];
        *q = (trace_req){.stop = a->stop, .dir = strdup(a->dir ? a->dir : ""),
                         .buckets = strdup(a->buckets ? a->buckets : ""), .steps = a->steps,
                         .origin = w};
        if (!q->dir || !q->buckets) {
            free(q->dir);
            free(q->buckets);
            return GCOMP_NOMEM;
        }
        c->ntreq++;
    }
    if (t->active && r->trace_id == t->id) {
        t->written[w] = r->trace_written;
        t->done[w] = r->trace_done;
        if (r->trace_error && *r->trace_error && !t->error &&
            !(t->error = fmt("node %d: %s", w, r->trace_error)))
            return GCOMP_NOMEM;
    }
    return GCOMP_OK;
}

static int64_t trace_complete(const gcd_coord *c)
{
    int64_t least = c->trace.written[0];
    for (int w = 1; w < c->nodes; w++)
        if (c->trace.written[w] < least)
            least = c->trace.written[w];
    return least;
}

uint64_t gcd_coord_trace(const gcd_coord *c, int64_t *written)
{
    for (int w = 0; w < c->nodes; w++)
        written[w] = c->trace.active ? c->trace.written[w] : 0;
    return c->trace.active ? c->trace.id : 0;
}

/* At most one trace decision per cycle: the recording finishes (every node done, or one
   failed), else the oldest ask is decided. Steps from max_step + 1 on have not been
   submitted anywhere, so every node applies a start or stop before running any of
   them: they all record the same steps. */
static int trace_decide(gcd_coord *c, Gcomp__Decision *dec)
{
    trace_state *t = &c->trace;
    bool all_done = t->active;
    for (int w = 0; all_done && w < c->nodes; w++)
        all_done = t->done[w];
    if (!t->active && !c->ntreq)
        return GCOMP_OK;
    if (t->active && !all_done && !t->error && !c->ntreq)
        return GCOMP_OK;
    Gcomp__TraceDecision *td = malloc(sizeof(*td));
    if (!td)
        return GCOMP_NOMEM;
    gcomp__trace_decision__init(td);
    dec->trace = td;
    td->id = t->id;
    if (t->active && (all_done || t->error)) {
        td->kind = GCD_TRACE_FINISH;
        td->complete = trace_complete(c);
        td->error = t->error ? t->error : strdup("");
        t->error = NULL;
        t->active = false;
        td->dir = t->dir;
        t->dir = NULL;
        return td->error && td->dir ? GCOMP_OK : GCOMP_NOMEM;
    }
    trace_req q = c->treq[0];
    memmove(c->treq, c->treq + 1, (c->ntreq - 1) * sizeof(*c->treq));
    c->ntreq--;
    td->origin = q.origin;
    int64_t next = c->max_step + 1;
    if (q.stop && !t->active) {
        td->kind = GCD_TRACE_REFUSE;
        td->error = fmt("no trace is being recorded (nothing to stop)");
    } else if (q.stop) {
        td->kind = GCD_TRACE_STOP;
        t->end = t->end >= 0 && t->end < next ? t->end : next < t->from ? t->from : next;
        td->from_step = t->from;
        td->end_step = t->end;
        td->dir = strdup(t->dir);
    } else if (t->active) {
        td->kind = GCD_TRACE_REFUSE;
        td->error = fmt("already recording into %s (from step %lld): gcompctl trace stop "
                        "first", t->dir, (long long)t->from);
    } else {
        td->kind = GCD_TRACE_START;
        td->id = ++t->id;
        t->active = true;
        t->from = next;
        t->end = q.steps > 0 ? next + q.steps : -1;
        free(t->dir);
        t->dir = strdup(q.dir);
        for (int w = 0; w < c->nodes; w++) {
            t->written[w] = 0;
            t->done[w] = false;
        }
        td->dir = strdup(q.dir);
        td->buckets = strdup(q.buckets);
        td->from_step = t->from;
        td->end_step = t->end;
    }
    free(q.dir);
    free(q.buckets);
    bool nomem = (td->kind == GCD_TRACE_REFUSE && !td->error) ||
                 (td->kind != GCD_TRACE_REFUSE && !td->dir) ||
                 (td->kind == GCD_TRACE_START && (!td->buckets || !t->dir));
    return nomem ? GCOMP_NOMEM : GCOMP_OK;
}

int gcd_coord_step(gcd_coord *c, Gcomp__NodeReport *const *reports, int64_t now_ms,
                   Gcomp__Decision *dec)
{
    int rc = GCOMP_OK;
    c->now_ms = now_ms;
    for (int w = 0; w < c->nodes; w++)
        for (size_t i = 0; i < reports[w]->n_recovered; i++)
            forget_lost(c, reports[w]->recovered[i], w);
    /* Statistics every node holds: the least of what they report. */
    dec->observe_through = reports[0]->observed;
    for (int w = 1; w < c->nodes; w++)
        if (reports[w]->observed < dec->observe_through)
            dec->observe_through = reports[w]->observed;
    for (int w = 0; w < c->nodes; w++)
        for (size_t i = 0; i < reports[w]->n_unregistered; i++) {
            on_unregistered(c, w, reports[w]->unregistered[i]);
            forget_lost(c, reports[w]->unregistered[i], w);
        }
    for (int w = 0; w < c->nodes && !rc; w++) {
        const Gcomp__NodeReport *r = reports[w];
        dec->shutdown |= r->shutdown;
        if (r->max_step > c->max_step)
            c->max_step = r->max_step;
        if (r->policy_spec && *r->policy_spec) {
            policy_req *arr = gk_grow(c->preq, &c->cappreq, c->npreq + 1, sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            c->preq = arr;
            arr[c->npreq].spec = strdup(r->policy_spec);
            arr[c->npreq++].origin = w;
        }
        if (r->checkpoint_dir && *r->checkpoint_dir) {
            policy_req *arr = gk_grow(c->ckpt, &c->capckpt, c->nckpt + 1, sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            c->ckpt = arr;
            arr[c->nckpt].spec = strdup(r->checkpoint_dir);
            arr[c->nckpt++].origin = w;
        }
        for (size_t i = 0; i < r->n_ready && !rc; i++)
            if (r->ready[i]->status == 0)
                rc = on_ready(c, w, r->ready[i], dec);
        if (!rc)
            rc = trace_take(c, w, r);
    }
    /* Failures after all ready entries, so a failure reported in the same cycle as
       another node's readiness still fails that step. */
    for (int w = 0; w < c->nodes && !rc; w++)
        for (size_t i = 0; i < reports[w]->n_ready && !rc; i++)
            if (reports[w]->ready[i]->status != 0)
                rc = on_failure(c, w, reports[w]->ready[i], dec);
    if (rc)
        return rc;

    /* Emit what is decided, in the order the steps were first reported. */
    size_t keep = 0;
    for (size_t i = 0; i < c->npend; i++) {
        pending *p = &c->pend[i];
        int gone = gone_node(c, p);
        if (gone >= 0)
            fail(p, GCOMP_PEER_LOST, fmt("bucket '%s' was unregistered on node %d", p->bucket, gone));
        check_pending(c, p);
        if (p->status || p->nready == c->nodes) {
            rc = add_entry(c, dec, p->bucket, p->step, p->status, p->error);
            pending_free(p);
            if (rc)
                return rc;
        } else {
            c->pend[keep++] = *p;
        }
    }
    c->npend = keep;

    if (c->npreq) {
        policy_req q = c->preq[0];
        memmove(c->preq, c->preq + 1, (c->npreq - 1) * sizeof(*c->preq));
        c->npreq--;
        dec->policy_epoch = ++c->epoch;
        dec->policy_spec = q.spec;
        dec->policy_origin = q.origin;
        dec->policy_step = c->max_step + 1;
    } else {
        dec->policy_epoch = c->epoch;
    }
    if (c->nckpt) {
        dec->checkpoint_dir = c->ckpt[0].spec;
        dec->checkpoint_origin = c->ckpt[0].origin;
        memmove(c->ckpt, c->ckpt + 1, (c->nckpt - 1) * sizeof(*c->ckpt));
        c->nckpt--;
    }
    return trace_decide(c, dec);
}

void gcd_coord_decision_clear(Gcomp__Decision *dec)
{
    for (size_t i = 0; i < dec->n_run; i++) {
        free(dec->run[i]->bucket);
        free(dec->run[i]->error);
        free(dec->run[i]);
    }
    free(dec->run);
    if (dec->policy_spec != protobuf_c_empty_string)
        free(dec->policy_spec);
    if (dec->checkpoint_dir != protobuf_c_empty_string)
        free(dec->checkpoint_dir);
    if (dec->trace) {
        Gcomp__TraceDecision *td = dec->trace;
        if (td->dir != protobuf_c_empty_string)
            free(td->dir);
        if (td->buckets != protobuf_c_empty_string)
            free(td->buckets);
        if (td->error != protobuf_c_empty_string)
            free(td->error);
        free(td);
    }
    gcomp__decision__init(dec);
}

/* 'COOR' version 2: the numbers given, then the buckets that hold one (name, number).
   Version 1 (numbers in announcement order, below a next number) is refused. */
enum { COORD_CKPT_VERSION = 2 };

int gcd_coord_save(const gcd_coord *c, gk_writer *w)
{
    gk_put_tag(w, "COOR", COORD_CKPT_VERSION);
    gk_put_u64(w, c->ngiven);
    for (size_t i = 0; i < c->ngiven; i++)
        gk_put_u32(w, c->given[i]);
    gk_put_u64(w, c->nknown + c->nres);
    for (size_t i = 0; i < c->nknown; i++) {
        gk_put_str(w, c->known[i].bucket);
        gk_put_u32(w, c->known[i].uid);
    }
    for (size_t i = 0; i < c->nres; i++) {
        gk_put_str(w, c->res[i].bucket);
        gk_put_u32(w, c->res[i].uid);
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

int gcd_coord_load(gcd_coord *c, gk_reader *r)
{
    uint32_t version;
    uint64_t n;
    if (!gk_get_tag(r, "COOR", COORD_CKPT_VERSION, &version))
        return GCOMP_PROTOCOL;
    if (version != COORD_CKPT_VERSION) {
        gk_reader_fail(r, "coordinator record version %u (bucket numbers in announcement "
                       "order) is not read by this gcomp, which needs version %d: start "
                       "the job without --restore", version, COORD_CKPT_VERSION);
        return GCOMP_PROTOCOL;
    }
    if (!gk_get_u64(r, &n))
        return GCOMP_PROTOCOL;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t uid;
        if (!gk_get_u32(r, &uid))
            return GCOMP_PROTOCOL;
        if (uid == 0 || uid_given(c, uid)) {
            gk_reader_fail(r, "coordinator record gives bucket number %u %s", uid,
                           uid ? "twice" : "(0 is no number)");
            return GCOMP_PROTOCOL;
        }
        if (give_uid(c, uid))
            return GCOMP_NOMEM;
    }
    if (!gk_get_u64(r, &n))
        return GCOMP_PROTOCOL;
    if (n > c->ngiven) {
        gk_reader_fail(r, "coordinator record of %llu buckets but %zu numbers given",
                       (unsigned long long)n, c->ngiven);
        return GCOMP_PROTOCOL;
    }
    for (uint64_t i = 0; i < n; i++) {
        char name[GCOMP_MAX_NAME + 1];
        uint32_t uid;
        if (!gk_get_str(r, name, sizeof(name)) || !gk_get_u32(r, &uid))
            return GCOMP_PROTOCOL;
        if (!uid_given(c, uid)) {
            gk_reader_fail(r, "bucket '%s' numbered %u, a number the record does not give",
                           name, uid);
            return GCOMP_PROTOCOL;
        }
        for (size_t j = 0; j < c->nres; j++)
            if (c->res[j].uid == uid || strcmp(c->res[j].bucket, name) == 0) {
                gk_reader_fail(r, "coordinator record numbers bucket '%s' %u and bucket "
                               "'%s' %u", c->res[j].bucket, c->res[j].uid, name, uid);
                return GCOMP_PROTOCOL;
            }
        reserved *arr = gk_grow(c->res, &c->capres, c->nres + 1, sizeof(*arr));
        if (!arr)
            return GCOMP_NOMEM;
        c->res = arr;
        if (!(arr[c->nres].bucket = strdup(name)))
            return GCOMP_NOMEM;
        arr[c->nres++].uid = uid;
    }
    return GCOMP_OK;
}
