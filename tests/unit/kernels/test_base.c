/* The shared utilities (kernels/base): growable array, scratch arena, binary put/get
   with versioned records, JSON strings and numbers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/arena.h"
#include "base/binio.h"
#include "base/grow.h"
#include "base/json.h"

static void test_grow(void **st)
{
    (void)st;
    size_t cap = 0;
    int *a = NULL;
    for (size_t n = 1; n <= 1000; n++) {
        int *b = gk_grow(a, &cap, n, sizeof(*b));
        assert_non_null(b);
        a = b;
        a[n - 1] = (int)n;
        assert_true(cap >= n);
    }
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(a[i], (int)i + 1);
    size_t before = cap;
    assert_null(gk_grow(a, &cap, SIZE_MAX, sizeof(int))); /* overflow: refused, a kept */
    assert_int_equal(cap, before);
    free(a);
}

static void test_arena_marks(void **st)
{
    (void)st;
    gk_arena a = {0};
    char *p = gk_arena_alloc(&a, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    memset(p, 1, 100);
    gk_arena_mark m = gk_arena_mark_get(&a);
    char *q = gk_arena_alloc(&a, 3u << 20); /* a chunk of its own */
    assert_non_null(q);
    memset(q, 2, 3u << 20);
    gk_arena_release(&a, m);
    char *r = gk_arena_alloc(&a, 3u << 20);
    assert_ptr_equal(r, q); /* the spare chunk is reused */
    assert_int_equal(p[99], 1);
    gk_arena_release(&a, (gk_arena_mark){0});
    gk_arena_free(&a);
    gk_arena_free(&a); /* twice is fine */
}

static void test_binio_roundtrip_and_versions(void **st)
{
    (void)st;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gk_writer w = {.f = f};
    float v[3] = {1.5f, -0.0f, 3e38f};
    gk_put_tag(&w, "TEST", 2);
    gk_put_u8(&w, 7);
    gk_put_u32(&w, 0xdeadbeefu);
    gk_put_u64(&w, 1ull << 40);
    gk_put_i64(&w, -5);
    gk_put_f64(&w, 0.1);
    gk_put_f32s(&w, v, 3);
    gk_put_str(&w, "hello");
    assert_false(w.failed);
    fclose(f);
    /* Little-endian on disk, field by field: the u32 follows tag(4)+version(4)+u8(1). */
    assert_int_equal((unsigned char)buf[9], 0xef);
    assert_int_equal((unsigned char)buf[12], 0xde);

    f = fmemopen(buf, len, "rb");
    gk_reader r = {.f = f};
    uint8_t a;
    uint32_t b, ver;
    uint64_t c;
    int64_t d;
    double e;
    float got[3];
    char s[16];
    assert_true(gk_get_tag(&r, "TEST", 3, &ver));
    assert_int_equal(ver, 2);
    assert_true(gk_get_u8(&r, &a) && gk_get_u32(&r, &b) && gk_get_u64(&r, &c) &&
                gk_get_i64(&r, &d) && gk_get_f64(&r, &e) && gk_get_f32s(&r, got, 3) &&
                gk_get_str(&r, s, sizeof(s)));
    assert_true(a == 7 && b == 0xdeadbeefu && c == 1ull << 40 && d == -5 && e == 0.1);
    assert_memory_equal(got, v, sizeof(v));
    assert_string_equal(s, "hello");
    assert_false(gk_get_u8(&r, &a)); /* end of file */
    assert_non_null(strstr(r.err, "truncated"));
    fclose(f);

    /* A newer version or another record is refused with a message saying so. */
    f = fmemopen(buf, len, "rb");
    gk_reader r2 = {.f = f};
    assert_false(gk_get_tag(&r2, "TEST", 1, NULL));
    assert_non_null(strstr(r2.err, "version 2"));
    assert_non_null(strstr(r2.err, "1..1"));
    assert_false(gk_get_u8(&r2, &a)); /* sticky */
    fclose(f);
    f = fmemopen(buf, len, "rb");
    gk_reader r3 = {.f = f};
    assert_false(gk_get_tag(&r3, "PSGD", 1, NULL));
    assert_non_null(strstr(r3.err, "expected a 'PSGD' record, found 'TEST'"));
    fclose(f);
    /* A string longer than the buffer is refused. */
    f = fmemopen(buf + 49, len - 49, "rb"); /* the string: length 5 */
    gk_reader r4 = {.f = f};
    char small[4];
    assert_false(gk_get_str(&r4, small, sizeof(small)));
    fclose(f);
    free(buf);
}

static void test_json(void **st)
{
    (void)st;
    char out[64];
    gk_json_str(out, sizeof(out), "a\"b\\c\n");
    assert_string_equal(out, "\"a\\\"b\\\\c\\u000a\"");
    assert_int_equal(gk_json_str(out, 4, "abcdef"), 8); /* the length it needed */
    assert_string_equal(out, "\"ab");
    gk_json_num(out, sizeof(out), NAN, 6);
    assert_string_equal(out, "null");
    gk_json_num(out, sizeof(out), -INFINITY, 6);
    assert_string_equal(out, "null");
    gk_json_num(out, sizeof(out), 0.25, 6);
    assert_string_equal(out, "0.25");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_arena_marks),
        cmocka_unit_test(test_binio_roundtrip_and_versions),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
