/*
 * main.c: gcompd. Parse the settings, start the control plane (MPI: one rank per node)
 * and the data plane, start the loop thread for the sockets, and run the engine on this
 * thread until the job shuts down (gcompctl shutdown, SIGTERM or SIGINT on any node).
 */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "daemon.h"
#include "liveness.h"
#include "gcomp_config.h"
#include "log.h"
#include "policy.h"

static gcd *the_daemon;
static int signal_pipe[2] = {-1, -1};

/* SIGTERM and SIGINT, in whichever thread the kernel picks (MPI's and PMIx's own
   threads may not block them): only a write to the pipe, async-signal-safe. */
static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(signal_pipe[1], &b, 1);
    (void)n;
}

/* The engine hears of a signal (a dead peer's mpirun taking the job down, or a request
   to stop): it finds out which and acts (negotiate.c). */
static void *signal_thread(void *arg)
{
    (void)arg;
    unsigned char b;
    while (read(signal_pipe[0], &b, 1) == 1 && the_daemon) {
        gcd_log_info("signal %d", (int)b);
        pthread_mutex_lock(&the_daemon->mu);
        gcd_queue_push(&the_daemon->to_engine, GCD_EV_SIGNAL, 0, 0, b, 0, NULL);
        pthread_cond_signal(&the_daemon->cv);
        pthread_mutex_unlock(&the_daemon->mu);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static gcd d;
    /* Codecs call BLAS on the engine thread; OpenBLAS's own threads would compete with
       the node's trainers for cores and spin on small products. */
    openblas_set_num_threads(1);
    char err[1024];
    int rc = gcd_config_load(argc, argv, &d.cfg, err, sizeof(err));
    if (rc == 1) {
        char keys[2048];
        printf("\ncodecs (--codec NAME[:key=value,...]):\n");
        for (int i = 0; i < gk_ncodecs; i++) {
            gk_codec_keys_help(gk_codecs[i], keys, sizeof(keys));
            printf("  %-18s %s\n  %-18s keys: %s\n", gk_codecs[i]->name, gk_codecs[i]->summary,
                   "", keys);
        }
        printf("\npolicies (--policy NAME[:key=value,...]):\n");
        for (int i = 0; i < gp_npolicies; i++)
            printf("  %-18s %s\n  %-18s keys: %s\n", gp_policies[i]->name, gp_policies[i]->summary,
                   "", gp_policies[i]->keys_help);
        printf("\ntransports (--transport NAME):\n");
        for (int i = 0; i < gcd_ndata_transports; i++)
            printf("  %-18s %s\n", gcd_data_transports[i]->name, gcd_data_transports[i]->summary);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "gcompd: %s\n", err);
        return 2;
    }
    /* Every bucket holds trainers + 1 descriptors: take what the hard limit allows. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    d.max_shm_bytes = d.cfg.max_bytes ? d.cfg.max_bytes
                                      : (pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page
                                                               : UINT64_MAX);
    gp_instance *check;
    if (gp_instance_create(d.cfg.policy, NULL, &check, err, sizeof(err))) {
        fprintf(stderr, "gcompd: %s\n", err);
        return 2;
    }
    gp_instance_destroy(check);
    const gcd_data_ops *ops = gcd_data_find(d.cfg.transport);
    if (!ops) {
        fprintf(stderr, "gcompd: unknown transport '%s'; gcompd knows:", d.cfg.transport);
        for (int i = 0; i < gcd_ndata_transports; i++)
            fprintf(stderr, " %s", gcd_data_transports[i]->name);
        fprintf(stderr, "\n");
        return 2;
    }

    /* Signals go to one thread; the others (MPI's included) never see them. */
    if (pipe2(signal_pipe, O_CLOEXEC) < 0) {
        fprintf(stderr, "gcompd: pipe: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((rc = gcd_ctl_init(&argc, &argv, d.cfg.lanes, &d.ctl))) {
        fprintf(stderr, "gcompd: MPI: %s\n", gcomp_strerror(rc));
        return 1;
    }
    d.node = gcd_ctl_node(d.ctl);
    d.nodes = gcd_ctl_nodes(d.ctl);
    gcd_log_setup(d.node, d.cfg.log_level);
    /* The data plane: every node starts it, and every node must have it. */
    d.data.ops = ops;
    rc = ops->init(d.ctl, d.cfg.lanes, &d.data.priv, err, sizeof(err));
    uint64_t *started = calloc((size_t)d.nodes, sizeof(uint64_t));
    if (started && gcd_ctl_allgather_u64(d.ctl, rc == 0, started) == 0) {
        for (int w = 0; w < d.nodes && !rc; w++)
            if (!started[w])
                rc = GCOMP_PEER_LOST;
    } else if (!rc) {
        rc = GCOMP_NOMEM;
    }
    free(started);
    if (rc) {
        if (rc != GCOMP_PEER_LOST)
            gcd_log_error("transport %s: %s", ops->name, err[0] ? err : gcomp_strerror(rc));
        if (rc == GCOMP_NOT_BUILT && d.node == 0)
            fprintf(stderr, "gcompd: %s\n", err);
        if (!rc || rc == GCOMP_PEER_LOST || d.data.priv) {
            if (ops->fini)
                ops->fini(d.data.priv);
        }
        gcd_ctl_fini(d.ctl);
        return rc == GCOMP_NOT_BUILT ? 2 : 1;
    }
    d.started_ms = gk_now_ms();
    d.max_step = -1;
    for (int i = 0; i < GCD_HINT_RING; i++)
        d.hint_ring[i].step = -1;
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    snprintf(d.policy_spec, sizeof(d.policy_spec), "%s", d.cfg.policy);
    d.policy_step = 0;

    d.trainers = gcd_config_trainers(&d.cfg, d.node, d.nodes, err, sizeof(err));
    uint64_t *counts = calloc(d.nodes, sizeof(uint64_t));
    /* Every node learns every node's trainer count (and whether it started). */
    rc = counts ? gcd_ctl_allgather_u64(d.ctl, d.trainers > 0 ? (uint64_t)d.trainers : 0, counts)
                : GCOMP_NOMEM;
    for (int w = 0; !rc && w < d.nodes; w++) {
        if (counts[w] == 0) {
            rc = GCOMP_INVALID;
            if (d.node == w)
                gcd_log_error("%s", err);
        }
        if (w < d.node)
            d.first_trainer += (int)counts[w];
        d.total_trainers += (int)counts[w];
    }
    if (!rc && !(d.node_trainers = calloc((size_t)d.nodes, sizeof(int))))
        rc = GCOMP_NOMEM;
    for (int w = 0; !rc && w < d.nodes; w++)
        d.node_trainers[w] = (int)counts[w];
    free(counts);
    if (!rc && gcd_stats_open(&d.stats, d.cfg.stats_file, d.node, err, sizeof(err))) {
        gcd_log_error("%s", err);
        rc = GCOMP_IO;
    }
    if (!rc && (rc = gcd_metrics_create(d.node, d.trainers, &d.metrics)))
        gcd_log_error("metrics: %s", gcomp_strerror(rc));
    if (!rc && (rc = gcd_timeline_open(d.cfg.timeline, d.node, d.cfg.lanes, &d.timeline, err,
                                       sizeof(err))))
        gcd_log_error("%s", err);
    if (!rc)
        rc = gcd_sessions_start(&d);
    /* Every node must be able to serve before any goes on. */
    uint64_t *oks = calloc(d.nodes, sizeof(uint64_t));
    if (oks && gcd_ctl_allgather_u64(d.ctl, rc == 0, oks) == 0)
        for (int w = 0; w < d.nodes; w++)
            if (!oks[w] && !rc)
                rc = GCOMP_PEER_LOST;
    free(oks);
    /* The timeline's origin: every node leaves that allgather at about the same time. */
    gcd_timeline_origin(d.timeline, gk_now_s());
    if (!rc && (rc = gcd_live_start(d.ctl, &d.loop, &d.live)))
        gcd_log_error("liveness: %s", gcomp_strerror(rc));
    if (rc) {
        if (d.node == 0)
            fprintf(stderr, "gcompd: start-up failed (see the messages above)\n");
        gcd_timeline_close(d.timeline);
        gcd_metrics_destroy(d.metrics);
        if (ops->fini)
            ops->fini(d.data.priv);
        gcd_ctl_fini(d.ctl);
        return 1;
    }
    gcd_log_info("serving %d trainer(s) on %s (job %s, %d nodes, %d trainers, policy %s, "
                 "transport %s, gcomp %s)", d.trainers, d.sock_path, d.cfg.job_id, d.nodes,
                 d.total_trainers, d.cfg.policy, ops->name, GCOMP_VERSION);

    the_daemon = &d;
    pthread_t loop_thread, sig_thread;
    pthread_create(&sig_thread, NULL, signal_thread, NULL);
    pthread_detach(sig_thread);
    pthread_create(&loop_thread, NULL, gcd_sessions_run, &d);

    rc = gcd_engine_run(&d);

    pthread_mutex_lock(&d.mu);
    d.stopping = true;
    pthread_mutex_unlock(&d.mu);
    gcd_sessions_wake(&d);
    pthread_join(loop_thread, NULL);
    gcd_stats_close(&d.stats);
    gcd_timeline_close(d.timeline);
    gcd_metrics_destroy(d.metrics);
    gcd_buckets_free(&d);
    free(d.node_trainers);
    gcd_live_free(d.live);
    if (rc) {
        gcd_log_error("the engine stopped: %s; aborting the job", gcomp_strerror(rc));
        gcd_ctl_abort(d.ctl, 1);
        return 1;
    }
    if (ops->fini)
        ops->fini(d.data.priv);
    gcd_ctl_fini(d.ctl);
    gcd_log_info("stopped");
    return 0;
}
