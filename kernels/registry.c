/*
 * registry.c: every codec gcomp knows, in one array. Add a codec here and nowhere else.
 */
#include "codec.h"

extern const gk_codec gk_codec_none;
/* Sparsifiers. */
extern const gk_codec gk_codec_topk, gk_codec_mstopk, gk_codec_dgc, gk_codec_redsync;
extern const gk_codec gk_codec_sidco, gk_codec_threshold, gk_codec_randomk, gk_codec_randomblock;
/* Low-rank, sign family, quantisers, casts. */
extern const gk_codec gk_codec_powersgd, gk_codec_powersgd_unbiased;
extern const gk_codec gk_codec_signsgd, gk_codec_signnorm, gk_codec_onebit;
extern const gk_codec gk_codec_qsgd, gk_codec_terngrad, gk_codec_maxmin;
extern const gk_codec gk_codec_fp16, gk_codec_bf16;

const gk_codec *const gk_codecs[] = {
    &gk_codec_none,
    /* Sparsifiers. */
    &gk_codec_topk,
    &gk_codec_mstopk,
    &gk_codec_dgc,
    &gk_codec_redsync,
    &gk_codec_sidco,
    &gk_codec_threshold,
    &gk_codec_randomk,
    &gk_codec_randomblock,
    /* Low-rank, sign family, quantisers, casts. */
    &gk_codec_powersgd,
    &gk_codec_powersgd_unbiased,
    &gk_codec_signsgd,
    &gk_codec_signnorm,
    &gk_codec_onebit,
    &gk_codec_qsgd,
    &gk_codec_terngrad,
    &gk_codec_maxmin,
    &gk_codec_fp16,
    &gk_codec_bf16,
};

const int gk_ncodecs = sizeof(gk_codecs) / sizeof(gk_codecs[0]);
