/*
 * main.c: gcompd. Parse the settings, start the control plane (MPI: one rank per node)
 * and the data plane, start the loop thread for the sockets, and run the engine on this
 * thread until the job shuts down (gcompctl shutdown, SIGTERM or SIGINT on any node).
 */
#include <cblas.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "daemon.h"
#include "gcomp_config.h"
#include "log.h"
#include "policy.h"

static gcd *the_daemon;

/* A signal asks for a job-wide shutdown, like gcompctl shutdown. */
static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;
    if (sigwait(set, &sig) == 0 && the_daemon) {
        gcd_log_info("signal %d: shutting the job down", sig);
        pthread_mutex_lock(&the_daemon->mu);
        gcd_queue_push(&the_daemon->to_engine, GCD_EV_SHUTDOWN, 0, 0, 0, 0, NULL);
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
        printf("\ncodecs (--codec NAME[:key=value,...]):\n");
        for (int i = 0; i < gk_ncodecs; i++)
            printf("  %-18s %s\n", gk_codecs[i]->name, gk_codecs[i]->summary);
        printf("\npolicies (--policy NAME[:key=value,...]):\n");
        for (int i = 0; i < gp_npolicies; i++)
            printf("  %-18s %s\n", gp_policies[i]->name, gp_policies[i]->summary);
        printf("\ntransports (--transport NAME):\n");
        for (int i = 0; i < gcd_ndata_transports; i++)
            printf("  %-18s %s\n", gcd_data_transports[i]->name, gcd_data_transports[i]->summary);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "gcompd: %s\n", err);
        return 2;
    }
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
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
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
        d.total_trainers += (int)counts[w];
    }
    free(counts);
    if (!rc && gcd_stats_open(&d.stats, d.cfg.stats_file, d.node, err, sizeof(err))) {
        gcd_log_error("%s", err);
        rc = GCOMP_IO;
    }
    if (!rc)
        rc = gcd_sessions_start(&d);
    /* Every node must be able to serve before any goes on. */
    uint64_t *oks = calloc(d.nodes, sizeof(uint64_t));
    if (oks && gcd_ctl_allgather_u64(d.ctl, rc == 0, oks) == 0)
        for (int w = 0; w < d.nodes; w++)
            if (!oks[w] && !rc)
                rc = GCOMP_PEER_LOST;
    free(oks);
    if (rc) {
        if (d.node == 0)
            fprintf(stderr, "gcompd: start-up failed (see the messages above)\n");
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
    pthread_create(&sig_thread, NULL, signal_thread, &set);
    pthread_detach(sig_thread);
    pthread_create(&loop_thread, NULL, gcd_sessions_run, &d);

    rc = gcd_engine_run(&d);

    pthread_mutex_lock(&d.mu);
    d.stopping = true;
    pthread_mutex_unlock(&d.mu);
    gcd_sessions_wake(&d);
    pthread_join(loop_thread, NULL);
    gcd_stats_close(&d.stats);
    gcd_buckets_free(&d);
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
