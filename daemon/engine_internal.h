/*
 * engine_internal.h: the engine's own types, shared by engine.c and checkpoint.c only.
 * Everything here lives on the engine thread.
 */
#ifndef GCD_ENGINE_INTERNAL_H
#define GCD_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "coord.h"
#include "daemon.h"
#include "policy.h"

/* Per-layer engine state of a bucket. */
typedef struct eng_layer {
    gk_layer geom;
    gk_spec spec;     /* in force at the last step */
    bool has_spec;
    bool compressed;
    float *x;         /* EF buffer (numel), compressed layers only */
    void *state;      /* codec state */
    size_t payload;   /* bytes this layer sent at the last step */
} eng_layer;

typedef struct gcd_engine_bucket {
    eng_layer *layers;
    double t_ready, t_prev_ready, t_sum_ms;
    int skipped;      /* layers whose non-finite input was skipped this step */
} gcd_engine_bucket;

/* The policies in force: a new one applies from its step on. */
#define MAX_POLICIES 8
typedef struct policy_slot {
    int64_t from_step;
    gp_instance *p;
} policy_slot;

typedef struct ctl_wait {
    uint64_t ctl_id;
    char spec[512];
} ctl_wait;

/* A bucket's layers read from a checkpoint, adopted when the bucket first runs. */
typedef struct saved_bucket {
    char name[GCOMP_MAX_NAME + 1];
    size_t n;
    eng_layer *layers;
    struct saved_bucket *next;
} saved_bucket;

typedef struct engine {
    gcd *d;
    saved_bucket *saved;  /* from --restore, not yet adopted */
    ctl_wait *ckpt_asks;  /* checkpoints asked here: to send, then waiting */
    size_t nckpt, sent_ckpt;
    gp_env env;       /* what policies are made with */
    bool probed;      /* env's transport numbers are measured */
    FILE *declog;     /* the --decision-log file, or NULL */
    double *stats;    /* scratch for the statistics of one bucket step */
    size_t statscap;
    gcd_coord *coord; /* node 0 only */
    policy_slot pol[MAX_POLICIES];
    int npol;
    uint64_t epoch;
    ctl_wait *asks;   /* policy switches asked here: to send, then waiting for a decision */
    size_t nasks, sent_asks;
    int outstanding;  /* bucket steps reported and not yet decided */
    /* Scratch for exchanges. */
    void *buf;
    size_t bufcap;
    void *buf2;
    size_t buf2cap;
} engine;

/* Tell the loop thread (any event kind); the caller holds no lock. */
void gcd_engine_to_loop(gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                        int status, uint64_t ctl_id, const char *text);
/* Make the policy a spec names, measuring the transport first when it needs that
   (gp_policy.uses_network). Call at points every node reaches alike. */
int gcd_engine_make_policy(engine *e, const char *spec, gp_instance **out, char *err,
                           size_t errlen);
/* Free a layer's codec state and error-feedback buffer. */
void gcd_eng_layer_reset(const gk_codec *c, eng_layer *l);

/* checkpoint.c */
/* Every node saves its state in DIR after the same decision; origin's gcompctl gets
   the reply. */
void gcd_checkpoint_take(engine *e, const char *dir, int origin);
/* Read DIR/node{k}.ckpt at start-up: *policy gets the policy in force, the buckets'
   layers wait in e->saved until their bucket first runs. */
int gcd_checkpoint_read(engine *e, const char *dir, gp_instance **policy);
/* A bucket runs for the first time: take its saved layers if its layout matches. */
void gcd_checkpoint_adopt(engine *e, gcd_bucket *b);
void gcd_checkpoint_saved_free(saved_bucket *s);

#endif
