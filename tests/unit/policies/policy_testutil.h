/*
 * policy_testutil.h: what the policy tests share: collect() with a scratch arena as the
 * engine's workers give it, collect() from two threads at once, and checkpoints in
 * memory (open_memstream / fmemopen through gk_writer / gk_reader).
 */
#ifndef GP_POLICY_TESTUTIL_H
#define GP_POLICY_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* collect() as an engine worker calls it: exec with the calling thread's own scratch
   arena, released after the call. Returns collect()'s status. */
int tu_collect(gp_instance *p, const gp_layer *layer, int64_t step, const float *g,
               const float *x, double *stats);

/* One collect() call. */
typedef struct tu_job {
    const gp_layer *layer;
    int64_t step;
    const float *g, *x;
    double *stats; /* nstats slots */
} tu_job;

/* Run jobs[0..n) on two threads that start together (even jobs on one, odd ones on the
   other, each in order), each with its own arena; asserts every call returned
   GCOMP_OK. */
void tu_collect_two_threads(gp_instance *p, const tu_job *jobs, int n);

/* The policy's checkpoint (save() asserted to succeed) in a malloc'd buffer of *len
   bytes; the caller frees it. */
unsigned char *tu_save(gp_instance *p, size_t *len);

/* Asserts that a and b (the same policy) save the same bytes: the same state. */
void tu_assert_same_state(gp_instance *a, gp_instance *b);

/* load() from buf[len]; err (may be NULL) gets the reader's message (empty on success).
   A successful load is asserted to have read all of buf. Returns load()'s status. */
int tu_load(gp_instance *p, const void *buf, size_t len, char *err, size_t errlen);

/* A saved record with another format version: the u32 after the 4-byte tag. */
void tu_set_version(unsigned char *buf, uint32_t version);

/* The common checks of a policy's checkpoint format, on a checkpoint ck[len] of p's
   policy and arguments: a copy with format version 99 and every truncation of it (at a
   spread of lengths, 0 included) are refused with a message, and the state is left as
   it was (a second save gives the same bytes). */
void tu_check_refusals(gp_instance *p, const unsigned char *ck, size_t len);

#endif
