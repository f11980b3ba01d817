/*
 * reduce.c: the local sum of a bucket over the node's trainers, scaled by 1 / (trainers
 * of the job): local = (1/T) sum_t in[t], into the bucket's own transport buffer (the
 * exchange sends from it; the result region gets the exchange's result). On one node
 * local is the result region. It runs on the
 * worker pool in chunks that stay in cache, and checks the sum for non-finite values,
 * which fail the step on every node (nonfinite=fail) or are sent as zeros by this node
 * (nonfinite=skip); either way they never reach error feedback.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/floats.h"
#include "engine.h"
#include "log.h"


/* Elements per job: large enough to amortise a job, small enough to spread a bucket
   over the workers. */
#define SUM_CHUNK ((size_t)1 << 20)

/* out = scale * sum_t in[t] over n elements, in blocks that stay in L1; returns 1 if
   any output is not finite. */
static uint32_t sum_scaled(float *restrict out, float *const *in, int T, size_t n, float scale)
{
    enum { BLOCK = 4096 };
    uint32_t bad = 0;
    for (size_t off = 0; off < n; off += BLOCK) {
        size_t m = n - off < BLOCK ? n - off : BLOCK;
        float *restrict o = out + off;
        const float *restrict a = in[0] + off;
        if (T == 1) {
            /* The result is read by other processes later, not by us: stream it past
               the cache (no read-for-ownership), as memcpy does for large copies. An
               input that is finite stays finite when scaled by <= 1. */
            gk_stream_scale(o, a, m, scale);
            bad |= gk_any_nonfinite(a, m);
            continue;
        }
        const float *restrict b = in[1] + off;
        for (size_t i = 0; i < m; i++)
            o[i] = a[i] + b[i];
        for (int t = 2; t < T; t++) {
            const float *restrict c = in[t] + off;
            for (size_t i = 0; i < m; i++)
                o[i] += c[i];
        }
        for (size_t i = 0; i < m; i++)
            o[i] *= scale;
        bad |= gk_any_nonfinite(o, m);
    }
    return bad;
}

static int sum_chunk(void *arg, size_t k, const gk_exec *exec)
{
    (void)exec;
    eng_bucket *eb = arg;
    gcd_bucket *b = eb->b;
    size_t off = k * SUM_CHUNK, left = b->layout.numel - off;
    size_t n = left < SUM_CHUNK ? left : SUM_CHUNK;
    float *in[GCD_MAX_TRAINERS];
    for (int t = 0; t < b->trainers; t++)
        in[t] = b->in[t] + off;
    eb->sum_bad[k] = (uint8_t)sum_scaled((float *)eb->local.ptr + off, in, b->trainers, n,
                                         eb->scale);
    gk_stream_fence(); /* before the exchange reads them */
    return GCOMP_OK;
}

int eng_reduce_start(engine *e, eng_bucket *eb, int64_t step)
{
    gcd_bucket *b = eb->b;
    size_t chunks = (b->layout.numel + SUM_CHUNK - 1) / SUM_CHUNK;
    if (!eb->local.ptr && e->d->nodes == 1) {
        /* One node: the sum is the result; the exchange leaves it in place. */
        eb->local = (gcd_buf){.ptr = b->res, .bytes = b->layout.numel * sizeof(float),
                              .mem = GK_MEM_HOST};
    } else if (!eb->local.ptr) {
        int rc = gcd_data_alloc(&e->d->data, GK_MEM_HOST, b->layout.numel * sizeof(float),
                                &eb->local);
        if (rc)
            return rc;
    }
    if (chunks != eb->nchunks || !eb->sum_bad) {
        uint8_t *bad = realloc(eb->sum_bad, chunks ? chunks : 1);
        if (!bad)
            return GCOMP_NOMEM;
        eb->sum_bad = bad;
        eb->nchunks = chunks;
    }
    eb->sum_step = step;
    eb->skipped = 0;
    return gcd_pool_run(e->pool, &eb->sum, sum_chunk, eb, chunks);
}

bool eng_reduce_done(engine *e, eng_bucket *eb, int *status, char *err, size_t errlen)
{
    if (!gcd_batch_done(&eb->sum))
        return false;
    gcd_bucket *b = eb->b;
    eb->t_sum_ms = (eb->sum.t_end - eb->sum.t_start) * 1e3;
    *status = atomic_load(&eb->sum.status);
    bool bad = false;
    for (size_t k = 0; k < eb->nchunks; k++)
        bad |= eb->sum_bad[k] != 0;
    for (size_t i = 0; bad && !*status && i < b->layout.n; i++) {
        const gcd_layer *l = &b->layout.layers[i];
        float *g = (float *)eb->local.ptr + l->offset;
        if (!gk_any_nonfinite(g, l->numel))
            continue;
        size_t k = 0;
        while (isfinite(g[k]))
            k++;
        snprintf(err, errlen, "bucket '%s' layer '%s': non-finite gradient (%g at element %zu) "
                 "on node %d", b->name, l->name, (double)g[k], k, e->d->node);
        if (!e->d->cfg.nonfinite_skip) {
            *status = GCOMP_NONFINITE;
            break;
        }
        gcd_log_warn("%s: skipped, this node sends zeros for it", err);
        memset(g, 0, l->numel * sizeof(float));
        eb->skipped++;
    }
    if (*status && *status != GCOMP_NONFINITE)
        snprintf(err, errlen, "bucket '%s': local sum failed on node %d: %s", b->name,
                 e->d->node, gcomp_strerror(*status));
    return true;
}
