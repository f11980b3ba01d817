/*
 * mpi.c: the MPI data plane (data.h), host memory. Each lane is a duplicate of the
 * control plane's communicator; collectives are MPI_Iallreduce / MPI_Iallgather /
 * MPI_Iallgatherv, driven by MPI_Test from the engine's loop. Sums of IEEE half and
 * bfloat16 elements use operations of our own (OpenMPI has no native half sum).
 */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"
#include "control_mpi.h"
#include "data.h"
#include "gcomp.h"
#include "halfconv.h"

typedef struct mpi_priv {
    int nodes, lanes;
    MPI_Comm *lane;
    MPI_Op op_f16, op_bf16;
} mpi_priv;

/* MPI counts are int: large buffers go in several collectives of one request. */
#define MPI_CHUNK ((size_t)1 << 30)

struct gcd_dreq {
    int n;
    MPI_Request r[];
};

static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = gk_float_to_half(gk_half_to_float(a[i]) + gk_half_to_float(b[i]));
}

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = gk_float_to_bf16(gk_bf16_to_float(a[i]) + gk_bf16_to_float(b[i]));
}

static void mpi_fini(void *priv)
{
    mpi_priv *p = priv;
    if (!p)
        return;
    for (int i = 0; i < p->lanes; i++)
        if (p->lane[i] != MPI_COMM_NULL)
            MPI_Comm_free(&p->lane[i]);
    if (p->op_f16 != MPI_OP_NULL)
        MPI_Op_free(&p->op_f16);
    if (p->op_bf16 != MPI_OP_NULL)
        MPI_Op_free(&p->op_bf16);
    free(p->lane);
    free(p);
}

static int mpi_init(gcd_ctl *ctl, int lanes, void **priv, char *err, size_t errlen)
{
    mpi_priv *p = calloc(1, sizeof(*p));
    if (!p || !(p->lane = calloc((size_t)lanes, sizeof(MPI_Comm)))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return GCOMP_NOMEM;
    }
    p->nodes = gcd_ctl_nodes(ctl);
    p->op_f16 = p->op_bf16 = MPI_OP_NULL;
    for (int i = 0; i < lanes; i++) {
        p->lane[i] = MPI_COMM_NULL;
        if (MPI_Comm_dup(gcd_ctl_comm(ctl), &p->lane[i]) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Comm_dup failed");
            mpi_fini(p);
            return GCOMP_IO;
        }
        p->lanes = i + 1;
    }
    MPI_Op_create(sum_f16, 1, &p->op_f16);
    MPI_Op_create(sum_bf16, 1, &p->op_bf16);
    *priv = p;
    return GCOMP_OK;
}

static bool mpi_moves(void *priv, gk_mem mem)
{
    (void)priv;
    return mem == GK_MEM_HOST;
}

static gcd_dreq *dreq_new(int n)
{
    gcd_dreq *r = malloc(sizeof(*r) + (size_t)n * sizeof(MPI_Request));
    if (r) {
        r->n = n;
        for (int i = 0; i < n; i++)
            r->r[i] = MPI_REQUEST_NULL;
    }
    return r;
}

static int mpi_allreduce(void *priv, int lane, gk_coll type, const gcd_buf *send,
                         const gcd_buf *recv, size_t off, size_t count, gcd_dreq **req)
{
    mpi_priv *p = priv;
    if (lane < 0 || lane >= p->lanes || type == GK_COLL_ALLGATHER)
        return GCOMP_INVALID;
    MPI_Datatype dt = type == GK_COLL_ALLREDUCE_F32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_Op op = type == GK_COLL_ALLREDUCE_F32 ? MPI_SUM
                : type == GK_COLL_ALLREDUCE_F16 ? p->op_f16 : p->op_bf16;
    size_t esize = type == GK_COLL_ALLREDUCE_F32 ? 4 : 2;
    int chunks = count ? (int)((count + MPI_CHUNK - 1) / MPI_CHUNK) : 0;
    gcd_dreq *r = dreq_new(chunks);
    if (!r)
        return GCOMP_NOMEM;
    const char *from = (const char *)send->ptr + off;
    char *to = (char *)recv->ptr + off;
    for (int c = 0; c < chunks; c++) {
        size_t at = (size_t)c * MPI_CHUNK, n = count - at < MPI_CHUNK ? count - at : MPI_CHUNK;
        const void *sb = from == to ? MPI_IN_PLACE : (const void *)(from + at * esize);
        if (MPI_Iallreduce(sb, to + at * esize, (int)n, dt, op, p->lane[lane], &r->r[c]) !=
            MPI_SUCCESS) {
            free(r); /* the job aborts: the started chunks are abandoned */
            return GCOMP_IO;
        }
    }
    *req = r;
    return GCOMP_OK;
}

static int mpi_allgather(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                         const gcd_buf *recv, gcd_dreq **req)
{
    mpi_priv *p = priv;
    if (lane < 0 || lane >= p->lanes || bytes > INT_MAX)
        return bytes > INT_MAX ? GCOMP_LIMIT : GCOMP_INVALID;
    gcd_dreq *r = dreq_new(1);
    if (!r)
        return GCOMP_NOMEM;
    if (MPI_Iallgather((char *)send->ptr + off, (int)bytes, MPI_BYTE, recv->ptr, (int)bytes,
                       MPI_BYTE, p->lane[lane], &r->r[0]) != MPI_SUCCESS) {
        free(r);
        return GCOMP_IO;
    }
    *req = r;
    return GCOMP_OK;
}


static int mpi_allgatherv(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                          const gcd_buf *recv, const size_t *counts, const size_t *displs,
                          gcd_dreq **req)
{
    mpi_priv *p = priv;
    if (lane < 0 || lane >= p->lanes || bytes > INT_MAX)
        return bytes > INT_MAX ? GCOMP_LIMIT : GCOMP_INVALID;
    int W = p->nodes;
    gcd_dreq *r = malloc(sizeof(gcd_dreq) + sizeof(MPI_Request) + 2 * (size_t)W * sizeof(int));
    if (!r)
        return GCOMP_NOMEM;
    r->n = 1;
    int *c = (int *)(r->r + 1), *d = c + W;
    for (int w = 0; w < W; w++) {
        if (counts[w] > INT_MAX || displs[w] > INT_MAX) {
            free(r);
            return GCOMP_LIMIT;
        }
        c[w] = (int)counts[w];
        d[w] = (int)displs[w];
    }
    if (MPI_Iallgatherv((char *)send->ptr + off, (int)bytes, MPI_BYTE, recv->ptr, c, d, MPI_BYTE,
                        p->lane[lane], &r->r[0]) != MPI_SUCCESS) {
        free(r);
        return GCOMP_IO;
    }
    *req = r;
    return GCOMP_OK;
}

static int mpi_test(void *priv, gcd_dreq *req, bool *done)
{
    (void)priv;
    int flag = 1;
    if (req->n > 0 && MPI_Testall(req->n, req->r, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        return GCOMP_IO;
    *done = flag != 0;
    if (flag)
        free(req);
    return GCOMP_OK;
}

const gcd_data_ops gcd_data_mpi = {
    .name = "mpi",
    .summary = "MPI non-blocking collectives on host memory (OpenMPI: ob1 or UCX pml)",
    .init = mpi_init,
    .fini = mpi_fini,
    .moves = mpi_moves,
    .allreduce = mpi_allreduce,
    .allgather = mpi_allgather,
    .allgatherv = mpi_allgatherv,
    .test = mpi_test,
};
