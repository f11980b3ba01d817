/*
 * checkpoint.c: gcompctl checkpoint save DIR and gcompd --restore DIR.
 *
 * DIR/node{k}.ckpt, field by field and little-endian (base/binio.h), every object a
 * record with a tag and a format version:
 *   'GCKP' v1: node, nodes;
 *     the policy in force: spec, epoch, first step, whether it saved a state, then the
 *     policy's own record (policy.h save);
 *     node 0 only: the coordinator's bucket numbers ('COOR', coord.c);
 *     the bucket count, then per bucket: name, number (uid), layer count, and per layer
 *     the spec ("" when it never had one), whether it is compressed, numel, rows, cols,
 *     ndim, id, the error-feedback buffer if any, the codec state's record if any.
 * A file of another format, version, node or job shape is refused with a message.
 * Engine thread, with the pipeline drained.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "engine.h"
#include "log.h"

#define CKPT_TAG "GCKP"
#define CKPT_VERSION 1

void eng_layer_reset(eng_layer *l)
{
    if (l->state && l->has_spec && l->spec.codec->state_free)
        l->spec.codec->state_free(l->state);
    l->state = NULL;
    free(l->x);
    l->x = NULL;
}

int eng_checkpoint_bucket_save(gk_writer *w, const char *name, uint32_t uid, size_t n,
                               const eng_layer *layers)
{
    gk_put_str(w, name);
    gk_put_u32(w, uid);
    gk_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n && !w->failed; i++) {
        const eng_layer *l = &layers[i];
        char spec[512] = "";
        if (l->has_spec)
            gk_spec_format(&l->spec, spec, sizeof(spec));
        bool has_state = l->state && l->spec.codec->state_save;
        gk_put_str(w, spec);
        gk_put_u8(w, l->compressed);
        gk_put_u64(w, l->geom.numel);
        gk_put_u64(w, l->geom.rows);
        gk_put_u64(w, l->geom.cols);
        gk_put_u32(w, (uint32_t)l->geom.ndim);
        gk_put_u64(w, l->geom.id);
        gk_put_u8(w, l->x != NULL);
        if (l->x)
            gk_put_f32s(w, l->x, l->geom.numel);
        gk_put_u8(w, has_state);
        if (has_state && l->spec.codec->state_save(l->state, &l->geom, w))
            return GCOMP_IO;
    }
    return w->failed ? GCOMP_IO : GCOMP_OK;
}

int eng_checkpoint_put_head(gk_writer *w, int node, int nodes, const gp_instance *p,
                            uint64_t epoch, int64_t from_step)
{
    const gp_policy *pol = p->policy;
    gk_put_tag(w, CKPT_TAG, CKPT_VERSION);
    gk_put_u32(w, (uint32_t)node);
    gk_put_u32(w, (uint32_t)nodes);
    gk_put_str(w, p->spec);
    gk_put_u64(w, epoch);
    gk_put_i64(w, from_step);
    gk_put_u8(w, pol->save != NULL);
    if (w->failed)
        return GCOMP_IO;
    return pol->save ? pol->save(p->state, w) : GCOMP_OK;
}

static int write_checkpoint(engine *e, const char *dir, char *msg, size_t len)
{
    gcd *d = e->d;
    char path[1024], tmp[1100];
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(msg, len, "checkpoint: cannot make %s: %s", dir, strerror(errno));
        return GCOMP_IO;
    }
    snprintf(path, sizeof(path), "%s/node%d.ckpt", dir, d->node);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(msg, len, "checkpoint: cannot write %s: %s", tmp, strerror(errno));
        return GCOMP_IO;
    }
    gk_writer w = {.f = f};
    const policy_slot *ps = &e->pol[e->npol - 1];
    int rc = eng_checkpoint_put_head(&w, d->node, d->nodes, ps->p, e->epoch, ps->from_step);
    if (!rc && d->node == 0)
        rc = gcd_coord_save(e->coord, &w);
    /* The engine state of live buckets; only the loop frees buckets, and only after the
       engine dropped their state (GCD_EV_FREED), so eng != NULL keeps b alive here. */
    pthread_mutex_lock(&d->mu);
    uint32_t count = 0;
    gcd_bucket **live = calloc(d->nbuckets ? d->nbuckets : 1, sizeof(*live));
    for (uint32_t i = 0; live && i < d->nbuckets; i++)
        if (d->buckets[i] && d->buckets[i]->eng && d->buckets[i]->eng->uid)
            live[count++] = d->buckets[i];
    pthread_mutex_unlock(&d->mu);
    if (!live)
        rc = GCOMP_NOMEM;
    if (!rc && !gk_put_u32(&w, count))
        rc = GCOMP_IO;
    for (uint32_t i = 0; i < count && !rc; i++)
        rc = eng_checkpoint_bucket_save(&w, live[i]->name, live[i]->eng->uid,
                                        live[i]->layout.n, live[i]->eng->layers);
    free(live);
    if (fclose(f) != 0 && !rc)
        rc = GCOMP_IO;
    if (!rc && rename(tmp, path) < 0)
        rc = GCOMP_IO;
    if (rc) {
        unlink(tmp);
        snprintf(msg, len, "checkpoint: writing %s failed: %s", path,
                 rc == GCOMP_IO ? strerror(errno) : gcomp_strerror(rc));
        return rc;
    }
    snprintf(msg, len, "checkpoint saved in %s (node%d.ckpt on each of the %d nodes)", dir,
             d->node, d->nodes);
    return GCOMP_OK;
}

void eng_checkpoint_take(engine *e, const char *dir, int origin)
{
    char msg[1200];
    int rc = write_checkpoint(e, dir, msg, sizeof(msg));
    if (rc)
        gcd_log_error("%s", msg);
    else
        gcd_log_info("%s", msg);
    if (origin == e->d->node && e->nckpt > 0) {
        gcd_to_loop(e->d, GCD_EV_CTL_REPLY, 0, 0, rc, e->ckpt_asks[0].ctl_id, msg);
        memmove(e->ckpt_asks, e->ckpt_asks + 1, (e->nckpt - 1) * sizeof(*e->ckpt_asks));
        e->nckpt--;
        e->sent_ckpt--;
    }
}

void eng_checkpoint_saved_free(saved_bucket *s)
{
    for (size_t i = 0; i < s->n; i++)
        eng_layer_reset(&s->layers[i]);
    free(s->layers);
    free(s);
}

/* One bucket's layers: spec, geometry, error-feedback buffer, codec state. */
int eng_checkpoint_bucket_load(gk_reader *r, saved_bucket **out)
{
    saved_bucket *s = calloc(1, sizeof(*s));
    uint32_t n;
    if (!s)
        return GCOMP_NOMEM;
    if (!gk_get_str(r, s->name, sizeof(s->name)) || !gk_get_u32(r, &s->uid) ||
        !gk_get_u32(r, &n) ||
        (n > GCOMP_MAX_LAYERS && !gk_reader_fail(r, "bucket '%s' has %u layers", s->name, n)) ||
        !(s->layers = calloc(n ? n : 1, sizeof(eng_layer)))) {
        free(s);
        return r->failed ? GCOMP_PROTOCOL : GCOMP_NOMEM;
    }
    s->n = n;
    uint32_t i = 0;
    for (; i < n && !r->failed; i++) {
        eng_layer *l = &s->layers[i];
        char spec[512], err[512] = "";
        uint8_t comp, has_x, has_state;
        uint64_t numel, rows, cols, id;
        uint32_t ndim;
        if (!gk_get_str(r, spec, sizeof(spec)) || !gk_get_u8(r, &comp) ||
            !gk_get_u64(r, &numel) || !gk_get_u64(r, &rows) || !gk_get_u64(r, &cols) ||
            !gk_get_u32(r, &ndim) || !gk_get_u64(r, &id))
            break;
        /* rows and cols each at most numel, so that rows * cols cannot wrap around. */
        if (numel > GCD_MAX_NUMEL || rows > numel || cols > numel || rows * cols != numel ||
            ndim < 1 || ndim > GCOMP_MAX_DIMS) {
            gk_reader_fail(r, "bucket '%s' layer %u: bad geometry", s->name, i);
            break;
        }
        l->geom = (gk_layer){.id = id, .ndim = (int)ndim, .rows = rows, .cols = cols,
                             .numel = numel};
        if (spec[0]) {
            if (gk_spec_parse(spec, &l->spec, err, sizeof(err))) {
                gk_reader_fail(r, "bucket '%s' layer %u: %s", s->name, i, err);
                break;
            }
            l->has_spec = true;
        }
        l->compressed = comp;
        /* x grows with what was read (gp_ckpt_get_f32s_new): a file that claims a huge
           layer and ends early does not make gcompd allocate the layer first. */
        if (!gk_get_u8(r, &has_x) || (has_x && !gp_ckpt_get_f32s_new(r, numel, &l->x)))
            break;
        if (!gk_get_u8(r, &has_state))
            break;
        /* gcompd keeps a codec state only with its error-feedback buffer (gk_layer_respec),
           which bounds what state_new allocates by what was read. */
        if (has_state && !has_x) {
            gk_reader_fail(r, "bucket '%s' layer %u: a codec state without its "
                           "error-feedback buffer", s->name, i);
            break;
        }
        if (has_state) {
            const gk_codec *c = l->has_spec ? l->spec.codec : NULL;
            if (!c || !c->state_new || !c->state_load) {
                gk_reader_fail(r, "bucket '%s' layer %u: a codec state without a codec that "
                               "keeps one", s->name, i);
                break;
            }
            if (c->state_new(&l->spec, &l->geom, &l->state) ||
                c->state_load(l->state, &l->geom, r))
                break;
        }
    }
    if (r->failed || i < n) {
        if (!r->failed)
            gk_reader_fail(r, "bucket '%s' layer %u: its codec state does not load", s->name, i);
        eng_checkpoint_saved_free(s);
        return GCOMP_PROTOCOL;
    }
    *out = s;
    return GCOMP_OK;
}

void eng_ckpt_clear(eng_ckpt *c)
{
    gp_instance_destroy(c->policy);
    while (c->saved) {
        saved_bucket *s = c->saved;
        c->saved = s->next;
        eng_checkpoint_saved_free(s);
    }
    *c = (eng_ckpt){0};
}

int eng_checkpoint_parse(gk_reader *r, int node, int nodes, gcd_coord *coord,
                         eng_policy_maker make, void *ctx, eng_ckpt *out, char *err,
                         size_t errlen)
{
    uint32_t fnode, fnodes;
    uint8_t has_pstate;
    int rc = GCOMP_PROTOCOL;
    *out = (eng_ckpt){0};
    err[0] = '\0';
    if (!gk_get_tag(r, CKPT_TAG, CKPT_VERSION, NULL) || !gk_get_u32(r, &fnode) ||
        !gk_get_u32(r, &fnodes) || !gk_get_str(r, out->spec, sizeof(out->spec)) ||
        !gk_get_u64(r, &out->epoch) || !gk_get_i64(r, &out->from_step) ||
        !gk_get_u8(r, &has_pstate))
        goto out;
    if ((int)fnode != node || (int)fnodes != nodes) {
        snprintf(err, errlen, "made by node %u of %u, this is node %d of %d", fnode, fnodes,
                 node, nodes);
        goto out;
    }
    if (make(ctx, out->spec, &out->policy, err, errlen)) {
        if (!err[0])
            snprintf(err, errlen, "policy '%.200s' cannot be made", out->spec);
        goto out;
    }
    if (has_pstate && (!out->policy->policy->load ||
                       out->policy->policy->load(out->policy->state, r))) {
        snprintf(err, errlen, "the state of policy '%.200s' does not load%s%s", out->spec,
                 r->failed ? ": " : "", r->failed ? r->err : "");
        goto out;
    }
    if (node == 0 && (rc = gcd_coord_load(coord, r)) != GCOMP_OK)
        goto out;
    rc = GCOMP_PROTOCOL;
    if (!gk_get_u32(r, &out->nsaved))
        goto out;
    for (uint32_t i = 0; i < out->nsaved; i++) {
        saved_bucket *s;
        if ((rc = eng_checkpoint_bucket_load(r, &s)) != GCOMP_OK)
            goto out;
        s->next = out->saved;
        out->saved = s;
    }
    rc = GCOMP_OK;
out:
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "%s", r->failed ? r->err : gcomp_strerror(rc));
        eng_ckpt_clear(out);
    }
    return rc;
}

/* eng_checkpoint_parse's policy maker in the daemon. */
static int make_policy(void *ctx, const char *spec, gp_instance **out, char *err,
                       size_t errlen)
{
    return eng_policy_make(ctx, spec, out, err, errlen);
}

int eng_checkpoint_read(engine *e, const char *dir, gp_instance **policy)
{
    gcd *d = e->d;
    char path[1024], err[512] = "";
    snprintf(path, sizeof(path), "%s/node%d.ckpt", dir, d->node);
    *policy = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        gcd_log_error("--restore: cannot read %s: %m", path);
        return GCOMP_IO;
    }
    char head[8] = "";
    if (fread(head, 1, 8, f) == 8 && memcmp(head, "GCOMPCK1", 8) == 0) {
        gcd_log_error("--restore %s: made by an older gcompd (format GCOMPCK1, raw structs); "
                      "this gcompd reads '%s' version %d: save the checkpoint again", path,
                      CKPT_TAG, CKPT_VERSION);
        fclose(f);
        return GCOMP_VERSION;
    }
    rewind(f);
    gk_reader r = {.f = f};
    eng_ckpt c;
    int rc = eng_checkpoint_parse(&r, d->node, d->nodes, e->coord, make_policy, e, &c, err,
                                  sizeof(err));
    fclose(f);
    if (rc) {
        gcd_log_error("--restore %s: %s", path, err);
        return rc;
    }
    e->epoch = c.epoch;
    saved_bucket **tail = &c.saved;
    while (*tail)
        tail = &(*tail)->next;
    *tail = e->saved;
    e->saved = c.saved;
    *policy = c.policy;
    pthread_mutex_lock(&d->mu);
    snprintf(d->policy_spec, sizeof(d->policy_spec), "%s", c.spec);
    d->policy_epoch = c.epoch;
    d->policy_step = c.from_step;
    pthread_mutex_unlock(&d->mu);
    gcd_log_info("restored %u bucket(s) and policy '%s' from %s", c.nsaved, c.spec, path);
    return GCOMP_OK;
}

void eng_checkpoint_adopt(engine *e, eng_bucket *eb)
{
    gcd_bucket *b = eb->b;
    for (saved_bucket **p = &e->saved; *p; p = &(*p)->next) {
        saved_bucket *s = *p;
        if (strcmp(s->name, b->name) != 0)
            continue;
        *p = s->next;
        bool same = s->n == b->layout.n && s->uid == eb->uid;
        for (size_t i = 0; same && i < s->n; i++)
            same = s->layers[i].geom.numel == eb->layers[i].geom.numel &&
                   s->layers[i].geom.id == eb->layers[i].geom.id;
        if (!same) {
            gcd_log_warn("bucket '%s' differs from its checkpoint: starting it afresh", b->name);
            eng_checkpoint_saved_free(s);
            return;
        }
        for (size_t i = 0; i < s->n; i++) {
            eb->layers[i] = s->layers[i];
            s->layers[i] = (eng_layer){0};
        }
        eng_checkpoint_saved_free(s);
        return;
    }
}
