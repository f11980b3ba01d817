/*
 * registry.c: every policy gcomp knows, in one array, and spec parsing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "policy.h"

extern const gp_policy gp_policy_static;

const gp_policy *const gp_policies[] = {
    &gp_policy_static,
};

const int gp_npolicies = sizeof(gp_policies) / sizeof(gp_policies[0]);

static const gp_policy *find_policy(const char *name)
{
    for (int i = 0; i < gp_npolicies; i++)
        if (strcmp(gp_policies[i]->name, name) == 0)
            return gp_policies[i];
    return NULL;
}

static int is_key(const gp_policy *p, const char *key)
{
    for (const char *const *k = p->keys; *k; k++)
        if (strcmp(*k, key) == 0)
            return 1;
    return 0;
}

int gp_instance_create(const char *spec, gp_instance **out, char *err, size_t errlen)
{
    char buf[512], codec[512] = "";
    if (!spec || strlen(spec) >= sizeof(buf)) {
        snprintf(err, errlen, "policy spec missing or longer than %zu bytes", sizeof(buf) - 1);
        return GCOMP_INVALID;
    }
    strcpy(buf, spec);
    char *args = strchr(buf, ':');
    if (args)
        *args++ = '\0';
    const gp_policy *p = find_policy(buf);
    if (!p && gk_codec_find(buf)) {
        /* A bare codec spec: static with that codec. */
        snprintf(buf, sizeof(buf), "static");
        snprintf(codec, sizeof(codec), "%s", spec);
        args = NULL;
        p = find_policy("static");
    }
    if (!p) {
        size_t n = (size_t)snprintf(err, errlen, "unknown policy '%s'; valid policies: ", buf);
        for (int i = 0; i < gp_npolicies && n < errlen; i++)
            n += (size_t)snprintf(err + n, errlen - n, "%s, ", gp_policies[i]->name);
        if (n < errlen)
            snprintf(err + n, errlen - n, "or a codec spec (codecs: see gcompd --help)");
        return GCOMP_INVALID;
    }
    gp_args a = {0};
    int has_codec = is_key(p, "codec");
    if (codec[0]) {
        a.keys[a.n] = "codec";
        a.vals[a.n++] = codec;
    }
    char *save = NULL;
    for (char *tok = args ? strtok_r(args, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = '\0';
        if (eq && is_key(p, tok)) {
            if (a.n == 16) {
                snprintf(err, errlen, "policy '%s': too many keys", p->name);
                return GCOMP_INVALID;
            }
            if (strcmp(tok, "codec") == 0) {
                snprintf(codec, sizeof(codec), "%s", eq + 1);
                a.keys[a.n] = "codec";
                a.vals[a.n++] = codec;
            } else {
                a.keys[a.n] = tok;
                a.vals[a.n++] = eq + 1;
            }
            continue;
        }
        if (eq)
            *eq = '=';
        if (has_codec && codec[0]) {
            /* Not a policy key: it continues the codec spec. */
            size_t n = strlen(codec);
            if (snprintf(codec + n, sizeof(codec) - n, "%s%s", strchr(codec, ':') ? "," : ":",
                         tok) >= (int)(sizeof(codec) - n)) {
                snprintf(err, errlen, "policy '%s': codec spec too long", p->name);
                return GCOMP_INVALID;
            }
            continue;
        }
        size_t n = (size_t)snprintf(err, errlen, "policy '%s' has no key '%.*s'; valid keys: ",
                                    p->name, (int)strcspn(tok, "="), tok);
        for (const char *const *k = p->keys; *k && n < errlen; k++)
            n += (size_t)snprintf(err + n, errlen - n, "%s%s", k == p->keys ? "" : ", ", *k);
        return GCOMP_INVALID;
    }
    gp_instance *inst = calloc(1, sizeof(*inst));
    if (!inst)
        return GCOMP_NOMEM;
    int rc = p->create(&a, &inst->state, err, errlen);
    if (rc) {
        free(inst);
        return rc;
    }
    inst->policy = p;
    snprintf(inst->spec, sizeof(inst->spec), "%s", spec);
    *out = inst;
    return GCOMP_OK;
}

void gp_instance_destroy(gp_instance *p)
{
    if (!p)
        return;
    p->policy->destroy(p->state);
    free(p);
}
