/*
 * metrics.h: this node's counters, gauges and histograms, for Prometheus (`gcompctl
 * stats --prometheus` and the --metrics-listen HTTP endpoint, http.c), rendered in the
 * text exposition format 0.0.4. Every sample has a `node` label.
 *
 *   gcomp_steps_total{bucket}            counter   bucket steps finished on this node
 *   gcomp_bytes_in_total{bucket}         counter   dense bytes of those steps (the
 *                                                  bucket's float32 size, per step)
 *   gcomp_bytes_out_total{bucket}        counter   payload bytes this node sent for them
 *   gcomp_compression_ratio{bucket}      gauge     the last step's dense / payload bytes
 *   gcomp_step_errors_total{status}      counter   bucket steps failed, by status name
 *                                                  (every error status, 0 until it occurs)
 *   gcomp_step_seconds                   histogram a step's time, ready to result
 *   gcomp_phase_seconds{phase}           histogram per step: wait, sum, prepare, collect,
 *                                                  encode, collective, decode
 *   gcomp_layer_codec{bucket,layer,codec,spec}  gauge 1: the codec the last step used
 *   gcomp_trainers_connected             gauge     trainers connected to this daemon
 *   gcomp_trainers_expected              gauge     trainers this node serves in the job
 *
 * The series of a bucket stay after it is unregistered (counters never go back).
 *
 * Threads: any; one mutex of its own guards everything (the engine updates once per
 * bucket step, the loop thread renders). It may be taken under gcd.mu, never the other
 * way round.
 */
#ifndef GCD_METRICS_H
#define GCD_METRICS_H

#include <stddef.h>

#include "stats.h"

typedef struct gcd_metrics gcd_metrics;

/* The histograms' upper bounds in seconds (le), ascending; +Inf comes after them. */
#define GCD_METRICS_LE(X)                                                                  \
    X(0.0001) X(0.00025) X(0.0005) X(0.001) X(0.0025) X(0.005) X(0.01) X(0.025) X(0.05)    \
    X(0.1) X(0.25) X(0.5) X(1) X(2.5) X(5) X(10) X(30)

/* A store for node with `expected` trainers. Returns 0, or GCOMP_NOMEM (*out NULL).
   The caller owns *out. */
int gcd_metrics_create(int node, int expected, gcd_metrics **out);
/* Frees m; NULL: nothing. */
void gcd_metrics_destroy(gcd_metrics *m);

/* A finished bucket step (status 0: counted with its bytes, times and codecs) or a
   failed one (status < 0: counted under its status name; only r->bucket is read).
   Engine thread (gcd_stats_record). NULL m: nothing. */
void gcd_metrics_step(gcd_metrics *m, const gcd_step_record *r, int status);

/* The number of trainers connected now. Loop thread. NULL m: nothing. */
void gcd_metrics_trainers(gcd_metrics *m, int connected);

/* The text exposition format (0.0.4) of everything, NUL-terminated, into a buffer the
   caller frees (*len without the NUL). Returns 0 or GCOMP_NOMEM (*text NULL). */
int gcd_metrics_render(gcd_metrics *m, char **text, size_t *len);

#endif
