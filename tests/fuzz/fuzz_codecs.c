/*
 * fuzz_codecs: every codec's payload decoder on bytes from other nodes. The input
 * (codec_case.h) chooses a codec of the registry, its spec, the layer's shape, the node
 * count, the phase and the payload; decode() of the reference and of the implementation
 * the engine runs (gk_codec_impl_of) both consume it, each with its own fresh state.
 *
 * Checked on every input (a failed check aborts, as libFuzzer expects):
 *  - both implementations return the same status: the shared validators (kernels/quant.h,
 *    kernels/sparse.c, kernels/lowrank.h) make them refuse exactly the same payloads;
 *  - a decode succeeds if and only if the payload passes its format's check (the table
 *    below): none returns success on a payload that does not validate;
 *  - no decode writes past the layer in out or x (guard words after each buffer; a
 *    sanitized build also catches reads past every payload segment, which are allocated
 *    at their exact size).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_case.h"
#include "gcomp.h"
#include "lowrank.h"
#include "quant.h"
#include "sparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- each allgather format's check of W received segments ---- */

typedef int (*fz_check)(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                        const size_t *bytes, int nrecv);

static int check_sparse_k(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                          const size_t *bytes, int nrecv)
{
    return gk_sparse_check(call, recv, bytes, nrecv, gk_sparse_spec_k(&fc->spec, &fc->layer),
                           NULL);
}

static int check_sparse_any(const fz_codec_call *fc, const gk_call *call,
                            const void *const *recv, const size_t *bytes, int nrecv)
{
    return gk_sparse_check(call, recv, bytes, nrecv, fc->layer.numel, NULL);
}

static int check_signsgd(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                         const size_t *bytes, int nrecv)
{
    (void)fc;
    return gk_signsgd_check(call, recv, bytes, nrecv);
}

static int check_signnorm(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                          const size_t *bytes, int nrecv)
{
    return gk_scaled_check(call, recv, bytes, nrecv, gk_signnorm_bytes(fc->layer.numel));
}

static int check_onebit(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                        const size_t *bytes, int nrecv)
{
    (void)fc;
    return gk_onebit_check(call, recv, bytes, nrecv);
}

static int check_qsgd(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                      const size_t *bytes, int nrecv)
{
    return gk_qsgd_check(call, recv, bytes, nrecv, (size_t)fc->spec.v[GK_QSGD_BUCKET]);
}

static int check_terngrad(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                          const size_t *bytes, int nrecv)
{
    return gk_scaled_check(call, recv, bytes, nrecv, gk_terngrad_bytes(fc->layer.numel));
}

static int check_maxmin(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                        const size_t *bytes, int nrecv)
{
    return gk_maxmin_check(call, recv, bytes, nrecv, (size_t)fc->spec.v[GK_MAXMIN_BUCKET],
                           (int)fc->spec.v[GK_MAXMIN_BITS]);
}

/* An allreduce result: the engine hands over exactly max_bytes, any content is valid. */
static int check_allreduce(const fz_codec_call *fc, const gk_call *call,
                           const void *const *recv, const size_t *bytes, int nrecv)
{
    (void)call;
    (void)recv;
    return nrecv == 1 && bytes[0] == fc->max_bytes ? GCOMP_OK : GCOMP_PROTOCOL;
}

/* An allreduced low-rank factor: exactly max_bytes of finite floats (kernels/lowrank.h). */
static int check_lowrank(const fz_codec_call *fc, const gk_call *call, const void *const *recv,
                         const size_t *bytes, int nrecv)
{
    (void)call;
    return gk_lowrank_check(recv, bytes, nrecv, fc->max_bytes / sizeof(float));
}

/* Codecs whose payloads are checked beyond their size; an allgather codec must be here. */
static const struct {
    const char *codec;
    fz_check check;
} fz_checks[] = {
    {"topk", check_sparse_k},        {"mstopk", check_sparse_k},
    {"dgc", check_sparse_any},       {"redsync", check_sparse_any},
    {"sidco", check_sparse_any},     {"threshold", check_sparse_any},
    {"signsgd", check_signsgd},      {"signnorm", check_signnorm},
    {"onebit", check_onebit},        {"qsgd", check_qsgd},
    {"terngrad", check_terngrad},    {"maxmin", check_maxmin},
    {"powersgd", check_lowrank},     {"powersgd_unbiased", check_lowrank},
};

static fz_check check_of(const fz_codec_call *fc)
{
    for (size_t i = 0; i < sizeof(fz_checks) / sizeof(fz_checks[0]); i++)
        if (strcmp(fz_checks[i].codec, fc->spec.codec->name) == 0)
            return fz_checks[i].check;
    if (fc->coll != GK_COLL_ALLGATHER)
        return check_allreduce;
    fprintf(stderr, "fuzz_codecs: no payload check known for allgather codec '%s': add its "
                    "format's check to fz_checks\n", fc->spec.codec->name);
    abort();
}

/* ---- buffers with guard words ---- */

enum { GUARD = 16 };
static const uint32_t GUARD_WORD = 0xdeadbeefu;

static float *guarded_new(size_t numel, float fill)
{
    float *b = malloc((numel + GUARD) * sizeof(float));
    if (!b)
        abort();
    for (size_t i = 0; i < numel; i++)
        b[i] = fill * (float)((int)(i % 7) - 3);
    for (size_t i = numel; i < numel + GUARD; i++)
        memcpy(&b[i], &GUARD_WORD, 4);
    return b;
}

static int guarded_intact(const float *b, size_t numel)
{
    for (size_t i = numel; i < numel + GUARD; i++)
        if (memcmp(&b[i], &GUARD_WORD, 4) != 0)
            return 0;
    return 1;
}

static void fail(const fz_codec_call *fc, const char *what)
{
    char spec[512];
    gk_spec_format(&fc->spec, spec, sizeof(spec));
    fprintf(stderr, "fuzz_codecs: %s: %s, layer %zux%zu (%zu elements, %d dims), W=%d node %d "
                    "phase %d step %llu\n", spec, what, fc->layer.rows, fc->layer.cols,
            fc->layer.numel, fc->layer.ndim, fc->nodes, fc->node, fc->phase,
            (unsigned long long)fc->step);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader rd = {data, size};
    fz_codec_case hdr;
    fz_codec_call fc;
    if (!fz_case_read(&rd, &hdr) || fz_case_resolve(&hdr, &fc))
        return 0;
    const gk_codec *codec = fc.spec.codec;
    size_t numel = fc.layer.numel;

    /* The received segments, each allocated at exactly its size. */
    int nrecv = fc.coll == GK_COLL_ALLGATHER ? fc.nodes : 1;
    void *recv[FZ_MAX_NODES];
    size_t bytes[FZ_MAX_NODES];
    for (int w = 0; w < nrecv; w++) {
        bytes[w] = fc.coll == GK_COLL_ALLGATHER ? fz_take_u16(&rd) % (fc.max_bytes + 17)
                                                : fc.max_bytes;
        recv[w] = malloc(bytes[w]);
        if (!recv[w] && bytes[w])
            abort();
        fz_take(&rd, recv[w], bytes[w]);
    }

    const gk_codec_impl *impl[2];
    int nimpl = fz_impls(codec, impl), rc[2];
    for (int k = 0; k < nimpl; k++) {
        void *state = NULL;
        if (codec->state_new && codec->state_new(&fc.spec, &fc.layer, &state))
            fail(&fc, "state_new failed");
        float *x = guarded_new(numel, 0.5f), *out = guarded_new(numel, 0.0f);
        gk_call call = fz_call(&fc, state);
        rc[k] = impl[k]->decode(&call, x, (const void *const *)recv, bytes, nrecv, out);
        if (!guarded_intact(x, numel) || !guarded_intact(out, numel))
            fail(&fc, k ? "the engine's decode wrote past the layer"
                        : "the reference decode wrote past the layer");
        free(x);
        free(out);
        if (codec->state_free)
            codec->state_free(state);
    }
    for (int k = 1; k < nimpl; k++)
        if (rc[k] != rc[0]) {
            char what[128];
            snprintf(what, sizeof(what), "reference decode returned %d, the engine's %d", rc[0],
                     rc[k]);
            fail(&fc, what);
        }
    gk_call call = fz_call(&fc, NULL);
    int valid = check_of(&fc)(&fc, &call, (const void *const *)recv, bytes, nrecv) == GCOMP_OK;
    if (valid != (rc[0] == GCOMP_OK)) {
        char what[128];
        snprintf(what, sizeof(what), "decode returned %d on a payload its check %s", rc[0],
                 valid ? "accepts" : "refuses");
        fail(&fc, what);
    }
    for (int w = 0; w < nrecv; w++)
        free(recv[w]);
    return 0;
}
