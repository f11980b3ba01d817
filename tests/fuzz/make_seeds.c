/*
 * make_seeds: writes the seed corpora of the C fuzz targets, made by the code itself
 * (protobuf-c packs the messages, each codec's encode() makes its payloads, the policies',
 * codecs' and gcompd's own save functions write the checkpoints), so that every seed is a
 * valid input the targets' mutations start from, and the inputs of bugs the fuzzers found
 * (fixed, kept as regression seeds):
 *
 *   fuzz-seeds CORPUS   writes CORPUS/fuzz_messages/<name>, CORPUS/fuzz_codecs/<name> and
 *                       CORPUS/fuzz_checkpoint/<name>
 *
 * Run through tests/fuzz/make_corpus.py, which also writes the Python targets' seeds.
 * The output is the same on every run.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/arena.h"
#include "ckpt_case.h"
#include "codec_case.h"
#include "coord.h"
#include "engine.h"
#include "gcomp.pb-c.h"
#include "perfmodel.h"

static const char *outdir;

static void write_seed(const char *target, const char *name, const uint8_t *data, size_t len)
{
    char path[4096];
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        perror(outdir);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void write_msg(const char *name, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(m, buf);
    write_seed("fuzz_messages", name, buf, len);
    free(buf);
}

/* One of each message a socket or another node delivers. */
static void message_seeds(void)
{
    int64_t shape[] = {64, 3, 3, 3}, bias[] = {64};
    Gcomp__Layer conv = GCOMP__LAYER__INIT, fc = GCOMP__LAYER__INIT, *layers[] = {&conv, &fc};
    conv.name = "conv1.weight";
    conv.shape = shape;
    conv.n_shape = 4;
    fc.name = "conv1.bias";
    fc.shape = bias;
    fc.n_shape = 1;

    Gcomp__TrainerMsg t = GCOMP__TRAINER_MSG__INIT;
    Gcomp__Hello hello = GCOMP__HELLO__INIT;
    hello.version = 2;
    hello.job_id = "job-1";
    hello.local_rank = 1;
    hello.pid = 4242;
    t.msg_case = GCOMP__TRAINER_MSG__MSG_HELLO;
    t.hello = &hello;
    write_msg("trainer-hello", &t.base);
    Gcomp__Register reg = GCOMP__REGISTER__INIT;
    reg.bucket = "b0";
    reg.layers = layers;
    reg.n_layers = 2;
    reg.total_layers = 2;
    t.msg_case = GCOMP__TRAINER_MSG__MSG_REGISTER;
    t.register_ = &reg;
    write_msg("trainer-register", &t.base);
    reg.flags = 1;
    reg.total_layers = 5;
    reg.more = 1;
    write_msg("trainer-register-part", &t.base);
    Gcomp__Submit sub = GCOMP__SUBMIT__INIT;
    sub.bucket_id = 3;
    sub.step = 1234567;
    t.msg_case = GCOMP__TRAINER_MSG__MSG_SUBMIT;
    t.submit = &sub;
    write_msg("trainer-submit", &t.base);
    Gcomp__Hint hint = GCOMP__HINT__INIT;
    hint.step = 10;
    hint.fields = 7;
    hint.lr = 0.1;
    hint.samples = 256;
    hint.epoch_end = 1;
    t.msg_case = GCOMP__TRAINER_MSG__MSG_HINT;
    t.hint = &hint;
    write_msg("trainer-hint", &t.base);
    Gcomp__Unregister unreg = GCOMP__UNREGISTER__INIT;
    unreg.bucket_id = 3;
    t.msg_case = GCOMP__TRAINER_MSG__MSG_UNREGISTER;
    t.unregister = &unreg;
    write_msg("trainer-unregister", &t.base);

    char *args[] = {"static:codec=topk:density=0.01"};
    Gcomp__CtlRequest req = GCOMP__CTL_REQUEST__INIT;
    req.cmd = "policy-set";
    req.args = args;
    req.n_args = 1;
    req.json = 1;
    write_msg("ctl-policy-set", &req.base);
    Gcomp__CtlReply rep = GCOMP__CTL_REPLY__INIT;
    rep.status = 0;
    rep.text = "{\"applies_from\": 12}";
    write_msg("ctl-reply", &rep.base);

    Gcomp__ReadyEntry ok = GCOMP__READY_ENTRY__INIT, failed = GCOMP__READY_ENTRY__INIT;
    Gcomp__ReadyEntry *entries[] = {&ok, &failed};
    ok.bucket = "b0";
    ok.step = 9;
    ok.layers = layers;
    ok.n_layers = 2;
    failed.bucket = "b1";
    failed.step = 9;
    failed.layers = layers;
    failed.n_layers = 1;
    failed.status = -12;
    failed.error = "trainer 1 lost";
    Gcomp__NodeReport nr = GCOMP__NODE_REPORT__INIT;
    nr.node = 1;
    nr.ready = entries;
    nr.n_ready = 2;
    nr.max_step = 9;
    write_msg("report-ready", &nr.base);
    nr.shutdown = 1;
    nr.policy_spec = "static:codec=none";
    nr.checkpoint_dir = "/tmp/ckpt";
    write_msg("report-requests", &nr.base);

    Gcomp__DecisionEntry run = GCOMP__DECISION_ENTRY__INIT, *runs[] = {&run};
    run.bucket = "b0";
    run.step = 9;
    Gcomp__Decision dec = GCOMP__DECISION__INIT;
    dec.run = runs;
    dec.n_run = 1;
    dec.policy_epoch = 2;
    dec.policy_spec = "static:codec=none";
    dec.policy_step = 10;
    dec.checkpoint_dir = "/tmp/ckpt";
    write_msg("decision", &dec.base);

    Gcomp__DaemonMsg dm = GCOMP__DAEMON_MSG__INIT;
    Gcomp__Welcome wel = GCOMP__WELCOME__INIT;
    wel.node = 1;
    wel.nodes = 2;
    wel.local_size = 2;
    dm.msg_case = GCOMP__DAEMON_MSG__MSG_WELCOME;
    dm.welcome = &wel;
    write_msg("daemon-welcome", &dm.base);
    Gcomp__Registered regd = GCOMP__REGISTERED__INIT;
    regd.bucket_id = 3;
    regd.numel = 1792;
    dm.msg_case = GCOMP__DAEMON_MSG__MSG_REGISTERED;
    dm.registered = &regd;
    write_msg("daemon-registered", &dm.base);
    Gcomp__Complete done = GCOMP__COMPLETE__INIT;
    done.bucket_id = 3;
    done.step = 9;
    done.status = -13;
    done.error = "bucket 'b0' layer 'conv1.weight': non-finite input on node 1";
    done.advice_batch = 512;
    done.advice_lr_scale = 2.0;
    dm.msg_case = GCOMP__DAEMON_MSG__MSG_COMPLETE;
    dm.complete = &done;
    write_msg("daemon-complete", &dm.base);
}

/* ---- codec payloads ---- */

/* Node w's EF buffer for a seed: varied signs and magnitudes, a few exact zeros. */
static void seed_values(float *x, size_t n, int w)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (i % 11 == 3) ? 0.0f : (float)(sin(0.7 * (double)i + w) * (1.0 + (double)(i % 5)));
}

/*
 * Run phases 0..phase of the case's call on W nodes as the engine would and write the
 * target phase's payload as a seed (allreduce cases use W = 1: the sum is the payload),
 * with its first float replaced by a NaN if nan_first. Returns 0, or -1 when the case
 * is not a decode() call the engine makes.
 */
static int codec_seed(const char *name, fz_codec_case *hdr, bool nan_first)
{
    fz_codec_call fc;
    if (fz_case_resolve(hdr, &fc))
        return -1;
    const gk_codec *c = fc.spec.codec;
    const gk_codec_impl *impl[2];
    fz_impls(c, impl);
    int W = fc.nodes;
    size_t n = fc.layer.numel;
    float *x[FZ_MAX_NODES], *out = malloc(n * sizeof(float));
    void *state[FZ_MAX_NODES] = {0}, *send[FZ_MAX_NODES];
    size_t bytes[FZ_MAX_NODES];
    int target = fc.phase, rc = 0;
    for (int w = 0; w < W; w++) {
        x[w] = malloc(n * sizeof(float));
        seed_values(x[w], n, w);
        if (c->state_new && c->state_new(&fc.spec, &fc.layer, &state[w]))
            return -1;
    }
    for (int p = 0; p <= target && !rc; p++) {
        fz_phase(&fc, p);
        if (fc.coll != GK_COLL_ALLGATHER && W != 1)
            return -1;
        for (int w = 0; w < W && !rc; w++) {
            fc.node = w;
            gk_call call = fz_call(&fc, state[w]);
            send[w] = calloc(fc.max_bytes + 1, 1);
            rc = impl[0]->encode(&call, x[w], send[w], &bytes[w]);
            if (nan_first && p == target && bytes[w] >= 4)
                memcpy(send[w], &(float){NAN}, 4);
        }
        if (!rc && p == target) {
            size_t len = FZ_HEADER;
            for (int w = 0; w < W; w++)
                len += bytes[w] + (fc.coll == GK_COLL_ALLGATHER ? 2 : 0);
            uint8_t *buf = malloc(len), *q = buf + FZ_HEADER;
            fz_case_write(hdr, buf);
            for (int w = 0; w < W; w++) {
                if (fc.coll == GK_COLL_ALLGATHER) {
                    *q++ = (uint8_t)bytes[w];
                    *q++ = (uint8_t)(bytes[w] >> 8);
                }
                memcpy(q, send[w], bytes[w]);
                q += bytes[w];
            }
            write_seed("fuzz_codecs", name, buf, len);
            free(buf);
        }
        /* (the NaN seed's decode is refused: it is the input, not a step to go on from) */
        for (int w = 0; w < W && !rc && !(nan_first && p == target); w++) {
            fc.node = w;
            gk_call call = fz_call(&fc, state[w]);
            int nrecv = fc.coll == GK_COLL_ALLGATHER ? W : 1;
            rc = impl[0]->decode(&call, x[w], (const void *const *)(nrecv == 1 ? &send[w] : send),
                                 nrecv == 1 ? &bytes[w] : bytes, nrecv, out);
        }
        for (int w = 0; w < W; w++)
            free(send[w]);
    }
    for (int w = 0; w < W; w++) {
        free(x[w]);
        if (c->state_free)
            c->state_free(state[w]);
    }
    free(out);
    if (rc) {
        fprintf(stderr, "fuzz-seeds: %s: the reference failed (%d)\n", name, rc);
        exit(1);
    }
    return 0;
}

/*
 * Every codec of the registry, every phase: a 16x12 layer with the default spec, a
 * 1-D layer of 7 elements, and a 9x3 layer with every parameter near its minimum.
 * Allgather codecs run on 3 nodes, allreduce ones on 1.
 */
static void codec_seeds(void)
{
    static const struct {
        const char *tag;
        uint8_t ndim, dim[FZ_MAX_DIMS], param;
    } shapes[] = {
        {"16x12", 1, {15, 11}, 0},
        {"7", 0, {6}, 0},
        {"9x3-low", 1, {8, 2}, 2},
    };
    for (int i = 0; i < gk_ncodecs; i++) {
        const gk_codec *c = gk_codecs[i];
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            fz_codec_case hdr = {.codec = (uint8_t)i, .ndim = shapes[s].ndim, .step = 5};
            memcpy(hdr.dim, shapes[s].dim, FZ_MAX_DIMS);
            memset(hdr.param, shapes[s].param, FZ_PARAMS);
            fz_codec_call fc;
            if (fz_case_resolve(&hdr, &fc))
                continue;
            bool gather = false;
            int nphases = c->nphases ? c->nphases(&fc.spec) : 1;
            for (int p = 0; p < nphases; p++) {
                fz_phase(&fc, p);
                gather |= fc.coll == GK_COLL_ALLGATHER;
            }
            hdr.nodes = gather ? 2 : 0; /* W = 3 or 1 */
            hdr.node = gather ? 1 : 0;
            for (int p = 0; p < nphases; p++) {
                char name[256];
                snprintf(name, sizeof(name), "%s-%s-phase%d", c->name, shapes[s].tag, p);
                hdr.phase = (uint8_t)p;
                codec_seed(name, &hdr, false);
            }
        }
    }
}

/*
 * A fixed bug (docs/RELIABILITY.md): PowerSGD (rank 3) with a NaN in the summed P: the
 * reference decode accepted it, the optimised one failed in LAPACKE's NaN check of its
 * QR (GCOMP_INTERNAL); now both refuse it (gk_lowrank_check).
 */
static void regression_seeds(void)
{
    fz_codec_case hdr = {.codec = 0, .param = {3}, .ndim = 1, .dim = {15, 11}, .step = 5};
    for (int i = 0; i < gk_ncodecs; i++)
        if (strcmp(gk_codecs[i]->name, "powersgd") == 0)
            hdr.codec = (uint8_t)i;
    codec_seed("powersgd-nan-in-sum", &hdr, true);
}

/* ---- checkpoints ---- */

/* A fuzz_checkpoint seed: the case's selector byte, then the checkpoint. */
static void ckpt_seed(int idx, const fz_ck_case *c, const char *what, const fz_ck_mem *m)
{
    char name[256];
    uint8_t *buf = malloc(m->len + 1);
    buf[0] = (uint8_t)idx;
    memcpy(buf + 1, m->data, m->len);
    snprintf(name, sizeof(name), "%s-%s", c->name, what);
    write_seed("fuzz_checkpoint", name, buf, m->len + 1);
    free(buf);
}

/* The layers of the synthetic bucket the policies see: two of more than 1024 elements
   (the default min_elements), so that the policies compress them. */
static const gp_layer seed_layers[2] = {
    {.bucket = "b0", .name = "conv.w", .index = 0,
     .geom = {.id = (uint64_t)1 << 32, .ndim = 2, .rows = 32, .cols = 48, .numel = 1536}},
    {.bucket = "b0", .name = "fc.w", .index = 1,
     .geom = {.id = ((uint64_t)1 << 32) | 1, .ndim = 2, .rows = 40, .cols = 40, .numel = 1600}},
};

/* Bucket steps [0, steps) of seed_layers as the engine makes them on one node: decide,
   collect on fixed gradients, observe. */
static void policy_steps(gp_instance *p, int64_t steps)
{
    static gk_arena arena;
    gk_exec exec = {.backend = GK_BACKEND_CPU, .mem = GK_MEM_HOST, .scratch = &arena};
    const gp_policy *pol = p->policy;
    int ns = pol->nstats;
    double *stats = calloc(2 * (size_t)ns + 1, sizeof(double)), payload[2] = {6000, 6400};
    gk_spec specs[2];
    bool comp[2];
    float *g[2];
    for (int i = 0; i < 2; i++) {
        g[i] = malloc(seed_layers[i].geom.numel * sizeof(float));
        seed_values(g[i], seed_layers[i].geom.numel, i);
    }
    for (int64_t t = 0; t < steps; t++) {
        for (int i = 0; i < 2; i++) {
            char why[256];
            if (pol->decide(p->state, &seed_layers[i], t, &specs[i], why, sizeof(why))) {
                fprintf(stderr, "fuzz-seeds: %s: decide failed\n", p->spec);
                exit(1);
            }
            comp[i] = strcmp(specs[i].codec->name, "none") != 0;
            gk_arena_mark mark = gk_arena_mark_get(&arena);
            if (pol->collect && pol->collect(p->state, &seed_layers[i], t, g[i], g[i],
                                             stats + i * ns, &exec)) {
                fprintf(stderr, "fuzz-seeds: %s: collect failed\n", p->spec);
                exit(1);
            }
            gk_arena_release(&arena, mark);
            /* perfmodel's collect() times the codecs by the clock: its seeds observe fixed
               times instead, so that the output is the same on every run. */
            if (strcmp(pol->name, "perfmodel") == 0)
                for (int k = 0; k < GP_PERF_MAX_CANDIDATES; k++)
                    for (int f = GP_PERF_ENCODE_MS; f <= GP_PERF_DECODE_AG_MS; f++) {
                        double *v = &stats[i * ns + k * GP_PERF_NSTAT + f];
                        *v = *v != 0 ? 0.05 * (k + 1) : 0;
                    }
        }
        gp_hints h = {.has_lr = true, .has_samples = true, .lr = 0.1, .samples = 128,
                      .step = t};
        gp_step_info info = {.step = t, .bucket = "b0", .nlayers = 2, .layers = seed_layers,
                             .specs = specs, .compressed = comp, .payload = payload,
                             .stats = stats, .step_ms = 20 + (double)(t % 3),
                             .exchange_ms = 5, .ready_ms = 8, .gap_ms = 4, .nodes = 2,
                             .hints = &h};
        if (pol->observe && pol->observe(p->state, &info)) {
            fprintf(stderr, "fuzz-seeds: %s: observe failed\n", p->spec);
            exit(1);
        }
    }
    for (int i = 0; i < 2; i++)
        free(g[i]);
    free(stats);
    gk_arena_free(&arena);
}

static void policy_save_mem(gp_instance *p, fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    if (p->policy->save(p->state, &w) || w.failed) {
        fprintf(stderr, "fuzz-seeds: %s: save failed\n", p->spec);
        exit(1);
    }
    fz_ck_mem_close(m);
}

/* One step of every phase of a codec on one node (the allreduce sum or the allgather of
   one segment is its own payload): the state as a step leaves it. */
static void codec_step(const gk_spec *spec, const gk_layer *layer, void *state, float *x)
{
    fz_codec_call fc = {.spec = *spec, .layer = *layer, .nodes = 1, .node = 0, .step = 5};
    const gk_codec *c = spec->codec;
    const gk_codec_impl *impl[2];
    fz_impls(c, impl);
    float *out = malloc(layer->numel * sizeof(float));
    int nphases = c->nphases ? c->nphases(spec) : 1, rc = 0;
    for (int p = 0; p < nphases && !rc; p++) {
        fz_phase(&fc, p);
        gk_call call = fz_call(&fc, state);
        void *send = calloc(fc.max_bytes + 1, 1);
        size_t bytes = 0;
        rc = impl[0]->encode(&call, x, send, &bytes);
        if (!rc)
            rc = impl[0]->decode(&call, x, (const void *const *)&send, &bytes, 1, out);
        free(send);
    }
    free(out);
    if (rc) {
        fprintf(stderr, "fuzz-seeds: codec %s: a step failed (%d)\n", c->name, rc);
        exit(1);
    }
}

static void state_save_mem(const gk_spec *spec, const gk_layer *layer, const void *st,
                           fz_ck_mem *m)
{
    fz_ck_mem_open(m);
    gk_writer w = {.f = m->f};
    if (spec->codec->state_save(st, layer, &w) || w.failed) {
        fprintf(stderr, "fuzz-seeds: codec %s: state_save failed\n", spec->codec->name);
        exit(1);
    }
    fz_ck_mem_close(m);
}

/* A layer of a saved bucket: spec (NULL: never had one), its x and state after a step. */
static void seed_layer(eng_layer *l, const char *spec, int index, size_t rows, size_t cols)
{
    char err[512];
    *l = (eng_layer){.geom = {.id = ((uint64_t)1 << 32) | (uint64_t)index, .ndim = 2,
                              .rows = rows, .cols = cols, .numel = rows * cols}};
    if (!spec)
        return;
    if (gk_spec_parse(spec, &l->spec, err, sizeof(err))) {
        fprintf(stderr, "fuzz-seeds: %s: %s\n", spec, err);
        exit(1);
    }
    l->has_spec = l->compressed = true;
    l->x = malloc(l->geom.numel * sizeof(float));
    seed_values(l->x, l->geom.numel, index);
    if (l->spec.codec->state_new) {
        if (l->spec.codec->state_new(&l->spec, &l->geom, &l->state)) {
            fprintf(stderr, "fuzz-seeds: %s: state_new failed\n", spec);
            exit(1);
        }
        codec_step(&l->spec, &l->geom, l->state, l->x);
    }
}

/* Node 0's coordinator after one cycle in which both nodes reported bucket b0 ready.
   (Its record in the seeds has no bucket numbers yet: one cycle of these reports does not
   number b0; the fuzzer's mutations reach the record's entries from there.) */
static gcd_coord *seed_coord(void)
{
    gcd_coord *c = gcd_coord_new(2, 1000);
    Gcomp__ReadyEntry e = GCOMP__READY_ENTRY__INIT, *entries[] = {&e};
    e.bucket = "b0";
    e.step = 0;
    Gcomp__NodeReport r0 = GCOMP__NODE_REPORT__INIT, r1 = GCOMP__NODE_REPORT__INIT;
    Gcomp__NodeReport *reports[] = {&r0, &r1};
    r0.ready = r1.ready = entries;
    r0.n_ready = r1.n_ready = 1;
    r1.node = 1;
    Gcomp__Decision dec = GCOMP__DECISION__INIT;
    if (!c || gcd_coord_step(c, reports, 0, &dec)) {
        fprintf(stderr, "fuzz-seeds: the coordinator's cycle failed\n");
        exit(1);
    }
    gcd_coord_decision_clear(&dec);
    return c;
}

/* A bucket record of one layer written field by field (to hold what gcompd never
   writes): spec, geometry, has_x and nx floats of x, then has_state and `tail` bytes. */
static void bucket_by_hand(int idx, const fz_ck_case *c, const char *name, const char *spec,
                           uint64_t numel, uint64_t rows, uint64_t cols, size_t nx,
                           size_t tail)
{
    fz_ck_mem m;
    float x[64] = {0};
    fz_ck_mem_open(&m);
    gk_writer w = {.f = m.f};
    gk_put_str(&w, "b0");
    gk_put_u32(&w, 1);
    gk_put_u32(&w, 1);
    gk_put_str(&w, spec);
    gk_put_u8(&w, 1);
    gk_put_u64(&w, numel);
    gk_put_u64(&w, rows);
    gk_put_u64(&w, cols);
    gk_put_u32(&w, 2);
    gk_put_u64(&w, (uint64_t)1 << 32);
    gk_put_u8(&w, 1);
    seed_values(x, nx, 0);
    gk_put_f32s(&w, x, nx);
    if (tail) {
        gk_put_u8(&w, 1);
        gk_put_f32s(&w, x, tail / sizeof(float));
    }
    fz_ck_mem_close(&m);
    ckpt_seed(idx, c, name, &m);
    free(m.data);
}

/*
 * Fixed bugs (docs/RELIABILITY.md) of gcompd's bucket records: a layer of 2^30 elements
 * whose x ends after 4 floats (gcompd allocated the 4 GB first); a 12-element layer of
 * (2^62 + 3) x 4 (rows * cols wrapped around to 12; PowerSGD's state_new then asked for
 * 2^63 floats).
 */
static void checkpoint_regressions(int idx, const fz_ck_case *c)
{
    bucket_by_hand(idx, c, "huge-layer-truncated", "", (uint64_t)1 << 30, (uint64_t)1 << 15,
                   (uint64_t)1 << 15, 4, 0);
    bucket_by_hand(idx, c, "rows-times-cols-wraps", "powersgd:rank=2", 12,
                   ((uint64_t)1 << 62) + 3, 4, 12, 64);
}

/*
 * fuzz_checkpoint: every policy's checkpoint fresh and after 6 bucket steps; every
 * stateful codec's (and variant's) state fresh, after one step, and that cut short by 10
 * bytes (a regression seed); gcompd's files of
 * node 0 and node 1 (a policy with a state and one without, a bucket of a PowerSGD, a DGC
 * and a dense layer) and that bucket's record alone.
 */
static void checkpoint_seeds(void)
{
    eng_layer layers[3];
    seed_layer(&layers[0], "powersgd:rank=2", 0, 16, 12);
    seed_layer(&layers[1], "dgc:density=0.1", 1, 8, 8);
    seed_layer(&layers[2], NULL, 2, 5, 1);
    for (int i = 0; i < fz_ck_ncases(); i++) {
        fz_ck_case c;
        fz_ck_mem m;
        fz_ck_case_get(i, &c);
        if (c.kind == FZ_CK_POLICY) {
            gp_instance *p = fz_ck_policy_new(&c);
            policy_save_mem(p, &m);
            ckpt_seed(i, &c, "fresh", &m);
            free(m.data);
            policy_steps(p, 6);
            policy_save_mem(p, &m);
            ckpt_seed(i, &c, "6-steps", &m);
            free(m.data);
            gp_instance_destroy(p);
        } else if (c.kind == FZ_CK_CODEC) {
            void *st = NULL;
            float *x = malloc(c.layer.numel * sizeof(float));
            seed_values(x, c.layer.numel, 0);
            if (c.cspec.codec->state_new(&c.cspec, &c.layer, &st)) {
                fprintf(stderr, "fuzz-seeds: %s: state_new failed\n", c.spec);
                exit(1);
            }
            state_save_mem(&c.cspec, &c.layer, st, &m);
            ckpt_seed(i, &c, "fresh", &m);
            free(m.data);
            codec_step(&c.cspec, &c.layer, st, x);
            state_save_mem(&c.cspec, &c.layer, st, &m);
            ckpt_seed(i, &c, "1-step", &m);
            /* A fixed bug (docs/RELIABILITY.md): a state cut short in its floats was
               refused after the floats read so far had overwritten the state (and
               PowerSGD's have_p/have_q took values never read). */
            m.len -= 10;
            ckpt_seed(i, &c, "1-step-truncated", &m);
            free(m.data);
            c.cspec.codec->state_free(st);
            free(x);
        } else if (c.kind == FZ_CK_FILE) {
            static const char *const specs[] = {"lgreco:interval=2", "static:codec=dgc"};
            for (int k = 0; k < 2; k++) {
                gp_instance *p = NULL;
                char err[1024];
                if (gp_instance_create(specs[k], &fz_ck_env, &p, err, sizeof(err))) {
                    fprintf(stderr, "fuzz-seeds: %s: %s\n", specs[k], err);
                    exit(1);
                }
                if (p->policy->save)
                    policy_steps(p, 6);
                gcd_coord *coord = c.node == 0 ? seed_coord() : NULL;
                fz_ck_mem_open(&m);
                gk_writer w = {.f = m.f};
                int rc = eng_checkpoint_put_head(&w, c.node, 2, p, 3, 10);
                if (!rc && coord)
                    rc = gcd_coord_save(coord, &w);
                gk_put_u32(&w, 1);
                if (!rc)
                    rc = eng_checkpoint_bucket_save(&w, "b0", 1, 3, layers);
                fz_ck_mem_close(&m);
                if (rc || w.failed) {
                    fprintf(stderr, "fuzz-seeds: writing a checkpoint file failed\n");
                    exit(1);
                }
                ckpt_seed(i, &c, p->policy->name, &m);
                free(m.data);
                gcd_coord_free(coord);
                gp_instance_destroy(p);
            }
        } else {
            fz_ck_mem_open(&m);
            gk_writer w = {.f = m.f};
            if (eng_checkpoint_bucket_save(&w, "b0", 1, 3, layers)) {
                fprintf(stderr, "fuzz-seeds: writing a bucket record failed\n");
                exit(1);
            }
            fz_ck_mem_close(&m);
            ckpt_seed(i, &c, "b0", &m);
            free(m.data);
            checkpoint_regressions(i, &c);
        }
    }
    for (int i = 0; i < 3; i++)
        eng_layer_reset(&layers[i]);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS (see make_corpus.py)\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    message_seeds();
    codec_seeds();
    regression_seeds();
    checkpoint_seeds();
    return 0;
}
