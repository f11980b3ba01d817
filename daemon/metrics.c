#include "metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "codec.h"
#include "gcomp.h"
#include "log.h"

#define LE_VALUE(x) x,
#define LE_TEXT(x) #x,
static const double le_value[] = {GCD_METRICS_LE(LE_VALUE)};
static const char *const le_text[] = {GCD_METRICS_LE(LE_TEXT)};
#define NLE (sizeof(le_value) / sizeof(le_value[0]))

/* The error statuses, in the table's order (OK, the first, is not an error). */
#define STATUS_CODE(name, code, msg) code,
static const int status_code[] = {GCOMP_ERRNO_MAP(STATUS_CODE)};
#define NSTATUS (sizeof(status_code) / sizeof(status_code[0]))

enum { PH_WAIT, PH_SUM, PH_PREPARE, PH_COLLECT, PH_ENCODE, PH_COLLECTIVE, PH_DECODE, NPHASES };
static const char *const phase_name[NPHASES] = {"wait", "sum", "prepare", "collect", "encode",
                                                "collective", "decode"};

typedef struct m_hist {
    uint64_t n[NLE + 1]; /* observations in (le[i-1], le[i]]; the last: above every le */
    uint64_t count;
    double sum;
} m_hist;

typedef struct m_layer {
    char *name;
    char codec[32];
    char spec[256];
} m_layer;

typedef struct m_bucket {
    char *name;
    uint64_t steps, bytes_in, bytes_out;
    double ratio;    /* the last step's dense / payload bytes */
    bool has_ratio;  /* a step sent some payload */
    m_layer *layers; /* as the last step had them */
    size_t nlayers;
} m_bucket;

struct gcd_metrics {
    pthread_mutex_t mu;
    int node, expected, connected;
    m_bucket *b;
    size_t nb, cap;
    uint64_t errors[NSTATUS];
    uint64_t errors_unknown; /* a status not in the table (GCOMP_UNKNOWN) */
    m_hist step, phase[NPHASES];
    bool nomem_logged;
};

int gcd_metrics_create(int node, int expected, gcd_metrics **out)
{
    gcd_metrics *m = calloc(1, sizeof(*m));
    *out = NULL;
    if (!m)
        return GCOMP_NOMEM;
    pthread_mutex_init(&m->mu, NULL);
    m->node = node;
    m->expected = expected;
    *out = m;
    return GCOMP_OK;
}

static void layers_free(m_bucket *b)
{
    for (size_t i = 0; i < b->nlayers; i++)
        free(b->layers[i].name);
    free(b->layers);
    b->layers = NULL;
    b->nlayers = 0;
}

void gcd_metrics_destroy(gcd_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        layers_free(&m->b[i]);
        free(m->b[i].name);
    }
    free(m->b);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Under mu: the bucket's entry, created on first use; NULL on out of memory. */
static m_bucket *bucket_get(gcd_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nb; i++)
        if (strcmp(m->b[i].name, name) == 0)
            return &m->b[i];
    char *copy = strdup(name);
    m_bucket *arr = copy ? gk_grow(m->b, &m->cap, m->nb + 1, sizeof(*arr)) : NULL;
    if (!arr) {
        free(copy);
        return NULL;
    }
    m->b = arr;
    m_bucket *b = &m->b[m->nb++];
    memset(b, 0, sizeof(*b));
    b->name = copy;
    return b;
}

static void observe(m_hist *h, double ms)
{
    double s = ms > 0 ? ms / 1e3 : 0;
    size_t i = 0;
    while (i < NLE && s > le_value[i])
        i++;
    h->n[i]++;
    h->count++;
    h->sum += s;
}

/* Under mu: the codec of each layer as the step had it. Returns false on out of
   memory (the bucket then shows no layers until a later step succeeds). */
static bool set_layers(m_bucket *b, const gcd_step_record *r)
{
    if (b->nlayers != r->nlayers) {
        layers_free(b);
        if (r->nlayers && !(b->layers = calloc(r->nlayers, sizeof(*b->layers))))
            return false;
        b->nlayers = r->nlayers;
    }
    for (size_t i = 0; i < r->nlayers; i++) {
        const gcd_step_layer *l = &r->layers[i];
        m_layer *ml = &b->layers[i];
        if (!ml->name || strcmp(ml->name, l->name) != 0) {
            free(ml->name);
            if (!(ml->name = strdup(l->name))) {
                layers_free(b);
                return false;
            }
        }
        if (l->spec) {
            snprintf(ml->codec, sizeof(ml->codec), "%s", l->spec->codec->name);
            gk_spec_format(l->spec, ml->spec, sizeof(ml->spec));
        } else {
            snprintf(ml->codec, sizeof(ml->codec), "none");
            snprintf(ml->spec, sizeof(ml->spec), "none");
        }
    }
    return true;
}

void gcd_metrics_step(gcd_metrics *m, const gcd_step_record *r, int status)
{
    if (!m)
        return;
    bool nomem = false;
    pthread_mutex_lock(&m->mu);
    if (status) {
        size_t i = 1;
        while (i < NSTATUS && status_code[i] != status)
            i++;
        if (i < NSTATUS)
            m->errors[i]++;
        else
            m->errors_unknown++;
    } else {
        m_bucket *b = bucket_get(m, r->bucket);
        if (b) {
            b->steps++;
            b->bytes_in += r->dense_bytes;
            b->bytes_out += r->payload_bytes;
            b->has_ratio = r->payload_bytes > 0;
            b->ratio = b->has_ratio ? (double)r->dense_bytes / (double)r->payload_bytes : 0;
            nomem = !set_layers(b, r);
        } else {
            nomem = true;
        }
        observe(&m->step, r->t_total_ms);
        const double ph[NPHASES] = {r->t_wait_ms, r->t_sum_ms, r->t_prep_ms, r->t_collect_ms,
                                    r->t_encode_ms, r->t_collective_ms, r->t_decode_ms};
        for (int p = 0; p < NPHASES; p++)
            observe(&m->phase[p], ph[p]);
    }
    bool log = nomem && !m->nomem_logged;
    m->nomem_logged |= nomem;
    pthread_mutex_unlock(&m->mu);
    if (log)
        gcd_log_warn("metrics: out of memory; some series of bucket '%s' are missing",
                     r->bucket);
}

void gcd_metrics_trainers(gcd_metrics *m, int connected)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->connected = connected;
    pthread_mutex_unlock(&m->mu);
}

/* A label value as the text format wants it: backslash, double quote and newline
   escaped. */
static void put_value(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '"')
            fputs("\\\"", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{node="K"` and, when key is not NULL, `,key="value"`; the caller closes it. */
static void open_sample(FILE *f, const gcd_metrics *m, const char *name, const char *key,
                        const char *value)
{
    fprintf(f, "%s{node=\"%d\"", name, m->node);
    if (key) {
        fprintf(f, ",%s=\"", key);
        put_value(f, value);
        fputc('"', f);
    }
}

static void hist(FILE *f, const gcd_metrics *m, const char *name, const m_hist *h,
                 const char *key, const char *value)
{
    char sname[64];
    snprintf(sname, sizeof(sname), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t i = 0; i <= NLE; i++) {
        cum += h->n[i];
        open_sample(f, m, sname, key, value);
        fprintf(f, ",le=\"%s\"} %llu\n", i < NLE ? le_text[i] : "+Inf", (unsigned long long)cum);
    }
    snprintf(sname, sizeof(sname), "%s_sum", name);
    open_sample(f, m, sname, key, value);
    fprintf(f, "} %.9g\n", h->sum);
    snprintf(sname, sizeof(sname), "%s_count", name);
    open_sample(f, m, sname, key, value);
    fprintf(f, "} %llu\n", (unsigned long long)h->count);
}

/* One counter of every bucket; which: 0 steps, 1 bytes in, 2 bytes out. */
static void per_bucket(FILE *f, const gcd_metrics *m, const char *name, int which)
{
    for (size_t i = 0; i < m->nb; i++) {
        const m_bucket *b = &m->b[i];
        uint64_t v = which == 0 ? b->steps : which == 1 ? b->bytes_in : b->bytes_out;
        open_sample(f, m, name, "bucket", b->name);
        fprintf(f, "} %llu\n", (unsigned long long)v);
    }
}

int gcd_metrics_render(gcd_metrics *m, char **text, size_t *len)
{
    *text = NULL;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return GCOMP_NOMEM;
    pthread_mutex_lock(&m->mu);
    family(f, "gcomp_steps_total", "counter", "Bucket steps finished on this node.");
    per_bucket(f, m, "gcomp_steps_total", 0);
    family(f, "gcomp_bytes_in_total", "counter",
           "Dense gradient bytes of the finished bucket steps (float32, per step).");
    per_bucket(f, m, "gcomp_bytes_in_total", 1);
    family(f, "gcomp_bytes_out_total", "counter",
           "Payload bytes this node sent for the finished bucket steps.");
    per_bucket(f, m, "gcomp_bytes_out_total", 2);
    family(f, "gcomp_compression_ratio", "gauge",
           "Dense bytes over payload bytes of the bucket's last step.");
    for (size_t i = 0; i < m->nb; i++)
        if (m->b[i].has_ratio) {
            open_sample(f, m, "gcomp_compression_ratio", "bucket", m->b[i].name);
            fprintf(f, "} %.6g\n", m->b[i].ratio);
        }
    family(f, "gcomp_step_errors_total", "counter", "Bucket steps failed, by status.");
    for (size_t i = 1; i < NSTATUS; i++) {
        open_sample(f, m, "gcomp_step_errors_total", "status", gcomp_err_name(status_code[i]));
        fprintf(f, "} %llu\n", (unsigned long long)m->errors[i]);
    }
    if (m->errors_unknown) {
        open_sample(f, m, "gcomp_step_errors_total", "status", "GCOMP_UNKNOWN");
        fprintf(f, "} %llu\n", (unsigned long long)m->errors_unknown);
    }
    family(f, "gcomp_step_seconds", "histogram",
           "Time of a bucket step, from the last trainer's submission to the result.");
    hist(f, m, "gcomp_step_seconds", &m->step, NULL, NULL);
    family(f, "gcomp_phase_seconds", "histogram",
           "Time of each phase of a bucket step (encode, collective and decode summed over "
           "the step's exchanges).");
    for (int p = 0; p < NPHASES; p++)
        hist(f, m, "gcomp_phase_seconds", &m->phase[p], "phase", phase_name[p]);
    family(f, "gcomp_layer_codec", "gauge",
           "1 for the codec and spec each layer's last step used (none: sent dense).");
    for (size_t i = 0; i < m->nb; i++)
        for (size_t k = 0; k < m->b[i].nlayers; k++) {
            const m_layer *l = &m->b[i].layers[k];
            open_sample(f, m, "gcomp_layer_codec", "bucket", m->b[i].name);
            fputs(",layer=\"", f);
            put_value(f, l->name);
            fputs("\",codec=\"", f);
            put_value(f, l->codec);
            fputs("\",spec=\"", f);
            put_value(f, l->spec);
            fputs("\"} 1\n", f);
        }
    family(f, "gcomp_trainers_connected", "gauge", "Trainers connected to this daemon.");
    open_sample(f, m, "gcomp_trainers_connected", NULL, NULL);
    fprintf(f, "} %d\n", m->connected);
    family(f, "gcomp_trainers_expected", "gauge", "Trainers this node serves in the job.");
    open_sample(f, m, "gcomp_trainers_expected", NULL, NULL);
    fprintf(f, "} %d\n", m->expected);
    pthread_mutex_unlock(&m->mu);
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed || !buf) {
        free(buf);
        return GCOMP_NOMEM;
    }
    *text = buf;
    *len = n;
    return GCOMP_OK;
}
