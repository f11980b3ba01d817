/*
 * fuzz_messages: every decoder of bytes that arrive from a socket (trainer messages,
 * control requests, negotiation reports and decisions) and the layout validation that
 * follows a registration. Built as a normal test it mutates valid seed messages
 * deterministically (flips, truncations, insertions) and must neither crash nor leak
 * (run it under -Db_sanitize=address,undefined); compiled by clang with
 * -fsanitize=fuzzer -DGCOMP_LIBFUZZER it is a libFuzzer target.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcomp.pb-c.h"
#include "layout.h"
#include "rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Gcomp__TrainerMsg *t = gcomp__trainer_msg__unpack(NULL, size, data);
    if (t) {
        if (t->msg_case == GCOMP__TRAINER_MSG__MSG_REGISTER) {
            gcd_layout l;
            char err[512];
            const Gcomp__Register *r = t->register_;
            if (gcd_layout_from_proto(r->bucket ? r->bucket : "", r->layers, r->n_layers, &l,
                                      err, sizeof(err)) == 0)
                gcd_layout_free(&l);
        }
        gcomp__trainer_msg__free_unpacked(t, NULL);
    }
    Gcomp__CtlRequest *c = gcomp__ctl_request__unpack(NULL, size, data);
    if (c)
        gcomp__ctl_request__free_unpacked(c, NULL);
    Gcomp__NodeReport *n = gcomp__node_report__unpack(NULL, size, data);
    if (n)
        gcomp__node_report__free_unpacked(n, NULL);
    Gcomp__Decision *d = gcomp__decision__unpack(NULL, size, data);
    if (d)
        gcomp__decision__free_unpacked(d, NULL);
    return 0;
}

#ifndef GCOMP_LIBFUZZER
/* Valid seeds: a registration, a submit, a control request and a report. */
static size_t seeds(uint8_t out[][1024], size_t *lens)
{
    size_t k = 0;
    int64_t shape[] = {64, 3, 3, 3};
    Gcomp__Layer lay = GCOMP__LAYER__INIT, *lp[] = {&lay, &lay};
    lay.name = "conv1.weight";
    lay.shape = shape;
    lay.n_shape = 4;
    Gcomp__Register reg = GCOMP__REGISTER__INIT;
    reg.bucket = "b0";
    reg.layers = lp;
    reg.n_layers = 2;
    Gcomp__TrainerMsg m = GCOMP__TRAINER_MSG__INIT;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_REGISTER;
    m.register_ = &reg;
    lens[k] = gcomp__trainer_msg__pack(&m, out[k]);
    k++;
    Gcomp__Submit sub = GCOMP__SUBMIT__INIT;
    sub.bucket_id = 3;
    sub.step = 1234567;
    m.msg_case = GCOMP__TRAINER_MSG__MSG_SUBMIT;
    m.submit = &sub;
    lens[k] = gcomp__trainer_msg__pack(&m, out[k]);
    k++;
    char *args[] = {"static:codec=none"};
    Gcomp__CtlRequest req = GCOMP__CTL_REQUEST__INIT;
    req.cmd = "policy-set";
    req.args = args;
    req.n_args = 1;
    lens[k] = gcomp__ctl_request__pack(&req, out[k]);
    k++;
    Gcomp__ReadyEntry e = GCOMP__READY_ENTRY__INIT, *ep[] = {&e};
    e.bucket = "b0";
    e.step = 9;
    e.layers = lp;
    e.n_layers = 2;
    Gcomp__NodeReport rep = GCOMP__NODE_REPORT__INIT;
    rep.ready = ep;
    rep.n_ready = 1;
    rep.policy_spec = "none";
    lens[k] = gcomp__node_report__pack(&rep, out[k]);
    k++;
    return k;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 200000;
    uint8_t seed[8][1024], buf[2048];
    size_t lens[8];
    size_t ns = seeds(seed, lens);
    gk_rng r;
    gk_rng_seed(&r, 7, 0, 0, 0);
    for (long i = 0; i < rounds; i++) {
        size_t s = gk_rng_below(&r, ns), n = lens[s];
        memcpy(buf, seed[s], n);
        int edits = 1 + (int)gk_rng_below(&r, 4);
        for (int k = 0; k < edits; k++) {
            switch (gk_rng_below(&r, 4)) {
            case 0: /* flip a byte */
                buf[gk_rng_below(&r, n)] ^= (uint8_t)(1 + gk_rng_below(&r, 255));
                break;
            case 1: /* truncate */
                n = gk_rng_below(&r, n + 1);
                break;
            case 2: /* insert a random byte */
                if (n < sizeof(buf) - 1) {
                    size_t at = gk_rng_below(&r, n + 1);
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)gk_rng_next(&r);
                    n++;
                }
                break;
            default: /* a large varint where a length may be */
                if (n > 2) {
                    size_t at = gk_rng_below(&r, n - 1);
                    buf[at] = 0xff;
                    buf[at + 1] = 0x7f;
                }
            }
            if (n == 0)
                break;
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("fuzz_messages: %ld mutated messages decoded without a crash\n", rounds);
    return 0;
}
#endif
