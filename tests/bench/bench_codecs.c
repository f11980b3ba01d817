/*
 * bench_codecs: encode + decode time per step of every codec in the registry over the
 * >= 2-D weight shapes of ResNet-50 and BERT-base, as a ratio to a memcpy of the same
 * dense bytes measured in the same run, and the compression ratio (dense bytes /
 * payload bytes). W = 2 is simulated: node 0 encodes once and its payload stands for
 * both nodes (allgather: recv = {p, p}; allreduce: recv = p + p, summed outside the
 * timed region).
 *
 * Usage: bench_codecs [-r REPS] [-m resnet50|bert] [CODEC]
 * The time of a step is the best of REPS (default 2) over the model's layers; layers a
 * codec's compresses() refuses go dense in the engine and are left out of its numbers.
 */
#include <stdbool.h>
#include <stdint.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "gcomp.h"
#include "halfconv.h"
#include "rng.h"

/* One kind of weight: how many layers have this shape. */
typedef struct bench_shape {
    int count;
    int ndim;
    size_t dims[4];
} bench_shape;

typedef struct bench_model {
    const char *name;
    const bench_shape *shapes;
    int nshapes;
} bench_model;

/* ResNet-50 (torchvision): conv weights out x in x kh x kw and the classifier. */
static const bench_shape resnet50_shapes[] = {
    {1, 4, {64, 3, 7, 7}},
    /* layer1: 3 bottlenecks of width 64 */
    {1, 4, {64, 64, 1, 1}}, {2, 4, {64, 256, 1, 1}}, {3, 4, {64, 64, 3, 3}},
    {3, 4, {256, 64, 1, 1}}, {1, 4, {256, 64, 1, 1}},
    /* layer2: 4 bottlenecks of width 128 */
    {1, 4, {128, 256, 1, 1}}, {3, 4, {128, 512, 1, 1}}, {4, 4, {128, 128, 3, 3}},
    {4, 4, {512, 128, 1, 1}}, {1, 4, {512, 256, 1, 1}},
    /* layer3: 6 bottlenecks of width 256 */
    {1, 4, {256, 512, 1, 1}}, {5, 4, {256, 1024, 1, 1}}, {6, 4, {256, 256, 3, 3}},
    {6, 4, {1024, 256, 1, 1}}, {1, 4, {1024, 512, 1, 1}},
    /* layer4: 3 bottlenecks of width 512 */
    {1, 4, {512, 1024, 1, 1}}, {2, 4, {512, 2048, 1, 1}}, {3, 4, {512, 512, 3, 3}},
    {3, 4, {2048, 512, 1, 1}}, {1, 4, {2048, 1024, 1, 1}},
    {1, 2, {1000, 2048}},
};

/* BERT-base (uncased): embeddings, 12 encoder layers, pooler. */
static const bench_shape bert_shapes[] = {
    {1, 2, {30522, 768}}, {1, 2, {512, 768}}, {1, 2, {2, 768}},
    {48, 2, {768, 768}},  /* Q, K, V, attention output of 12 layers */
    {12, 2, {3072, 768}}, {12, 2, {768, 3072}},
    {1, 2, {768, 768}}, /* pooler */
};

static const bench_model models[] = {
    {"resnet50", resnet50_shapes, sizeof(resnet50_shapes) / sizeof(resnet50_shapes[0])},
    {"bert-base", bert_shapes, sizeof(bert_shapes) / sizeof(bert_shapes[0])},
};
#define BENCH_NMODELS ((int)(sizeof(models) / sizeof(models[0])))

/* Codecs whose cost is arithmetic (BLAS), not memory traffic: the 2x goal does not
   apply to them. Matched as name prefixes. */
static const char *const compute_bound[] = {"powersgd", "atomo"};

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t shape_numel(const bench_shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->dims[i];
    return n;
}

/* Buffers sized for the largest layer, reused across layers and codecs. */
typedef struct bench_buf {
    float *pool;  /* Gaussian data every layer starts from */
    float *x, *out, *dst;
    void *send, *sum;
    size_t numel, send_cap;
} bench_buf;

typedef struct bench_result {
    double codec_s, memcpy_s;
    double dense_bytes, payload_bytes;
    int layers, dense_layers;
} bench_result;

/* The simulated W = 2 collective result for an allreduce phase: sum = p + p. */
static void bench_allreduce2(gk_coll coll, const void *p, size_t bytes, void *sum)
{
    if (coll == GK_COLL_ALLREDUCE_F32) {
        for (size_t i = 0; i < bytes / 4; i++)
            ((float *)sum)[i] = ((const float *)p)[i] + ((const float *)p)[i];
        return;
    }
    for (size_t i = 0; i < bytes / 2; i++) {
        uint16_t h = ((const uint16_t *)p)[i];
        float v = coll == GK_COLL_ALLREDUCE_F16 ? gk_half_to_float(h) : gk_bf16_to_float(h);
        ((uint16_t *)sum)[i] = coll == GK_COLL_ALLREDUCE_F16 ? gk_float_to_half(v + v)
                                                             : gk_float_to_bf16(v + v);
    }
}

static int bench_grow(bench_buf *b, size_t need)
{
    if (need <= b->send_cap)
        return GCOMP_OK;
    free(b->send);
    free(b->sum);
    b->send = malloc(need);
    b->sum = malloc(need);
    if (!b->send || !b->sum)
        return GCOMP_NOMEM;
    b->send_cap = need;
    return GCOMP_OK;
}

/* One step of every phase on the layer: encode + decode time into res (NULL: untimed). */
static int bench_step(const gk_spec *spec, const gk_layer *layer, void *state, uint64_t step,
                      bench_buf *b, bench_result *res);

/*
 * One layer: an untimed warm-up step first (it faults in the codec's state, as a long
 * run of the engine has), then a memcpy of x and a timed step from the same data.
 */
static int bench_layer(const gk_spec *spec, const gk_layer *layer, uint64_t step,
                       bench_buf *b, bench_result *res)
{
    const gk_codec *c = spec->codec;
    size_t dense = layer->numel * sizeof(float);
    void *state = NULL;
    int rc = c->state_new ? c->state_new(spec, layer, &state) : GCOMP_OK;
    if (rc)
        return rc;
    memcpy(b->x, b->pool, dense);
    rc = bench_step(spec, layer, state, 2 * step, b, NULL);
    if (!rc) {
        memcpy(b->x, b->pool, dense);
        double t0 = bench_now();
        memcpy(b->dst, b->x, dense);
        res->memcpy_s += bench_now() - t0;
        memcpy(b->x, b->pool, dense);
        rc = bench_step(spec, layer, state, 2 * step + 1, b, res);
        res->dense_bytes += (double)dense;
        res->layers++;
    }
    if (c->state_free)
        c->state_free(state);
    return rc;
}

static int bench_step(const gk_spec *spec, const gk_layer *layer, void *state, uint64_t step,
                      bench_buf *b, bench_result *res)
{
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c, GK_BACKEND_CPU);
    bench_result scratch = {0};
    res = res ? res : &scratch;
    int rc = GCOMP_OK;
    double t0;
    int nphases = c->nphases ? c->nphases(spec) : 1;
    for (int p = 0; p < nphases && !rc; p++) {
        gk_coll coll = c->phase_coll ? c->phase_coll(spec, p) : GK_COLL_ALLREDUCE_F32;
        size_t max = gk_payload_bytes(spec, layer, p, step), bytes = 0;
        rc = bench_grow(b, max ? max : 1);
        if (rc)
            break;
        gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = p,
                        .nodes = 2, .node = 0, .step = step, .seed = 42};
        t0 = bench_now();
        rc = impl->encode(&call, b->x, b->send, &bytes);
        res->codec_s += bench_now() - t0;
        if (rc)
            break;
        res->payload_bytes += (double)bytes;
        if (coll == GK_COLL_ALLGATHER) {
            const void *recv[2] = {b->send, b->send};
            size_t sizes[2] = {bytes, bytes};
            t0 = bench_now();
            rc = impl->decode(&call, b->x, recv, sizes, 2, b->out);
        } else {
            bench_allreduce2(coll, b->send, max, b->sum);
            const void *recv[1] = {b->sum};
            t0 = bench_now();
            rc = impl->decode(&call, b->x, recv, &max, 1, b->out);
        }
        res->codec_s += bench_now() - t0;
    }
    return rc;
}

static bool bench_is_compute_bound(const char *name)
{
    for (size_t i = 0; i < sizeof(compute_bound) / sizeof(compute_bound[0]); i++)
        if (strncmp(name, compute_bound[i], strlen(compute_bound[i])) == 0)
            return true;
    return false;
}

/* Best of reps steps of one codec over one model. */
static int bench_model_run(const gk_spec *spec, const bench_model *m, int reps, bench_buf *b,
                           bench_result *best)
{
    for (int r = 0; r < reps; r++) {
        bench_result res = {0};
        /* The codec's own rule first; a codec that compresses nothing (none) is timed on
           every layer so that it still gets a number. */
        bool any = false;
        for (int s = 0; s < m->nshapes; s++) {
            gk_layer l = {.ndim = m->shapes[s].ndim, .rows = m->shapes[s].dims[0],
                          .numel = shape_numel(&m->shapes[s])};
            l.cols = l.numel / l.rows;
            any |= !spec->codec->compresses || spec->codec->compresses(spec, &l);
        }
        uint32_t id = 0;
        for (int s = 0; s < m->nshapes; s++)
            for (int i = 0; i < m->shapes[s].count; i++, id++) {
                const bench_shape *sh = &m->shapes[s];
                gk_layer l = {.id = id, .ndim = sh->ndim, .rows = sh->dims[0],
                              .numel = shape_numel(sh)};
                l.cols = l.numel / l.rows;
                if (any && spec->codec->compresses && !spec->codec->compresses(spec, &l)) {
                    res.dense_layers++;
                    continue;
                }
                int rc = bench_layer(spec, &l, (uint64_t)r, b, &res);
                if (rc) {
                    fprintf(stderr, "bench_codecs: %s on %s layer %u: status %d\n",
                            spec->codec->name, m->name, id, rc);
                    return rc;
                }
            }
        if (r == 0 || res.codec_s < best->codec_s)
            best->codec_s = res.codec_s, best->payload_bytes = res.payload_bytes,
            best->dense_bytes = res.dense_bytes, best->layers = res.layers,
            best->dense_layers = res.dense_layers;
        if (r == 0 || res.memcpy_s < best->memcpy_s)
            best->memcpy_s = res.memcpy_s;
    }
    return GCOMP_OK;
}

int main(int argc, char **argv)
{
    openblas_set_num_threads(1); /* as gcompd runs its codecs */
    int reps = 2;
    const char *only = NULL, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (argv[i][0] != '-')
            only = argv[i];
        else {
            fprintf(stderr, "usage: %s [-r REPS] [-m resnet50|bert-base] [CODEC]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    if (only && !gk_codec_find(only)) {
        fprintf(stderr, "bench_codecs: unknown codec '%s'\n", only);
        return 2;
    }
    bench_buf b = {0};
    for (int m = 0; m < BENCH_NMODELS; m++)
        for (int s = 0; s < models[m].nshapes; s++) {
            size_t n = shape_numel(&models[m].shapes[s]);
            b.numel = n > b.numel ? n : b.numel;
        }
    b.pool = malloc(b.numel * sizeof(float));
    b.x = malloc(b.numel * sizeof(float));
    b.out = malloc(b.numel * sizeof(float));
    b.dst = malloc(b.numel * sizeof(float));
    if (!b.pool || !b.x || !b.out || !b.dst) {
        fprintf(stderr, "bench_codecs: out of memory\n");
        return 1;
    }
    gk_rng rng;
    gk_rng_seed(&rng, 1, 0, 0, 0);
    for (size_t i = 0; i < b.numel; i++)
        b.pool[i] = 1e-3f * gk_rng_normal(&rng);
    memset(b.dst, 0, b.numel * sizeof(float));
    memset(b.out, 0, b.numel * sizeof(float));

    printf("W = 2 simulated; best of %d steps; ratio = (encode + decode) / memcpy of the "
           "same dense bytes\n\n", reps);
    printf("%-18s %-10s %6s %10s %10s %8s %9s\n", "codec", "model", "layers", "codec ms",
           "memcpy ms", "x memcpy", "compress");
    int failed = 0;
    char summary[64][160];
    int nsummary = 0;
    for (int c = 0; c < gk_ncodecs; c++) {
        const gk_codec *codec = gk_codecs[c];
        if (only && strcmp(codec->name, only) != 0)
            continue;
        gk_spec spec;
        char err[512];
        if (gk_spec_parse(codec->name, &spec, err, sizeof(err))) {
            fprintf(stderr, "bench_codecs: %s\n", err);
            return 1;
        }
        double worst = 0.0;
        bool ok = true;
        for (int m = 0; m < BENCH_NMODELS; m++) {
            if (model && strcmp(model, models[m].name) != 0)
                continue;
            bench_result r = {0};
            if (bench_model_run(&spec, &models[m], reps, &b, &r)) {
                ok = false;
                failed = 1;
                continue;
            }
            double ratio = r.codec_s / r.memcpy_s;
            worst = ratio > worst ? ratio : worst;
            printf("%-18s %-10s %3d/%-2d %10.2f %10.2f %8.2f %8.1fx\n", codec->name,
                   models[m].name, r.layers, r.layers + r.dense_layers, 1e3 * r.codec_s,
                   1e3 * r.memcpy_s, ratio,
                   r.payload_bytes > 0 ? r.dense_bytes / r.payload_bytes : 0.0);
        }
        if (nsummary < 64) {
            if (!ok)
                snprintf(summary[nsummary++], sizeof(summary[0]), "%-18s failed (see above)",
                         codec->name);
            else if (bench_is_compute_bound(codec->name))
                snprintf(summary[nsummary++], sizeof(summary[0]),
                         "%-18s goal (<2x memcpy for memory-bound codecs): n/a, compute-bound "
                         "(worst %.1fx)", codec->name, worst);
            else
                snprintf(summary[nsummary++], sizeof(summary[0]),
                         "%-18s goal (<2x memcpy for memory-bound codecs): %s (worst %.2fx)",
                         codec->name, worst < 2.0 ? "met" : "not met", worst);
        }
        fflush(stdout);
    }
    printf("\n");
    for (int i = 0; i < nsummary; i++)
        printf("%s\n", summary[i]);
    free(b.pool);
    free(b.x);
    free(b.out);
    free(b.dst);
    free(b.send);
    free(b.sum);
    return failed;
}
