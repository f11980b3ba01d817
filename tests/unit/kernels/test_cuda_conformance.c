/*
 * Conformance of the CUDA implementations (kernels/cuda) against the scalar reference:
 * every codec with an impl[GK_BACKEND_CUDA] runs side by side with its impl[GK_BACKEND_REF]
 * on W simulated nodes for several steps (so error feedback and the step's draw are
 * exercised), on layers of several shapes and scales, the device one on device memory
 * on its own stream. After every encode the payloads and the residuals x, after every
 * decode the outputs and x must be bit for bit the reference's. Both sides decode the
 * same collective result, summed on the host as the engine sums (codec_sim_allreduce).
 *
 * Without a CUDA device (cudaGetDeviceCount fails, e.g. no driver, or finds none) the
 * test exits 77, which meson reports as SKIP.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "codec_testutil.h"
#include "gcomp.h"

/* The specs run per CUDA codec; a CUDA codec without an entry fails the test. scaled:
   run at every data scale (randomk only moves values, so one scale is enough). */
typedef struct conf_case {
    const char *spec;
    bool scaled;
} conf_case;

static const conf_case cases[] = {
    {"fp16", true},
    {"fp16:ef=1", true},
    {"bf16", true},
    {"bf16:ef=1", true},
    {"randomk", false},
    {"randomk:density=0.3", false},
    {"randomk:density=1", false},
    {"randomk:density=0.05,ef=0", false},
};

typedef struct shape {
    int ndim;
    size_t dims[3];
} shape;

/* Includes a layer of more than 4096 x 256 elements (the cast's grid-stride loop runs
   more than once) and one of more than 1024 x 64 (randomk's scan threads take several
   bitmap words each). */
static const shape shapes[] = {
    {1, {1}},     {1, {7}},         {2, {2, 3}},       {2, {33, 17}},
    {3, {4, 3, 3}}, {2, {64, 576}}, {2, {257, 1031}}, {2, {1024, 1100}},
};

/* Data scales: ordinary, beyond fp16's range (the clamp), and small enough for fp16's
   subnormals. */
static const float scales[] = {1.0f, 1e5f, 1e-6f};

#define NODES_MAX 3
#define STEPS 3

#define CUDA_OK(expr)                                                                    \
    do {                                                                                 \
        cudaError_t e_ = (expr);                                                         \
        if (e_ != cudaSuccess)                                                           \
            fail_msg("%s: %s", #expr, cudaGetErrorString(e_));                           \
    } while (0)

static cudaStream_t stream;

/* The first element where a and b (n bytes, of elem bytes each) differ, or -1. */
static long first_diff(const void *a, const void *b, size_t n, size_t elem)
{
    for (size_t i = 0; i < n; i += elem)
        if (memcmp((const char *)a + i, (const char *)b + i, elem))
            return (long)(i / elem);
    return -1;
}

static void expect_same(const char *what, const char *spec, const gk_layer *l, int W,
                        float scale, uint64_t step, int node, const void *ref, const void *dev,
                        size_t n, size_t elem)
{
    long i = first_diff(ref, dev, n, elem);
    if (i < 0)
        return;
    if (elem == sizeof(float))
        print_message("%s on %zux%zu, W=%d, scale %g, step %llu, node %d: %s[%ld] ref %.9g "
                      "cuda %.9g\n",
                      spec, l->rows, l->cols, W, scale, (unsigned long long)step, node, what, i,
                      ((const float *)ref)[i], ((const float *)dev)[i]);
    else
        print_message("%s on %zux%zu, W=%d, scale %g, step %llu, node %d: %s[%ld] ref 0x%04x "
                      "cuda 0x%04x\n",
                      spec, l->rows, l->cols, W, scale, (unsigned long long)step, node, what, i,
                      ((const uint16_t *)ref)[i], ((const uint16_t *)dev)[i]);
    fail();
}

static void run_case(const char *text, const shape *sh, int W, float scale)
{
    gk_spec spec;
    char err[256];
    assert_int_equal(gk_spec_parse(text, &spec, err, sizeof(err)), 0);
    const gk_codec *c = spec.codec;
    const gk_codec_impl *ref = c->impl[GK_BACKEND_REF], *cu = c->impl[GK_BACKEND_CUDA];
    assert_non_null(cu);
    if (c->state_new)
        fail_msg("%s: a codec with state needs device states here first", c->name);
    gk_layer l = codec_sim_layer(0x30005, sh->ndim, sh->dims);
    size_t d = l.numel, xb = d * sizeof(float);
    gk_exec exec = {.backend = GK_BACKEND_CUDA, .mem = GK_MEM_DEVICE, .stream = stream};

    float **xr = tu_alloc(W, d), **xh = tu_alloc(W, d), **g = tu_alloc(W, d);
    float **outr = tu_alloc(W, d), **outh = tu_alloc(W, d);
    float *xd[NODES_MAX], *outd[NODES_MAX];
    for (int w = 0; w < W; w++) {
        CUDA_OK(cudaMalloc((void **)&xd[w], xb));
        CUDA_OK(cudaMalloc((void **)&outd[w], xb));
    }
    for (uint64_t step = 0; step < STEPS; step++) {
        /* The engine's start of a step, on the reference's x and on the device's. */
        for (int w = 0; w < W; w++) {
            tu_uniform(g[w], d, 99 + step, (uint64_t)w, scale);
            for (size_t i = 0; i < d; i++) {
                xr[w][i] = (spec.ef ? xr[w][i] : 0.0f) + g[w][i];
                xh[w][i] = (spec.ef ? xh[w][i] : 0.0f) + g[w][i];
            }
            CUDA_OK(cudaMemcpy(xd[w], xh[w], xb, cudaMemcpyHostToDevice));
        }
        for (int p = 0; p < gk_spec_nphases(&spec); p++) {
            gk_coll coll = gk_spec_coll(&spec, p);
            assert_true(coll != GK_COLL_ALLGATHER); /* none of the CUDA codecs yet */
            size_t max = gk_payload_bytes(&spec, &l, p, step);
            void *sendr[NODES_MAX], *sendh[NODES_MAX], *sendd[NODES_MAX];
            for (int w = 0; w < W; w++) {
                gk_call call = {.spec = &spec, .layer = &l, .phase = p, .nodes = W, .node = w,
                                .step = step, .seed = 1234};
                size_t br = 0, bd = 0;
                sendr[w] = calloc(max, 1);
                sendh[w] = calloc(max, 1);
                assert_non_null(sendr[w]);
                assert_non_null(sendh[w]);
                CUDA_OK(cudaMalloc(&sendd[w], max));
                assert_int_equal(ref->encode(&call, xr[w], sendr[w], &br), 0);
                call.exec = &exec;
                assert_int_equal(cu->encode(&call, xd[w], sendd[w], &bd), 0);
                CUDA_OK(cudaStreamSynchronize(stream));
                assert_int_equal(br, max);
                assert_int_equal(bd, br);
                CUDA_OK(cudaMemcpy(sendh[w], sendd[w], max, cudaMemcpyDeviceToHost));
                CUDA_OK(cudaMemcpy(xh[w], xd[w], xb, cudaMemcpyDeviceToHost));
                size_t elem = coll == GK_COLL_ALLREDUCE_F32 ? sizeof(float) : sizeof(uint16_t);
                expect_same("payload", text, &l, W, scale, step, w, sendr[w], sendh[w], max, elem);
                expect_same("x after encode", text, &l, W, scale, step, w, xr[w], xh[w], xb,
                            sizeof(float));
            }
            void *sum = calloc(max, 1), *sumd;
            assert_non_null(sum);
            codec_sim_allreduce(coll, sendr, max, W, sum);
            CUDA_OK(cudaMalloc(&sumd, max));
            CUDA_OK(cudaMemcpy(sumd, sum, max, cudaMemcpyHostToDevice));
            for (int w = 0; w < W; w++) {
                gk_call call = {.spec = &spec, .layer = &l, .phase = p, .nodes = W, .node = w,
                                .step = step, .seed = 1234};
                const void *recvr[1] = {sum}, *recvd[1] = {sumd};
                assert_int_equal(ref->decode(&call, xr[w], recvr, &max, 1, outr[w]), 0);
                call.exec = &exec;
                CUDA_OK(cudaMemset(outd[w], 0x7f, xb)); /* must be overwritten */
                assert_int_equal(cu->decode(&call, xd[w], recvd, &max, 1, outd[w]), 0);
                CUDA_OK(cudaStreamSynchronize(stream));
                CUDA_OK(cudaMemcpy(outh[w], outd[w], xb, cudaMemcpyDeviceToHost));
                CUDA_OK(cudaMemcpy(xh[w], xd[w], xb, cudaMemcpyDeviceToHost));
                expect_same("out", text, &l, W, scale, step, w, outr[w], outh[w], xb,
                            sizeof(float));
                expect_same("x after decode", text, &l, W, scale, step, w, xr[w], xh[w], xb,
                            sizeof(float));
            }
            CUDA_OK(cudaFree(sumd));
            free(sum);
            for (int w = 0; w < W; w++) {
                free(sendr[w]);
                free(sendh[w]);
                CUDA_OK(cudaFree(sendd[w]));
            }
        }
    }
    for (int w = 0; w < W; w++) {
        CUDA_OK(cudaFree(xd[w]));
        CUDA_OK(cudaFree(outd[w]));
    }
    tu_free(xr, W);
    tu_free(xh, W);
    tu_free(g, W);
    tu_free(outr, W);
    tu_free(outh, W);
}

/* Every codec with a CUDA implementation has a case here. */
static void test_every_cuda_codec_has_cases(void **st)
{
    (void)st;
    int ncuda = 0;
    for (int i = 0; i < gk_ncodecs; i++) {
        const gk_codec *c = gk_codecs[i];
        if (!c->impl[GK_BACKEND_CUDA])
            continue;
        ncuda++;
        bool found = false;
        size_t len = strlen(c->name);
        for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++)
            if (!strncmp(cases[j].spec, c->name, len) &&
                (cases[j].spec[len] == 0 || cases[j].spec[len] == ':'))
                found = true;
        if (!found)
            fail_msg("%s has a CUDA implementation but no conformance case", c->name);
    }
    assert_true(ncuda > 0);
}

static void test_cuda_matches_ref(void **st)
{
    (void)st;
    static const int nodes[] = {1, NODES_MAX};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
            for (size_t n = 0; n < sizeof(nodes) / sizeof(nodes[0]); n++)
                for (size_t k = 0; k < (cases[i].scaled ? sizeof(scales) / sizeof(scales[0]) : 1);
                     k++)
                    run_case(cases[i].spec, &shapes[s], nodes[n], scales[k]);
}

/* The CUDA entry points refuse host memory and a missing context. */
static void test_cuda_refuses_host_calls(void **st)
{
    (void)st;
    const size_t dims[] = {8, 8};
    gk_layer l = codec_sim_layer(1, 2, dims);
    float x[64] = {0}, out[64];
    uint16_t send[64 * 2];
    size_t bytes = 0;
    gk_exec host = {.backend = GK_BACKEND_CUDA, .mem = GK_MEM_HOST};
    for (int i = 0; i < gk_ncodecs; i++) {
        const gk_codec_impl *cu = gk_codecs[i]->impl[GK_BACKEND_CUDA];
        if (!cu)
            continue;
        gk_spec spec;
        char err[128];
        assert_int_equal(gk_spec_parse(gk_codecs[i]->name, &spec, err, sizeof(err)), 0);
        gk_call call = {.spec = &spec, .layer = &l, .nodes = 1};
        assert_int_equal(cu->encode(&call, x, send, &bytes), GCOMP_INVALID);
        call.exec = &host;
        assert_int_equal(cu->encode(&call, x, send, &bytes), GCOMP_INVALID);
        const void *recv[1] = {send};
        assert_int_equal(cu->decode(&call, x, recv, &bytes, 1, out), GCOMP_INVALID);
    }
}

/*
 * No arguments: every test, on the first CUDA device; exits 77 (SKIP) without one.
 * --host: only the tests that make no CUDA call (the case table, the refusals), which
 * run wherever the CUDA code is built, GPU or not.
 */
int main(int argc, char **argv)
{
    const struct CMUnitTest host_tests[] = {
        cmocka_unit_test(test_every_cuda_codec_has_cases),
        cmocka_unit_test(test_cuda_refuses_host_calls),
    };
    if (argc > 1 && !strcmp(argv[1], "--host"))
        return cmocka_run_group_tests(host_tests, NULL, NULL);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("no CUDA device (cudaGetDeviceCount: %s): skipping\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    if ((e = cudaStreamCreate(&stream)) != cudaSuccess) {
        fprintf(stderr, "cudaStreamCreate: %s\n", cudaGetErrorString(e));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_cuda_codec_has_cases),
        cmocka_unit_test(test_cuda_refuses_host_calls),
        cmocka_unit_test(test_cuda_matches_ref),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cudaStreamDestroy(stream);
    return rc;
}
