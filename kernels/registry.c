/*
 * registry.c: every codec gcomp knows, in one array. Add a codec here and nowhere else.
 */
#include "codec.h"

extern const gk_codec gk_codec_none;
/* Sparsifiers. */
/* Low-rank, sign family, quantisers, casts. */

const gk_codec *const gk_codecs[] = {
    &gk_codec_none,
    /* Sparsifiers. */
    /* Low-rank, sign family, quantisers, casts. */
};

const int gk_ncodecs = sizeof(gk_codecs) / sizeof(gk_codecs[0]);
