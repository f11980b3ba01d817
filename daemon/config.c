#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gcomp.h"
#include "http.h"
#include "log.h"
#include "wire.h"

/* Every key, its default and its documentation, in one table. */
static const struct gcd_key {
    const char *key, *def, *help;
} keys[] = {
    {"job-id", "", "job id every trainer must present (required)"},
    {"dir", "", "directory of the sockets node{k}.sock and node{k}.ctl, created 0700;"
                " default /tmp/gcomp-<job-id>"},
    {"trainers", "1", "trainers per node: T for every node, or T0,T1,... one per node"},
    {"policy", "static:codec=none", "adaptive policy spec NAME[:key=value,...]"},
    {"codec", "", "codec spec for every eligible layer; shorthand for --policy static:codec=SPEC"},
    {"transport", "mpi", "data transport between daemons (see the list below); the control "
                         "plane is always MPI"},
    {"threads", "0", "worker threads for codec work (encode, decode, local sums, policy "
                     "statistics); 0: the cores this process may use, at most 8"},
    {"lanes", "4", "bucket steps in flight at once: one bucket's local sum and encode "
                   "overlap another's exchange"},
    {"max-buckets", "4096", "buckets a daemon holds at once (and one trainer registers);"
                            " more are refused with GCOMP_LIMIT"},
    {"max-bytes", "0", "shared memory for buckets in bytes (k, m, g suffixes); a bucket that"
                       " would go beyond is refused with GCOMP_LIMIT; 0: the machine's"
                       " memory"},
    {"hello-timeout-ms", "10000", "a connection that sends no hello this long is closed"},
    {"stats-file", "", "JSON lines, one per step and bucket, written by node 0; with {node}"
                       " in the path every node writes its own"},
    {"decision-log", "", "JSON lines, one per layer whose codec or parameter changes (step,"
                         " bucket, layer, old, new, why), written by node 0; {node} as in"
                         " --stats-file. gcompctl policy log shows the latest either way"},
    {"timeline", "", "Chrome trace / Perfetto JSON of every bucket step's phases (wait, sum,"
                     " prepare, collect, encode, collective, decode, result) and policy"
                     " switches, written by node 0; {node} as in --stats-file"},
    {"metrics-listen", "", "serve Prometheus metrics at http://HOST:PORT/metrics from every"
                           " node: HOST a numeric IPv4 or [IPv6] address, PORT 0 for a free"
                           " port (logged), PORT+node for node k on PORT+k (several nodes on"
                           " one host need a port each); off by default"},
    {"restore", "", "start from the checkpoint in this directory (gcompctl checkpoint save"
                    " DIR): error feedback, codec and policy state"},
    {"timeout-ms", "60000", "a node silent this long during negotiation is reported stalled"},
    {"cycle-ms", "5", "longest wait between negotiation cycles when idle"},
    {"seed", "1", "job seed of the shared random generator"},
    {"log-level", "info", "error, warning, info or debug"},
    {"nonfinite", "fail", "non-finite gradient on a node: 'fail' the step on every node with an"
                          " error naming the bucket and layer, or 'skip': that node sends zeros"
                          " for the layer this step (error-feedback state untouched)"},
    {"config", "", "config file of 'key = value' lines with the keys above"},
};
#define NKEYS ((int)(sizeof(keys) / sizeof(keys[0])))

void gcd_config_usage(FILE *out)
{
    fprintf(out, "usage: mpirun -np NODES gcompd --job-id ID [options]\n\n"
                 "One gcompd per node: trainers connect to it through libgcomp-client.\n"
                 "Each option is also read from the environment as GCOMP_<KEY> and from\n"
                 "the config file; the command line wins.\n\noptions:\n");
    for (int i = 0; i < NKEYS; i++)
        fprintf(out, "  --%-12s %s%s%s%s\n", keys[i].key, keys[i].help,
                *keys[i].def ? " (default " : "", keys[i].def, *keys[i].def ? ")" : "");
    fprintf(out, "  --help         this text\n");
}

static int key_index(const char *key)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, key) == 0)
            return i;
    return -1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static int read_file(const char *path, const char **vals, char store[][512], char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return GCOMP_INVALID;
    }
    char line[1024];
    int lineno = 0, rc = GCOMP_OK;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = GCOMP_INVALID;
            break;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        int i = key_index(k);
        if (i < 0 || i == key_index("config")) {
            snprintf(err, errlen, "%s:%d: unknown key '%s' (see gcompd --help)", path, lineno, k);
            rc = GCOMP_INVALID;
            break;
        }
        gw_strlcpy(store[i], v, sizeof(store[i]));
        vals[i] = store[i];
    }
    fclose(f);
    return rc;
}

static int parse_int(const char *key, const char *v, long min, long max, long *out, char *err,
                     size_t errlen)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        snprintf(err, errlen, "--%s: '%s' is not an integer in %ld..%ld", key, v, min, max);
        return GCOMP_INVALID;
    }
    *out = x;
    return GCOMP_OK;
}

/* A byte count with an optional k, m, g or t suffix (powers of 1024). */
static int parse_bytes(const char *key, const char *v, uint64_t *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    int shift = 0;
    if (end != v && *end && !end[1]) {
        const char *units = "kmgt", *u = strchr(units, tolower((unsigned char)*end));
        if (u) {
            shift = 10 * (int)(u - units + 1);
            end++;
        }
    }
    if (errno || end == v || *end || v[0] == '-' || (shift && x > (UINT64_MAX >> shift))) {
        snprintf(err, errlen, "--%s: '%s' is not a byte count (a number, optionally with k, m, "
                 "g or t)", key, v);
        return GCOMP_INVALID;
    }
    *out = (uint64_t)x << shift;
    return GCOMP_OK;
}

static int copy_value(const char *key, const char *v, char *dst, size_t size, char *err,
                      size_t errlen)
{
    if (strlen(v) >= size) {
        snprintf(err, errlen, "--%s: value longer than %zu bytes", key, size - 1);
        return GCOMP_INVALID;
    }
    strcpy(dst, v);
    return GCOMP_OK;
}

int gcd_config_load(int argc, char **argv, gcd_config *cfg, char *err, size_t errlen)
{
    const char *vals[NKEYS];
    static char store[NKEYS][512];
    const char *cli[NKEYS] = {0};
    for (int i = 0; i < NKEYS; i++)
        vals[i] = keys[i].def;

    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            gcd_config_usage(stdout);
            return 1;
        }
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see gcompd --help)", arg);
            return GCOMP_INVALID;
        }
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (n >= sizeof(name)) {
            snprintf(err, errlen, "unknown option '%s' (see gcompd --help)", arg);
            return GCOMP_INVALID;
        }
        memcpy(name, arg + 2, n);
        name[n] = '\0';
        int i = key_index(name);
        if (i < 0) {
            snprintf(err, errlen, "unknown option '--%s' (see gcompd --help)", name);
            return GCOMP_INVALID;
        }
        if (eq)
            cli[i] = eq + 1;
        else if (a + 1 < argc)
            cli[i] = argv[++a];
        else {
            snprintf(err, errlen, "option '--%s' needs a value", name);
            return GCOMP_INVALID;
        }
    }
    /* Config file first, then environment, then command line. */
    int ci = key_index("config");
    const char *cfgfile = cli[ci] ? cli[ci] : getenv("GCOMP_CONFIG");
    if (cfgfile && *cfgfile && read_file(cfgfile, vals, store, err, errlen))
        return GCOMP_INVALID;
    for (int i = 0; i < NKEYS; i++) {
        char env[64] = "GCOMP_";
        size_t n = strlen(env);
        for (const char *k = keys[i].key; *k && n + 1 < sizeof(env); k++)
            env[n++] = *k == '-' ? '_' : (char)toupper((unsigned char)*k);
        env[n] = '\0';
        const char *v = getenv(env);
        if (v && *v)
            vals[i] = v;
        if (cli[i])
            vals[i] = cli[i];
    }

    memset(cfg, 0, sizeof(*cfg));
    long x;
    if (copy_value("job-id", vals[key_index("job-id")], cfg->job_id, sizeof(cfg->job_id), err,
                   errlen) ||
        copy_value("trainers", vals[key_index("trainers")], cfg->trainers, sizeof(cfg->trainers),
                   err, errlen) ||
        copy_value("transport", vals[key_index("transport")], cfg->transport,
                   sizeof(cfg->transport), err, errlen) ||
        copy_value("stats-file", vals[key_index("stats-file")], cfg->stats_file,
                   sizeof(cfg->stats_file), err, errlen) ||
        copy_value("decision-log", vals[key_index("decision-log")], cfg->decision_log,
                   sizeof(cfg->decision_log), err, errlen) ||
        copy_value("timeline", vals[key_index("timeline")], cfg->timeline,
                   sizeof(cfg->timeline), err, errlen) ||
        copy_value("restore", vals[key_index("restore")], cfg->restore, sizeof(cfg->restore),
                   err, errlen) ||
        copy_value("metrics-listen", vals[key_index("metrics-listen")], cfg->metrics_listen,
                   sizeof(cfg->metrics_listen), err, errlen))
        return GCOMP_INVALID;
    if (*cfg->metrics_listen) {
        struct sockaddr_storage sa;
        char shown[96];
        if (gcd_http_addr(cfg->metrics_listen, 0, &sa, shown, sizeof(shown), err, errlen))
            return GCOMP_INVALID;
    }
    if (!*cfg->job_id) {
        snprintf(err, errlen, "--job-id is required (or GCOMP_JOB_ID)");
        return GCOMP_INVALID;
    }
    for (const char *p = cfg->job_id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.')) {
            snprintf(err, errlen, "--job-id '%s': only letters, digits, '-', '_' and '.'",
                     cfg->job_id);
            return GCOMP_INVALID;
        }
    const char *dir = vals[key_index("dir")];
    if (*dir) {
        if (copy_value("dir", dir, cfg->dir, sizeof(cfg->dir), err, errlen))
            return GCOMP_INVALID;
    } else {
        snprintf(cfg->dir, sizeof(cfg->dir), "/tmp/gcomp-%s", cfg->job_id);
    }
    const char *codec = vals[key_index("codec")];
    for (const char *const *k = (const char *const[]){"codec", "policy", NULL}; *k; k++)
        if (cli[key_index(*k)] && !*cli[key_index(*k)]) {
            snprintf(err, errlen, "--%s: empty spec (give a %s, e.g. --codec none)", *k, *k);
            return GCOMP_INVALID;
        }
    if (*codec) {
        if (cli[key_index("policy")]) {
            snprintf(err, errlen, "--codec and --policy exclude each other");
            return GCOMP_INVALID;
        }
        if (snprintf(cfg->policy, sizeof(cfg->policy), "static:codec=%s", codec) >=
            (int)sizeof(cfg->policy)) {
            snprintf(err, errlen, "--codec: value too long");
            return GCOMP_INVALID;
        }
    } else if (copy_value("policy", vals[key_index("policy")], cfg->policy, sizeof(cfg->policy),
                          err, errlen)) {
        return GCOMP_INVALID;
    }
    if (parse_int("timeout-ms", vals[key_index("timeout-ms")], 100, 86400000, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->timeout_ms = (int)x;
    if (parse_int("cycle-ms", vals[key_index("cycle-ms")], 1, 1000, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->cycle_ms = (int)x;
    if (parse_int("seed", vals[key_index("seed")], 0, INT32_MAX, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->seed = (uint64_t)x;
    if (parse_int("threads", vals[key_index("threads")], 0, 256, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->threads = (int)x;
    if (parse_int("lanes", vals[key_index("lanes")], 1, 64, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->lanes = (int)x;
    if (parse_int("max-buckets", vals[key_index("max-buckets")], 1, 1 << 20, &x, err, errlen))
        return GCOMP_INVALID;
    cfg->max_buckets = (int)x;
    if (parse_int("hello-timeout-ms", vals[key_index("hello-timeout-ms")], 10, 86400000, &x, err,
                  errlen))
        return GCOMP_INVALID;
    cfg->hello_timeout_ms = (int)x;
    if (parse_bytes("max-bytes", vals[key_index("max-bytes")], &cfg->max_bytes, err, errlen))
        return GCOMP_INVALID;
    const char *nf = vals[key_index("nonfinite")];
    if (strcmp(nf, "fail") && strcmp(nf, "skip")) {
        snprintf(err, errlen, "--nonfinite: '%s' is not fail or skip", nf);
        return GCOMP_INVALID;
    }
    cfg->nonfinite_skip = strcmp(nf, "skip") == 0;
    const char *lv = vals[key_index("log-level")];
    static const char *const levels[] = {"error", "warning", "info", "debug"};
    cfg->log_level = -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(lv, levels[i]) == 0)
            cfg->log_level = i;
    if (cfg->log_level < 0) {
        snprintf(err, errlen, "--log-level: '%s' is not error, warning, info or debug", lv);
        return GCOMP_INVALID;
    }
    return GCOMP_OK;
}

int gcd_config_trainers(const gcd_config *cfg, int node, int nodes, char *err, size_t errlen)
{
    char buf[sizeof(cfg->trainers)];
    strcpy(buf, cfg->trainers);
    int count = 0, mine = -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), count++) {
        long t;
        if (parse_int("trainers", trim(tok), 1, GCD_MAX_TRAINERS, &t, err, errlen))
            return GCOMP_INVALID;
        if (count == node || (count == 0 && !strchr(cfg->trainers, ',')))
            mine = (int)t;
    }
    if (count != 1 && count != nodes) {
        snprintf(err, errlen, "--trainers '%s': %d values for %d nodes (give 1 or %d)",
                 cfg->trainers, count, nodes, nodes);
        return GCOMP_INVALID;
    }
    return mine;
}
