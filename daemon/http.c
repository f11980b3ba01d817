#include "http.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "daemon.h"
#include "gcomp.h"
#include "log.h"

typedef struct http_conn {
    uv_tcp_t tcp;
    struct gcd_http *srv;
    struct http_conn *next;
    int64_t opened_ms;
    bool closing;
    bool answered;        /* the response is written or being written */
    bool shut;            /* it is written and our side shut down */
    bool eof;             /* the peer sent all it will send */
    size_t n;             /* bytes of the request read */
    uv_write_t wr;
    uv_shutdown_t sh;
    char *resp;           /* the response being written, or NULL */
    char req[GCD_HTTP_MAX_REQUEST]; /* once answered: where what follows is discarded */
} http_conn;

typedef struct gcd_http {
    gcd *d;
    uv_tcp_t listener;
    uv_tcp_t spare;       /* takes a connection refused (over the limit, out of memory) */
    bool spare_busy, refuse_pending;
    int handles;          /* listener and spare not yet closed: at 0 this is freed */
    http_conn *conns;
    int nconns;
    bool closing;
    char url[128];        /* http://ADDRESS:PORT/metrics, the port bound */
} gcd_http;

/* ------------------------------------------------------------------ addresses */

int gcd_http_addr(const char *spec, int node, struct sockaddr_storage *sa, char *shown,
                  size_t shownlen, char *err, size_t errlen)
{
    char host[64];
    const char *port;
    bool v6 = spec[0] == '[';
    memset(sa, 0, sizeof(*sa));
    if (v6) {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "--metrics-listen '%s': expected [IPv6]:PORT, e.g. [::1]:9100",
                     spec);
            return GCOMP_INVALID;
        }
        if ((size_t)(close - spec - 1) >= sizeof(host)) {
            snprintf(err, errlen, "--metrics-listen '%s': the host is not a numeric address",
                     spec);
            return GCOMP_INVALID;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - spec - 1), spec + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon) {
            snprintf(err, errlen, "--metrics-listen '%s': expected HOST:PORT, e.g. "
                     "127.0.0.1:9100", spec);
            return GCOMP_INVALID;
        }
        if (memchr(spec, ':', (size_t)(colon - spec))) {
            snprintf(err, errlen, "--metrics-listen '%s': an IPv6 address goes in brackets, "
                     "e.g. [::1]:9100", spec);
            return GCOMP_INVALID;
        }
        if ((size_t)(colon - spec) >= sizeof(host)) {
            snprintf(err, errlen, "--metrics-listen '%s': the host is not a numeric address",
                     spec);
            return GCOMP_INVALID;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
        port = colon + 1;
    }
    if (!host[0]) {
        snprintf(err, errlen, "--metrics-listen '%s': no host (give the address to listen on, "
                 "e.g. 127.0.0.1:9100)", spec);
        return GCOMP_INVALID;
    }
    long p = 0;
    size_t digits = 0;
    while (isdigit((unsigned char)port[digits]) && digits < 6)
        p = p * 10 + (port[digits++] - '0');
    bool plus_node = strcmp(port + digits, "+node") == 0;
    if (!digits || digits > 5 || (port[digits] && !plus_node) || p > 65535) {
        snprintf(err, errlen, "--metrics-listen '%s': the port must be a number in 0..65535, "
                 "optionally with +node", spec);
        return GCOMP_INVALID;
    }
    if (plus_node && p == 0) {
        snprintf(err, errlen, "--metrics-listen '%s': +node needs a port above 0 (port 0 picks "
                 "a free port on every node already)", spec);
        return GCOMP_INVALID;
    }
    if (plus_node)
        p += node;
    if (p > 65535) {
        snprintf(err, errlen, "--metrics-listen '%s': node %d would listen on port %ld, above "
                 "65535", spec, node, p);
        return GCOMP_INVALID;
    }
    int rc = v6 ? uv_ip6_addr(host, (int)p, (struct sockaddr_in6 *)sa)
                : uv_ip4_addr(host, (int)p, (struct sockaddr_in *)sa);
    if (rc) {
        snprintf(err, errlen, "--metrics-listen '%s': '%s' is not a numeric %s address%s", spec,
                 host, v6 ? "IPv6" : "IPv4", v6 ? "" : " (give e.g. 127.0.0.1, or [::1] for IPv6)");
        return GCOMP_INVALID;
    }
    snprintf(shown, shownlen, v6 ? "[%s]:%ld" : "%s:%ld", host, p);
    return GCOMP_OK;
}

/* ------------------------------------------------------------------ connections */

static void on_conn_closed(uv_handle_t *hd)
{
    http_conn *c = hd->data;
    free(c->resp);
    free(c);
}

static void conn_close(http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    gcd_http *h = c->srv;
    for (http_conn **p = &h->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    h->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Closing a socket with bytes of the peer unread makes the kernel reset the connection,
   which may drop the response before the peer reads it (a request over the limit, a
   body). So: write, shut down our side, read and discard until the peer closes its
   side (or GCD_HTTP_TIMEOUT_MS), then close. */
static void on_shut(uv_shutdown_t *sh, int status)
{
    http_conn *c = sh->data;
    c->shut = true;
    if (status || c->eof)
        conn_close(c);
}

static void on_written(uv_write_t *w, int status)
{
    http_conn *c = w->data;
    c->sh.data = c;
    if (status || c->closing || uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, on_shut))
        conn_close(c);
}

/* Answer; the connection closes once it is written (on_shut). body may be NULL when len is 0; ctype NULL: plain
   text; extra: more header lines ("Allow: GET\r\n"), or NULL. */
static void respond(http_conn *c, int code, const char *reason, const char *ctype,
                    const char *body, size_t len, const char *extra)
{
    c->answered = true;
    char head[320];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                      "Connection: close\r\n\r\n",
                      code, reason, ctype ? ctype : "text/plain; charset=utf-8", len,
                      extra ? extra : "");
    if (hn < 0 || (size_t)hn >= sizeof(head) || !(c->resp = malloc((size_t)hn + len))) {
        conn_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hn);
    if (len)
        memcpy(c->resp + hn, body, len);
    uv_buf_t buf = uv_buf_init(c->resp, (unsigned)((size_t)hn + len));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written))
        conn_close(c);
}

static void respond_text(http_conn *c, int code, const char *reason, const char *text,
                         const char *extra)
{
    respond(c, code, reason, NULL, text, strlen(text), extra);
}

static bool is_tchar(char ch)
{
    return isalnum((unsigned char)ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The request's headers are in: its line decides the answer. */
static void answer(http_conn *c, size_t line_len)
{
    const char *line = c->req, *end = c->req + line_len;
    const char *sp1 = memchr(line, ' ', line_len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    for (const char *p = line; p < end; p++)
        if (iscntrl((unsigned char)*p) || (unsigned char)*p >= 0x80) {
            respond_text(c, 400, "Bad Request", "malformed request line: control or non-ASCII "
                         "bytes\n", NULL);
            return;
        }
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1))) {
        respond_text(c, 400, "Bad Request", "malformed request line: expected 'METHOD PATH "
                     "HTTP/1.x'\n", NULL);
        return;
    }
    for (const char *p = line; p < sp1; p++)
        if (!is_tchar(*p)) {
            respond_text(c, 400, "Bad Request", "malformed request line: the method is not a "
                         "token\n", NULL);
            return;
        }
    size_t vlen = (size_t)(end - sp2 - 1);
    if (vlen != 8 || (memcmp(sp2 + 1, "HTTP/1.0", 8) && memcmp(sp2 + 1, "HTTP/1.1", 8))) {
        respond_text(c, 400, "Bad Request", "malformed request line: the version is not "
                     "HTTP/1.0 or HTTP/1.1\n", NULL);
        return;
    }
    if (sp1[1] != '/') {
        respond_text(c, 400, "Bad Request", "malformed request line: the target is not a path "
                     "(such as /metrics)\n", NULL);
        return;
    }
    if (sp1 - line != 3 || memcmp(line, "GET", 3)) {
        respond_text(c, 405, "Method Not Allowed", "only GET is served (GET /metrics)\n",
                     "Allow: GET\r\n");
        return;
    }
    size_t plen = (size_t)(sp2 - sp1 - 1);
    const char *q = memchr(sp1 + 1, '?', plen);
    if (q)
        plen = (size_t)(q - sp1 - 1);
    if (plen != 8 || memcmp(sp1 + 1, "/metrics", 8)) {
        respond_text(c, 404, "Not Found", "not found: gcompd serves /metrics only\n", NULL);
        return;
    }
    char *text;
    size_t len;
    if (gcd_metrics_render(c->srv->d->metrics, &text, &len)) {
        respond_text(c, 500, "Internal Server Error", "out of memory\n", NULL);
        return;
    }
    respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    http_conn *c = hd->data;
    if (c->answered)
        *buf = uv_buf_init(c->req, sizeof(c->req));
    else
        *buf = uv_buf_init(c->req + c->n, (unsigned)(sizeof(c->req) - c->n));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    http_conn *c = s->data;
    if (nread < 0) {
        /* Gone before a whole request, a read error, or the end after the request: close
           now unless the response is still being written. */
        c->eof = true;
        uv_read_stop(s);
        if (!c->answered || c->shut)
            conn_close(c);
        return;
    }
    if (c->answered)
        return; /* discarded */
    c->n += (size_t)nread;
    for (size_t i = 0; i + 3 < c->n; i++)
        if (!memcmp(c->req + i, "\r\n\r\n", 4)) {
            const char *eol = memchr(c->req, '\n', c->n);
            size_t line = (size_t)(eol - c->req);
            answer(c, line > 0 && c->req[line - 1] == '\r' ? line - 1 : line);
            return;
        }
    if (c->n == sizeof(c->req)) {
        char text[96];
        snprintf(text, sizeof(text), "request headers over %d bytes\n", GCD_HTTP_MAX_REQUEST);
        respond_text(c, 400, "Bad Request", text, NULL);
    }
}

/* ------------------------------------------------------------------ the listener */

static void on_handle_closed(uv_handle_t *hd)
{
    gcd_http *h = hd->data;
    if (hd == (uv_handle_t *)&h->spare) {
        h->spare_busy = false;
        if (h->refuse_pending && !h->closing) {
            h->refuse_pending = false;
            uv_tcp_init(&h->d->loop, &h->spare);
            h->spare.data = h;
            h->spare_busy = true;
            uv_accept((uv_stream_t *)&h->listener, (uv_stream_t *)&h->spare);
            uv_close((uv_handle_t *)&h->spare, on_handle_closed);
            return;
        }
    }
    if (--h->handles == 0)
        free(h);
}

/* Take the waiting connection and close it at once (libuv stops accepting until the
   waiting one is taken: when the spare is busy, its close takes it). */
static void refuse(gcd_http *h)
{
    if (h->spare_busy) {
        h->refuse_pending = true;
        return;
    }
    uv_tcp_init(&h->d->loop, &h->spare);
    h->spare.data = h;
    h->spare_busy = true;
    h->handles++;
    uv_accept((uv_stream_t *)&h->listener, (uv_stream_t *)&h->spare);
    uv_close((uv_handle_t *)&h->spare, on_handle_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    gcd_http *h = server->data;
    if (status < 0) {
        gcd_log_warn("metrics endpoint %s: accept: %s", h->url, uv_strerror(status));
        return;
    }
    http_conn *c = h->nconns < GCD_HTTP_MAX_CONNS ? malloc(sizeof(*c)) : NULL;
    if (!c) {
        refuse(h);
        return;
    }
    memset(c, 0, offsetof(http_conn, req));
    uv_tcp_init(&h->d->loop, &c->tcp);
    c->tcp.data = c;
    c->srv = h;
    c->opened_ms = gk_now_ms();
    c->next = h->conns;
    h->conns = c;
    h->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        conn_close(c);
}

int gcd_http_start(gcd *d)
{
    if (!d->cfg.metrics_listen[0])
        return GCOMP_OK;
    struct sockaddr_storage sa;
    char shown[96], err[512];
    if (gcd_http_addr(d->cfg.metrics_listen, d->node, &sa, shown, sizeof(shown), err,
                      sizeof(err))) {
        gcd_log_error("%s", err);
        return GCOMP_INVALID;
    }
    gcd_http *h = calloc(1, sizeof(*h));
    if (!h) {
        gcd_log_error("metrics endpoint %s: out of memory", shown);
        return GCOMP_NOMEM;
    }
    h->d = d;
    h->handles = 1;
    uv_tcp_init(&d->loop, &h->listener);
    h->listener.data = h;
    int rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&sa,
                         sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, on_connection);
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (!rc)
        rc = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
    if (rc) {
        gcd_log_error("metrics endpoint: cannot listen on %s (--metrics-listen %s): %s", shown,
                      d->cfg.metrics_listen, uv_strerror(rc));
        uv_close((uv_handle_t *)&h->listener, on_handle_closed);
        uv_run(&d->loop, UV_RUN_NOWAIT); /* frees h */
        return GCOMP_IO;
    }
    char host[64] = "";
    int port;
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, host, sizeof(host));
        port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        snprintf(h->url, sizeof(h->url), "http://[%s]:%d/metrics", host, port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, host, sizeof(host));
        port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        snprintf(h->url, sizeof(h->url), "http://%s:%d/metrics", host, port);
    }
    d->http = h;
    gcd_log_info("metrics on %s", h->url);
    return GCOMP_OK;
}

const char *gcd_http_url(const gcd *d)
{
    return d->http ? d->http->url : NULL;
}

void gcd_http_deadlines(gcd *d, int64_t now_ms)
{
    gcd_http *h = d->http;
    if (!h)
        return;
    for (http_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (now_ms - c->opened_ms > GCD_HTTP_TIMEOUT_MS)
            conn_close(c);
    }
}

void gcd_http_close(gcd *d)
{
    gcd_http *h = d->http;
    if (!h)
        return;
    d->http = NULL;
    h->closing = true;
    while (h->conns)
        conn_close(h->conns);
    uv_close((uv_handle_t *)&h->listener, on_handle_closed);
}
