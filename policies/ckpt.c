/*
 * ckpt.c: checkpoint helpers shared by the policies. See ckpt.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "gcomp.h"

/* Floats read per piece of an array whose length came from the checkpoint. */
#define CKPT_PIECE ((uint64_t)1 << 20)

bool gp_ckpt_arg_f64(gk_reader *r, const char *policy, const char *key, double want)
{
    double v;
    if (!gk_get(r, &v))
        return false;
    if (v != want)
        return gk_reader_fail(r, "%s checkpoint made with %s=%.10g; this %s has %s=%.10g",
                              policy, key, v, policy, key, want);
    return true;
}

bool gp_ckpt_arg_i64(gk_reader *r, const char *policy, const char *key, int64_t want)
{
    int64_t v;
    if (!gk_get(r, &v))
        return false;
    if (v != want)
        return gk_reader_fail(r, "%s checkpoint made with %s=%" PRId64 "; this %s has "
                              "%s=%" PRId64, policy, key, v, policy, key, want);
    return true;
}

bool gp_ckpt_arg_str(gk_reader *r, const char *policy, const char *key, const char *want)
{
    char v[256];
    if (!gk_get_str(r, v, sizeof(v)))
        return false;
    if (strcmp(v, want) != 0)
        return gk_reader_fail(r, "%s checkpoint made with %s=%s; this %s has %s=%s", policy,
                              key, v, policy, key, want);
    return true;
}

bool gp_ckpt_count(gk_reader *r, const char *what, uint64_t max, uint64_t *n)
{
    if (!gk_get(r, n))
        return false;
    if (*n > max)
        return gk_reader_fail(r, "%" PRIu64 " %s, at most %" PRIu64 " expected", *n, what,
                              max);
    return true;
}

bool gp_ckpt_get_f32s_new(gk_reader *r, uint64_t n, float **out)
{
    *out = NULL;
    if (n > SIZE_MAX / sizeof(float))
        return gk_reader_fail(r, "an array of %" PRIu64 " floats", n);
    float *a = NULL;
    for (uint64_t done = 0; done < n;) {
        uint64_t piece = n - done < CKPT_PIECE ? n - done : CKPT_PIECE;
        float *b = realloc(a, (size_t)(done + piece) * sizeof(float));
        if (!b) {
            free(a);
            return gk_reader_fail(r, "out of memory for an array of %" PRIu64 " floats", n);
        }
        a = b;
        if (!gk_get_f32s(r, a + done, (size_t)piece)) {
            free(a);
            return false;
        }
        done += piece;
    }
    *out = a;
    return true;
}

int gp_ckpt_status(const gk_reader *r)
{
    return feof(r->f) || ferror(r->f) ? GCOMP_IO : GCOMP_INVALID;
}
