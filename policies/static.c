/*
 * static: one codec spec for every layer, exact (none) before start_iter.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "policy.h"

typedef struct static_state {
    gk_spec codec;
    gk_spec exact;
    int64_t start_iter;
} static_state;

static const char *const static_keys[] = {"codec", "start_iter", NULL};

static int static_create(const gp_args *a, void **state, char *err, size_t errlen)
{
    static_state *s = calloc(1, sizeof(*s));
    if (!s)
        return GCOMP_NOMEM;
    const char *codec = "none";
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->keys[i], "codec") == 0) {
            codec = a->vals[i];
        } else if (strcmp(a->keys[i], "start_iter") == 0) {
            char *end;
            errno = 0;
            long long v = strtoll(a->vals[i], &end, 10);
            if (errno || end == a->vals[i] || *end || v < 0) {
                snprintf(err, errlen, "policy 'static': start_iter must be an integer >= 0, not '%s'",
                         a->vals[i]);
                free(s);
                return GCOMP_INVALID;
            }
            s->start_iter = v;
        }
    }
    if (gk_spec_parse(codec, &s->codec, err, errlen) || gk_spec_parse("none", &s->exact, err, errlen)) {
        free(s);
        return GCOMP_INVALID;
    }
    *state = s;
    return GCOMP_OK;
}

static void static_destroy(void *state)
{
    free(state);
}

static int static_decide(void *state, const gp_layer *layer, int64_t step, gk_spec *out)
{
    (void)layer;
    const static_state *s = state;
    *out = step < s->start_iter ? s->exact : s->codec;
    return GCOMP_OK;
}

const gp_policy gp_policy_static = {
    .name = "static",
    .summary = "one codec for every eligible layer; exact before start_iter",
    .keys = static_keys,
    .create = static_create,
    .destroy = static_destroy,
    .decide = static_decide,
};
