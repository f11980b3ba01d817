#include "coord.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "layout.h"

/* A bucket step that some nodes have reported ready. */
typedef struct pending {
    char *bucket;
    int64_t step;
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
} known;

typedef struct policy_req {
    char *spec;
    int origin;
} policy_req;

struct gcd_coord {
    int nodes;
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
};

static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(arr, ncap * elem);
    if (p)
        *cap = ncap;
    return p;
}

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

gcd_coord *gcd_coord_new(int nodes)
{
    gcd_coord *c = calloc(1, sizeof(*c));
    if (c) {
        c->nodes = nodes;
        c->max_step = -1;
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
    pending *arr = grow(c->pend, &c->cappend, c->npend + 1, sizeof(*arr));
    if (!arr)
        return NULL;
    c->pend = arr;
    pending *p = &arr[c->npend];
    memset(p, 0, sizeof(*p));
    p->bucket = strdup(bucket);
    p->ready = calloc(c->nodes, sizeof(bool));
    p->step = step;
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
        known *arr = grow(c->known, &c->capknown, c->nknown + 1, sizeof(*arr));
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
        return GCOMP_OK;
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

static int add_entry(Gcomp__Decision *dec, const char *bucket, int64_t step, int status,
                     const char *error)
{
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
        int rc = msg ? add_entry(dec, e->bucket, e->step, GCOMP_STEP, msg) : GCOMP_NOMEM;
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

/* A node failed a step (step < 0: whatever step of the bucket is pending). */
static int on_failure(gcd_coord *c, int w, const Gcomp__ReadyEntry *e, Gcomp__Decision *dec)
{
    pending *p = find_pending(c, e->bucket);
    const char *err = e->error && *e->error ? e->error : "failed";
    if (p && (e->step < 0 || e->step == p->step)) {
        fail(p, e->status, fmt("node %d: %s", w, err));
        return GCOMP_OK;
    }
    if (e->step < 0)
        return GCOMP_OK;
    char *msg = fmt("node %d: %s", w, err);
    int rc = msg ? add_entry(dec, e->bucket, e->step, e->status, msg) : GCOMP_NOMEM;
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

int gcd_coord_step(gcd_coord *c, Gcomp__NodeReport *const *reports, Gcomp__Decision *dec)
{
    int rc = GCOMP_OK;
    for (int w = 0; w < c->nodes; w++)
        for (size_t i = 0; i < reports[w]->n_unregistered; i++)
            on_unregistered(c, w, reports[w]->unregistered[i]);
    for (int w = 0; w < c->nodes && !rc; w++) {
        const Gcomp__NodeReport *r = reports[w];
        dec->shutdown |= r->shutdown;
        if (r->max_step > c->max_step)
            c->max_step = r->max_step;
        if (r->policy_spec && *r->policy_spec) {
            policy_req *arr = grow(c->preq, &c->cappreq, c->npreq + 1, sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            c->preq = arr;
            arr[c->npreq].spec = strdup(r->policy_spec);
            arr[c->npreq++].origin = w;
        }
        if (r->checkpoint_dir && *r->checkpoint_dir) {
            policy_req *arr = grow(c->ckpt, &c->capckpt, c->nckpt + 1, sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            c->ckpt = arr;
            arr[c->nckpt].spec = strdup(r->checkpoint_dir);
            arr[c->nckpt++].origin = w;
        }
        for (size_t i = 0; i < r->n_ready && !rc; i++)
            if (r->ready[i]->status == 0)
                rc = on_ready(c, w, r->ready[i], dec);
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
        if (p->status || p->nready == c->nodes) {
            rc = add_entry(dec, p->bucket, p->step, p->status, p->error);
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
    return GCOMP_OK;
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
    gcomp__decision__init(dec);
}
