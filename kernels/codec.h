/*
 * codec.h: the codec interface. A codec compresses one layer of a node's gradient,
 * takes part in one or more exchanges ("phases"), and reconstructs the mean over the
 * nodes. The registry (kernels/registry.c) lists every codec in one array.
 *
 * How the engine drives a codec, per bucket and step (daemon/engine.c):
 *
 *  - Layers the engine sends dense (fewer than 2 dimensions, fewer than min_elements
 *    elements, or compresses() says no) never reach the codec.
 *  - For each compressed layer the engine owns a float buffer x[numel] that persists
 *    across steps. At the start of a step: x = (ef ? x : 0) + g, where g is this node's
 *    contribution scaled so that the job's mean is (1/W) sum_w g_w (W = nodes). Input
 *    is checked for non-finite values before it is added: x never holds NaN/Inf.
 *  - For phase p in 0..nphases-1, the engine calls encode() for each layer of the
 *    group (all layers of the bucket sharing one spec), each writing into its own
 *    segment of one send buffer, then runs ONE collective for the whole group:
 *      GK_COLL_ALLREDUCE_F32: segments are float32 arrays of exactly max_bytes; the
 *        engine sums them elementwise over the nodes; decode() gets nrecv = 1 and
 *        recv[0] = the summed segment.
 *      GK_COLL_ALLREDUCE_F16 / _BF16: same with IEEE half / bfloat16 elements (sum
 *        computed in float32 and rounded per element).
 *      GK_COLL_ALLGATHER: segments are opaque bytes of any size <= max_bytes; decode()
 *        gets nrecv = W, recv[w] and bytes[w] = exactly the bytes node w's encode()
 *        wrote (so a payload needs no count header of its own).
 *    then calls decode() for each layer. Allgather segments, sent or received, start
 *    at 8-byte aligned addresses; allreduce segments are packed one after the other,
 *    aligned to their element size (4 or 2 bytes).
 *  - Between steps the engine changes x only by adding g (or, with ef = 0, by zeroing
 *    it after the step). When a layer's spec changes to another codec, or the layer
 *    stops being compressed, x is zeroed and the state freed and made anew.
 *  - After the last phase's decode: out[numel] holds the reconstructed mean over the
 *    nodes, and x holds the new error-feedback residual (x minus what this node's
 *    payload represents, or minus the global reconstruction where the algorithm says so,
 *    e.g. PowerSGD). With ef = 0 the engine discards x afterwards.
 *  - Everything a codec draws at random that must match across nodes comes from
 *    gk_rng seeded with (call->seed, call->layer->id, call->step).
 *
 * Threads: codec functions are called from the engine thread only; they keep no global
 * mutable state. State per layer and node lives in the object made by state_new().
 */
#ifndef GK_CODEC_H
#define GK_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum gk_coll {
    GK_COLL_ALLREDUCE_F32 = 0,
    GK_COLL_ALLREDUCE_F16 = 1,
    GK_COLL_ALLREDUCE_BF16 = 2,
    GK_COLL_ALLGATHER = 3,
} gk_coll;

/* One key a codec accepts in its spec ("rank", "density"...). */
typedef struct gk_param_desc {
    const char *key;  /* never NULL */
    double def;       /* default value */
    double min, max;  /* accepted range, inclusive */
    bool integer;     /* the value must be an integer */
    const char *help; /* one line for error messages and --help; never NULL */
} gk_param_desc;

#define GK_MAX_PARAMS 12

struct gk_codec;

/*
 * A parsed codec spec, e.g. "topk:density=0.01". v[i] is the value of
 * codec->params[i] (its default when the spec does not set it).
 */
typedef struct gk_spec {
    const struct gk_codec *codec;
    double v[GK_MAX_PARAMS];
    bool ef;             /* common key ef=0|1; default codec->ef_default */
    long min_elements;   /* common key: layers with fewer elements go dense; default 1024 */
} gk_spec;

/* One layer as a codec sees it. */
typedef struct gk_layer {
    uint32_t id;  /* stable across nodes and steps: (bucket index << 16) | layer index */
    int ndim;     /* >= 1 */
    size_t rows;  /* matrix view: rows = shape[0] */
    size_t cols;  /* cols = numel / rows; a 1-D layer is rows x 1 */
    size_t numel;
} gk_layer;

/* Everything one encode/decode call needs besides the data. */
typedef struct gk_call {
    const gk_spec *spec;
    const gk_layer *layer;
    void *state;     /* from state_new(), or NULL when the codec has none */
    int phase;       /* 0 .. nphases-1 */
    int nodes;       /* W */
    int node;        /* this node, 0 .. W-1 */
    uint64_t step;   /* the bucket's step number */
    uint64_t seed;   /* the job's seed, identical on every node */
} gk_call;

/*
 * The functions that differ between implementations of one codec (scalar reference,
 * optimised CPU, CUDA). All receive host pointers here.
 */
typedef struct gk_codec_impl {
    /* Write phase call->phase's payload for x into send (at most max_bytes) and set
       *bytes to what was written. May read and update x and the state. Never NULL. */
    int (*encode)(const gk_call *call, float *x, void *send, size_t *bytes);
    /* Consume the phase's collective result (see above); on the last phase write out
       and leave the residual in x. Never NULL. */
    int (*decode)(const gk_call *call, float *x, const void *const *recv,
                  const size_t *bytes, int nrecv, float *out);
} gk_codec_impl;

typedef struct gk_codec {
    const char *name;    /* never NULL; the spec name */
    const char *summary; /* one line; never NULL */
    const gk_param_desc *params; /* nparams entries; may be NULL when nparams == 0 */
    int nparams;
    bool ef_default;     /* error feedback on by default (biased codecs) */
    bool ef_allowed;     /* false: the spec key ef=1 is refused (signsgd, powersgd_unbiased) */
    /* Number of phases for the spec. NULL means 1. */
    int (*nphases)(const gk_spec *spec);
    /* The collective of a phase. NULL means GK_COLL_ALLREDUCE_F32 for every phase. */
    gk_coll (*phase_coll)(const gk_spec *spec, int phase);
    /* Whether this layer is compressed under the spec, on top of the engine's rule
       (PowerSGD's min_compression_rate). NULL means yes. */
    bool (*compresses)(const gk_spec *spec, const gk_layer *layer);
    /* Upper bound on the bytes encode() writes for the layer in the phase; exact for
       allreduce phases. Never NULL. */
    size_t (*max_bytes)(const gk_spec *spec, const gk_layer *layer, int phase);
    /* Make the per-layer, per-node state (PowerSGD's Q, DGC's momentum...).
       NULL means the codec keeps no state. Returns 0 or a negative gcomp status. */
    int (*state_new)(const gk_spec *spec, const gk_layer *layer, void **state);
    /* Free a state from state_new(); NULL is a no-op. May be NULL if state_new is. */
    void (*state_free)(void *state);
    /* Checkpoints: write the state to f / read it back into a state state_new() made
       for the same spec and layer. Return 0 or a negative gcomp status. NULL only when
       state_new is NULL. */
    int (*state_save)(const void *state, const gk_layer *layer, FILE *f);
    int (*state_load)(void *state, const gk_layer *layer, FILE *f);
    const gk_codec_impl *ref; /* scalar reference (the test oracle); never NULL */
    const gk_codec_impl *cpu; /* optimised CPU; NULL means use ref */
} gk_codec;

/* Keys every codec accepts besides its own (parsed by gk_spec_parse). */
#define GK_COMMON_KEYS "ef, min_elements"

/* The registry: gk_codecs[0 .. gk_ncodecs-1]. */
extern const gk_codec *const gk_codecs[];
extern const int gk_ncodecs;

/* Find a codec by name; NULL if none. */
const gk_codec *gk_codec_find(const char *name);

/*
 * Parse "NAME[:key=value[,key=value...]]" into *out. Unknown names, unknown keys, bad
 * numbers and values out of range are refused with GCOMP_INVALID and a message in err
 * that lists what is valid. *out is written only on success.
 */
int gk_spec_parse(const char *text, gk_spec *out, char *err, size_t errlen);

/* The canonical spec text ("topk:density=0.01,ef=1"); returns the length snprintf
   would have written. */
int gk_spec_format(const gk_spec *spec, char *buf, size_t len);

/* The spec as JSON object members for stats: "codec":"topk","density":0.01,"ef":1.
   Returns the length snprintf would have written. */
int gk_spec_json(const gk_spec *spec, char *buf, size_t len);

/* Value of a codec parameter by key; NAN if the codec has no such key. */
double gk_spec_get(const gk_spec *spec, const char *key);

/*
 * Compress and reconstruct one layer locally as the only node (W = 1) with a fresh
 * state: out gets what the codec gives back for `in`, *bytes (if not NULL) what it
 * would send over all phases. For policies (compression gain, codec timing). Returns 0
 * or a negative gcomp status.
 */
int gk_codec_roundtrip(const gk_spec *spec, const gk_layer *layer, const float *in, float *out,
                       uint64_t seed, uint64_t step, size_t *bytes);

/* The implementation the engine runs: cpu when present, else ref. */
static inline const gk_codec_impl *gk_codec_impl_of(const gk_codec *c)
{
    return c->cpu ? c->cpu : c->ref;
}

#endif /* GK_CODEC_H */
