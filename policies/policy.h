/*
 * policy.h: the policy interface. A policy decides, per layer and step, which codec
 * spec the layer uses. The registry (policies/registry.c) lists every policy in one
 * array. Policies run on the engine thread of every node and see only statistics that
 * are identical on every node, so every node decides the same.
 *
 * Specs: "NAME[:key=value,...]". For policies with a `codec` key, any key that is not
 * the policy's own is part of the codec spec: "static:codec=maxmin:bits=4,bucket=512,
 * start_iter=10" gives codec "maxmin:bits=4,bucket=512" and start_iter 10. A bare codec
 * spec ("topk:density=0.01") is shorthand for "static:codec=topk:density=0.01".
 */
#ifndef GP_POLICY_H
#define GP_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* A layer as a policy sees it. */
typedef struct gp_layer {
    const char *bucket;
    const char *name;
    gk_layer geom;
} gp_layer;

/* The policy's own keys and their values, as parsed from the spec. */
typedef struct gp_args {
    int n;
    const char *keys[16];
    const char *vals[16];
} gp_args;

typedef struct gp_policy {
    const char *name;            /* never NULL */
    const char *summary;         /* never NULL */
    const char *const *keys;     /* the policy's own keys, NULL-terminated; never NULL */
    /* Make the policy's state from its arguments (keys are among `keys`). On error write
       a message naming the key to err. Never NULL. */
    int (*create)(const gp_args *args, void **state, char *err, size_t errlen);
    /* Free the state; NULL is a no-op. Never NULL. */
    void (*destroy)(void *state);
    /* The spec the layer uses at `step`. Never NULL. */
    int (*decide)(void *state, const gp_layer *layer, int64_t step, gk_spec *out);
} gp_policy;

extern const gp_policy *const gp_policies[];
extern const int gp_npolicies;

/* A policy made from a spec. */
typedef struct gp_instance {
    const gp_policy *policy;
    void *state;
    char spec[512]; /* the spec as given */
} gp_instance;

/* Parse a spec and make the policy. Errors list the valid policies, codecs or keys. */
int gp_instance_create(const char *spec, gp_instance **out, char *err, size_t errlen);
/* NULL is a no-op. */
void gp_instance_destroy(gp_instance *p);

#endif
