/*
 * transport.h: collectives between the daemons of a job. One vtable per transport,
 * listed in transports/registry.c. Called from the engine thread only.
 *
 * Negotiation uses gather_report/bcast_decision, which time out and name the node
 * that stopped answering; data exchanges use the blocking collectives.
 */
#ifndef GCD_TRANSPORT_H
#define GCD_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

typedef struct gcd_transport gcd_transport;

typedef struct gcd_transport_ops {
    const char *name;    /* never NULL */
    const char *summary; /* never NULL */
    /* Start the transport; sets t->node and t->nodes. argc/argv may be consumed (MPI).
       Returns 0, GCOMP_NOT_BUILT when compiled out, or another negative status. */
    int (*init)(gcd_transport *t, int *argc, char ***argv);
    /* Sum count elements of the given type (GK_COLL_ALLREDUCE_*) over all nodes, in
       place. Never NULL. */
    int (*allreduce)(gcd_transport *t, gk_coll type, void *buf, size_t count);
    /* Every node sends `bytes` bytes; recv gets node w's bytes at displs[w] (counts[w]
       bytes), for counts that every node passes identically. Never NULL. */
    int (*allgatherv)(gcd_transport *t, const void *send, size_t bytes, void *recv,
                      const size_t *counts, const size_t *displs);
    /* Sum n doubles over all nodes, in place (policy statistics, probes). Never NULL. */
    int (*allreduce_f64)(gcd_transport *t, double *buf, size_t n);
    /* Every node contributes one uint64; out[w] = node w's value. Never NULL. */
    int (*allgather_u64)(gcd_transport *t, uint64_t value, uint64_t *out);
    /* Node 0 receives each other node's report (variable bytes); reports[w] is malloc'd
       (the caller frees), lens[w] its size. Other nodes send theirs. If a node sends
       nothing within timeout_ms, returns GCOMP_STALL with *stalled = that node.
       Never NULL. */
    int (*gather_report)(gcd_transport *t, const void *mine, size_t len, void **reports,
                         size_t *lens, int timeout_ms, int *stalled);
    /* Node 0 sends buf[len] to every node; others receive into a malloc'd *out. Times
       out like gather_report (*stalled = 0 on the receiving side). Never NULL. */
    int (*bcast_decision)(gcd_transport *t, const void *buf, size_t len, void **out,
                          size_t *outlen, int timeout_ms, int *stalled);
    /* Stop everything at once after a fatal error (the other nodes are taken down
       too). Never NULL. */
    void (*abort)(gcd_transport *t, int code);
    /* Orderly end. May be NULL. */
    void (*fini)(gcd_transport *t);
} gcd_transport_ops;

struct gcd_transport {
    const gcd_transport_ops *ops;
    int node, nodes;
    void *priv; /* the transport's own state */
};

extern const gcd_transport_ops *const gcd_transports[];
extern const int gcd_ntransports;

/* Find a transport by name; NULL if none. */
const gcd_transport_ops *gcd_transport_find(const char *name);

#endif
