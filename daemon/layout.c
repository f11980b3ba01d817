#include "layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int gcd_layout_from_proto(const char *bucket, Gcomp__Layer *const *pl, size_t n,
                          gcd_layout *out, char *err, size_t errlen)
{
    if (n < 1 || n > GCOMP_MAX_LAYERS) {
        snprintf(err, errlen, "bucket '%s': %zu layers, must be 1..%d", bucket, n,
                 GCOMP_MAX_LAYERS);
        return GCOMP_INVALID;
    }
    gcd_layer *ls = calloc(n, sizeof(*ls));
    if (!ls) {
        snprintf(err, errlen, "bucket '%s': out of memory", bucket);
        return GCOMP_NOMEM;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const Gcomp__Layer *p = pl[i];
        const char *name = p->name ? p->name : "";
        if (!*name || strlen(name) > GCOMP_MAX_NAME || p->n_shape < 1 ||
            p->n_shape > GCOMP_MAX_DIMS || p->dtype != GCOMP_FLOAT32) {
            snprintf(err, errlen,
                     "bucket '%s' layer %zu '%.64s': needs a name of 1..%d bytes, 1..%d "
                     "dimensions and dtype float32",
                     bucket, i, name, GCOMP_MAX_NAME, GCOMP_MAX_DIMS);
            free(ls);
            return GCOMP_INVALID;
        }
        gw_strlcpy(ls[i].name, name, sizeof(ls[i].name));
        ls[i].ndim = (int)p->n_shape;
        ls[i].numel = 1;
        for (size_t d = 0; d < p->n_shape; d++) {
            if (p->shape[d] < 1 || (size_t)p->shape[d] > GCD_MAX_NUMEL ||
                ls[i].numel * (size_t)p->shape[d] > GCD_MAX_NUMEL) {
                snprintf(err, errlen, "bucket '%s' layer '%s': bad or too large shape", bucket,
                         name);
                free(ls);
                return GCOMP_LIMIT;
            }
            ls[i].shape[d] = p->shape[d];
            ls[i].numel *= (size_t)p->shape[d];
        }
        ls[i].offset = total;
        total += ls[i].numel;
        if (total > GCD_MAX_NUMEL) {
            snprintf(err, errlen, "bucket '%s': more than %zu elements", bucket, GCD_MAX_NUMEL);
            free(ls);
            return GCOMP_LIMIT;
        }
    }
    out->n = n;
    out->layers = ls;
    out->numel = total;
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
    l->layers = NULL;
    l->n = 0;
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
    return 0;
}
