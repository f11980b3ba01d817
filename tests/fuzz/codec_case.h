/*
 * codec_case.h: the input format of fuzz_codecs, shared by the target and by the seed
 * generator (make_seeds.c), and the few calls into kernels/codec.h that both make.
 *
 * An input is a fixed header that chooses one decode() call, then the payload:
 *
 *   u8  codec    index into gk_codecs[], modulo gk_ncodecs
 *   u8  ef       modulo 3: 0 the codec's default, 1 ef=0, 2 ef=1 (where allowed)
 *   u8  param[FZ_PARAMS]  one selector per codec parameter, in its params[] order:
 *                0 the default; else a value in the parameter's range (fz_param_value)
 *   u8  ndim     1 + ndim % FZ_MAX_DIMS
 *   u8  dim[FZ_MAX_DIMS]  shape[i] = 1 + dim[i] % FZ_MAX_DIM (the first ndim count)
 *   u8  nodes    W = 1 + nodes % FZ_MAX_NODES
 *   u8  node     this node, node % W
 *   u8  phase    phase % nphases
 *   u64 step     little-endian
 *   payload      an allreduce phase: max_bytes bytes (the summed segment);
 *                an allgather phase: W segments, each a u16 little-endian length L
 *                (taken modulo max_bytes + 17, so a few are too long) and L bytes.
 *                Bytes past the end of the input read as zero.
 *
 * Calls are made as the engine makes them (codec.h): layers whose spec compresses() says
 * no never reach a codec, so such inputs are skipped.
 */
#ifndef FZ_CODEC_CASE_H
#define FZ_CODEC_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

enum {
    FZ_PARAMS = 12, /* parameter selectors in the header; >= GK_MAX_PARAMS */
    FZ_MAX_DIMS = 4,
    FZ_MAX_DIM = 16,
    FZ_MAX_NUMEL = 4096,
    FZ_MAX_NODES = 8,
    FZ_HEADER = 2 + FZ_PARAMS + 1 + FZ_MAX_DIMS + 3 + 8,
};
_Static_assert(GK_MAX_PARAMS <= FZ_PARAMS, "a codec parameter would have no selector");

/* The header, as read from or written to an input. */
typedef struct fz_codec_case {
    uint8_t codec, ef, param[FZ_PARAMS], ndim, dim[FZ_MAX_DIMS], nodes, node, phase;
    uint64_t step;
} fz_codec_case;

/* What a header stands for: the spec, the layer and the call's coordinates. */
typedef struct fz_codec_call {
    gk_spec spec;
    gk_layer layer;
    int nodes, node, phase;
    uint64_t step;
    gk_coll coll;
    size_t max_bytes;
} fz_codec_call;

/* A bounded reader over the input: bytes past its end read as zero. */
typedef struct fz_reader {
    const uint8_t *p;
    size_t left;
} fz_reader;

uint8_t fz_take_u8(fz_reader *r);
uint16_t fz_take_u16(fz_reader *r);
uint64_t fz_take_u64(fz_reader *r);
/* Copy n bytes (zero past the end of the input) into out. */
void fz_take(fz_reader *r, void *out, size_t n);

/* Read the header; 0 when the input is shorter than FZ_HEADER. */
int fz_case_read(fz_reader *r, fz_codec_case *c);
/* Write the header into out (FZ_HEADER bytes). */
void fz_case_write(const fz_codec_case *c, uint8_t *out);

/*
 * Resolve a header into *call: the spec through gk_spec_parse (as a user's spec would
 * be), the layer, W, node, phase and the phase's collective and max_bytes. Returns 0,
 * or -1 for a header the engine would never turn into a decode() call (a spec the
 * parser refuses, a layer over FZ_MAX_NUMEL elements, or one compresses() declines).
 */
int fz_case_resolve(const fz_codec_case *c, fz_codec_call *call);

/* The value selector sel stands for in parameter p's range (sel >= 1). */
double fz_param_value(const gk_param_desc *p, uint8_t sel);

/* Point call at another phase: sets phase, coll and max_bytes. */
void fz_phase(fz_codec_call *call, int phase);

/*
 * The codec interface as both programs use it, in one place each, so that a change of
 * kernels/codec.h is one edit here.
 */

/* The gk_call of a decode or encode for the state given. */
gk_call fz_call(const fz_codec_call *fc, void *state);

/* The implementations of a codec to run against each other: [0] the reference, [1] the
   one the engine runs. Returns how many (2). */
int fz_impls(const gk_codec *c, const gk_codec_impl *out[2]);

#endif
