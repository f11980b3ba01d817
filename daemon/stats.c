#include "stats.h"

#include "base/grow.h"
#include "base/json.h"
#include "daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool gcd_stats_path(const char *tmpl, int node, char *path, size_t len)
{
    if (!tmpl || !*tmpl)
        return false;
    const char *mark = strstr(tmpl, "{node}");
    if (!mark && node != 0)
        return false;
    if (mark)
        snprintf(path, len, "%.*s%d%s", (int)(mark - tmpl), tmpl, node, mark + 6);
    else
        snprintf(path, len, "%s", tmpl);
    return true;
}

int gcd_stats_open(gcd_stats *s, const char *tmpl, int node, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    char path[1024];
    if (!gcd_stats_path(tmpl, node, path, sizeof(path)))
        return GCOMP_OK;
    s->file = fopen(path, "w");
    if (!s->file) {
        snprintf(err, errlen, "stats file %s: %s", path, strerror(errno));
        return GCOMP_IO;
    }
    return GCOMP_OK;
}

void gcd_stats_close(gcd_stats *s)
{
    if (s->file)
        fclose(s->file);
    for (size_t i = 0; i < s->n; i++) {
        free(s->b[i].last_json);
        free(s->b[i].last_text);
    }
    free(s->b);
    memset(s, 0, sizeof(*s));
}

gcd_stats_bucket *gcd_stats_bucket_get(gcd_stats *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->b[i].name, name) == 0)
            return &s->b[i];
    gcd_stats_bucket *arr = gk_grow(s->b, &s->cap, s->n + 1, sizeof(*arr));
    if (!arr)
        return NULL;
    s->b = arr;
    gcd_stats_bucket *b = &s->b[s->n++];
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->last_step = -1;
    return b;
}

void gcd_stats_report(const gcd_stats *s, int json, char *out, size_t len)
{
    size_t n = 0;
#define ADD(...)                                                         \
    do {                                                                 \
        if (n < len)                                                     \
            n += (size_t)snprintf(out + n, len - n, __VA_ARGS__);        \
    } while (0)
    if (json)
        ADD("{\"nonfinite_steps\":%llu,\"nonfinite_skipped_layers\":%llu,\"buckets\":[",
            (unsigned long long)s->nonfinite, (unsigned long long)s->nonfinite_skipped);
    else
        ADD("%-24s %8s %6s %14s %14s %7s %9s %9s %9s\n", "bucket", "steps", "failed",
            "dense_bytes", "payload_bytes", "ratio", "sum_ms", "xchg_ms", "total_ms");
    for (size_t i = 0; i < s->n; i++) {
        const gcd_stats_bucket *b = &s->b[i];
        double k = b->steps ? 1.0 / (double)b->steps : 0.0;
        double ratio = b->payload_bytes ? (double)b->dense_bytes / (double)b->payload_bytes : 0.0;
        if (json) {
            char name[2 * GCOMP_MAX_NAME + 8];
            gk_json_str(name, sizeof(name), b->name);
            ADD("%s{\"bucket\":%s,\"steps\":%llu,\"failed\":%llu,\"last_step\":%lld,"
                "\"dense_bytes\":%llu,\"payload_bytes\":%llu,\"ratio\":%.4f,"
                "\"mean_sum_ms\":%.4f,\"mean_wait_ms\":%.4f,\"mean_exchange_ms\":%.4f,"
                "\"mean_total_ms\":%.4f,\"last\":%s}",
                i ? "," : "", name, (unsigned long long)b->steps, (unsigned long long)b->failed,
                (long long)b->last_step, (unsigned long long)b->dense_bytes,
                (unsigned long long)b->payload_bytes, ratio, b->t_sum_ms * k, b->t_wait_ms * k,
                b->t_exchange_ms * k, b->t_total_ms * k, b->last_json ? b->last_json : "null");
        } else {
            ADD("%-24.24s %8llu %6llu %14llu %14llu %7.2f %9.3f %9.3f %9.3f\n", b->name,
                (unsigned long long)b->steps, (unsigned long long)b->failed,
                (unsigned long long)b->dense_bytes, (unsigned long long)b->payload_bytes, ratio,
                b->t_sum_ms * k, b->t_exchange_ms * k, b->t_total_ms * k);
        }
    }
    if (json) {
        ADD("]}");
    } else {
        for (size_t i = 0; i < s->n; i++)
            if (s->b[i].last_text)
                ADD("\n%s", s->b[i].last_text);
        ADD("\nnon-finite input: %llu steps failed, %llu layers skipped\n",
            (unsigned long long)s->nonfinite, (unsigned long long)s->nonfinite_skipped);
    }
#undef ADD
}

void gcd_stats_record(struct gcd *d, const gcd_step_record *r, int status)
{
    char *json = NULL, *text = NULL;
    size_t jlen = 0, tlen = 0;
    if (status == 0) {
        FILE *f = open_memstream(&json, &jlen), *t = open_memstream(&text, &tlen);
        char name[2 * GCOMP_MAX_NAME + 8];
        if (f && t) {
            gk_json_str(name, sizeof(name), r->bucket);
            fprintf(f, "{\"step\":%lld,\"bucket\":%s,\"node\":%d,\"nodes\":%d,\"trainers\":%d,"
                       "\"lane\":%d,\"dense_bytes\":%zu,\"payload_bytes\":%zu,\"t_sum_ms\":%.4f,"
                       "\"t_wait_ms\":%.4f,\"t_prep_ms\":%.4f,\"t_collect_ms\":%.4f,"
                       "\"t_encode_ms\":%.4f,\"t_collective_ms\":%.4f,\"t_decode_ms\":%.4f,"
                       "\"t_exchange_ms\":%.4f,\"t_total_ms\":%.4f,\"nonfinite_skipped\":%d,"
                       "\"policy\":",
                    (long long)r->step, name, r->node, r->nodes, r->trainers, r->lane,
                    r->dense_bytes, r->payload_bytes, r->t_sum_ms, r->t_wait_ms, r->t_prep_ms,
                    r->t_collect_ms, r->t_encode_ms, r->t_collective_ms, r->t_decode_ms,
                    r->t_exchange_ms, r->t_total_ms, r->nonfinite_skipped);
            gk_json_str(name, sizeof(name), r->policy);
            fprintf(f, "%s,\"layers\":[", name);
            fprintf(t, "%s step %lld:\n", r->bucket, (long long)r->step);
            for (size_t i = 0; i < r->nlayers; i++) {
                const gcd_step_layer *l = &r->layers[i];
                char spec[512] = "\"codec\":\"none\"", plain[512] = "none";
                if (l->spec) {
                    gk_spec_json(l->spec, spec, sizeof(spec));
                    gk_spec_format(l->spec, plain, sizeof(plain));
                }
                gk_json_str(name, sizeof(name), l->name);
                fprintf(f, "%s{\"name\":%s,\"numel\":%zu,%s,\"payload_bytes\":%zu}",
                        i ? "," : "", name, l->numel, spec, l->payload);
                fprintf(t, "  %-32.32s %10zu elements %12zu bytes  %s\n", l->name, l->numel,
                        l->payload, plain);
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
    gcd_stats_bucket *sb = gcd_stats_bucket_get(&d->stats, r->bucket);
    if (sb) {
        sb->last_step = r->step;
        if (status) {
            sb->failed++;
        } else {
            sb->steps++;
            sb->dense_bytes += r->dense_bytes;
            sb->payload_bytes += r->payload_bytes;
            sb->t_sum_ms += r->t_sum_ms;
            sb->t_wait_ms += r->t_wait_ms;
            sb->t_exchange_ms += r->t_exchange_ms;
            sb->t_total_ms += r->t_total_ms;
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
    d->stats.nonfinite_skipped += (uint64_t)r->nonfinite_skipped;
    pthread_mutex_unlock(&d->mu);
    gcd_metrics_step(d->metrics, r, status);
    free(json);
    free(text);
}
