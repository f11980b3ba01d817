/*
 * codec_case.c: reading, writing and resolving fuzz_codecs headers (codec_case.h).
 */
#include "codec_case.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

uint8_t fz_take_u8(fz_reader *r)
{
    uint8_t b = 0;
    fz_take(r, &b, 1);
    return b;
}

uint16_t fz_take_u16(fz_reader *r)
{
    uint8_t b[2];
    fz_take(r, b, 2);
    return (uint16_t)(b[0] | b[1] << 8);
}

uint64_t fz_take_u64(fz_reader *r)
{
    uint8_t b[8];
    uint64_t v = 0;
    fz_take(r, b, 8);
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

void fz_take(fz_reader *r, void *out, size_t n)
{
    size_t have = n < r->left ? n : r->left;
    memcpy(out, r->p, have);
    memset((uint8_t *)out + have, 0, n - have);
    r->p += have;
    r->left -= have;
}

int fz_case_read(fz_reader *r, fz_codec_case *c)
{
    if (r->left < FZ_HEADER)
        return 0;
    c->codec = fz_take_u8(r);
    c->ef = fz_take_u8(r);
    fz_take(r, c->param, FZ_PARAMS);
    c->ndim = fz_take_u8(r);
    fz_take(r, c->dim, FZ_MAX_DIMS);
    c->nodes = fz_take_u8(r);
    c->node = fz_take_u8(r);
    c->phase = fz_take_u8(r);
    c->step = fz_take_u64(r);
    return 1;
}

void fz_case_write(const fz_codec_case *c, uint8_t *out)
{
    *out++ = c->codec;
    *out++ = c->ef;
    memcpy(out, c->param, FZ_PARAMS);
    out += FZ_PARAMS;
    *out++ = c->ndim;
    memcpy(out, c->dim, FZ_MAX_DIMS);
    out += FZ_MAX_DIMS;
    *out++ = c->nodes;
    *out++ = c->node;
    *out++ = c->phase;
    for (int i = 0; i < 8; i++)
        *out++ = (uint8_t)(c->step >> (8 * i));
}

double fz_param_value(const gk_param_desc *p, uint8_t sel)
{
    if (p->integer) {
        double span = p->max - p->min + 1;
        return p->min + fmod((double)(sel - 1), span < 255 ? span : 255);
    }
    /* Reals: biased towards the low end, where wide ranges (lambda up to 1e30) matter. */
    double t = (double)(sel - 1) / 254.0;
    return p->min + (p->max - p->min) * t * t * t * t;
}

/* "name:key=value,...": the spec text a header stands for. */
static void case_spec_text(const fz_codec_case *c, const gk_codec *codec, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s", codec->name);
    char sep = ':';
    for (int i = 0; i < codec->nparams && i < FZ_PARAMS; i++) {
        if (!c->param[i])
            continue;
        n += snprintf(buf + n, len - (size_t)n, "%c%s=%.17g", sep, codec->params[i].key,
                      fz_param_value(&codec->params[i], c->param[i]));
        sep = ',';
    }
    int ef = c->ef % 3;
    if (ef == 1 || (ef == 2 && codec->ef_allowed))
        snprintf(buf + n, len - (size_t)n, "%cef=%d", sep, ef == 2);
}

int fz_case_resolve(const fz_codec_case *c, fz_codec_call *call)
{
    const gk_codec *codec = gk_codecs[c->codec % gk_ncodecs];
    char text[1024], err[1024];
    case_spec_text(c, codec, text, sizeof(text));
    if (gk_spec_parse(text, &call->spec, err, sizeof(err)))
        return -1;
    int ndim = 1 + c->ndim % FZ_MAX_DIMS;
    size_t numel = 1, shape0 = 1 + c->dim[0] % FZ_MAX_DIM;
    for (int i = 0; i < ndim; i++)
        numel *= 1 + c->dim[i] % FZ_MAX_DIM;
    if (numel > FZ_MAX_NUMEL)
        return -1;
    call->layer = (gk_layer){.id = 0x10002, .ndim = ndim, .rows = shape0,
                             .cols = numel / shape0, .numel = numel};
    if (codec->compresses && !codec->compresses(&call->spec, &call->layer))
        return -1;
    int nphases = codec->nphases ? codec->nphases(&call->spec) : 1;
    call->nodes = 1 + c->nodes % FZ_MAX_NODES;
    call->node = c->node % call->nodes;
    call->step = c->step;
    fz_phase(call, c->phase % nphases);
    return 0;
}

void fz_phase(fz_codec_call *call, int phase)
{
    const gk_codec *codec = call->spec.codec;
    call->phase = phase;
    call->coll = codec->phase_coll ? codec->phase_coll(&call->spec, phase)
                                   : GK_COLL_ALLREDUCE_F32;
    call->max_bytes = gk_payload_bytes(&call->spec, &call->layer, phase, call->step);
}

gk_call fz_call(const fz_codec_call *fc, void *state)
{
    return (gk_call){.spec = &fc->spec, .layer = &fc->layer, .state = state,
                     .phase = fc->phase, .nodes = fc->nodes, .node = fc->node,
                     .step = fc->step, .seed = 42};
}

int fz_impls(const gk_codec *c, const gk_codec_impl *out[2])
{
    out[0] = c->impl[GK_BACKEND_REF];
    out[1] = gk_codec_impl_of(c, GK_BACKEND_CPU);
    return 2;
}
