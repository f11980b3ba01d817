/*
 * events.h: the two queues between gcompd's loop thread (sockets) and its engine
 * thread, one each way, under gcd.mu. The loop is woken by gcd.wake (a uv_async), the
 * engine by gcd.cv.
 */
#ifndef GCD_EVENTS_H
#define GCD_EVENTS_H

#include <stdint.h>

enum gcd_event_kind {
    GCD_EV_READY,     /* loop -> engine: bucket's pending_step fully submitted */
    GCD_EV_FAIL,      /* loop -> engine: this node failed bucket's step (step -1: any) */
    GCD_EV_POLICY,    /* loop -> engine: policy switch asked (text = spec) by ctl_id */
    GCD_EV_SHUTDOWN,  /* loop -> engine: job-wide shutdown asked (gcompctl) */
    GCD_EV_SIGNAL,    /* signal thread -> engine: SIGTERM/SIGINT: a peer died and mpirun
                         takes the job down, or the job is asked to stop */
    GCD_EV_QUERY,     /* loop -> engine: a query for the policy (text = args, '\n'-separated) */
    GCD_EV_CHECKPOINT,/* loop -> engine: save a checkpoint in text (a directory) */
    GCD_EV_UNREGISTER,/* loop -> engine: bucket is dying: drop its engine state */
    GCD_EV_TRACE,     /* loop -> engine: trace start (status 1, step = steps, text =
                         "GLOB\nDIR") or stop (status 0) by ctl_id */
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

struct gcd;

/* Append an event (the caller holds gcd.mu). Returns GCOMP_NOMEM on failure. */
int gcd_queue_push(gcd_queue *q, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                   int status, uint64_t ctl_id, const char *text);
/* Take every queued event, oldest first (the caller holds gcd.mu and frees them). */
gcd_event *gcd_queue_take_all(gcd_queue *q);

/* Queue an event for the loop thread and wake it, or for the engine and wake it. Any
   thread that does not hold gcd.mu. Out of memory is logged. */
void gcd_to_loop(struct gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                 int status, uint64_t ctl_id, const char *text);
void gcd_to_engine(struct gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                   int status, uint64_t ctl_id, const char *text);

#endif
