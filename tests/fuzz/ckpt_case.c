/*
 * ckpt_case.c: see ckpt_case.h.
 */
#include "ckpt_case.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.h"

const gp_env fz_ck_env = {.nodes = 2, .trainers = 4, .seed = 3, .alpha_ms = 0.05,
                          .bw_bytes_ms = 1e6};

/* Specs with short intervals and windows, so that a few steps change the state. */
static const struct {
    const char *policy, *spec;
} fz_ck_policy_specs[] = {
    {"accordion", "accordion:interval=2"},
    {"adaqs", "adaqs"},
    {"gravac", "gravac:window=4"},
    {"lgreco", "lgreco:interval=2"},
    {"perfmodel", "perfmodel:probe=2,warmup=1"},
};

/* Codec specs beyond each stateful codec's default: other branches of their formats. */
static const char *const fz_ck_codec_variants[] = {"dgc:ef=0", "powersgd:rank=3,residual=1"};
enum { FZ_CK_NVARIANTS = sizeof(fz_ck_codec_variants) / sizeof(fz_ck_codec_variants[0]) };

static const gk_layer fz_ck_layer = {.id = (uint64_t)1 << 32, .ndim = 2, .rows = 16,
                                     .cols = 12, .numel = 192};

static int npolicies(void)
{
    int n = 0;
    for (int i = 0; i < gp_npolicies; i++)
        n += gp_policies[i]->load != NULL;
    return n;
}

static int ncodecs(void)
{
    int n = 0;
    for (int i = 0; i < gk_ncodecs; i++)
        n += gk_codecs[i]->state_load != NULL;
    return n;
}

int fz_ck_ncases(void)
{
    return npolicies() + ncodecs() + FZ_CK_NVARIANTS + 3;
}

static void codec_case(fz_ck_case *out, const char *spec)
{
    char err[512] = "";
    out->kind = FZ_CK_CODEC;
    out->spec = spec;
    out->layer = fz_ck_layer;
    if (gk_spec_parse(spec, &out->cspec, err, sizeof(err)) || !out->cspec.codec->state_load) {
        fprintf(stderr, "fuzz_checkpoint: codec spec '%s': %s\n", spec,
                err[0] ? err : "its codec keeps no state");
        abort();
    }
    snprintf(out->name, sizeof(out->name), "codec-%s", spec);
    for (char *p = out->name; *p; p++)
        if (*p == ':' || *p == ',' || *p == '=')
            *p = '-';
}

void fz_ck_case_get(int i, fz_ck_case *out)
{
    *out = (fz_ck_case){0};
    for (int k = 0; k < gp_npolicies; k++) {
        const gp_policy *p = gp_policies[k];
        if (!p->load || i-- > 0)
            continue;
        out->kind = FZ_CK_POLICY;
        out->policy = p;
        out->spec = p->name;
        for (size_t s = 0; s < sizeof(fz_ck_policy_specs) / sizeof(fz_ck_policy_specs[0]); s++)
            if (strcmp(fz_ck_policy_specs[s].policy, p->name) == 0)
                out->spec = fz_ck_policy_specs[s].spec;
        snprintf(out->name, sizeof(out->name), "policy-%s", p->name);
        return;
    }
    for (int k = 0; k < gk_ncodecs; k++) {
        if (!gk_codecs[k]->state_load || i-- > 0)
            continue;
        codec_case(out, gk_codecs[k]->name);
        return;
    }
    if (i < FZ_CK_NVARIANTS) {
        codec_case(out, fz_ck_codec_variants[i]);
        return;
    }
    i -= FZ_CK_NVARIANTS;
    if (i < 2) {
        out->kind = FZ_CK_FILE;
        out->node = i;
        snprintf(out->name, sizeof(out->name), "file-node%d", i);
        return;
    }
    out->kind = FZ_CK_BUCKET;
    snprintf(out->name, sizeof(out->name), "bucket");
}

gp_instance *fz_ck_policy_new(const fz_ck_case *c)
{
    gp_instance *p = NULL;
    char err[1024] = "";
    if (gp_instance_create(c->spec, &fz_ck_env, &p, err, sizeof(err)) || p->policy != c->policy) {
        fprintf(stderr, "fuzz_checkpoint: policy spec '%s' makes no %s: %s (add a valid spec "
                "to fz_ck_policy_specs)\n", c->spec, c->policy->name, err);
        abort();
    }
    return p;
}

void fz_ck_mem_open(fz_ck_mem *m)
{
    *m = (fz_ck_mem){0};
    if (!(m->f = open_memstream(&m->data, &m->len))) {
        perror("fuzz_checkpoint: open_memstream");
        abort();
    }
}

void fz_ck_mem_close(fz_ck_mem *m)
{
    if (fclose(m->f) != 0) {
        perror("fuzz_checkpoint: writing to memory");
        abort();
    }
    m->f = NULL;
}

FILE *fz_ck_read_open(const void *buf, size_t len)
{
    /* fmemopen refuses a size of 0: an empty checkpoint is an empty file. */
    FILE *f = len ? fmemopen((void *)buf, len, "r") : fopen("/dev/null", "r");
    if (!f) {
        perror("fuzz_checkpoint: fmemopen");
        abort();
    }
    return f;
}
