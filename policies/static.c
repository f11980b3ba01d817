/*
 * static: one codec spec for every layer, exact (none) before start_iter, and
 * optional per-layer overrides by name pattern:
 *   static:codec=topk:density=0.01,override=fc.*@none,override=conv1.*@powersgd:rank=2
 * The first override whose glob (fnmatch) matches the layer name wins.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "policy.h"

#define MAX_OVERRIDES 8

typedef struct static_state {
    gk_spec codec;
    gk_spec exact;
    long start_iter;
    int noverrides;
    char glob[MAX_OVERRIDES][128];
    gk_spec spec[MAX_OVERRIDES];
} static_state;

static const char *const static_keys[] = {"codec", "start_iter", "override", NULL};
static const char *const static_spec_keys[] = {"codec", "override", NULL};
static const char *const static_multi_keys[] = {"override", NULL};

static int add_override(static_state *s, const char *val, char *err, size_t errlen)
{
    const char *at = strchr(val, '@');
    if (!at || at == val || (size_t)(at - val) >= sizeof(s->glob[0])) {
        snprintf(err, errlen, "policy 'static': override must be GLOB@CODEC_SPEC, not '%s'", val);
        return GCOMP_INVALID;
    }
    if (s->noverrides == MAX_OVERRIDES) {
        snprintf(err, errlen, "policy 'static': at most %d overrides", MAX_OVERRIDES);
        return GCOMP_INVALID;
    }
    snprintf(s->glob[s->noverrides], sizeof(s->glob[0]), "%.*s", (int)(at - val), val);
    if (gk_spec_parse(at + 1, &s->spec[s->noverrides], err, errlen))
        return GCOMP_INVALID;
    s->noverrides++;
    return GCOMP_OK;
}

static int static_create(const gp_args *a, const gp_env *env, void **state, char *err,
                         size_t errlen)
{
    (void)env;
    static_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    const char *codec = "none";
    int rc = GCOMP_OK;
    for (int i = 0; i < a->n && !rc; i++) {
        if (strcmp(a->keys[i], "codec") == 0)
            codec = a->vals[i];
        else if (strcmp(a->keys[i], "start_iter") == 0)
            rc = gp_arg_long("static", "start_iter", a->vals[i], 0, INT32_MAX, &s->start_iter,
                             err, errlen);
        else if (strcmp(a->keys[i], "override") == 0)
            rc = add_override(s, a->vals[i], err, errlen);
    }
    if (!rc)
        rc = gk_spec_parse(codec, &s->codec, err, errlen);
    if (!rc)
        rc = gk_spec_parse("none", &s->exact, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *state = s;
    return GCOMP_OK;
}

static void static_destroy(void *state)
{
    free(state);
}

static int static_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out,
                         char *why, size_t whylen)
{
    const static_state *s = state;
    if (step < s->start_iter) {
        *out = s->exact;
        snprintf(why, whylen, "exact before start_iter %ld", s->start_iter);
        return GCOMP_OK;
    }
    for (int i = 0; i < s->noverrides; i++)
        if (fnmatch(s->glob[i], layer->name, 0) == 0) {
            *out = s->spec[i];
            snprintf(why, whylen, "override '%s'", s->glob[i]);
            return GCOMP_OK;
        }
    *out = s->codec;
    snprintf(why, whylen, step == s->start_iter && step > 0 ? "start_iter %ld reached"
                                                          : "static codec", s->start_iter);
    return GCOMP_OK;
}

const gp_policy gp_policy_static = {
    .name = "static",
    .summary = "one codec for every eligible layer, per-layer overrides, exact before start_iter",
    .keys = static_keys,
    .spec_keys = static_spec_keys,
    .multi_keys = static_multi_keys,
    .keys_help = "codec (none): the codec spec of every eligible layer; start_iter (0): exact steps before it applies; override=GLOB@SPEC (repeatable, first match wins)",
    .create = static_create,
    .destroy = static_destroy,
    .decide = static_decide,
};
