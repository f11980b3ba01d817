/*
 * spec.c: codec specs, "NAME[:key=value[,key=value...]]", parsed against the registry.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "gcomp.h"

#define GK_DEFAULT_MIN_ELEMENTS 1024

const gk_codec *gk_codec_find(const char *name)
{
    for (int i = 0; i < gk_ncodecs; i++)
        if (strcmp(gk_codecs[i]->name, name) == 0)
            return gk_codecs[i];
    return NULL;
}

/* Append the registry's names to err ("none, fp16, ..."). */
static void list_codecs(char *err, size_t errlen)
{
    size_t n = strlen(err);
    for (int i = 0; i < gk_ncodecs && n < errlen; i++) {
        snprintf(err + n, errlen - n, "%s%s", i ? ", " : "", gk_codecs[i]->name);
        n = strlen(err);
    }
}

/* Append "rank (1..1024, default 1: help), ..." for the codec's keys to err. */
static void list_keys(const gk_codec *c, char *err, size_t errlen)
{
    size_t n = strlen(err);
    for (int i = 0; i < c->nparams && n < errlen; i++) {
        const gk_param_desc *p = &c->params[i];
        snprintf(err + n, errlen - n, "%s (%g..%g, default %g: %s), ", p->key, p->min, p->max,
                 p->def, p->help);
        n = strlen(err);
    }
    if (n < errlen)
        snprintf(err + n, errlen - n, "ef (0|1, default %d), min_elements (>= 0, default %d)",
                 c->ef_default, GK_DEFAULT_MIN_ELEMENTS);
}

void gk_codec_keys_help(const gk_codec *c, char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    list_keys(c, buf, len);
}

/* Parse a number that must lie in [min, max] (and be an integer if asked). */
static int parse_value(const char *text, double min, double max, bool integer, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min || v > max)
        return GCOMP_INVALID;
    if (integer && v != floor(v))
        return GCOMP_INVALID;
    *out = v;
    return GCOMP_OK;
}

static int parse_pair(const gk_codec *c, gk_spec *s, char *pair, char *err, size_t errlen)
{
    char *eq = strchr(pair, '=');
    if (!eq || eq == pair || !eq[1]) {
        snprintf(err, errlen, "codec '%s': '%s' is not key=value; valid keys: ", c->name, pair);
        list_keys(c, err, errlen);
        return GCOMP_INVALID;
    }
    *eq = '\0';
    const char *key = pair, *val = eq + 1;
    double v;
    if (strcmp(key, "ef") == 0) {
        if (parse_value(val, 0, 1, true, &v)) {
            snprintf(err, errlen, "codec '%s': ef must be 0 or 1, not '%s'", c->name, val);
            return GCOMP_INVALID;
        }
        if (v == 1 && !c->ef_allowed) {
            snprintf(err, errlen, "codec '%s' runs without error feedback: ef=1 is not valid",
                     c->name);
            return GCOMP_INVALID;
        }
        s->ef = v == 1;
        return GCOMP_OK;
    }
    if (strcmp(key, "min_elements") == 0) {
        if (parse_value(val, 0, 1e15, true, &v)) {
            snprintf(err, errlen, "codec '%s': min_elements must be an integer >= 0, not '%s'",
                     c->name, val);
            return GCOMP_INVALID;
        }
        s->min_elements = (long)v;
        return GCOMP_OK;
    }
    for (int i = 0; i < c->nparams; i++) {
        const gk_param_desc *p = &c->params[i];
        if (strcmp(key, p->key) != 0)
            continue;
        if (parse_value(val, p->min, p->max, p->integer, &s->v[i])) {
            snprintf(err, errlen, "codec '%s': %s must be %s in %g..%g, not '%s'", c->name, key,
                     p->integer ? "an integer" : "a number", p->min, p->max, val);
            return GCOMP_INVALID;
        }
        return GCOMP_OK;
    }
    snprintf(err, errlen, "codec '%s' has no key '%s'; valid keys: ", c->name, key);
    list_keys(c, err, errlen);
    return GCOMP_INVALID;
}

int gk_spec_parse(const char *text, gk_spec *out, char *err, size_t errlen)
{
    char buf[512];
    if (!text || strlen(text) >= sizeof(buf)) {
        snprintf(err, errlen, "codec spec missing or longer than %zu bytes", sizeof(buf) - 1);
        return GCOMP_INVALID;
    }
    strcpy(buf, text);
    char *args = strchr(buf, ':');
    if (args)
        *args++ = '\0';
    const gk_codec *c = gk_codec_find(buf);
    if (!c) {
        snprintf(err, errlen, "unknown codec '%s'; valid codecs: ", buf);
        list_codecs(err, errlen);
        return GCOMP_INVALID;
    }
    gk_spec s = {.codec = c, .ef = c->ef_default, .min_elements = GK_DEFAULT_MIN_ELEMENTS};
    for (int i = 0; i < c->nparams; i++)
        s.v[i] = c->params[i].def;
    if (args) {
        char *save = NULL, seen[GK_MAX_PARAMS + 2][64];
        int nseen = 0;
        if (!*args) {
            snprintf(err, errlen, "codec '%s': empty parameter list after ':'", c->name);
            return GCOMP_INVALID;
        }
        for (char *pair = strtok_r(args, ",", &save); pair; pair = strtok_r(NULL, ",", &save)) {
            size_t klen = strcspn(pair, "=");
            for (int k = 0; k < nseen; k++)
                if (strlen(seen[k]) == klen && strncmp(seen[k], pair, klen) == 0) {
                    snprintf(err, errlen, "codec '%s': key '%.*s' given twice", c->name,
                             (int)klen, pair);
                    return GCOMP_INVALID;
                }
            if (parse_pair(c, &s, pair, err, errlen))
                return GCOMP_INVALID;
            if (nseen < GK_MAX_PARAMS + 2)
                snprintf(seen[nseen++], sizeof(seen[0]), "%.*s", (int)klen, pair);
        }
    }
    *out = s;
    return GCOMP_OK;
}

/* Shared by the two formatters: name, then "key<sep>value" pairs with the quoting given. */
static int format_pairs(const gk_spec *s, char *buf, size_t len, const char *head,
                        const char *fmt_num, const char *joiner)
{
    const gk_codec *c = s->codec;
    int n = snprintf(buf, len, head, c->name);
    for (int i = 0; i < c->nparams; i++)
        n += snprintf(buf + ((size_t)n < len ? (size_t)n : len), (size_t)n < len ? len - n : 0,
                      fmt_num, i ? joiner : "", c->params[i].key, s->v[i]);
    n += snprintf(buf + ((size_t)n < len ? (size_t)n : len), (size_t)n < len ? len - n : 0,
                  fmt_num, c->nparams ? joiner : "", "ef", (double)s->ef);
    return n;
}

int gk_spec_format(const gk_spec *s, char *buf, size_t len)
{
    return format_pairs(s, buf, len, "%s:", "%s%s=%.10g", ",");
}

int gk_spec_json(const gk_spec *s, char *buf, size_t len)
{
    return format_pairs(s, buf, len, "\"codec\":\"%s\",", "%s\"%s\":%.10g", ",");
}

double gk_spec_get(const gk_spec *s, const char *key)
{
    for (int i = 0; i < s->codec->nparams; i++)
        if (strcmp(s->codec->params[i].key, key) == 0)
            return s->v[i];
    return NAN;
}

bool gk_spec_compresses(const gk_spec *spec, const gk_layer *layer)
{
    const gk_codec *c = spec->codec;
    return layer->ndim >= 2 && (long)layer->numel >= spec->min_elements &&
           (!c->compresses || c->compresses(spec, layer));
}

int gk_spec_knob(const gk_spec *spec, double *value, int *more)
{
    const gk_codec *c = spec->codec;
    for (int i = 0; c->knob && i < c->nparams; i++)
        if (strcmp(c->params[i].key, c->knob) == 0) {
            if (value)
                *value = spec->v[i];
            if (more)
                *more = c->knob_more;
            return i;
        }
    return -1;
}

int gk_spec_nphases(const gk_spec *spec)
{
    return spec->codec->nphases ? spec->codec->nphases(spec) : 1;
}

gk_coll gk_spec_coll(const gk_spec *spec, int phase)
{
    return spec->codec->phase_coll ? spec->codec->phase_coll(spec, phase) : GK_COLL_ALLREDUCE_F32;
}

size_t gk_payload_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    return spec->codec->max_bytes(spec, layer, phase, step);
}

bool gk_payload_fixed(const gk_spec *spec, int phase)
{
    if (gk_spec_coll(spec, phase) != GK_COLL_ALLGATHER)
        return true;
    return spec->codec->fixed_bytes && spec->codec->fixed_bytes(spec, phase);
}

bool gk_payload_always_fixed(const gk_spec *spec, int phase)
{
    (void)spec;
    (void)phase;
    return true;
}

void *gk_scratch_get(const gk_call *call, size_t bytes)
{
    if (call->exec && call->exec->scratch)
        return gk_arena_alloc(call->exec->scratch, bytes ? bytes : 1);
    return malloc(bytes ? bytes : 1);
}

void gk_scratch_put(const gk_call *call, void *p)
{
    if (!(call->exec && call->exec->scratch))
        free(p);
}

int gk_layer_respec(const gk_spec *old, bool old_comp, const gk_spec *now, bool comp,
                    const gk_layer *layer, void **state, float **x)
{
    const gk_codec *oc = old_comp ? old->codec : NULL;
    bool same_codec = oc && comp && oc == now->codec;
    if (!same_codec) {
        if (*state && oc && oc->state_free)
            oc->state_free(*state);
        *state = NULL;
        free(*x);
        *x = NULL;
    } else if (*state && (memcmp(old->v, now->v, sizeof(old->v)) != 0 || old->ef != now->ef)) {
        const gk_codec *c = now->codec;
        if (!c->state_keeps || !c->state_keeps(old, now)) {
            c->state_free(*state);
            *state = NULL;
        }
    }
    if (!comp)
        return GCOMP_OK;
    if (!*x && !(*x = calloc(layer->numel ? layer->numel : 1, sizeof(float))))
        return GCOMP_NOMEM;
    if (!*state && now->codec->state_new)
        return now->codec->state_new(now, layer, state);
    return GCOMP_OK;
}
