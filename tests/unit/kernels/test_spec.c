/* Codec spec parsing: names, keys, ranges, defaults, and the errors that list what is valid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "gcomp.h"
#include "rng.h"
#include "lowrank.h"
#include "sparse.h"

static void test_none_defaults(void **st)
{
    (void)st;
    gk_spec s;
    char err[512] = "";
    assert_int_equal(gk_spec_parse("none", &s, err, sizeof(err)), GCOMP_OK);
    assert_string_equal(s.codec->name, "none");
    assert_false(s.ef);
    assert_int_equal(s.min_elements, 1024);
    char buf[128];
    gk_spec_format(&s, buf, sizeof(buf));
    assert_string_equal(buf, "none:ef=0");
    gk_spec_json(&s, buf, sizeof(buf));
    assert_string_equal(buf, "\"codec\":\"none\",\"ef\":0");
}

static void test_unknown_codec_lists_valid(void **st)
{
    (void)st;
    gk_spec s;
    char err[512] = "";
    assert_int_equal(gk_spec_parse("zip", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "unknown codec 'zip'"));
    assert_non_null(strstr(err, "none"));
}

static void test_bad_keys_and_values(void **st)
{
    (void)st;
    gk_spec s;
    char err[512] = "";
    assert_int_equal(gk_spec_parse("none:rank=2", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "no key 'rank'"));
    assert_non_null(strstr(err, "min_elements"));
    assert_int_equal(gk_spec_parse("none:min_elements=-3", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("none:min_elements=1.5", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("none:", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("none:ef", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_int_equal(gk_spec_parse("none:ef=1", &s, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "without error feedback"));
    assert_int_equal(gk_spec_parse("none:min_elements=10", &s, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(s.min_elements, 10);
}

static gk_spec spec_of(const char *text)
{
    gk_spec s;
    char err[512];
    assert_int_equal(gk_spec_parse(text, &s, err, sizeof(err)), GCOMP_OK);
    return s;
}

/* The one rule for "is this layer compressed" (algorithms.md 4): 1-D never, small
   layers never, and the codec's own rule (PowerSGD's min_compression_rate). */
static void test_compresses_rule(void **st)
{
    (void)st;
    gk_spec p1 = spec_of("powersgd:rank=1"), p4 = spec_of("powersgd:rank=4,min_elements=0");
    gk_layer conv = {.ndim = 2, .rows = 64, .cols = 576, .numel = 64 * 576};
    gk_layer vec = {.ndim = 1, .rows = 100000, .cols = 1, .numel = 100000};
    gk_layer tiny = {.ndim = 2, .rows = 3, .cols = 3, .numel = 9};
    assert_true(gk_spec_compresses(&p1, &conv));
    assert_false(gk_spec_compresses(&p1, &vec));
    assert_false(gk_spec_compresses(&p4, &tiny));
    gk_spec topk = spec_of("topk:density=0.5");
    gk_layer small = {.ndim = 2, .rows = 10, .cols = 10, .numel = 100};
    assert_false(gk_spec_compresses(&topk, &small)); /* under min_elements 1024 */
}

/* Every codec with a compression knob names a real key and a direction. */
static void test_knobs(void **st)
{
    (void)st;
    const struct {
        const char *spec, *key;
        int more;
    } want[] = {{"powersgd:rank=2", "rank", -1}, {"topk", "density", -1},
                {"maxmin", "bits", -1}, {"qsgd", "levels", -1}, {"threshold", "lambda", 1},
                {"randomk", "density", -1}, {"dgc", "density", -1}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        gk_spec s = spec_of(want[i].spec);
        double v;
        int more;
        int k = gk_spec_knob(&s, &v, &more);
        assert_true(k >= 0);
        assert_string_equal(s.codec->params[k].key, want[i].key);
        assert_int_equal(more, want[i].more);
        assert_true(v == s.v[k]);
    }
    gk_spec none = spec_of("signsgd");
    assert_int_equal(gk_spec_knob(&none, NULL, NULL), -1);
    for (int i = 0; i < gk_ncodecs; i++)
        if (gk_codecs[i]->knob) {
            gk_spec s = spec_of(gk_codecs[i]->name);
            assert_true(gk_spec_knob(&s, NULL, NULL) >= 0);
            assert_true(gk_codecs[i]->knob_more == 1 || gk_codecs[i]->knob_more == -1);
        }
}

/* Codecs that declare fixed allgather sizes write exactly gk_payload_bytes, in every
   implementation, whatever the data (so the engine may skip the size exchange). */
static void test_fixed_sizes_are_exact(void **st)
{
    (void)st;
    gk_layer l = {.id = 7, .ndim = 2, .rows = 33, .cols = 65, .numel = 33 * 65};
    float *x = malloc(l.numel * sizeof(float)), *x0 = malloc(l.numel * sizeof(float));
    for (int i = 0; i < gk_ncodecs; i++) {
        gk_spec s = spec_of(gk_codecs[i]->name);
        s.min_elements = 0;
        for (int ph = 0; ph < gk_spec_nphases(&s); ph++) {
            if (!gk_payload_fixed(&s, ph) || gk_spec_coll(&s, ph) != GK_COLL_ALLGATHER)
                continue;
            for (int b = 0; b < 2; b++) {
                const gk_codec_impl *im = gk_codec_impl_of(s.codec, b ? GK_BACKEND_CPU : GK_BACKEND_REF);
                for (uint64_t seed = 0; seed < 3; seed++) {
                    gk_rng r;
                    gk_rng_seed(&r, seed, 1, 2, 3);
                    for (size_t k = 0; k < l.numel; k++)
                        x0[k] = seed == 2 ? 0.0f : gk_rng_normal(&r) * (k % 7 == 0 ? 100.0f : 1.0f);
                    memcpy(x, x0, l.numel * sizeof(float));
                    void *state = NULL;
                    if (s.codec->state_new)
                        assert_int_equal(s.codec->state_new(&s, &l, &state), 0);
                    size_t max = gk_payload_bytes(&s, &l, ph, seed), bytes = 0;
                    void *send = malloc(max);
                    gk_call call = {.spec = &s, .layer = &l, .state = state, .phase = ph,
                                    .nodes = 2, .step = seed, .seed = 9};
                    assert_int_equal(im->encode(&call, x, send, &bytes), 0);
                    assert_int_equal(bytes, max);
                    free(send);
                    if (state)
                        s.codec->state_free(state);
                }
            }
        }
    }
    free(x);
    free(x0);
}

/* DGC's momentum and residual survive a density change: rebuilding them would fold the
   old residual (still in x) into the momentum a second time. A change of codec clears
   x and the state; a PowerSGD rank change rebuilds the state but keeps x. */
static void test_respec_keeps_what_is_valid(void **st)
{
    (void)st;
    gk_layer l = {.id = 1, .ndim = 2, .rows = 64, .cols = 64, .numel = 4096};
    gk_spec d1 = spec_of("dgc:density=0.01"), d2 = spec_of("dgc:density=0.05");
    void *state = NULL;
    float *x = NULL;
    assert_int_equal(gk_layer_respec(NULL, false, &d1, true, &l, &state, &x), 0);
    assert_non_null(state);
    assert_non_null(x);
    gk_dgc_state *ds = state;
    ds->u[3] = 1.5f;
    ds->r[3] = -2.0f;
    x[3] = 4.0f;
    assert_int_equal(gk_layer_respec(&d1, true, &d2, true, &l, &state, &x), 0);
    ds = state;
    assert_true(ds->u[3] == 1.5f && ds->r[3] == -2.0f && x[3] == 4.0f);

    gk_spec p1 = spec_of("powersgd:rank=1"), p2 = spec_of("powersgd:rank=2");
    assert_int_equal(gk_layer_respec(&d2, true, &p1, true, &l, &state, &x), 0);
    assert_true(x[3] == 0.0f); /* another codec: the residual means nothing to it */
    x[3] = 4.0f;
    assert_int_equal(((gk_lowrank_state *)state)->r, 1);
    assert_int_equal(gk_layer_respec(&p1, true, &p2, true, &l, &state, &x), 0);
    assert_true(x[3] == 4.0f);
    assert_int_equal(((gk_lowrank_state *)state)->r, 2); /* sized for the new rank */
    assert_int_equal(gk_layer_respec(&p2, true, &p2, false, &l, &state, &x), 0);
    assert_null(state);
    assert_null(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none_defaults),
        cmocka_unit_test(test_unknown_codec_lists_valid),
        cmocka_unit_test(test_bad_keys_and_values),
        cmocka_unit_test(test_compresses_rule),
        cmocka_unit_test(test_knobs),
        cmocka_unit_test(test_fixed_sizes_are_exact),
        cmocka_unit_test(test_respec_keeps_what_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
