/*
 * roundtrip.c: compress and reconstruct one layer locally, as if it were the only node
 * (W = 1), with a state of its own: what the codec would send and what it would give
 * back, without an exchange. Policies use it to measure compression gain (GraVAC) and
 * encode/decode cost (perfmodel).
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "gcomp.h"

int gk_codec_roundtrip(const gk_spec *spec, const gk_layer *layer, const float *in, float *out,
                       uint64_t seed, uint64_t step, size_t *bytes)
{
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c);
    int nph = c->nphases ? c->nphases(spec) : 1, rc = GCOMP_OK;
    void *state = NULL;
    float *x = malloc(layer->numel * sizeof(float));
    size_t maxb = 0, sent = 0;
    for (int p = 0; p < nph; p++) {
        size_t m = c->max_bytes(spec, layer, p);
        maxb = m > maxb ? m : maxb;
    }
    void *buf = malloc(maxb ? maxb : 1);
    if (!x || !buf) {
        rc = GCOMP_NOMEM;
        goto out;
    }
    memcpy(x, in, layer->numel * sizeof(float));
    if (c->state_new && (rc = c->state_new(spec, layer, &state)))
        goto out;
    for (int p = 0; p < nph && !rc; p++) {
        gk_call call = {.spec = spec, .layer = layer, .state = state, .phase = p, .nodes = 1,
                        .node = 0, .step = step, .seed = seed};
        size_t n = 0;
        rc = impl->encode(&call, x, buf, &n);
        if (!rc) {
            const void *recv = buf;
            rc = impl->decode(&call, x, &recv, &n, 1, out);
        }
        sent += n;
    }
    if (!rc && bytes)
        *bytes = sent;
out:
    if (state && c->state_free)
        c->state_free(state);
    free(x);
    free(buf);
    return rc;
}
