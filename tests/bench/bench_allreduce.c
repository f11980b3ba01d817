/*
 * bench_allreduce: MPI_Allreduce (sum, in place) of float buffers of several sizes, the
 * baseline of tests/bench/bench_reduce.py. Rank 0 prints one JSON line per size:
 * {"mb": M, "mpi_ms": median}.
 *   mpirun -np N bench_allreduce ITERS MB [MB...]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc < 3) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_allreduce ITERS MB [MB...]\n");
        MPI_Finalize();
        return 2;
    }
    int iters = atoi(argv[1]);
    double *t = calloc(iters, sizeof(double));
    for (int a = 2; a < argc; a++) {
        double mb = atof(argv[a]);
        size_t n = (size_t)(mb * 1e6 / 4);
        float *buf = malloc(n * 4);
        for (size_t i = 0; i < n; i++)
            buf[i] = (float)(i % 1000) * 1e-3f;
        for (int k = -2; k < iters; k++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            double t1 = MPI_Wtime();
            if (k >= 0)
                t[k] = (t1 - t0) * 1e3;
        }
        qsort(t, iters, sizeof(double), cmp);
        if (rank == 0) {
            printf("{\"mb\": %g, \"mpi_ms\": %.4f}\n", mb,
                   iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]));
            fflush(stdout);
        }
        free(buf);
    }
    MPI_Finalize();
    return 0;
}
