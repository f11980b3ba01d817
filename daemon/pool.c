/*
 * pool.c: the worker threads (pool.h). One queue of job ranges under a mutex: a batch
 * of n jobs is one entry that workers take indices from, so queueing costs the same
 * for 1 or 4,000 layers.
 */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "base/clock.h"
#include "gcomp.h"

typedef struct range {
    gcd_batch *b;
    gcd_job_fn fn;
    void *arg;
    size_t n, next; /* jobs of the range, and the next index to hand out */
    struct range *link;
} range;

struct gcd_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    range *head, *tail;  /* ranges with indices left to hand out */
    bool stop;
    atomic_size_t busy;  /* jobs queued or running */
    int nthreads;
    pthread_t *threads;
    void (*wake)(void *ctx);
    void *ctx;
};

typedef struct worker {
    gcd_pool *p;
    gk_arena scratch;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    gcd_pool *p = w->p;
    gk_exec exec = {.backend = GK_BACKEND_CPU, .mem = GK_MEM_HOST, .scratch = &w->scratch};
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head)
            break;
        range *r = p->head;
        size_t i = r->next++;
        if (r->next == r->n) {
            p->head = r->link;
            if (!p->head)
                p->tail = NULL;
        }
        /* Another worker may free r once its job is the last: keep what we need. */
        gcd_batch *b = r->b;
        gcd_job_fn fn = r->fn;
        void *fnarg = r->arg;
        pthread_mutex_unlock(&p->mu);
        gk_arena_mark m = gk_arena_mark_get(&w->scratch);
        int rc = fn(fnarg, i, &exec);
        gk_arena_release(&w->scratch, m);
        if (rc) {
            int zero = 0;
            atomic_compare_exchange_strong(&b->status, &zero, rc);
        }
        atomic_fetch_sub(&p->busy, 1);
        /* The last job of the batch frees its range (every index was handed out, so no
           worker reads it again), stamps the batch, and wakes the engine. */
        if (atomic_fetch_sub(&b->left, 1) == 1) {
            free(r);
            b->t_end = gk_now_s();
            atomic_store(&b->running, false);
            if (p->wake)
                p->wake(p->ctx);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    gk_arena_free(&w->scratch);
    free(w);
    return NULL;
}

int gcd_pool_new(int threads, void (*wake)(void *ctx), void *ctx, gcd_pool **out)
{
    gcd_pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->threads = calloc((size_t)threads, sizeof(pthread_t)))) {
        free(p);
        return GCOMP_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->wake = wake;
    p->ctx = ctx;
    for (int i = 0; i < threads; i++) {
        worker *w = calloc(1, sizeof(*w));
        if (w)
            w->p = p;
        if (!w || pthread_create(&p->threads[i], NULL, worker_main, w) != 0) {
            free(w);
            gcd_pool_free(p);
            return GCOMP_IO;
        }
        p->nthreads = i + 1;
    }
    *out = p;
    return GCOMP_OK;
}

void gcd_pool_free(gcd_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int gcd_pool_threads(const gcd_pool *p)
{
    return p->nthreads;
}

int gcd_pool_run(gcd_pool *p, gcd_batch *b, gcd_job_fn fn, void *arg, size_t n)
{
    atomic_store(&b->status, 0);
    b->t_start = b->t_end = gk_now_s();
    if (n == 0)
        return GCOMP_OK;
    range *r = calloc(1, sizeof(*r));
    if (!r)
        return GCOMP_NOMEM;
    atomic_store(&b->left, n);
    atomic_store(&b->running, true);
    *r = (range){.b = b, .fn = fn, .arg = arg, .n = n};
    atomic_fetch_add(&p->busy, n);
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->link = r;
    else
        p->head = r;
    p->tail = r;
    if (n == 1)
        pthread_cond_signal(&p->cv);
    else
        pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return GCOMP_OK;
}

bool gcd_batch_done(const gcd_batch *b)
{
    return !atomic_load(&((gcd_batch *)b)->running);
}

size_t gcd_pool_busy(const gcd_pool *p)
{
    return atomic_load(&((gcd_pool *)p)->busy);
}
