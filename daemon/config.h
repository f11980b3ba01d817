/*
 * config.h: gcompd's settings. Each key can be set, in increasing precedence, by its
 * default, a config file (--config FILE, lines "key = value", # comments), the
 * environment (GCOMP_<KEY>, dashes as underscores) and the command line (--key value).
 */
#ifndef GCD_CONFIG_H
#define GCD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GCD_MAX_NODES 1024
#define GCD_MAX_TRAINERS 64 /* per node */

typedef struct gcd_config {
    char dir[200];
    char job_id[128];
    char trainers[512];   /* "T" or "T0,T1,..." as given */
    char policy[512];     /* policy spec; --codec SPEC becomes "static:codec=SPEC" */
    char transport[32];
    char stats_file[512];
    char decision_log[512];
    char timeline[512];   /* Chrome trace file template ("" = none; timeline.h) */
    char metrics_listen[128]; /* HOST:PORT[+node] of the /metrics endpoint ("" = none;
                                 http.h) */
    char restore[512];    /* checkpoint directory to start from ("" = none) */
    int timeout_ms;       /* a node silent this long in a negotiation is reported stalled */
    int cycle_ms;         /* longest wait between negotiation cycles when idle */
    uint64_t seed;        /* job seed for shared randomness */
    int log_level;
    bool nonfinite_skip;  /* non-finite input: skip the layer (else fail the step) */
    int threads;          /* worker threads for codec work; 0: the cores, at most 8 */
    int max_buckets;      /* live buckets per daemon (and per trainer connection) */
    uint64_t max_bytes;   /* shared memory for buckets; 0: the machine's memory */
    int hello_timeout_ms; /* a connection that says nothing this long is closed */
    int lanes;            /* bucket steps in flight at once (pipeline depth) */
} gcd_config;

/* Parse everything; on error writes a message naming the key to err and returns
   GCOMP_INVALID. Returns 1 (not an error) when --help was printed. */
int gcd_config_load(int argc, char **argv, gcd_config *cfg, char *err, size_t errlen);

/* Trainers expected on node k (from cfg->trainers), or a negative status with err. */
int gcd_config_trainers(const gcd_config *cfg, int node, int nodes, char *err, size_t errlen);

void gcd_config_usage(FILE *out);

#endif
