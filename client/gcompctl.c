/*
 * gcompctl: the control socket's command-line client.
 *   gcompctl [--socket PATH] [--json] status | stats [--prometheus] | policy get |
 *            policy set SPEC | trace start DIR [--steps N] [--buckets GLOB] |
 *            trace stop | trace status | shutdown
 * PATH defaults to $GCOMP_CTL (set by gcomp-run for every trainer).
 */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gcomp.h"
#include "wire.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: gcompctl [--socket PATH] [--json] [--timeout-ms MS] COMMAND\n\n"
            "commands:\n"
            "  status            the daemon, its trainers, buckets and policy\n"
            "  stats             bytes and times per bucket\n"
            "  stats --prometheus\n"
            "                    this node's metrics in the Prometheus text format (what\n"
            "                    gcompd --metrics-listen serves at /metrics)\n"
            "  policy get        the policy in force\n"
            "  policy set SPEC   switch every node to SPEC at the same step (e.g. 'none',\n"
            "                    'static:codec=none'); prints the step it applies from\n"
            "  policy log [N]    the last N (50) decisions: step, layer, old, new, why\n"
            "  whatif --nodes P --bandwidth B [--latency-us L]\n"
            "                    predicted step time per codec on such a cluster, from the\n"
            "                    constants the perfmodel policy measured (B: 10gbit, 25gbps...)\n"
            "  query ARGS...     any other question for the policy in force\n"
            "  checkpoint save DIR\n"
            "                    every node saves its error feedback, codec and policy state\n"
            "                    at the same point (restart with gcompd --restore DIR)\n"
            "  trace start DIR [--steps N] [--buckets GLOB]\n"
            "                    record what every trainer submits, from the same step on\n"
            "                    every node, as a gcomp-trace/1 trace in DIR (a directory\n"
            "                    every node can write; N steps, default until trace stop;\n"
            "                    the buckets whose names match GLOB, default all) for\n"
            "                    gcomp-replay; prints the steps it records\n"
            "  trace stop        end the recording at the same step on every node\n"
            "  trace status      the recording's progress on this node\n"
            "  shutdown          stop every daemon of the job\n\n"
            "PATH defaults to $GCOMP_CTL (a daemon's DIR/node{k}.ctl).\n");
}

/* The options are gcompctl's own wherever they stand (gcompctl stats --json), except
   after whatif/query, whose arguments are the policy's; the rest is the command. */
static int parse_options(int argc, char **argv, const char **path, int *json, int *prometheus,
                         int *timeout_ms, char **rest, int *nrest)
{
    *nrest = 0;
    bool query = false, trace = false;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        bool ours = !query && strncmp(o, "--", 2) == 0;
        if (ours && trace && (strcmp(o, "--steps") == 0 || strcmp(o, "--buckets") == 0)) {
            /* trace start's own options, with their values: the command reads them. */
            rest[(*nrest)++] = argv[a];
            if (a + 1 < argc)
                rest[(*nrest)++] = argv[++a];
        } else if (ours && strcmp(o, "--json") == 0) {
            *json = 1;
        } else if (ours && strcmp(o, "--prometheus") == 0) {
            *prometheus = 1;
        } else if (ours && strcmp(o, "--socket") == 0) {
            if (a + 1 >= argc || !argv[a + 1][0]) {
                fprintf(stderr, "gcompctl: --socket needs a path\n");
                return 2;
            }
            *path = argv[++a];
        } else if (ours && strcmp(o, "--timeout-ms") == 0) {
            char *end;
            long v = a + 1 < argc ? strtol(argv[a + 1], &end, 10) : 0;
            if (a + 1 >= argc || end == argv[a + 1] || *end || v < 1 || v > 86400000) {
                fprintf(stderr, "gcompctl: --timeout-ms needs milliseconds in 1..86400000\n");
                return 2;
            }
            *timeout_ms = (int)v;
            a++;
        } else if (ours && strcmp(o, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (ours) {
            fprintf(stderr, "gcompctl: unknown option '%s'\n", o);
            usage(stderr);
            return 2;
        } else {
            if (*nrest == 0 && (strcmp(o, "whatif") == 0 || strcmp(o, "query") == 0))
                query = true;
            if (*nrest == 0 && strcmp(o, "trace") == 0)
                trace = true;
            rest[(*nrest)++] = argv[a];
        }
    }
    return 0;
}

/* trace start DIR [--steps N] [--buckets GLOB] | trace stop | trace status: the daemon's
   trace-start DIR STEPS GLOB (DIR made absolute), trace-stop, trace-status. Returns 0,
   or 1 with the error printed. */
static int trace_args(char **args, int nargs, char *cmd, size_t cmdlen, char ***out, int *nout)
{
    static char *targs[3];
    static char abs_dir[4096];
    const char *what = nargs > 0 ? args[0] : "";
    if (strcmp(what, "stop") == 0 || strcmp(what, "status") == 0) {
        if (nargs != 1) {
            fprintf(stderr, "gcompctl: 'trace %s' takes no argument\n", what);
            return 1;
        }
        snprintf(cmd, cmdlen, "trace-%s", what);
        *nout = 0;
        return 0;
    }
    if (strcmp(what, "start") != 0) {
        fprintf(stderr, "gcompctl: 'trace start DIR [--steps N] [--buckets GLOB]', 'trace stop' "
                        "or 'trace status'\n");
        return 1;
    }
    const char *dir = NULL, *steps = "0", *glob = "*";
    for (int i = 1; i < nargs; i++) {
        if (strcmp(args[i], "--steps") == 0 || strcmp(args[i], "--buckets") == 0) {
            if (i + 1 >= nargs || !args[i + 1][0]) {
                fprintf(stderr, "gcompctl: trace start %s needs a value\n", args[i]);
                return 1;
            }
            if (args[i][2] == 's') {
                char *end;
                long long v = strtoll(args[i + 1], &end, 10);
                if (*end || v < 1) {
                    fprintf(stderr, "gcompctl: trace start --steps needs an integer >= 1, not "
                                    "'%s'\n", args[i + 1]);
                    return 1;
                }
                steps = args[i + 1];
            } else {
                glob = args[i + 1];
            }
            i++;
        } else if (!dir && args[i][0]) {
            dir = args[i];
        } else {
            fprintf(stderr, "gcompctl: trace start takes one directory, then --steps N and "
                            "--buckets GLOB (unexpected '%s')\n", args[i]);
            return 1;
        }
    }
    if (!dir) {
        fprintf(stderr, "gcompctl: 'trace start DIR': the directory to record into is missing\n");
        return 1;
    }
    if (strlen(dir) > 1024) {
        fprintf(stderr, "gcompctl: trace start: the directory path is longer than 1024 bytes\n");
        return 1;
    }
    if (dir[0] != '/' && getcwd(abs_dir, sizeof(abs_dir) - strlen(dir) - 2))
        strcat(strcat(abs_dir, "/"), dir);
    else
        snprintf(abs_dir, sizeof(abs_dir), "%s", dir);
    targs[0] = abs_dir;
    targs[1] = (char *)steps;
    targs[2] = (char *)glob;
    snprintf(cmd, cmdlen, "trace-start");
    *out = targs;
    *nout = 3;
    return 0;
}

/* gcompctl with rest[argc + 1] to put the command's words in. */
static int run(int argc, char **argv, char **rest)
{
    const char *path = getenv("GCOMP_CTL");
    int json = 0, prometheus = 0, timeout_ms = 120000, nrest;
    int prc = parse_options(argc, argv, &path, &json, &prometheus, &timeout_ms, rest, &nrest);
    if (prc)
        return prc == 1 ? 0 : prc;
    if (nrest == 0) {
        usage(stderr);
        return 2;
    }
    if (!rest[0][0]) {
        fprintf(stderr, "gcompctl: empty command; valid: status, stats, policy, whatif, query, "
                        "checkpoint, trace, shutdown\n");
        return 2;
    }
    if (prometheus && (strcmp(rest[0], "stats") || nrest != 1)) {
        fprintf(stderr, "gcompctl: --prometheus goes with 'stats' alone (gcompctl stats "
                        "--prometheus)\n");
        return 2;
    }
    if (prometheus && json) {
        fprintf(stderr, "gcompctl: --prometheus and --json exclude each other\n");
        return 2;
    }
    argv = rest - 1; /* the command at argv[1], as the code below reads it */
    argc = nrest + 1;
    int a = 1;
    char cmd[32];
    char **args = argv + a + 1;
    int nargs = argc - a - 1;
    if (strcmp(argv[a], "policy") == 0) {
        if (nargs < 1 || (strcmp(args[0], "get") && strcmp(args[0], "set") && strcmp(args[0], "log"))) {
            fprintf(stderr, "gcompctl: 'policy get', 'policy set SPEC' or 'policy log [N]'\n");
            return 2;
        }
        snprintf(cmd, sizeof(cmd), "policy-%s", args[0]);
        args++;
        nargs--;
        if (strcmp(cmd, "policy-set") == 0 && (nargs != 1 || !args[0][0])) {
            fprintf(stderr, "gcompctl: 'policy set SPEC' takes one spec, not empty\n");
            return 2;
        }
    } else if (strcmp(argv[a], "checkpoint") == 0) {
        if (nargs != 2 || strcmp(args[0], "save") || !args[1][0]) {
            fprintf(stderr, "gcompctl: 'checkpoint save DIR' (a directory, not empty)\n");
            return 2;
        }
        static char abs_dir[4096];
        if (args[1][0] != '/' && getcwd(abs_dir, sizeof(abs_dir) - strlen(args[1]) - 2))
            strcat(strcat(abs_dir, "/"), args[1]);
        else
            snprintf(abs_dir, sizeof(abs_dir), "%s", args[1]);
        snprintf(cmd, sizeof(cmd), "checkpoint-save");
        static char *ckargs[1];
        ckargs[0] = abs_dir;
        args = ckargs;
        nargs = 1;
    } else if (strcmp(argv[a], "trace") == 0) {
        if (trace_args(args, nargs, cmd, sizeof(cmd), &args, &nargs))
            return 2;
    } else if (strcmp(argv[a], "whatif") == 0) {
        /* The policy answers; the command name travels as the first argument. */
        snprintf(cmd, sizeof(cmd), "query");
        args = argv + a;
        nargs = argc - a;
    } else if (prometheus) {
        /* The daemon's stats command with one argument: the metrics text. */
        snprintf(cmd, sizeof(cmd), "stats");
        static char *promargs[1] = {"prometheus"};
        args = promargs;
        nargs = 1;
    } else {
        snprintf(cmd, sizeof(cmd), "%s", argv[a]);
    }
    if (!path || !*path) {
        fprintf(stderr, "gcompctl: no control socket: give --socket PATH or set GCOMP_CTL\n");
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "gcompctl: socket path too long: %s\n", path);
        return 2;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "gcompctl: cannot connect to %s: %m\n", path);
        return 1;
    }
    Gcomp__CtlRequest req = GCOMP__CTL_REQUEST__INIT;
    req.cmd = cmd;
    req.args = args;
    req.n_args = (size_t)nargs;
    req.json = json;
    int rc = gw_send(fd, &req.base, NULL, 0);
    if (rc) {
        fprintf(stderr, "gcompctl: send to %s: %s\n", path, gcomp_strerror(rc));
        return 1;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0) {
        fprintf(stderr, "gcompctl: no answer from %s in %d ms\n", path, timeout_ms);
        return 1;
    }
    static uint8_t buf[GW_MAX_MSG];
    size_t len;
    int fds[GW_MAX_FDS], nfds = 0;
    rc = gw_recv(fd, buf, &len, fds, &nfds);
    close(fd);
    if (rc) {
        fprintf(stderr, "gcompctl: no answer from %s: %s\n", path, gcomp_strerror(rc));
        return 1;
    }
    Gcomp__CtlReply *r = gcomp__ctl_reply__unpack(NULL, len, buf);
    if (!r) {
        fprintf(stderr, "gcompctl: undecodable answer from %s\n", path);
        return 1;
    }
    int status = r->status;
    size_t tl = strlen(r->text);
    if (status) {
        fprintf(stderr, "gcompctl: %s: %s\n", gcomp_err_name(status), r->text);
    } else {
        fputs(r->text, stdout);
        if (tl && r->text[tl - 1] != '\n')
            fputc('\n', stdout);
    }
    gcomp__ctl_reply__free_unpacked(r, NULL);
    return status ? 1 : 0;
}

int main(int argc, char **argv)
{
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    if (!rest)
        return 1;
    int rc = run(argc, argv, rest);
    free(rest);
    return rc;
}
