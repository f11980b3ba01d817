/*
 * pipeline.c: the bucket steps in flight. Each decided bucket step is a small state
 * machine, advanced a little on every turn of the engine's loop:
 *
 *   queued on its lane -> prepare (x = (ef ? x : 0) + W g per compressed layer, g
 *   the node's share in the local sum) ->
 *   collect (the policy's statistics) -> exchanges -> statistics exchange -> result
 *
 * The exchanges of a step, in a fixed order (the plan): the dense layers (one
 * allreduce of the packed dense elements; when every layer is dense, straight from the
 * bucket's local sum into its result region, nothing packed or copied), then for phase p = 0, 1, ... every group of compressed layers
 * (layers of one codec with the same number of phases, each with its own spec) that
 * has a phase p. An exchange encodes its layers on the workers, runs one collective
 * (two for allgathers of variable size: sizes, then payloads), and decodes on the
 * workers. The collectives of a step start in plan order; phase p+1 of a group waits
 * for its phase p, nothing else waits, so one group's encode overlaps another's
 * collective.
 *
 * Lanes: step k of the negotiated order runs on lane k % lanes, after the lane's
 * previous step. Every node numbers the steps alike and starts each step's collectives
 * in plan order, so each lane's collectives start in the same order everywhere (the
 * data plane's contract), and steps of different lanes overlap: one bucket's local
 * sum and encode run while another's collective is on the wire.
 *
 * Every collective has a deadline (--timeout-ms): a node that stops answering in the
 * middle of an exchange is named like one that stops during the negotiation, and the
 * job is taken down.
 *
 * Allgather payloads: node w's part is, for variable sizes, a table of n uint32 segment
 * sizes (padded to 8 bytes) and the segments, each starting 8-byte aligned (the
 * padding travels and counts in the bucket's payload); for fixed sizes (every layer's
 * codec says fixed_bytes) just the segments, and no sizes are exchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "engine.h"
#include "log.h"

#define ALIGN8(x) (((x) + 7) & ~(size_t)7)

typedef enum xkind { X_DENSE, X_PHASE } xkind;
typedef enum xstate { XS_WAIT, XS_ENCODE, XS_READY, XS_SIZES, XS_COLL, XS_DECODE, XS_DONE } xstate;

struct eng_step;

/* One exchange of a step. */
typedef struct eng_xchg {
    struct eng_step *s;
    xkind kind;
    xstate st;
    int phase;            /* X_PHASE */
    int last_phase;       /* X_PHASE: the group's last phase */
    long prev;            /* X_PHASE: index of the group's previous phase, or -1 */
    gk_coll coll;
    bool gather, fixed;
    bool direct;          /* every layer dense: local sum -> result region */
    size_t n;             /* layers */
    size_t *idx;          /* [n] layer indices in the bucket */
    size_t *slot;         /* [n] byte offset of each layer's segment in send */
    size_t *max;          /* [n] gk_payload_bytes at this step */
    size_t *wrote;        /* [n] bytes each encode wrote */
    size_t head;          /* variable allgather: bytes of the size table */
    size_t region;        /* bytes of the send region (slots); an allreduce's result
                             lands in a recv region of the same size */
    size_t send_len;      /* bytes this node sends */
    gcd_buf send, recv;
    bool own_recv;        /* recv was allocated for this exchange (variable allgather) */
    uint64_t size_out;    /* variable allgather: this node's send_len, and */
    uint64_t *sizes;      /* [W] every node's */
    size_t *counts, *displs; /* [W] */
    const void **rp;      /* [n * W] decode inputs, layer-major */
    size_t *rb;           /* [n * W] */
    int ncoll, issued;    /* collectives to start (1 or 2), started so far */
    gcd_dreq *req;
    double t_issue;
    gcd_batch batch;
    double t_enc, t_coll, t_dec; /* seconds spent in each stage */
} eng_xchg;

typedef enum sstate { S_QUEUED, S_PREP, S_COLLECT, S_XCHG, S_STATS, S_DONE } sstate;

typedef struct eng_step {
    engine *e;
    eng_bucket *eb;
    gcd_bucket *b;
    int64_t step;
    uint64_t seq;
    int lane;
    sstate st;
    gp_instance *p;
    bool observing;
    size_t ncomp;
    size_t *comp;         /* [ncomp] indices of the compressed layers */
    gcd_batch prep;
    eng_collect col;
    gcd_batch colb;
    eng_xchg *x;
    size_t nx, issue_at;  /* exchanges; the first not fully started */
    size_t payload;       /* bytes this node sent */
    double *vec;          /* statistics (observing) */
    double maxv[ENG_STATS_MAX];
    gcd_ctl_req *sreq[2];
    double t_decided, t_start, t_prep_s, t_col_s, t_stats_issue;
    double t_result;      /* the result region was complete (the last decode) */
    struct eng_step *next;
} eng_step;

int eng_pipeline_init(engine *e)
{
    e->lane_head = calloc((size_t)e->lanes, sizeof(*e->lane_head));
    e->lane_tail = calloc((size_t)e->lanes, sizeof(*e->lane_tail));
    e->lane_buf = calloc((size_t)e->lanes, sizeof(*e->lane_buf));
    return e->lane_head && e->lane_tail && e->lane_buf ? GCOMP_OK : GCOMP_NOMEM;
}

static void xchg_free(engine *e, eng_xchg *x)
{
    if (x->own_recv)
        gcd_data_release(&e->d->data, &x->recv);
    free(x->idx);
    free(x->slot);
    free(x->max);
    free(x->wrote);
    free(x->sizes);
    free(x->counts);
    free(x->displs);
    free(x->rp);
    free(x->rb);
}

static void step_free(eng_step *s)
{
    for (size_t i = 0; i < s->nx; i++)
        xchg_free(s->e, &s->x[i]);
    free(s->x);
    free(s->comp);
    free(s->vec);
    free(s);
}

void eng_pipeline_free(engine *e)
{
    for (int l = 0; e->lane_head && l < e->lanes; l++)
        while (e->lane_head[l]) {
            eng_step *s = e->lane_head[l];
            e->lane_head[l] = s->next;
            step_free(s);
        }
    for (int l = 0; e->lane_buf && l < e->lanes; l++)
        gcd_data_release(&e->d->data, &e->lane_buf[l]);
    free(e->lane_head);
    free(e->lane_tail);
    free(e->lane_buf);
}

bool eng_pipeline_uses(const engine *e, const gp_instance *p)
{
    for (int l = 0; l < e->lanes; l++)
        for (const eng_step *s = e->lane_head[l]; s; s = s->next)
            if (s->p == p)
                return true;
    return false;
}

bool eng_pipeline_waiting_on_network(const engine *e)
{
    for (int l = 0; l < e->lanes; l++) {
        const eng_step *s = e->lane_head[l];
        if (!s)
            continue;
        if (s->st == S_STATS)
            return true;
        /* (the dense exchange runs from the start, during preparation and collect) */
        for (size_t i = 0; i < s->nx; i++)
            if (s->x[i].st == XS_COLL || s->x[i].st == XS_SIZES)
                return true;
    }
    return false;
}

/* ---- the plan ---- */

static size_t coll_elem(gk_coll c)
{
    return c == GK_COLL_ALLREDUCE_F32 ? 4 : c == GK_COLL_ALLGATHER ? 1 : 2;
}

static int xchg_layers(eng_xchg *x, size_t n, int W)
{
    x->n = n;
    x->idx = calloc(n ? n : 1, sizeof(size_t));
    x->slot = calloc(n ? n : 1, sizeof(size_t));
    x->max = calloc(n ? n : 1, sizeof(size_t));
    x->wrote = calloc(n ? n : 1, sizeof(size_t));
    x->rp = calloc(n * (size_t)W + 1, sizeof(void *));
    x->rb = calloc(n * (size_t)W + 1, sizeof(size_t));
    return x->idx && x->slot && x->max && x->wrote && x->rp && x->rb ? GCOMP_OK : GCOMP_NOMEM;
}

/* Lay out an exchange's send region from its layers' sizes; returns the bytes its
   part of the lane buffer needs (send region and, for fixed allgathers, W of them to
   receive). */
static size_t xchg_size(eng_xchg *x, int W)
{
    size_t off = x->gather && !x->fixed ? ALIGN8(x->n * sizeof(uint32_t)) : 0;
    x->head = off;
    for (size_t j = 0; j < x->n; j++) {
        x->slot[j] = off;
        off += x->gather ? ALIGN8(x->max[j]) : x->max[j];
    }
    x->region = off;
    x->ncoll = x->gather && !x->fixed ? 2 : 1;
    size_t recv = !x->gather ? ALIGN8(off) : x->fixed ? ALIGN8(off) * (size_t)W : 0;
    return ALIGN8(off) + recv;
}

/* The step's exchanges (see the file comment) and their buffers. */
static int plan(engine *e, eng_step *s)
{
    gcd_bucket *b = s->b;
    eng_bucket *eb = s->eb;
    int W = e->d->nodes;
    size_t nl = b->layout.n, ndense = 0, ngroups = 0, nx = 0;
    int maxp = 0;
    /* Groups: compressed layers of one codec and phase count, in layer order. */
    int *group = malloc(nl * sizeof(int));
    const gk_spec **gspec = malloc(nl * sizeof(*gspec));
    int *gphases = malloc(nl * sizeof(int));
    if (!group || !gspec || !gphases) {
        free(group);
        free(gspec);
        free(gphases);
        return GCOMP_NOMEM;
    }
    for (size_t i = 0; i < nl; i++) {
        const eng_layer *l = &eb->layers[i];
        group[i] = -1;
        if (!l->compressed) {
            ndense++;
            continue;
        }
        s->ncomp++;
        int np = gk_spec_nphases(&l->spec);
        size_t g = 0;
        while (g < ngroups && !(gspec[g]->codec == l->spec.codec && gphases[g] == np))
            g++;
        if (g == ngroups) {
            gspec[g] = &l->spec;
            gphases[g] = np;
            ngroups++;
            nx += (size_t)np;
            maxp = np > maxp ? np : maxp;
        }
        group[i] = (int)g;
    }
    nx += ndense > 0;
    s->x = calloc(nx ? nx : 1, sizeof(eng_xchg));
    s->comp = calloc(s->ncomp ? s->ncomp : 1, sizeof(size_t));
    int rc = s->x && s->comp ? GCOMP_OK : GCOMP_NOMEM;
    for (size_t i = 0, j = 0; !rc && i < nl; i++) {
        if (group[i] >= 0)
            s->comp[j++] = i;
        else
            eb->layers[i].payload = b->layout.layers[i].numel * sizeof(float);
    }
    size_t need = 0, k = 0;
    if (!rc && ndense) {
        eng_xchg *x = &s->x[k++];
        x->s = s;
        x->kind = X_DENSE;
        x->coll = GK_COLL_ALLREDUCE_F32;
        x->direct = s->ncomp == 0;
        x->prev = -1;
        rc = xchg_layers(x, ndense, W);
        for (size_t i = 0, j = 0; !rc && i < nl; i++)
            if (group[i] < 0) {
                x->idx[j] = i;
                x->max[j++] = b->layout.layers[i].numel * sizeof(float);
            }
        if (!rc && !x->direct)
            need += xchg_size(x, W);
        else if (!rc)
            xchg_size(x, W);
    }
    long *last = calloc(ngroups ? ngroups : 1, sizeof(long));
    if (!last)
        rc = GCOMP_NOMEM;
    for (size_t g = 0; g < ngroups; g++)
        last[g] = -1;
    for (int p = 0; !rc && p < maxp; p++)
        for (size_t g = 0; !rc && g < ngroups; g++) {
            if (p >= gphases[g])
                continue;
            eng_xchg *x = &s->x[k];
            x->s = s;
            x->kind = X_PHASE;
            x->phase = p;
            x->last_phase = gphases[g] - 1;
            x->prev = last[g];
            last[g] = (long)k++;
            x->coll = gk_spec_coll(gspec[g], p);
            x->gather = x->coll == GK_COLL_ALLGATHER;
            size_t n = 0;
            for (size_t i = 0; i < nl; i++)
                n += group[i] == (int)g;
            if ((rc = xchg_layers(x, n, W)))
                break;
            x->fixed = true;
            for (size_t i = 0, j = 0; i < nl; i++)
                if (group[i] == (int)g) {
                    const eng_layer *l = &eb->layers[i];
                    x->idx[j] = i;
                    x->max[j++] = gk_payload_bytes(&l->spec, &l->geom, p, (uint64_t)s->step);
                    x->fixed &= gk_payload_fixed(&l->spec, p);
                }
            need += xchg_size(x, W);
        }
    s->nx = k;
    free(last);
    free(group);
    free(gspec);
    free(gphases);
    if (rc)
        return rc;
    /* The lane's buffer, carved in plan order. */
    gcd_buf *lb = &e->lane_buf[s->lane];
    if (lb->bytes < need) {
        gcd_data_release(&e->d->data, lb);
        if ((rc = gcd_data_alloc(&e->d->data, GK_MEM_HOST, need + need / 4, lb)))
            return rc;
    }
    size_t at = 0;
    for (size_t i = 0; i < s->nx; i++) {
        eng_xchg *x = &s->x[i];
        if (x->direct) {
            x->send = eb->local;
            x->recv = (gcd_buf){.ptr = b->res, .bytes = b->layout.numel * sizeof(float),
                                .mem = GK_MEM_HOST};
            x->send_len = x->recv.bytes;
            s->payload += x->send_len;
            continue;
        }
        x->send = (gcd_buf){.ptr = (char *)lb->ptr + at, .bytes = x->region, .mem = lb->mem,
                            .reg = lb->reg};
        at += ALIGN8(x->region);
        if (!x->gather) {
            x->recv = (gcd_buf){.ptr = (char *)lb->ptr + at, .bytes = x->region, .mem = lb->mem,
                                .reg = lb->reg};
            at += ALIGN8(x->region);
        } else if (x->fixed) {
            x->recv = (gcd_buf){.ptr = (char *)lb->ptr + at, .bytes = x->region * (size_t)W,
                                .mem = lb->mem, .reg = lb->reg};
            at += ALIGN8(x->region) * (size_t)W;
        }
        if (x->gather && !(x->sizes = calloc((size_t)W, sizeof(uint64_t))))
            return GCOMP_NOMEM;
        if (x->gather && (!(x->counts = calloc((size_t)W, sizeof(size_t))) ||
                          !(x->displs = calloc((size_t)W, sizeof(size_t)))))
            return GCOMP_NOMEM;
    }
    return GCOMP_OK;
}

/* ---- jobs ---- */

/* Compressed layers' codec input: x = (ef ? x : 0) + W * (the node's share in res),
   i.e. the node's gradient (its trainers' mean) plus the residual. */
static int prep_job(void *arg, size_t j, const gk_exec *exec)
{
    (void)exec;
    eng_step *s = arg;
    size_t i = s->comp[j];
    eng_layer *l = &s->eb->layers[i];
    float W = (float)s->e->d->nodes;
    const float *g = (const float *)s->eb->local.ptr + s->b->layout.layers[i].offset;
    if (l->spec.ef)
        for (size_t k = 0; k < l->geom.numel; k++)
            l->x[k] += W * g[k];
    else
        for (size_t k = 0; k < l->geom.numel; k++)
            l->x[k] = W * g[k];
    l->payload = 0;
    return GCOMP_OK;
}

static gk_call layer_call(const eng_xchg *x, size_t j, const gk_exec *exec)
{
    const eng_step *s = x->s;
    const eng_layer *l = &s->eb->layers[x->idx[j]];
    return (gk_call){.spec = &l->spec, .layer = &l->geom, .state = l->state, .phase = x->phase,
                     .nodes = s->e->d->nodes, .node = s->e->d->node,
                     .step = (uint64_t)s->step, .seed = s->e->d->cfg.seed, .exec = exec};
}

static int encode_job(void *arg, size_t j, const gk_exec *exec)
{
    eng_xchg *x = arg;
    eng_step *s = x->s;
    char *send = x->send.ptr;
    eng_layer *l = &s->eb->layers[x->idx[j]];
    const gcd_layer *gl = &s->b->layout.layers[x->idx[j]];
    if (x->kind == X_DENSE) {
        memcpy(send + x->slot[j], (const float *)s->eb->local.ptr + gl->offset, x->max[j]);
        x->wrote[j] = x->max[j];
        l->payload = x->max[j];
        return GCOMP_OK;
    }
    gk_call call = layer_call(x, j, exec);
    const gk_codec_impl *impl = gk_codec_impl_of(l->spec.codec, exec->backend);
    size_t bytes = 0;
    int rc = impl->encode(&call, l->x, send + x->slot[j], &bytes);
    if (rc)
        return rc;
    bool exact = !x->gather || x->fixed;
    if (bytes > x->max[j] || (exact && bytes != x->max[j])) {
        gcd_log_error("codec %s wrote %zu bytes for layer %s, %s %zu", l->spec.codec->name,
                      bytes, gl->name, exact ? "exactly" : "at most", x->max[j]);
        return GCOMP_INTERNAL;
    }
    if (x->gather)
        memset(send + x->slot[j] + bytes, 0, ALIGN8(bytes) - bytes);
    x->wrote[j] = bytes;
    l->payload += bytes; /* the layer's own bytes; padding counts for the bucket */
    return GCOMP_OK;
}

static int decode_job(void *arg, size_t j, const gk_exec *exec)
{
    eng_xchg *x = arg;
    eng_step *s = x->s;
    eng_layer *l = &s->eb->layers[x->idx[j]];
    const gcd_layer *gl = &s->b->layout.layers[x->idx[j]];
    float *out = s->b->res + gl->offset;
    if (x->kind == X_DENSE) {
        memcpy(out, (char *)x->recv.ptr + x->slot[j], x->max[j]);
        return GCOMP_OK;
    }
    int W = s->e->d->nodes;
    gk_call call = layer_call(x, j, exec);
    const gk_codec_impl *impl = gk_codec_impl_of(l->spec.codec, exec->backend);
    int rc = x->gather ? impl->decode(&call, l->x, x->rp + j * (size_t)W, x->rb + j * (size_t)W, W, out)
                       : impl->decode(&call, l->x, x->rp + j, x->rb + j, 1, out);
    if (!rc && x->phase == x->last_phase && !l->spec.ef)
        memset(l->x, 0, l->geom.numel * sizeof(float));
    return rc;
}

/* ---- the timeline (--timeline; timeline.h) ---- */

static const char *const coll_names[] = {
    [GK_COLL_ALLREDUCE_F32] = "allreduce_f32", [GK_COLL_ALLREDUCE_F16] = "allreduce_f16",
    [GK_COLL_ALLREDUCE_BF16] = "allreduce_bf16", [GK_COLL_ALLGATHER] = "allgather",
};

/* An exchange's codec: its layers share one (the dense exchange's is none). */
static const char *xchg_codec(const eng_xchg *x)
{
    return x->kind == X_DENSE ? "none" : x->s->eb->layers[x->idx[0]].spec.codec->name;
}

/* One stage of exchange i (encode, collective, decode) on its track. */
static void tl_xchg(eng_step *s, size_t i, const char *name, double t0, double t1,
                    const char *coll, size_t bytes)
{
    gcd_timeline *tl = s->e->d->timeline;
    const eng_xchg *x = &s->x[i];
    gcd_timeline_span(tl, gcd_timeline_xchg(tl, s->lane, i), name, t0, t1, s->b->name, s->step,
                      ",\"codec\":\"%s\",\"phase\":%d,\"layers\":%zu,\"collective\":\"%s\","
                      "\"bytes\":%zu", xchg_codec(x), x->kind == X_DENSE ? -1 : x->phase, x->n,
                      coll, bytes);
}

/* The step starts on its lane: what came before it on this node, on the bucket's
   track: the trainers' submissions (first to last), the local sum, and the
   negotiation with the wait for the lane. */
static void tl_started(eng_step *s)
{
    gcd_timeline *tl = s->e->d->timeline;
    const eng_bucket *eb = s->eb;
    int tid = gcd_timeline_bucket(tl, s->b->id, s->b->name);
    size_t bytes = s->b->layout.numel * sizeof(float);
    gcd_timeline_span(tl, tid, "wait", eb->t_first_submit, eb->t_ready, s->b->name, s->step,
                      ",\"trainers\":%d", s->b->trainers);
    gcd_timeline_span(tl, tid, "sum", eb->sum.t_start, eb->sum.t_end, s->b->name, s->step,
                      ",\"trainers\":%d,\"bytes\":%zu", s->b->trainers, bytes);
    gcd_timeline_span(tl, tid, "negotiate", eb->sum.t_end, s->t_start, s->b->name, s->step,
                      ",\"lane\":%d,\"seq\":%llu", s->lane, (unsigned long long)s->seq);
}

/* The result goes to the trainers now (the loop thread sends it): from the moment the
   result region was complete, on the bucket's track; the step is over, so flush. */
static void tl_result(eng_step *s)
{
    gcd_timeline *tl = s->e->d->timeline;
    gcd_timeline_span(tl, gcd_timeline_bucket(tl, s->b->id, s->b->name), "result", s->t_result,
                      gk_now_s(), s->b->name, s->step, ",\"observed\":false");
    gcd_timeline_flush(tl);
}

/* ---- advancing a step ---- */

static int fail_step(eng_step *s, int rc, const char *what)
{
    char why[700];
    if (rc == GCOMP_IO) {
        /* The transport broke: likely a peer went away. */
        snprintf(why, sizeof(why), "bucket '%s' step %lld: the %s", s->b->name,
                 (long long)s->step, what);
        return eng_fatal_transport(s->e, rc, why);
    }
    snprintf(why, sizeof(why), "bucket '%s' step %lld: %s failed on node %d: %s", s->b->name,
             (long long)s->step, what, s->e->d->node, gcomp_strerror(rc));
    return eng_fatal(s->e, rc, why);
}

/* A collective ran past the deadline: find who went silent and take the job down. */
static int stalled(eng_step *s, const char *what)
{
    engine *e = s->e;
    int node = gcd_silent_node(e->d, e->d->cfg.timeout_ms < 2000 ? e->d->cfg.timeout_ms : 2000);
    char why[700];
    if (node >= 0)
        snprintf(why, sizeof(why), "node %d stopped answering for %d ms during the %s of bucket "
                 "'%s' step %lld: job aborted", node, e->d->cfg.timeout_ms, what, s->b->name,
                 (long long)s->step);
    else if (node == -2)
        snprintf(why, sizeof(why), "a node stopped answering for %d ms during the %s of bucket "
                 "'%s' step %lld (which one is unknown: liveness pings do not get through): "
                 "job aborted", e->d->cfg.timeout_ms, what, s->b->name, (long long)s->step);
    else
        snprintf(why, sizeof(why), "the %s of bucket '%s' step %lld did not finish in %d ms "
                 "(every node answers): job aborted", what, s->b->name, (long long)s->step,
                 e->d->cfg.timeout_ms);
    return eng_fatal(e, GCOMP_STALL, why);
}

static bool overdue(const engine *e, double t0)
{
    return (gk_now_s() - t0) * 1e3 > e->d->cfg.timeout_ms;
}

/* Variable allgather: write the size table and pack the segments (8-byte aligned). */
static void compact(eng_xchg *x)
{
    char *send = x->send.ptr;
    size_t at = x->head;
    for (size_t j = 0; j < x->n; j++) {
        uint32_t sz = (uint32_t)x->wrote[j];
        memcpy(send + j * sizeof(uint32_t), &sz, sizeof(sz));
        if (at != x->slot[j])
            memmove(send + at, send + x->slot[j], ALIGN8(x->wrote[j]));
        at += ALIGN8(x->wrote[j]);
    }
    memset(send + x->n * sizeof(uint32_t), 0, x->head - x->n * sizeof(uint32_t));
    x->send_len = at;
}

/* Find every layer's segment in every node's part (variable allgather); a malformed
   part is a protocol error (it came from another node). */
static int locate(eng_xchg *x, int W)
{
    const char *recv = x->recv.ptr;
    for (int w = 0; w < W; w++) {
        size_t cursor = x->displs[w] + x->head, end = x->displs[w] + x->counts[w];
        if (x->counts[w] < x->head)
            return GCOMP_PROTOCOL;
        for (size_t j = 0; j < x->n; j++) {
            uint32_t sz;
            memcpy(&sz, recv + x->displs[w] + j * sizeof(uint32_t), sizeof(sz));
            if (sz > x->max[j] || cursor + ALIGN8(sz) > end)
                return GCOMP_PROTOCOL;
            x->rp[j * (size_t)W + (size_t)w] = recv + cursor;
            x->rb[j * (size_t)W + (size_t)w] = sz;
            cursor += ALIGN8(sz);
        }
    }
    return GCOMP_OK;
}

/* Start the exchange's next collective. */
static int issue(engine *e, eng_step *s, eng_xchg *x)
{
    gcd_data *dp = &e->d->data;
    int W = e->d->nodes, rc;
    x->t_issue = gk_now_s();
    if (!x->gather) {
        rc = dp->ops->allreduce(dp->priv, s->lane, x->coll, &x->send, &x->recv, 0,
                                x->send_len / coll_elem(x->coll), &x->req);
        x->st = XS_COLL;
    } else if (x->fixed) {
        rc = dp->ops->allgather(dp->priv, s->lane, &x->send, 0, x->send_len, &x->recv, &x->req);
        x->st = XS_COLL;
    } else if (x->issued == 0) {
        x->size_out = x->send_len;
        gcd_buf out = {.ptr = &x->size_out, .bytes = 8, .mem = GK_MEM_HOST};
        gcd_buf in = {.ptr = x->sizes, .bytes = 8 * (size_t)W, .mem = GK_MEM_HOST};
        rc = dp->ops->allgather(dp->priv, s->lane, &out, 0, 8, &in, &x->req);
        x->st = XS_SIZES;
    } else {
        rc = dp->ops->allgatherv(dp->priv, s->lane, &x->send, 0, x->send_len, &x->recv,
                                 x->counts, x->displs, &x->req);
        x->st = XS_COLL;
    }
    if (!rc)
        x->issued++;
    return rc;
}

/* Advance one exchange; returns 1 if it did work, or < 0 (fatal, reported). */
static int xchg_progress(engine *e, eng_step *s, size_t i)
{
    eng_xchg *x = &s->x[i];
    gcd_data *dp = &e->d->data;
    int W = e->d->nodes, rc;
    bool done;
    switch (x->st) {
    case XS_WAIT:
        if (x->kind == X_PHASE && x->prev >= 0 && s->x[x->prev].st != XS_DONE)
            return 0;
        if (x->direct) {
            x->st = XS_READY;
            return 1;
        }
        if ((rc = gcd_pool_run(e->pool, &x->batch, encode_job, x, x->n)))
            return fail_step(s, rc, "encode");
        x->st = XS_ENCODE;
        return 1;
    case XS_ENCODE:
        if (!gcd_batch_done(&x->batch))
            return 0;
        if ((rc = atomic_load(&x->batch.status)))
            return fail_step(s, rc, "encode");
        x->t_enc += x->batch.t_end - x->batch.t_start;
        if (x->gather && !x->fixed)
            compact(x);
        else
            x->send_len = x->region;
        s->payload += x->send_len;
        if (e->d->timeline)
            tl_xchg(s, i, "encode", x->batch.t_start, x->batch.t_end, coll_names[x->coll],
                    x->send_len);
        x->st = XS_READY;
        return 1;
    case XS_READY:
        if (i != s->issue_at)
            return 0;
        if ((rc = issue(e, s, x)))
            return fail_step(s, rc, "exchange");
        return 1;
    case XS_SIZES:
        if ((rc = dp->ops->test(dp->priv, x->req, &done)))
            return fail_step(s, rc, "exchange of sizes");
        if (!done)
            return overdue(e, x->t_issue) ? stalled(s, "exchange") : 0;
        x->t_coll += gk_now_s() - x->t_issue;
        if (e->d->timeline)
            tl_xchg(s, i, "collective", x->t_issue, gk_now_s(), "allgather (sizes)",
                    sizeof(x->size_out));
        size_t all = 0;
        for (int w = 0; w < W; w++) {
            if (x->sizes[w] > x->region) {
                char why[256];
                snprintf(why, sizeof(why), "node %d sent %llu bytes, at most %zu fit", w,
                         (unsigned long long)x->sizes[w], x->region);
                return eng_fatal(e, GCOMP_PROTOCOL, why);
            }
            x->counts[w] = x->sizes[w];
            x->displs[w] = all;
            all += x->sizes[w];
        }
        if ((rc = gcd_data_alloc(&e->d->data, x->send.mem, all, &x->recv)))
            return fail_step(s, rc, "exchange");
        x->own_recv = true;
        if ((rc = issue(e, s, x)))
            return fail_step(s, rc, "exchange");
        return 1;
    case XS_COLL:
        if ((rc = dp->ops->test(dp->priv, x->req, &done)))
            return fail_step(s, rc, "exchange");
        if (!done)
            return overdue(e, x->t_issue) ? stalled(s, "exchange") : 0;
        x->t_coll += gk_now_s() - x->t_issue;
        if (e->d->timeline)
            tl_xchg(s, i, "collective", x->t_issue, gk_now_s(),
                    x->gather && !x->fixed ? "allgatherv" : coll_names[x->coll], x->send_len);
        if (x->direct) {
            x->st = XS_DONE;
            return 1;
        }
        if (x->gather && !x->fixed) {
            if ((rc = locate(x, W)))
                return fail_step(s, rc, "payload check");
        } else {
            for (size_t j = 0; j < x->n; j++)
                for (int w = 0; w < (x->gather ? W : 1); w++) {
                    const char *base = (const char *)x->recv.ptr +
                                       (x->gather ? (size_t)w * x->send_len : 0);
                    x->rp[j * (size_t)(x->gather ? W : 1) + (size_t)w] = base + x->slot[j];
                    x->rb[j * (size_t)(x->gather ? W : 1) + (size_t)w] = x->max[j];
                }
        }
        if ((rc = gcd_pool_run(e->pool, &x->batch, decode_job, x, x->n)))
            return fail_step(s, rc, "decode");
        x->st = XS_DECODE;
        return 1;
    case XS_DECODE:
        if (!gcd_batch_done(&x->batch))
            return 0;
        if ((rc = atomic_load(&x->batch.status)))
            return fail_step(s, rc, "decode");
        x->t_dec += x->batch.t_end - x->batch.t_start;
        if (e->d->timeline)
            tl_xchg(s, i, "decode", x->batch.t_start, x->batch.t_end, coll_names[x->coll],
                    x->send_len);
        x->st = XS_DONE;
        return 1;
    case XS_DONE:
        return 0;
    }
    return 0;
}

/* The per-node stats line and totals of a finished step. */
static void record(engine *e, eng_step *s, int status)
{
    gcd_bucket *b = s->b;
    eng_bucket *eb = s->eb;
    size_t nl = b->layout.n;
    gcd_step_layer *ls = calloc(nl ? nl : 1, sizeof(*ls));
    if (!ls)
        return;
    for (size_t i = 0; i < nl; i++)
        ls[i] = (gcd_step_layer){.name = b->layout.layers[i].name,
                                 .numel = eb->layers[i].geom.numel,
                                 .spec = eb->layers[i].compressed ? &eb->layers[i].spec : NULL,
                                 .payload = eb->layers[i].payload};
    double now = gk_now_s(), enc = 0, coll = 0, dec = 0;
    for (size_t i = 0; i < s->nx; i++) {
        enc += s->x[i].t_enc;
        coll += s->x[i].t_coll;
        dec += s->x[i].t_dec;
    }
    gcd_step_record r = {
        .bucket = b->name, .step = s->step, .node = e->d->node, .nodes = e->d->nodes,
        .trainers = e->d->total_trainers, .lane = s->lane,
        .dense_bytes = b->layout.numel * sizeof(float), .payload_bytes = s->payload,
        .t_sum_ms = eb->t_sum_ms, .t_wait_ms = (s->t_start - eb->t_ready) * 1e3,
        .t_prep_ms = s->t_prep_s * 1e3, .t_collect_ms = s->t_col_s * 1e3,
        .t_encode_ms = enc * 1e3, .t_collective_ms = coll * 1e3, .t_decode_ms = dec * 1e3,
        .t_exchange_ms = (now - s->t_start) * 1e3, .t_total_ms = (now - eb->t_ready) * 1e3,
        .nonfinite_skipped = eb->skipped, .policy = s->p->spec, .nlayers = nl, .layers = ls};
    gcd_stats_record(e->d, &r, status);
    free(ls);
}

/* The step is over on this node: free the lane, and hand the result to the trainers
   (a step whose policy observes does that when it is observed: policy_host.c). */
static void finish(engine *e, eng_step *s)
{
    if (!s->observing) {
        if (e->d->timeline)
            tl_result(s);
        eng_iter_result(e, s->step, gk_now_s());
        gcd_to_loop(e->d, GCD_EV_COMPLETE, s->b->id, s->step, GCOMP_OK, 0, "");
    }
    s->eb->in_flight = false;
    s->st = S_DONE;
}

/* Advance one step; returns 1 if it did work, 0 if not, < 0 on a fatal error. */
static int step_progress(engine *e, eng_step *s)
{
    int rc, work = 0;
    switch (s->st) {
    case S_QUEUED:
        s->t_start = gk_now_s();
        if (e->d->timeline)
            tl_started(s);
        if ((rc = plan(e, s)))
            return fail_step(s, rc, "planning the exchange");
        if ((rc = gcd_pool_run(e->pool, &s->prep, prep_job, s, s->ncomp)))
            return fail_step(s, rc, "preparing the exchange");
        s->st = S_PREP;
        /* The dense exchange does not wait for the preparation. */
        return 1;
    case S_PREP:
        if (!gcd_batch_done(&s->prep))
            break;
        s->t_prep_s = s->prep.t_end - s->prep.t_start;
        if (e->d->timeline && s->ncomp)
            gcd_timeline_span(e->d->timeline, s->lane, "prepare", s->prep.t_start, s->prep.t_end,
                              s->b->name, s->step, ",\"layers\":%zu", s->ncomp);
        s->col = (eng_collect){.e = e, .eb = s->eb, .step = s->step, .p = s->p, .vec = s->vec};
        if (s->observing && (rc = eng_collect_run(e, &s->col, &s->colb)))
            return fail_step(s, rc, "collecting statistics");
        s->st = S_COLLECT;
        return 1;
    case S_COLLECT:
        if (!gcd_batch_done(&s->colb))
            break;
        eng_collect_end(e, &s->colb); /* the step, and colb with it, is freed when done */
        if ((rc = atomic_load(&s->colb.status)))
            return fail_step(s, rc, "the policy's collect");
        s->t_col_s = s->colb.t_end - s->colb.t_start;
        if (e->d->timeline && s->observing && s->p->policy->collect && s->p->policy->nstats > 0)
            gcd_timeline_span(e->d->timeline, s->lane, "collect", s->colb.t_start,
                              s->colb.t_end, s->b->name, s->step, ",\"policy\":\"%s\"",
                              s->p->policy->name);
        s->st = S_XCHG;
        return 1;
    default:
        break;
    }
    if (s->st == S_PREP || s->st == S_COLLECT || s->st == S_XCHG) {
        /* Exchanges: the dense one may run from the start; compressed ones after the
           preparation and collect (they change x). */
        bool all = true;
        for (size_t i = 0; i < s->nx; i++) {
            eng_xchg *x = &s->x[i];
            if (s->st != S_XCHG && x->kind != X_DENSE) {
                all = false;
                continue;
            }
            if ((rc = xchg_progress(e, s, i)) < 0)
                return rc;
            work |= rc;
            if (x->issued == x->ncoll && i == s->issue_at)
                s->issue_at++;
            all &= x->st == XS_DONE;
        }
        while (s->issue_at < s->nx && s->x[s->issue_at].issued == s->x[s->issue_at].ncoll)
            s->issue_at++;
        if (s->st != S_XCHG || !all)
            return work;
        s->t_result = gk_now_s();
        double xchg_ms = (s->t_result - s->t_start) * 1e3;
        record(e, s, GCOMP_OK);
        if (!s->observing) {
            finish(e, s); /* its number counted as held when it was decided */
            return 1;
        }
        eng_stats_fill(e, s->eb, s->step, s->p, s->vec, s->maxv, xchg_ms);
        size_t len = eng_stats_len(s->p, s->b->layout.n);
        if ((rc = gcd_ctl_iallreduce(e->d->ctl, s->lane, s->vec, len, GCD_CTL_SUM, &s->sreq[0])) ||
            (rc = gcd_ctl_iallreduce(e->d->ctl, s->lane, s->maxv, ENG_STATS_MAX, GCD_CTL_MAX,
                                        &s->sreq[1])))
            return fail_step(s, rc, "exchange of statistics");
        s->t_stats_issue = gk_now_s();
        s->st = S_STATS;
        return 1;
    }
    if (s->st == S_STATS) {
        for (int k = 0; k < 2; k++) {
            bool done;
            if (!s->sreq[k])
                continue;
            if ((rc = gcd_ctl_test(e->d->ctl, s->sreq[k], &done)))
                return fail_step(s, rc, "exchange of statistics");
            if (done) {
                s->sreq[k] = NULL;
                work = 1;
            }
        }
        if (s->sreq[0] || s->sreq[1])
            return overdue(e, s->t_stats_issue) ? stalled(s, "exchange of statistics") : work;
        if (e->d->timeline)
            gcd_timeline_span(e->d->timeline, s->lane, "statistics", s->t_stats_issue,
                              gk_now_s(), s->b->name, s->step, ",\"values\":%zu",
                              eng_stats_len(s->p, s->b->layout.n));
        if ((rc = eng_stats_arrived(e, s->eb, s->step, s->seq, s->p, s->vec, s->maxv,
                                    s->t_result)))
            return fail_step(s, rc, "keeping statistics");
        finish(e, s);
        return 1;
    }
    return work;
}

int eng_pipeline_start(engine *e, eng_bucket *eb, int64_t step, uint64_t seq)
{
    eng_step *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    s->e = e;
    s->eb = eb;
    s->b = eb->b;
    s->step = step;
    s->seq = seq;
    s->lane = (int)(seq % (uint64_t)e->lanes);
    s->p = eng_policy_at(e, step);
    s->observing = eng_policy_observes(e, eb, step);
    s->t_decided = gk_now_s();
    if (s->observing) {
        size_t len = eng_stats_len(s->p, eb->b->layout.n);
        if (!(s->vec = calloc(len, sizeof(double)))) {
            free(s);
            return GCOMP_NOMEM;
        }
    }
    eb->in_flight = true;
    if (e->lane_tail[s->lane])
        e->lane_tail[s->lane]->next = s;
    else
        e->lane_head[s->lane] = s;
    e->lane_tail[s->lane] = s;
    e->in_flight++;
    return GCOMP_OK;
}

int eng_pipeline_progress(engine *e)
{
    int work = 0;
    for (int l = 0; l < e->lanes; l++) {
        eng_step *s;
        while ((s = e->lane_head[l])) {
            int rc = step_progress(e, s);
            if (rc < 0)
                return rc;
            work |= rc;
            if (s->st != S_DONE)
                break;
            e->lane_head[l] = s->next;
            if (!e->lane_head[l])
                e->lane_tail[l] = NULL;
            e->in_flight--;
            step_free(s);
        }
    }
    return work;
}
