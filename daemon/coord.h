/*
 * coord.h: the coordinator of the negotiation (Horovod-style), run on node 0. Each
 * cycle every node reports the buckets its trainers have all submitted (and local
 * failures, shutdown and policy requests); the coordinator answers with one Decision
 * that every node applies in the same order: which bucket steps run now, which fail
 * (with the error naming the bucket and the nodes involved), whether to shut down, at
 * which step a new policy applies, and up to which bucket step every node holds the
 * policy statistics (observe_through). It numbers each bucket when first announced
 * (DecisionEntry.uid) with a hash of its name, the next free number on a collision:
 * layer ids are unique by construction and, but for collisions, the same in every run.
 *
 * Pure logic on protobuf messages, no I/O: unit-tested on its own.
 */
#ifndef GCD_COORD_H
#define GCD_COORD_H

#include "base/binio.h"
#include "gcomp.pb-c.h"

typedef struct gcd_coord gcd_coord;

/* TraceDecision.kind: a recording starts (every node records steps from from_step on),
   gets its end (trace stop: end_step), finishes (every node wrote all it will, or one
   failed: complete steps and the error), or an ask is refused (origin answers error). */
enum { GCD_TRACE_START = 1, GCD_TRACE_STOP, GCD_TRACE_FINISH, GCD_TRACE_REFUSE };

/* timeout_ms: a bucket step that some nodes never report (their trainers registered
   other names) fails after this long. The engine gives twice --timeout-ms, so that a
   node's own, more precise reason (a slot that never registered or submitted, checked
   after --timeout-ms) arrives first. */
gcd_coord *gcd_coord_new(int nodes, int timeout_ms);
/* NULL is a no-op. */
void gcd_coord_free(gcd_coord *c);

/*
 * One cycle at time now_ms (the monotonic clock): reports[w] is node w's report. Fills
 * *dec (initialised by the caller with GCOMP__DECISION__INIT); free its contents with
 * gcd_coord_decision_clear(). Returns 0 or GCOMP_NOMEM.
 */
int gcd_coord_step(gcd_coord *c, Gcomp__NodeReport *const *reports, int64_t now_ms,
                   Gcomp__Decision *dec);
void gcd_coord_decision_clear(Gcomp__Decision *dec);
/* The recording in progress (its id, 0: none); written[nodes] gets the steps each node
   last reported completely written (what a manifest may claim if the job stops now). */
uint64_t gcd_coord_trace(const gcd_coord *c, int64_t *written);

/* Checkpoints: the buckets' numbers ('COOR' record), so that a restored job gives
   every bucket the number (and its layers the ids) its saved state was made with. */
int gcd_coord_save(const gcd_coord *c, gk_writer *w);
int gcd_coord_load(gcd_coord *c, gk_reader *r);

#endif
