/*
 * control.c: the control socket's commands (gcompctl), on the loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/json.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "policy.h"

static int cmd_status(gcd *d, int json, char *out, size_t len)
{
    pthread_mutex_lock(&d->mu);
    uint32_t live = 0;
    for (uint32_t i = 0; i < d->nbuckets; i++)
        live += d->buckets[i] && !d->buckets[i]->dying;
    double up = (double)(gk_now_ms() - d->started_ms) / 1000.0;
    if (json) {
        size_t n = (size_t)snprintf(out, len,
                                    "{\"node\":%d,\"nodes\":%d,\"job_id\":\"%s\",\"trainers\":%d,"
                                    "\"connected\":%d,\"total_trainers\":%d,\"transport\":\"%s\","
                                    "\"max_step\":%lld,\"uptime_s\":%.1f,\"policy\":",
                                    d->node, d->nodes, d->cfg.job_id, d->trainers, d->connected,
                                    d->total_trainers, d->data.ops->name,
                                    (long long)d->max_step, up);
        n += gk_json_str(out + n, n < len ? len - n : 0, d->policy_spec);
        char lr[32];
        gk_json_num(lr, sizeof(lr), d->hints.lr, 6); /* a NaN hint is null, not "nan" */
        const char *url = gcd_http_url(d);
        n += (size_t)snprintf(out + n, n < len ? len - n : 0, ",\"metrics\":");
        n += url ? gk_json_str(out + n, n < len ? len - n : 0, url)
                 : (size_t)snprintf(out + n, n < len ? len - n : 0, "null");
        n += (size_t)snprintf(out + n, n < len ? len - n : 0,
                              ",\"policy_epoch\":%llu,\"policy_step\":%lld,\"hints\":{\"count\":%llu,"
                              "\"step\":%lld,\"lr\":%s,\"epochs\":%lld},\"buckets\":[",
                              (unsigned long long)d->policy_epoch, (long long)d->policy_step,
                              (unsigned long long)d->hints.count, (long long)d->hints.step, lr,
                              (long long)d->hints.epochs);
        for (uint32_t i = 0, k = 0; i < d->nbuckets && n < len; i++) {
            const gcd_bucket *b = d->buckets[i];
            if (!b || b->dying)
                continue;
            n += (size_t)snprintf(out + n, len - n, "%s{\"name\":", k++ ? "," : "");
            n += gk_json_str(out + n, n < len ? len - n : 0, b->name);
            n += (size_t)snprintf(out + n, n < len ? len - n : 0,
                                  ",\"layers\":%zu,\"numel\":%zu,\"last_step\":%lld,"
                                  "\"pending_step\":%lld,\"lost\":%s}",
                                  b->layout.n, b->layout.numel, (long long)b->last_step,
                                  (long long)b->pending_step, b->lost[0] ? "true" : "false");
        }
        if (n < len)
            snprintf(out + n, len - n, "]}");
    } else {
        size_t n = (size_t)snprintf(
            out, len,
            "gcompd node %d of %d, job %s, transport %s, up %.1f s\n"
            "trainers: %d of %d connected (%d in the job)\n"
            "policy: %s (epoch %llu, from step %lld)\n"
            "highest step submitted: %lld; hints received: %llu\n"
            "metrics: %s\n"
            "buckets: %u\n",
            d->node, d->nodes, d->cfg.job_id, d->data.ops->name, up, d->connected,
            d->trainers, d->total_trainers, d->policy_spec, (unsigned long long)d->policy_epoch,
            (long long)d->policy_step, (long long)d->max_step, (unsigned long long)d->hints.count,
            gcd_http_url(d) ? gcd_http_url(d) : "off (--metrics-listen)", live);
        for (uint32_t i = 0; i < d->nbuckets && n < len; i++) {
            const gcd_bucket *b = d->buckets[i];
            if (!b || b->dying)
                continue;
            n += (size_t)snprintf(out + n, len - n, "  %-24s %4zu layers %12zu elements, last step %lld%s%s\n",
                                  b->name, b->layout.n, b->layout.numel, (long long)b->last_step,
                                  b->lost[0] ? ", waiting: " : "", b->lost);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return GCOMP_OK;
}

/* The metrics in the Prometheus text format (metrics.h), as the /metrics endpoint
   serves them. */
static int cmd_prometheus(gcd *d, char *out, size_t len)
{
    char *text;
    size_t n;
    if (gcd_metrics_render(d->metrics, &text, &n)) {
        snprintf(out, len, "out of memory rendering the metrics");
        return GCOMP_NOMEM;
    }
    int rc = GCOMP_OK;
    if (n < len) {
        memcpy(out, text, n + 1);
    } else {
        snprintf(out, len, "the metrics text is %zu bytes, more than a control reply holds "
                           "(%zu); scrape them over HTTP instead (gcompd --metrics-listen)",
                 n, len - 1);
        rc = GCOMP_LIMIT;
    }
    free(text);
    return rc;
}

/* Hand a request to the engine thread, which answers through GCD_EV_CTL_REPLY: returns
   1 (the reply comes later) or GCOMP_NOMEM with out saying so. */
static int to_engine(gcd *d, enum gcd_event_kind kind, uint64_t ctl_id, int status,
                     const char *text, char *out, size_t len)
{
    (void)out;
    (void)len;
    gcd_to_engine(d, kind, 0, 0, status, ctl_id, text);
    return 1;
}

int gcd_control_handle(gcd *d, struct gcd_session *s, const char *cmd, char **args, size_t nargs,
                       int json, char *out, size_t len)
{
    if (strcmp(cmd, "status") == 0)
        return cmd_status(d, json, out, len);
    if (strcmp(cmd, "stats") == 0 && nargs == 1 && strcmp(args[0], "prometheus") == 0)
        return cmd_prometheus(d, out, len);
    if (strcmp(cmd, "stats") == 0) {
        if (nargs) {
            snprintf(out, len, "stats takes no argument, or 'prometheus' (not '%.64s')", args[0]);
            return GCOMP_INVALID;
        }
        pthread_mutex_lock(&d->mu);
        gcd_stats_report(&d->stats, json, out, len);
        pthread_mutex_unlock(&d->mu);
        return GCOMP_OK;
    }
    if (strcmp(cmd, "policy-get") == 0) {
        pthread_mutex_lock(&d->mu);
        if (json) {
            size_t n = (size_t)snprintf(out, len, "{\"policy\":");
            n += gk_json_str(out + n, n < len ? len - n : 0, d->policy_spec);
            snprintf(out + n, n < len ? len - n : 0, ",\"epoch\":%llu,\"from_step\":%lld}",
                     (unsigned long long)d->policy_epoch, (long long)d->policy_step);
        } else {
            snprintf(out, len, "%s (epoch %llu, from step %lld)\n", d->policy_spec,
                     (unsigned long long)d->policy_epoch, (long long)d->policy_step);
        }
        pthread_mutex_unlock(&d->mu);
        return GCOMP_OK;
    }
    if (strcmp(cmd, "policy-log") == 0) {
        long want = nargs > 0 ? atol(args[0]) : 50;
        if (want <= 0 || want > GCD_DECLOG_LINES) {
            snprintf(out, len, "policy log takes a line count in 1..%d", GCD_DECLOG_LINES);
            return GCOMP_INVALID;
        }
        pthread_mutex_lock(&d->mu);
        uint64_t total = d->declog_total, from = total > (uint64_t)want ? total - (uint64_t)want : 0;
        if (total - from > GCD_DECLOG_LINES)
            from = total - GCD_DECLOG_LINES;
        size_t n = 0;
        out[0] = '\0';
        if (json)
            n += (size_t)snprintf(out, len, "[");
        for (uint64_t k = from; k < total && n < len; k++)
            n += (size_t)snprintf(out + n, len - n, json ? "%s%s" : "%.0s%s\n",
                                  k > from ? "," : "", d->declog[k % GCD_DECLOG_LINES]);
        if (json && n < len)
            snprintf(out + n, len - n, "]");
        pthread_mutex_unlock(&d->mu);
        return GCOMP_OK;
    }
    if (strcmp(cmd, "policy-set") == 0) {
        if (nargs != 1) {
            snprintf(out, len, "policy set takes one spec, e.g. 'static:codec=none'");
            return GCOMP_INVALID;
        }
        char err[1024];
        gp_instance *p;
        if (gp_instance_create(args[0], NULL, &p, err, sizeof(err))) {
            snprintf(out, len, "%s", err);
            return GCOMP_INVALID;
        }
        gp_instance_destroy(p);
        gcd_log_info("policy switch to '%s' asked", args[0]);
        return to_engine(d, GCD_EV_POLICY, gcd_session_id(s), 0, args[0], out, len);
    }
    if (strcmp(cmd, "checkpoint-save") == 0) {
        if (nargs != 1 || !args[0][0] || args[0][0] != '/' || strlen(args[0]) > 400) {
            snprintf(out, len, "checkpoint save takes one absolute directory path");
            return GCOMP_INVALID;
        }
        return to_engine(d, GCD_EV_CHECKPOINT, gcd_session_id(s), 0, args[0], out, len);
    }
    if (strcmp(cmd, "query") == 0) {
        char joined[1024] = "";
        size_t n = 0;
        for (size_t i = 0; i < nargs && n < sizeof(joined); i++)
            n += (size_t)snprintf(joined + n, sizeof(joined) - n, "%s%s", i ? "\n" : "", args[i]);
        if (nargs == 0 || n >= sizeof(joined)) {
            snprintf(out, len, "query needs arguments (at most %zu bytes), e.g. whatif --nodes 8 "
                               "--bandwidth 10gbit", sizeof(joined) - 1);
            return GCOMP_INVALID;
        }
        return to_engine(d, GCD_EV_QUERY, gcd_session_id(s), json, joined, out, len);
    }
    if (strcmp(cmd, "shutdown") == 0) {
        int rc = to_engine(d, GCD_EV_SHUTDOWN, 0, 0, NULL, out, len);
        if (rc != 1)
            return rc;
        snprintf(out, len, "shutting the job down\n");
        return GCOMP_OK;
    }
    snprintf(out, len, "unknown command '%s'; valid: status, stats, policy-get, policy-set SPEC, "
                       "policy-log [N], checkpoint-save DIR, query ARGS, shutdown",
             cmd);
    return GCOMP_INVALID;
}
