#include "codec_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gk_layer codec_sim_layer(uint32_t id, int ndim, const size_t *shape)
{
    gk_layer l = {.id = id, .ndim = ndim, .rows = shape[0], .numel = 1};
    for (int i = 0; i < ndim; i++)
        l.numel *= shape[i];
    l.cols = l.numel / (l.rows ? l.rows : 1);
    return l;
}

int codec_sim_init(codec_sim *s, const char *spec, const gk_layer *layer, int nodes,
                   const gk_codec_impl *impl)
{
    char err[1024];
    memset(s, 0, sizeof(*s));
    if (gk_spec_parse(spec, &s->spec, err, sizeof(err))) {
        fprintf(stderr, "codec_sim: %s\n", err);
        return -1;
    }
    s->layer = *layer;
    s->impl = impl ? impl : gk_codec_impl_of(s->spec.codec, GK_BACKEND_CPU);
    s->nodes = nodes;
    s->seed = 42;
    s->x = calloc(nodes, sizeof(*s->x));
    s->state = calloc(nodes, sizeof(*s->state));
    s->sent = calloc(nodes, sizeof(*s->sent));
    for (int w = 0; w < nodes; w++) {
        s->x[w] = calloc(layer->numel ? layer->numel : 1, sizeof(float));
        if (s->spec.codec->state_new && s->spec.codec->state_new(&s->spec, layer, &s->state[w]))
            return -1;
    }
    return 0;
}

void codec_sim_free(codec_sim *s)
{
    for (int w = 0; w < s->nodes; w++) {
        free(s->x[w]);
        if (s->spec.codec->state_free)
            s->spec.codec->state_free(s->state[w]);
    }
    free(s->x);
    free(s->state);
    free(s->sent);
}

/* The in-memory collective: sum of W float arrays in the element type of the phase. */

int codec_sim_step(codec_sim *s, uint64_t step, const float *const *g, float **out)
{
    const gk_codec *c = s->spec.codec;
    int nphases = c->nphases ? c->nphases(&s->spec) : 1;
    int W = s->nodes, rc = 0;
    void **send = calloc(W, sizeof(*send));
    size_t *bytes = calloc(W, sizeof(*bytes));
    for (int w = 0; w < W; w++) {
        s->sent[w] = 0;
        for (size_t i = 0; i < s->layer.numel; i++)
            s->x[w][i] = (s->spec.ef ? s->x[w][i] : 0.0f) + g[w][i];
    }
    for (int p = 0; p < nphases && !rc; p++) {
        gk_coll coll = c->phase_coll ? c->phase_coll(&s->spec, p) : GK_COLL_ALLREDUCE_F32;
        size_t max = gk_payload_bytes(&s->spec, &s->layer, p, step);
        for (int w = 0; w < W && !rc; w++) {
            gk_call call = {.spec = &s->spec, .layer = &s->layer, .state = s->state[w],
                            .phase = p, .nodes = W, .node = w, .step = step, .seed = s->seed};
            send[w] = calloc(max ? max : 1, 1);
            rc = s->impl->encode(&call, s->x[w], send[w], &bytes[w]);
            if (!rc && (bytes[w] > max || (coll != GK_COLL_ALLGATHER && bytes[w] != max))) {
                fprintf(stderr, "codec_sim: %s phase %d node %d wrote %zu bytes, max %zu\n",
                        c->name, p, w, bytes[w], max);
                rc = -1;
            }
            s->sent[w] += bytes[w];
        }
        void *sum = NULL;
        if (!rc && coll != GK_COLL_ALLGATHER) {
            sum = calloc(max ? max : 1, 1);
            codec_sim_allreduce(coll, send, max, W, sum);
        }
        for (int w = 0; w < W && !rc; w++) {
            gk_call call = {.spec = &s->spec, .layer = &s->layer, .state = s->state[w],
                            .phase = p, .nodes = W, .node = w, .step = step, .seed = s->seed};
            if (coll == GK_COLL_ALLGATHER)
                rc = s->impl->decode(&call, s->x[w], (const void *const *)send, bytes, W, out[w]);
            else
                rc = s->impl->decode(&call, s->x[w], (const void *const *)&sum, &max, 1, out[w]);
        }
        free(sum);
        for (int w = 0; w < W; w++) {
            free(send[w]);
            send[w] = NULL;
        }
    }
    if (!s->spec.ef)
        for (int w = 0; w < W; w++)
            memset(s->x[w], 0, s->layer.numel * sizeof(float));
    free(send);
    free(bytes);
    return rc;
}

#include "halfconv.h"

void codec_sim_allreduce(gk_coll coll, void *const *send, size_t bytes, int nodes, void *out)
{
    if (coll == GK_COLL_ALLREDUCE_F32) {
        size_t n = bytes / sizeof(float);
        float *o = out;
        for (size_t i = 0; i < n; i++) {
            float acc = 0.0f;
            for (int w = 0; w < nodes; w++)
                acc += ((const float *)send[w])[i];
            o[i] = acc;
        }
        return;
    }
    size_t n = bytes / sizeof(uint16_t);
    uint16_t *o = out;
    for (size_t i = 0; i < n; i++) {
        float acc = 0.0f;
        for (int w = 0; w < nodes; w++) {
            uint16_t h = ((const uint16_t *)send[w])[i];
            acc += coll == GK_COLL_ALLREDUCE_F16 ? gk_half_to_float(h) : gk_bf16_to_float(h);
        }
        o[i] = coll == GK_COLL_ALLREDUCE_F16 ? gk_float_to_half(acc) : gk_float_to_bf16(acc);
    }
}
