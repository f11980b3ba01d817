/*
 * timeline.h: --timeline FILE, a Chrome trace (JSON Array Format, what Perfetto and
 * chrome://tracing load as is) of what this node's engine does per bucket step.
 *
 * The file is "[", then one event per line separated by ",\n", then "]" when the
 * daemon closes it cleanly: strict JSON then, and a prefix Perfetto still loads when
 * the daemon was killed (the file is flushed after every bucket step). Times are
 * microseconds on gk_now_s's clock from the job's origin (gcd_timeline_origin). pid is
 * the node; the tracks (tids) are chosen so that the spans of one track nest, as the
 * format requires:
 *
 *   tid L (0 <= L < lanes)      "lane L": a step's prepare, collect, statistics
 *   gcd_timeline_xchg(L, i)     "lane L exchange i": its encode, collective(s), decode
 *   gcd_timeline_bucket(id)     "bucket NAME": wait, sum, negotiate, result, observe
 *   GCD_TL_POLICY               "policy": policy and codec switches (instant events)
 *
 * Threads: everything from the engine thread (main.c opens and closes it on the same
 * thread). Off (NULL) costs the callers a pointer check.
 */
#ifndef GCD_TIMELINE_H
#define GCD_TIMELINE_H

#include <stdint.h>
#include <stddef.h>

typedef struct gcd_timeline gcd_timeline;

enum {
    GCD_TL_POLICY = 999,      /* the instant events' track */
    GCD_TL_XCHG_BASE = 1000,  /* exchange tracks: base + lane * GCD_TL_XCHG_MAX + i */
    GCD_TL_XCHG_MAX = 100,    /* exchanges of a step with a track of their own; later
                                 ones share the last (a plan this long does not occur) */
    GCD_TL_BUCKET_BASE = 100000, /* bucket tracks: base + bucket id */
};

/* Open node's file from the template (gcd_stats_path: "{node}" replaced, without it
   node 0 only) and write the metadata (process "gcompd node K", the lanes' and the
   policy track's names). *out is NULL when this node writes none. Returns 0, or
   GCOMP_IO / GCOMP_NOMEM with err naming the file. The caller owns *out. */
int gcd_timeline_open(const char *tmpl, int node, int lanes, gcd_timeline **out, char *err,
                      size_t errlen);

/* Times from now on are relative to origin (gk_now_s seconds); until called, to the
   time of gcd_timeline_open. main.c gives every node the end of its start-up
   allgather, so the nodes' files line up to within that collective's skew. */
void gcd_timeline_origin(gcd_timeline *t, double origin);

/* The tid of exchange i of a step on lane L, and of a bucket's track; each names its
   track on first use. */
int gcd_timeline_xchg(gcd_timeline *t, int lane, size_t i);
int gcd_timeline_bucket(gcd_timeline *t, uint32_t id, const char *bucket);

/* A complete event ("ph":"X") from t0 to t1 (gk_now_s seconds) on track tid, with
   args {"bucket":..., "step":..., then what fmt makes (",\"key\":value..." pairs,
   strings escaped by the caller with gk_json_str; NULL: none)}. name is a literal.
   NULL t: nothing. */
void gcd_timeline_span(gcd_timeline *t, int tid, const char *name, double t0, double t1,
                       const char *bucket, int64_t step, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* An instant event ("ph":"i", process scope) now on track tid with args {fmt} (whole
   "\"key\":value" pairs, the first without a leading comma). NULL t: nothing. */
void gcd_timeline_instant(gcd_timeline *t, int tid, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Flush what was written (after a bucket step). A write that failed is logged once,
   naming the file, and the timeline stops (the job goes on). NULL t: nothing. */
void gcd_timeline_flush(gcd_timeline *t);

/* Write the closing "]" and close; frees t. Returns 0, or GCOMP_IO (logged, naming the
   file) when a write failed. NULL t: 0. */
int gcd_timeline_close(gcd_timeline *t);

#endif
