/*
 * coord.h: the coordinator of the negotiation (Horovod-style), run on node 0. Each
 * cycle every node reports the buckets its trainers have all submitted (and local
 * failures, shutdown and policy requests); the coordinator answers with one Decision
 * that every node applies in the same order: which bucket steps run now, which fail
 * (with the error naming the bucket and the nodes involved), whether to shut down, and
 * at which step a new policy applies.
 *
 * Pure logic on protobuf messages, no I/O: unit-tested on its own.
 */
#ifndef GCD_COORD_H
#define GCD_COORD_H

#include "gcomp.pb-c.h"

typedef struct gcd_coord gcd_coord;

gcd_coord *gcd_coord_new(int nodes);
/* NULL is a no-op. */
void gcd_coord_free(gcd_coord *c);

/*
 * One cycle: reports[w] is node w's report. Fills *dec (initialised by the caller
 * with GCOMP__DECISION__INIT); free its contents with gcd_coord_decision_clear().
 * Returns 0 or GCOMP_NOMEM.
 */
int gcd_coord_step(gcd_coord *c, Gcomp__NodeReport *const *reports, Gcomp__Decision *dec);
void gcd_coord_decision_clear(Gcomp__Decision *dec);

#endif
