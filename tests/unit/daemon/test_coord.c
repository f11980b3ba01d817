/* The coordinator's decisions: readiness across nodes, order, mismatches, failures,
   policy switches and shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coord.h"
#include "gcomp.h"

#define MAXE 8

typedef struct fake_node {
    Gcomp__NodeReport r;
    Gcomp__ReadyEntry e[MAXE];
    Gcomp__ReadyEntry *p[MAXE];
    Gcomp__Layer lay[MAXE];
    Gcomp__Layer *layp[MAXE];
    int64_t shape[MAXE][2];
} fake_node;

static void node_init(fake_node *n, int w)
{
    memset(n, 0, sizeof(*n));
    gcomp__node_report__init(&n->r);
    n->r.node = w;
    n->r.ready = n->p;
    n->r.max_step = -1;
}

/* Report bucket `name` at `step` with a one-layer layout of rows x cols (0: none). */
static void node_ready(fake_node *n, const char *name, int64_t step, int rows, int cols)
{
    size_t i = n->r.n_ready++;
    gcomp__ready_entry__init(&n->e[i]);
    n->e[i].bucket = (char *)name;
    n->e[i].step = step;
    if (rows) {
        gcomp__layer__init(&n->lay[i]);
        n->lay[i].name = "w";
        n->shape[i][0] = rows;
        n->shape[i][1] = cols;
        n->lay[i].shape = n->shape[i];
        n->lay[i].n_shape = 2;
        n->layp[i] = &n->lay[i];
        n->e[i].layers = &n->layp[i];
        n->e[i].n_layers = 1;
    }
    n->p[i] = &n->e[i];
    if (step > n->r.max_step)
        n->r.max_step = step;
}

static void node_fail(fake_node *n, const char *name, int64_t step, int status, const char *why)
{
    size_t i = n->r.n_ready++;
    gcomp__ready_entry__init(&n->e[i]);
    n->e[i].bucket = (char *)name;
    n->e[i].step = step;
    n->e[i].status = status;
    n->e[i].error = (char *)why;
    n->p[i] = &n->e[i];
}

static int64_t fake_now_ms = 1000;

static void run(gcd_coord *c, fake_node *nodes, int n, Gcomp__Decision *dec)
{
    Gcomp__NodeReport *r[4];
    for (int w = 0; w < n; w++)
        r[w] = &nodes[w].r;
    gcomp__decision__init(dec);
    assert_int_equal(gcd_coord_step(c, r, fake_now_ms, dec), GCOMP_OK);
}

static void test_runs_when_all_ready_in_report_order(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "b1", 0, 4, 4);
    node_ready(&n[0], "b0", 0, 2, 2);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 0); /* node 1 has nothing yet */
    gcd_coord_decision_clear(&dec);

    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[1], "b0", 0, 2, 2);
    node_ready(&n[1], "b1", 0, 4, 4);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 2);
    assert_string_equal(dec.run[0]->bucket, "b1"); /* first reported first */
    assert_string_equal(dec.run[1]->bucket, "b0");
    assert_int_equal(dec.run[0]->status, 0);
    gcd_coord_decision_clear(&dec);

    /* The next step needs no layout again. */
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "b0", 1, 0, 0);
    node_ready(&n[1], "b0", 1, 0, 0);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->step, 1);
    assert_int_equal(dec.run[0]->status, 0);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

static void test_layout_mismatch_names_bucket_and_nodes(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "grads", 0, 10, 20);
    node_ready(&n[1], "grads", 0, 10, 21);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->status, GCOMP_MISMATCH);
    assert_non_null(strstr(dec.run[0]->error, "bucket 'grads'"));
    assert_non_null(strstr(dec.run[0]->error, "node 0 and node 1"));
    assert_non_null(strstr(dec.run[0]->error, "[10, 20] vs [10, 21]"));
    gcd_coord_decision_clear(&dec);

    /* It keeps failing on later steps, without layouts. */
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "grads", 1, 0, 0);
    node_ready(&n[1], "grads", 1, 0, 0);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->status, GCOMP_MISMATCH);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

static void test_step_mismatch_fails_both(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "b", 5, 2, 2);
    node_ready(&n[1], "b", 6, 2, 2);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(dec.run[i]->status, GCOMP_STEP);
        assert_non_null(strstr(dec.run[i]->error, "node 1 submitted step 6"));
    }
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

static void test_lost_trainer_fails_pending_step_everywhere(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(3, 60000);
    fake_node n[3];
    Gcomp__Decision dec;
    for (int w = 0; w < 3; w++)
        node_init(&n[w], w);
    node_ready(&n[0], "b", 3, 2, 2);
    node_ready(&n[2], "b", 3, 2, 2);
    node_fail(&n[1], "b", -1, GCOMP_PEER_LOST, "trainer local rank 1 disconnected");
    run(c, n, 3, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->step, 3);
    assert_int_equal(dec.run[0]->status, GCOMP_PEER_LOST);
    assert_non_null(strstr(dec.run[0]->error, "node 1: trainer local rank 1 disconnected"));
    gcd_coord_decision_clear(&dec);

    /* A failure of a step nobody reported is passed on as is. */
    for (int w = 0; w < 3; w++)
        node_init(&n[w], w);
    node_fail(&n[2], "b", 4, GCOMP_NONFINITE, "layer 'w': non-finite");
    run(c, n, 3, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->step, 4);
    assert_int_equal(dec.run[0]->status, GCOMP_NONFINITE);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

static void test_policy_switch_applies_after_highest_step(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.max_step = 7;
    n[1].r.max_step = 9;
    n[1].r.policy_spec = "none";
    n[0].r.policy_spec = "static:codec=none";
    run(c, n, 2, &dec);
    assert_int_equal(dec.policy_epoch, 1);
    assert_string_equal(dec.policy_spec, "static:codec=none"); /* node 0's, queued first */
    assert_int_equal(dec.policy_origin, 0);
    assert_int_equal(dec.policy_step, 10);
    gcd_coord_decision_clear(&dec);

    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[1].r.shutdown = 1;
    run(c, n, 2, &dec);
    assert_int_equal(dec.policy_epoch, 2); /* node 1's request, one cycle later */
    assert_string_equal(dec.policy_spec, "none");
    assert_int_equal(dec.policy_origin, 1);
    assert_true(dec.shutdown);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

/* A node whose trainers all unregistered a bucket: a step another node reports fails
   (it could never run), and the name may come back with another layout. */
static void test_unregistered_bucket_fails_and_is_forgotten(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "b", 0, 4, 4);
    node_ready(&n[1], "b", 0, 4, 4);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->status, 0);
    gcd_coord_decision_clear(&dec);

    char *gone[] = {"b"};
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.unregistered = gone;
    n[0].r.n_unregistered = 1;
    node_ready(&n[1], "b", 1, 0, 0);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->status, GCOMP_PEER_LOST);
    assert_non_null(strstr(dec.run[0]->error, "unregistered on node 0"));
    gcd_coord_decision_clear(&dec);

    /* Node 1 lets go too: both come back with another shape. */
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[1].r.unregistered = gone;
    n[1].r.n_unregistered = 1;
    run(c, n, 2, &dec);
    gcd_coord_decision_clear(&dec);
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    node_ready(&n[0], "b", 2, 8, 2);
    node_ready(&n[1], "b", 2, 8, 2);
    run(c, n, 2, &dec);
    assert_int_equal(dec.n_run, 1);
    assert_int_equal(dec.run[0]->status, 0);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

/* Announce names[0..n-1] at `step` on both nodes (node 1 in the other order), MAXE a
   cycle, and put the number each one gets in uid[]. */
static void announce(gcd_coord *c, const char *const *names, int n, int64_t step,
                     uint32_t *uid)
{
    for (int at = 0; at < n; at += MAXE) {
        int k = n - at < MAXE ? n - at : MAXE;
        fake_node nd[2];
        Gcomp__Decision dec;
        node_init(&nd[0], 0);
        node_init(&nd[1], 1);
        for (int i = 0; i < k; i++) {
            node_ready(&nd[0], names[at + i], step, 4, 4);
            node_ready(&nd[1], names[at + k - 1 - i], step, 4, 4);
        }
        run(c, nd, 2, &dec);
        assert_int_equal(dec.n_run, k);
        for (size_t j = 0; j < dec.n_run; j++) {
            assert_int_equal(dec.run[j]->status, 0);
            for (int i = 0; i < k; i++)
                if (strcmp(dec.run[j]->bucket, names[at + i]) == 0)
                    uid[at + i] = dec.run[j]->uid;
        }
        gcd_coord_decision_clear(&dec);
    }
}

/* Both nodes unregister bucket `name`. */
static void forget(gcd_coord *c, const char *name)
{
    char *gone[] = {(char *)name};
    fake_node nd[2];
    Gcomp__Decision dec;
    node_init(&nd[0], 0);
    node_init(&nd[1], 1);
    nd[0].r.unregistered = nd[1].r.unregistered = gone;
    nd[0].r.n_unregistered = nd[1].r.n_unregistered = 1;
    run(c, nd, 2, &dec);
    gcd_coord_decision_clear(&dec);
}

static gcd_coord *save_and_load(gcd_coord *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gk_writer w = {.f = f};
    assert_int_equal(gcd_coord_save(c, &w), 0);
    fclose(f);
    gcd_coord_free(c);
    c = gcd_coord_new(2, 60000);
    f = fmemopen(buf, len, "rb");
    gk_reader r = {.f = f};
    assert_int_equal(gcd_coord_load(c, &r), 0);
    fclose(f);
    free(buf);
    return c;
}

/* FNV-1a (32 bits) of "b0"; "1tfgryr5e." and "16uc8j" hash alike. */
#define B0_UID 2368480847u
#define COLLIDING_UID 475268800u

/* Bucket numbers (layer ids = uid << 32 | index) are the hash of the name, whatever
   order the buckets arrive in, so two runs of a job seed the codecs' random streams
   alike (they used to be given in announcement order: a node reporting b1 before b0
   swapped b0's PowerSGD Q with b1's); unique by construction (a collision or a name
   that comes back takes the next free number); kept through a checkpoint. */
static void test_bucket_numbers_follow_names_unique_and_restored(void **st)
{
    (void)st;
    enum { NB = 100 };
    static char names[NB][16];
    const char *fwd[NB], *rev[NB];
    uint32_t a[NB] = {0}, b[NB] = {0};
    for (int i = 0; i < NB; i++) {
        snprintf(names[i], sizeof(names[i]), "b%d", i);
        fwd[i] = rev[NB - 1 - i] = names[i];
    }
    gcd_coord *c = gcd_coord_new(2, 60000), *c2 = gcd_coord_new(2, 60000);
    announce(c, fwd, NB, 0, a);
    announce(c2, rev, NB, 0, b);
    assert_int_equal(a[0], B0_UID);
    for (int i = 0; i < NB; i++) {
        assert_int_equal(a[i], b[NB - 1 - i]);
        assert_true(a[i] != 0);
        for (int j = 0; j < i; j++)
            assert_true(a[i] != a[j]);
    }
    gcd_coord_free(c2);

    /* A collision: the second name takes the next number. */
    const char *clash[] = {"1tfgryr5e.", "16uc8j"};
    uint32_t u[2];
    announce(c, clash, 2, 0, u);
    assert_int_equal(u[0], COLLIDING_UID);
    assert_int_equal(u[1], COLLIDING_UID + 1);
    /* A bucket every node let go of comes back under another number. */
    forget(c, "b0");
    uint32_t again;
    announce(c, &fwd[0], 1, 1, &again);
    assert_int_equal(again, B0_UID + 1);
    /* Gone before the checkpoint: its number stays given. */
    forget(c, clash[0]);

    c = save_and_load(c);
    uint32_t got[3];
    const char *after[] = {"b42", "16uc8j", "1tfgryr5e."};
    announce(c, after, 3, 2, got);
    assert_int_equal(got[0], a[42]);
    assert_int_equal(got[1], COLLIDING_UID + 1);
    assert_int_equal(got[2], COLLIDING_UID + 2);
    gcd_coord_free(c);

    /* A version 1 record (numbers in announcement order) is refused with a message. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gk_writer w = {.f = f};
    gk_put_tag(&w, "COOR", 1);
    gk_put_u32(&w, 3);
    gk_put_u64(&w, 0);
    fclose(f);
    c = gcd_coord_new(2, 60000);
    f = fmemopen(buf, len, "rb");
    gk_reader r = {.f = f};
    assert_int_equal(gcd_coord_load(c, &r), GCOMP_PROTOCOL);
    assert_non_null(strstr(r.err, "coordinator record version 1"));
    fclose(f);
    free(buf);
    gcd_coord_free(c);
}

/* observe_through is the least of what the nodes report holding. */
static void test_observe_through_is_the_minimum(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(3, 60000);
    fake_node n[3];
    Gcomp__Decision dec;
    for (int w = 0; w < 3; w++)
        node_init(&n[w], w);
    n[0].r.observed = 7;
    n[1].r.observed = 5;
    n[2].r.observed = 9;
    run(c, n, 3, &dec);
    assert_int_equal(dec.observe_through, 5);
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

/* Trace recording: a start applies from the step after the highest one submitted, a
   second start is refused naming the first, a stop sets the end, and the finish comes
   once every node is done, with the steps complete everywhere. */
static void test_trace_start_refuse_stop_finish(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    Gcomp__TraceAsk start = GCOMP__TRACE_ASK__INIT, again = GCOMP__TRACE_ASK__INIT,
                    stop = GCOMP__TRACE_ASK__INIT;
    start.dir = "/tmp/t";
    start.buckets = "b*";
    again.dir = "/tmp/u";
    again.buckets = "*";
    stop.stop = true;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.max_step = 4;
    n[1].r.max_step = 5;
    n[1].r.trace_ask = &start;
    run(c, n, 2, &dec);
    assert_non_null(dec.trace);
    assert_int_equal(dec.trace->kind, GCD_TRACE_START);
    assert_int_equal(dec.trace->id, 1);
    assert_int_equal(dec.trace->origin, 1);
    assert_int_equal(dec.trace->from_step, 6);
    assert_int_equal(dec.trace->end_step, -1);
    assert_string_equal(dec.trace->buckets, "b*");
    gcd_coord_decision_clear(&dec);

    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.trace_ask = &again;
    n[0].r.trace_id = n[1].r.trace_id = 1;
    n[0].r.trace_written = 1;
    n[1].r.trace_written = 2;
    n[0].r.max_step = 7;
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->kind, GCD_TRACE_REFUSE);
    assert_int_equal(dec.trace->origin, 0);
    assert_non_null(strstr(dec.trace->error, "already recording into /tmp/t"));
    gcd_coord_decision_clear(&dec);

    int64_t written[2];
    assert_int_equal(gcd_coord_trace(c, written), 1);
    assert_int_equal(written[0], 1);
    assert_int_equal(written[1], 2);

    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[1].r.trace_ask = &stop;
    n[0].r.trace_id = n[1].r.trace_id = 1;
    n[0].r.max_step = 8;
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->kind, GCD_TRACE_STOP);
    assert_int_equal(dec.trace->end_step, 9);
    gcd_coord_decision_clear(&dec);

    /* Node 0 is done, node 1 not yet: nothing; then both: finished with the least. */
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.trace_id = n[1].r.trace_id = 1;
    n[0].r.trace_written = 3;
    n[0].r.trace_done = true;
    n[1].r.trace_written = 2;
    run(c, n, 2, &dec);
    assert_null(dec.trace);
    gcd_coord_decision_clear(&dec);
    n[1].r.trace_written = 3;
    n[1].r.trace_done = true;
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->kind, GCD_TRACE_FINISH);
    assert_int_equal(dec.trace->complete, 3);
    assert_string_equal(dec.trace->error, "");
    gcd_coord_decision_clear(&dec);

    /* Nothing to stop now. */
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.trace_ask = &stop;
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->kind, GCD_TRACE_REFUSE);
    assert_non_null(strstr(dec.trace->error, "no trace is being recorded"));
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

/* A node's failure finishes the recording at once, naming the node. */
static void test_trace_failure_finishes_it(void **st)
{
    (void)st;
    gcd_coord *c = gcd_coord_new(2, 60000);
    fake_node n[2];
    Gcomp__Decision dec;
    Gcomp__TraceAsk start = GCOMP__TRACE_ASK__INIT;
    start.dir = "/tmp/t";
    start.buckets = "*";
    start.steps = 5;
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.trace_ask = &start;
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->from_step, 0);
    assert_int_equal(dec.trace->end_step, 5);
    gcd_coord_decision_clear(&dec);
    node_init(&n[0], 0);
    node_init(&n[1], 1);
    n[0].r.trace_id = n[1].r.trace_id = 1;
    n[0].r.trace_written = 2;
    n[1].r.trace_written = 1;
    n[1].r.trace_done = true;
    n[1].r.trace_error = "writing /tmp/t/w2/s1/b0.npy failed: No space left on device";
    run(c, n, 2, &dec);
    assert_int_equal(dec.trace->kind, GCD_TRACE_FINISH);
    assert_int_equal(dec.trace->complete, 1);
    assert_string_equal(dec.trace->error,
                        "node 1: writing /tmp/t/w2/s1/b0.npy failed: No space left on device");
    gcd_coord_decision_clear(&dec);
    gcd_coord_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_when_all_ready_in_report_order),
        cmocka_unit_test(test_layout_mismatch_names_bucket_and_nodes),
        cmocka_unit_test(test_step_mismatch_fails_both),
        cmocka_unit_test(test_lost_trainer_fails_pending_step_everywhere),
        cmocka_unit_test(test_policy_switch_applies_after_highest_step),
        cmocka_unit_test(test_unregistered_bucket_fails_and_is_forgotten),
        cmocka_unit_test(test_bucket_numbers_follow_names_unique_and_restored),
        cmocka_unit_test(test_observe_through_is_the_minimum),
        cmocka_unit_test(test_trace_start_refuse_stop_finish),
        cmocka_unit_test(test_trace_failure_finishes_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
