/*
 * gcomp-demo: a trainer that reduces realistic gradient buckets (ResNet-18-sized
 * layers in three buckets, as DDP would bucket them) for a few steps, compares every
 * result with the exact mean it can compute itself, and prints a line per step.
 *
 *   gcomp-run --nodes 2 --trainers-per-node 2 -- gcomp-demo [--exact] [STEPS]
 *
 * Each line reports the relative error of the step's results against the exact mean
 * (the l2 norm of the difference over the l2 norm of the mean, all buckets together)
 * and the largest absolute error. A lossy codec, also one switched to while the demo
 * runs (gcompctl policy set), shows there as a non-zero error. With --exact (for codec
 * none, the default) a step whose largest error exceeds 1e-4 is WRONG and the demo
 * exits 1; without it only a failed gcomp call makes it fail.
 *
 * Trainer r's gradient at step s is g_r = (r + 1) * base + s, so the mean over the W
 * trainers is (W + 1) / 2 * base + s.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gcomp.h"

typedef struct demo_layer {
    const char *name;
    int ndim;
    int64_t shape[4];
} demo_layer;

/* ResNet-18's parameters (11.2 M), in reverse order as DDP buckets them. */
static const demo_layer bucket0[] = {
    {"fc.bias", 1, {1000}},
    {"fc.weight", 2, {1000, 512}},
    {"layer4.1.bn2.weight", 1, {512}},
    {"layer4.1.conv2.weight", 4, {512, 512, 3, 3}},
    {"layer4.1.conv1.weight", 4, {512, 512, 3, 3}},
    {"layer4.0.downsample.0.weight", 4, {512, 256, 1, 1}},
    {"layer4.0.conv2.weight", 4, {512, 512, 3, 3}},
};
static const demo_layer bucket1[] = {
    {"layer4.0.conv1.weight", 4, {512, 256, 3, 3}},
    {"layer3.1.conv2.weight", 4, {256, 256, 3, 3}},
    {"layer3.1.conv1.weight", 4, {256, 256, 3, 3}},
    {"layer3.0.downsample.0.weight", 4, {256, 128, 1, 1}},
    {"layer3.0.conv2.weight", 4, {256, 256, 3, 3}},
    {"layer3.0.conv1.weight", 4, {256, 128, 3, 3}},
};
static const demo_layer bucket2[] = {
    {"layer2.1.conv2.weight", 4, {128, 128, 3, 3}},
    {"layer2.1.conv1.weight", 4, {128, 128, 3, 3}},
    {"layer2.0.downsample.0.weight", 4, {128, 64, 1, 1}},
    {"layer2.0.conv2.weight", 4, {128, 128, 3, 3}},
    {"layer2.0.conv1.weight", 4, {128, 64, 3, 3}},
    {"layer1.1.conv2.weight", 4, {64, 64, 3, 3}},
    {"layer1.1.conv1.weight", 4, {64, 64, 3, 3}},
    {"layer1.0.conv2.weight", 4, {64, 64, 3, 3}},
    {"layer1.0.conv1.weight", 4, {64, 64, 3, 3}},
    {"bn1.bias", 1, {64}},
    {"conv1.weight", 4, {64, 3, 7, 7}},
};

static const struct {
    const char *name;
    const demo_layer *layers;
    size_t n;
} buckets[] = {
    {"bucket0", bucket0, sizeof(bucket0) / sizeof(bucket0[0])},
    {"bucket1", bucket1, sizeof(bucket1) / sizeof(bucket1[0])},
    {"bucket2", bucket2, sizeof(bucket2) / sizeof(bucket2[0])},
};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A deterministic gradient-like pattern, identical on every trainer. */
static float base(size_t i)
{
    return (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f;
}

int main(int argc, char **argv)
{
    int steps = 10, exact = 0;
    for (int a = 1; a < argc; a++) {
        char *end;
        long n = strtol(argv[a], &end, 10);
        if (strcmp(argv[a], "--exact") == 0) {
            exact = 1;
        } else if (*argv[a] && !*end && n >= 0 && n <= 1000000) {
            steps = (int)n;
        } else {
            fprintf(stderr, "gcomp-demo: unknown argument '%s'\nusage: gcomp-demo [--exact] [STEPS]\n",
                    argv[a]);
            return 2;
        }
    }
    const char *r = getenv("GCOMP_RANK"), *w = getenv("GCOMP_WORLD_SIZE");
    if (!r || !w) {
        fprintf(stderr, "gcomp-demo: run me under gcomp-run (GCOMP_RANK is not set)\n");
        return 2;
    }
    int rank = atoi(r), world = atoi(w);
    gcomp_client *c;
    int rc = gcomp_connect(NULL, &c);
    if (rc) {
        fprintf(stderr, "gcomp-demo: connect: %s\n", gcomp_strerror(rc));
        return 1;
    }
    gcomp_bucket *b[NBUCKETS];
    size_t total = 0;
    for (size_t k = 0; k < NBUCKETS; k++) {
        gcomp_layer layers[16];
        for (size_t i = 0; i < buckets[k].n; i++) {
            layers[i] = (gcomp_layer){.name = buckets[k].layers[i].name,
                                      .ndim = buckets[k].layers[i].ndim,
                                      .dtype = GCOMP_FLOAT32};
            memcpy(layers[i].shape, buckets[k].layers[i].shape, sizeof(buckets[k].layers[i].shape));
        }
        rc = gcomp_bucket_register(c, buckets[k].name, layers, buckets[k].n, &b[k]);
        if (rc) {
            fprintf(stderr, "gcomp-demo: register: %s\n", gcomp_last_error(c));
            gcomp_disconnect(c);
            return 1;
        }
        total += gcomp_bucket_numel(b[k]);
    }
    if (rank == 0)
        printf("gcomp-demo: %d trainers on %d nodes, %zu parameters in %zu buckets\n", world,
               gcomp_nodes(c), total, NBUCKETS);
    int bad = 0;
    for (int s = 0; s < steps && !bad; s++) {
        double t0 = now_s();
        /* Submit every bucket, then wait for all: the exchanges overlap the submits. */
        for (size_t k = 0; k < NBUCKETS && !rc; k++) {
            float *g = gcomp_bucket_data(b[k]);
            for (size_t i = 0; i < gcomp_bucket_numel(b[k]); i++)
                g[i] = (float)(rank + 1) * base(i) + (float)s;
            rc = gcomp_submit(b[k], s);
        }
        double maxerr = 0.0, err2 = 0.0, want2 = 0.0;
        for (size_t k = 0; k < NBUCKETS && !rc; k++) {
            rc = gcomp_wait(b[k], 60000);
            if (rc)
                break;
            const float *out = gcomp_bucket_result(b[k]);
            for (size_t i = 0; i < gcomp_bucket_numel(b[k]); i++) {
                double want = (world + 1) / 2.0 * base(i) + s;
                double err = fabs(out[i] - want);
                if (err > maxerr)
                    maxerr = err;
                err2 += err * err;
                want2 += want * want;
            }
        }
        if (rc) {
            fprintf(stderr, "gcomp-demo: rank %d step %d: %s\n", rank, s, gcomp_last_error(c));
            bad = 1;
            break;
        }
        double dt = now_s() - t0;
        if (exact && maxerr > 1e-4)
            bad = 1;
        /* Rank 0 reports every step, any other rank a WRONG one: the first trainer to
           exit with status 1 stops the job (gcomp-run), maybe before rank 0 printed. */
        if (rank == 0 || bad)
            printf("step %3d  %6.2f MB reduced in %7.2f ms  (%6.2f GB/s)  relative error %.2e  "
                   "max |error| %.2e%s\n",
                   s, total * 4e-6, dt * 1e3, total * 4e-9 / dt,
                   want2 > 0 ? sqrt(err2 / want2) : sqrt(err2), maxerr,
                   bad ? "  WRONG" : exact ? "  ok" : "");
        fflush(stdout);
    }
    gcomp_disconnect(c);
    return bad;
}
