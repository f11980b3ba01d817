/*
 * codec_sim.h: runs one step of a codec on W simulated nodes in one process, with the
 * collectives done in memory exactly as the engine does them (codec.h's contract).
 * The test harness for every codec.
 */
#ifndef CODEC_SIM_H
#define CODEC_SIM_H

#include "codec.h"

typedef struct codec_sim {
    gk_spec spec;
    gk_layer layer;
    const gk_codec_impl *impl; /* which implementation runs (ref or cpu) */
    int nodes;
    uint64_t seed;
    float **x;      /* [nodes][numel]: EF buffers, persist across steps */
    void **state;   /* [nodes]: codec states */
    size_t *sent;   /* [nodes]: payload bytes each node sent in the last step, all phases */
} codec_sim;

/* Set up W nodes for the layer; impl NULL means the engine's choice (cpu, else ref). */
int codec_sim_init(codec_sim *s, const char *spec, const gk_layer *layer, int nodes,
                   const gk_codec_impl *impl);
void codec_sim_free(codec_sim *s);

/* One step: g[w] is node w's contribution; out[w] gets node w's output. Applies EF as
   the engine does (x = (ef ? x : 0) + g). Returns 0 or the first codec error. */
int codec_sim_step(codec_sim *s, uint64_t step, const float *const *g, float **out);

/* An allreduce as the engine runs it: out = the elementwise sum of the nodes' segments
   send[0..nodes-1] of bytes each, float32 or (F16/BF16) summed in float32 and rounded. */
void codec_sim_allreduce(gk_coll coll, void *const *send, size_t bytes, int nodes, void *out);

/* A layer description from a shape. */
gk_layer codec_sim_layer(uint32_t id, int ndim, const size_t *shape);

#endif
