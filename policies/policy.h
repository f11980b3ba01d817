/*
 * policy.h: the policy interface. A policy decides, per layer and step, which codec
 * spec the layer uses. The registry (policies/registry.c) lists every policy in one
 * array. Policies run on the engine thread of every node. Every node must decide the
 * same, so a policy may only use what is identical on every node: its arguments, the
 * steps and the statistics the engine hands to observe() (averaged over the nodes).
 *
 * Per bucket step the engine calls (daemon/policy_host.c):
 *  1. decide() for every layer: the spec of this step (and why, for the decision log);
 *  2. collect() for every layer, on each node's own data: nstats numbers per layer;
 *  3. the exchange; then the engine averages the collected numbers over the nodes;
 *  4. observe() with those averages, the bucket step's timing and the trainers' hints.
 * Several bucket steps are in flight at once, so the engine orders the calls that read
 * or change the policy's state the same way on every node: decide() of a bucket step
 * when the negotiation decides to run it, observe() of a finished one when the
 * negotiation says every node has its averages (before the decides of that decision);
 * so a decision made in observe() applies from the first decide() after it, the same
 * bucket step on every node. collect() runs on the engine's worker threads, after its
 * decide() and before any later decide(), observe(), save(), load(), advice() or
 * query(): those never run at the same time as a collect().
 *
 * Specs: "NAME[:key=value,...]". A key that is not the policy's own continues the
 * spec-valued key before it (codec, override...): "static:codec=maxmin:bits=4,bucket=512,
 * start_iter=10" gives codec "maxmin:bits=4,bucket=512" and start_iter 10. A bare codec
 * spec ("topk:density=0.01") is shorthand for "static:codec=topk:density=0.01".
 */
#ifndef GP_POLICY_H
#define GP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "codec.h"

/* A layer as a policy sees it. */
typedef struct gp_layer {
    const char *bucket;
    const char *name;
    int index;        /* position in its bucket */
    gk_layer geom;    /* geom.id is stable across nodes and steps */
} gp_layer;

/* The policy's own keys and their values, as parsed from the spec. */
#define GP_MAX_ARGS 16
typedef struct gp_args {
    int n;
    const char *keys[GP_MAX_ARGS];
    const char *vals[GP_MAX_ARGS];
} gp_args;

/* The trainers' latest hints (GCOMP_HINT_*), identical on every node: samples summed
   over the job's trainers, lr averaged over the nodes (for one step after a change it
   can sit between the old and new values if nodes got the hint at different steps),
   epochs and step the floor of the nodes' mean. A field is valid when its has_ flag is
   set. */
typedef struct gp_hints {
    bool has_lr, has_samples;
    double lr;          /* learning rate of the latest step */
    int64_t samples;    /* samples per step, all trainers of the job */
    int64_t epochs;     /* epoch ends seen */
    int64_t step;       /* step of the latest hint */
} gp_hints;

/* One finished bucket step, identical on every node. */
typedef struct gp_step_info {
    int64_t step;
    const char *bucket;
    int nlayers;
    const gp_layer *layers;    /* [nlayers] */
    const gk_spec *specs;      /* [nlayers]: the spec each layer used */
    const bool *compressed;    /* [nlayers]: whether it was compressed (engine rule) */
    const double *payload;     /* [nlayers]: payload bytes per layer, averaged over nodes */
    const double *stats;       /* [nlayers * nstats]: collect() averaged over the nodes */
    /* Times from the trainers' timeline on each node, the slowest node's: */
    double step_ms;            /* the training iteration: from the previous step's
                                  first submission (any bucket) to this step's (when
                                  the previous step is not known: between the bucket's
                                  two ready steps); 0 on the first step */
    double exchange_ms;        /* the bucket's encode + exchange + decode */
    double ready_ms;           /* the backward pass before the bucket: from the step's
                                  first submission (any bucket) to the bucket's last
                                  trainer's; -1: not known */
    double gap_ms;             /* the forward pass and optimizer before the step: from
                                  the previous step's last result to this step's first
                                  submission; -1: not known */
    int nodes;
    const gp_hints *hints;
} gp_step_info;

/* The job, and constants the engine measured on the real transport (before create()
   of a policy with uses_network; 0 otherwise)
   (identical on every node), for policies that model time (perfmodel). */
typedef struct gp_env {
    int nodes;
    int trainers;        /* in the job */
    uint64_t seed;
    double alpha_ms;     /* latency: a 4-byte allreduce's time / (nodes - 1); 0 on 1 node */
    double bw_bytes_ms;  /* bandwidth: from a 16 MiB allreduce, 2 b (p-1) / (p t); 0 on 1 node */
} gp_env;

/* Batch-size advice for the trainers (Accordion): 0 = no advice. */
typedef struct gp_advice {
    int64_t batch_size;  /* the batch size to use from now on */
    double lr_scale;     /* scale the learning rate by this (the batch size's ratio) */
    int64_t step;        /* decided at this step */
} gp_advice;

typedef struct gp_policy {
    const char *name;            /* never NULL */
    const char *summary;         /* never NULL */
    const char *const *keys;     /* the policy's own keys, NULL-terminated; never NULL */
    const char *const *spec_keys;/* those of them whose value is a codec spec (continued
                                    by later non-policy keys), NULL-terminated; may be NULL */
    const char *const *multi_keys; /* those of them that may be given more than once
                                    (overrides, candidates), NULL-terminated; may be NULL:
                                    a key given twice is refused */
    const char *keys_help;       /* every key with its default, one line for --help;
                                    never NULL */
    int nstats;                  /* numbers collect() writes per layer; 0 if none */
    bool collect_concurrent;     /* collect() may run for different layers (of one bucket
                                    or several) at the same time on worker threads: it
                                    touches only that layer's own state (made by decide())
                                    and scratch from exec. false: the engine runs collect()
                                    calls one at a time. */
    bool uses_network;           /* reads gp_env's alpha_ms / bw_bytes_ms: the engine
                                    measures the transport before create() */
    /* Make the policy's state from its arguments (keys are among `keys`). On error
       write a message naming the key to err. Never NULL. */
    int (*create)(const gp_args *args, const gp_env *env, void **state, char *err,
                  size_t errlen);
    /* Free the state; NULL is a no-op. Never NULL. */
    void (*destroy)(void *state);
    /* The spec the layer uses at `step`; when it differs from the layer's previous one,
       write one line to why (the engine logs old, new and why). Never NULL. */
    int (*decide)(void *state, const gp_layer *layer, int64_t step, gk_spec *out, char *why,
                  size_t whylen);
    /* This node's numbers for a layer: g is the node's gradient of the step (its mean
       over the node's trainers), x the error-feedback-corrected input of the codec (x ==
       g for layers sent dense); both are host memory, numel floats. stats has nstats
       slots. exec (never NULL) gives the worker's scratch arena (exec->scratch, never
       NULL; released after the call) for temporaries and gk_codec_roundtrip() (through
       gp_exec_host()). A policy that keeps per-layer state makes it in decide(), so its
       collect() may refuse a layer decide() has not seen (GCOMP_INVALID). May be NULL
       (nstats == 0). */
    int (*collect)(void *state, const gp_layer *layer, int64_t step, const float *g,
                   const float *x, double *stats, const gk_exec *exec);
    /* A bucket step finished (statistics averaged over the nodes). May be NULL. */
    int (*observe)(void *state, const gp_step_info *info);
    /* Checkpoint the state field by field (base/binio.h: a record header with the
       policy's own tag and format version first, then the arguments the state depends
       on, so a checkpoint of another spec or version is refused with r->err saying
       why) / restore it (same policy and arguments). NULL: the policy has no state
       worth keeping. Return 0 or a negative gcomp status. */
    int (*save)(void *state, gk_writer *w);
    int (*load)(void *state, gk_reader *r);
    /* The current batch-size advice. May be NULL (never advises). */
    int (*advice)(void *state, gp_advice *out);
    /* Answer a gcompctl query (e.g. "whatif --nodes 8 --bandwidth 10gbit") into out,
       human text or JSON. May be NULL (answers none: GCOMP_NOT_FOUND). */
    int (*query)(void *state, int argc, const char *const *argv, int json, char *out,
                 size_t len);
} gp_policy;

extern const gp_policy *const gp_policies[];
extern const int gp_npolicies;

/* A policy made from a spec. */
typedef struct gp_instance {
    const gp_policy *policy;
    void *state;
    char spec[512]; /* the spec as given */
} gp_instance;

/* The policy a spec names (static for a bare codec spec); NULL if none. */
const gp_policy *gp_policy_of_spec(const char *spec);

/* Parse a spec and make the policy. Errors list the valid policies, codecs or keys.
   env may be NULL (validation only: nodes = trainers = 1). */
int gp_instance_create(const char *spec, const gp_env *env, gp_instance **out, char *err,
                       size_t errlen);
/* NULL is a no-op. */
void gp_instance_destroy(gp_instance *p);

/* Helpers for policies: parse a key's value or fail with a message naming it. */
int gp_arg_double(const char *policy, const char *key, const char *val, double min, double max,
                  double *out, char *err, size_t errlen);
int gp_arg_long(const char *policy, const char *key, const char *val, long min, long max,
                long *out, char *err, size_t errlen);
/* The spec with one parameter changed (e.g. "rank" to 2); GCOMP_INVALID if the codec
   has no such key or the value is out of its range. */
int gp_spec_with(const gk_spec *in, const char *key, double value, gk_spec *out);

/* The bytes a phase of the spec sends for the layer per step on average: the mean of
   gk_payload_bytes() over two consecutive steps, for policies that predict the sizes of
   steps to come. Two steps hold every codec's pattern (powersgd_unbiased sends P and Q
   in turn; the others send the same every step; tests/unit/daemon/test_policy.c checks
   the registry for it). */
double gp_payload_mean(const gk_spec *spec, const gk_layer *layer, int phase);

/* The context for a policy's own codec runs inside collect(): the CPU implementation
   on host memory, temporaries from the scratch arena of collect()'s exec. */
static inline gk_exec gp_exec_host(const gk_exec *exec)
{
    return (gk_exec){.backend = GK_BACKEND_CPU, .mem = GK_MEM_HOST, .scratch = exec->scratch};
}

#endif
