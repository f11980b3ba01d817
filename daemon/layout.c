#include "layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int gcd_layout_append(const char *bucket, Gcomp__Layer *const *pl, size_t n, size_t limit,
                      gcd_layout *io, char *err, size_t errlen)
{
    if (n > limit || io->n > limit - n) {
        snprintf(err, errlen, "bucket '%s': more than %zu layers", bucket, limit);
        return GCOMP_LIMIT;
    }
    gcd_layer *ls = realloc(io->layers, (io->n + n ? io->n + n : 1) * sizeof(*ls));
    if (!ls) {
        snprintf(err, errlen, "bucket '%s': out of memory", bucket);
        return GCOMP_NOMEM;
    }
    io->layers = ls;
    size_t total = io->numel;
    for (size_t i = 0; i < n; i++) {
        const Gcomp__Layer *p = pl[i];
        gcd_layer *l = &ls[io->n + i];
        const char *name = p->name ? p->name : "";
        if (!*name || strlen(name) > GCOMP_MAX_NAME || p->n_shape < 1 ||
            p->n_shape > GCOMP_MAX_DIMS || p->dtype != GCOMP_FLOAT32) {
            snprintf(err, errlen,
                     "bucket '%s' layer %zu '%.64s': needs a name of 1..%d bytes, 1..%d "
                     "dimensions and dtype float32",
                     bucket, io->n + i, name, GCOMP_MAX_NAME, GCOMP_MAX_DIMS);
            return GCOMP_INVALID;
        }
        memset(l, 0, sizeof(*l));
        gw_strlcpy(l->name, name, sizeof(l->name));
        l->ndim = (int)p->n_shape;
        l->numel = 1;
        for (size_t d = 0; d < p->n_shape; d++) {
            if (p->shape[d] < 1 || (size_t)p->shape[d] > GCD_MAX_NUMEL ||
                l->numel * (size_t)p->shape[d] > GCD_MAX_NUMEL) {
                snprintf(err, errlen, "bucket '%s' layer '%s': bad or too large shape", bucket,
                         name);
                return GCOMP_LIMIT;
            }
            l->shape[d] = p->shape[d];
            l->numel *= (size_t)p->shape[d];
        }
        l->offset = total;
        total += l->numel;
        if (total > GCD_MAX_NUMEL) {
            snprintf(err, errlen, "bucket '%s': more than %zu elements", bucket, GCD_MAX_NUMEL);
            return GCOMP_LIMIT;
        }
    }
    io->n += n;
    io->numel = total;
    return GCOMP_OK;
}

int gcd_layout_from_proto(const char *bucket, Gcomp__Layer *const *pl, size_t n,
                          gcd_layout *out, char *err, size_t errlen)
{
    if (n < 1 || n > GCOMP_MAX_LAYERS) {
        snprintf(err, errlen, "bucket '%s': %zu layers, must be 1..%d", bucket, n,
                 GCOMP_MAX_LAYERS);
        return GCOMP_INVALID;
    }
    gcd_layout l = {0};
    int rc = gcd_layout_append(bucket, pl, n, GCOMP_MAX_LAYERS, &l, err, errlen);
    if (rc) {
        gcd_layout_free(&l);
        return rc;
    }
    *out = l;
    return GCOMP_OK;
}

int gcd_layout_to_proto(const gcd_layout *l, Gcomp__Layer **msgs, Gcomp__Layer ***ptrs)
{
    Gcomp__Layer *m = calloc(l->n, sizeof(*m));
    Gcomp__Layer **p = calloc(l->n, sizeof(*p));
    if (!m || !p) {
        free(m);
        free(p);
        return GCOMP_NOMEM;
    }
    for (size_t i = 0; i < l->n; i++) {
        gcomp__layer__init(&m[i]);
        m[i].name = (char *)l->layers[i].name;
        m[i].shape = (int64_t *)l->layers[i].shape;
        m[i].n_shape = (size_t)l->layers[i].ndim;
        m[i].dtype = GCOMP_FLOAT32;
        p[i] = &m[i];
    }
    *msgs = m;
    *ptrs = p;
    return GCOMP_OK;
}

void gcd_layout_free(gcd_layout *l)
{
    free(l->layers);
    *l = (gcd_layout){0};
}

static void shape_str(const gcd_layer *l, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "[");
    for (int d = 0; d < l->ndim && n < len; d++)
        n += (size_t)snprintf(out + n, len - n, "%s%lld", d ? ", " : "", (long long)l->shape[d]);
    if (n < len)
        snprintf(out + n, len - n, "]");
}

int gcd_layout_diff(const gcd_layout *a, const gcd_layout *b, char *out, size_t len)
{
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        const gcd_layer *x = &a->layers[i], *y = &b->layers[i];
        if (strcmp(x->name, y->name) != 0) {
            snprintf(out, len, "layer %zu is named '%s' vs '%s'", i, x->name, y->name);
            return 1;
        }
        if (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(x->shape[0]) * x->ndim)) {
            char sx[128], sy[128];
            shape_str(x, sx, sizeof(sx));
            shape_str(y, sy, sizeof(sy));
            snprintf(out, len, "layer %zu '%s' has shape %s vs %s", i, x->name, sx, sy);
            return 1;
        }
    }
    if (a->n != b->n) {
        snprintf(out, len, "%zu layers vs %zu", a->n, b->n);
        return 1;
    }
    if (a->flags != b->flags) {
        snprintf(out, len, "registered %s vs %s", a->flags & GCOMP_BUCKET_EXACT ? "exact" : "not exact",
                 b->flags & GCOMP_BUCKET_EXACT ? "exact" : "not exact");
        return 1;
    }
    return 0;
}
