/*
 * registry.c: buckets and their shared memory.
 * Each bucket has one memfd per local trainer (its input) and one result memfd that
 * all of the node's trainers map read-only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/grow.h"
#include "daemon.h"
#include "log.h"

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
        uint64_t bytes = (uint64_t)layout->numel * sizeof(float) * (uint64_t)(d->trainers + 1);
        if (d->nlive >= (uint32_t)d->cfg.max_buckets) {
            snprintf(err, errlen, "bucket '%s': node %d already holds %u buckets (--max-buckets "
                     "%d); unregister some first", name, d->node, d->nlive, d->cfg.max_buckets);
            return GCOMP_LIMIT;
        }
        if (bytes > d->max_shm_bytes || d->shm_bytes > d->max_shm_bytes - bytes) {
            snprintf(err, errlen, "bucket '%s': %zu elements need %llu bytes of shared memory "
                     "(%d trainer regions and a result), node %d has %llu of %llu left "
                     "(--max-bytes)", name, layout->numel, (unsigned long long)bytes,
                     d->trainers, d->node,
                     (unsigned long long)(d->max_shm_bytes - d->shm_bytes),
                     (unsigned long long)d->max_shm_bytes);
            return GCOMP_LIMIT;
        }
        gcd_bucket **arr = gk_grow(d->buckets, &d->capbuckets, (size_t)d->nbuckets + 1,
                                   sizeof(*arr));
        if (!arr)
            return GCOMP_NOMEM;
        d->buckets = arr;
        int rc = bucket_new(d, name, layout, &b, err, errlen);
        if (rc)
            return rc;
        b->id = d->nbuckets;
        d->buckets[d->nbuckets++] = b;
        d->nlive++;
        d->shm_bytes += bytes;
    }
    b->registered |= 1ull << slot;
    b->released &= ~(1ull << slot);
    if (b->lost[0] && b->registered == (b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1))
        b->lost[0] = '\0'; /* every slot is back */
    *out = b;
    return GCOMP_OK;
}

void gcd_bucket_maybe_die(gcd *d, gcd_bucket *b)
{
    uint64_t all = b->trainers == 64 ? ~0ull : (1ull << b->trainers) - 1;
    if (b->released == all && b->pending_step < 0 && !b->dying) {
        b->dying = true;
        gcd_queue_push(&d->to_engine, GCD_EV_UNREGISTER, b->id, 0, 0, 0, NULL);
        pthread_cond_signal(&d->cv);
    }
}

void gcd_bucket_free(gcd *d, gcd_bucket *b)
{
    d->buckets[b->id] = NULL;
    d->nlive--;
    d->shm_bytes -= (uint64_t)b->layout.numel * sizeof(float) * (uint64_t)(b->trainers + 1);
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
