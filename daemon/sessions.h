/*
 * sessions.h: one connection of a trainer or of gcompctl, on the loop thread
 * (sessions.c owns the connections; trainer.c speaks the trainer protocol; control.c
 * answers gcompctl). Loop thread only.
 */
#ifndef GCD_SESSIONS_H
#define GCD_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "wire.h"

/* A packet waiting for the socket to take it. */
typedef struct gcd_packet {
    struct gcd_packet *next;
    size_t len;
    int nfds;
    int fds[GW_MAX_FDS];   /* our own duplicates, closed once sent */
    uint8_t data[];
} gcd_packet;

typedef struct gcd_session {
    gcd *d;
    uv_poll_t poll;
    int fd;
    bool ctl;              /* a gcompctl session */
    bool closing;
    int slot;              /* trainer's local rank once it said hello, else -1 */
    int pid;
    int uid;               /* the peer's (SO_PEERCRED) */
    bool foreign;          /* another uid: its first request is answered GCOMP_DENIED,
                              then it is closed */
    uint64_t id;
    int64_t opened_ms;     /* when it connected (hello deadline) */
    unsigned nbuckets;     /* buckets this trainer registered (the per-connection limit) */
    struct {               /* a registration sent in several packets, until its last part */
        char name[GCOMP_MAX_NAME + 1];
        gcd_layout layout;
        uint32_t total;
        bool open;
    } reg;
    /* Outgoing packets the socket did not take yet (backpressure), oldest first. */
    gcd_packet *out_head, *out_tail;
    size_t out_n;
    int64_t out_since_ms;  /* when the socket last took one (or the first was queued) */
    bool writable_polled;  /* the poll includes UV_WRITABLE */
    struct gcd_session *next;
} gcd_session;

/* Queue a message for the peer and send what the socket takes now; the rest goes when
   it is writable. fds are duplicated (the caller keeps its own). A full queue (the peer
   stopped reading) closes the session. Returns 0 or an error (then the session is
   closing). */
int gcd_session_send(gcd_session *s, const ProtobufCMessage *m, const int *fds, int nfds);
/* Close the session (a trainer's: its steps fail; see trainer.c). why is logged when
   not NULL. */
void gcd_session_close(gcd_session *s, const char *why);

/* The message a peer of another uid gets (GCOMP_DENIED). */
void gcd_session_denial(const gcd_session *s, char *out, size_t len);

/* trainer.c */
void gcd_trainer_msg(gcd_session *s, const uint8_t *buf, size_t len);
/* A trainer's session closed: its steps fail; its buckets wait for it to come back. */
void gcd_trainer_lost(gcd_session *s);
/* Tell the trainers of the slots in `to` that bucket's step finished. */
void gcd_trainer_complete(gcd *d, uint64_t to, uint32_t bucket, int64_t step, int status,
                          const char *error);
/* The periodic check (loop thread): a bucket step waiting for a slot that never
   registered the bucket fails after --timeout-ms. */
void gcd_trainer_deadlines(gcd *d, int64_t now_ms);

#endif
