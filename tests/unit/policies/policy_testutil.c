/*
 * policy_testutil.c: see policy_testutil.h.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gcomp.h"
#include "policy_testutil.h"

/* The calling thread's scratch arena, as each engine worker has one. */
static _Thread_local gk_arena tu_arena;

int tu_collect(gp_instance *p, const gp_layer *layer, int64_t step, const float *g,
               const float *x, double *stats)
{
    gk_exec exec = {.backend = GK_BACKEND_CPU, .mem = GK_MEM_HOST, .scratch = &tu_arena};
    gk_arena_mark mark = gk_arena_mark_get(&tu_arena);
    int rc = p->policy->collect(p->state, layer, step, g, x, stats, &exec);
    gk_arena_release(&tu_arena, mark);
    return rc;
}

typedef struct tu_thread {
    gp_instance *p;
    const tu_job *jobs;
    int n, first;              /* jobs first, first + 2, ... below n */
    pthread_barrier_t *start;
    int rc;                    /* the first failing status, or GCOMP_OK */
} tu_thread;

static void *tu_thread_main(void *arg)
{
    tu_thread *t = arg;
    pthread_barrier_wait(t->start);
    for (int i = t->first; i < t->n && !t->rc; i += 2) {
        const tu_job *j = &t->jobs[i];
        t->rc = tu_collect(t->p, j->layer, j->step, j->g, j->x, j->stats);
    }
    gk_arena_free(&tu_arena);
    return NULL;
}

void tu_collect_two_threads(gp_instance *p, const tu_job *jobs, int n)
{
    assert_true(p->policy->collect_concurrent);
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    tu_thread t[2];
    pthread_t id[2];
    for (int k = 0; k < 2; k++) {
        t[k] = (tu_thread){.p = p, .jobs = jobs, .n = n, .first = k, .start = &start};
        assert_int_equal(pthread_create(&id[k], NULL, tu_thread_main, &t[k]), 0);
    }
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(id[k], NULL), 0);
    pthread_barrier_destroy(&start);
    assert_int_equal(t[0].rc, GCOMP_OK);
    assert_int_equal(t[1].rc, GCOMP_OK);
}

unsigned char *tu_save(gp_instance *p, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    gk_writer w = {.f = f};
    assert_int_equal(p->policy->save(p->state, &w), GCOMP_OK);
    assert_false(w.failed);
    assert_int_equal(fclose(f), 0);
    *len = n;
    return (unsigned char *)buf;
}

void tu_assert_same_state(gp_instance *a, gp_instance *b)
{
    size_t la, lb;
    unsigned char *sa = tu_save(a, &la), *sb = tu_save(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    free(sa);
    free(sb);
}

int tu_load(gp_instance *p, const void *buf, size_t len, char *err, size_t errlen)
{
    /* fmemopen refuses a size of 0: an empty checkpoint is an empty file. */
    FILE *f = len ? fmemopen((void *)buf, len, "r") : tmpfile();
    assert_non_null(f);
    gk_reader r = {.f = f};
    int rc = p->policy->load(p->state, &r);
    if (err && errlen)
        snprintf(err, errlen, "%s", r.err);
    if (rc == GCOMP_OK) {
        assert_false(r.failed);
        assert_int_equal(ftell(f), (long)len);
    } else {
        assert_true(r.failed && r.err[0] != '\0');
    }
    fclose(f);
    return rc;
}

void tu_set_version(unsigned char *buf, uint32_t version)
{
    for (int i = 0; i < 4; i++)
        buf[4 + i] = (unsigned char)(version >> (8 * i));
}

void tu_check_refusals(gp_instance *p, const unsigned char *ck, size_t len)
{
    size_t before_len;
    unsigned char *before = tu_save(p, &before_len);
    unsigned char *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, ck, len);
    tu_set_version(copy, 99);
    char err[256];
    assert_int_equal(tu_load(p, copy, len, err, sizeof(err)), GCOMP_INVALID);
    if (!strstr(err, "version 99"))
        fail_msg("version 99 refused with '%s'", err);
    /* Truncations: every length up to 64 bytes, then a spread to the last byte. */
    for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 1 + (len - cut) / 16) {
        int rc = tu_load(p, ck, cut, err, sizeof(err));
        if (rc != GCOMP_IO || !strstr(err, "truncated"))
            fail_msg("a checkpoint cut at %zu of %zu bytes: status %d, '%s'", cut, len, rc, err);
    }
    assert_int_equal(tu_load(p, ck, len - 1, err, sizeof(err)), GCOMP_IO);
    size_t after_len;
    unsigned char *after = tu_save(p, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    free(before);
    free(after);
    free(copy);
}
