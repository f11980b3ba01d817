/*
 * liveness.c: UDP pings between the daemons of a job (liveness.h). A ping and its
 * answer are one 24-byte datagram: magic, the job's token, the asking node and the
 * ping's number; a datagram with another token is ignored.
 */
#include "liveness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "gcomp.h"
#include "log.h"

#define LIVE_MAGIC 0x47434c56u /* "GCLV" */
#define LIVE_ADDRS 8           /* IPv4 addresses published per node */

/* What every node publishes at start-up. */
typedef struct live_addr {
    uint16_t port;             /* network order */
    uint16_t n;
    uint32_t addr[LIVE_ADDRS]; /* network order */
} live_addr;

typedef struct live_msg {
    uint32_t magic;
    uint32_t node;
    uint64_t token;
    uint64_t id;
} live_msg;

struct gcd_live {
    int node, nodes;
    uint64_t token;
    bool on;              /* the start-up check got answers from every node */
    uv_udp_t answer;      /* loop thread */
    int ask;              /* engine thread: pings go out and answers come back here */
    uint64_t id;
    live_addr *peers;     /* [nodes] */
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    static char space[64];
    (void)h;
    *buf = uv_buf_init(space, sizeof(space));
}

/* Loop thread: answer a ping of this job with the same datagram. */
static void on_ping(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    (void)flags;
    gcd_live *l = h->data;
    live_msg m;
    if (n != (ssize_t)sizeof(m) || !from)
        return;
    memcpy(&m, buf->base, sizeof(m));
    if (m.magic != LIVE_MAGIC || m.token != l->token)
        return;
    uv_buf_t out = uv_buf_init(buf->base, sizeof(m));
    uv_udp_try_send(h, &out, 1, from);
}

/* This host's IPv4 addresses, loopback last (emulated nodes use it). */
static void local_addrs(live_addr *me)
{
    struct ifaddrs *ifs, *i;
    uint32_t lo = htonl(INADDR_LOOPBACK);
    me->n = 0;
    if (getifaddrs(&ifs) == 0) {
        for (i = ifs; i && me->n < LIVE_ADDRS - 1; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET) {
                uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
                if (a != lo)
                    me->addr[me->n++] = a;
            }
        freeifaddrs(ifs);
    }
    me->addr[me->n++] = lo;
}

int gcd_live_start(gcd_ctl *ctl, uv_loop_t *loop, gcd_live **out)
{
    int nodes = gcd_ctl_nodes(ctl);
    gcd_live *l = calloc(1, sizeof(*l));
    uint64_t *tokens = calloc((size_t)nodes, sizeof(uint64_t));
    if (!l || !tokens || !(l->peers = calloc((size_t)nodes, sizeof(live_addr)))) {
        free(tokens);
        if (l)
            free(l->peers);
        free(l);
        return GCOMP_NOMEM; /* start-up fails: the job is aborted */
    }
    l->node = gcd_ctl_node(ctl);
    l->nodes = nodes;
    l->ask = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    live_addr me = {0};
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    bool udp = uv_udp_init(loop, &l->answer) == 0;
    bool ok = udp && l->ask >= 0 && uv_udp_bind(&l->answer, (struct sockaddr *)&any, 0) == 0;
    if (ok) {
        struct sockaddr_in bound;
        int blen = sizeof(bound);
        uv_udp_getsockname(&l->answer, (struct sockaddr *)&bound, &blen);
        me.port = bound.sin_port;
        local_addrs(&me);
    } else {
        gcd_log_warn("liveness: no UDP socket here: a node that stops answering will be "
                     "reported without its number");
    }
    /* The token: node 0's random number, so strangers' datagrams are ignored. Every node
       takes part in both exchanges, whatever happened above. */
    uint64_t token = 0;
    if (getrandom(&token, sizeof(token), 0) != sizeof(token))
        token = (uint64_t)gk_now_ms() * 2654435761u;
    int rc = gcd_ctl_allgather_u64(ctl, token, tokens);
    if (!rc)
        rc = gcd_ctl_allgather_bytes(ctl, &me, sizeof(me), l->peers);
    l->token = tokens[0];
    free(tokens);
    if (rc || !ok) {
        if (udp)
            uv_close((uv_handle_t *)&l->answer, NULL);
        if (l->ask >= 0)
            close(l->ask);
        free(l->peers);
        free(l);
        *out = NULL;
        return rc; /* 0 without a socket here: liveness is off, the job goes on */
    }
    l->answer.data = l;
    uv_udp_recv_start(&l->answer, on_alloc, on_ping);
    *out = l;
    return GCOMP_OK;
}

/* Ping everyone; ok[w] tells who answered within wait_ms. */
static void ping_all(gcd_live *l, int wait_ms, bool *ok)
{
    live_msg m = {.magic = LIVE_MAGIC, .node = (uint32_t)l->node, .token = l->token,
                  .id = ++l->id};
    int left = 0;
    for (int w = 0; w < l->nodes; w++) {
        ok[w] = w == l->node;
        if (ok[w])
            continue;
        left++;
        for (int a = 0; a < l->peers[w].n && a < LIVE_ADDRS; a++) {
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = l->peers[w].port,
                                     .sin_addr.s_addr = l->peers[w].addr[a]};
            sendto(l->ask, &m, sizeof(m), MSG_NOSIGNAL, (struct sockaddr *)&to, sizeof(to));
        }
    }
    int64_t deadline = gk_now_ms() + wait_ms;
    while (left > 0) {
        int64_t now = gk_now_ms();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = l->ask, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        live_msg r;
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        while (recvfrom(l->ask, &r, sizeof(r), 0, (struct sockaddr *)&from, &flen) == sizeof(r)) {
            flen = sizeof(from);
            if (r.magic != LIVE_MAGIC || r.token != l->token || r.id != m.id)
                continue;
            /* The answer comes from the peer's answering socket: match its port. */
            for (int w = 0; w < l->nodes; w++)
                if (!ok[w] && from.sin_port == l->peers[w].port) {
                    for (int a = 0; a < l->peers[w].n; a++)
                        if (from.sin_addr.s_addr == l->peers[w].addr[a]) {
                            ok[w] = true;
                            left--;
                            break;
                        }
                }
        }
    }
}

void gcd_live_verify(gcd_live *l, int wait_ms)
{
    bool *ok = calloc((size_t)l->nodes, sizeof(bool));
    if (!ok)
        return;
    /* A peer's loop thread may start a little later: a few rounds. */
    int64_t deadline = gk_now_ms() + wait_ms;
    bool all = false;
    while (!all && gk_now_ms() < deadline) {
        ping_all(l, 200, ok);
        all = true;
        for (int w = 0; w < l->nodes; w++)
            all &= ok[w];
    }
    l->on = all;
    if (!all)
        for (int w = 0; w < l->nodes; w++)
            if (!ok[w]) {
                gcd_log_warn("liveness pings (UDP) to node %d get no answer: a node that "
                             "stops answering will be reported without its number", w);
                break;
            }
    free(ok);
}

int gcd_live_check(gcd_live *l, int wait_ms, int *node)
{
    *node = -1;
    if (!l || !l->on)
        return GCOMP_NOT_FOUND;
    bool *ok = calloc((size_t)l->nodes, sizeof(bool));
    if (!ok)
        return GCOMP_NOMEM;
    ping_all(l, wait_ms, ok);
    for (int w = 0; w < l->nodes && *node < 0; w++)
        if (!ok[w])
            *node = w;
    free(ok);
    return GCOMP_OK;
}

void gcd_live_close(gcd_live *l)
{
    if (l && !uv_is_closing((uv_handle_t *)&l->answer)) {
        uv_udp_recv_stop(&l->answer);
        uv_close((uv_handle_t *)&l->answer, NULL);
    }
}

void gcd_live_free(gcd_live *l)
{
    if (!l)
        return;
    if (l->ask >= 0)
        close(l->ask);
    free(l->peers);
    free(l);
}
