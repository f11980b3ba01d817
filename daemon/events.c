#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "log.h"

int gcd_queue_push(gcd_queue *q, enum gcd_event_kind kind, uint32_t bucket, int64_t step,
                   int status, uint64_t ctl_id, const char *text)
{
    size_t n = text ? strlen(text) : 0;
    gcd_event *e = malloc(sizeof(*e) + n + 1);
    if (!e)
        return GCOMP_NOMEM;
    e->next = NULL;
    e->kind = kind;
    e->bucket = bucket;
    e->step = step;
    e->status = status;
    e->ctl_id = ctl_id;
    memcpy(e->text, text ? text : "", n + 1);
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    return GCOMP_OK;
}

gcd_event *gcd_queue_take_all(gcd_queue *q)
{
    gcd_event *e = q->head;
    q->head = q->tail = NULL;
    return e;
}

void gcd_to_loop(gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step, int status,
                 uint64_t ctl_id, const char *text)
{
    pthread_mutex_lock(&d->mu);
    int rc = gcd_queue_push(&d->to_loop, kind, bucket, step, status, ctl_id, text);
    pthread_mutex_unlock(&d->mu);
    if (rc)
        gcd_log_error("out of memory queueing an event for the trainers");
    gcd_sessions_wake(d);
}

void gcd_to_engine(gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step, int status,
                   uint64_t ctl_id, const char *text)
{
    pthread_mutex_lock(&d->mu);
    int rc = gcd_queue_push(&d->to_engine, kind, bucket, step, status, ctl_id, text);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (rc)
        gcd_log_error("out of memory queueing an event for the engine");
}
