/*
 * wire.h: one protobuf message per SOCK_SEQPACKET packet, with optional fds
 * (SCM_RIGHTS). Shared by the daemon, libgcomp-client and gcompctl.
 */
#ifndef GW_WIRE_H
#define GW_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "gcomp.pb-c.h"

/* Largest packet either side accepts; larger ones are refused with GCOMP_LIMIT. */
#define GW_MAX_MSG (128 * 1024)
/* Most fds one packet carries. */
#define GW_MAX_FDS 4

/*
 * Pack msg and send it as one packet with nfds fds. Blocking unless the socket is
 * non-blocking. Returns 0, GCOMP_LIMIT if the packed message is over GW_MAX_MSG,
 * GCOMP_IO (errno kept) on a send failure, GCOMP_DAEMON_LOST on EPIPE/ECONNRESET.
 */
int gw_send(int fd, const ProtobufCMessage *msg, const int *fds, int nfds);
/* Send an already packed packet (at most GW_MAX_MSG bytes); returns as gw_send, with
   errno EAGAIN when a non-blocking socket is full. */
int gw_send_packet(int fd, const uint8_t *buf, size_t len, const int *fds, int nfds);

/*
 * Receive one packet into buf (GW_MAX_MSG bytes). On success *len is its size and
 * fds[0..*nfds) the fds it carried (the caller owns them). Returns 0,
 * GCOMP_DAEMON_LOST when the peer closed, GCOMP_LIMIT for a packet over GW_MAX_MSG or
 * with too many fds (the fds are closed), GCOMP_IO otherwise (errno kept, EAGAIN too).
 */
int gw_recv(int fd, uint8_t *buf, size_t *len, int *fds, int *nfds);

/* Copy a string into a fixed buffer, truncating; always terminated. */
void gw_strlcpy(char *dst, const char *src, size_t size);

#endif
