/*
 * mpi.c: the MPI transport (host memory). MPI is initialised with
 * MPI_THREAD_FUNNELED: only the engine, on the main thread, calls it.
 */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../log.h"
#include "gcomp.h"
#include "halfconv.h"
#include "transport.h"

enum { TAG_REPORT = 101, TAG_DECISION = 102 };

typedef struct mpi_priv {
    MPI_Op op_f16, op_bf16; /* sums of IEEE half / bfloat16 elements */
} mpi_priv;

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

static int mpi_init(gcd_transport *t, int *argc, char ***argv)
{
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return GCOMP_IO;
    if (provided < MPI_THREAD_FUNNELED) {
        gcd_log_error("MPI provides thread level %d, gcompd needs MPI_THREAD_FUNNELED", provided);
        MPI_Finalize();
        return GCOMP_NOT_BUILT;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &t->node);
    MPI_Comm_size(MPI_COMM_WORLD, &t->nodes);
    mpi_priv *p = calloc(1, sizeof(*p));
    if (!p)
        return GCOMP_NOMEM;
    MPI_Op_create(sum_f16, 1, &p->op_f16);
    MPI_Op_create(sum_bf16, 1, &p->op_bf16);
    t->priv = p;
    return GCOMP_OK;
}

/* MPI counts are int: large buffers go in chunks. */
#define MPI_CHUNK ((size_t)1 << 30)

static int mpi_allreduce(gcd_transport *t, gk_coll type, void *buf, size_t count)
{
    mpi_priv *p = t->priv;
    MPI_Datatype dt = type == GK_COLL_ALLREDUCE_F32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_Op op = type == GK_COLL_ALLREDUCE_F32 ? MPI_SUM
                : type == GK_COLL_ALLREDUCE_F16 ? p->op_f16 : p->op_bf16;
    size_t esize = type == GK_COLL_ALLREDUCE_F32 ? 4 : 2;
    for (size_t off = 0; off < count; off += MPI_CHUNK) {
        size_t n = count - off < MPI_CHUNK ? count - off : MPI_CHUNK;
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * esize, (int)n, dt, op,
                          MPI_COMM_WORLD) != MPI_SUCCESS)
            return GCOMP_IO;
    }
    return GCOMP_OK;
}

static int mpi_allgatherv(gcd_transport *t, const void *send, size_t bytes, void *recv,
                          const size_t *counts, const size_t *displs)
{
    int *c = malloc(sizeof(int) * t->nodes), *d = malloc(sizeof(int) * t->nodes);
    int rc = GCOMP_NOMEM;
    if (!c || !d)
        goto out;
    rc = GCOMP_LIMIT;
    for (int w = 0; w < t->nodes; w++) {
        if (counts[w] > INT32_MAX || displs[w] > INT32_MAX)
            goto out;
        c[w] = (int)counts[w];
        d[w] = (int)displs[w];
    }
    rc = MPI_Allgatherv(send, (int)bytes, MPI_BYTE, recv, c, d, MPI_BYTE, MPI_COMM_WORLD) ==
                 MPI_SUCCESS
             ? GCOMP_OK
             : GCOMP_IO;
out:
    free(c);
    free(d);
    return rc;
}

static int mpi_allreduce_f64(gcd_transport *t, double *buf, size_t n)
{
    (void)t;
    return MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) ==
                   MPI_SUCCESS
               ? GCOMP_OK
               : GCOMP_IO;
}

static int mpi_allgather_u64(gcd_transport *t, uint64_t value, uint64_t *out)
{
    (void)t;
    return MPI_Allgather(&value, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, MPI_COMM_WORLD) ==
                   MPI_SUCCESS
               ? GCOMP_OK
               : GCOMP_IO;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll with a growing sleep: quick when the answer is near, cheap when it is not. */
static void backoff(int *spins)
{
    if (*spins < 64) {
        (*spins)++;
        return;
    }
    struct timespec ts = {0, *spins < 200 ? 20000 : 200000};
    (*spins)++;
    nanosleep(&ts, NULL);
}

/* Receive one message with the tag from `src`, waiting at most until deadline. */
static int recv_var(int src, int tag, void **out, size_t *len, int64_t deadline)
{
    int flag = 0, spins = 0;
    MPI_Message msg;
    MPI_Status st;
    for (;;) {
        MPI_Improbe(src, tag, MPI_COMM_WORLD, &flag, &msg, &st);
        if (flag)
            break;
        if (mono_ms() > deadline)
            return GCOMP_STALL;
        backoff(&spins);
    }
    int n;
    MPI_Get_count(&st, MPI_BYTE, &n);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf)
        return GCOMP_NOMEM;
    MPI_Mrecv(buf, n, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
    *out = buf;
    *len = (size_t)n;
    return GCOMP_OK;
}

/* Send without blocking forever: a peer that stopped answering is reported, not awaited. */
static int send_var(int dst, int tag, const void *buf, size_t len, int64_t deadline)
{
    MPI_Request req;
    int flag = 0, spins = 0;
    MPI_Isend(buf, (int)len, MPI_BYTE, dst, tag, MPI_COMM_WORLD, &req);
    for (;;) {
        MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
        if (flag)
            return GCOMP_OK;
        if (mono_ms() > deadline) {
            MPI_Cancel(&req);
            return GCOMP_STALL;
        }
        backoff(&spins);
    }
}

static int mpi_gather_report(gcd_transport *t, const void *mine, size_t len, void **reports,
                             size_t *lens, int timeout_ms, int *stalled)
{
    int64_t deadline = mono_ms() + timeout_ms;
    if (t->node != 0) {
        int rc = send_var(0, TAG_REPORT, mine, len, deadline);
        if (rc == GCOMP_STALL)
            *stalled = 0;
        return rc;
    }
    reports[0] = malloc(len ? len : 1);
    if (!reports[0])
        return GCOMP_NOMEM;
    memcpy(reports[0], mine, len);
    lens[0] = len;
    for (int w = 1; w < t->nodes; w++) {
        int rc = recv_var(w, TAG_REPORT, &reports[w], &lens[w], deadline);
        if (rc) {
            *stalled = w;
            return rc;
        }
    }
    return GCOMP_OK;
}

static int mpi_bcast_decision(gcd_transport *t, const void *buf, size_t len, void **out,
                              size_t *outlen, int timeout_ms, int *stalled)
{
    int64_t deadline = mono_ms() + timeout_ms;
    if (t->node != 0) {
        int rc = recv_var(0, TAG_DECISION, out, outlen, deadline);
        if (rc == GCOMP_STALL)
            *stalled = 0;
        return rc;
    }
    for (int w = 1; w < t->nodes; w++) {
        int rc = send_var(w, TAG_DECISION, buf, len, deadline);
        if (rc) {
            *stalled = w;
            return rc;
        }
    }
    *out = malloc(len ? len : 1);
    if (!*out)
        return GCOMP_NOMEM;
    memcpy(*out, buf, len);
    *outlen = len;
    return GCOMP_OK;
}

static void mpi_abort(gcd_transport *t, int code)
{
    (void)t;
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void mpi_fini(gcd_transport *t)
{
    mpi_priv *p = t->priv;
    if (p) {
        MPI_Op_free(&p->op_f16);
        MPI_Op_free(&p->op_bf16);
        free(p);
    }
    MPI_Finalize();
}

const gcd_transport_ops gcd_transport_mpi = {
    .name = "mpi",
    .summary = "MPI collectives on host memory (OpenMPI: ob1 or UCX pml)",
    .init = mpi_init,
    .allreduce = mpi_allreduce,
    .allgatherv = mpi_allgatherv,
    .allreduce_f64 = mpi_allreduce_f64,
    .allgather_u64 = mpi_allgather_u64,
    .gather_report = mpi_gather_report,
    .bcast_decision = mpi_bcast_decision,
    .abort = mpi_abort,
    .fini = mpi_fini,
};
