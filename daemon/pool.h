/*
 * pool.h: the engine's worker threads (--threads N). The engine hands them batches of
 * jobs (a codec's encode or decode per layer, a local sum per chunk, a policy's
 * collect per layer) and polls each batch for completion; a finished batch wakes the
 * engine. Workers never call MPI or the policies' decide/observe: they run codec and
 * policy functions on data the engine gave them, each with its own scratch arena and
 * BLAS single-threaded.
 *
 * Threads: gcd_pool_run and gcd_batch_* from the engine thread; jobs on the workers.
 */
#ifndef GCD_POOL_H
#define GCD_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

typedef struct gcd_pool gcd_pool;

/* One job of a batch: fn(arg, index, exec), 0 or a negative status. */
typedef int (*gcd_job_fn)(void *arg, size_t index, const gk_exec *exec);

/* Jobs the engine waits for together. Zero-initialised: empty and done. */
typedef struct gcd_batch {
    atomic_bool running; /* jobs not all finished (set last, after t_end) */
    atomic_size_t left;  /* jobs not finished */
    atomic_int status;   /* the first failure, or 0 */
    double t_start;      /* when it was handed out (gk_now_s) */
    double t_end;        /* when its last job finished */
} gcd_batch;

/* Start `threads` workers; wake(ctx) is called (from a worker) whenever a batch
   finishes. Returns 0 or GCOMP_NOMEM / GCOMP_IO. */
int gcd_pool_new(int threads, void (*wake)(void *ctx), void *ctx, gcd_pool **out);
/* Stop and join the workers after the queued jobs ran; NULL is a no-op. */
void gcd_pool_free(gcd_pool *p);
int gcd_pool_threads(const gcd_pool *p);

/* Queue n jobs fn(arg, i) for i in 0..n-1 as batch b (which must be done). n == 0
   leaves b done. Returns 0 or GCOMP_NOMEM (then nothing was queued). */
int gcd_pool_run(gcd_pool *p, gcd_batch *b, gcd_job_fn fn, void *arg, size_t n);
/* Whether all of b's jobs finished (then b's status and times are final). */
bool gcd_batch_done(const gcd_batch *b);
/* Jobs queued or running in the whole pool (for the engine's wait strategy). */
size_t gcd_pool_busy(const gcd_pool *p);

#endif
