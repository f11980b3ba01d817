/*
 * roundtrip.c: compress and reconstruct one layer locally, as if it were the only node
 * (W = 1), with a state of its own: what the codec would send and what it would give
 * back, without an exchange. Policies use it to measure compression gain (GraVAC) and
 * encode/decode cost (perfmodel). Temporaries come from the caller's scratch arena when
 * it has one.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "gcomp.h"

int gk_codec_roundtrip(const gk_spec *spec, const gk_layer *layer, const float *in, float *out,
                       uint64_t seed, uint64_t step, size_t *bytes, const gk_exec *exec)
{
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl = gk_codec_impl_of(c, exec ? exec->backend : GK_BACKEND_CPU);
    int nph = gk_spec_nphases(spec), rc = GCOMP_OK;
    if (!impl)
        return GCOMP_NOT_BUILT;
    void *state = NULL;
    size_t maxb = 0, sent = 0;
    for (int p = 0; p < nph; p++) {
        size_t m = gk_payload_bytes(spec, layer, p, step);
        maxb = m > maxb ? m : maxb;
    }
    gk_call base = {.spec = spec, .layer = layer, .nodes = 1, .node = 0, .step = step,
                    .seed = seed, .exec = exec};
    float *x = gk_scratch_get(&base, layer->numel * sizeof(float));
    void *buf = gk_scratch_get(&base, maxb ? maxb : 1);
    if (!x || !buf) {
        rc = GCOMP_NOMEM;
        goto out;
    }
    memcpy(x, in, layer->numel * sizeof(float));
    if (c->state_new && (rc = c->state_new(spec, layer, &state)))
        goto out;
    for (int p = 0; p < nph && !rc; p++) {
        gk_call call = base;
        call.state = state;
        call.phase = p;
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
    if (x)
        gk_scratch_put(&base, x);
    if (buf)
        gk_scratch_put(&base, buf);
    return rc;
}
