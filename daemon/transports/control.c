/*
 * control.c: the control plane on MPI (control.h). One duplicate of MPI_COMM_WORLD
 * carries the negotiation (tags REPORT, DECISION); one more per lane carries the small
 * reductions, so that lanes never wait on each other.
 */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"
#include "base/clock.h"
#include "control_mpi.h"
#include "gcomp.h"

enum { TAG_REPORT = 101, TAG_DECISION = 102 };

struct gcd_ctl {
    int node, nodes, lanes;
    MPI_Comm world;     /* negotiation and pings */
    MPI_Comm *lane;     /* [lanes]: small reductions */
    MPI_Request rep_req; /* node != 0: the report in flight */
    void *rep_buf;
    MPI_Request *dec_req; /* node 0: [nodes] the decision's sends (0 unused) */
    void *dec_buf;
};

struct gcd_ctl_req {
    MPI_Request r;
};

MPI_Comm gcd_ctl_comm(const gcd_ctl *c)
{
    return c->world;
}

int gcd_ctl_init(int *argc, char ***argv, int lanes, gcd_ctl **out)
{
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        gcd_log_error("MPI_Init_thread failed");
        return GCOMP_IO;
    }
    if (provided < MPI_THREAD_FUNNELED) {
        gcd_log_error("MPI provides thread level %d, gcompd needs MPI_THREAD_FUNNELED", provided);
        MPI_Finalize();
        return GCOMP_NOT_BUILT;
    }
    gcd_ctl *c = calloc(1, sizeof(*c));
    if (!c || !(c->lane = calloc((size_t)lanes, sizeof(MPI_Comm)))) {
        free(c);
        MPI_Finalize();
        return GCOMP_NOMEM;
    }
    /* Errors come back as codes (every communicator below is a duplicate and inherits
       this): the engine names the node that failed instead of dying on the spot. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->node);
    MPI_Comm_size(MPI_COMM_WORLD, &c->nodes);
    c->lanes = lanes;
    c->rep_req = MPI_REQUEST_NULL;
    MPI_Comm_dup(MPI_COMM_WORLD, &c->world);
    for (int i = 0; i < lanes; i++)
        MPI_Comm_dup(MPI_COMM_WORLD, &c->lane[i]);
    if (!(c->dec_req = calloc((size_t)c->nodes, sizeof(MPI_Request)))) {
        gcd_ctl_fini(c);
        return GCOMP_NOMEM;
    }
    for (int w = 0; w < c->nodes; w++)
        c->dec_req[w] = MPI_REQUEST_NULL;
    *out = c;
    return GCOMP_OK;
}

int gcd_ctl_node(const gcd_ctl *c)
{
    return c->node;
}

int gcd_ctl_nodes(const gcd_ctl *c)
{
    return c->nodes;
}

int gcd_ctl_allgather_u64(gcd_ctl *c, uint64_t value, uint64_t *out)
{
    return MPI_Allgather(&value, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, c->world) == MPI_SUCCESS
               ? GCOMP_OK
               : GCOMP_IO;
}

int gcd_ctl_allgather_bytes(gcd_ctl *c, const void *mine, size_t len, void *out)
{
    if (len > INT_MAX)
        return GCOMP_LIMIT;
    return MPI_Allgather(mine, (int)len, MPI_BYTE, out, (int)len, MPI_BYTE, c->world) ==
                   MPI_SUCCESS
               ? GCOMP_OK
               : GCOMP_IO;
}

/* A copy of buf (the caller's is free to go). */
static void *copy(const void *buf, size_t len)
{
    void *p = malloc(len ? len : 1);
    if (p && len)
        memcpy(p, buf, len);
    return p;
}

int gcd_ctl_report_send(gcd_ctl *c, const void *buf, size_t len)
{
    /* The previous report was answered by a decision, so node 0 has received it. */
    MPI_Wait(&c->rep_req, MPI_STATUS_IGNORE);
    free(c->rep_buf);
    if (len > INT_MAX || !(c->rep_buf = copy(buf, len)))
        return len > INT_MAX ? GCOMP_LIMIT : GCOMP_NOMEM;
    return MPI_Isend(c->rep_buf, (int)len, MPI_BYTE, 0, TAG_REPORT, c->world, &c->rep_req) ==
                   MPI_SUCCESS
               ? GCOMP_OK
               : GCOMP_IO;
}

/* Receive one message of the tag from `from` if one has arrived. */
static int poll_msg(gcd_ctl *c, int from, int tag, void **buf, size_t *len, bool *got)
{
    int flag = 0, n;
    MPI_Message msg;
    MPI_Status st;
    *got = false;
    if (MPI_Improbe(from, tag, c->world, &flag, &msg, &st) != MPI_SUCCESS)
        return GCOMP_IO;
    if (!flag)
        return GCOMP_OK;
    MPI_Get_count(&st, MPI_BYTE, &n);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (!p)
        return GCOMP_NOMEM;
    if (MPI_Mrecv(p, n, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(p);
        return GCOMP_IO;
    }
    *buf = p;
    *len = (size_t)n;
    *got = true;
    return GCOMP_OK;
}

int gcd_ctl_report_poll(gcd_ctl *c, int from, void **buf, size_t *len, bool *got)
{
    return poll_msg(c, from, TAG_REPORT, buf, len, got);
}

int gcd_ctl_decision_send(gcd_ctl *c, const void *buf, size_t len)
{
    /* Every node answered the previous decision with this cycle's report. */
    MPI_Waitall(c->nodes, c->dec_req, MPI_STATUSES_IGNORE);
    free(c->dec_buf);
    if (len > INT_MAX || !(c->dec_buf = copy(buf, len)))
        return len > INT_MAX ? GCOMP_LIMIT : GCOMP_NOMEM;
    for (int w = 1; w < c->nodes; w++)
        if (MPI_Isend(c->dec_buf, (int)len, MPI_BYTE, w, TAG_DECISION, c->world, &c->dec_req[w]) !=
            MPI_SUCCESS)
            return GCOMP_IO;
    return GCOMP_OK;
}

int gcd_ctl_decision_poll(gcd_ctl *c, void **buf, size_t *len, bool *got)
{
    return poll_msg(c, 0, TAG_DECISION, buf, len, got);
}

int gcd_ctl_iallreduce(gcd_ctl *c, int lane, double *buf, size_t n, gcd_ctl_op op,
                       gcd_ctl_req **req)
{
    if (lane < 0 || lane >= c->lanes || n > INT_MAX)
        return GCOMP_INVALID;
    gcd_ctl_req *r = malloc(sizeof(*r));
    if (!r)
        return GCOMP_NOMEM;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, op == GCD_CTL_MAX ? MPI_MAX : MPI_SUM,
                       c->lane[lane], &r->r) != MPI_SUCCESS) {
        free(r);
        return GCOMP_IO;
    }
    *req = r;
    return GCOMP_OK;
}

int gcd_ctl_test(gcd_ctl *c, gcd_ctl_req *req, bool *done)
{
    (void)c;
    int flag = 0;
    if (MPI_Test(&req->r, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        return GCOMP_IO;
    *done = flag != 0;
    if (flag)
        free(req);
    return GCOMP_OK;
}

void gcd_ctl_abort(gcd_ctl *c, int code)
{
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

void gcd_ctl_fini(gcd_ctl *c)
{
    if (!c)
        return;
    MPI_Wait(&c->rep_req, MPI_STATUS_IGNORE);
    if (c->dec_req)
        MPI_Waitall(c->nodes, c->dec_req, MPI_STATUSES_IGNORE);
    for (int i = 0; i < c->lanes; i++)
        if (c->lane[i] != MPI_COMM_NULL && c->lane[i])
            MPI_Comm_free(&c->lane[i]);
    MPI_Comm_free(&c->world);
    free(c->lane);
    free(c->dec_req);
    free(c->rep_buf);
    free(c->dec_buf);
    free(c);
    MPI_Finalize();
}
