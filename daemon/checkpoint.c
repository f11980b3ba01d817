/*
 * checkpoint.c: gcompctl checkpoint save DIR and gcompd --restore DIR.
 * DIR/node{k}.ckpt: "GCOMPCK1", node, nodes; the policy in force (spec, epoch, first
 * step, its saved state); then per bucket its name and per layer the spec, whether it
 * is compressed, the error-feedback buffer x and the codec's saved state. Engine thread.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine_internal.h"
#include "log.h"

#define CKPT_MAGIC "GCOMPCK1"

static bool put_str(FILE *f, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    return fwrite(&n, sizeof(n), 1, f) == 1 && fwrite(s, 1, n, f) == n;
}

static bool get_str(FILE *f, char *s, size_t size)
{
    uint32_t n;
    if (fread(&n, sizeof(n), 1, f) != 1 || n >= size || fread(s, 1, n, f) != n)
        return false;
    s[n] = '\0';
    return true;
}

#define PUT(f, v) (fwrite(&(v), sizeof(v), 1, (f)) == 1)
#define GET(f, v) (fread(&(v), sizeof(v), 1, (f)) == 1)

static int save_bucket(FILE *f, const gcd_bucket *b)
{
    const gcd_engine_bucket *eb = b->eng;
    uint32_t n = (uint32_t)b->layout.n;
    if (!put_str(f, b->name) || !PUT(f, n))
        return GCOMP_IO;
    for (size_t i = 0; i < b->layout.n; i++) {
        const eng_layer *l = &eb->layers[i];
        char spec[512] = "";
        if (l->has_spec)
            gk_spec_format(&l->spec, spec, sizeof(spec));
        uint8_t comp = l->compressed, has_x = l->x != NULL,
                has_state = l->state && l->spec.codec->state_save;
        uint64_t numel = l->geom.numel, rows = l->geom.rows, cols = l->geom.cols;
        int32_t ndim = l->geom.ndim;
        uint32_t id = l->geom.id;
        if (!put_str(f, spec) || !PUT(f, comp) || !PUT(f, numel) || !PUT(f, rows) ||
            !PUT(f, cols) || !PUT(f, ndim) || !PUT(f, id) || !PUT(f, has_x) ||
            !PUT(f, has_state) || (has_x && fwrite(l->x, sizeof(float), numel, f) != numel))
            return GCOMP_IO;
        if (has_state && l->spec.codec->state_save(l->state, &l->geom, f))
            return GCOMP_IO;
    }
    return GCOMP_OK;
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
    const policy_slot *ps = &e->pol[e->npol - 1];
    const gp_policy *pol = ps->p->policy;
    int32_t node = d->node, nodes = d->nodes;
    int64_t from = ps->from_step;
    uint8_t has_pstate = pol->save != NULL;
    int rc = fwrite(CKPT_MAGIC, 1, 8, f) == 8 && PUT(f, node) && PUT(f, nodes) &&
                     put_str(f, ps->p->spec) && PUT(f, e->epoch) && PUT(f, from) &&
                     PUT(f, has_pstate)
                 ? GCOMP_OK
                 : GCOMP_IO;
    if (!rc && has_pstate)
        rc = pol->save(ps->p->state, f);
    /* The engine state of live buckets; only the loop frees buckets, and only after the
       engine dropped their state (GCD_EV_FREED), so eng != NULL keeps b alive here. */
    pthread_mutex_lock(&d->mu);
    uint32_t count = 0;
    gcd_bucket **live = calloc(d->nbuckets ? d->nbuckets : 1, sizeof(*live));
    for (uint32_t i = 0; live && i < d->nbuckets; i++)
        if (d->buckets[i] && d->buckets[i]->eng)
            live[count++] = d->buckets[i];
    pthread_mutex_unlock(&d->mu);
    if (!live)
        rc = GCOMP_NOMEM;
    if (!rc && !PUT(f, count))
        rc = GCOMP_IO;
    for (uint32_t i = 0; i < count && !rc; i++)
        rc = save_bucket(f, live[i]);
    free(live);
    if (fclose(f) != 0 && !rc)
        rc = GCOMP_IO;
    if (!rc && rename(tmp, path) < 0)
        rc = GCOMP_IO;
    if (rc) {
        unlink(tmp);
        snprintf(msg, len, "checkpoint: writing %s failed: %s", path, strerror(errno));
        return rc;
    }
    snprintf(msg, len, "checkpoint saved in %s (node%d.ckpt on each of the %d nodes)", dir,
             d->node, d->nodes);
    return GCOMP_OK;
}

void gcd_checkpoint_take(engine *e, const char *dir, int origin)
{
    char msg[1200];
    int rc = write_checkpoint(e, dir, msg, sizeof(msg));
    if (rc)
        gcd_log_error("%s", msg);
    else
        gcd_log_info("%s", msg);
    if (origin == e->d->node && e->nckpt > 0) {
        gcd_engine_to_loop(e->d, GCD_EV_CTL_REPLY, 0, 0, rc, e->ckpt_asks[0].ctl_id, msg);
        memmove(e->ckpt_asks, e->ckpt_asks + 1, (e->nckpt - 1) * sizeof(*e->ckpt_asks));
        e->nckpt--;
        e->sent_ckpt--;
    }
}

void gcd_checkpoint_saved_free(saved_bucket *s)
{
    for (size_t i = 0; i < s->n; i++)
        gcd_eng_layer_reset(s->layers[i].has_spec ? s->layers[i].spec.codec : NULL, &s->layers[i]);
    free(s->layers);
    free(s);
}

/* Read one bucket's layers: spec, geometry, error-feedback buffer, codec state. */
static int load_bucket(FILE *f, saved_bucket **out, char *err, size_t errlen)
{
    saved_bucket *s = calloc(1, sizeof(*s));
    uint32_t n;
    if (!s || !get_str(f, s->name, sizeof(s->name)) || !GET(f, n) || n > GCOMP_MAX_LAYERS ||
        !(s->layers = calloc(n ? n : 1, sizeof(eng_layer)))) {
        free(s);
        snprintf(err, errlen, "truncated or corrupt bucket record");
        return GCOMP_PROTOCOL;
    }
    s->n = n;
    for (uint32_t i = 0; i < n; i++) {
        eng_layer *l = &s->layers[i];
        char spec[512];
        uint8_t comp, has_x, has_state;
        uint64_t numel, rows, cols;
        int32_t ndim;
        uint32_t id;
        if (!get_str(f, spec, sizeof(spec)) || !GET(f, comp) || !GET(f, numel) ||
            !GET(f, rows) || !GET(f, cols) || !GET(f, ndim) || !GET(f, id) || !GET(f, has_x) ||
            !GET(f, has_state) || numel > GCD_MAX_NUMEL || rows * cols != numel)
            goto bad;
        l->geom = (gk_layer){.id = id, .ndim = ndim, .rows = rows, .cols = cols, .numel = numel};
        if (spec[0]) {
            if (gk_spec_parse(spec, &l->spec, err, errlen))
                goto bad;
            l->has_spec = true;
        }
        l->compressed = comp;
        if (has_x && (!(l->x = malloc(numel * sizeof(float))) ||
                      fread(l->x, sizeof(float), numel, f) != numel))
            goto bad;
        if (has_state) {
            const gk_codec *c = l->has_spec ? l->spec.codec : NULL;
            if (!c || !c->state_new || !c->state_load ||
                c->state_new(&l->spec, &l->geom, &l->state) ||
                c->state_load(l->state, &l->geom, f))
                goto bad;
        }
    }
    *out = s;
    return GCOMP_OK;
bad:
    gcd_checkpoint_saved_free(s);
    if (!err[0])
        snprintf(err, errlen, "truncated or corrupt layer record");
    return GCOMP_PROTOCOL;
}

/* Read DIR/node{k}.ckpt at start-up: the policy in force replaces the configured one,
   the buckets' layers wait in e->saved until their bucket first runs. */
int gcd_checkpoint_read(engine *e, const char *dir, gp_instance **policy)
{
    gcd *d = e->d;
    char path[1024], magic[8], spec[512], err[512] = "";
    snprintf(path, sizeof(path), "%s/node%d.ckpt", dir, d->node);
    FILE *f = fopen(path, "rb");
    if (!f) {
        gcd_log_error("--restore: cannot read %s: %m", path);
        return GCOMP_IO;
    }
    int32_t node, nodes;
    int64_t from;
    uint8_t has_pstate;
    uint32_t count;
    int rc = GCOMP_PROTOCOL;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, CKPT_MAGIC, 8) || !GET(f, node) ||
        !GET(f, nodes) || !get_str(f, spec, sizeof(spec)) || !GET(f, e->epoch) ||
        !GET(f, from) || !GET(f, has_pstate)) {
        snprintf(err, sizeof(err), "not a gcomp checkpoint or truncated");
        goto out;
    }
    if (node != d->node || nodes != d->nodes) {
        snprintf(err, sizeof(err), "made by node %d of %d, this is node %d of %d", node, nodes,
                 d->node, d->nodes);
        goto out;
    }
    if (gcd_engine_make_policy(e, spec, policy, err, sizeof(err)))
        goto out;
    if (has_pstate && (!(*policy)->policy->load || (*policy)->policy->load((*policy)->state, f))) {
        snprintf(err, sizeof(err), "the state of policy '%.200s' does not load", spec);
        goto out;
    }
    if (!GET(f, count)) {
        snprintf(err, sizeof(err), "truncated");
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        saved_bucket *s;
        if ((rc = load_bucket(f, &s, err, sizeof(err))))
            goto out;
        s->next = e->saved;
        e->saved = s;
    }
    pthread_mutex_lock(&d->mu);
    snprintf(d->policy_spec, sizeof(d->policy_spec), "%s", spec);
    d->policy_epoch = e->epoch;
    d->policy_step = from;
    pthread_mutex_unlock(&d->mu);
    gcd_log_info("restored %u bucket(s) and policy '%s' from %s", count, spec, path);
    rc = GCOMP_OK;
out:
    if (rc) {
        gcd_log_error("--restore %s: %s", path, err);
        if (*policy)
            gp_instance_destroy(*policy);
        *policy = NULL;
        rc = rc ? rc : GCOMP_PROTOCOL;
    }
    fclose(f);
    return rc;
}

/* A bucket runs for the first time: take its saved layers if its layout matches. */
void gcd_checkpoint_adopt(engine *e, gcd_bucket *b)
{
    for (saved_bucket **p = &e->saved; *p; p = &(*p)->next) {
        saved_bucket *s = *p;
        if (strcmp(s->name, b->name) != 0)
            continue;
        *p = s->next;
        bool same = s->n == b->layout.n;
        for (size_t i = 0; same && i < s->n; i++)
            same = s->layers[i].geom.numel == b->eng->layers[i].geom.numel &&
                   s->layers[i].geom.id == b->eng->layers[i].geom.id;
        if (!same) {
            gcd_log_warn("bucket '%s' differs from its checkpoint: starting it afresh", b->name);
            gcd_checkpoint_saved_free(s);
            return;
        }
        for (size_t i = 0; i < s->n; i++) {
            b->eng->layers[i] = s->layers[i];
            s->layers[i] = (eng_layer){0};
        }
        gcd_checkpoint_saved_free(s);
        return;
    }
}

