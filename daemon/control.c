/*
 * control.c: the control socket's commands (gcompctl), on the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* mkdir -p of an absolute path; errno is set on failure. */
static int mkdirs(const char *dir)
{
    char p[GCD_TRACE_DIR_MAX + 1];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        int rc = mkdir(p, 0755);
        *c = '/';
        if (rc < 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* Check a trace start here (the coordinator refuses a second recording asked on two
   nodes at once): its arguments, the directory (created, writable, not holding a trace
   already), a bucket to record. Returns 0 or a status with out saying what is wrong. */
static int trace_start_check(gcd *d, char **args, size_t nargs, char *out, size_t len)
{
    if (nargs != 3) {
        snprintf(out, len, "trace start takes DIR STEPS BUCKETS (gcompctl trace start DIR "
                           "[--steps N] [--buckets GLOB])");
        return GCOMP_INVALID;
    }
    const char *dir = args[0], *glob = args[2];
    char *end;
    long long steps = strtoll(args[1], &end, 10);
    if (!args[1][0] || *end || steps < 0) {
        snprintf(out, len, "trace start: steps must be an integer >= 0 (0: until trace "
                           "stop), not '%.64s'", args[1]);
        return GCOMP_INVALID;
    }
    if (dir[0] != '/' || strlen(dir) > GCD_TRACE_DIR_MAX - 32 || strchr(dir, '\n')) {
        snprintf(out, len, "trace start: the directory must be an absolute path of at most "
                           "%d bytes without newlines", GCD_TRACE_DIR_MAX - 32);
        return GCOMP_INVALID;
    }
    if (!glob[0] || strlen(glob) > 100 || strchr(glob, '\n')) {
        snprintf(out, len, "trace start: --buckets needs a pattern of 1..100 bytes without "
                           "newlines");
        return GCOMP_INVALID;
    }
    pthread_mutex_lock(&d->mu);
    bool busy = d->trace.state == GCD_TRACE_RECORDING || d->trace.asked;
    char cur[GCD_TRACE_DIR_MAX + 1];
    snprintf(cur, sizeof(cur), "%s", d->trace.dir);
    long long from = (long long)d->trace.from;
    bool asked = d->trace.asked;
    size_t matched = 0, n = 0;
    char names[512] = "";
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        const gcd_bucket *b = d->buckets[i];
        if (!b || b->dying)
            continue;
        matched += fnmatch(glob, b->name, 0) == 0;
        if (n < sizeof(names))
            n += (size_t)snprintf(names + n, sizeof(names) - n, "%s'%s'", n ? ", " : "", b->name);
    }
    pthread_mutex_unlock(&d->mu);
    if (busy && asked) {
        snprintf(out, len, "a trace start asked on this node is being decided: wait for it, "
                           "or gcompctl trace stop");
        return GCOMP_BUSY;
    }
    if (busy) {
        snprintf(out, len, "already recording into %s (from step %lld): gcompctl trace stop "
                           "first", cur, from);
        return GCOMP_BUSY;
    }
    if (!n) {
        snprintf(out, len, "trace start: no bucket is registered on node %d yet; start the "
                           "recording once the trainers have registered their buckets", d->node);
        return GCOMP_INVALID;
    }
    if (!matched) {
        snprintf(out, len, "trace start: no registered bucket matches '%s' (registered: %s)",
                 glob, names);
        return GCOMP_INVALID;
    }
    struct stat st;
    char path[GCD_TRACE_DIR_MAX + 32];
    if (mkdirs(dir) < 0 || stat(dir, &st) < 0) {
        snprintf(out, len, "trace start: cannot create the directory %s: %s", dir, strerror(errno));
        return GCOMP_IO;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(out, len, "trace start: %s exists and is not a directory", dir);
        return GCOMP_IO;
    }
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    if (access(path, F_OK) == 0) {
        snprintf(out, len, "trace start: %s already holds a trace (manifest.json): choose "
                           "another directory or remove it", dir);
        return GCOMP_INVALID;
    }
    /* access() says yes to root on a read-only mount: try a file. */
    snprintf(path, sizeof(path), "%s/.gcomp-probe-%d", dir, d->node);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(out, len, "trace start: cannot write in %s: %s", dir, strerror(errno));
        return GCOMP_IO;
    }
    close(fd);
    unlink(path);
    return GCOMP_OK;
}

static const char *trace_state_name(int state)
{
    switch (state) {
    case GCD_TRACE_RECORDING: return "recording";
    case GCD_TRACE_FINISHED: return "finished";
    case GCD_TRACE_FAILED: return "failed";
    default: return "idle";
    }
}

static int cmd_trace_status(gcd *d, int json, char *out, size_t len)
{
    pthread_mutex_lock(&d->mu);
    const char *state = trace_state_name(d->trace.state);
    if (json) {
        size_t n = (size_t)snprintf(out, len, "{\"state\":\"%s\",\"id\":%llu,\"node\":%d,"
                                    "\"dir\":", state, (unsigned long long)d->trace.id, d->node);
        n += gk_json_str(out + n, n < len ? len - n : 0, d->trace.dir);
        n += (size_t)snprintf(out + n, n < len ? len - n : 0,
                              ",\"from_step\":%lld,\"end_step\":%lld,\"written\":%lld,"
                              "\"complete\":%lld,\"error\":",
                              (long long)d->trace.from, (long long)d->trace.end,
                              (long long)d->trace.written, (long long)d->trace.complete);
        if (d->trace.error[0])
            n += gk_json_str(out + n, n < len ? len - n : 0, d->trace.error);
        else
            n += (size_t)snprintf(out + n, n < len ? len - n : 0, "null");
        snprintf(out + n, n < len ? len - n : 0, "}");
    } else if (d->trace.state == GCD_TRACE_IDLE) {
        snprintf(out, len, "not recording (gcompctl trace start DIR)\n");
    } else {
        char end[64] = "until trace stop";
        if (d->trace.end >= 0)
            snprintf(end, sizeof(end), "to step %lld", (long long)d->trace.end - 1);
        size_t n = (size_t)snprintf(out, len, "trace %llu %s: %s, steps from %lld %s; %lld "
                                    "written on node %d", (unsigned long long)d->trace.id,
                                    state, d->trace.dir, (long long)d->trace.from, end,
                                    (long long)d->trace.written, d->node);
        if (d->trace.state != GCD_TRACE_RECORDING && n < len)
            n += (size_t)snprintf(out + n, len - n, ", %lld complete on every node",
                                  (long long)d->trace.complete);
        if (d->trace.error[0] && n < len)
            n += (size_t)snprintf(out + n, len - n, "\nerror: %s", d->trace.error);
        if (n < len)
            snprintf(out + n, len - n, "\n");
    }
    pthread_mutex_unlock(&d->mu);
    return GCOMP_OK;
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
    if (strcmp(cmd, "trace-start") == 0) {
        int rc = trace_start_check(d, args, nargs, out, len);
        if (rc) {
            gcd_log_warn("trace start refused: %s", out);
            return rc;
        }
        char text[GCD_TRACE_DIR_MAX + 256];
        snprintf(text, sizeof(text), "%s\n%s", args[2], args[0]);
        pthread_mutex_lock(&d->mu);
        d->trace.asked = true;
        pthread_mutex_unlock(&d->mu);
        gcd_log_info("trace start into %s asked", args[0]);
        gcd_to_engine(d, GCD_EV_TRACE, 0, strtoll(args[1], NULL, 10), 1, gcd_session_id(s), text);
        return 1;
    }
    if (strcmp(cmd, "trace-stop") == 0) {
        if (nargs) {
            snprintf(out, len, "trace stop takes no argument");
            return GCOMP_INVALID;
        }
        return to_engine(d, GCD_EV_TRACE, gcd_session_id(s), 0, "", out, len);
    }
    if (strcmp(cmd, "trace-status") == 0)
        return cmd_trace_status(d, json, out, len);
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
                       "policy-log [N], checkpoint-save DIR, trace-start DIR STEPS GLOB, "
                       "trace-stop, trace-status, query ARGS, shutdown",
             cmd);
    return GCOMP_INVALID;
}
