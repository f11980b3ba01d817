#include "timeline.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "base/json.h"
#include "gcomp.h"
#include "log.h"
#include "stats.h"

struct gcd_timeline {
    FILE *f;             /* NULL once a write failed */
    char path[1024];
    int node, lanes;
    double origin;       /* gk_now_s of ts 0 */
    uint64_t events;     /* written so far (the first has no separator) */
    bool *xnamed;        /* [lanes * GCD_TL_XCHG_MAX]: exchange tracks named */
    bool *bnamed;        /* [bcap]: bucket tracks named, by bucket id */
    size_t bcap;
};

/* Microseconds since the origin, never negative (the format wants ts >= 0). */
static double usec(const gcd_timeline *t, double s)
{
    double us = (s - t->origin) * 1e6;
    return us > 0 ? us : 0;
}

/* The separator before the next event. */
static void next_event(gcd_timeline *t)
{
    if (t->events++)
        fputs(",\n", t->f);
}

static void meta(gcd_timeline *t, int tid, const char *what, const char *name, int sort)
{
    char q[6 * (GCOMP_MAX_NAME + 16) + 8]; /* every byte may take 6 escaped */
    next_event(t);
    if (name) {
        gk_json_str(q, sizeof(q), name);
        fprintf(t->f, "{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":%s}}",
                what, t->node, tid, q);
    } else {
        fprintf(t->f, "{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,"
                      "\"args\":{\"sort_index\":%d}}", what, t->node, tid, sort);
    }
}

/* A track's name, and its place (by tid) among the node's tracks. */
static void name_track(gcd_timeline *t, int tid, const char *name)
{
    meta(t, tid, "thread_name", name, 0);
    meta(t, tid, "thread_sort_index", NULL, tid);
}

int gcd_timeline_open(const char *tmpl, int node, int lanes, gcd_timeline **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    char path[sizeof(((gcd_timeline *)0)->path)];
    if (!gcd_stats_path(tmpl, node, path, sizeof(path)))
        return GCOMP_OK;
    gcd_timeline *t = calloc(1, sizeof(*t));
    if (!t || !(t->xnamed = calloc((size_t)lanes * GCD_TL_XCHG_MAX, sizeof(bool)))) {
        free(t);
        snprintf(err, errlen, "timeline file %s: out of memory", path);
        return GCOMP_NOMEM;
    }
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->node = node;
    t->lanes = lanes;
    t->origin = gk_now_s();
    if (!(t->f = fopen(path, "w"))) {
        snprintf(err, errlen, "timeline file %s: %s", path, strerror(errno));
        free(t->xnamed);
        free(t);
        return GCOMP_IO;
    }
    fputs("[\n", t->f);
    char name[64];
    snprintf(name, sizeof(name), "gcompd node %d", node);
    meta(t, 0, "process_name", name, 0);
    meta(t, 0, "process_sort_index", NULL, node);
    for (int l = 0; l < lanes; l++) {
        snprintf(name, sizeof(name), "lane %d", l);
        name_track(t, l, name);
    }
    name_track(t, GCD_TL_POLICY, "policy");
    if (fflush(t->f) || ferror(t->f)) {
        snprintf(err, errlen, "timeline file %s: write failed: %s", path, strerror(errno));
        fclose(t->f);
        free(t->xnamed);
        free(t);
        return GCOMP_IO;
    }
    *out = t;
    return GCOMP_OK;
}

void gcd_timeline_origin(gcd_timeline *t, double origin)
{
    if (t)
        t->origin = origin;
}

int gcd_timeline_xchg(gcd_timeline *t, int lane, size_t i)
{
    size_t k = i < GCD_TL_XCHG_MAX ? i : GCD_TL_XCHG_MAX - 1;
    int tid = GCD_TL_XCHG_BASE + lane * GCD_TL_XCHG_MAX + (int)k;
    bool *named = &t->xnamed[(size_t)lane * GCD_TL_XCHG_MAX + k];
    if (t->f && !*named) {
        char name[64];
        snprintf(name, sizeof(name), "lane %d exchange %zu", lane, k);
        name_track(t, tid, name);
        *named = true;
    }
    return tid;
}

int gcd_timeline_bucket(gcd_timeline *t, uint32_t id, const char *bucket)
{
    int tid = GCD_TL_BUCKET_BASE + (int)id;
    if (!t->f)
        return tid;
    if (id >= t->bcap) {
        size_t old = t->bcap;
        bool *arr = gk_grow(t->bnamed, &t->bcap, (size_t)id + 1, sizeof(*arr));
        if (!arr)
            return tid; /* unnamed: Perfetto shows the tid */
        memset(arr + old, 0, (t->bcap - old) * sizeof(*arr));
        t->bnamed = arr;
    }
    if (!t->bnamed[id]) {
        char name[GCOMP_MAX_NAME + 16];
        snprintf(name, sizeof(name), "bucket %s", bucket);
        name_track(t, tid, name);
        t->bnamed[id] = true;
    }
    return tid;
}

void gcd_timeline_span(gcd_timeline *t, int tid, const char *name, double t0, double t1,
                       const char *bucket, int64_t step, const char *fmt, ...)
{
    if (!t || !t->f)
        return;
    char qn[128], qb[6 * GCOMP_MAX_NAME + 8];
    gk_json_str(qn, sizeof(qn), name);
    gk_json_str(qb, sizeof(qb), bucket);
    double ts = usec(t, t0), end = usec(t, t1);
    next_event(t);
    fprintf(t->f, "{\"name\":%s,\"cat\":\"gcomp\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                  "\"pid\":%d,\"tid\":%d,\"args\":{\"bucket\":%s,\"step\":%lld",
            qn, ts, end > ts ? end - ts : 0.0, t->node, tid, qb, (long long)step);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(t->f, fmt, ap);
        va_end(ap);
    }
    fputs("}}", t->f);
}

void gcd_timeline_instant(gcd_timeline *t, int tid, const char *name, const char *fmt, ...)
{
    if (!t || !t->f)
        return;
    char qn[128];
    gk_json_str(qn, sizeof(qn), name);
    next_event(t);
    fprintf(t->f, "{\"name\":%s,\"cat\":\"gcomp\",\"ph\":\"i\",\"s\":\"p\",\"ts\":%.3f,"
                  "\"pid\":%d,\"tid\":%d,\"args\":{", qn, usec(t, gk_now_s()), t->node, tid);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->f, fmt, ap);
    va_end(ap);
    fputs("}}", t->f);
}

/* A write failed: say so once, naming the file, and stop writing. */
static void broken(gcd_timeline *t, int errnum)
{
    gcd_log_error("timeline file %s: write failed: %s; no more timeline events", t->path,
                  errnum ? strerror(errnum) : "I/O error");
    fclose(t->f);
    t->f = NULL;
}

void gcd_timeline_flush(gcd_timeline *t)
{
    if (!t || !t->f)
        return;
    errno = 0;
    if (fflush(t->f) || ferror(t->f))
        broken(t, errno);
}

int gcd_timeline_close(gcd_timeline *t)
{
    if (!t)
        return GCOMP_OK;
    int rc = GCOMP_OK;
    if (t->f) {
        fputs("\n]\n", t->f);
        errno = 0;
        if (fflush(t->f) || ferror(t->f)) {
            broken(t, errno);
            rc = GCOMP_IO;
        } else if (fclose(t->f)) {
            gcd_log_error("timeline file %s: close failed: %s", t->path, strerror(errno));
            rc = GCOMP_IO;
        }
    } else {
        rc = GCOMP_IO; /* reported when it broke */
    }
    free(t->xnamed);
    free(t->bnamed);
    free(t);
    return rc;
}
