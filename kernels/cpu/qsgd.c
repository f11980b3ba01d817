/*
 * qsgd: the optimised CPU implementation (semantics in ref/qsgd.c). Per bucket: one
 * l2 pass, the bucket's uniforms drawn into a small buffer (the generator is
 * sequential), then one branch-free pass that writes the int8 levels and takes the
 * decoded value off x (the residual, done here instead of in decode).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

#define QSGD_CHUNK 256

static int qsgd_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    uint8_t *norms = send;
    int8_t *q = (int8_t *)((uint8_t *)send + 4 * nb);
    const float fs = (float)s;
    float u[QSGD_CHUNK];
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float norm = (float)sqrt(gk_sum_sq(x + lo, hi - lo));
        gk_store_f32(norms + 4 * k, norm);
        float scale = norm / fs; /* gk_qsgd_value's norm / s */
        for (size_t c = lo; c < hi; c += QSGD_CHUNK) {
            size_t len = hi - c < QSGD_CHUNK ? hi - c : QSGD_CHUNK;
            for (size_t j = 0; j < len; j++)
                u[j] = gk_rng_uniform(&rng);
            if (norm == 0.0f) {
                memset(q + c, 0, len);
                continue;
            }
            for (size_t j = 0; j < len; j++) {
                float v = x[c + j];
                float t = floorf(fs * fabsf(v) / norm + u[j]);
                t = t > fs ? fs : t;
                float sq = v < 0.0f ? -t : t;
                q[c + j] = (int8_t)sq;
                x[c + j] = v - scale * sq;
            }
        }
    }
    *bytes = gk_qsgd_bytes(d, B);
    return GCOMP_OK;
}

static int qsgd_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    if (gk_check_gather(call, bytes, nrecv, gk_qsgd_bytes(d, B)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        for (size_t k = 0; k < nb; k++) {
            float norm = gk_load_f32((const uint8_t *)recv[w] + 4 * k);
            if (!isfinite(norm) || norm < 0.0f)
                return GCOMP_PROTOCOL;
        }
    memset(out, 0, d * sizeof(float));
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        const int8_t *q = (const int8_t *)(b + 4 * nb);
        for (size_t k = 0; k < nb; k++) {
            size_t lo = k * B, hi = lo + B < d ? lo + B : d;
            float scale = gk_load_f32(b + 4 * k) / (float)s;
            for (size_t i = lo; i < hi; i++)
                out[i] += scale * (float)q[i];
        }
    }
    float inv = 1.0f / (float)nrecv;
    for (size_t i = 0; i < d; i++)
        out[i] *= inv;
    return GCOMP_OK;
}

const gk_codec_impl gk_qsgd_cpu = {.encode = qsgd_cpu_encode, .decode = qsgd_cpu_decode};
