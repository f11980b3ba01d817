/*
 * ucx.c: the UCX data plane (data.h) on ucp tag matching, host memory. One ucp context
 * and one worker (UCS_THREAD_MODE_SINGLE: the engine thread only), the workers'
 * addresses exchanged over the control plane at start-up, one endpoint per peer with
 * peer error handling (a peer that dies fails the requests that use it instead of
 * hanging them); shared memory's error handling, off in UCX by default, is turned on
 * unless UCX_POSIX_ERROR_HANDLING / UCX_SYSV_ERROR_HANDLING say otherwise. Where the
 * transports have none, the endpoints go without it and the engine's deadline finds a
 * lost peer. UCX's own environment (UCX_TLS, UCX_NET_DEVICES...) is honoured.
 *
 * Collectives:
 *  - Allreduce is a segmented ring: reduce-scatter then allgather, p - 1 steps each, over
 *    p chunks (chunk c is elements [c n / p, (c + 1) n / p), balanced); every chunk is
 *    cut into segments of SEG_BYTES, and segment j of every chunk forms "column" j, which
 *    walks through the 2 (p - 1) steps on its own, so sends, receives and sums of
 *    different columns overlap (up to WINDOW columns in flight).
 *    The order of the sum: chunk c is (((x[c] + x[c+1]) + x[c+2]) + ... + x[c+p-1]),
 *    node indices mod p, so with 2 nodes it equals MPI's a + b bit for bit (IEEE
 *    addition commutes); with more nodes it differs from MPI's order in the last bits
 *    unless the sums are exact. Half and bfloat16 elements are summed in float32 and
 *    rounded to their type at every step of the ring, as the MPI data plane's operations
 *    round at every step of its reduction.
 *  - Allgather and allgatherv send this node's part to every peer directly and receive
 *    every peer's part into its place.
 *
 * Tags (64 bits) keep the messages of different collectives apart: lane (6 bits), the
 * lane's sequence number (22 bits: every node starts the same collectives on a lane in
 * the same order, so the n-th collective of a lane has the same number everywhere), the
 * step within the algorithm (16 bits: the ring's step, or the sending node in a gather)
 * and the column (20 bits). Receives match the whole tag.
 *
 * Errors: a failed UCX call or a request that completes with an error becomes
 * GCOMP_IO (or GCOMP_PROTOCOL for a message of the wrong size), logged with the peer
 * node and ucs_status_string. A request whose peer is gone and whose receive can never
 * complete stays "not done": the engine's deadline names the silent node. A request
 * that failed is abandoned (the job goes down); its UCX operations are left to the
 * process's end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucp/api/ucp.h>

#include "../log.h"
#include "data.h"
#include "gcomp.h"
#include "halfconv.h"

/* Bytes per segment of the ring, and columns in flight at once. */
#define SEG_BYTES ((size_t)1 << 20)
#define WINDOW 8

/* Tag fields (see the top of the file). */
#define TAG_LANE_BITS 6
#define TAG_SEQ_BITS 22
#define TAG_STEP_BITS 16
#define TAG_COL_BITS 20
#define MAX_LANES (1 << TAG_LANE_BITS)
#define MAX_STEPS ((uint64_t)1 << TAG_STEP_BITS)
#define MAX_COLS ((uint64_t)1 << TAG_COL_BITS)

/* Progress calls per test() at most, so one test never runs long. */
#define PROGRESS_ROUNDS 64

/* One peer: its endpoint and whether UCX reported it lost. */
typedef struct ucx_peer {
    ucp_ep_h ep;         /* NULL for this node */
    ucs_status_t status; /* UCS_OK until the endpoint's error handler runs */
} ucx_peer;

typedef struct ucx_priv {
    int node, nodes, lanes;
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucx_peer *peer;  /* [nodes] */
    uint32_t *seq;   /* [lanes]: the next collective's sequence number */
} ucx_priv;

/* One UCX operation: its request while in flight. */
typedef struct ucx_op {
    void *req;       /* the UCX request, or NULL when not started or complete */
    bool busy;       /* started and not yet complete */
    size_t want;     /* a receive's expected length */
} ucx_op;

/* A column of the ring in flight. */
typedef struct ring_col {
    size_t col;      /* which column */
    int k;           /* its step: 0 .. 2 (p - 1) - 1; -1: the slot is free */
    ucx_op send, recv;
    char *tmp;       /* reduce-scatter receive buffer: SEG_BYTES */
} ring_col;

enum { REQ_RING, REQ_GATHER };

struct gcd_dreq {
    ucx_priv *p;
    int kind, lane;
    uint64_t tag;    /* lane and sequence number, in place */
    int failed;      /* a status once the request failed: returned again */
    /* The ring. */
    gk_coll type;
    size_t esize, count, seg; /* element size, elements, elements per segment */
    const char *src;
    char *dst;
    size_t ncols, next_col;
    int active;
    ring_col slot[WINDOW];
    char *tmp;       /* one SEG_BYTES buffer per slot in use (at most WINDOW) */
    /* The gather: one send and one receive per peer. */
    int nops;
    ucx_op *ops;     /* [2 * nodes]: sends to node w at w, receives from w at nodes + w */
};

static uint64_t tag_of(const gcd_dreq *r, uint64_t step, uint64_t col)
{
    return r->tag | step << TAG_COL_BITS | col;
}

/* The endpoint's error handler: UCX calls it from ucp_worker_progress. Only recorded:
   test() fails the requests in flight (every collective depends on every node; a
   receive from a lost peer would otherwise wait for the deadline), so a peer's orderly
   end, with nothing in flight, is quiet. */
static void on_peer_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)ep;
    ucx_peer *peer = arg;
    if (peer->status == UCS_OK)
        peer->status = status;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static void ucx_fini(void *priv)
{
    ucx_priv *p = priv;
    if (!p)
        return;
    if (p->peer && p->worker) {
        /* Close every endpoint at once (forced: a peer that has gone already need not
           answer) and progress until they are closed, a bounded while. */
        void **close = calloc((size_t)p->nodes, sizeof(void *));
        for (int w = 0; w < p->nodes; w++) {
            if (!p->peer[w].ep)
                continue;
            ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                       .flags = UCP_EP_CLOSE_FLAG_FORCE};
            void *req = ucp_ep_close_nbx(p->peer[w].ep, &param);
            if (UCS_PTR_IS_PTR(req) && close)
                close[w] = req;
            else if (UCS_PTR_IS_PTR(req))
                ucp_request_free(req);
        }
        for (int rounds = 0; close && rounds < 100000; rounds++) {
            bool left = false;
            ucp_worker_progress(p->worker);
            for (int w = 0; w < p->nodes; w++) {
                if (close[w] && ucp_request_check_status(close[w]) != UCS_INPROGRESS) {
                    ucp_request_free(close[w]);
                    close[w] = NULL;
                }
                left |= close[w] != NULL;
            }
            if (!left)
                break;
        }
        free(close);
    }
    free(p->peer);
    if (p->worker)
        ucp_worker_destroy(p->worker);
    if (p->ctx)
        ucp_cleanup(p->ctx);
    free(p->seq);
    free(p);
}

/* Every node's worker address, through the control plane: the lengths first, then every
   address padded to the longest. Returns the nodes * longest bytes (malloc'd) and the
   stride, or NULL with err set. */
static char *exchange_addresses(ucx_priv *p, gcd_ctl *ctl, size_t *stride, char *err,
                                size_t errlen)
{
    ucp_address_t *mine;
    size_t len;
    ucs_status_t st = ucp_worker_get_address(p->worker, &mine, &len);
    if (st != UCS_OK) {
        snprintf(err, errlen, "ucp_worker_get_address: %s", ucs_status_string(st));
        return NULL;
    }
    uint64_t *lens = calloc((size_t)p->nodes, sizeof(uint64_t));
    char *pad = NULL, *all = NULL;
    if (!lens) {
        snprintf(err, errlen, "out of memory");
        goto err_release_address;
    }
    if (gcd_ctl_allgather_u64(ctl, len, lens)) {
        snprintf(err, errlen, "exchanging the worker addresses' lengths over the control "
                              "plane failed");
        goto err_free_lens;
    }
    size_t longest = 0;
    for (int w = 0; w < p->nodes; w++)
        longest = lens[w] > longest ? lens[w] : longest;
    pad = calloc(1, longest);
    all = malloc((size_t)p->nodes * longest);
    if (!pad || !all) {
        snprintf(err, errlen, "out of memory for %d worker addresses of %zu bytes", p->nodes,
                 longest);
        goto err_free_all;
    }
    memcpy(pad, mine, len);
    if (gcd_ctl_allgather_bytes(ctl, pad, longest, all)) {
        snprintf(err, errlen, "exchanging the worker addresses over the control plane failed");
        goto err_free_all;
    }
    free(pad);
    free(lens);
    ucp_worker_release_address(p->worker, mine);
    *stride = longest;
    return all;

err_free_all:
    free(all);
    free(pad);
err_free_lens:
    free(lens);
err_release_address:
    ucp_worker_release_address(p->worker, mine);
    return NULL;
}

static int ucx_init(gcd_ctl *ctl, int lanes, void **priv, char *err, size_t errlen)
{
    ucx_priv *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return GCOMP_NOMEM;
    }
    p->node = gcd_ctl_node(ctl);
    p->nodes = gcd_ctl_nodes(ctl);
    p->lanes = lanes;
    if (lanes > MAX_LANES || (uint64_t)p->nodes >= MAX_STEPS / 2) {
        snprintf(err, errlen, "at most %d lanes and %llu nodes (asked for %d lanes, %d nodes)",
                 MAX_LANES, (unsigned long long)(MAX_STEPS / 2 - 1), lanes, p->nodes);
        free(p);
        return GCOMP_LIMIT;
    }
    if (!(p->seq = calloc((size_t)lanes, sizeof(uint32_t))) ||
        !(p->peer = calloc((size_t)p->nodes, sizeof(ucx_peer)))) {
        snprintf(err, errlen, "out of memory");
        ucx_fini(p);
        return GCOMP_NOMEM;
    }
    /* The context and the worker: UCX_TLS, UCX_NET_DEVICES and the rest of UCX's
       environment apply (ucp_config_read with no prefix and no file). */
    /* UCX 1.13 keeps shared memory out of endpoints with peer failure handling unless
       its error handling is on (off by default, and an interface setting that
       ucp_config_modify does not take): turn it on where the environment says nothing,
       so peers on this host use shared memory and still fail requests when they die.
       Before any thread of ours runs; UCX reads its environment only here. */
    const char *tls = getenv("UCX_TLS");
    if (!tls || tls[0] == '^' || strstr(tls, "all") || strstr(tls, "sm") ||
        strstr(tls, "posix") || strstr(tls, "sysv") || strstr(tls, "mm")) {
        /* Only where shared memory may be used: UCX warns of unused variables. */
        setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
        setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
    }
    ucp_config_t *config;
    ucs_status_t st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) {
        snprintf(err, errlen, "ucp_config_read (UCX_* environment): %s", ucs_status_string(st));
        ucx_fini(p);
        return GCOMP_IO;
    }
    ucp_params_t params = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS |
                      UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_TAG,
        .estimated_num_eps = (size_t)p->nodes,
        .name = "gcompd",
    };
    st = ucp_init(&params, config, &p->ctx);
    ucp_config_release(config);
    if (st != UCS_OK) {
        p->ctx = NULL;
        snprintf(err, errlen, "ucp_init: %s (UCX_TLS=%s, UCX_NET_DEVICES=%s)",
                 ucs_status_string(st), env_or("UCX_TLS", "all"),
                 env_or("UCX_NET_DEVICES", "all"));
        ucx_fini(p);
        return GCOMP_IO;
    }
    ucp_worker_params_t wparams = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                                   .thread_mode = UCS_THREAD_MODE_SINGLE};
    if ((st = ucp_worker_create(p->ctx, &wparams, &p->worker)) != UCS_OK) {
        p->worker = NULL;
        snprintf(err, errlen, "ucp_worker_create: %s", ucs_status_string(st));
        ucx_fini(p);
        return GCOMP_IO;
    }
    size_t stride;
    char *addrs = exchange_addresses(p, ctl, &stride, err, errlen);
    if (!addrs) {
        ucx_fini(p);
        return GCOMP_IO;
    }
    bool without_errh = false;
    for (int w = 0; w < p->nodes; w++) {
        p->peer[w] = (ucx_peer){.status = UCS_OK};
        if (w == p->node)
            continue;
        ucp_ep_params_t ep = {
            .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                          UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER,
            .address = (const ucp_address_t *)(addrs + (size_t)w * stride),
            .err_mode = UCP_ERR_HANDLING_MODE_PEER,
            .err_handler = {.cb = on_peer_error, .arg = &p->peer[w]},
        };
        /* The transports UCX_TLS allows may lack peer failure handling (UCX 1.13's
           shared memory does; UCX logs an error then): the endpoints go without it, and a
           lost peer is found by the engine's deadline. */
        st = UCS_OK;
        if (!without_errh && (st = ucp_ep_create(p->worker, &ep, &p->peer[w].ep)) != UCS_OK) {
            p->peer[w].ep = NULL;
            without_errh = true;
            gcd_log_warn("ucx: the transports have no peer failure handling (%s with it; "
                         "UCX_TLS=%s): a lost peer is noticed by the deadline only",
                         ucs_status_string(st), env_or("UCX_TLS", "all"));
        }
        if (without_errh) {
            ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
            ep.field_mask &= ~(uint64_t)UCP_EP_PARAM_FIELD_ERR_HANDLER;
            ucs_status_t st2 = ucp_ep_create(p->worker, &ep, &p->peer[w].ep);
            if (st2 != UCS_OK) {
                p->peer[w].ep = NULL;
                st = st == UCS_OK ? st2 : st;
            }
        }
        if (!p->peer[w].ep) {
            snprintf(err, errlen, "ucp_ep_create to node %d: %s", w, ucs_status_string(st));
            free(addrs);
            ucx_fini(p);
            return GCOMP_IO;
        }
    }
    free(addrs);
    *priv = p;
    return GCOMP_OK;
}

static bool ucx_moves(void *priv, gk_mem mem)
{
    (void)priv;
    return mem == GK_MEM_HOST;
}

/* A new request on a lane: takes the lane's next sequence number. */
static gcd_dreq *dreq_new(ucx_priv *p, int lane, int kind)
{
    gcd_dreq *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    uint64_t seq = p->seq[lane]++ & (((uint64_t)1 << TAG_SEQ_BITS) - 1);
    r->p = p;
    r->kind = kind;
    r->lane = lane;
    r->tag = (uint64_t)lane << (64 - TAG_LANE_BITS) |
             seq << (TAG_STEP_BITS + TAG_COL_BITS);
    return r;
}

static void dreq_free(gcd_dreq *r)
{
    free(r->tmp);
    free(r->ops);
    free(r);
}

/* Start a send or a receive of len bytes on op; an empty one is complete at once. */
static int op_send(gcd_dreq *r, ucx_op *op, int to, const void *buf, size_t len, uint64_t tag)
{
    op->busy = false;
    op->req = NULL;
    if (len == 0)
        return GCOMP_OK;
    ucp_request_param_t param = {0};
    void *req = ucp_tag_send_nbx(r->p->peer[to].ep, buf, len, tag, &param);
    if (UCS_PTR_IS_ERR(req)) {
        gcd_log_error("ucx: lane %d: sending %zu bytes to node %d failed: %s", r->lane, len, to,
                      ucs_status_string(UCS_PTR_STATUS(req)));
        return GCOMP_IO;
    }
    op->req = req;
    op->busy = req != NULL;
    return GCOMP_OK;
}

static int op_recv(gcd_dreq *r, ucx_op *op, int from, void *buf, size_t len, uint64_t tag)
{
    op->busy = false;
    op->req = NULL;
    op->want = len;
    if (len == 0)
        return GCOMP_OK;
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL};
    void *req = ucp_tag_recv_nbx(r->p->worker, buf, len, tag, UINT64_MAX, &param);
    if (UCS_PTR_IS_ERR(req)) {
        gcd_log_error("ucx: lane %d: receiving %zu bytes from node %d failed: %s", r->lane, len,
                      from, ucs_status_string(UCS_PTR_STATUS(req)));
        return GCOMP_IO;
    }
    op->req = req;
    op->busy = true;
    return GCOMP_OK;
}

/* Whether op is complete (true), and its status in *rc: GCOMP_IO for a UCX error,
   GCOMP_PROTOCOL for a message of another length. `peer` names it in the log. */
static bool op_done(gcd_dreq *r, ucx_op *op, bool recv, int peer, int *rc)
{
    if (!op->busy)
        return true;
    ucp_tag_recv_info_t info = {0};
    ucs_status_t st = recv ? ucp_tag_recv_request_test(op->req, &info)
                           : ucp_request_check_status(op->req);
    if (st == UCS_INPROGRESS)
        return false;
    ucp_request_free(op->req);
    op->req = NULL;
    op->busy = false;
    if (st != UCS_OK) {
        ucs_status_t lost = r->p->peer[peer].status;
        gcd_log_error("ucx: lane %d: %s node %d failed: %s%s%s", r->lane,
                      recv ? "receiving from" : "sending to", peer, ucs_status_string(st),
                      lost != UCS_OK ? "; the endpoint reported " : "",
                      lost != UCS_OK ? ucs_status_string(lost) : "");
        *rc = GCOMP_IO;
    } else if (recv && info.length != op->want) {
        gcd_log_error("ucx: lane %d: node %d sent %zu bytes where %zu were expected", r->lane,
                      peer, info.length, op->want);
        *rc = GCOMP_PROTOCOL;
    }
    return true;
}

/* ---- the ring allreduce ---- */

/* Chunk c's first element. */
static size_t chunk_lo(const gcd_dreq *r, int c)
{
    size_t n = (size_t)r->p->nodes;
    return (size_t)c * (r->count / n) + ((size_t)c < r->count % n ? (size_t)c : r->count % n);
}

/* Column col of chunk c: its first element and length (possibly 0). */
static size_t seg_of(const gcd_dreq *r, int c, size_t col, size_t *len)
{
    size_t lo = chunk_lo(r, c), hi = chunk_lo(r, c + 1), at = lo + col * r->seg;
    *len = at >= hi ? 0 : (hi - at < r->seg ? hi - at : r->seg);
    return at;
}

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

/* dst[i] = tmp[i] + src[i] over n elements of the request's type. */
static void reduce(gk_coll type, char *dst, const char *tmp, const char *src, size_t n)
{
    if (type == GK_COLL_ALLREDUCE_F32) {
        float *d = (float *)dst;
        const float *a = (const float *)tmp, *b = (const float *)src;
        for (size_t i = 0; i < n; i++)
            d[i] = a[i] + b[i];
    } else if (type == GK_COLL_ALLREDUCE_F16) {
        uint16_t *d = (uint16_t *)dst;
        const uint16_t *a = (const uint16_t *)tmp, *b = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++)
            d[i] = gk_float_to_half(gk_half_to_float(a[i]) + gk_half_to_float(b[i]));
    } else {
        uint16_t *d = (uint16_t *)dst;
        const uint16_t *a = (const uint16_t *)tmp, *b = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++)
            d[i] = gk_float_to_bf16(gk_bf16_to_float(a[i]) + gk_bf16_to_float(b[i]));
    }
}

/* Start step k of a column: reduce-scatter steps (k < p - 1) send chunk node - k (this
   node's data at step 0, the partial sum from step k - 1 after) and receive chunk
   node - k - 1 into tmp; allgather steps a = k - (p - 1) send chunk node + 1 - a (the
   complete sum) and receive chunk node - a into its place. */
static int col_post(gcd_dreq *r, ring_col *c)
{
    int P = r->p->nodes, me = r->p->node, right = mod(me + 1, P), left = mod(me - 1, P);
    int k = c->k, sc, rc_chunk;
    const char *sbase;
    char *rbuf;
    if (k < P - 1) {
        sc = mod(me - k, P);
        rc_chunk = mod(me - k - 1, P);
        sbase = k == 0 ? r->src : r->dst;
    } else {
        int a = k - (P - 1);
        sc = mod(me + 1 - a, P);
        rc_chunk = mod(me - a, P);
        sbase = r->dst;
    }
    size_t slen, rlen, sat = seg_of(r, sc, c->col, &slen), rat = seg_of(r, rc_chunk, c->col, &rlen);
    rbuf = k < P - 1 ? c->tmp : r->dst + rat * r->esize;
    uint64_t tag = tag_of(r, (uint64_t)k, c->col);
    int rc = op_recv(r, &c->recv, left, rbuf, rlen * r->esize, tag);
    if (!rc)
        rc = op_send(r, &c->send, right, sbase + sat * r->esize, slen * r->esize, tag);
    return rc;
}

/* Advance a column as far as its operations allow; *finished when its last step is
   done. */
static int col_advance(gcd_dreq *r, ring_col *c, bool *finished)
{
    int P = r->p->nodes, me = r->p->node, rc = GCOMP_OK;
    *finished = false;
    for (;;) {
        bool rdone = op_done(r, &c->recv, true, mod(me - 1, P), &rc);
        bool sdone = op_done(r, &c->send, false, mod(me + 1, P), &rc);
        if (rc)
            return rc;
        if (!rdone || !sdone)
            return GCOMP_OK;
        if (c->k < P - 1) {
            size_t len, at = seg_of(r, mod(me - c->k - 1, P), c->col, &len);
            reduce(r->type, r->dst + at * r->esize, c->tmp, r->src + at * r->esize, len);
        }
        if (++c->k == 2 * (P - 1)) {
            *finished = true;
            return GCOMP_OK;
        }
        if ((rc = col_post(r, c)))
            return rc;
    }
}

/* Fill the free slots with the next columns. */
static int ring_fill(gcd_dreq *r)
{
    for (int s = 0; s < WINDOW && r->next_col < r->ncols; s++) {
        ring_col *c = &r->slot[s];
        if (c->k >= 0)
            continue;
        *c = (ring_col){.col = r->next_col++, .k = 0, .tmp = r->tmp + (size_t)s * SEG_BYTES};
        r->active++;
        int rc = col_post(r, c);
        if (rc)
            return rc;
    }
    return GCOMP_OK;
}

static int ucx_allreduce(void *priv, int lane, gk_coll type, const gcd_buf *send,
                         const gcd_buf *recv, size_t off, size_t count, gcd_dreq **req)
{
    ucx_priv *p = priv;
    if (lane < 0 || lane >= p->lanes || type == GK_COLL_ALLGATHER)
        return GCOMP_INVALID;
    gcd_dreq *r = dreq_new(p, lane, REQ_RING);
    if (!r)
        return GCOMP_NOMEM;
    r->type = type;
    r->esize = type == GK_COLL_ALLREDUCE_F32 ? 4 : 2;
    r->count = count;
    r->src = (const char *)send->ptr + off;
    r->dst = (char *)recv->ptr + off;
    r->seg = SEG_BYTES / r->esize;
    if (p->nodes == 1 || count == 0) {
        if (count && r->src != r->dst)
            memcpy(r->dst, r->src, count * r->esize);
        *req = r; /* complete at the first test() */
        return GCOMP_OK;
    }
    size_t longest = chunk_lo(r, 1); /* chunk 0 is one of the longest */
    r->ncols = (longest + r->seg - 1) / r->seg;
    if (r->ncols > MAX_COLS) {
        dreq_free(r);
        return GCOMP_LIMIT;
    }
    int slots = r->ncols < WINDOW ? (int)r->ncols : WINDOW;
    if (!(r->tmp = malloc((size_t)slots * SEG_BYTES))) {
        dreq_free(r);
        return GCOMP_NOMEM;
    }
    for (int s = 0; s < WINDOW; s++)
        r->slot[s].k = -1;
    int rc = ring_fill(r);
    if (rc) {
        dreq_free(r); /* UCX holds no pointer to it; started operations are abandoned */
        return rc;
    }
    *req = r;
    return GCOMP_OK;
}

static int ring_test(gcd_dreq *r, bool *done)
{
    for (int s = 0; s < WINDOW; s++) {
        ring_col *c = &r->slot[s];
        if (c->k < 0)
            continue;
        bool finished;
        int rc = col_advance(r, c, &finished);
        if (rc)
            return rc;
        if (finished) {
            c->k = -1;
            r->active--;
        }
    }
    int rc = ring_fill(r);
    if (rc)
        return rc;
    *done = r->active == 0 && r->next_col == r->ncols;
    return GCOMP_OK;
}

/* ---- allgather and allgatherv ---- */

static int gather_start(ucx_priv *p, int lane, const char *src, size_t bytes, char *dst,
                        const size_t *counts, const size_t *displs, gcd_dreq **req)
{
    int P = p->nodes, me = p->node;
    if (counts[me] != bytes)
        return GCOMP_INVALID;
    gcd_dreq *r = dreq_new(p, lane, REQ_GATHER);
    if (!r)
        return GCOMP_NOMEM;
    if (!(r->ops = calloc(2 * (size_t)P, sizeof(ucx_op)))) {
        dreq_free(r);
        return GCOMP_NOMEM;
    }
    r->nops = 2 * P;
    int rc = GCOMP_OK;
    /* Receives first, then sends to the next nodes in ring order (not everyone to node 0
       at once). */
    for (int i = 1; i < P && !rc; i++) {
        int from = mod(me - i, P);
        rc = op_recv(r, &r->ops[P + from], from, dst + displs[from], counts[from],
                     tag_of(r, (uint64_t)from, 0));
    }
    for (int i = 1; i < P && !rc; i++) {
        int to = mod(me + i, P);
        rc = op_send(r, &r->ops[to], to, src, bytes, tag_of(r, (uint64_t)me, 0));
    }
    if (rc) {
        dreq_free(r); /* UCX holds no pointer to it; started operations are abandoned */
        return rc;
    }
    if (bytes && dst + displs[me] != src)
        memmove(dst + displs[me], src, bytes);
    *req = r;
    return GCOMP_OK;
}

static int gather_test(gcd_dreq *r, bool *done)
{
    int P = r->p->nodes, rc = GCOMP_OK;
    bool all = true;
    for (int i = 0; i < r->nops; i++)
        all &= op_done(r, &r->ops[i], i >= P, i % P, &rc);
    if (rc)
        return rc;
    *done = all;
    return GCOMP_OK;
}

static int ucx_allgather(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                         const gcd_buf *recv, gcd_dreq **req)
{
    ucx_priv *p = priv;
    if (lane < 0 || lane >= p->lanes)
        return GCOMP_INVALID;
    size_t *cd = malloc(2 * (size_t)p->nodes * sizeof(size_t));
    if (!cd)
        return GCOMP_NOMEM;
    for (int w = 0; w < p->nodes; w++) {
        cd[w] = bytes;
        cd[p->nodes + w] = (size_t)w * bytes;
    }
    int rc = gather_start(p, lane, (const char *)send->ptr + off, bytes, recv->ptr, cd,
                          cd + p->nodes, req);
    free(cd);
    return rc;
}

static int ucx_allgatherv(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                          const gcd_buf *recv, const size_t *counts, const size_t *displs,
                          gcd_dreq **req)
{
    ucx_priv *p = priv;
    if (lane < 0 || lane >= p->lanes)
        return GCOMP_INVALID;
    return gather_start(p, lane, (const char *)send->ptr + off, bytes, recv->ptr, counts, displs,
                        req);
}

/* ---- driving requests ---- */

static int ucx_test(void *priv, gcd_dreq *req, bool *done)
{
    ucx_priv *p = priv;
    *done = false;
    if (req->failed)
        return req->failed;
    for (int i = 0; i < PROGRESS_ROUNDS && ucp_worker_progress(p->worker); i++)
        ;
    int rc = GCOMP_OK;
    for (int w = 0; w < p->nodes && !rc; w++) {
        if (p->peer[w].status != UCS_OK) {
            gcd_log_error("ucx: lane %d: node %d was lost: %s", req->lane, w,
                          ucs_status_string(p->peer[w].status));
            rc = GCOMP_IO;
        }
    }
    if (!rc)
        rc = req->kind == REQ_RING ? ring_test(req, done) : gather_test(req, done);
    if (rc) {
        req->failed = rc; /* abandoned: its operations may still be in flight */
        *done = false;
        return rc;
    }
    if (*done)
        dreq_free(req);
    return GCOMP_OK;
}

const gcd_data_ops gcd_data_ucx = {
    .name = "ucx",
    .summary = "UCX (ucp tag matching) on host memory: segmented ring allreduce, direct "
               "allgather(v); UCX_TLS and UCX_NET_DEVICES apply",
    .init = ucx_init,
    .fini = ucx_fini,
    .moves = ucx_moves,
    .allreduce = ucx_allreduce,
    .allgather = ucx_allgather,
    .allgatherv = ucx_allgatherv,
    .test = ucx_test,
};
