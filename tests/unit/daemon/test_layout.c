/* Layout validation of untrusted registrations and the differences it reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "layout.h"

static Gcomp__Layer layer(const char *name, int64_t *shape, size_t nd)
{
    Gcomp__Layer l = GCOMP__LAYER__INIT;
    l.name = (char *)name;
    l.shape = shape;
    l.n_shape = nd;
    return l;
}

static void test_offsets_and_diff(void **st)
{
    (void)st;
    int64_t s1[] = {4, 3}, s2[] = {5}, s3[] = {4, 4};
    Gcomp__Layer a[] = {layer("w", s1, 2), layer("b", s2, 1)};
    Gcomp__Layer b[] = {layer("w", s3, 2), layer("b", s2, 1)};
    Gcomp__Layer *pa[] = {&a[0], &a[1]}, *pb[] = {&b[0], &b[1]};
    gcd_layout la, lb;
    char err[256];
    assert_int_equal(gcd_layout_from_proto("x", pa, 2, &la, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(la.numel, 17);
    assert_int_equal(la.layers[1].offset, 12);
    assert_int_equal(gcd_layout_from_proto("x", pb, 2, &lb, err, sizeof(err)), GCOMP_OK);
    assert_int_equal(gcd_layout_diff(&la, &la, err, sizeof(err)), 0);
    assert_int_equal(gcd_layout_diff(&la, &lb, err, sizeof(err)), 1);
    assert_string_equal(err, "layer 0 'w' has shape [4, 3] vs [4, 4]");
    gcd_layout shorter = la;
    shorter.n = 1;
    assert_int_equal(gcd_layout_diff(&la, &shorter, err, sizeof(err)), 1);
    assert_string_equal(err, "2 layers vs 1");
    gcd_layout_free(&la);
    gcd_layout_free(&lb);
}

static void test_rejects_bad_layers(void **st)
{
    (void)st;
    int64_t zero[] = {4, 0}, huge[] = {1ll << 40, 1ll << 40}, ok[] = {2};
    Gcomp__Layer l[] = {layer("w", zero, 2), layer("h", huge, 2), layer("", ok, 1),
                        layer("d", ok, 1)};
    l[3].dtype = 7;
    gcd_layout out;
    char err[256];
    for (int i = 0; i < 4; i++) {
        Gcomp__Layer *p = &l[i];
        assert_true(gcd_layout_from_proto("bk", &p, 1, &out, err, sizeof(err)) < 0);
        assert_non_null(strstr(err, "bucket 'bk'"));
    }
    assert_true(gcd_layout_from_proto("bk", NULL, 0, &out, err, sizeof(err)) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offsets_and_diff),
        cmocka_unit_test(test_rejects_bad_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
