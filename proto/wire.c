#include "wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gcomp.h"

int gw_send_packet(int fd, const uint8_t *buf, size_t len, const int *fds, int nfds)
{
    if (len > GW_MAX_MSG || nfds > GW_MAX_FDS)
        return GCOMP_LIMIT;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char raw[CMSG_SPACE(sizeof(int) * GW_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.raw;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EPIPE || errno == ECONNRESET) ? GCOMP_DAEMON_LOST : GCOMP_IO;
    return GCOMP_OK;
}

int gw_send(int fd, const ProtobufCMessage *msg, const int *fds, int nfds)
{
    uint8_t buf[GW_MAX_MSG];
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > sizeof(buf))
        return GCOMP_LIMIT;
    protobuf_c_message_pack(msg, buf);
    return gw_send_packet(fd, buf, len, fds, nfds);
}

int gw_recv(int fd, uint8_t *buf, size_t *len, int *fds, int *nfds)
{
    struct iovec iov = {.iov_base = buf, .iov_len = GW_MAX_MSG};
    union {
        char raw[CMSG_SPACE(sizeof(int) * GW_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.raw,
                        .msg_controllen = sizeof(ctl.raw)};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == ECONNRESET ? GCOMP_DAEMON_LOST : GCOMP_IO;
    if (n == 0)
        return GCOMP_DAEMON_LOST;

    int got = 0, rc = GCOMP_OK;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int tmp[GW_MAX_FDS];
        memcpy(tmp, CMSG_DATA(cm), sizeof(int) * (size_t)(k < GW_MAX_FDS ? k : GW_MAX_FDS));
        for (int i = 0; i < k && i < GW_MAX_FDS; i++)
            fds[got++] = tmp[i];
    }
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || got > GW_MAX_FDS) {
        for (int i = 0; i < got; i++)
            close(fds[i]);
        got = 0;
        rc = GCOMP_LIMIT;
    }
    *len = (size_t)n;
    *nfds = got;
    return rc;
}

void gw_strlcpy(char *dst, const char *src, size_t size)
{
    if (!size)
        return;
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}
