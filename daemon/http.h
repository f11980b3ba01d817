/*
 * http.h: --metrics-listen HOST:PORT, a minimal HTTP/1.0 and 1.1 responder on the loop
 * thread that serves GET /metrics (metrics.h) and nothing else. Each connection sends
 * one request (headers at most GCD_HTTP_MAX_REQUEST bytes, within GCD_HTTP_TIMEOUT_MS)
 * and gets one response with Connection: close: 200 for /metrics (a query string is
 * ignored), 404 for another path, 405 for another method than GET, 400 for a request
 * that is malformed or too long. Nothing listens unless the option is given, and only
 * on the address it names.
 */
#ifndef GCD_HTTP_H
#define GCD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GCD_HTTP_MAX_REQUEST 8192 /* bytes of request line and headers */
#define GCD_HTTP_TIMEOUT_MS 10000 /* a connection still open this long is closed */
#define GCD_HTTP_MAX_CONNS 32     /* connections at once; more are closed at once */

struct gcd;

/* Parse --metrics-listen's value as node's address: "HOST:PORT", HOST a numeric IPv4
   address or a bracketed IPv6 one ("[::1]:9100"), PORT in 0..65535 (0: any free port)
   or "PORT+node" (node k listens on PORT+k, for several nodes on one host; PORT >= 1).
   Fills *sa and shown ("127.0.0.1:9101", the node's port). Returns 0, or GCOMP_INVALID
   with err quoting the value and what is wrong. Any thread. */
int gcd_http_addr(const char *spec, int node, struct sockaddr_storage *sa, char *shown,
                  size_t shownlen, char *err, size_t errlen);

/* Listen on d->cfg.metrics_listen (nothing when empty) on d->loop, before the loop
   runs, and log "metrics on http://ADDRESS/metrics" with the port bound. Returns 0, or
   GCOMP_INVALID / GCOMP_IO / GCOMP_NOMEM, logged naming the address. Loop thread. */
int gcd_http_start(struct gcd *d);

/* "http://ADDRESS:PORT/metrics" with the port bound, or NULL when not listening. Loop
   thread. */
const char *gcd_http_url(const struct gcd *d);

/* Close the connections open longer than GCD_HTTP_TIMEOUT_MS (the loop's tick). */
void gcd_http_deadlines(struct gcd *d, int64_t now_ms);

/* Close the listener and every connection (the loop stops). Loop thread. */
void gcd_http_close(struct gcd *d);

#endif
