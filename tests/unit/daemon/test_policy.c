/* Policy specs: the registry, the codec shorthand, keys that continue the codec spec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_and_shorthand),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_overrides_and_spec_continuation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
