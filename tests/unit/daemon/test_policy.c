/* Policy specs: the registry, the codec shorthand, keys that continue the codec spec; the
   registry's contracts: checkpoint records (each policy's own tag, a fresh state round
   trips, another policy's record refused), collect() where nstats says, and the
   two-step size pattern gp_payload_mean() relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gcomp.h"
#include "policy.h"

#define gp_instance_create_t(spec, out, err, len) gp_instance_create(spec, NULL, out, err, len)

static gk_spec decide_for(gp_instance *p, const char *name, int64_t step)
{
    gp_layer l = {.bucket = "b", .name = name, .geom = {.ndim = 2, .rows = 64, .cols = 64, .numel = 4096}};
    gk_spec s;
    char why[128] = "";
    assert_int_equal(p->policy->decide(p->state, &l, step, &s, why, sizeof(why)), GCOMP_OK);
    assert_true(why[0] != '\0');
    return s;
}

static gk_spec decide(gp_instance *p, int64_t step)
{
    return decide_for(p, "w", step);
}

static void test_static_and_shorthand(void **st)
{
    (void)st;
    gp_instance *p;
    char err[1024];
    assert_int_equal(gp_instance_create_t("none", &p, err, sizeof(err)), GCOMP_OK);
    assert_string_equal(p->policy->name, "static");
    assert_string_equal(decide(p, 0).codec->name, "none");
    gp_instance_destroy(p);
    assert_int_equal(gp_instance_create_t("static:codec=none:min_elements=5,start_iter=3", &p, err,
                                        sizeof(err)),
                     GCOMP_OK);
    assert_int_equal(decide(p, 5).min_elements, 5);
    assert_int_equal(decide(p, 1).min_elements, 1024); /* exact warm-up before start_iter */
    gp_instance_destroy(p);
    gp_instance_destroy(NULL);
}

static void test_overrides_and_spec_continuation(void **st)
{
    (void)st;
    gp_instance *p;
    char err[1024];
    assert_int_equal(gp_instance_create_t("static:codec=maxmin:bits=4,bucket=128,override=fc.*@none,"
                                          "override=conv?.weight@maxmin:bits=2,bucket=64,start_iter=2",
                                          &p, err, sizeof(err)),
                     GCOMP_OK);
    gk_spec s = decide_for(p, "layer1.w", 3);
    assert_string_equal(s.codec->name, "maxmin");
    assert_true(gk_spec_get(&s, "bits") == 4 && gk_spec_get(&s, "bucket") == 128);
    assert_string_equal(decide_for(p, "fc.weight", 3).codec->name, "none");
    s = decide_for(p, "conv1.weight", 3);
    assert_true(gk_spec_get(&s, "bits") == 2 && gk_spec_get(&s, "bucket") == 64);
    assert_string_equal(decide_for(p, "conv1.weight", 1).codec->name, "none"); /* start_iter */
    gp_instance_destroy(p);
    assert_int_equal(gp_instance_create_t("static:override=nope", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "GLOB@CODEC_SPEC"));
    gk_spec in, out;
    assert_int_equal(gk_spec_parse("maxmin:bits=4", &in, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(gp_spec_with(&in, "bits", 8, &out), GCOMP_OK);
    assert_true(gk_spec_get(&out, "bits") == 8);
    assert_int_equal(gp_spec_with(&in, "bits", 9, &out), GCOMP_INVALID);
    assert_int_equal(gp_spec_with(&in, "rank", 2, &out), GCOMP_INVALID);
}

static void test_errors(void **st)
{
    (void)st;
    gp_instance *p = NULL;
    char err[1024];
    assert_int_equal(gp_instance_create_t("fancy", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "unknown policy 'fancy'"));
    assert_non_null(strstr(err, "static"));
    assert_int_equal(gp_instance_create_t("static:start_iter=-1", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "start_iter"));
    assert_int_equal(gp_instance_create_t("static:rank=2", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "no key 'rank'"));
    /* An unknown codec key is refused by the codec, listing its keys. */
    assert_int_equal(gp_instance_create_t("static:codec=none,rank=2", &p, err, sizeof(err)),
                     GCOMP_INVALID);
    assert_non_null(strstr(err, "no key 'rank'"));
    assert_null(p);
}

/* A fresh instance of every policy, or NULL for those without a checkpoint. */
static gp_instance *fresh(int i)
{
    const gp_policy *p = gp_policies[i];
    if (!p->save)
        return NULL;
    gp_instance *inst = NULL;
    char err[1024];
    if (gp_instance_create(p->name, NULL, &inst, err, sizeof(err)))
        fail_msg("policy '%s' refuses its defaults: %s", p->name, err);
    return inst;
}

static unsigned char *save(gp_instance *p, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    assert_non_null(f);
    gk_writer w = {.f = f};
    assert_int_equal(p->policy->save(p->state, &w), GCOMP_OK);
    assert_int_equal(fclose(f), 0);
    return (unsigned char *)buf;
}

static int load(gp_instance *p, unsigned char *buf, size_t len, char *err, size_t errlen)
{
    FILE *f = fmemopen(buf, len, "r");
    assert_non_null(f);
    gk_reader r = {.f = f};
    int rc = p->policy->load(p->state, &r);
    snprintf(err, errlen, "%s", r.err);
    if (rc == GCOMP_OK)
        assert_int_equal(ftell(f), (long)len);
    fclose(f);
    return rc;
}

/* Every policy's checkpoint starts with a record header of its own tag; a fresh state
   round trips; another policy's record is refused, naming both tags. */
static void test_checkpoint_records(void **st)
{
    (void)st;
    char tags[16][5];
    int ntags = 0;
    for (int i = 0; i < gp_npolicies; i++) {
        gp_instance *a = fresh(i);
        if (!a) {
            assert_null(gp_policies[i]->load);
            continue;
        }
        assert_non_null(a->policy->load);
        size_t len;
        unsigned char *ck = save(a, &len);
        assert_true(len >= 8);
        /* The tag: 4 printable characters, one per policy. */
        assert_true(ntags < 16);
        memcpy(tags[ntags], ck, 4);
        tags[ntags][4] = '\0';
        for (int k = 0; k < 4; k++)
            assert_true(ck[k] >= 0x20 && ck[k] < 0x7f);
        for (int k = 0; k < ntags; k++)
            assert_string_not_equal(tags[k], tags[ntags]);
        ntags++;
        gp_instance *b = fresh(i);
        char err[256];
        assert_int_equal(load(b, ck, len, err, sizeof(err)), GCOMP_OK);
        for (int j = 0; j < gp_npolicies; j++) {
            gp_instance *o = fresh(j);
            if (!o || j == i) {
                gp_instance_destroy(o);
                continue;
            }
            assert_int_equal(load(o, ck, len, err, sizeof(err)), GCOMP_INVALID);
            char want[64];
            snprintf(want, sizeof(want), "found '%.4s'", (const char *)ck);
            if (!strstr(err, want) || !strstr(err, "expected a '"))
                fail_msg("%s loading %s's checkpoint: '%s'", o->policy->name, a->policy->name,
                         err);
            gp_instance_destroy(o);
        }
        free(ck);
        gp_instance_destroy(a);
        gp_instance_destroy(b);
    }
    assert_true(ntags >= 5);
}

/* collect() exists exactly where nstats says numbers come from it; a policy that may run
   it concurrently has one. */
static void test_collect_contract(void **st)
{
    (void)st;
    for (int i = 0; i < gp_npolicies; i++) {
        const gp_policy *p = gp_policies[i];
        assert_true((p->nstats > 0) == (p->collect != NULL));
        assert_true(!p->collect_concurrent || p->collect);
    }
}

/* gp_payload_mean() averages two steps: every codec's payload sizes repeat with a period
   of at most two steps. */
static void test_payload_period(void **st)
{
    (void)st;
    const gk_layer layers[] = {
        {.id = 1, .ndim = 2, .rows = 64, .cols = 576, .numel = 64 * 576},
        {.id = 2, .ndim = 2, .rows = 1000, .cols = 3, .numel = 3000},
        {.id = 3, .ndim = 4, .rows = 17, .cols = 99, .numel = 17 * 99},
    };
    for (int c = 0; c < gk_ncodecs; c++) {
        gk_spec s;
        char err[512];
        assert_int_equal(gk_spec_parse(gk_codecs[c]->name, &s, err, sizeof(err)), GCOMP_OK);
        for (size_t l = 0; l < sizeof(layers) / sizeof(layers[0]); l++)
            for (int p = 0; p < gk_spec_nphases(&s); p++)
                for (uint64_t t = 2; t < 9; t++)
                    if (gk_payload_bytes(&s, &layers[l], p, t) !=
                        gk_payload_bytes(&s, &layers[l], p, t - 2))
                        fail_msg("codec %s phase %d: %zu bytes at step %llu, %zu two steps "
                                 "before", gk_codecs[c]->name, p,
                                 gk_payload_bytes(&s, &layers[l], p, t),
                                 (unsigned long long)t,
                                 gk_payload_bytes(&s, &layers[l], p, t - 2));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_and_shorthand),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_overrides_and_spec_continuation),
        cmocka_unit_test(test_checkpoint_records),
        cmocka_unit_test(test_collect_contract),
        cmocka_unit_test(test_payload_period),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
