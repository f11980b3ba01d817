/*
 * fuzz_messages: every decoder of bytes that arrive from a socket or from another node:
 * one input is unpacked as each message type the daemon, the client library and
 * gcompctl receive, and what decodes goes on to the code that consumes it first: a
 * registration's layers through the daemon's layout check, a negotiation report through
 * one cycle of the coordinator (two nodes reporting it), whose decision must pack and
 * unpack again. Nothing may crash, leak or read out of bounds (sanitized builds check).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "gcomp.pb-c.h"
#include "layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void trainer_msg(const uint8_t *data, size_t size)
{
    Gcomp__TrainerMsg *t = gcomp__trainer_msg__unpack(NULL, size, data);
    if (!t)
        return;
    if (t->msg_case == GCOMP__TRAINER_MSG__MSG_REGISTER) {
        gcd_layout l;
        char err[512];
        const Gcomp__Register *r = t->register_;
        if (gcd_layout_from_proto(r->bucket ? r->bucket : "", r->layers, r->n_layers, &l, err,
                                  sizeof(err)) == 0)
            gcd_layout_free(&l);
    }
    gcomp__trainer_msg__free_unpacked(t, NULL);
}

static void node_report(const uint8_t *data, size_t size)
{
    Gcomp__NodeReport *r = gcomp__node_report__unpack(NULL, size, data);
    if (!r)
        return;
    gcd_coord *c = gcd_coord_new(2, 60000);
    Gcomp__NodeReport *reports[2] = {r, r};
    Gcomp__Decision dec = GCOMP__DECISION__INIT;
    if (c && gcd_coord_step(c, reports, 1000, &dec) == 0) {
        size_t len = gcomp__decision__get_packed_size(&dec);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf)
            abort();
        gcomp__decision__pack(&dec, buf);
        Gcomp__Decision *back = gcomp__decision__unpack(NULL, len, buf);
        if (!back) {
            fprintf(stderr, "fuzz_messages: the coordinator's decision does not unpack\n");
            abort();
        }
        gcomp__decision__free_unpacked(back, NULL);
        free(buf);
    }
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
    gcomp__node_report__free_unpacked(r, NULL);
}

/* Messages only decoded here: what consumes them needs a running daemon or client. */
static const ProtobufCMessageDescriptor *const decoded_only[] = {
    &gcomp__ctl_request__descriptor, /* daemon, from gcompctl */
    &gcomp__decision__descriptor,    /* every node, from node 0 */
    &gcomp__daemon_msg__descriptor,  /* libgcomp-client, from the daemon */
    &gcomp__ctl_reply__descriptor,   /* gcompctl, from the daemon */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    trainer_msg(data, size);
    node_report(data, size);
    for (size_t i = 0; i < sizeof(decoded_only) / sizeof(decoded_only[0]); i++) {
        ProtobufCMessage *m = protobuf_c_message_unpack(decoded_only[i], NULL, size, data);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
