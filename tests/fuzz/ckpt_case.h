/*
 * ckpt_case.h: the input format of fuzz_checkpoint, shared by the target and by the seed
 * generator (make_seeds.c): which loader a checkpoint input goes to, and checkpoints in
 * memory (open_memstream / fmemopen through gk_writer / gk_reader).
 *
 * An input is one byte choosing the case (modulo fz_ck_ncases()), then the checkpoint
 * bytes. The cases, in this order:
 *   - every policy of gp_policies[] with a load(), made from a fixed valid spec
 *     (fz_ck_policy_specs in ckpt_case.c, else its bare name) with fz_ck_env;
 *   - every codec of gk_codecs[] with a state_load(), with its default spec, then the
 *     variants of FZ_CK_CODEC_VARIANTS (other branches of a state's format), each on a
 *     16x12 layer;
 *   - a whole checkpoint file of gcompd (eng_checkpoint_parse) on node 0 of 2 (with the
 *     coordinator's record) and on node 1 of 2;
 *   - one bucket record of such a file (eng_checkpoint_bucket_load).
 */
#ifndef FZ_CKPT_CASE_H
#define FZ_CKPT_CASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "codec.h"
#include "policy.h"

typedef enum fz_ck_kind { FZ_CK_POLICY, FZ_CK_CODEC, FZ_CK_FILE, FZ_CK_BUCKET } fz_ck_kind;

typedef struct fz_ck_case {
    fz_ck_kind kind;
    char name[96];             /* for seed names: "policy-lgreco", "codec-dgc"... */
    const char *spec;          /* POLICY, CODEC: the spec the instance is made from */
    const gp_policy *policy;   /* POLICY */
    gk_spec cspec;             /* CODEC: spec parsed */
    gk_layer layer;            /* CODEC: the layer */
    int node;                  /* FILE: this node, of 2 */
} fz_ck_case;

/* The job the policies and files are made for: 2 nodes of 2 trainers, a measured
   network (for perfmodel). */
extern const gp_env fz_ck_env;

/* How many cases; case i into *out (0 <= i < fz_ck_ncases()). Aborts, naming it, on a
   policy or codec whose fixed spec does not make an instance: add one to the table. */
int fz_ck_ncases(void);
void fz_ck_case_get(int i, fz_ck_case *out);

/* The policy of a POLICY case, made from its spec (aborts if it cannot be). */
gp_instance *fz_ck_policy_new(const fz_ck_case *c);

/* A growing in-memory file for a gk_writer: fz_ck_mem_open, write, fz_ck_mem_close
   (data/len then hold the bytes; the caller frees data). */
typedef struct fz_ck_mem {
    char *data;
    size_t len;
    FILE *f;
} fz_ck_mem;
void fz_ck_mem_open(fz_ck_mem *m);
void fz_ck_mem_close(fz_ck_mem *m);

/* A FILE that reads buf[len] (an empty one for len 0); fclose it. */
FILE *fz_ck_read_open(const void *buf, size_t len);

#endif
