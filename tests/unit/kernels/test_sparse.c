/*
 * Sparsifiers (topk, mstopk, dgc, redsync, sidco, threshold, randomk, randomblock):
 * cpu against ref on many shapes (exact agreement for the exact selectors, the
 * algorithm's invariants for the approximate ones), the properties of algorithms.md
 * section 4, exact payload sizes, malformed payloads, and a 3-node run of every codec.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "codec_sim.h"
#include "gcomp.h"
#include "rng.h"
#include "sparse.h"

/* Exact selectors: cpu and ref must write the same payload. DGC draws and counts the
   same way in both, so it is held to the same standard. */
static const char *const exact_codecs[] = {"topk", "randomk", "randomblock", "threshold", "dgc"};
/* Approximate selectors: thresholds depend on a mean whose summation order differs. */
static const char *const approx_codecs[] = {"mstopk", "redsync", "sidco"};
static const char *const all_codecs[] = {"topk",  "mstopk",    "dgc",     "redsync",
                                         "sidco", "threshold", "randomk", "randomblock"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

typedef enum fill_kind { FILL_NORMAL, FILL_ZERO, FILL_TIES, FILL_CONST } fill_kind;

static void fill(float *x, size_t n, uint64_t seed, fill_kind kind)
{
    gk_rng r;
    gk_rng_seed(&r, seed, 7, 0, 0);
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case FILL_NORMAL:
            x[i] = gk_rng_normal(&r);
            break;
        case FILL_ZERO:
            x[i] = 0.0f;
            break;
        case FILL_TIES: /* few distinct magnitudes, both signs */
            x[i] = (float)((int)gk_rng_below(&r, 5) - 2);
            break;
        case FILL_CONST:
            x[i] = 0.25f;
            break;
        }
    }
}

typedef struct shape {
    int ndim;
    size_t dims[4];
} shape;

static const shape shapes[] = {
    {2, {1, 1}},   {2, {2, 2}},     {2, {3, 5}},    {3, {1, 7, 1}},
    {2, {16, 16}}, {2, {33, 65}},   {4, {64, 64, 3, 3}}, {2, {512, 4096}},
};

static gk_spec parse(const char *text)
{
    gk_spec s;
    char err[512];
    int rc = gk_spec_parse(text, &s, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, GCOMP_OK);
    return s;
}

/* One node's encode of x (updated in place) with impl; the payload is returned (caller
   frees) and its size put in *bytes. W = nodes, this is node `node`. */
static void *encode_one(const gk_spec *spec, const gk_codec_impl *impl, const gk_layer *layer,
                        void *state, float *x, int nodes, int node, uint64_t step,
                        size_t *bytes)
{
    size_t max = gk_payload_bytes(spec, layer, 0, 0);
    void *send = calloc(max ? max : 1, 1);
    assert_non_null(send);
    gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = 0,
                    .nodes = nodes, .node = node, .step = step, .seed = 42};
    assert_int_equal(impl->encode(&call, x, send, bytes), GCOMP_OK);
    assert_true(*bytes <= max);
    return send;
}

static bool is_allgather(const gk_spec *spec)
{
    return spec->codec->phase_coll && spec->codec->phase_coll(spec, 0) == GK_COLL_ALLGATHER;
}

/* Decode a single node's payload as a 1-node job: out and the residual in x. */
static void decode_one(const gk_spec *spec, const gk_codec_impl *impl, const gk_layer *layer,
                       void *state, float *x, const void *payload, size_t bytes, float *out)
{
    gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = 0,
                    .nodes = 1, .node = 0, .step = 0, .seed = 42};
    const void *recv[1] = {payload};
    size_t sizes[1] = {bytes};
    assert_int_equal(impl->decode(&call, x, recv, sizes, 1, out), GCOMP_OK);
}

static void *new_state(const gk_spec *spec, const gk_layer *layer)
{
    void *st = NULL;
    if (spec->codec->state_new)
        assert_int_equal(spec->codec->state_new(spec, layer, &st), GCOMP_OK);
    return st;
}

static void free_state(const gk_spec *spec, void *st)
{
    if (spec->codec->state_free)
        spec->codec->state_free(st);
}

/* Payload entries are in ascending index order, in range, and carry x's values. */
static void check_entries(const void *p, size_t bytes, const float *x, size_t n)
{
    assert_int_equal(bytes % GK_SPARSE_ENTRY, 0);
    size_t c = bytes / GK_SPARSE_ENTRY;
    for (size_t j = 0; j < c; j++) {
        uint32_t i = gk_sparse_idx(p, j);
        assert_true(i < n);
        if (j)
            assert_true(i > gk_sparse_idx(p, j - 1));
        assert_true(gk_sparse_val(p, j) == x[i]);
    }
}

/* The selected magnitudes all lie above the unselected ones (a threshold set). */
static void check_threshold_set(const void *p, size_t bytes, const float *x, size_t n)
{
    size_t c = bytes / GK_SPARSE_ENTRY;
    char *sel = calloc(n, 1);
    assert_non_null(sel);
    float min_sel = INFINITY, max_unsel = 0.0f;
    for (size_t j = 0; j < c; j++)
        sel[gk_sparse_idx(p, j)] = 1;
    for (size_t i = 0; i < n; i++) {
        if (sel[i])
            min_sel = fminf(min_sel, fabsf(x[i]));
        else
            max_unsel = fmaxf(max_unsel, fabsf(x[i]));
    }
    if (c)
        assert_true(min_sel >= max_unsel);
    free(sel);
}

/* Number of elements with |x| strictly above v. */
static size_t count_above(const float *x, size_t n, float v)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += fabsf(x[i]) > v;
    return c;
}

/*
 * cpu against ref for the exact selectors: same payload bytes, and the same out and
 * residual over a 3-node, 2-step run; for every shape, density and kind of data.
 */
static void test_exact_conformance(void **st)
{
    (void)st;
    const double densities[] = {0.01, 0.3, 1.0};
    const fill_kind kinds[] = {FILL_NORMAL, FILL_ZERO, FILL_TIES, FILL_CONST};
    for (size_t c = 0; c < NELEM(exact_codecs); c++)
        for (size_t s = 0; s < NELEM(shapes); s++)
            for (size_t d = 0; d < NELEM(densities); d++)
                for (size_t f = 0; f < NELEM(kinds); f++) {
                    gk_layer layer = codec_sim_layer(3, shapes[s].ndim, shapes[s].dims);
                    bool large = layer.numel > 100000;
                    if (large && (d > 0 || f > 1))
                        continue; /* keep the big layer to one case per codec */
                    char text[128];
                    if (strcmp(exact_codecs[c], "threshold") == 0)
                        snprintf(text, sizeof(text), "threshold:lambda=%g", densities[d]);
                    else
                        snprintf(text, sizeof(text), "%s:density=%g", exact_codecs[c],
                                 densities[d]);
                    gk_spec spec = parse(text);
                    size_t n = layer.numel;
                    float *g = malloc(n * sizeof(float)), *xr = malloc(n * sizeof(float)),
                          *xc = malloc(n * sizeof(float));
                    assert_non_null(g);
                    assert_non_null(xr);
                    assert_non_null(xc);
                    fill(g, n, 100 + s, kinds[f]);
                    memcpy(xr, g, n * sizeof(float));
                    memcpy(xc, g, n * sizeof(float));
                    void *sr = new_state(&spec, &layer), *sc = new_state(&spec, &layer);
                    size_t br, bc;
                    void *pr = encode_one(&spec, spec.codec->impl[GK_BACKEND_REF], &layer, sr, xr, 1, 0, 5, &br);
                    void *pc = encode_one(&spec, spec.codec->impl[GK_BACKEND_CPU], &layer, sc, xc, 1, 0, 5, &bc);
                    assert_int_equal(br, bc);
                    if (memcmp(pr, pc, br) != 0)
                        fail_msg("%s on %zu elements (kind %zu): cpu payload differs from ref",
                                 text, n, f);
                    assert_memory_equal(xr, xc, n * sizeof(float));
                    free(pr);
                    free(pc);
                    free_state(&spec, sr);
                    free_state(&spec, sc);

                    /* The same through the 3-node harness, two steps (small layers). */
                    if (large) {
                        free(g);
                        free(xr);
                        free(xc);
                        continue;
                    }
                    codec_sim simr, simc;
                    assert_int_equal(codec_sim_init(&simr, text, &layer, 3, spec.codec->impl[GK_BACKEND_REF]), 0);
                    assert_int_equal(codec_sim_init(&simc, text, &layer, 3, spec.codec->impl[GK_BACKEND_CPU]), 0);
                    float *gs[3], *outr[3], *outc[3];
                    for (int w = 0; w < 3; w++) {
                        gs[w] = malloc(n * sizeof(float));
                        outr[w] = malloc(n * sizeof(float));
                        outc[w] = malloc(n * sizeof(float));
                        fill(gs[w], n, 200 + 10 * s + w, kinds[f]);
                    }
                    for (uint64_t step = 0; step < 2; step++) {
                        assert_int_equal(codec_sim_step(&simr, step, (const float *const *)gs, outr), 0);
                        assert_int_equal(codec_sim_step(&simc, step, (const float *const *)gs, outc), 0);
                        for (int w = 0; w < 3; w++) {
                            assert_memory_equal(outr[w], outc[w], n * sizeof(float));
                            assert_memory_equal(simr.x[w], simc.x[w], n * sizeof(float));
                            assert_int_equal(simr.sent[w], simc.sent[w]);
                        }
                    }
                    for (int w = 0; w < 3; w++) {
                        free(gs[w]);
                        free(outr[w]);
                        free(outc[w]);
                    }
                    codec_sim_free(&simr);
                    codec_sim_free(&simc);
                    free(g);
                    free(xr);
                    free(xc);
                }
}

/*
 * The approximate selectors, both implementations: entries ordered and in range, the
 * selection a threshold set (mstopk: exactly k, nothing far below the k-th), counts in
 * the algorithm's bounds on Gaussian data, residual zero exactly at the sent positions
 * and untouched elsewhere, out = the payload; and cpu close to ref.
 */
static void test_approx_invariants(void **st)
{
    (void)st;
    const fill_kind kinds[] = {FILL_NORMAL, FILL_ZERO, FILL_TIES, FILL_CONST};
    for (size_t c = 0; c < NELEM(approx_codecs); c++)
        for (size_t s = 0; s < NELEM(shapes); s++)
            for (size_t f = 0; f < NELEM(kinds); f++) {
                gk_layer layer = codec_sim_layer(9, shapes[s].ndim, shapes[s].dims);
                size_t n = layer.numel;
                if (n > 100000 && f > 0)
                    continue;
                char text[64];
                snprintf(text, sizeof(text), "%s:density=0.01", approx_codecs[c]);
                gk_spec spec = parse(text);
                size_t k = gk_sparse_spec_k(&spec, &layer), counts[2];
                float *g = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)),
                      *out = malloc(n * sizeof(float));
                fill(g, n, 300 + s, kinds[f]);
                for (int impl = 0; impl < 2; impl++) {
                    const gk_codec_impl *im = impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF];
                    memcpy(x, g, n * sizeof(float));
                    size_t bytes;
                    void *p = encode_one(&spec, im, &layer, NULL, x, 1, 0, 1, &bytes);
                    size_t cnt = bytes / GK_SPARSE_ENTRY;
                    counts[impl] = cnt;
                    check_entries(p, bytes, g, n);
                    assert_memory_equal(x, g, n * sizeof(float)); /* encode leaves x alone */
                    if (strcmp(approx_codecs[c], "mstopk") == 0) {
                        assert_int_equal(cnt, k);
                        float min_sel = INFINITY;
                        for (size_t j = 0; j < cnt; j++)
                            min_sel = fminf(min_sel, fabsf(gk_sparse_val(p, j)));
                        if (kinds[f] == FILL_NORMAL)
                            assert_true(count_above(g, n, min_sel) < 2 * k);
                    } else {
                        check_threshold_set(p, bytes, g, n);
                    }
                    if (kinds[f] == FILL_ZERO && strcmp(approx_codecs[c], "mstopk") != 0)
                        assert_int_equal(cnt, 0);
                    if (n > 100000 && strcmp(approx_codecs[c], "redsync") == 0)
                        assert_true(2 * cnt > k && cnt < 2 * k);
                    if (n > 100000 && strcmp(approx_codecs[c], "sidco") == 0)
                        assert_true(cnt > k / 3 && cnt < 3 * k);
                    decode_one(&spec, im, &layer, NULL, x, p, bytes, out);
                    char *sel = calloc(n, 1);
                    for (size_t j = 0; j < cnt; j++)
                        sel[gk_sparse_idx(p, j)] = 1;
                    for (size_t i = 0; i < n; i++) {
                        assert_true(x[i] == (sel[i] ? 0.0f : g[i]));
                        assert_true(out[i] == (sel[i] ? g[i] : 0.0f));
                    }
                    free(sel);
                    free(p);
                }
                /* Same algorithm, sums in another order: counts agree within 1%. */
                size_t lo = counts[0] < counts[1] ? counts[0] : counts[1];
                size_t hi = counts[0] + counts[1] - lo;
                assert_true(hi - lo <= hi / 100 + 1);
                free(g);
                free(x);
                free(out);
            }
}

/* DGC on Gaussian data: the count ends within [0.7 k, 1.3 k], the selection is a
   threshold set of v, and the momentum correction follows u = m u + g, v = v + u. */
static void test_dgc_momentum(void **st)
{
    (void)st;
    size_t dims[2] = {256, 512};
    gk_layer layer = codec_sim_layer(11, 2, dims);
    size_t n = layer.numel;
    gk_spec spec = parse("dgc:density=0.01,momentum=0.9");
    size_t k = gk_sparse_spec_k(&spec, &layer);
    for (int impl = 0; impl < 2; impl++) {
        const gk_codec_impl *im = impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF];
        void *state = new_state(&spec, &layer);
        float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
        float *x = calloc(n, sizeof(float)), *out = malloc(n * sizeof(float));
        float *v1 = malloc(n * sizeof(float));
        fill(g1, n, 1, FILL_NORMAL);
        fill(g2, n, 2, FILL_NORMAL);
        /* Step 1 as the engine runs it: x = x + g. */
        for (size_t i = 0; i < n; i++)
            x[i] += g1[i];
        size_t bytes;
        void *p = encode_one(&spec, im, &layer, state, x, 1, 0, 0, &bytes);
        size_t cnt = bytes / GK_SPARSE_ENTRY;
        assert_true((double)cnt >= 0.7 * (double)k && (double)cnt <= 1.3 * (double)k);
        assert_memory_equal(x, g1, n * sizeof(float)); /* u = g, v = g on step 1 */
        check_entries(p, bytes, x, n);
        check_threshold_set(p, bytes, x, n);
        decode_one(&spec, im, &layer, state, x, p, bytes, out);
        memcpy(v1, x, n * sizeof(float));
        free(p);
        /* Step 2: unsent positions hold v = g1 + (0.9 g1 + g2); sent ones restart at g2. */
        for (size_t i = 0; i < n; i++)
            x[i] += g2[i];
        p = encode_one(&spec, im, &layer, state, x, 1, 0, 1, &bytes);
        for (size_t i = 0; i < n; i++) {
            float u1 = v1[i] == 0.0f ? 0.0f : g1[i];
            float want = (v1[i] + g2[i]) + 0.9f * u1;
            assert_true(fabsf(x[i] - want) <= 1e-5f * (1.0f + fabsf(want)));
        }
        free(p);
        free_state(&spec, state);
        free(g1);
        free(g2);
        free(x);
        free(out);
        free(v1);
    }
}

/* Top-K sends exactly k entries, the k largest, on every shape and density, zeros too. */
static void test_topk_sends_exactly_k(void **st)
{
    (void)st;
    const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
    for (size_t s = 0; s < NELEM(shapes); s++)
        for (size_t d = 0; d < NELEM(densities); d++)
            for (int zero = 0; zero < 2; zero++) {
                gk_layer layer = codec_sim_layer(2, shapes[s].ndim, shapes[s].dims);
                size_t n = layer.numel;
                if (n > 100000 && d != 1)
                    continue;
                char text[64];
                snprintf(text, sizeof(text), "topk:density=%g", densities[d]);
                gk_spec spec = parse(text);
                size_t k = (size_t)floor(densities[d] * (double)n);
                k = k < 1 ? 1 : k;
                float *x = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
                fill(g, n, 9 + s, zero ? FILL_ZERO : FILL_NORMAL);
                memcpy(x, g, n * sizeof(float));
                size_t bytes;
                void *p = encode_one(&spec, spec.codec->impl[GK_BACKEND_CPU], &layer, NULL, x, 1, 0, 0, &bytes);
                assert_int_equal(bytes, k * GK_SPARSE_ENTRY);
                assert_int_equal(bytes, gk_payload_bytes(&spec, &layer, 0, 0));
                check_entries(p, bytes, g, n);
                check_threshold_set(p, bytes, g, n);
                free(p);
                free(x);
                free(g);
            }
}

/*
 * Shared-seed Random-K and Random-block on 3 nodes with different data: every node
 * zeroes the same k positions, and out there is the mean over the nodes (summed in node
 * order, as the allreduce does), 0 elsewhere.
 */
static void test_random_shared_indices(void **st)
{
    (void)st;
    const char *const specs[] = {"randomk:density=0.05", "randomblock:density=0.05",
                                 "randomk:density=1", "randomblock:density=0.7"};
    size_t dims[2] = {40, 50};
    gk_layer layer = codec_sim_layer(77, 2, dims);
    size_t n = layer.numel;
    for (size_t c = 0; c < NELEM(specs); c++) {
        gk_spec spec = parse(specs[c]);
        size_t k = gk_sparse_spec_k(&spec, &layer);
        codec_sim sim;
        assert_int_equal(codec_sim_init(&sim, specs[c], &layer, 3, NULL), 0);
        float *g[3], *out[3];
        for (int w = 0; w < 3; w++) {
            g[w] = malloc(n * sizeof(float));
            out[w] = malloc(n * sizeof(float));
            fill(g[w], n, 900 + w, FILL_NORMAL);
        }
        assert_int_equal(codec_sim_step(&sim, 3, (const float *const *)g, out), 0);
        size_t chosen = 0;
        for (size_t i = 0; i < n; i++) {
            bool sent = sim.x[0][i] == 0.0f;
            for (int w = 1; w < 3; w++)
                assert_true((sim.x[w][i] == 0.0f) == sent);
            float mean = (((0.0f + g[0][i]) + g[1][i]) + g[2][i]) / 3.0f;
            for (int w = 0; w < 3; w++) {
                assert_true(out[w][i] == (sent ? mean : 0.0f));
                assert_true(sim.x[w][i] == (sent ? 0.0f : g[w][i]));
            }
            chosen += sent;
        }
        assert_int_equal(chosen, k);
        assert_int_equal(sim.sent[0], k * sizeof(float));
        /* Another step draws another set (unless everything is sent). */
        float *x0 = malloc(n * sizeof(float));
        memcpy(x0, sim.x[0], n * sizeof(float));
        assert_int_equal(codec_sim_step(&sim, 4, (const float *const *)g, out), 0);
        if (k < n / 2) {
            size_t same = 0;
            for (size_t i = 0; i < n; i++)
                same += (x0[i] == 0.0f) && (sim.x[0][i] == 0.0f);
            assert_true(same < k);
        }
        free(x0);
        for (int w = 0; w < 3; w++) {
            free(g[w]);
            free(out[w]);
        }
        codec_sim_free(&sim);
    }
}

/*
 * Allgather codecs on 3 nodes: out is (1/W) sum_w scatter_add of the payloads, and each
 * node's residual is zero exactly at its own sent positions.
 */
static void test_allgather_mean_of_payloads(void **st)
{
    (void)st;
    size_t dims[2] = {64, 96};
    gk_layer layer = codec_sim_layer(5, 2, dims);
    size_t n = layer.numel;
    for (size_t c = 0; c < NELEM(all_codecs); c++) {
        char text[64];
        snprintf(text, sizeof(text), "%s", all_codecs[c]);
        gk_spec spec = parse(strcmp(all_codecs[c], "threshold") == 0 ? "threshold:lambda=1.5"
                                                                       : text);
        if (!is_allgather(&spec))
            continue;
        for (int impl = 0; impl < 2; impl++) {
            const gk_codec_impl *im = impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF];
            float *x[3], *out = malloc(n * sizeof(float)), *want = calloc(n, sizeof(float));
            void *p[3], *state[3];
            size_t bytes[3];
            for (int w = 0; w < 3; w++) {
                x[w] = malloc(n * sizeof(float));
                fill(x[w], n, 40 + w, FILL_NORMAL);
                state[w] = new_state(&spec, &layer);
                p[w] = encode_one(&spec, im, &layer, state[w], x[w], 3, w, 0, &bytes[w]);
                check_entries(p[w], bytes[w], x[w], n);
                for (size_t j = 0; j < bytes[w] / GK_SPARSE_ENTRY; j++)
                    want[gk_sparse_idx(p[w], j)] += gk_sparse_val(p[w], j);
            }
            for (size_t i = 0; i < n; i++)
                want[i] /= 3.0f;
            for (int w = 0; w < 3; w++) {
                gk_call call = {.spec = &spec, .layer = &layer, .state = state[w],
                                .nodes = 3, .node = w, .seed = 42};
                float *before = malloc(n * sizeof(float));
                memcpy(before, x[w], n * sizeof(float));
                assert_int_equal(im->decode(&call, x[w], (const void *const *)p, bytes, 3, out),
                                 GCOMP_OK);
                assert_memory_equal(out, want, n * sizeof(float));
                char *sel = calloc(n, 1);
                for (size_t j = 0; j < bytes[w] / GK_SPARSE_ENTRY; j++)
                    sel[gk_sparse_idx(p[w], j)] = 1;
                for (size_t i = 0; i < n; i++)
                    assert_true(x[w][i] == (sel[i] ? 0.0f : before[i]));
                free(sel);
                free(before);
            }
            for (int w = 0; w < 3; w++) {
                free(x[w]);
                free(p[w]);
                free_state(&spec, state[w]);
            }
            free(out);
            free(want);
        }
    }
}

/* Malformed segments from other nodes are refused, never read out of bounds. */
static void test_malformed_payloads(void **st)
{
    (void)st;
    size_t dims[2] = {4, 4};
    gk_layer layer = codec_sim_layer(1, 2, dims);
    const char *const names[] = {"topk:density=0.25", "threshold", "mstopk:density=0.25",
                                 "redsync", "sidco", "dgc"};
    for (size_t c = 0; c < NELEM(names); c++) {
        gk_spec spec = parse(names[c]);
        void *state = new_state(&spec, &layer);
        for (int impl = 0; impl < 2; impl++) {
            const gk_codec_impl *im = impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF];
            unsigned char good[16], bad_idx[16];
            gk_sparse_put(good, 0, 3, 1.0f);
            gk_sparse_put(good, 1, 5, 2.0f);
            gk_sparse_put(bad_idx, 0, 3, 1.0f);
            gk_sparse_put(bad_idx, 1, 16, 2.0f); /* index == numel */
            float x[16] = {0}, out[16];
            gk_call call = {.spec = &spec, .layer = &layer, .state = state, .nodes = 2,
                            .node = 0, .seed = 42};
            const void *recv[2] = {good, bad_idx};
            size_t sizes[2] = {16, 16};
            assert_int_equal(im->decode(&call, x, recv, sizes, 2, out), GCOMP_PROTOCOL);
            size_t odd[2] = {16, 12};
            recv[1] = good;
            assert_int_equal(im->decode(&call, x, recv, odd, 2, out), GCOMP_PROTOCOL);
            size_t both[2] = {16, 16};
            assert_int_equal(im->decode(&call, x, recv, both, 1, out), GCOMP_INVALID);
            assert_int_equal(im->decode(&call, x, recv, both, 2, out), GCOMP_OK);
            assert_true(out[3] == 1.0f && out[5] == 2.0f && out[0] == 0.0f);
        }
        free_state(&spec, state);
    }
    /* Allreduce codecs refuse a segment of the wrong size. */
    const char *const ar[] = {"randomk:density=0.5", "randomblock:density=0.5"};
    for (size_t c = 0; c < NELEM(ar); c++) {
        gk_spec spec = parse(ar[c]);
        for (int impl = 0; impl < 2; impl++) {
            const gk_codec_impl *im = impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF];
            float x[16] = {0}, out[16], sum[8] = {0};
            gk_call call = {.spec = &spec, .layer = &layer, .nodes = 2, .seed = 42};
            const void *recv[1] = {sum};
            size_t sz = 7 * sizeof(float);
            assert_int_equal(im->decode(&call, x, recv, &sz, 1, out), GCOMP_INVALID);
        }
    }
}

/*
 * Error feedback with a constant gradient: the sum of T outputs approaches T g, the gap
 * being the residual, which stays bounded (it is no larger after 2T steps than after T).
 */
static void test_ef_constant_gradient(void **st)
{
    (void)st;
    const char *const specs[] = {"topk:density=0.1",  "mstopk:density=0.1",
                                 "dgc:density=0.1,momentum=0", "redsync:density=0.1",
                                 "sidco:density=0.1", "threshold:lambda=0.5",
                                 "randomk:density=0.1", "randomblock:density=0.1"};
    size_t dims[2] = {16, 16};
    gk_layer layer = codec_sim_layer(4, 2, dims);
    size_t n = layer.numel;
    const int T = 200;
    for (size_t c = 0; c < NELEM(specs); c++) {
        codec_sim sim;
        assert_int_equal(codec_sim_init(&sim, specs[c], &layer, 1, NULL), 0);
        float g[256], out[256];
        double acc[256] = {0}, gap[2] = {0}, norm = 0.0;
        fill(g, n, 3, FILL_NORMAL);
        const float *gs[1] = {g};
        float *outs[1] = {out};
        for (int t = 0; t < 2 * T; t++) {
            assert_int_equal(codec_sim_step(&sim, (uint64_t)t, gs, outs), 0);
            for (size_t i = 0; i < n; i++)
                acc[i] += out[i];
            if (t == T - 1 || t == 2 * T - 1) {
                double e = 0.0, gg = 0.0;
                for (size_t i = 0; i < n; i++) {
                    double d = (t + 1) * (double)g[i] - acc[i];
                    e += d * d;
                    gg += (t + 1) * (double)g[i] * (t + 1) * (double)g[i];
                }
                gap[t == 2 * T - 1] = sqrt(e);
                norm = sqrt(gg);
            }
        }
        /* Relative error at 2T small, and not growing. */
        if (!(gap[1] < 0.1 * norm && gap[1] <= 2.0 * gap[0] + 1e-3))
            fail_msg("%s: |2T g - sum out| = %g (at T: %g), |2T g| = %g", specs[c], gap[1],
                     gap[0], norm);
        codec_sim_free(&sim);
    }
}

/* Zero gradients give zero output, no NaN, on every codec and implementation. */
static void test_zero_gradient(void **st)
{
    (void)st;
    size_t dims[2] = {12, 10};
    gk_layer layer = codec_sim_layer(6, 2, dims);
    for (size_t c = 0; c < NELEM(all_codecs); c++) {
        gk_spec spec = parse(all_codecs[c]);
        for (int impl = 0; impl < 2; impl++) {
            codec_sim sim;
            assert_int_equal(codec_sim_init(&sim, all_codecs[c], &layer, 2,
                                            impl ? spec.codec->impl[GK_BACKEND_CPU] : spec.codec->impl[GK_BACKEND_REF]), 0);
            float g[120] = {0}, out0[120], out1[120];
            const float *gs[2] = {g, g};
            float *outs[2] = {out0, out1};
            for (uint64_t step = 0; step < 2; step++) {
                assert_int_equal(codec_sim_step(&sim, step, gs, outs), 0);
                for (int i = 0; i < 120; i++)
                    assert_true(out0[i] == 0.0f && out1[i] == 0.0f && sim.x[0][i] == 0.0f);
            }
            codec_sim_free(&sim);
        }
    }
}

/*
 * Every codec on 3 nodes for 3 steps, default spec: all nodes get the same finite out,
 * and the bytes each node reports are what its spec promises (exact for the fixed-size
 * ones, 8 per entry for threshold).
 */
static void test_three_nodes_every_codec(void **st)
{
    (void)st;
    size_t dims[4] = {32, 16, 3, 3};
    gk_layer layer = codec_sim_layer(8, 4, dims);
    size_t n = layer.numel;
    for (size_t c = 0; c < NELEM(all_codecs); c++) {
        gk_spec spec = parse(all_codecs[c]);
        codec_sim sim;
        assert_int_equal(codec_sim_init(&sim, all_codecs[c], &layer, 3, NULL), 0);
        float *g[3], *out[3];
        for (int w = 0; w < 3; w++) {
            g[w] = malloc(n * sizeof(float));
            out[w] = malloc(n * sizeof(float));
        }
        for (uint64_t step = 0; step < 3; step++) {
            size_t above[3] = {0};
            for (int w = 0; w < 3; w++) {
                fill(g[w], n, 1000 + 3 * step + (uint64_t)w, FILL_NORMAL);
                for (size_t i = 0; i < n; i++)
                    above[w] += fabsf(sim.x[w][i] + g[w][i]) > (float)4.72e-3;
            }
            assert_int_equal(codec_sim_step(&sim, step, (const float *const *)g, out), 0);
            size_t nonzero = 0;
            for (size_t i = 0; i < n; i++) {
                assert_true(isfinite(out[0][i]));
                assert_true(out[0][i] == out[1][i] && out[0][i] == out[2][i]);
                nonzero += out[0][i] != 0.0f;
            }
            assert_true(nonzero > 0);
            size_t k = gk_sparse_spec_k(&spec, &layer);
            for (int w = 0; w < 3; w++) {
                const char *name = all_codecs[c];
                if (!strcmp(name, "topk") || !strcmp(name, "mstopk"))
                    assert_int_equal(sim.sent[w], k * GK_SPARSE_ENTRY);
                else if (!strcmp(name, "randomk") || !strcmp(name, "randomblock"))
                    assert_int_equal(sim.sent[w], k * sizeof(float));
                else if (!strcmp(name, "threshold"))
                    assert_int_equal(sim.sent[w], above[w] * GK_SPARSE_ENTRY);
                else
                    assert_true(sim.sent[w] % GK_SPARSE_ENTRY == 0 && sim.sent[w] > 0);
            }
        }
        for (int w = 0; w < 3; w++) {
            free(g[w]);
            free(out[w]);
        }
        codec_sim_free(&sim);
    }
}

/* Registry entries: both implementations, EF on by default and allowed, keys parse. */
static void test_registry_entries(void **st)
{
    (void)st;
    for (size_t c = 0; c < NELEM(all_codecs); c++) {
        const gk_codec *codec = gk_codec_find(all_codecs[c]);
        assert_non_null(codec);
        assert_non_null(codec->impl[GK_BACKEND_REF]);
        assert_non_null(codec->impl[GK_BACKEND_CPU]);
        assert_true(codec->ef_default && codec->ef_allowed);
    }
    gk_spec s = parse("dgc");
    assert_true(gk_spec_get(&s, "momentum") == 0.9);
    assert_true(gk_spec_get(&s, "density") == 0.01);
    s = parse("sidco:stages=1");
    assert_true(gk_spec_get(&s, "stages") == 1);
    gk_spec bad;
    char err[256];
    assert_int_equal(gk_spec_parse("topk:density=2", &bad, err, sizeof(err)), GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("threshold:density=0.1", &bad, err, sizeof(err)),
                     GCOMP_INVALID);
    /* SIDCo's schedule: 0.75, then 0.25s, then the remainder; product = density. */
    double r[GK_SIDCO_MAX_STAGES];
    int ns = gk_sidco_ratios(0.01, 0, r);
    double prod = 1.0;
    for (int i = 0; i < ns; i++)
        prod *= r[i];
    assert_int_equal(ns, 5); /* 0.75, 0.25, 0.25, 0.25, then 0.01 / 0.01171875 */
    assert_true(r[0] == 0.75 && r[1] == 0.25 && r[3] == 0.25 && fabs(prod - 0.01) < 1e-12);
    assert_true(r[4] >= 0.25 && r[4] < 1.0);
    assert_int_equal(gk_sidco_ratios(0.8, 0, r), 1);
    assert_int_equal(gk_sidco_ratios(0.01, 2, r), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_entries),
        cmocka_unit_test(test_exact_conformance),
        cmocka_unit_test(test_approx_invariants),
        cmocka_unit_test(test_dgc_momentum),
        cmocka_unit_test(test_topk_sends_exactly_k),
        cmocka_unit_test(test_random_shared_indices),
        cmocka_unit_test(test_allgather_mean_of_payloads),
        cmocka_unit_test(test_malformed_payloads),
        cmocka_unit_test(test_ef_constant_gradient),
        cmocka_unit_test(test_zero_gradient),
        cmocka_unit_test(test_three_nodes_every_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
