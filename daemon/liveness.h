/*
 * liveness.h: which daemons of the job still answer, asked over UDP rather than MPI
 * (pinging a dead peer over MPI's TCP transport can abort the process that asks).
 *
 * Every daemon's loop thread answers pings on a UDP socket, so a node whose engine is
 * busy still answers and a stopped or dead one does not; the engine asks when it needs
 * to name a node (a collective past its deadline, a broken exchange, mpirun's SIGTERM
 * after a peer died). At start-up every node learns every node's port, IPv4 addresses
 * and the job's token over the control plane, and checks once that the pings get
 * through: where UDP between the nodes is blocked, liveness is unknown and the errors
 * say so instead of blaming a node.
 *
 * Threads: gcd_live_start from the main thread at start-up (before the loop thread
 * runs), gcd_live_check from the engine thread; the answering runs on the loop thread.
 */
#ifndef GCD_LIVENESS_H
#define GCD_LIVENESS_H

#include <uv.h>

#include "transports/control.h"

typedef struct gcd_live gcd_live;

/* Open the sockets (the answering one on loop), exchange addresses with every node (a
   collective: every node calls it). Returns 0 or an error (logged). */
int gcd_live_start(gcd_ctl *ctl, uv_loop_t *loop, gcd_live **out);
/* The first check, once every node's loop thread runs: where a node does not answer
   within wait_ms, liveness is switched off (logged). */
void gcd_live_verify(gcd_live *l, int wait_ms);
/* Ping every other node and wait up to wait_ms: *node is the lowest that did not
   answer, or -1 if all did. GCOMP_NOT_FOUND when liveness is off (unknown). */
int gcd_live_check(gcd_live *l, int wait_ms, int *node);
/* Close the answering socket (loop thread, when it stops) and free; NULL is a no-op. */
void gcd_live_close(gcd_live *l);
void gcd_live_free(gcd_live *l);

#endif
