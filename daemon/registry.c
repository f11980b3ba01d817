/*
 * registry.c: buckets, their shared memory, and the event queues between threads.
 * Each bucket has one memfd per local trainer (its input) and one result memfd that
 * all of the node's trainers map read-only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

int64_t gcd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double gcd_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

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

gcd_bucket *gcd_bucket_by_name(gcd *d, const char *name)
{
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i] && !d->buckets[i]->dying && strcmp(d->buckets[i]->name, name) == 0)
            return d->buckets[i];
    return NULL;
}

gcd_bucket *gcd_bucket_by_id(gcd *d, uint32_t id)
{
    return id < d->nbuckets ? d->buckets[id] : NULL;
}

/* A shared region of `bytes` bytes: a sealed-size memfd, mapped here. */
static int region_new(const char *name, size_t bytes, int *fd, float **map)
{
    *fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (*fd < 0)
        return GCOMP_NOMEM;
    if (ftruncate(*fd, (off_t)bytes) < 0 ||
        fcntl(*fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto err_close;
    *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (*map == MAP_FAILED)
        goto err_close;
    return GCOMP_OK;
err_close:
    close(*fd);
    return GCOMP_NOMEM;
}

static void bucket_free(gcd_bucket *b)
{
    size_t bytes = b->layout.numel * sizeof(float);
    for (int t = 0; t < b->trainers; t++)
        if (b->in[t]) {
            munmap(b->in[t], bytes);
            close(b->in_fd[t]);
        }
    if (b->res) {
        munmap(b->res, bytes);
        close(b->res_fd);
    }
    gcd_layout_free(&b->layout);
    free(b);
}

static int bucket_new(gcd *d, const char *name, gcd_layout *layout, gcd_bucket **out,
                      char *err, size_t errlen)
{
    gcd_bucket *b = calloc(1, sizeof(*b));
    if (!b)
        return GCOMP_NOMEM;
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->trainers = d->trainers;
    b->pending_step = -1;
    b->last_step = -1;
    b->failed_step = -1;
    size_t bytes = layout->numel * sizeof(float);
    int rc = GCOMP_OK;
    for (int t = 0; t < b->trainers && !rc; t++)
        rc = region_new("gcomp-input", bytes, &b->in_fd[t], &b->in[t]);
    if (!rc)
        rc = region_new("gcomp-result", bytes, &b->res_fd, &b->res);
    if (rc) {
        snprintf(err, errlen, "bucket '%s': cannot make %zu bytes of shared memory: %s", name,
                 bytes, strerror(errno));
        gcd_log_error("%s", err);
        b->layout = (gcd_layout){0};
        bucket_free(b);
        return rc;
    }
    b->layout = *layout;
    *layout = (gcd_layout){0};
    *out = b;
    return GCOMP_OK;
}

int gcd_bucket_register(gcd *d, const char *name, gcd_layout *layout, int slot,
                        gcd_bucket **out, char *err, size_t errlen)
{
    gcd_bucket *b = gcd_bucket_by_name(d, name);
    if (b) {
        char diff[512];
        if (gcd_layout_diff(&b->layout, layout, diff, sizeof(diff))) {
            snprintf(err, errlen, "bucket '%s' differs from the one registered on node %d: %s",
                     name, d->node, diff);
            return GCOMP_MISMATCH;
        }
        if (b->registered & (1ull << slot)) {
            snprintf(err, errlen, "bucket '%s' is already registered by local rank %d", name, slot);
            return GCOMP_INVALID;
        }
    } else {
        if (d->nbuckets == d->capbuckets) {
            uint32_t cap = d->capbuckets ? d->capbuckets * 2 : 16;
            gcd_bucket **arr = realloc(d->buckets, cap * sizeof(*arr));
            if (!arr)
                return GCOMP_NOMEM;
            d->buckets = arr;
            d->capbuckets = cap;
        }
        int rc = bucket_new(d, name, layout, &b, err, errlen);
        if (rc)
            return rc;
        b->id = d->nbuckets;
        d->buckets[d->nbuckets++] = b;
    }
    b->registered |= 1ull << slot;
    b->released &= ~(1ull << slot);
    if (b->lost[0] && b->registered == (b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1))
        b->lost[0] = '\0'; /* every slot is back */
    *out = b;
    return GCOMP_OK;
}

void gcd_bucket_free(gcd *d, gcd_bucket *b)
{
    d->buckets[b->id] = NULL;
    bucket_free(b);
}

void gcd_buckets_free(gcd *d)
{
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i])
            bucket_free(d->buckets[i]);
    free(d->buckets);
    d->buckets = NULL;
    d->nbuckets = d->capbuckets = 0;
}
