/*
 * make_seeds: writes the seed corpora of the C fuzz targets, made by the code itself
 * (protobuf-c packs the messages, each codec's encode() makes its payloads), so that
 * every seed is a valid input the targets' mutations start from, and the inputs of bugs
 * the fuzzers found (fixed, kept as regression seeds):
 *
 *   fuzz-seeds CORPUS   writes CORPUS/fuzz_messages/<name> and CORPUS/fuzz_codecs/<name>
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

#include "codec_case.h"
#include "gcomp.pb-c.h"

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
    return 0;
}
