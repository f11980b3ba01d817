/* The timeline file (timeline.h): its JSON array framing, escaping, per-node paths, and
   that a file that cannot be opened or written is an error naming it. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "gcomp.h"
#include "timeline.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_events_and_framing(void **st)
{
    (void)st;
    char dir[] = "/tmp/gct-tl-XXXXXX", tmpl[128], path[128], err[512];
    assert_non_null(mkdtemp(dir));
    snprintf(tmpl, sizeof(tmpl), "%s/tl-{node}.json", dir);
    snprintf(path, sizeof(path), "%s/tl-1.json", dir);
    gcd_timeline *t;
    assert_int_equal(gcd_timeline_open(tmpl, 1, 2, &t, err, sizeof(err)), GCOMP_OK);
    assert_non_null(t);
    double now = gk_now_s();
    gcd_timeline_origin(t, now);
    int bt = gcd_timeline_bucket(t, 3, "b\"0");
    assert_int_equal(bt, GCD_TL_BUCKET_BASE + 3);
    gcd_timeline_span(t, bt, "sum", now + 1e-3, now + 3e-3, "b\"0", 7, NULL);
    int xt = gcd_timeline_xchg(t, 1, 2);
    assert_int_equal(xt, GCD_TL_XCHG_BASE + 1 * GCD_TL_XCHG_MAX + 2);
    assert_int_equal(gcd_timeline_xchg(t, 1, 2), xt); /* named once */
    gcd_timeline_span(t, xt, "encode", now + 3e-3, now + 2e-3, "b\"0", 7, ",\"codec\":\"%s\"",
                      "topk");
    gcd_timeline_instant(t, GCD_TL_POLICY, "policy switch", "\"old\":\"none\",\"new\":\"x\"");
    gcd_timeline_flush(t);
    assert_int_equal(gcd_timeline_close(t), GCOMP_OK);

    char *s = slurp(path);
    assert_memory_equal(s, "[\n{", 3);
    assert_string_equal(s + strlen(s) - 4, "}\n]\n");
    assert_non_null(strstr(s, "\"args\":{\"name\":\"gcompd node 1\"}"));
    assert_non_null(strstr(s, "\"tid\":0,\"args\":{\"name\":\"lane 0\"}"));
    assert_non_null(strstr(s, "\"tid\":1,\"args\":{\"name\":\"lane 1\"}"));
    assert_non_null(strstr(s, "{\"name\":\"bucket b\\\"0\"}"));
    assert_non_null(strstr(s, "{\"name\":\"lane 1 exchange 2\"}"));
    assert_non_null(strstr(s, "\"name\":\"sum\",\"cat\":\"gcomp\",\"ph\":\"X\",\"ts\":1000.000,"
                              "\"dur\":2000.000,\"pid\":1,\"tid\":100003,"
                              "\"args\":{\"bucket\":\"b\\\"0\",\"step\":7}}"));
    /* An end before the start is a zero duration, never negative. */
    assert_non_null(strstr(s, "\"dur\":0.000,\"pid\":1,\"tid\":1102,\"args\":{\"bucket\":"
                              "\"b\\\"0\",\"step\":7,\"codec\":\"topk\"}}"));
    assert_non_null(strstr(s, "\"ph\":\"i\",\"s\":\"p\""));
    assert_non_null(strstr(s, "\"args\":{\"old\":\"none\",\"new\":\"x\"}}"));
    const char *named = strstr(s, "lane 1 exchange 2");
    assert_null(strstr(named + 1, "lane 1 exchange 2")); /* named once */
    /* One event per line, separated by ",\n". */
    size_t lines = 0, commas = 0;
    for (const char *p = s; *p; p++)
        if (*p == '\n') {
            lines++;
            commas += p > s && p[-1] == ',';
        }
    assert_int_equal(commas, lines - 3); /* not after "[", the last event or "]" */
    unlink(path);
    rmdir(dir);
}

static void test_paths_and_errors(void **st)
{
    (void)st;
    char err[512];
    gcd_timeline *t = (gcd_timeline *)1;
    /* Off, and a template without {node} on another node than 0: no file. */
    assert_int_equal(gcd_timeline_open("", 0, 1, &t, err, sizeof(err)), GCOMP_OK);
    assert_null(t);
    assert_int_equal(gcd_timeline_open("/tmp/never-written.json", 1, 1, &t, err, sizeof(err)),
                     GCOMP_OK);
    assert_null(t);
    assert_int_equal(gcd_timeline_close(NULL), GCOMP_OK);
    gcd_timeline_span(NULL, 0, "sum", 0, 1, "b", 0, NULL); /* off: nothing */
    gcd_timeline_flush(NULL);
    /* A directory that does not exist: the error names the file. */
    assert_int_equal(gcd_timeline_open("/nonexistent-gcomp/tl-{node}.json", 2, 1, &t, err,
                                       sizeof(err)), GCOMP_IO);
    assert_null(t);
    assert_non_null(strstr(err, "timeline file /nonexistent-gcomp/tl-2.json"));
    assert_non_null(strstr(err, "No such file or directory"));
    /* A full disk at start-up: the metadata's flush fails, naming the file. */
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(gcd_timeline_open("/dev/full", 0, 1, &t, err, sizeof(err)), GCOMP_IO);
        assert_null(t);
        assert_non_null(strstr(err, "timeline file /dev/full: write failed"));
    }
}

/* A write that fails later (the file may not grow): logged, the timeline stops writing,
   close reports it. */
static void test_write_failure_stops_it(void **st)
{
    (void)st;
    char path[] = "/tmp/gct-tl-full-XXXXXX", err[512];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    gcd_timeline *t;
    assert_int_equal(gcd_timeline_open(path, 0, 1, &t, err, sizeof(err)), GCOMP_OK);
    struct rlimit old, small = {.rlim_cur = 8192};
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    for (int i = 0; i < 1000; i++)
        gcd_timeline_span(t, 0, "sum", 0, 1, "b", i, NULL);
    gcd_timeline_flush(t); /* logs "timeline file PATH: write failed: File too large" */
    gcd_timeline_span(t, 0, "sum", 0, 1, "b", 0, NULL); /* stopped: nothing */
    assert_int_equal(gcd_timeline_close(t), GCOMP_IO);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_and_framing),
        cmocka_unit_test(test_paths_and_errors),
        cmocka_unit_test(test_write_failure_stops_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
