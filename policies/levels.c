/*
 * levels.c: helpers shared by the policies that move one codec parameter per layer
 * (accordion, adaqs). See levels.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "gcomp.h"
#include "levels.h"

const gk_param_desc *gp_levels_param(const gk_codec *c, const char *key)
{
    for (int i = 0; i < c->nparams; i++)
        if (strcmp(c->params[i].key, key) == 0)
            return &c->params[i];
    return NULL;
}

int gp_levels_codec(const char *policy, const char *codec_text, const char *param_key,
                    gk_spec *codec, char *param, size_t paramlen, char *err, size_t errlen)
{
    char msg[1024];
    if (gk_spec_parse(codec_text, codec, msg, sizeof(msg))) {
        snprintf(err, errlen, "policy '%s': codec: %s", policy, msg);
        return GCOMP_INVALID;
    }
    const gk_codec *c = codec->codec;
    const char *key = param_key ? param_key : c->knob;
    if (!key || !gp_levels_param(c, key) || strlen(key) >= paramlen) {
        if (key)
            snprintf(err, errlen, "policy '%s': param: codec '%s' has no parameter '%s'; its "
                     "parameters: ", policy, c->name, key);
        else
            snprintf(err, errlen, "policy '%s': param: codec '%s' has no compression knob, so "
                     "param= must name the parameter to move; its parameters: ", policy,
                     c->name);
        size_t n = strlen(err);
        for (int i = 0; i < c->nparams && n < errlen; i++)
            n += (size_t)snprintf(err + n, errlen - n, "%s%s", i ? ", " : "", c->params[i].key);
        if (n < errlen)
            snprintf(err + n, errlen - n, "%s", c->nparams ? "" : "none (choose another codec)");
        return GCOMP_INVALID;
    }
    snprintf(param, paramlen, "%s", key);
    return GCOMP_OK;
}

int gp_levels_value(const char *policy, const char *key, const char *val, const gk_spec *codec,
                    const char *param, double *out, char *err, size_t errlen)
{
    const gk_param_desc *d = gp_levels_param(codec->codec, param);
    double v;
    if (!d || gp_arg_double(policy, key, val, d->min, d->max, &v, err, errlen))
        return GCOMP_INVALID;
    gk_spec tmp;
    if (gp_spec_with(codec, param, v, &tmp)) {
        snprintf(err, errlen, "policy '%s': %s must be a valid %s for codec '%s' (%s in %g..%g), "
                 "not '%s'", policy, key, param, codec->codec->name,
                 d->integer ? "an integer" : "a number", d->min, d->max, val);
        return GCOMP_INVALID;
    }
    *out = v;
    return GCOMP_OK;
}

/* Fibonacci hashing: the high bits of id times 2^64 / phi, so that ids that differ only
   in the bucket number (the upper 32 bits) spread as well as the layer indices. */
static size_t slot_of(uint64_t id, size_t hcap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (hcap - 1);
}

void *gp_lmap_find(const gp_lmap *m, uint64_t id)
{
    if (!m->hcap)
        return NULL;
    for (size_t h = slot_of(id, m->hcap);; h = (h + 1) & (m->hcap - 1)) {
        uint32_t s = m->slots[h];
        if (!s)
            return NULL;
        if (m->ids[s - 1] == id)
            return m->items[s - 1];
    }
}

/* Rebuild the hash slots for hcap slots (the load stays at most one half). */
static int rehash(gp_lmap *m, size_t hcap)
{
    uint32_t *slots = calloc(hcap, sizeof(*slots));
    if (!slots)
        return GCOMP_NOMEM;
    for (size_t i = 0; i < m->n; i++) {
        size_t h = slot_of(m->ids[i], hcap);
        while (slots[h])
            h = (h + 1) & (hcap - 1);
        slots[h] = (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->hcap = hcap;
    return GCOMP_OK;
}

int gp_lmap_add(gp_lmap *m, uint64_t id, void *item)
{
    if (m->n >= UINT32_MAX - 1)
        return GCOMP_LIMIT;
    if (m->n == m->cap) {
        size_t cap_ids = m->cap, cap_items = m->cap;
        uint64_t *ids = gk_grow(m->ids, &cap_ids, m->n + 1, sizeof(*ids));
        if (!ids)
            return GCOMP_NOMEM;
        m->ids = ids;
        void **items = gk_grow(m->items, &cap_items, m->n + 1, sizeof(*items));
        if (!items)
            return GCOMP_NOMEM;
        m->items = items;
        m->cap = cap_ids < cap_items ? cap_ids : cap_items;
    }
    if (2 * (m->n + 1) > m->hcap && rehash(m, m->hcap ? m->hcap * 2 : 32))
        return GCOMP_NOMEM;
    m->ids[m->n] = id;
    m->items[m->n] = item;
    m->n++;
    size_t h = slot_of(id, m->hcap);
    while (m->slots[h])
        h = (h + 1) & (m->hcap - 1);
    m->slots[h] = (uint32_t)m->n;
    return GCOMP_OK;
}

void gp_lmap_clear(gp_lmap *m, void (*free_item)(void *))
{
    for (size_t i = 0; i < m->n && free_item; i++)
        free_item(m->items[i]);
    free(m->ids);
    free(m->items);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}
