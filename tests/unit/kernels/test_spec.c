/* Codec spec parsing: names, keys, ranges, defaults, and the errors that list what is valid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "gcomp.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none_defaults),
        cmocka_unit_test(test_unknown_codec_lists_valid),
        cmocka_unit_test(test_bad_keys_and_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
