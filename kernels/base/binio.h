/*
 * binio.h: binary put/get for checkpoints, field by field and little-endian, so a
 * file's meaning never depends on a struct's layout or the compiler. Every saved
 * object starts with a record header (a 4-character tag and a version): a reader
 * refuses a tag it does not expect or a version newer than it knows, with a message.
 *
 * Errors are sticky: after the first failure every put/get does nothing and returns
 * false, so a sequence of calls needs one check at the end (w->failed / r->failed,
 * r->err holds the first reason).
 *
 * Threads: a writer or reader belongs to one thread at a time.
 */
#ifndef GK_BINIO_H
#define GK_BINIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gk_writer {
    FILE *f;
    bool failed;
} gk_writer;

typedef struct gk_reader {
    FILE *f;
    bool failed;
    char err[256]; /* why the first failure happened */
} gk_reader;

bool gk_put_u8(gk_writer *w, uint8_t v);
bool gk_put_u32(gk_writer *w, uint32_t v);
bool gk_put_u64(gk_writer *w, uint64_t v);
bool gk_put_i64(gk_writer *w, int64_t v);
bool gk_put_f64(gk_writer *w, double v);
bool gk_put_f32s(gk_writer *w, const float *v, size_t n);
/* A length (u32) and the bytes, no terminator. */
bool gk_put_str(gk_writer *w, const char *s);
/* A record header: tag (4 characters) and version. */
bool gk_put_tag(gk_writer *w, const char *tag, uint32_t version);

bool gk_get_u8(gk_reader *r, uint8_t *v);
bool gk_get_u32(gk_reader *r, uint32_t *v);
bool gk_get_u64(gk_reader *r, uint64_t *v);
bool gk_get_i64(gk_reader *r, int64_t *v);
bool gk_get_f64(gk_reader *r, double *v);
bool gk_get_f32s(gk_reader *r, float *v, size_t n);
/* Into s[cap] with a terminator; a longer string fails. */
bool gk_get_str(gk_reader *r, char *s, size_t cap);
/* Read a record header: fails unless the tag is `tag` and the version is 1..max;
   *version gets it (may be NULL). */
bool gk_get_tag(gk_reader *r, const char *tag, uint32_t max, uint32_t *version);
/* Type-generic forms for fields of the fixed-width types above: gk_put(w, s->count),
   gk_get(r, &s->count). Other types do not compile: convert them explicitly. */
#define gk_put(w, v)                                                                    \
    _Generic((v), uint8_t: gk_put_u8, uint32_t: gk_put_u32, uint64_t: gk_put_u64,       \
             int64_t: gk_put_i64, double: gk_put_f64)((w), (v))
#define gk_get(r, p)                                                                    \
    _Generic((p), uint8_t *: gk_get_u8, uint32_t *: gk_get_u32, uint64_t *: gk_get_u64, \
             int64_t *: gk_get_i64, double *: gk_get_f64)((r), (p))

/* Fail the reader with a message (a value read was out of range); returns false. */
bool gk_reader_fail(gk_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
