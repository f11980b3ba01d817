/*
 * registry.c: every policy gcomp knows, in one array, spec parsing, and the small
 * helpers policies share.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"
#include "policy.h"

extern const gp_policy gp_policy_static;
/* Accordion and AdaQS. */
extern const gp_policy gp_policy_accordion;
extern const gp_policy gp_policy_adaqs;
/* GraVAC. */
extern const gp_policy gp_policy_gravac;
/* L-GreCo. */
extern const gp_policy gp_policy_lgreco;
/* Performance model. */
extern const gp_policy gp_policy_perfmodel;

const gp_policy *const gp_policies[] = {
    &gp_policy_static,
    /* Accordion and AdaQS. */
    &gp_policy_accordion,
    &gp_policy_adaqs,
    /* GraVAC. */
    &gp_policy_gravac,
    /* L-GreCo. */
    &gp_policy_lgreco,
    /* Performance model. */
    &gp_policy_perfmodel,
};

const int gp_npolicies = sizeof(gp_policies) / sizeof(gp_policies[0]);

static const gp_policy *find_policy(const char *name)
{
    for (int i = 0; i < gp_npolicies; i++)
        if (strcmp(gp_policies[i]->name, name) == 0)
            return gp_policies[i];
    return NULL;
}

const gp_policy *gp_policy_of_spec(const char *spec)
{
    char name[64];
    size_t n = strcspn(spec, ":");
    if (n >= sizeof(name))
        return NULL;
    memcpy(name, spec, n);
    name[n] = '\0';
    const gp_policy *p = find_policy(name);
    return p ? p : gk_codec_find(name) ? find_policy("static") : NULL;
}

static int in_list(const char *const *list, const char *key)
{
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0)
            return 1;
    return 0;
}

/* Append ",tok" (or ":tok" when the codec spec has no parameters yet) to a spec value. */
static int continue_spec(char *val, size_t size, const char *tok)
{
    const char *spec = strrchr(val, '@') ? strrchr(val, '@') + 1 : val;
    size_t n = strlen(val);
    return snprintf(val + n, size - n, "%s%s", strchr(spec, ':') ? "," : ":", tok) >= (int)(size - n);
}

int gp_instance_create(const char *spec, const gp_env *env, gp_instance **out, char *err,
                       size_t errlen)
{
    static const gp_env one = {.nodes = 1, .trainers = 1, .seed = 1};
    char buf[512], store[GP_MAX_ARGS][512];
    if (!spec || strlen(spec) >= sizeof(buf)) {
        snprintf(err, errlen, "policy spec missing or longer than %zu bytes", sizeof(buf) - 1);
        return GCOMP_INVALID;
    }
    strcpy(buf, spec);
    char *args = strchr(buf, ':');
    if (args)
        *args++ = '\0';
    const gp_policy *p = find_policy(buf);
    gp_args a = {0};
    if (!p && gk_codec_find(buf)) {
        /* A bare codec spec: static with that codec. */
        p = find_policy("static");
        snprintf(store[0], sizeof(store[0]), "%s", spec);
        a.keys[0] = "codec";
        a.vals[0] = store[0];
        a.n = 1;
        args = NULL;
    }
    if (!p) {
        size_t n = (size_t)snprintf(err, errlen, "unknown policy '%s'; valid policies: ", buf);
        for (int i = 0; i < gp_npolicies && n < errlen; i++)
            n += (size_t)snprintf(err + n, errlen - n, "%s, ", gp_policies[i]->name);
        if (n < errlen)
            snprintf(err + n, errlen - n, "or a codec spec (codecs: see gcompd --help)");
        return GCOMP_INVALID;
    }
    int last_spec = -1;
    char *save = NULL;
    for (char *tok = args ? strtok_r(args, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        size_t klen = eq ? (size_t)(eq - tok) : strlen(tok);
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)(klen < sizeof(key) ? klen : sizeof(key) - 1), tok);
        if (eq && in_list(p->keys, key)) {
            for (int k = 0; k < a.n; k++)
                if (strcmp(a.keys[k], key) == 0 && !in_list(p->multi_keys, key)) {
                    snprintf(err, errlen, "policy '%s': key '%s' given twice", p->name, key);
                    return GCOMP_INVALID;
                }
            if (a.n == GP_MAX_ARGS) {
                snprintf(err, errlen, "policy '%s': more than %d keys", p->name, GP_MAX_ARGS);
                return GCOMP_INVALID;
            }
            snprintf(store[a.n], sizeof(store[a.n]), "%s", eq + 1);
            a.vals[a.n] = store[a.n];
            last_spec = in_list(p->spec_keys, key) ? a.n : -1;
            /* Point the key at the policy's own table: it outlives this function. */
            for (const char *const *k = p->keys; *k; k++)
                if (strcmp(*k, key) == 0)
                    a.keys[a.n] = *k;
            a.n++;
            continue;
        }
        if (last_spec >= 0) {
            if (continue_spec(store[last_spec], sizeof(store[last_spec]), tok)) {
                snprintf(err, errlen, "policy '%s': %s spec too long", p->name, a.keys[last_spec]);
                return GCOMP_INVALID;
            }
            continue;
        }
        size_t n = (size_t)snprintf(err, errlen, "policy '%s' has no key '%s'; valid keys: ",
                                    p->name, key);
        for (const char *const *k = p->keys; *k && n < errlen; k++)
            n += (size_t)snprintf(err + n, errlen - n, "%s%s", k == p->keys ? "" : ", ", *k);
        return GCOMP_INVALID;
    }
    gp_instance *inst = calloc(1, sizeof(*inst));
    if (!inst)
        return GCOMP_NOMEM;
    int rc = p->create(&a, env ? env : &one, &inst->state, err, errlen);
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

int gp_arg_double(const char *policy, const char *key, const char *val, double min, double max,
                  double *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < min || v > max) {
        snprintf(err, errlen, "policy '%s': %s must be a number in %g..%g, not '%s'", policy, key,
                 min, max, val);
        return GCOMP_INVALID;
    }
    *out = v;
    return GCOMP_OK;
}

int gp_arg_long(const char *policy, const char *key, const char *val, long min, long max,
                long *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < min || v > max) {
        snprintf(err, errlen, "policy '%s': %s must be an integer in %ld..%ld, not '%s'", policy,
                 key, min, max, val);
        return GCOMP_INVALID;
    }
    *out = v;
    return GCOMP_OK;
}

int gp_spec_with(const gk_spec *in, const char *key, double value, gk_spec *out)
{
    const gk_codec *c = in->codec;
    for (int i = 0; i < c->nparams; i++) {
        const gk_param_desc *d = &c->params[i];
        if (strcmp(d->key, key) != 0)
            continue;
        if (!(value >= d->min && value <= d->max) || (d->integer && value != floor(value)))
            return GCOMP_INVALID;
        *out = *in;
        out->v[i] = value;
        return GCOMP_OK;
    }
    return GCOMP_INVALID;
}

double gp_payload_mean(const gk_spec *spec, const gk_layer *layer, int phase)
{
    return 0.5 * ((double)gk_payload_bytes(spec, layer, phase, 0) +
                  (double)gk_payload_bytes(spec, layer, phase, 1));
}
