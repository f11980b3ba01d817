/*
 * stats.h: per step and bucket records (JSON lines in the stats file) and running
 * totals per bucket for `gcompctl stats`.
 */
#ifndef GCD_STATS_H
#define GCD_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "codec.h"
#include "gcomp.h"

typedef struct gcd_stats_bucket {
    char name[GCOMP_MAX_NAME + 1];
    uint64_t steps, failed;
    uint64_t dense_bytes, payload_bytes;
    double t_sum_ms, t_wait_ms, t_exchange_ms, t_total_ms; /* sums over steps */
    int64_t last_step;
    char *last_json;   /* the last step's record (the stats file's line), or NULL */
    char *last_text;   /* the same, per layer, for people */
} gcd_stats_bucket;

typedef struct gcd_stats {
    FILE *file;               /* JSON lines; NULL when not asked for */
    gcd_stats_bucket *b;      /* totals, under gcd.mu */
    size_t n, cap;
    uint64_t nonfinite;       /* steps failed for non-finite input */
    uint64_t nonfinite_skipped; /* layers skipped for non-finite input (nonfinite=skip) */
} gcd_stats;

/* One layer of a finished bucket step. */
typedef struct gcd_step_layer {
    const char *name;
    size_t numel;
    const gk_spec *spec;  /* NULL: sent dense */
    size_t payload;       /* the layer's own bytes */
} gcd_step_layer;

/* A finished bucket step on this node: the stats file's line and the totals. Times in
   ms: sum (local sum), wait (ready to start of the exchange: negotiation and the
   lane's queue), prep (x += g), collect (the policy's statistics), encode, collective
   and decode (summed over the exchanges of the step), exchange (start to the last
   decode), total (ready to result). */
typedef struct gcd_step_record {
    const char *bucket;
    int64_t step;
    int node, nodes, trainers, lane;
    size_t dense_bytes, payload_bytes;
    double t_sum_ms, t_wait_ms, t_prep_ms, t_collect_ms, t_encode_ms, t_collective_ms,
        t_decode_ms, t_exchange_ms, t_total_ms;
    int nonfinite_skipped;
    const char *policy;
    size_t nlayers;
    const gcd_step_layer *layers;
} gcd_step_record;

struct gcd;
/* Write the step's line (status 0) and add it to the bucket's totals (status != 0:
   counted as failed, r->bucket and r->step only), and to the metrics (metrics.h).
   Engine thread; takes gcd.mu. */
void gcd_stats_record(struct gcd *d, const gcd_step_record *r, int status);

/* The path of node's file from a per-node template (the stats file's, the decision
   log's, the timeline's): "{node}" replaced by the node; without it only node 0 writes.
   Returns false when this node writes none (no template, or not node 0). Any thread. */
bool gcd_stats_path(const char *tmpl, int node, char *path, size_t len);
/* Open the stats file for this node if the template asks for one (gcd_stats_path).
   Returns 0 or GCOMP_IO with err. */
int gcd_stats_open(gcd_stats *s, const char *tmpl, int node, char *err, size_t errlen);
void gcd_stats_close(gcd_stats *s);
/* Totals of a bucket, created on first use (under gcd.mu); NULL on out of memory. */
gcd_stats_bucket *gcd_stats_bucket_get(gcd_stats *s, const char *name);
/* The totals as JSON or text (under gcd.mu). */
void gcd_stats_report(const gcd_stats *s, int json, char *out, size_t len);

#endif
