/*
 * daemon.h: the state gcompd's two threads share. The libuv loop thread (sessions.c,
 * control.c) owns the sockets; the engine thread (engine.c, the main thread) owns the
 * transport and the codecs. They meet in `mu`: the bucket registry's step bookkeeping
 * and two event queues, one each way (the loop is woken by `wake`, the engine by `cv`).
 */
#ifndef GCD_DAEMON_H
#define GCD_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "layout.h"
#include "stats.h"
#include "transports/transport.h"

struct gcd_engine_bucket;

#define GCD_DECLOG_LINES 4096

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
    char lost[640];       /* non-empty: a registered trainer left; steps fail until
                             a trainer takes its slot again */
    int64_t failed_step;  /* a step the job failed before this node's trainers all
                             submitted it: later submits of it fail at once */
    int failed_status;
    char failed_error[512];
    bool dying;           /* every slot released it: the engine drops its state, then
                             the loop frees it (GCD_EV_UNREGISTER, GCD_EV_FREED) */

    /* Engine thread only. */
    bool announced;       /* layout sent to the coordinator */
    struct gcd_engine_bucket *eng;
} gcd_bucket;

enum gcd_event_kind {
    GCD_EV_READY,     /* loop -> engine: bucket's pending_step fully submitted */
    GCD_EV_FAIL,      /* loop -> engine: this node failed bucket's step (step -1: any) */
    GCD_EV_POLICY,    /* loop -> engine: policy switch asked (text = spec) by ctl_id */
    GCD_EV_SHUTDOWN,  /* loop -> engine: job-wide shutdown asked */
    GCD_EV_QUERY,     /* loop -> engine: a query for the policy (text = args, '\n'-separated) */
    GCD_EV_CHECKPOINT,/* loop -> engine: save a checkpoint in text (a directory) */
    GCD_EV_UNREGISTER,/* loop -> engine: bucket is dying: drop its engine state */
    GCD_EV_COMPLETE,  /* engine -> loop: bucket's step finished with status/text */
    GCD_EV_CTL_REPLY, /* engine -> loop: answer ctl_id with status/text */
    GCD_EV_FREED,     /* engine -> loop: the engine is done with dying bucket: free it */
};

typedef struct gcd_event {
    struct gcd_event *next;
    enum gcd_event_kind kind;
    uint32_t bucket;
    int64_t step;
    int status;
    uint64_t ctl_id;
    char text[];      /* message or spec, NUL-terminated */
} gcd_event;

typedef struct gcd_queue {
    gcd_event *head, *tail;
} gcd_queue;

typedef struct gcd {
    gcd_config cfg;
    int node, nodes;
    int trainers;       /* on this node */
    int total_trainers; /* in the job */
    gcd_transport transport;
    int64_t started_ms;

    pthread_mutex_t mu;
    pthread_cond_t cv;          /* engine waits here for to_engine */
    gcd_bucket **buckets;       /* by id; grows under mu; a freed bucket's entry is NULL
                                   (ids are never reused) */
    uint32_t nbuckets, capbuckets;
    gcd_queue to_engine, to_loop;
    int64_t max_step;           /* highest step any local trainer submitted */
    int connected;              /* trainers connected */
    bool stopping;              /* the loop thread should close everything and return */
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
    gcd_stats stats;

    /* Loop thread only. */
    uv_loop_t loop;
    uv_async_t wake;
    struct gcd_session *sessions;
    struct gcd_session *slots[GCD_MAX_TRAINERS];
    uv_poll_t listen_poll, ctl_poll;
    int listen_fd, ctl_fd;
    char sock_path[256], ctl_path[256];
} gcd;

/* Event queues (take mu yourself). push returns GCOMP_NOMEM on failure. */
int gcd_queue_push(gcd_queue *q, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                   int status, uint64_t ctl_id, const char *text);
gcd_event *gcd_queue_take_all(gcd_queue *q);

/* Registry (registry.c), under mu. */
/* The live bucket of that name (not dying), or NULL. */
gcd_bucket *gcd_bucket_by_name(gcd *d, const char *name);
/* The bucket of that id (dying ones too), or NULL once freed. */
gcd_bucket *gcd_bucket_by_id(gcd *d, uint32_t id);
/* Create the bucket, or check the layout against the registered one. */
int gcd_bucket_register(gcd *d, const char *name, gcd_layout *layout, int slot,
                        gcd_bucket **out, char *err, size_t errlen);
/* Free a dying bucket's memory and its entry (loop thread, after GCD_EV_FREED). */
void gcd_bucket_free(gcd *d, gcd_bucket *b);
void gcd_buckets_free(gcd *d);

/* The loop thread (sessions.c): listen, serve, return when stopping. */
int gcd_sessions_start(gcd *d);
void *gcd_sessions_run(void *arg);
/* Wake the loop thread (any thread). */
void gcd_sessions_wake(gcd *d);

/* The engine (engine.c), on the main thread: returns when the job shuts down. */
int gcd_engine_run(gcd *d);

/* Control commands (control.c), loop thread: answer one request into reply text.
   Returns a status, or 1 when the engine answers later (GCD_EV_CTL_REPLY). */
struct gcd_session;
uint64_t gcd_session_id(const struct gcd_session *s);
int gcd_control_handle(gcd *d, struct gcd_session *s, const char *cmd, char **args, size_t nargs,
                       int json, char *reply, size_t len);

int64_t gcd_now_ms(void);
double gcd_now_s(void);

#endif
