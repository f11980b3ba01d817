/*
 * bench_trainer: a trainer that times gcomp reductions of one-layer buckets of several
 * sizes (submit until wait returns), and a memcpy of the same bytes in the same
 * process, for tests/bench/bench_reduce.py. Run under gcomp-run; rank 0 prints one JSON
 * line per size: {"mb": M, "gcomp_ms": median, "memcpy_ms": median}.
 *   bench_trainer ITERS MB [MB...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gcomp.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_trainer ITERS MB [MB...]\n");
        return 2;
    }
    int iters = atoi(argv[1]);
    int rank = atoi(getenv("GCOMP_RANK") ? getenv("GCOMP_RANK") : "0");
    gcomp_client *c;
    int rc = gcomp_connect(NULL, &c);
    if (rc) {
        fprintf(stderr, "bench_trainer: connect: %s\n", gcomp_strerror(rc));
        return 1;
    }
    double *t = calloc(iters, sizeof(double)), *m = calloc(iters, sizeof(double));
    for (int a = 2; a < argc; a++) {
        double mb = atof(argv[a]);
        size_t n = (size_t)(mb * 1e6 / 4);
        char name[32];
        snprintf(name, sizeof(name), "b%s", argv[a]);
        gcomp_layer l = {.name = "flat", .ndim = 1, .shape = {(int64_t)n}};
        gcomp_bucket *b;
        if ((rc = gcomp_bucket_register(c, name, &l, 1, &b))) {
            fprintf(stderr, "bench_trainer: %s\n", gcomp_last_error(c));
            return 1;
        }
        float *g = gcomp_bucket_data(b);
        for (size_t i = 0; i < n; i++)
            g[i] = (float)(i % 1000) * 1e-3f;
        float *src = malloc(n * 4), *dst = malloc(n * 4);
        memset(src, 1, n * 4);
        memset(dst, 0, n * 4);
        for (int k = -2; k < iters; k++) { /* two warm-up rounds */
            double t0 = now_ms();
            if ((rc = gcomp_submit(b, k + 2)) || (rc = gcomp_wait(b, 600000))) {
                fprintf(stderr, "bench_trainer: %s\n", gcomp_last_error(c));
                return 1;
            }
            double t1 = now_ms();
            memcpy(dst, src, n * 4);
            double t2 = now_ms();
            if (k >= 0) {
                t[k] = t1 - t0;
                m[k] = t2 - t1;
            }
        }
        if (rank == 0) {
            printf("{\"mb\": %g, \"gcomp_ms\": %.4f, \"memcpy_ms\": %.4f, \"check\": %g}\n", mb,
                   median(t, iters), median(m, iters), (double)gcomp_bucket_result(b)[999] + dst[n - 1]);
            fflush(stdout);
        }
        free(src);
        free(dst);
    }
    gcomp_disconnect(c);
    return 0;
}
