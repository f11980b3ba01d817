/*
 * daemon.h: the state gcompd's threads share. The libuv loop thread (sessions.c,
 * control.c) owns the sockets; the engine thread (loop.c and the files it calls, the
 * main thread) owns the transports, the policies and the codec state, and hands codec
 * work to its worker pool (pool.h). The loop and the engine meet in `mu`: the bucket
 * registry's step bookkeeping and two event queues, one each way (events.h).
 */
#ifndef GCD_DAEMON_H
#define GCD_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "events.h"
#include "layout.h"
#include "metrics.h"
#include "stats.h"
#include "timeline.h"
#include "transports/control.h"
#include "transports/data.h"

struct eng_bucket;

#define GCD_DECLOG_LINES 4096
#define GCD_HINT_RING 64      /* local rank 0's last hints kept for a trace recording */
#define GCD_TRACE_DIR_MAX 400 /* longest trace directory path */

/* gcd.trace.state, for gcompctl trace status. */
enum { GCD_TRACE_IDLE, GCD_TRACE_RECORDING, GCD_TRACE_FINISHED, GCD_TRACE_FAILED };

/* One hint of local rank 0 (gcd.hint_ring). */
typedef struct gcd_hint_rec {
    int64_t step;
    unsigned fields;      /* GCOMP_HINT_* */
    double lr;
    int64_t samples;
    bool epoch_end;
} gcd_hint_rec;

typedef struct gcd_bucket {
    /* Fixed once created; read by both threads without the lock. */
    uint32_t id;
    char name[GCOMP_MAX_NAME + 1];
    gcd_layout layout;
    int trainers;                    /* T: input regions */
    int in_fd[GCD_MAX_TRAINERS];
    float *in[GCD_MAX_TRAINERS];     /* trainer t's gradients */
    int res_fd;
    float *res;                      /* the node's result, shared by its trainers */

    /* Under gcd.mu. */
    uint64_t registered;  /* slots (local ranks) that registered the bucket */
    uint64_t released;    /* slots that unregistered it (a disconnect does not count: the
                             trainer may come back to its slot); all: it dies */
    uint64_t submitted;   /* slots that submitted pending_step */
    int64_t pending_step; /* -1: none */
    bool queued;          /* all slots submitted: handed to the engine */
    int64_t last_step;    /* last step finished (ok or failed); -1 before any */
    char lost[640];       /* non-empty: a registered trainer left (or registered another
                             layout); steps fail until every slot holds it again */
    int lost_status;      /* GCOMP_PEER_LOST or GCOMP_MISMATCH */
    int64_t first_submit_ms; /* when the first slot submitted pending_step */
    double first_submit_s;   /* the same in gk_now_s seconds (the timeline) */
    int64_t failed_step;  /* a step the job failed before this node's trainers all
                             submitted it: later submits of it fail at once */
    int failed_status;
    char failed_error[512];
    bool dying;           /* every slot released it: the engine drops its state, then
                             the loop frees it (GCD_EV_UNREGISTER, GCD_EV_FREED) */

    /* Engine thread only. */
    bool announced;       /* layout sent to the coordinator */
    bool lost_reported;   /* its lost state was reported (once), not yet its recovery */
    struct eng_bucket *eng;
} gcd_bucket;

typedef struct gcd {
    gcd_config cfg;
    int node, nodes;
    int trainers;       /* on this node */
    int total_trainers; /* in the job */
    int first_trainer;  /* the job-wide number of local rank 0 (node-major, as GCOMP_RANK) */
    int *node_trainers; /* [nodes]: trainers per node */
    gcd_ctl *ctl;       /* the control plane (engine thread) */
    struct gcd_live *live; /* liveness pings (liveness.h); NULL: off */
    gcd_data data;      /* the data plane (engine thread) */
    int64_t started_ms;

    pthread_mutex_t mu;
    pthread_cond_t cv;          /* engine waits here for to_engine */
    gcd_bucket **buckets;       /* by id; grows under mu; a freed bucket's entry is NULL
                                   (ids are never reused) */
    uint32_t nbuckets;
    uint32_t nlive;             /* buckets not freed */
    uint64_t shm_bytes;         /* their shared memory */
    uint64_t max_shm_bytes;     /* the limit (--max-bytes, or the machine's memory) */
    size_t capbuckets;
    gcd_queue to_engine, to_loop;
    int64_t max_step;           /* highest step any local trainer submitted */
    int connected;              /* trainers connected */
    bool stopping;              /* the loop thread should close everything and return */
    bool wake_closed;           /* the loop thread closed `wake`: nobody may send to it */
    int bye_status;             /* why the daemon goes away (sent to every trainer as a
                                   Goodbye): GCOMP_SHUTDOWN, or what took the job down */
    char bye_text[512];
    struct {                    /* the trainers' latest hints */
        uint64_t count;
        int64_t epochs;         /* epoch ends hinted by local rank 0 */
        int64_t step;
        double lr;
        bool has_lr, has_samples;
        int64_t samples[GCD_MAX_TRAINERS]; /* per local rank */
    } hints;
    int64_t advice_batch;       /* the policy's batch-size advice (0: none) */
    double advice_lr_scale;
    int64_t advice_step;
    char *declog[GCD_DECLOG_LINES]; /* the decision log's last lines (ring) */
    uint64_t declog_total;
    char policy_spec[512];      /* policy in force (for gcompctl) */
    uint64_t policy_epoch;
    int64_t policy_step;
    gcd_hint_rec hint_ring[GCD_HINT_RING]; /* by step % GCD_HINT_RING (trace.c reads it) */
    struct {                    /* the trace recording, as gcompctl sees it (trace.c) */
        bool asked;             /* a trace start asked here is not decided yet */
        int state;              /* GCD_TRACE_* */
        uint64_t id;
        char dir[GCD_TRACE_DIR_MAX + 1];
        int64_t from, end;      /* steps [from, end) (end -1: until trace stop) */
        int64_t written;        /* steps completely written on this node */
        int64_t complete;       /* ... on every node (when finished) */
        char error[2100];
    } trace;
    gcd_stats stats;
    gcd_timeline *timeline;     /* --timeline, or NULL (engine thread; timeline.h) */
    gcd_metrics *metrics;       /* Prometheus metrics (any thread, its own lock; metrics.h) */

    /* Loop thread only. */
    uv_loop_t loop;
    uv_async_t wake;
    struct gcd_session *sessions;
    struct gcd_session *slots[GCD_MAX_TRAINERS];
    uv_poll_t listen_poll, ctl_poll;
    uv_timer_t tick;            /* deadlines (sessions.c) */
    int listen_fd, ctl_fd;
    int reserve_fd;             /* given up to refuse a connection when out of fds */
    int64_t emfile_logged_ms;
    char sock_path[256], ctl_path[256];
    struct gcd_http *http;      /* the --metrics-listen endpoint (http.h), or NULL */
} gcd;

/* Registry (registry.c), under mu. */
/* The live bucket of that name (not dying), or NULL. */
gcd_bucket *gcd_bucket_by_name(gcd *d, const char *name);
/* The bucket of that id (dying ones too), or NULL once freed. */
gcd_bucket *gcd_bucket_by_id(gcd *d, uint32_t id);
/* Create the bucket, or check the layout against the registered one. */
int gcd_bucket_register(gcd *d, const char *name, gcd_layout *layout, int slot,
                        gcd_bucket **out, char *err, size_t errlen);
/* A bucket every slot released, with no step pending, dies: the engine drops its
   state (GCD_EV_UNREGISTER), then the loop frees it. */
void gcd_bucket_maybe_die(gcd *d, gcd_bucket *b);
/* Free a dying bucket's memory and its entry (loop thread, after GCD_EV_FREED). */
void gcd_bucket_free(gcd *d, gcd_bucket *b);
void gcd_buckets_free(gcd *d);

/* The loop thread (sessions.c): listen, serve, return when stopping. */
int gcd_sessions_start(gcd *d);
void *gcd_sessions_run(void *arg);
/* Wake the loop thread (any thread). */
void gcd_sessions_wake(gcd *d);

/* The lowest node that does not answer a liveness ping within wait_ms, -1 if every node
   answers, -2 if that cannot be known (liveness.h). Engine thread. */
int gcd_silent_node(gcd *d, int wait_ms);

/* The engine (loop.c), on the main thread: returns when the job shuts down. */
int gcd_engine_run(gcd *d);

/* Control commands (control.c), loop thread: answer one request into reply text.
   Returns a status, or 1 when the engine answers later (GCD_EV_CTL_REPLY). */
struct gcd_session;
uint64_t gcd_session_id(const struct gcd_session *s);
int gcd_control_handle(gcd *d, struct gcd_session *s, const char *cmd, char **args, size_t nargs,
                       int json, char *reply, size_t len);

#endif
