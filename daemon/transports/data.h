/*
 * data.h: the data plane, the collectives that move gradients and compressed payloads
 * between the daemons of a job. One vtable per transport, all listed in
 * transports/registry.c (a transport that was not built answers "not built in").
 *
 * The contract:
 *  - Collectives are non-blocking: a start call returns a request, test() drives it
 *    and says when it is done. They never time out on their own: the engine puts a
 *    deadline on every request it starts and names the node that went silent
 *    (control.h: gcd_ctl_find_silent).
 *  - Lanes: the transport keeps `lanes` independent streams of collectives. Every node
 *    starts the same collectives on a lane in the same order (the engine runs one
 *    bucket step per lane at a time, and the steps of a lane in the negotiated order);
 *    collectives of different lanes may be in flight together and never wait on each
 *    other.
 *  - Buffers are tagged with their memory space (gk_mem); alloc() gives memory the
 *    transport moves fast (registered, pinned or on the device); buffers made elsewhere
 *    (the shared result regions) work too when their space is one moves() accepts.
 *  - Allreduce sums elements of a gk_coll type from send into recv (float32; fp16/bf16
 *    summed in float32 and rounded per element); recv may be send (in place), but two
 *    buffers may be faster (Open MPI's in-place MPI_Iallreduce copies the whole
 *    buffer). Allgather: every node's `bytes` bytes land at
 *    recv + w * bytes. Allgatherv: node w's bytes land at recv + displs[w], counts[w]
 *    long, counts that every node passes identically.
 *
 * Threads: the engine thread only.
 */
#ifndef GCD_DATA_H
#define GCD_DATA_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"
#include "control.h"

/* A buffer a collective reads or writes. */
typedef struct gcd_buf {
    void *ptr;
    size_t bytes;
    gk_mem mem;
    void *reg;      /* the transport's registration from alloc(), or NULL */
} gcd_buf;

/* A collective in flight (the transport's own). */
typedef struct gcd_dreq gcd_dreq;

typedef struct gcd_data_ops {
    const char *name;    /* never NULL */
    const char *summary; /* never NULL; says "not built in" for a stub */
    /* Start the transport for `lanes` lanes, bootstrapped through the control plane
       (every node calls it at the same point). Returns 0, GCOMP_NOT_BUILT when compiled
       out, or another status; err says why. Never NULL. */
    int (*init)(gcd_ctl *ctl, int lanes, void **priv, char *err, size_t errlen);
    /* Orderly end; NULL is a no-op. */
    void (*fini)(void *priv);
    /* Whether the transport moves buffers of that memory space. Never NULL. */
    bool (*moves)(void *priv, gk_mem mem);
    /* Memory of the space for collectives; NULL: host memory from malloc. */
    int (*alloc)(void *priv, gk_mem mem, size_t bytes, gcd_buf *out);
    /* Free what alloc() gave; NULL when alloc is. */
    void (*release)(void *priv, gcd_buf *b);
    /* Start collectives (see above). Offsets are in bytes. Never NULL. */
    int (*allreduce)(void *priv, int lane, gk_coll type, const gcd_buf *send,
                     const gcd_buf *recv, size_t off, size_t count, gcd_dreq **req);
    int (*allgather)(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                     const gcd_buf *recv, gcd_dreq **req);
    int (*allgatherv)(void *priv, int lane, const gcd_buf *send, size_t off, size_t bytes,
                      const gcd_buf *recv, const size_t *counts, const size_t *displs,
                      gcd_dreq **req);
    /* Drive a request; *done when complete (the request is then freed). Never blocks.
       Never NULL. */
    int (*test)(void *priv, gcd_dreq *req, bool *done);
} gcd_data_ops;

/* A started data plane. */
typedef struct gcd_data {
    const gcd_data_ops *ops;
    void *priv;
} gcd_data;

extern const gcd_data_ops *const gcd_data_transports[];
extern const int gcd_ndata_transports;

/* Find a data transport by name; NULL if none. */
const gcd_data_ops *gcd_data_find(const char *name);

/* Memory for collectives through the transport (malloc'd host memory when it has no
   allocator), and its release. */
int gcd_data_alloc(gcd_data *d, gk_mem mem, size_t bytes, gcd_buf *out);
void gcd_data_release(gcd_data *d, gcd_buf *b);

#endif
