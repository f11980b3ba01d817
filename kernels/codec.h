/*
 * codec.h: the codec interface. A codec compresses one layer of a node's gradient,
 * takes part in one or more exchanges ("phases"), and reconstructs the mean over the
 * nodes. The registry (kernels/registry.c) lists every codec in one array.
 *
 * How the engine drives a codec, per bucket and step (daemon/pipeline.c):
 *
 *  - Layers the engine sends dense (fewer than 2 dimensions, fewer than min_elements
 *    elements, or compresses() says no) never reach the codec.
 *  - For each compressed layer the engine owns a float buffer x[numel] that persists
 *    across steps. At the start of a step: x = (ef ? x : 0) + g, where g is this node's
 *    contribution scaled so that the job's mean is (1/W) sum_w g_w (W = nodes). Input
 *    is checked for non-finite values before it is added: x never holds NaN/Inf.
 *  - For phase p in 0..nphases-1, the engine calls encode() for each layer of the
 *    group (all layers of the bucket with the same codec and number of phases, each
 *    with its own spec: L-GreCo's ranks, Accordion's levels), each writing into its
 *    own segment of one send buffer, then runs ONE collective for the whole group:
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
 *    it after the step). When a layer's spec changes, gk_layer_respec() says what
 *    happens to x and the state.
 *  - After the last phase's decode: out[numel] holds the reconstructed mean over the
 *    nodes, and x holds the new error-feedback residual (x minus what this node's
 *    payload represents, or minus the global reconstruction where the algorithm says so,
 *    e.g. PowerSGD). With ef = 0 the engine discards x afterwards.
 *  - Everything a codec draws at random that must match across nodes comes from
 *    gk_rng seeded with (call->seed, call->layer->id, call->step).
 *
 * Sizes: gk_payload_bytes(spec, layer, phase, step) is the most a phase's encode writes
 * (exactly what it writes for allreduce phases, and for allgather phases whose codec
 * says fixed_bytes); it may depend on the step (powersgd_unbiased alternates P and Q).
 * When every layer of an allgather group has a fixed size the engine skips the
 * exchange of sizes.
 *
 * Threads and memory: the engine calls encode/decode for different layers at once on
 * its worker threads, each call with an execution context (gk_call.exec): the backend
 * whose implementation runs, the memory space of x, send, recv and out, the worker's
 * scratch arena (temporaries; everything taken from it is released after the call) and,
 * for CUDA, the stream. Codec functions keep no global mutable state; state per layer
 * and node lives in the object made by state_new(), touched by one call at a time.
 */
#ifndef GK_CODEC_H
#define GK_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/arena.h"
#include "base/binio.h"

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
    uint64_t id;  /* unique in the job, the same on every node and step: (the bucket's
                     number, the coordinator's hash of its name) << 32 | the layer's
                     index in its bucket */
    int ndim;     /* >= 1 */
    size_t rows;  /* matrix view: rows = shape[0] */
    size_t cols;  /* cols = numel / rows; a 1-D layer is rows x 1 */
    size_t numel;
} gk_layer;

/* Implementations of a codec, one slot each in gk_codec.impl. */
typedef enum gk_backend {
    GK_BACKEND_REF = 0,  /* scalar reference, the test oracle (host memory) */
    GK_BACKEND_CPU = 1,  /* optimised CPU (host memory) */
    GK_BACKEND_CUDA = 2, /* CUDA kernels (device memory, on exec->stream) */
    GK_NBACKENDS = 3,
} gk_backend;

/* Where a buffer lives. */
typedef enum gk_mem {
    GK_MEM_HOST = 0,
    GK_MEM_DEVICE = 1,
} gk_mem;

/* How and where one call runs. */
typedef struct gk_exec {
    gk_backend backend;
    gk_mem mem;          /* of x, send, recv and out */
    gk_arena *scratch;   /* the calling thread's scratch; NULL: malloc (gk_scratch_get) */
    void *stream;        /* cudaStream_t for GK_BACKEND_CUDA; NULL otherwise */
} gk_exec;

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
    const gk_exec *exec; /* NULL: host memory, no scratch arena */
} gk_call;

/* Temporary memory for one call: from the caller's arena when it has one (released by
   the caller after the call; gk_scratch_put is then a no-op), else malloc'd (freed by
   gk_scratch_put). NULL when out of memory. */
void *gk_scratch_get(const gk_call *call, size_t bytes);
void gk_scratch_put(const gk_call *call, void *p);

/*
 * The functions that differ between implementations of one codec (scalar reference,
 * optimised CPU, CUDA). Pointers are in the memory space of call->exec.
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
    /* The parameter that sets how much the codec compresses (rank, density, bits...),
       for policies that tune it; NULL: none. knob_more is +1 when a larger value
       compresses more, -1 when a smaller one does. Read through gk_spec_knob(). */
    const char *knob;
    int knob_more;
    /* Number of phases for the spec. NULL means 1. */
    int (*nphases)(const gk_spec *spec);
    /* The collective of a phase. NULL means GK_COLL_ALLREDUCE_F32 for every phase. */
    gk_coll (*phase_coll)(const gk_spec *spec, int phase);
    /* Whether this layer is compressed under the spec, on top of the engine's rule
       (PowerSGD's min_compression_rate). NULL means yes. Ask gk_spec_compresses(). */
    bool (*compresses)(const gk_spec *spec, const gk_layer *layer);
    /* Upper bound on the bytes encode() writes for the layer in the phase at the step;
       exact for allreduce phases. Never NULL. Ask gk_payload_bytes(). */
    size_t (*max_bytes)(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step);
    /* Allgather phases: true when encode() always writes exactly max_bytes (so the
       engine need not exchange sizes). NULL means variable. */
    bool (*fixed_bytes)(const gk_spec *spec, int phase);
    /* Make the per-layer, per-node state (PowerSGD's Q, DGC's momentum...).
       NULL means the codec keeps no state. Returns 0 or a negative gcomp status. */
    int (*state_new)(const gk_spec *spec, const gk_layer *layer, void **state);
    /* Free a state from state_new(); NULL is a no-op. May be NULL if state_new is. */
    void (*state_free)(void *state);
    /* Whether a state made for `from` serves `to` as it is (same codec, other
       parameters; DGC's momentum and residual do not depend on the density). NULL: a
       parameter change makes the state anew. */
    bool (*state_keeps)(const gk_spec *from, const gk_spec *to);
    /* Checkpoints: write the state field by field (base/binio.h, starting with a
       record header of the codec's own) / read it back into a state state_new() made
       for the same spec and layer. Return 0 or a negative gcomp status (the reader's
       err says why); a refused state leaves the state as it was. NULL only when
       state_new is NULL. */
    int (*state_save)(const void *state, const gk_layer *layer, gk_writer *w);
    int (*state_load)(void *state, const gk_layer *layer, gk_reader *r);
    /* Implementations by backend: [GK_BACKEND_REF] never NULL; the others may be NULL
       (not written, or not built in). Ask gk_codec_impl_of(). */
    const gk_codec_impl *impl[GK_NBACKENDS];
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

/* The codec's keys with ranges and defaults ("rank (1..1024, default 1: ...), ..., ef
   (0|1, default 1), min_elements (>= 0, default 1024)") into buf, for --help. */
void gk_codec_keys_help(const gk_codec *c, char *buf, size_t len);

/* Value of a codec parameter by key; NAN if the codec has no such key. */
double gk_spec_get(const gk_spec *spec, const char *key);

/* Whether the spec compresses the layer: at least 2 dimensions, at least min_elements
   elements, and the codec's own rule. The one answer the engine and every policy use. */
bool gk_spec_compresses(const gk_spec *spec, const gk_layer *layer);

/* The spec's compression knob: its index in spec->v (and *value, *more as in
   gk_codec.knob_more; either may be NULL), or -1 when the codec has none. */
int gk_spec_knob(const gk_spec *spec, double *value, int *more);

/* Phases of the spec, and the collective of one. */
int gk_spec_nphases(const gk_spec *spec);
gk_coll gk_spec_coll(const gk_spec *spec, int phase);

/* The most bytes encode() writes for the layer in the phase at the step, and whether
   it always writes exactly that many (allreduce phases always do). */
size_t gk_payload_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step);
bool gk_payload_fixed(const gk_spec *spec, int phase);
/* fixed_bytes of the codecs whose every allgather payload is max_bytes long. */
bool gk_payload_always_fixed(const gk_spec *spec, int phase);

/*
 * A layer's codec state when its spec changes from old (old_comp: it was compressed;
 * old is ignored when it was not) to now (comp: it is). Codec or compression changed:
 * state freed and x zeroed (the residual of another codec means nothing to this one);
 * same codec, other parameters: the state kept when state_keeps() says so, else made
 * anew, and x kept; then x (numel floats, zeroed) and the state are made if missing.
 * A layer that is not compressed keeps neither. Returns 0 or GCOMP_NOMEM (or the
 * codec's state_new error).
 */
int gk_layer_respec(const gk_spec *old, bool old_comp, const gk_spec *now, bool comp,
                    const gk_layer *layer, void **state, float **x);

/*
 * Compress and reconstruct one layer locally as the only node (W = 1) with a fresh
 * state: out gets what the codec gives back for `in`, *bytes (if not NULL) what it
 * would send over all phases. For policies (compression gain, codec timing). exec may
 * be NULL (host, malloc'd temporaries). Returns 0 or a negative gcomp status.
 */
int gk_codec_roundtrip(const gk_spec *spec, const gk_layer *layer, const float *in, float *out,
                       uint64_t seed, uint64_t step, size_t *bytes, const gk_exec *exec);

/* The implementation of a backend: impl[backend], or for GK_BACKEND_CPU the reference
   when there is no optimised one; NULL when the backend has none (CUDA not built). */
static inline const gk_codec_impl *gk_codec_impl_of(const gk_codec *c, gk_backend backend)
{
    if (c->impl[backend])
        return c->impl[backend];
    return backend == GK_BACKEND_CPU ? c->impl[GK_BACKEND_REF] : NULL;
}

#endif /* GK_CODEC_H */
