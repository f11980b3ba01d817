/*
 * perfmodel.h: the performance model of the perfmodel policy (algorithms.md 3.6, "On the
 * utility of gradient compression"), as plain functions so that tests can check them
 * against hand-computed values. Times are in milliseconds, sizes in bytes, bandwidths in
 * bytes per millisecond.
 */
#ifndef GP_PERFMODEL_H
#define GP_PERFMODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

/* At most this many candidates besides none. */
#define GP_PERF_MAX_CANDIDATES 8

/* What collect() measures per layer and candidate (the engine averages it over the
   nodes): the encode time of all phases, the decode time of the allreduce phases, the
   decode time of the allgather phases (measured as the only node: it grows with the
   number of nodes), and the bytes the allgather phases sent (8-byte aligned). */
enum {
    GP_PERF_ENCODE_MS = 0,
    GP_PERF_DECODE_AR_MS = 1,
    GP_PERF_DECODE_AG_MS = 2,
    GP_PERF_AG_BYTES = 3,
    GP_PERF_NSTAT = 4,
};

/* Numbers collect() writes per layer: GP_PERF_NSTAT per candidate slot, candidate i at
   i * GP_PERF_NSTAT; slots of absent candidates are 0. */
#define GP_PERF_NSTATS (GP_PERF_MAX_CANDIDATES * GP_PERF_NSTAT)

/* Ring allreduce of `bytes` over `nodes`: 2 alpha (p - 1) + 2 b (p - 1) / (p BW).
   0 for fewer than 2 nodes or no bytes; a bandwidth <= 0 counts as unlimited. */
double gp_perf_predict_allreduce_ms(double bytes, int nodes, double alpha_ms,
                                    double bw_bytes_ms);

/* Ring allgather of `bytes_per_node` from every node: alpha (p - 1) + b (p - 1) / BW.
   0 for fewer than 2 nodes; a bandwidth <= 0 counts as unlimited. */
double gp_perf_predict_allgather_ms(double bytes_per_node, int nodes, double alpha_ms,
                                    double bw_bytes_ms);

/* One bucket of a training iteration, as the timeline model sees it. */
typedef struct gp_perf_stage {
    double ready_ms;  /* the bucket is ready (all its trainers submitted) this long after
                         the iteration's first submission */
    double encode_ms; /* its encodes, on the daemon's workers */
    double comm_ms;   /* its collectives, on the network */
    double decode_ms; /* its decodes, on the workers, after the collectives */
} gp_perf_stage;

/*
 * The iteration time the timeline model predicts for n buckets given in the order they
 * become ready (ready_ms not decreasing): each bucket encodes on the workers from its
 * ready time, then runs its collectives on the network, then decodes on the workers.
 * The workers and the network each do one thing at a time, first come first served (a
 * decode that arrives before a later bucket is ready runs first). The iteration ends
 * when every bucket's result is complete (and not before the last bucket is ready),
 * plus gap_ms, the forward pass and optimizer before the next one. INFINITY when out of
 * memory. busy_ms (may be NULL) gets the time the network is busy before the last bucket
 * is ready (beside the backward pass).
 */
double gp_perf_timeline_ms(const gp_perf_stage *st, int n, double gap_ms, double *busy_ms);

/* What one bucket's exchange costs under one spec. */
typedef struct gp_perf_cost {
    double encode_ms;        /* encode of the compressed layers, all phases */
    double decode_ms;        /* their decode, all phases */
    double encode_decode_ms; /* the two together */
    double comm_ms;          /* the collectives: dense allreduce, then each phase's */
    double sent_bytes;       /* bytes one node puts into the exchange */
    int ncompressed;         /* layers the codec takes */
} gp_perf_cost;

/*
 * The cost of exchanging a bucket of `nlayers` layers under `spec` (NULL or the codec
 * none: every layer dense) on `nodes` nodes. Layers the engine sends dense
 * (gk_spec_compresses() false) go in one allreduce of float32; the compressed ones share
 * one collective per phase (allreduce of the payload bytes, exact, or allgather; a
 * variable-size allgather after an allgather of 8 bytes per node, the sizes). Payload
 * sizes are per step on average (gp_payload_mean). stats (may be NULL) gives, for layer
 * l, the GP_PERF_NSTAT numbers measured for this spec at stats + l * stride: encode and
 * decode times (allgather decode scaled by the number of nodes) and the allgather
 * bytes. Without stats the allgather bytes are the payload bound and encode/decode
 * counts 0.
 */
void gp_perf_bucket_cost(const gk_layer *layers, int nlayers, const gk_spec *spec,
                         const double *stats, size_t stride, int nodes, double alpha_ms,
                         double bw_bytes_ms, gp_perf_cost *out);

/* A bandwidth: a positive number and a unit, bits per second with kbit, mbit, gbit,
   tbit, kbps, mbps, gbps, tbps or kb/s, mb/s, gb/s, tb/s, bytes per second with B/s,
   kB/s, MB/s, GB/s, TB/s (letters in any case but the b or B before "/s" or "ps", so
   "GBps" is refused rather than read as bits): "10gbit", "1.25GB/s". Writes bytes per
   millisecond; GCOMP_INVALID for a bare number, an unknown unit, or a number that is
   not positive and finite. */
int gp_perf_parse_bandwidth(const char *text, double *bytes_ms);

/* The accepted units, comma-separated, into buf[len] (terminated when len > 0); returns
   the length it needed, like snprintf. */
size_t gp_perf_bandwidth_units(char *buf, size_t len);

#endif /* GP_PERFMODEL_H */
