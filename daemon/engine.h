/*
 * engine.h: the engine's own types, shared by the files of the engine thread. Calls
 * run one way: loop -> negotiate -> pipeline -> (reduce, policy_host, codecs, data
 * transport); checkpoint, stats and the timeline (timeline.h) are called, never calling
 * back up.
 *
 *   loop.c         the engine's turn: events from the loop thread, negotiation,
 *                  pipeline, and the wait between turns
 *   negotiate.c    reports to the coordinator (node 0, coord.c), decisions applied
 *   reduce.c       the local sum over the node's trainers (worker jobs)
 *   pipeline.c     a bucket step's state machine: encode -> collective -> decode per
 *                  phase, lanes, deadlines
 *   policy_host.c  the policies in force: decide, collect jobs, statistics exchange,
 *                  observe, decision log, the network probe, queries
 *   checkpoint.c   gcompctl checkpoint save / gcompd --restore
 *   trace.c        gcompctl trace start / stop: the trainers' inputs copied to a writer
 *                  thread that writes a gcomp-trace/1 trace
 *
 * Everything here belongs to the engine thread, except where a field says a worker
 * job touches it (only while the step that owns it is in flight).
 */
#ifndef GCD_ENGINE_H
#define GCD_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "coord.h"
#include "daemon.h"
#include "policy.h"
#include "pool.h"

/* Per-layer state of a bucket. */
typedef struct eng_layer {
    gk_layer geom;    /* geom.id is set when the bucket gets its number (eng_bucket.uid) */
    gk_spec spec;     /* in force at the last step; valid when has_spec */
    bool has_spec;
    bool compressed;  /* at the last step */
    float *x;         /* error-feedback buffer (numel), compressed layers only; the worker
                         jobs of the step in flight read and write it */
    void *state;      /* codec state, idem */
    size_t payload;   /* bytes this layer sent at the last step (its jobs add to it) */
} eng_layer;

/* A bucket as the engine sees it (gcd_bucket.eng). */
typedef struct eng_bucket {
    gcd_bucket *b;
    eng_layer *layers;    /* [b->layout.n] */
    uint32_t uid;         /* its number in the job (coordinator); 0 before its first run */
    /* The local sum of the step its trainers submitted (reduce.c), into `local`: a
       transport buffer the dense exchange sends from straight into the result region,
       and the compressed layers' input. */
    gcd_buf local;
    int64_t sum_step;     /* being summed or summed and not yet reported; -1: none */
    gcd_batch sum;        /* the sum's jobs */
    uint8_t *sum_bad;     /* [nchunks]: a chunk held a non-finite value (its job writes it) */
    size_t nchunks;
    float scale;          /* 1 / trainers of the job */
    double t_first_submit; /* when the first of them submitted it (the timeline) */
    double t_ready;       /* when the trainers had all submitted this step */
    double t_prev_ready;  /* ... the previous step (0: none) */
    double t_sum_ms;      /* the local sum's time */
    int skipped;          /* layers whose non-finite input this node sent as zeros */
    bool in_flight;       /* a step of it is in the pipeline */
} eng_bucket;

/* The policies in force: a new one applies from its step on. The oldest are dropped
   beyond MAX_POLICIES once nothing refers to them. */
#define MAX_POLICIES 8
typedef struct policy_slot {
    int64_t from_step;
    gp_instance *p;
} policy_slot;

/* A gcompctl request waiting for the negotiation (policy switch, checkpoint). */
typedef struct ctl_wait {
    uint64_t ctl_id;
    char text[512];
} ctl_wait;

/* A bucket's layers read from a checkpoint, adopted when the bucket first runs. */
typedef struct saved_bucket {
    char name[GCOMP_MAX_NAME + 1];
    uint32_t uid;
    size_t n;
    eng_layer *layers;
    struct saved_bucket *next;
} saved_bucket;

/* A finished bucket step's statistics, averaged over the nodes, waiting until every
   node has them (Decision.observe_through) to be handed to the policy. */
typedef struct eng_obs {
    uint64_t seq;
    gp_instance *p;
    int64_t step;
    uint32_t bucket_id;    /* its result goes to the trainers once observed */
    char *bucket;          /* copies: the bucket may be gone by then */
    size_t nlayers;
    gp_layer *layers;
    gk_spec *specs;
    bool *compressed;
    double *vec;           /* the averaged statistics vector (policy_host.c's layout) */
    gp_hints hints;
    double step_ms, exchange_ms, ready_ms, gap_ms;
    double t_result;       /* its result region was complete (the timeline) */
    struct eng_obs *next;
} eng_obs;

/* The collect() jobs of one bucket step (policy_host.c runs them, the step owns it,
   the jobs read it). */
typedef struct eng_collect {
    struct engine *e;
    eng_bucket *eb;
    int64_t step;
    gp_instance *p;
    double *vec;          /* the step's statistics vector: layer i's at vec[i * nstats] */
} eng_collect;

struct eng_step;
struct eng_negotiation;
struct eng_trace;

/* One training iteration on this node, as its trainers' submissions show it (the
   policies' time inputs, policy_host.c): when the first of its bucket steps was first
   submitted and when the last of its results went back. */
typedef struct eng_iter {
    int64_t step;         /* -1: free */
    double first_submit;  /* gk_now_s */
    double last_result;   /* 0: none yet */
} eng_iter;

/* Iterations kept, by step modulo this. */
#define ENG_ITERS 64

typedef struct engine {
    gcd *d;
    gcd_pool *pool;
    int lanes;                /* pipeline lanes (bucket steps in flight at once) */
    int threads;              /* workers in the pool */
    /* Negotiation (negotiate.c). */
    struct eng_negotiation *neg;
    gcd_coord *coord;         /* node 0 only */
    uint64_t next_seq;        /* bucket steps decided to run so far, the same everywhere */
    bool shutdown_asked;      /* here (gcompctl, a signal): sent with the next report */
    bool shutting_down;       /* decided: drain the pipeline, then stop */
    ctl_wait *asks;           /* policy switches asked here: to send, then waiting */
    size_t nasks, sent_asks;
    ctl_wait *ckpt_asks;      /* checkpoints asked here */
    size_t nckpt, sent_ckpt;
    char *ckpt_dir;           /* a decided checkpoint waiting for the pipeline to drain */
    int ckpt_origin;
    gcd_event *queries;       /* gcompctl queries waiting for collect() jobs to finish */
    /* Pipeline (pipeline.c). */
    struct eng_step **lane_head, **lane_tail;
    size_t in_flight;         /* bucket steps in the pipeline */
    gcd_buf *lane_buf;        /* [lanes]: each lane's data-plane scratch */
    /* Policies (policy_host.c). */
    policy_slot *pol;
    size_t npol, cappol;
    uint64_t epoch;
    gp_env env;
    bool probed;              /* env's transport numbers are measured */
    eng_iter iters[ENG_ITERS]; /* the latest iterations, by step % ENG_ITERS */
    FILE *declog;             /* the --decision-log file, or NULL */
    pthread_mutex_t collect_mu; /* serialises collect() of policies that are not
                                   collect_concurrent (worker threads) */
    gcd_batch **collects;     /* collect() batches not yet finished */
    size_t ncollects, capcollects;
    eng_obs *obs;             /* averaged statistics not yet observed, by seq */
    uint64_t stats_done;      /* every bucket step up to this seq has its statistics here */
    uint64_t *done_seqs;      /* later ones that have them (unsorted) */
    size_t ndone, capdone;
    uint64_t observed_seq;    /* observations handed to the policies up to this seq */
    /* Checkpoints (checkpoint.c). */
    saved_bucket *saved;      /* from --restore, not yet adopted */
    /* Trace recording (trace.c). */
    ctl_wait *trace_asks;     /* trace start/stop asked here: to send, then waiting */
    size_t ntrace, sent_trace;
    struct eng_trace *trace;  /* the recording in progress (or whose writer finishes) */
} engine;

/* ---- loop.c ---- */
/* Fail every step this node holds with status and why (stall, shutdown, broken
   exchange). */
void eng_fail_everything(engine *e, int status, const char *why);
/* The job cannot go on (an exchange broke, a node stalled): tell every trainer, give
   their sockets a moment, and take the job down. Returns the status for the caller to
   return up to gcd_engine_run. */
int eng_fatal(engine *e, int status, const char *why);
/* The same for a transport's error during `what`: names the node that went silent, if
   one did (a peer died mid-collective). */
int eng_fatal_transport(engine *e, int status, const char *what);

/* ---- negotiate.c ---- */
int eng_negotiate_init(engine *e);
void eng_negotiate_free(engine *e);
/* Take the loop thread's events into the next report (local sums started, failures,
   asks). Returns 1 if it did work, 0 if not, < 0 on a fatal error (reported). */
int eng_take_events(engine *e);
/* One turn of the negotiation (never blocks). Returns 1 if it did work, 0 if not, < 0
   on a fatal error. */
int eng_negotiate(engine *e);
/* Whether our report is out and its decision not here yet (the loop then polls). */
bool eng_negotiation_waiting(const engine *e);
/* The bucket's state, made on its first ready step; NULL when out of memory. */
eng_bucket *eng_bucket_get(engine *e, gcd_bucket *b);
void eng_bucket_free(engine *e, gcd_bucket *b);

/* ---- reduce.c ---- */
/* Start the local sum of b's submitted step on the pool. */
int eng_reduce_start(engine *e, eng_bucket *eb, int64_t step);
/* Whether the sum is done; then *status is 0, GCOMP_NONFINITE (err names the layer,
   nonfinite=fail) or another error. With nonfinite=skip the layers concerned are
   zeroed and counted in eb->skipped. */
bool eng_reduce_done(engine *e, eng_bucket *eb, int *status, char *err, size_t errlen);

/* ---- pipeline.c ---- */
int eng_pipeline_init(engine *e);
void eng_pipeline_free(engine *e);
/* Queue bucket step `step` of b (number seq in the job) on its lane; its layers' specs
   were decided. */
int eng_pipeline_start(engine *e, eng_bucket *eb, int64_t step, uint64_t seq);
/* Advance every step in flight (never blocks). Returns 1 if it did work, 0 if not, < 0
   on a fatal error (already reported to every trainer). */
int eng_pipeline_progress(engine *e);
/* Whether any data collective is in flight (the loop then polls instead of sleeping). */
bool eng_pipeline_waiting_on_network(const engine *e);
/* Whether a step in flight uses the policy. */
bool eng_pipeline_uses(const engine *e, const gp_instance *p);

/* ---- policy_host.c ---- */
int eng_policies_init(engine *e, gp_instance *first);
void eng_policies_free(engine *e);
/* The policy of a step. */
gp_instance *eng_policy_at(engine *e, int64_t step);
/* Make the policy a spec names; measure the transport first when it needs that. Call
   where every node is at the same point (start-up, restore, a decided switch). */
int eng_policy_make(engine *e, const char *spec, gp_instance **out, char *err, size_t errlen);
/* A decided policy switch. Returns 0 (a switch that fails is logged and answered). */
int eng_policy_switch(engine *e, const char *spec, uint64_t epoch, int64_t from_step,
                      int origin);
/* Every layer's spec for the step (decision log; codec state remade where the spec
   changed). Exact buckets go dense without asking. */
int eng_policy_decide(engine *e, eng_bucket *eb, int64_t step);
/* Whether the step's policy observes (so the step exchanges statistics). */
bool eng_policy_observes(engine *e, const eng_bucket *eb, int64_t step);
/* The length of a step's statistics vector: nstats per layer, a payload per layer, the
   hints and times (policy_host.c's layout). */
size_t eng_stats_len(const gp_instance *p, size_t nlayers);
/* Start the step's collect() jobs on the pool as batch b (0 jobs if the policy
   collects nothing). The engine keeps a pointer to b until eng_collect_end(e, b). */
int eng_collect_run(engine *e, eng_collect *c, gcd_batch *b);
/* b (of eng_collect_run) finished and is about to be freed with its step: forget it. */
void eng_collect_end(engine *e, const gcd_batch *b);
/* Whether every collect() batch started has finished (decide/observe wait for it). */
bool eng_collects_done(engine *e);
/* Values of a step that are reduced with MAX over the nodes (eng_stats_fill). */
#define ENG_STATS_MAX 4
/* Fill the rest of the step's vector before the exchange: the layers' payloads, this
   node's hints; and max[ENG_STATS_MAX] = this node's times (iteration, exchange, the
   bucket's ready time in the iteration, the gap before the iteration). */
void eng_stats_fill(engine *e, eng_bucket *eb, int64_t step, gp_instance *p, double *vec,
                    double *max, double exchange_ms);
/* The exchange of a step's statistics finished (vec summed, max maxed over the nodes):
   keep its averages until every node has them (Decision.observe_through). t_result:
   when the step's result region was complete (gk_now_s). */
int eng_stats_arrived(engine *e, eng_bucket *eb, int64_t step, uint64_t seq, gp_instance *p,
                      const double *vec, const double *max, double t_result);
/* The node's iterations (eng_iter): a bucket step of `step` was first submitted at t;
   a result of `step` went back to the trainers at t. */
void eng_iter_submitted(engine *e, int64_t step, double t);
void eng_iter_result(engine *e, int64_t step, double t);
/* A bucket step (seq) needs no statistics exchange: it counts as held. */
void eng_stats_held(engine *e, uint64_t seq);
/* Observe every held step up to seq, in order (call when collects are done), and hand
   each one's result to its trainers: a policy's decision (and its batch-size advice)
   from step s is in force before the trainers see step s's result. */
int eng_observe_through(engine *e, uint64_t seq);
/* Answer gcompctl queries (whatif...) when no collect() runs. */
void eng_answer_queries(engine *e);
/* The decision log line of one layer. */
void eng_log_decision(engine *e, const gcd_bucket *b, size_t i, int64_t step, const gk_spec *old,
                      bool first, const gk_spec *now, const char *why);

/* ---- checkpoint.c ---- */
/* Every node saves its state in DIR after the same decision (pipeline drained, every
   statistic observed); origin's gcompctl gets the reply. */
void eng_checkpoint_take(engine *e, const char *dir, int origin);
/* Read DIR/node{k}.ckpt at start-up: *policy gets the policy in force, the buckets'
   layers wait in e->saved until their bucket first runs. */
int eng_checkpoint_read(engine *e, const char *dir, gp_instance **policy);

/* What a checkpoint file holds (eng_checkpoint_parse). */
typedef struct eng_ckpt {
    char spec[512];        /* the policy in force */
    uint64_t epoch;        /* its epoch */
    int64_t from_step;     /* the step it applies from */
    gp_instance *policy;   /* made from spec, with its saved state loaded if it saved one */
    uint32_t nsaved;
    saved_bucket *saved;   /* the nsaved buckets, the last one read first */
} eng_ckpt;

/* Make the policy a checkpoint names (the engine: eng_policy_make). Returns 0 or a
   negative gcomp status with a message in err. */
typedef int (*eng_policy_maker)(void *ctx, const char *spec, gp_instance **out, char *err,
                                size_t errlen);

/*
 * The byte-level reading of a checkpoint file, from its first byte (its format is in
 * checkpoint.c), for node `node` of `nodes`: the policy is made by make(ctx, ...) and its
 * state loaded; node 0's coordinator record goes into coord (node 0 only; may be NULL on
 * other nodes). Returns 0 with *out filled (eng_ckpt_clear frees it), or a negative status
 * (GCOMP_PROTOCOL for a file of another format, version, job shape or content, GCOMP_NOMEM)
 * with a message in err and *out empty; coord may then hold part of its record. Any thread
 * (the engine's at start-up); gcompd and tests/fuzz/fuzz_checkpoint.c share it.
 */
int eng_checkpoint_parse(gk_reader *r, int node, int nodes, gcd_coord *coord,
                         eng_policy_maker make, void *ctx, eng_ckpt *out, char *err,
                         size_t errlen);
/* Free what eng_checkpoint_parse made and empty c. */
void eng_ckpt_clear(eng_ckpt *c);
/* Write a checkpoint's header: node, nodes, the policy p (its spec and saved state),
   epoch and first step. Then come node 0's coordinator record (gcd_coord_save), the bucket
   count (u32) and the buckets. Returns 0 or GCOMP_IO (or the policy's save status). */
int eng_checkpoint_put_head(gk_writer *w, int node, int nodes, const gp_instance *p,
                            uint64_t epoch, int64_t from_step);
/* One bucket's record: its name, number and layers[0..n). Returns 0 or GCOMP_IO. */
int eng_checkpoint_bucket_save(gk_writer *w, const char *name, uint32_t uid, size_t n,
                               const eng_layer *layers);
/* Read one bucket's record into a new *out (eng_checkpoint_saved_free). Returns 0, or
   GCOMP_PROTOCOL / GCOMP_NOMEM with the reader failed and r->err saying why. */
int eng_checkpoint_bucket_load(gk_reader *r, saved_bucket **out);
/* A bucket runs for the first time: take its saved layers if its layout matches. */
void eng_checkpoint_adopt(engine *e, eng_bucket *eb);
void eng_checkpoint_saved_free(saved_bucket *s);
/* Free a layer's codec state and error-feedback buffer. */
void eng_layer_reset(eng_layer *l);

/* ---- trace.c ---- */
/* A gcompctl trace start (start: text "GLOB\nDIR", steps 0 = until stopped) or stop,
   answered when decided. Returns 0 or GCOMP_NOMEM. */
int eng_trace_ask(engine *e, uint64_t ctl_id, bool start, int64_t steps, const char *text);
/* Whether the next report has something to say about recording (an ask, progress). */
bool eng_trace_news(engine *e);
/* Fill the report's trace fields: the next ask into *ask (glob[globlen] holds its
   pattern), the recording's progress. Pointers stay valid until the next call. */
void eng_trace_report(engine *e, Gcomp__NodeReport *r, Gcomp__TraceAsk *ask, char *glob,
                      size_t globlen);
/* Apply a decision's trace part (before its run entries). Returns 0 or GCOMP_NOMEM. */
int eng_trace_apply(engine *e, const Gcomp__TraceDecision *td);
/* A bucket step decided to run: copy its trainers' inputs if it is recorded. */
void eng_trace_step(engine *e, eng_bucket *eb, int64_t step);
/* A bucket died: a recording that still needed it fails. */
void eng_trace_bucket_gone(engine *e, const char *bucket);
/* Each turn: publish progress for gcompctl, reap a finished writer. */
void eng_trace_poll(engine *e);
/* The engine stops: flush the writer; node 0 marks an unfinished trace partial. */
void eng_trace_shutdown(engine *e);

#endif
