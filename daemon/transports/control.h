/*
 * control.h: the control plane between the daemons of a job, on MPI: start-up,
 * negotiation messages (node reports to node 0, its decisions back), small reductions
 * of policy statistics and abort. The data plane (data.h) moves the gradients; it may
 * be another transport, bootstrapped through this one. Liveness (which node stopped
 * answering) is asked over UDP, not MPI (daemon/liveness.h).
 *
 * Every call but gcd_ctl_init and the start-up collectives (gcd_ctl_allgather*) is
 * non-blocking: the engine polls, so one slow exchange never stops the others.
 *
 * Threads: the engine thread only (MPI_THREAD_FUNNELED); MPI is initialised here.
 */
#ifndef GCD_CONTROL_H
#define GCD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gcd_ctl gcd_ctl;
typedef struct gcd_ctl_req gcd_ctl_req;

typedef enum gcd_ctl_op { GCD_CTL_SUM = 0, GCD_CTL_MAX = 1 } gcd_ctl_op;

/* Initialise MPI (argc/argv may be consumed) with `lanes` independent streams of small
   reductions. Returns 0, or GCOMP_IO / GCOMP_NOT_BUILT (thread level) with a message
   logged. */
int gcd_ctl_init(int *argc, char ***argv, int lanes, gcd_ctl **out);
int gcd_ctl_node(const gcd_ctl *c);
int gcd_ctl_nodes(const gcd_ctl *c);
/* Start-up, blocking, every node calls: out[w] = node w's value. */
int gcd_ctl_allgather_u64(gcd_ctl *c, uint64_t value, uint64_t *out);
/* Every node contributes `len` bytes (the same len everywhere); out gets nodes * len. */
int gcd_ctl_allgather_bytes(gcd_ctl *c, const void *mine, size_t len, void *out);

/* Negotiation. A node other than 0 sends its report (copied; at most one in flight)
   and polls for the decision; node 0 polls for each node's report and sends the
   decision to every node (copied). Polls set *got and hand over a malloc'd buffer
   (the caller frees it). */
int gcd_ctl_report_send(gcd_ctl *c, const void *buf, size_t len);
int gcd_ctl_report_poll(gcd_ctl *c, int from, void **buf, size_t *len, bool *got);
int gcd_ctl_decision_send(gcd_ctl *c, const void *buf, size_t len);
int gcd_ctl_decision_poll(gcd_ctl *c, void **buf, size_t *len, bool *got);

/* Start a sum or max of n doubles over every node, in place, on a lane: the reductions
   of one lane must be started in the same order on every node. */
int gcd_ctl_iallreduce(gcd_ctl *c, int lane, double *buf, size_t n, gcd_ctl_op op,
                       gcd_ctl_req **req);
/* *done when complete (the request is then freed). */
int gcd_ctl_test(gcd_ctl *c, gcd_ctl_req *req, bool *done);

/* Take the whole job down at once (a fatal error: the nodes are out of step). */
void gcd_ctl_abort(gcd_ctl *c, int code);
/* Orderly end; NULL is a no-op. */
void gcd_ctl_fini(gcd_ctl *c);

#endif
