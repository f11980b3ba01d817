/* Policy specs: the registry, the codec shorthand, keys that continue the codec spec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "gcomp.h"
#include "policy.h"

static gk_spec decide(gp_instance *p, int64_t step)
{
    gp_layer l = {.bucket = "b", .name = "w", .geom = {.ndim = 2, .rows = 64, .cols = 64, .numel = 4096}};
    gk_spec s;
    assert_int_equal(p->policy->decide(p->state, &l, step, &s), GCOMP_OK);
    return s;
}

static void test_static_and_shorthand(void **st)
{
    (void)st;
    gp_instance *p;
    char err[1024];
    assert_int_equal(gp_instance_create("none", &p, err, sizeof(err)), GCOMP_OK);
    assert_string_equal(p->policy->name, "static");
    assert_string_equal(decide(p, 0).codec->name, "none");
    gp_instance_destroy(p);
    assert_int_equal(gp_instance_create("static:codec=none:min_elements=5,start_iter=3", &p, err,
                                        sizeof(err)),
                     GCOMP_OK);
    assert_int_equal(decide(p, 5).min_elements, 5);
    assert_int_equal(decide(p, 1).min_elements, 1024); /* exact warm-up before start_iter */
    gp_instance_destroy(p);
    gp_instance_destroy(NULL);
}

static void test_errors(void **st)
{
    (void)st;
    gp_instance *p = NULL;
    char err[1024];
    assert_int_equal(gp_instance_create("fancy", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "unknown policy 'fancy'"));
    assert_non_null(strstr(err, "static"));
    assert_int_equal(gp_instance_create("static:start_iter=-1", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "start_iter"));
    assert_int_equal(gp_instance_create("static:rank=2", &p, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "no key 'rank'"));
    /* An unknown codec key is refused by the codec, listing its keys. */
    assert_int_equal(gp_instance_create("static:codec=none,rank=2", &p, err, sizeof(err)),
                     GCOMP_INVALID);
    assert_non_null(strstr(err, "no key 'rank'"));
    assert_null(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_and_shorthand),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
