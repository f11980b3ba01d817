/*
 * engine.c: the reduction engine, on the main thread (it owns the transport).
 *
 * Per cycle: take the buckets whose trainers have all submitted, sum each one locally
 * into its result region (scaled by 1 / trainers of the job) and check it for
 * non-finite values; report to the coordinator (node 0) and apply its decision: run
 * the agreed bucket steps in its order, fail the failed ones, switch policy, shut down.
 *
 * Running a bucket step: the policy gives each layer a codec spec. Dense layers (and
 * every layer under `none`) are exchanged exactly by one allreduce of the result
 * region (packed when compressed layers sit between them). Compressed layers run their
 * codec's phases, all layers sharing a spec batched into one collective per phase.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord.h"
#include "daemon.h"
#include "engine_internal.h"
#include "log.h"
#include "policy.h"

#ifdef __SSE__
#include <immintrin.h>
#endif


static void *scratch(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return *buf;
    void *p = realloc(*buf, need);
    if (!p)
        return NULL;
    *buf = p;
    *cap = need;
    return p;
}

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Tell the loop thread; the caller holds no lock. */
void gcd_engine_to_loop(gcd *d, enum gcd_event_kind kind, uint32_t bucket, int64_t step, int status,
                    uint64_t ctl_id, const char *text)
{
    pthread_mutex_lock(&d->mu);
    int rc = gcd_queue_push(&d->to_loop, kind, bucket, step, status, ctl_id, text);
    pthread_mutex_unlock(&d->mu);
    if (rc)
        gcd_log_error("out of memory queueing an event for the trainers");
    gcd_sessions_wake(d);
}

static gcd_engine_bucket *eng_bucket(gcd_bucket *b)
{
    if (b->eng)
        return b->eng;
    gcd_engine_bucket *e = calloc(1, sizeof(*e));
    if (!e || !(e->layers = calloc(b->layout.n, sizeof(eng_layer)))) {
        free(e);
        return NULL;
    }
    uint32_t h = name_hash(b->name) & 0xffffu;
    for (size_t i = 0; i < b->layout.n; i++) {
        const gcd_layer *l = &b->layout.layers[i];
        gk_layer *g = &e->layers[i].geom;
        g->id = (h << 16) | (uint32_t)i;
        g->ndim = l->ndim;
        g->numel = l->numel;
        g->rows = (size_t)l->shape[0];
        g->cols = l->numel / g->rows;
    }
    b->eng = e;
    return e;
}

void gcd_eng_layer_reset(const gk_codec *c, eng_layer *l)
{
    if (l->state && c && c->state_free)
        c->state_free(l->state);
    l->state = NULL;
    free(l->x);
    l->x = NULL;
}

static void eng_bucket_free(gcd_bucket *b)
{
    gcd_engine_bucket *e = b->eng;
    if (!e)
        return;
    for (size_t i = 0; i < b->layout.n; i++)
        gcd_eng_layer_reset(e->layers[i].has_spec ? e->layers[i].spec.codec : NULL, &e->layers[i]);
    free(e->layers);
    free(e);
    b->eng = NULL;
}

/* 1 if any of the n floats is Inf or NaN (all exponent bits set). An integer OR
   reduction, so it vectorises (a float sum would be a serial dependency chain). */
static uint32_t any_nonfinite(const float *restrict v, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

/* o = a * scale with non-temporal stores where the target has them. */
static void scale_stream(float *restrict o, const float *restrict a, size_t m, float scale)
{
    size_t i = 0;
#ifdef __SSE__
    if (((uintptr_t)o & 15) == 0) {
        __m128 s = _mm_set1_ps(scale);
        for (; i + 4 <= m; i += 4)
            _mm_stream_ps(o + i, _mm_mul_ps(_mm_loadu_ps(a + i), s));
    }
#endif
    for (; i < m; i++)
        o[i] = a[i] * scale;
}

/* out = scale * sum_t in[t], in chunks that stay in cache; returns 1 if any output is
   not finite. */
static uint32_t sum_scaled(float *restrict out, float *const *in, int T, size_t n, float scale)
{
    enum { CHUNK = 4096 };
    uint32_t bad = 0;
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t m = n - off < CHUNK ? n - off : CHUNK;
        float *restrict o = out + off;
        const float *restrict a = in[0] + off;
        if (T == 1) {
            /* The result is read by other processes later, not by us: stream it past
               the cache (no read-for-ownership), as memcpy does for large copies. An
               input that is finite stays finite when scaled by <= 1. */
            scale_stream(o, a, m, scale);
            bad |= any_nonfinite(a, m);
            continue;
        } else {
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
        }
        bad |= any_nonfinite(o, m);
    }
    return bad;
}

/* Local sum of a ready bucket into its result region. Non-finite input fails the
   step (GCOMP_NONFINITE, err naming the layer) or, with nonfinite=skip, this node sends
   zeros for the layers that have it. Either way it never reaches error feedback. */
static int local_sum(gcd *d, gcd_bucket *b, char *err, size_t errlen)
{
    double t0 = gcd_now_s();
    uint32_t bad = sum_scaled(b->res, b->in, b->trainers, b->layout.numel,
                              1.0f / (float)d->total_trainers);
#ifdef __SSE__
    _mm_sfence(); /* streamed stores are visible before the exchange reads them */
#endif
    b->eng->skipped = 0;
    for (size_t i = 0; bad && i < b->layout.n; i++) {
        const gcd_layer *l = &b->layout.layers[i];
        float *g = b->res + l->offset;
        if (!any_nonfinite(g, l->numel))
            continue;
        size_t k = 0;
        while (isfinite(g[k]))
            k++;
        snprintf(err, errlen, "bucket '%.200s' layer '%.200s': non-finite gradient (%g at element %zu) on node %d",
                 b->name, l->name, (double)g[k], k, d->node);
        if (!d->cfg.nonfinite_skip)
            return GCOMP_NONFINITE;
        gcd_log_warn("%s: skipped, this node sends zeros for it", err);
        memset(g, 0, l->numel * sizeof(float));
        b->eng->skipped++;
    }
    b->eng->t_sum_ms = (gcd_now_s() - t0) * 1e3;
    return GCOMP_OK;
}

static gp_instance *policy_at(engine *e, int64_t step)
{
    for (int i = e->npol - 1; i >= 0; i--)
        if (step >= e->pol[i].from_step)
            return e->pol[i].p;
    return e->pol[0].p;
}

static bool spec_equal(const gk_spec *a, const gk_spec *b)
{
    return a->codec == b->codec && a->ef == b->ef && a->min_elements == b->min_elements &&
           memcmp(a->v, b->v, sizeof(a->v)) == 0;
}

/* One line of the decision log: {"step", "bucket", "layer", "old", "new", "why"}, in
   memory for gcompctl policy log and in the --decision-log file. A NULL spec is "none";
   `first` means the layer had no spec before ("old": null). */
static void log_decision(engine *e, const gcd_bucket *b, size_t i, int64_t step,
                         const gk_spec *old, bool first, const gk_spec *now, const char *why)
{
    gcd *d = e->d;
    char o[512] = "none", n[512] = "none", line[3200], q[4][600];
    if (old)
        gk_spec_format(old, o, sizeof(o));
    if (now)
        gk_spec_format(now, n, sizeof(n));
    gcd_json_str(q[0], sizeof(q[0]), b->name);
    gcd_json_str(q[1], sizeof(q[1]), b->layout.layers[i].name);
    gcd_json_str(q[2], sizeof(q[2]), why);
    gcd_json_str(q[3], sizeof(q[3]), n);
    char oq[600] = "null";
    if (!first)
        gcd_json_str(oq, sizeof(oq), o);
    snprintf(line, sizeof(line), "{\"step\":%lld,\"bucket\":%s,\"layer\":%s,\"old\":%s,\"new\":%s,\"why\":%s}",
             (long long)step, q[0], q[1], oq, q[3], q[2]);
    if (e->declog)
        fprintf(e->declog, "%s\n", line);
    pthread_mutex_lock(&d->mu);
    size_t slot = d->declog_total++ % GCD_DECLOG_LINES;
    free(d->declog[slot]);
    d->declog[slot] = strdup(line);
    pthread_mutex_unlock(&d->mu);
}

/* Ask the policy for every layer's spec; reset state where the codec changed. Exact
   buckets (GCOMP_BUCKET_EXACT) go dense without asking. */
static int decide_layers(engine *e, gcd_bucket *b, int64_t step, int *ncompressed)
{
    gp_instance *p = policy_at(e, step);
    gcd_engine_bucket *eb = b->eng;
    *ncompressed = 0;
    if (b->layout.flags & GCOMP_BUCKET_EXACT)
        return GCOMP_OK;
    for (size_t i = 0; i < b->layout.n; i++) {
        eng_layer *l = &eb->layers[i];
        gp_layer pl = {.bucket = b->name, .name = b->layout.layers[i].name, .index = (int)i,
                       .geom = l->geom};
        gk_spec s;
        char why[256] = "";
        int rc = p->policy->decide(p->state, &pl, step, &s, why, sizeof(why));
        if (rc)
            return rc;
        const gk_codec *c = s.codec;
        bool comp = l->geom.ndim >= 2 && (long)l->geom.numel >= s.min_elements &&
                    (!c->compresses || c->compresses(&s, &l->geom));
        if (!l->has_spec || comp != l->compressed || (comp && !spec_equal(&l->spec, &s)))
            log_decision(e, b, i, step, l->has_spec ? (l->compressed ? &l->spec : NULL) : NULL,
                         !l->has_spec, comp ? &s : NULL, why);
        if (l->has_spec && (!spec_equal(&l->spec, &s) || !comp)) {
            if (l->spec.codec != c || !comp) {
                gcd_eng_layer_reset(l->spec.codec, l);
            } else if (l->state) {
                /* Same codec, other parameters (a rank, a density): the state is sized
                   for the old ones. Keep the residual x, make the state anew below. */
                c->state_free(l->state);
                l->state = NULL;
            }
        }
        l->spec = s;
        l->has_spec = true;
        l->compressed = comp;
        if (comp) {
            if (!l->x && !(l->x = calloc(l->geom.numel, sizeof(float))))
                return GCOMP_NOMEM;
            if (!l->state && c->state_new && (rc = c->state_new(&s, &l->geom, &l->state)))
                return rc;
            (*ncompressed)++;
        }
    }
    return GCOMP_OK;
}

/* Exchange the dense layers exactly: one allreduce of the packed dense elements. */
static int exchange_dense(engine *e, gcd_bucket *b, int ncompressed, size_t *payload)
{
    gcd *d = e->d;
    gcd_engine_bucket *eb = b->eng;
    if (ncompressed == 0) {
        *payload += b->layout.numel * sizeof(float);
        for (size_t i = 0; i < b->layout.n; i++)
            eb->layers[i].payload = b->layout.layers[i].numel * sizeof(float);
        return d->transport.ops->allreduce(&d->transport, GK_COLL_ALLREDUCE_F32, b->res,
                                           b->layout.numel);
    }
    size_t n = 0;
    for (size_t i = 0; i < b->layout.n; i++)
        if (!eb->layers[i].compressed)
            n += b->layout.layers[i].numel;
    if (n == 0)
        return GCOMP_OK;
    float *stage = scratch(&e->buf, &e->bufcap, n * sizeof(float));
    if (!stage)
        return GCOMP_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < b->layout.n; i++)
        if (!eb->layers[i].compressed) {
            const gcd_layer *l = &b->layout.layers[i];
            memcpy(stage + k, b->res + l->offset, l->numel * sizeof(float));
            eb->layers[i].payload = l->numel * sizeof(float);
            k += l->numel;
        }
    int rc = d->transport.ops->allreduce(&d->transport, GK_COLL_ALLREDUCE_F32, stage, n);
    if (rc)
        return rc;
    k = 0;
    for (size_t i = 0; i < b->layout.n; i++)
        if (!eb->layers[i].compressed) {
            const gcd_layer *l = &b->layout.layers[i];
            memcpy(b->res + l->offset, stage + k, l->numel * sizeof(float));
            k += l->numel;
        }
    *payload += n * sizeof(float);
    return GCOMP_OK;
}

/* Allgather segments start 8-byte aligned (the padding travels and counts in the
   bucket's payload); allreduce segments are packed arrays of their element type. */
#define ALIGN8(x) (((x) + 7) & ~(size_t)7)
#define SEGMENT(gather, bytes) ((gather) ? ALIGN8(bytes) : (bytes))

static size_t coll_elem(gk_coll c)
{
    return c == GK_COLL_ALLREDUCE_F32 ? 4 : c == GK_COLL_ALLGATHER ? 1 : 2;
}

/*
 * One phase of one codec group (the layers in idx[0..n)). Allreduce phases: one
 * in-place allreduce of the concatenated segments. Allgather phases: each node's
 * payload is a table of n uint32 segment sizes followed by the segments; the sizes of
 * the payloads are allgathered first.
 */
static int run_phase(engine *e, gcd_bucket *b, int64_t step, const size_t *idx, size_t n,
                     int phase, size_t *payload)
{
    gcd *d = e->d;
    gcd_engine_bucket *eb = b->eng;
    const gk_spec *spec = &eb->layers[idx[0]].spec;
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c);
    gk_coll coll = c->phase_coll ? c->phase_coll(spec, phase) : GK_COLL_ALLREDUCE_F32;
    bool gather = coll == GK_COLL_ALLGATHER;
    size_t head = gather ? ALIGN8(n * sizeof(uint32_t)) : 0, total = head;
    for (size_t j = 0; j < n; j++)
        total += SEGMENT(gather, c->max_bytes(spec, &eb->layers[idx[j]].geom, phase));
    uint8_t *send = scratch(&e->buf, &e->bufcap, total ? total : 1);
    if (!send)
        return GCOMP_NOMEM;
    size_t off = head;
    int rc = GCOMP_OK;
    for (size_t j = 0; j < n; j++) {
        eng_layer *l = &eb->layers[idx[j]];
        gk_call call = {.spec = spec, .layer = &l->geom, .state = l->state, .phase = phase,
                        .nodes = d->nodes, .node = d->node, .step = (uint64_t)step,
                        .seed = d->cfg.seed};
        size_t bytes = 0, max = c->max_bytes(spec, &l->geom, phase);
        rc = impl->encode(&call, l->x, send + off, &bytes);
        if (rc)
            return rc;
        if (bytes > max || (!gather && bytes != max)) {
            gcd_log_error("codec %s wrote %zu bytes for layer %s, limit %zu", c->name, bytes,
                          b->layout.layers[idx[j]].name, max);
            return GCOMP_INTERNAL;
        }
        if (gather) {
            uint32_t sz = (uint32_t)bytes;
            memcpy(send + j * sizeof(uint32_t), &sz, sizeof(sz));
            memset(send + off + bytes, 0, SEGMENT(gather, bytes) - bytes);
        }
        l->payload += bytes; /* the layer's own bytes; padding counts for the bucket */
        off += SEGMENT(gather, bytes);
    }
    if (gather)
        memset(send + n * sizeof(uint32_t), 0, head - n * sizeof(uint32_t));
    *payload += off;

    if (!gather) {
        rc = d->transport.ops->allreduce(&d->transport, coll, send, off / coll_elem(coll));
        if (rc)
            return rc;
        size_t at = 0;
        for (size_t j = 0; j < n && !rc; j++) {
            eng_layer *l = &eb->layers[idx[j]];
            gk_call call = {.spec = spec, .layer = &l->geom, .state = l->state, .phase = phase,
                            .nodes = d->nodes, .node = d->node, .step = (uint64_t)step,
                            .seed = d->cfg.seed};
            size_t bytes = c->max_bytes(spec, &l->geom, phase);
            const void *recv = send + at;
            rc = impl->decode(&call, l->x, &recv, &bytes, 1,
                              b->res + b->layout.layers[idx[j]].offset);
            at += bytes;
        }
        return rc;
    }

    /* Allgather: sizes first, then the payloads. */
    int W = d->nodes;
    uint64_t *sizes = calloc(W, sizeof(uint64_t));
    size_t *counts = calloc(W, sizeof(size_t)), *displs = calloc(W, sizeof(size_t));
    const void **recvp = calloc(W, sizeof(void *));
    size_t *recvb = calloc(W, sizeof(size_t));
    rc = GCOMP_NOMEM;
    if (!sizes || !counts || !displs || !recvp || !recvb)
        goto out;
    rc = d->transport.ops->allgather_u64(&d->transport, off, sizes);
    if (rc)
        goto out;
    size_t all = 0;
    for (int w = 0; w < W; w++) {
        counts[w] = sizes[w];
        displs[w] = all;
        all += sizes[w];
    }
    rc = GCOMP_NOMEM;
    uint8_t *recv = scratch(&e->buf2, &e->buf2cap, all ? all : 1);
    if (!recv)
        goto out;
    rc = d->transport.ops->allgatherv(&d->transport, send, off, recv, counts, displs);
    if (rc)
        goto out;
    /* Walk every node's size table in step with the layers. */
    size_t *cursor = calloc(W, sizeof(size_t));
    if (!cursor) {
        rc = GCOMP_NOMEM;
        goto out;
    }
    for (int w = 0; w < W; w++)
        cursor[w] = displs[w] + head;
    for (size_t j = 0; j < n && !rc; j++) {
        eng_layer *l = &eb->layers[idx[j]];
        for (int w = 0; w < W; w++) {
            uint32_t sz;
            memcpy(&sz, recv + displs[w] + j * sizeof(uint32_t), sizeof(sz));
            if (cursor[w] + ALIGN8(sz) > displs[w] + counts[w]) {
                gcd_log_error("node %d sent a malformed payload for bucket %s", w, b->name);
                rc = GCOMP_PROTOCOL;
                break;
            }
            recvp[w] = recv + cursor[w];
            recvb[w] = sz;
            cursor[w] += ALIGN8(sz);
        }
        if (rc)
            break;
        gk_call call = {.spec = spec, .layer = &l->geom, .state = l->state, .phase = phase,
                        .nodes = W, .node = d->node, .step = (uint64_t)step, .seed = d->cfg.seed};
        rc = impl->decode(&call, l->x, recvp, recvb, W, b->res + b->layout.layers[idx[j]].offset);
    }
    free(cursor);
out:
    free(sizes);
    free(counts);
    free(displs);
    free(recvp);
    free(recvb);
    return rc;
}

/* Compressed layers' codec input: x = (ef ? x : 0) + W * (the node's share in res),
   i.e. the node's gradient (its trainers' mean) plus the residual. */
static void prepare_compressed(engine *e, gcd_bucket *b)
{
    gcd_engine_bucket *eb = b->eng;
    float W = (float)e->d->nodes;
    for (size_t i = 0; i < b->layout.n; i++) {
        eng_layer *l = &eb->layers[i];
        if (!l->compressed)
            continue;
        const float *g = b->res + b->layout.layers[i].offset;
        if (l->spec.ef)
            for (size_t k = 0; k < l->geom.numel; k++)
                l->x[k] += W * g[k];
        else
            for (size_t k = 0; k < l->geom.numel; k++)
                l->x[k] = W * g[k];
        l->payload = 0;
    }
}

/* Each group of compressed layers (one spec) runs its codec's phases. */
static int exchange_compressed(engine *e, gcd_bucket *b, int64_t step, size_t *payload)
{
    gcd_engine_bucket *eb = b->eng;
    size_t nl = b->layout.n;
    size_t *idx = malloc(nl * sizeof(size_t));
    bool *done = calloc(nl, sizeof(bool));
    int rc = idx && done ? GCOMP_OK : GCOMP_NOMEM;
    for (size_t i = 0; i < nl && !rc; i++) {
        if (!eb->layers[i].compressed || done[i])
            continue;
        size_t n = 0;
        for (size_t j = i; j < nl; j++)
            if (eb->layers[j].compressed && !done[j] &&
                spec_equal(&eb->layers[j].spec, &eb->layers[i].spec)) {
                idx[n++] = j;
                done[j] = true;
            }
        const gk_spec *s = &eb->layers[i].spec;
        int nph = s->codec->nphases ? s->codec->nphases(s) : 1;
        for (int p = 0; p < nph && !rc; p++)
            rc = run_phase(e, b, step, idx, n, p, payload);
        if (!s->ef)
            for (size_t j = 0; j < n; j++)
                memset(eb->layers[idx[j]].x, 0, eb->layers[idx[j]].geom.numel * sizeof(float));
    }
    free(idx);
    free(done);
    return rc;
}

/* Append the stats line of a finished step to the file and the totals; keep the
   step's per-layer record (JSON and text) for gcompctl stats. */
static void record(engine *e, gcd_bucket *b, int64_t step, size_t payload, double t_wait_ms,
                   double t_xchg_ms, double t_total_ms, int status)
{
    gcd *d = e->d;
    gcd_engine_bucket *eb = b->eng;
    char *json = NULL, *text = NULL;
    size_t jlen = 0, tlen = 0;
    if (status == 0) {
        FILE *f = open_memstream(&json, &jlen), *t = open_memstream(&text, &tlen);
        char name[2 * GCOMP_MAX_NAME + 8];
        if (f && t) {
            gcd_json_str(name, sizeof(name), b->name);
            fprintf(f, "{\"step\":%lld,\"bucket\":%s,\"node\":%d,\"nodes\":%d,\"trainers\":%d,"
                       "\"dense_bytes\":%zu,\"payload_bytes\":%zu,\"t_sum_ms\":%.4f,\"t_wait_ms\":%.4f,"
                       "\"t_exchange_ms\":%.4f,\"t_total_ms\":%.4f,\"nonfinite_skipped\":%d,"
                       "\"policy\":",
                    (long long)step, name, d->node, d->nodes, d->total_trainers,
                    b->layout.numel * sizeof(float), payload, eb->t_sum_ms, t_wait_ms, t_xchg_ms,
                    t_total_ms, eb->skipped);
            gcd_json_str(name, sizeof(name), policy_at(e, step)->spec);
            fprintf(f, "%s,\"layers\":[", name);
            fprintf(t, "%s step %lld:\n", b->name, (long long)step);
            for (size_t i = 0; i < b->layout.n; i++) {
                const eng_layer *l = &eb->layers[i];
                char spec[512] = "\"codec\":\"none\"", plain[512] = "none";
                if (l->compressed) {
                    gk_spec_json(&l->spec, spec, sizeof(spec));
                    gk_spec_format(&l->spec, plain, sizeof(plain));
                }
                gcd_json_str(name, sizeof(name), b->layout.layers[i].name);
                fprintf(f, "%s{\"name\":%s,\"numel\":%zu,%s,\"payload_bytes\":%zu}",
                        i ? "," : "", name, l->geom.numel, spec, l->payload);
                fprintf(t, "  %-32.32s %10zu elements %12zu bytes  %s\n",
                        b->layout.layers[i].name, l->geom.numel, l->payload, plain);
            }
            fprintf(f, "]}");
        }
        if (f)
            fclose(f);
        if (t)
            fclose(t);
        if (json && d->stats.file)
            fprintf(d->stats.file, "%s\n", json);
    }
    pthread_mutex_lock(&d->mu);
    gcd_stats_bucket *sb = gcd_stats_bucket_get(&d->stats, b->name);
    if (sb) {
        sb->last_step = step;
        if (status) {
            sb->failed++;
        } else {
            sb->steps++;
            sb->dense_bytes += b->layout.numel * sizeof(float);
            sb->payload_bytes += payload;
            sb->t_sum_ms += eb->t_sum_ms;
            sb->t_wait_ms += t_wait_ms;
            sb->t_exchange_ms += t_xchg_ms;
            sb->t_total_ms += t_total_ms;
            if (json && text) {
                free(sb->last_json);
                free(sb->last_text);
                sb->last_json = json;
                sb->last_text = text;
                json = text = NULL;
            }
        }
    }
    if (status == GCOMP_NONFINITE)
        d->stats.nonfinite++;
    d->stats.nonfinite_skipped += (uint64_t)eb->skipped;
    pthread_mutex_unlock(&d->mu);
    free(json);
    free(text);
}

/* The policy's numbers for every layer of the bucket, on this node's data: g is the
   node's gradient (W * its share in res), x the codec's input (g for dense layers). */
static int collect_layers(engine *e, gcd_bucket *b, gp_instance *p, int64_t step, double *vec)
{
    gcd_engine_bucket *eb = b->eng;
    int ns = p->policy->nstats;
    float W = (float)e->d->nodes;
    for (size_t i = 0; i < b->layout.n; i++) {
        eng_layer *l = &eb->layers[i];
        float *g = scratch(&e->buf, &e->bufcap, l->geom.numel * sizeof(float));
        if (!g)
            return GCOMP_NOMEM;
        const float *res = b->res + b->layout.layers[i].offset;
        for (size_t k = 0; k < l->geom.numel; k++)
            g[k] = W * res[k];
        gp_layer pl = {.bucket = b->name, .name = b->layout.layers[i].name, .index = (int)i,
                       .geom = l->geom};
        int rc = p->policy->collect(p->state, &pl, step, g, l->compressed ? l->x : g,
                                    vec + i * (size_t)ns);
        if (rc)
            return rc;
    }
    return GCOMP_OK;
}

/* Average the step's statistics over the nodes (one small allreduce) and hand them to
   the policy; then publish its batch-size advice. */
enum {
    TAIL_STEP_MS, TAIL_XCHG_MS, TAIL_SAMPLES, TAIL_LR, TAIL_HAS_LR, TAIL_HAS_SAMPLES,
    TAIL_EPOCHS, TAIL_HINT_STEP, TAIL_N
};

static int observe_step(engine *e, gcd_bucket *b, gp_instance *p, int64_t step, double *vec,
                        double exchange_ms)
{
    gcd *d = e->d;
    gcd_engine_bucket *eb = b->eng;
    size_t nl = b->layout.n, ns = (size_t)p->policy->nstats, tail = nl * ns + nl;
    gp_hints h = {0};
    pthread_mutex_lock(&d->mu);
    h.lr = d->hints.lr;
    h.has_lr = d->hints.has_lr;
    h.has_samples = d->hints.has_samples;
    for (int t = 0; t < d->trainers; t++)
        h.samples += d->hints.samples[t];
    h.epochs = d->hints.epochs;
    h.step = d->hints.step;
    pthread_mutex_unlock(&d->mu);
    for (size_t i = 0; i < nl; i++)
        vec[nl * ns + i] = (double)eb->layers[i].payload;
    vec[tail + TAIL_STEP_MS] = eb->t_prev_ready > 0 ? (eb->t_ready - eb->t_prev_ready) * 1e3 : 0.0;
    vec[tail + TAIL_XCHG_MS] = exchange_ms;
    vec[tail + TAIL_SAMPLES] = (double)h.samples;
    vec[tail + TAIL_LR] = h.lr;
    vec[tail + TAIL_HAS_LR] = h.has_lr;
    vec[tail + TAIL_HAS_SAMPLES] = h.has_samples;
    vec[tail + TAIL_EPOCHS] = (double)h.epochs;
    vec[tail + TAIL_HINT_STEP] = (double)h.step;
    int rc = d->transport.ops->allreduce_f64(&d->transport, vec, tail + TAIL_N);
    if (rc)
        return rc;
    double inv = 1.0 / d->nodes;
    for (size_t k = 0; k < tail + TAIL_N; k++)
        if (k != tail + TAIL_SAMPLES)
            vec[k] *= inv;
    /* Every node now holds the same numbers; so are the hints the policy sees. */
    h.samples = (int64_t)vec[tail + TAIL_SAMPLES];
    h.lr = vec[tail + TAIL_LR];
    h.has_lr = vec[tail + TAIL_HAS_LR] == 1.0;
    h.has_samples = vec[tail + TAIL_HAS_SAMPLES] == 1.0;
    /* Nodes may see an epoch end a step apart: the floor of the mean is the same on all. */
    h.epochs = (int64_t)floor(vec[tail + TAIL_EPOCHS]);
    h.step = (int64_t)floor(vec[tail + TAIL_HINT_STEP]);

    gp_layer *layers = calloc(nl, sizeof(*layers));
    gk_spec *specs = calloc(nl, sizeof(*specs));
    bool *comp = calloc(nl, sizeof(*comp));
    rc = layers && specs && comp ? GCOMP_OK : GCOMP_NOMEM;
    for (size_t i = 0; i < nl && !rc; i++) {
        layers[i] = (gp_layer){.bucket = b->name, .name = b->layout.layers[i].name,
                               .index = (int)i, .geom = eb->layers[i].geom};
        specs[i] = eb->layers[i].spec;
        comp[i] = eb->layers[i].compressed;
    }
    if (!rc) {
        gp_step_info info = {.step = step, .bucket = b->name, .nlayers = (int)nl,
                             .layers = layers, .specs = specs, .compressed = comp,
                             .payload = vec + nl * ns, .stats = vec,
                             .step_ms = vec[tail + TAIL_STEP_MS],
                             .exchange_ms = vec[tail + TAIL_XCHG_MS], .nodes = d->nodes,
                             .hints = &h};
        if (p->policy->observe)
            rc = p->policy->observe(p->state, &info);
    }
    gp_advice adv;
    if (!rc && p->policy->advice && p->policy->advice(p->state, &adv) == GCOMP_OK) {
        pthread_mutex_lock(&d->mu);
        d->advice_batch = adv.batch_size;
        d->advice_lr_scale = adv.lr_scale;
        d->advice_step = adv.step;
        pthread_mutex_unlock(&d->mu);
    }
    free(layers);
    free(specs);
    free(comp);
    return rc;
}

/* Run one agreed bucket step and hand the result to the trainers. */
static int run_bucket(engine *e, gcd_bucket *b, int64_t step)
{
    double t0 = gcd_now_s();
    int ncomp = 0;
    size_t payload = 0;
    gp_instance *p = policy_at(e, step);
    bool observing = !(b->layout.flags & GCOMP_BUCKET_EXACT) &&
                     (p->policy->collect || p->policy->observe || p->policy->advice);
    size_t nvec = b->layout.n * ((size_t)p->policy->nstats + 1) + TAIL_N;
    double *vec = observing ? scratch((void **)&e->stats, &e->statscap, nvec * sizeof(double)) : NULL;
    int rc = observing && !vec ? GCOMP_NOMEM : decide_layers(e, b, step, &ncomp);
    if (!rc && ncomp)
        prepare_compressed(e, b);
    double t_collect = 0.0; /* the policy's own time, not the exchange's */
    if (!rc && observing) {
        memset(vec, 0, nvec * sizeof(double));
        double tc = gcd_now_s();
        if (p->policy->collect && p->policy->nstats > 0)
            rc = collect_layers(e, b, p, step, vec);
        t_collect = gcd_now_s() - tc;
    }
    if (!rc)
        rc = exchange_dense(e, b, ncomp, &payload);
    if (!rc && ncomp)
        rc = exchange_compressed(e, b, step, &payload);
    double t1 = gcd_now_s();
    if (!rc && observing)
        rc = observe_step(e, b, p, step, vec, (t1 - t0 - t_collect) * 1e3);
    char msg[640] = "";
    if (rc) {
        /* The collectives of the nodes are now out of step: nothing can be trusted. */
        snprintf(msg, sizeof(msg), "bucket '%s' step %lld: exchange failed on node %d: %s",
                 b->name, (long long)step, e->d->node, gcomp_strerror(rc));
        gcd_log_error("%s", msg);
    }
    record(e, b, step, payload, (t0 - b->eng->t_ready) * 1e3, (t1 - t0) * 1e3,
           (t1 - b->eng->t_ready) * 1e3, rc);
    gcd_engine_to_loop(e->d, GCD_EV_COMPLETE, b->id, step, rc, 0, msg);
    return rc;
}

/* ---- negotiation ---- */

typedef struct report_build {
    Gcomp__NodeReport r;
    Gcomp__ReadyEntry **entries; /* each owns its layout arrays, if it carries one */
    size_t n, cap;
    char **unregistered;         /* names of buckets that died here this cycle */
    size_t nunreg;
} report_build;

static Gcomp__ReadyEntry *report_add(report_build *rb, const char *bucket, int64_t step,
                                     int status, const char *error)
{
    if (rb->n == rb->cap) {
        size_t cap = rb->cap ? rb->cap * 2 : 16;
        Gcomp__ReadyEntry **arr = realloc(rb->entries, cap * sizeof(*arr));
        if (!arr)
            return NULL;
        rb->entries = arr;
        rb->cap = cap;
    }
    Gcomp__ReadyEntry *en = calloc(1, sizeof(*en));
    if (!en)
        return NULL;
    gcomp__ready_entry__init(en);
    en->bucket = strdup(bucket);
    en->step = step;
    en->status = status;
    en->error = strdup(error ? error : "");
    rb->entries[rb->n++] = en;
    return en;
}

static void report_clear(report_build *rb)
{
    for (size_t i = 0; i < rb->n; i++) {
        Gcomp__ReadyEntry *en = rb->entries[i];
        if (en->n_layers) {
            free(en->layers[0]); /* the messages' block (gcd_layout_to_proto) */
            free(en->layers);
        }
        free(en->bucket);
        free(en->error);
        free(en);
    }
    free(rb->entries);
    for (size_t i = 0; i < rb->nunreg; i++)
        free(rb->unregistered[i]);
    free(rb->unregistered);
}

/* Fail every step this node holds (stall, shutdown, broken exchange). */
static void fail_everything(gcd *d, int status, const char *why)
{
    pthread_mutex_lock(&d->mu);
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i] && d->buckets[i]->pending_step >= 0)
            gcd_queue_push(&d->to_loop, GCD_EV_COMPLETE, i, d->buckets[i]->pending_step, status,
                           0, why);
    pthread_mutex_unlock(&d->mu);
    gcd_sessions_wake(d);
}

/* A gcompctl query for the policy in force (e.g. perfmodel's whatif), answered here:
   it reads the policy's state, which only this thread touches. */
static void answer_query(engine *e, const gcd_event *ev)
{
    gp_instance *p = e->pol[e->npol - 1].p;
    char args[1024], *argv[32], *save = NULL;
    int argc = 0;
    snprintf(args, sizeof(args), "%s", ev->text);
    for (char *t = strtok_r(args, "\n", &save); t && argc < 32; t = strtok_r(NULL, "\n", &save))
        argv[argc++] = t;
    static char out[64 * 1024];
    int rc;
    if (!p->policy->query) {
        snprintf(out, sizeof(out), "policy '%s' answers no queries%s", p->policy->name,
                 argc && strcmp(argv[0], "whatif") == 0 ? " (whatif needs --policy perfmodel)" : "");
        rc = GCOMP_NOT_FOUND;
    } else {
        out[0] = '\0';
        rc = p->policy->query(p->state, argc, (const char *const *)argv, ev->status, out,
                              sizeof(out));
    }
    gcd_engine_to_loop(e->d, GCD_EV_CTL_REPLY, 0, 0, rc, ev->ctl_id, out);
}

/* Take the loop's events and build this cycle's report. */
static int build_report(engine *e, report_build *rb, bool *shutdown)
{
    gcd *d = e->d;
    pthread_mutex_lock(&d->mu);
    gcd_event *ev = gcd_queue_take_all(&d->to_engine);
    rb->r.max_step = d->max_step;
    /* Buckets with a lost trainer fail whatever step the other nodes start. */
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i] && !d->buckets[i]->dying && d->buckets[i]->lost[0])
            report_add(rb, d->buckets[i]->name, -1, GCOMP_PEER_LOST, d->buckets[i]->lost);
    pthread_mutex_unlock(&d->mu);

    while (ev) {
        gcd_event *next = ev->next;
        gcd_bucket *b = NULL;
        if (ev->kind == GCD_EV_READY || ev->kind == GCD_EV_FAIL || ev->kind == GCD_EV_UNREGISTER) {
            pthread_mutex_lock(&d->mu);
            b = gcd_bucket_by_id(d, ev->bucket);
            pthread_mutex_unlock(&d->mu);
        }
        switch (ev->kind) {
        case GCD_EV_READY: {
            char err[512];
            gcd_engine_bucket *eb = eng_bucket(b);
            if (eb && e->saved)
                gcd_checkpoint_adopt(e, b);
            /* This step of the bucket is now reported, ready or failed, and waits for
               its decision: apply_entry() counts it back. */
            if (!eb) {
                report_add(rb, b->name, ev->step, GCOMP_NOMEM, "out of memory");
                e->outstanding++;
                break;
            }
            eb->t_prev_ready = eb->t_ready;
            eb->t_ready = gcd_now_s();
            int rc = local_sum(d, b, err, sizeof(err));
            if (rc) {
                gcd_log_warn("%s", err);
                report_add(rb, b->name, ev->step, rc, err);
                e->outstanding++;
                break;
            }
            /* The first report of a bucket carries its layout, for the coordinator to
               compare across nodes. */
            Gcomp__Layer *msgs, **ptrs;
            if (!b->announced && gcd_layout_to_proto(&b->layout, &msgs, &ptrs)) {
                report_add(rb, b->name, ev->step, GCOMP_NOMEM, "out of memory");
            } else {
                Gcomp__ReadyEntry *en = report_add(rb, b->name, ev->step, 0, NULL);
                if (en && !b->announced) {
                    en->layers = ptrs;
                    en->n_layers = b->layout.n;
                    en->flags = b->layout.flags;
                    b->announced = true;
                } else if (!b->announced) {
                    free(msgs);
                    free(ptrs);
                }
            }
            e->outstanding++;
            break;
        }
        case GCD_EV_FAIL:
            report_add(rb, b->name, ev->step, ev->status, ev->text);
            break;
        case GCD_EV_UNREGISTER: {
            /* Every slot left it: drop the engine's state, tell the coordinator (so the
               name may come back with another layout), let the loop free the memory. */
            char **names = realloc(rb->unregistered, (rb->nunreg + 1) * sizeof(*names));
            if (names) {
                rb->unregistered = names;
                if ((names[rb->nunreg] = strdup(b->name)))
                    rb->nunreg++;
            }
            eng_bucket_free(b);
            gcd_engine_to_loop(d, GCD_EV_FREED, b->id, 0, 0, 0, NULL);
            break;
        }
        case GCD_EV_POLICY: {
            ctl_wait *a = realloc(e->asks, (e->nasks + 1) * sizeof(*a));
            if (a) {
                e->asks = a;
                a[e->nasks].ctl_id = ev->ctl_id;
                snprintf(a[e->nasks].spec, sizeof(a[e->nasks].spec), "%s", ev->text);
                e->nasks++;
            }
            break;
        }
        case GCD_EV_SHUTDOWN:
            *shutdown = true;
            break;
        case GCD_EV_QUERY:
            answer_query(e, ev);
            break;
        case GCD_EV_CHECKPOINT: {
            ctl_wait *a = realloc(e->ckpt_asks, (e->nckpt + 1) * sizeof(*a));
            if (a) {
                e->ckpt_asks = a;
                a[e->nckpt].ctl_id = ev->ctl_id;
                snprintf(a[e->nckpt].spec, sizeof(a[e->nckpt].spec), "%s", ev->text);
                e->nckpt++;
            }
            break;
        }
        default:
            break;
        }
        free(ev);
        ev = next;
    }
    rb->r.node = d->node;
    rb->r.ready = rb->entries;
    rb->r.n_ready = rb->n;
    rb->r.unregistered = rb->unregistered;
    rb->r.n_unregistered = rb->nunreg;
    rb->r.shutdown = *shutdown;
    /* One policy switch per cycle; the coordinator queues them in order. */
    if (e->sent_asks < e->nasks)
        rb->r.policy_spec = e->asks[e->sent_asks++].spec;
    if (e->sent_ckpt < e->nckpt)
        rb->r.checkpoint_dir = e->ckpt_asks[e->sent_ckpt++].spec;
    return GCOMP_OK;
}

/* Node 0: unpack the reports, decide, pack the decision. */
static int coordinate(engine *e, void **reports, size_t *lens, uint8_t **out, size_t *outlen)
{
    int W = e->d->nodes, rc = GCOMP_OK;
    Gcomp__NodeReport **r = calloc(W, sizeof(*r));
    if (!r)
        return GCOMP_NOMEM;
    for (int w = 0; w < W && !rc; w++)
        if (!(r[w] = gcomp__node_report__unpack(NULL, lens[w], reports[w]))) {
            gcd_log_error("undecodable negotiation report from node %d", w);
            rc = GCOMP_PROTOCOL;
        }
    Gcomp__Decision dec = GCOMP__DECISION__INIT;
    if (!rc)
        rc = gcd_coord_step(e->coord, r, &dec);
    if (!rc) {
        *outlen = gcomp__decision__get_packed_size(&dec);
        *out = malloc(*outlen ? *outlen : 1);
        if (*out)
            gcomp__decision__pack(&dec, *out);
        else
            rc = GCOMP_NOMEM;
    }
    gcd_coord_decision_clear(&dec);
    for (int w = 0; w < W; w++)
        if (r[w])
            gcomp__node_report__free_unpacked(r[w], NULL);
    free(r);
    return rc;
}

/*
 * Measure the transport for the policies that model it (gp_env): latency from 4-byte
 * allreduces (alpha = t / (p - 1), as algorithms.md 3.6 says), bandwidth from a 16 MiB
 * one (T = 2 alpha (p-1) + 2 b (p-1) / (p BW)). Averaged over the nodes, so every node
 * models the same.
 */
static void probe_network(engine *e)
{
    gcd *d = e->d;
    e->probed = true;
    gcd_transport *t = &d->transport;
    int p = d->nodes;
    if (p < 2)
        return;
    enum { SMALL_REPS = 20, LARGE_REPS = 3 };
    size_t n = 4u << 20; /* floats: 16 MiB */
    float one = 0.0f, *big = calloc(n, sizeof(float));
    if (!big)
        return;
    double t0 = gcd_now_s();
    for (int i = 0; i < SMALL_REPS; i++)
        t->ops->allreduce(t, GK_COLL_ALLREDUCE_F32, &one, 1);
    double t_small = (gcd_now_s() - t0) / SMALL_REPS * 1e3;
    t->ops->allreduce(t, GK_COLL_ALLREDUCE_F32, big, n); /* first touch */
    t0 = gcd_now_s();
    for (int i = 0; i < LARGE_REPS; i++)
        t->ops->allreduce(t, GK_COLL_ALLREDUCE_F32, big, n);
    double t_large = (gcd_now_s() - t0) / LARGE_REPS * 1e3;
    free(big);
    double v[2] = {t_small, t_large};
    if (t->ops->allreduce_f64(t, v, 2))
        return;
    t_small = v[0] / p;
    t_large = v[1] / p;
    e->env.alpha_ms = t_small / (p - 1);
    double wire = t_large - 2.0 * e->env.alpha_ms * (p - 1);
    double bytes = (double)n * sizeof(float);
    e->env.bw_bytes_ms = 2.0 * bytes * (p - 1) / (p * (wire > 0 ? wire : t_large));
    gcd_log_info("network probe: latency %.4f ms, bandwidth %.2f GB/s", e->env.alpha_ms,
                 e->env.bw_bytes_ms * 1e-6);
}

/* Make the policy a spec names; measure the transport first if it needs the numbers.
   Every node calls this at the same point (start-up, restore, or the same decided
   switch), so the probe's collectives stay in step. */
int gcd_engine_make_policy(engine *e, const char *spec, gp_instance **out, char *err,
                           size_t errlen)
{
    const gp_policy *pol = gp_policy_of_spec(spec);
    if (pol && pol->uses_network && !e->probed)
        probe_network(e);
    return gp_instance_create(spec, &e->env, out, err, errlen);
}

static int apply_policy(engine *e, const Gcomp__Decision *dec)
{
    gcd *d = e->d;
    if (!dec->policy_spec || !*dec->policy_spec || dec->policy_epoch <= e->epoch)
        return GCOMP_OK;
    e->epoch = dec->policy_epoch;
    char err[1024], text[1200];
    gp_instance *p = NULL;
    int rc = gcd_engine_make_policy(e, dec->policy_spec, &p, err, sizeof(err));
    if (rc) {
        /* Validated where it was asked; every node fails alike, so keep the old one. */
        snprintf(text, sizeof(text), "policy not switched: %s", err);
        gcd_log_error("%s", text);
    } else {
        if (e->npol == MAX_POLICIES) {
            gp_instance_destroy(e->pol[0].p);
            memmove(e->pol, e->pol + 1, (MAX_POLICIES - 1) * sizeof(e->pol[0]));
            e->npol--;
        }
        e->pol[e->npol].from_step = dec->policy_step;
        e->pol[e->npol++].p = p;
        snprintf(text, sizeof(text), "policy '%s' applies from step %lld on all %d nodes",
                 dec->policy_spec, (long long)dec->policy_step, d->nodes);
        gcd_log_info("%s", text);
        pthread_mutex_lock(&d->mu);
        snprintf(d->policy_spec, sizeof(d->policy_spec), "%s", dec->policy_spec);
        d->policy_epoch = dec->policy_epoch;
        d->policy_step = dec->policy_step;
        pthread_mutex_unlock(&d->mu);
    }
    if (dec->policy_origin == d->node && e->nasks > 0) {
        gcd_engine_to_loop(d, GCD_EV_CTL_REPLY, 0, 0, rc, e->asks[0].ctl_id, text);
        memmove(e->asks, e->asks + 1, (e->nasks - 1) * sizeof(*e->asks));
        e->nasks--;
        e->sent_asks--;
    }
    return GCOMP_OK;
}

/* Apply one decision entry: run the step, or fail it here. */
static int apply_entry(engine *e, const Gcomp__DecisionEntry *en)
{
    gcd *d = e->d;
    pthread_mutex_lock(&d->mu);
    gcd_bucket *b = gcd_bucket_by_name(d, en->bucket);
    bool mine = b && b->queued && b->pending_step == en->step;
    pthread_mutex_unlock(&d->mu);
    if (mine)
        e->outstanding--;
    if (en->status) {
        if (b) {
            if (mine)
                record(e, b, en->step, 0, 0, 0, 0, en->status);
            gcd_engine_to_loop(d, GCD_EV_COMPLETE, b->id, en->step, en->status, 0, en->error);
        }
        return GCOMP_OK;
    }
    if (!mine) {
        gcd_log_error("decision runs bucket '%s' step %lld that this node does not hold",
                      en->bucket, (long long)en->step);
        return GCOMP_INTERNAL;
    }
    return run_bucket(e, b, en->step);
}

/* One negotiation cycle. Returns 1 when the job shuts down, 0 to go on, < 0 on a
   fatal error (the transport is then aborted). */
static int cycle(engine *e, bool *shutdown_asked)
{
    gcd *d = e->d;
    gcd_transport *t = &d->transport;
    report_build rb = {.r = GCOMP__NODE_REPORT__INIT};
    build_report(e, &rb, shutdown_asked);
    size_t len = gcomp__node_report__get_packed_size(&rb.r);
    uint8_t *mine = malloc(len ? len : 1);
    int rc = mine ? GCOMP_OK : GCOMP_NOMEM, stalled = -1;
    if (mine)
        gcomp__node_report__pack(&rb.r, mine);
    report_clear(&rb);

    void **reports = calloc(d->nodes, sizeof(void *));
    size_t *lens = calloc(d->nodes, sizeof(size_t));
    uint8_t *decbuf = NULL;
    size_t declen = 0;
    void *got = NULL;
    size_t gotlen = 0;
    if (!rc && (!reports || !lens))
        rc = GCOMP_NOMEM;
    if (!rc)
        rc = t->ops->gather_report(t, mine, len, reports, lens, d->cfg.timeout_ms, &stalled);
    if (!rc && d->node == 0)
        rc = coordinate(e, reports, lens, &decbuf, &declen);
    if (!rc)
        rc = t->ops->bcast_decision(t, decbuf, declen, &got, &gotlen, d->cfg.timeout_ms, &stalled);
    free(mine);
    free(decbuf);
    if (reports)
        for (int w = 0; w < d->nodes; w++)
            free(reports[w]);
    free(reports);
    free(lens);
    if (rc) {
        char why[256];
        if (rc == GCOMP_STALL)
            snprintf(why, sizeof(why), "node %d stopped answering for %d ms: job aborted", stalled,
                     d->cfg.timeout_ms);
        else
            snprintf(why, sizeof(why), "negotiation failed on node %d: %s", d->node,
                     gcomp_strerror(rc));
        gcd_log_error("%s", why);
        fail_everything(d, rc == GCOMP_STALL ? GCOMP_STALL : rc, why);
        free(got);
        return rc;
    }
    Gcomp__Decision *dec = gcomp__decision__unpack(NULL, gotlen, got);
    free(got);
    if (!dec) {
        gcd_log_error("undecodable decision from node 0");
        fail_everything(d, GCOMP_PROTOCOL, "undecodable decision from node 0");
        return GCOMP_PROTOCOL;
    }
    rc = apply_policy(e, dec);
    for (size_t i = 0; i < dec->n_run && !rc; i++)
        rc = apply_entry(e, dec->run[i]);
    if (!rc && dec->checkpoint_dir && *dec->checkpoint_dir)
        gcd_checkpoint_take(e, dec->checkpoint_dir, dec->checkpoint_origin);
    int done = dec->shutdown;
    gcomp__decision__free_unpacked(dec, NULL);
    if (d->stats.file)
        fflush(d->stats.file);
    if (rc) {
        fail_everything(d, GCOMP_PEER_LOST, "the job's exchange broke: see the daemon logs");
        return rc;
    }
    return done;
}

int gcd_engine_run(gcd *d)
{
    engine e = {.d = d};
    char err[1024];
    gp_instance *p0;
    e.env = (gp_env){.nodes = d->nodes, .trainers = d->total_trainers, .seed = d->cfg.seed};
    p0 = NULL;
    if (d->cfg.restore[0] && gcd_checkpoint_read(&e, d->cfg.restore, &p0))
        return GCOMP_IO;
    if (!p0 && gcd_engine_make_policy(&e, d->cfg.policy, &p0, err, sizeof(err))) {
        gcd_log_error("%s", err);
        return GCOMP_INVALID;
    }
    gcd_stats tmp;
    if (gcd_stats_open(&tmp, d->cfg.decision_log, d->node, err, sizeof(err))) {
        gcd_log_error("decision log: %s", err);
        gp_instance_destroy(p0);
        return GCOMP_IO;
    }
    e.declog = tmp.file;
    if (e.declog)
        setvbuf(e.declog, NULL, _IOLBF, 0);
    e.pol[0] = (policy_slot){.from_step = INT64_MIN, .p = p0};
    e.npol = 1;
    if (d->node == 0 && !(e.coord = gcd_coord_new(d->nodes))) {
        gp_instance_destroy(p0);
        return GCOMP_NOMEM;
    }
    bool shutdown = false;
    int rc;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        if (!d->to_engine.head && e.outstanding == 0 && e.sent_asks == e.nasks &&
            e.sent_ckpt == e.nckpt && !shutdown) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)d->cfg.cycle_ms * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        }
        pthread_mutex_unlock(&d->mu);
        rc = cycle(&e, &shutdown);
        if (rc)
            break;
    }
    if (rc > 0) {
        fail_everything(d, GCOMP_SHUTDOWN, "the job is shutting down");
        rc = GCOMP_OK;
    }
    for (uint32_t i = 0; i < d->nbuckets; i++)
        if (d->buckets[i])
            eng_bucket_free(d->buckets[i]);
    while (e.saved) {
        saved_bucket *s = e.saved;
        e.saved = s->next;
        gcd_checkpoint_saved_free(s);
    }
    free(e.ckpt_asks);
    for (int i = 0; i < e.npol; i++)
        gp_instance_destroy(e.pol[i].p);
    gcd_coord_free(e.coord);
    if (e.declog)
        fclose(e.declog);
    free(e.stats);
    free(e.asks);
    free(e.buf);
    free(e.buf2);
    return rc;
}
