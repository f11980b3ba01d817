/*
 * layout.h: a bucket's layers (names, shapes, offsets), validated from the wire, and
 * compared between trainers and between nodes with a message naming the difference.
 */
#ifndef GCD_LAYOUT_H
#define GCD_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "gcomp.h"
#include "gcomp.pb-c.h"

typedef struct gcd_layer {
    char name[GCOMP_MAX_NAME + 1];
    int ndim;
    int64_t shape[GCOMP_MAX_DIMS];
    size_t numel;
    size_t offset; /* in elements from the bucket's start */
} gcd_layer;

typedef struct gcd_layout {
    size_t n;
    gcd_layer *layers;
    size_t numel;
    uint32_t flags; /* GCOMP_BUCKET_* */
} gcd_layout;

/* Largest bucket accepted, in elements (16 GiB of float32). */
#define GCD_MAX_NUMEL ((size_t)1 << 32)

/* Validate layers from a message into *out (caller frees with gcd_layout_free).
   Errors name the bucket and the layer. */
int gcd_layout_from_proto(const char *bucket, Gcomp__Layer *const *pl, size_t n,
                          gcd_layout *out, char *err, size_t errlen);
/* Append n validated layers to *io (a zeroed layout to start; a registration sent in
   parts). At most `limit` layers in all. On error *io is unchanged. */
int gcd_layout_append(const char *bucket, Gcomp__Layer *const *pl, size_t n, size_t limit,
                      gcd_layout *io, char *err, size_t errlen);
/* Fill proto layers (pointers into the layout; valid while it lives). Caller frees the
   two arrays. */
int gcd_layout_to_proto(const gcd_layout *l, Gcomp__Layer **msgs, Gcomp__Layer ***ptrs);
void gcd_layout_free(gcd_layout *l);
/* 0 if equal (layers and flags); else 1 and a description of the first difference
   ("layer 2 'fc.w': shape [10, 20] vs [10, 21]"). */
int gcd_layout_diff(const gcd_layout *a, const gcd_layout *b, char *out, size_t len);

#endif
