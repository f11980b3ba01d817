/*
 * fuzz_checkpoint: the readers of checkpoint files (gcompd --restore): every policy's
 * load(), every codec's state_load(), and the daemon's own records (the file's header,
 * the coordinator's record, buckets: eng_checkpoint_parse, as gcompd reads a file). The
 * input's first byte chooses the reader (ckpt_case.h), the rest is the checkpoint.
 *
 * Checked on every input (a failed check aborts, as libFuzzer expects):
 *  - a refused checkpoint returns a negative status with a message (the reader failed
 *    with r->err set; eng_checkpoint_parse's err), and leaves a policy's or codec state's
 *    state as it was: it saves the same bytes before and after;
 *  - an accepted one, saved again, loads again (into a fresh instance) and saves the
 *    same bytes: what was read is what the format can write;
 *  - no crash, leak or out-of-bounds access (the libFuzzer build has ASan and UBSan;
 *    the replay build runs them under deploy/dev.sh test --sanitize).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_case.h"
#include "coord.h"
#include "engine.h"
#include "gcomp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const fz_ck_case *c, const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_checkpoint: %s: %s%s%s\n", c->name, what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

static void same_bytes(const fz_ck_case *c, const char *what, const fz_ck_mem *a,
                       const fz_ck_mem *b)
{
    if (a->len != b->len || memcmp(a->data, b->data, a->len) != 0)
        fail(c, what, NULL);
}

/* A refused load: a negative status, the reader failed with a message. */
static void check_refusal(const fz_ck_case *c, int rc, const gk_reader *r)
{
    if (rc >= 0)
        fail(c, "a refusal with a non-negative status", NULL);
    if (!r->failed || !r->err[0])
        fail(c, "a refusal without a message", NULL);
}

/* ---- policies ---- */

static void policy_save(const fz_ck_case *c, gp_instance *p, fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    if (p->policy->save(p->state, &w) || w.failed)
        fail(c, "save() failed", NULL);
    fz_ck_mem_close(m);
}

static int policy_load(gp_instance *p, const void *buf, size_t len, gk_reader *r)
{
    FILE *f = fz_ck_read_open(buf, len);
    *r = (gk_reader){.f = f};
    int rc = p->policy->load(p->state, r);
    fclose(f);
    return rc;
}

static void policy_case(const fz_ck_case *c, const uint8_t *data, size_t size)
{
    gp_instance *p = fz_ck_policy_new(c);
    fz_ck_mem before, after;
    gk_reader r;
    policy_save(c, p, &before);
    int rc = policy_load(p, data, size, &r);
    policy_save(c, p, &after);
    if (rc) {
        check_refusal(c, rc, &r);
        same_bytes(c, "a refused load changed the state", &before, &after);
    } else {
        if (r.failed)
            fail(c, "load() succeeded with a failed reader", r.err);
        gp_instance *q = fz_ck_policy_new(c);
        fz_ck_mem again;
        if (policy_load(q, after.data, after.len, &r))
            fail(c, "what an accepted checkpoint saves does not load", r.err);
        policy_save(c, q, &again);
        same_bytes(c, "an accepted checkpoint, saved and loaded, saves other bytes", &after,
                   &again);
        free(again.data);
        gp_instance_destroy(q);
    }
    free(before.data);
    free(after.data);
    gp_instance_destroy(p);
}

/* ---- codec states ---- */

static void *state_new(const fz_ck_case *c)
{
    void *st = NULL;
    if (c->cspec.codec->state_new(&c->cspec, &c->layer, &st))
        fail(c, "state_new() failed", NULL);
    return st;
}

static void state_save(const fz_ck_case *c, const void *st, fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    if (c->cspec.codec->state_save(st, &c->layer, &w) || w.failed)
        fail(c, "state_save() failed", NULL);
    fz_ck_mem_close(m);
}

static int state_load(const fz_ck_case *c, void *st, const void *buf, size_t len,
                      gk_reader *r)
{
    FILE *f = fz_ck_read_open(buf, len);
    *r = (gk_reader){.f = f};
    int rc = c->cspec.codec->state_load(st, &c->layer, r);
    fclose(f);
    return rc;
}

static void codec_case(const fz_ck_case *c, const uint8_t *data, size_t size)
{
    const gk_codec *codec = c->cspec.codec;
    void *st = state_new(c);
    fz_ck_mem before, after;
    gk_reader r;
    state_save(c, st, &before);
    int rc = state_load(c, st, data, size, &r);
    state_save(c, st, &after);
    if (rc) {
        check_refusal(c, rc, &r);
        same_bytes(c, "a refused state_load changed the state", &before, &after);
    } else {
        if (r.failed)
            fail(c, "state_load() succeeded with a failed reader", r.err);
        void *fresh = state_new(c);
        fz_ck_mem again;
        if (state_load(c, fresh, after.data, after.len, &r))
            fail(c, "what an accepted state saves does not load", r.err);
        state_save(c, fresh, &again);
        same_bytes(c, "an accepted state, saved and loaded, saves other bytes", &after, &again);
        free(again.data);
        codec->state_free(fresh);
    }
    free(before.data);
    free(after.data);
    codec->state_free(st);
}

/* ---- the daemon's file and bucket records ---- */

static int make_policy(void *ctx, const char *spec, gp_instance **out, char *err,
                       size_t errlen)
{
    (void)ctx;
    return gp_instance_create(spec, &fz_ck_env, out, err, errlen);
}

/* Parse a file as gcompd --restore does; rc, and *ck and coord filled on success. */
static int file_parse(const fz_ck_case *c, const void *buf, size_t len, gcd_coord **coord,
                      eng_ckpt *ck, char *err, size_t errlen)
{
    *coord = c->node == 0 ? gcd_coord_new(2, 1000) : NULL;
    if (c->node == 0 && !*coord)
        fail(c, "out of memory", NULL);
    FILE *f = fz_ck_read_open(buf, len);
    gk_reader r = {.f = f};
    int rc = eng_checkpoint_parse(&r, c->node, 2, *coord, make_policy, NULL, ck, err, errlen);
    fclose(f);
    return rc;
}

/* Write a parsed file again, in gcompd's order (checkpoint.c write_checkpoint). */
static void file_save(const fz_ck_case *c, const gcd_coord *coord, const eng_ckpt *ck,
                      fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    int rc = eng_checkpoint_put_head(&w, c->node, 2, ck->policy, ck->epoch, ck->from_step);
    if (!rc && c->node == 0)
        rc = gcd_coord_save(coord, &w);
    gk_put_u32(&w, ck->nsaved);
    /* The list holds the last one read first: write them in the order read. */
    const saved_bucket *order[ck->nsaved ? ck->nsaved : 1];
    uint32_t k = ck->nsaved;
    for (const saved_bucket *s = ck->saved; s && k > 0; s = s->next)
        order[--k] = s;
    for (uint32_t i = 0; i < ck->nsaved && !rc; i++)
        rc = eng_checkpoint_bucket_save(&w, order[i]->name, order[i]->uid, order[i]->n,
                                        order[i]->layers);
    if (rc || w.failed)
        fail(c, "writing an accepted checkpoint failed", NULL);
    fz_ck_mem_close(m);
}

static void file_case(const fz_ck_case *c, const uint8_t *data, size_t size)
{
    char err[512];
    gcd_coord *coord;
    eng_ckpt ck;
    int rc = file_parse(c, data, size, &coord, &ck, err, sizeof(err));
    if (rc) {
        if (rc >= 0 || !err[0])
            fail(c, "a refused file without a negative status and a message", NULL);
        if (ck.policy || ck.saved)
            fail(c, "a refused file left its policy or buckets", NULL);
        gcd_coord_free(coord);
        return;
    }
    fz_ck_mem first, again;
    file_save(c, coord, &ck, &first);
    gcd_coord *coord2;
    eng_ckpt ck2;
    if (file_parse(c, first.data, first.len, &coord2, &ck2, err, sizeof(err)))
        fail(c, "what an accepted file saves does not load", err);
    file_save(c, coord2, &ck2, &again);
    same_bytes(c, "an accepted file, saved and loaded, saves other bytes", &first, &again);
    free(first.data);
    free(again.data);
    eng_ckpt_clear(&ck);
    eng_ckpt_clear(&ck2);
    gcd_coord_free(coord);
    gcd_coord_free(coord2);
}

static saved_bucket *bucket_load(const fz_ck_case *c, const void *buf, size_t len, int *rc)
{
    FILE *f = fz_ck_read_open(buf, len);
    gk_reader r = {.f = f};
    saved_bucket *s = NULL;
    *rc = eng_checkpoint_bucket_load(&r, &s);
    fclose(f);
    if (*rc)
        check_refusal(c, *rc, &r);
    return *rc ? NULL : s;
}

static void bucket_save(const fz_ck_case *c, const saved_bucket *s, fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    if (eng_checkpoint_bucket_save(&w, s->name, s->uid, s->n, s->layers) || w.failed)
        fail(c, "writing an accepted bucket failed", NULL);
    fz_ck_mem_close(m);
}

static void bucket_case(const fz_ck_case *c, const uint8_t *data, size_t size)
{
    int rc;
    saved_bucket *s = bucket_load(c, data, size, &rc);
    if (!s)
        return;
    fz_ck_mem first, again;
    bucket_save(c, s, &first);
    saved_bucket *s2 = bucket_load(c, first.data, first.len, &rc);
    if (!s2)
        fail(c, "what an accepted bucket saves does not load", NULL);
    bucket_save(c, s2, &again);
    same_bytes(c, "an accepted bucket, saved and loaded, saves other bytes", &first, &again);
    free(first.data);
    free(again.data);
    eng_checkpoint_saved_free(s);
    eng_checkpoint_saved_free(s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz_ck_case c;
    fz_ck_case_get(data[0] % fz_ck_ncases(), &c);
    data++;
    size--;
    switch (c.kind) {
    case FZ_CK_POLICY:
        policy_case(&c, data, size);
        break;
    case FZ_CK_CODEC:
        codec_case(&c, data, size);
        break;
    case FZ_CK_FILE:
        file_case(&c, data, size);
        break;
    case FZ_CK_BUCKET:
        bucket_case(&c, data, size);
        break;
    }
    return 0;
}
