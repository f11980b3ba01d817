/*
 * levels.h: helpers shared by the policies that move one codec parameter per layer
 * (accordion, adaqs): the codec spec and the parameter it moves (by default the codec's
 * compression knob), and a map from layer id to per-layer state that keeps insertion
 * order (so that saving and iterating are deterministic).
 */
#ifndef GP_LEVELS_H
#define GP_LEVELS_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* The codec's description of a parameter; NULL when the codec has no such key. */
const gk_param_desc *gp_levels_param(const gk_codec *c, const char *key);

/* Parse a policy's codec spec into *codec and settle the parameter it moves (param_key
   NULL: the codec's compression knob, gk_codec.knob) into param[paramlen]. Errors name
   the policy and the key (a codec without a knob needs param=). */
int gp_levels_codec(const char *policy, const char *codec_text, const char *param_key,
                    gk_spec *codec, char *param, size_t paramlen, char *err, size_t errlen);

/* Parse the value of a policy key that sets the parameter (low=2, start=0.01...): a
   number the codec accepts for it. Errors name the policy, the key and the range. */
int gp_levels_value(const char *policy, const char *key, const char *val, const gk_spec *codec,
                    const char *param, double *out, char *err, size_t errlen);

/* Per-layer state by layer id (gk_layer.id), in the order the layers were added.
   Finding is read-only (several threads may find at once); adding is not. */
typedef struct gp_lmap {
    size_t n, cap;    /* items[0 .. n-1], ids[0 .. n-1]: insertion order; cap allocated */
    uint64_t *ids;    /* the layer ids (gk_layer.id) */
    void **items;     /* the per-layer states, owned by the map */
    size_t hcap;      /* hash slots, a power of two (0: none yet) */
    uint32_t *slots;  /* index + 1 into items; 0 = empty slot */
} gp_lmap;

/* The item of a layer id; NULL when absent. */
void *gp_lmap_find(const gp_lmap *m, uint64_t id);
/* Add an item for an id that is not in the map yet. GCOMP_NOMEM on failure (the map is
   unchanged and the item is not owned by it). */
int gp_lmap_add(gp_lmap *m, uint64_t id, void *item);
/* Free every item with free_item (may be NULL) and empty the map. */
void gp_lmap_clear(gp_lmap *m, void (*free_item)(void *));

#endif
