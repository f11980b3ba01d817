/* The metrics store and its Prometheus text (metrics.h): the exposition format's
   framing (HELP and TYPE before each family's samples, `name{labels} value` lines),
   label escaping, cumulative histogram buckets, errors by status, the codec gauge
   following the last step; and --metrics-listen's address syntax (http.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "gcomp.h"
#include "http.h"
#include "metrics.h"

static char *render(gcd_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    int rc = gcd_metrics_render(m, &text, &len);
    assert_int_equal(rc, GCOMP_OK);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The line that starts with `prefix` (a sample's name and labels), or NULL. */
static const char *line_of(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return p;
    return NULL;
}

/* The value of the sample `prefix` (name and labels, as printed); fails if absent. */
static double value_of(const char *text, const char *prefix)
{
    const char *l = line_of(text, prefix);
    if (!l)
        fail_msg("no sample %s in:\n%s", prefix, text);
    return strtod(l + strlen(prefix) + 1, NULL);
}

/* Every line is a comment (# HELP / # TYPE, in that order, once per family, before its
   samples) or `name{labels} value` with name a family declared before it. */
static void check_format(const char *text)
{
    char family[128] = "";
    int help = 0;
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        char line[2048];
        snprintf(line, sizeof(line), "%.*s", (int)(e - p), p);
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", family), 1);
            assert_int_equal(strncmp(family, "gcomp_", 6), 0);
            help = 1;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_true(help);
            assert_string_equal(name, family);
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                        !strcmp(type, "histogram"));
            help = 0;
        } else {
            assert_true(line[0] != '#');
            const char *brace = strchr(line, '{');
            assert_non_null(brace);
            size_t fl = strlen(family);
            assert_int_equal(strncmp(line, family, fl), 0);
            const char *suffix = line + fl;
            assert_true(suffix == brace || !strncmp(suffix, "_bucket{", 8) ||
                        !strncmp(suffix, "_sum{", 5) || !strncmp(suffix, "_count{", 7));
            assert_int_equal(strncmp(brace, "{node=\"", 7), 0);
            /* The labels end at the last '}' outside a quoted value. */
            const char *q = brace + 1;
            int quoted = 0;
            for (; *q && (quoted || *q != '}'); q++) {
                if (quoted && *q == '\\') {
                    q++;
                    assert_true(*q == '\\' || *q == '"' || *q == 'n');
                } else if (*q == '"') {
                    quoted = !quoted;
                }
            }
            assert_int_equal(*q, '}');
            assert_int_equal(q[1], ' ');
            char *end;
            strtod(q + 2, &end);
            assert_true(end != q + 2 && *end == '\0');
        }
        p = e + 1;
    }
}

/* The buckets of one histogram series (lines starting with prefix): as many as the
   bounds and +Inf, non-decreasing, the last (+Inf) equal to count. */
static void check_cumulative(const char *text, const char *prefix, double count)
{
    double prev = 0;
    int n = 0;
    const char *last = NULL;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        double v = strtod(strchr(p, ' ') + 1, NULL);
        assert_true(v >= prev);
        prev = v;
        last = p;
        n++;
    }
#define ONE(x) +1
    assert_int_equal(n, 0 GCD_METRICS_LE(ONE) + 1);
#undef ONE
    assert_non_null(last);
    assert_int_equal(strncmp(last + strlen(prefix), "\"+Inf\"}", 7), 0);
    assert_true(prev == count);
}

static void test_empty(void **st)
{
    (void)st;
    gcd_metrics *m;
    assert_int_equal(gcd_metrics_create(3, 2, &m), GCOMP_OK);
    char *t = render(m);
    check_format(t);
    for (const char *f = "steps_total\0bytes_in_total\0bytes_out_total\0compression_ratio\0"
                         "step_errors_total\0step_seconds\0phase_seconds\0layer_codec\0"
                         "trainers_connected\0trainers_expected\0";
         *f; f += strlen(f) + 1) {
        char help[96];
        snprintf(help, sizeof(help), "# HELP gcomp_%s ", f);
        assert_non_null(strstr(t, help));
    }
    assert_non_null(strstr(t, "# TYPE gcomp_step_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE gcomp_steps_total counter\n"));
    assert_non_null(strstr(t, "# TYPE gcomp_layer_codec gauge\n"));
    assert_int_equal(value_of(t, "gcomp_trainers_expected{node=\"3\"}"), 2);
    assert_int_equal(value_of(t, "gcomp_trainers_connected{node=\"3\"}"), 0);
    assert_int_equal(value_of(t, "gcomp_step_seconds_count{node=\"3\"}"), 0);
    assert_int_equal(value_of(t, "gcomp_step_seconds_bucket{node=\"3\",le=\"+Inf\"}"), 0);
    assert_int_equal(value_of(t, "gcomp_phase_seconds_count{node=\"3\",phase=\"decode\"}"), 0);
    /* Every error status, at 0; OK is not one. */
    assert_int_equal(value_of(t, "gcomp_step_errors_total{node=\"3\",status=\"GCOMP_PEER_LOST\"}"),
                     0);
    assert_int_equal(value_of(t, "gcomp_step_errors_total{node=\"3\",status=\"GCOMP_INTERNAL\"}"),
                     0);
    assert_null(strstr(t, "GCOMP_OK"));
    assert_null(strstr(t, "GCOMP_UNKNOWN"));
    assert_null(line_of(t, "gcomp_steps_total{node=\"3\"}"));
    free(t);
    gcd_metrics_destroy(m);
    gcd_metrics_destroy(NULL);
    gcd_metrics_step(NULL, NULL, 0);
    gcd_metrics_trainers(NULL, 1);
}

static gcd_step_record record(const char *bucket, double total_ms, const gcd_step_layer *ls,
                              size_t nl, size_t dense, size_t payload)
{
    return (gcd_step_record){.bucket = bucket, .step = 0, .dense_bytes = dense,
                             .payload_bytes = payload, .t_total_ms = total_ms,
                             .t_wait_ms = 0.2, .t_sum_ms = 1.0, .t_prep_ms = 0, .t_collect_ms = 0,
                             .t_encode_ms = 2.0, .t_collective_ms = 3.0, .t_decode_ms = 4.0,
                             .nlayers = nl, .layers = ls};
}

static void test_steps_histograms_escaping(void **st)
{
    (void)st;
    gcd_metrics *m;
    assert_int_equal(gcd_metrics_create(1, 3, &m), GCOMP_OK);
    gk_spec topk;
    char err[256];
    assert_int_equal(gk_spec_parse("topk:density=0.01", &topk, err, sizeof(err)), GCOMP_OK);
    char spec_text[256];
    gk_spec_format(&topk, spec_text, sizeof(spec_text));
    const char *odd = "b\"0\\x\ny"; /* a quote, a backslash and a newline */
    gcd_step_layer ls[2] = {{.name = "fc.weight", .numel = 1000, .spec = &topk, .payload = 80},
                            {.name = "fc\"bias", .numel = 10, .spec = NULL, .payload = 40}};
    /* Step times: 0.05 ms, 3 ms, 20 s, 40 s: in le 0.0001, 0.005, 30 and above all. */
    const double ms[4] = {0.05, 3.0, 20000.0, 40000.0};
    for (int i = 0; i < 4; i++) {
        gcd_step_record r = record(odd, ms[i], ls, 2, 4040, 120 + (size_t)i);
        gcd_metrics_step(m, &r, 0);
    }
    gcd_step_record r = record("plain", 1.0, ls, 1, 4000, 0); /* nothing sent: no ratio */
    gcd_metrics_step(m, &r, 0);
    gcd_step_record failed = {.bucket = "plain"};
    gcd_metrics_step(m, &failed, GCOMP_PEER_LOST);
    gcd_metrics_step(m, &failed, GCOMP_PEER_LOST);
    gcd_metrics_step(m, &failed, -999);
    gcd_metrics_trainers(m, 3);

    char *t = render(m);
    check_format(t);
    const char *lbl = "bucket=\"b\\\"0\\\\x\\ny\"";
    char key[512];
    snprintf(key, sizeof(key), "gcomp_steps_total{node=\"1\",%s}", lbl);
    assert_int_equal(value_of(t, key), 4);
    snprintf(key, sizeof(key), "gcomp_bytes_in_total{node=\"1\",%s}", lbl);
    assert_int_equal(value_of(t, key), 4 * 4040);
    snprintf(key, sizeof(key), "gcomp_bytes_out_total{node=\"1\",%s}", lbl);
    assert_int_equal(value_of(t, key), 120 + 121 + 122 + 123);
    snprintf(key, sizeof(key), "gcomp_compression_ratio{node=\"1\",%s}", lbl);
    assert_float_equal(value_of(t, key), 4040.0 / 123.0, 1e-4); /* the last step's */
    assert_int_equal(value_of(t, "gcomp_steps_total{node=\"1\",bucket=\"plain\"}"), 1);
    assert_null(line_of(t, "gcomp_compression_ratio{node=\"1\",bucket=\"plain\"}"));

    /* Cumulative buckets: <= 0.0001 s: 1, <= 0.005: 2, <= 10: 2 + the 1 ms step of
       "plain", <= 30: 4, +Inf: 5 = count. */
    const struct { const char *le; int n; } want[] = {
        {"0.0001", 1}, {"0.00025", 1}, {"0.001", 2}, {"0.0025", 2}, {"0.005", 3},
        {"10", 3},     {"30", 4},      {"+Inf", 5}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(key, sizeof(key), "gcomp_step_seconds_bucket{node=\"1\",le=\"%s\"}", want[i].le);
        assert_int_equal(value_of(t, key), want[i].n);
    }
    check_cumulative(t, "gcomp_step_seconds_bucket{node=\"1\",le=", 5);
    check_cumulative(t, "gcomp_phase_seconds_bucket{node=\"1\",phase=\"wait\",le=", 5);
    assert_int_equal(value_of(t, "gcomp_step_seconds_count{node=\"1\"}"), 5);
    assert_float_equal(value_of(t, "gcomp_step_seconds_sum{node=\"1\"}"),
                       0.00005 + 0.003 + 20 + 40 + 0.001, 1e-6);
    assert_int_equal(value_of(t, "gcomp_phase_seconds_count{node=\"1\",phase=\"collective\"}"), 5);
    assert_float_equal(value_of(t, "gcomp_phase_seconds_sum{node=\"1\",phase=\"decode\"}"),
                       5 * 0.004, 1e-9);
    assert_int_equal(
        value_of(t, "gcomp_phase_seconds_bucket{node=\"1\",phase=\"encode\",le=\"0.001\"}"), 0);
    assert_int_equal(
        value_of(t, "gcomp_phase_seconds_bucket{node=\"1\",phase=\"encode\",le=\"0.0025\"}"), 5);
    /* prepare and collect took 0: in the first bucket. */
    assert_int_equal(
        value_of(t, "gcomp_phase_seconds_bucket{node=\"1\",phase=\"prepare\",le=\"0.0001\"}"), 5);

    snprintf(key, sizeof(key),
             "gcomp_layer_codec{node=\"1\",%s,layer=\"fc.weight\",codec=\"topk\",spec=\"%s\"}", lbl,
             spec_text);
    assert_int_equal(value_of(t, key), 1);
    assert_int_equal(strncmp(spec_text, "topk:density=0.01", 17), 0);
    snprintf(key, sizeof(key),
             "gcomp_layer_codec{node=\"1\",%s,layer=\"fc\\\"bias\",codec=\"none\",spec=\"none\"}",
             lbl);
    assert_int_equal(value_of(t, key), 1);

    assert_int_equal(value_of(t, "gcomp_step_errors_total{node=\"1\",status=\"GCOMP_PEER_LOST\"}"),
                     2);
    assert_int_equal(value_of(t, "gcomp_step_errors_total{node=\"1\",status=\"GCOMP_UNKNOWN\"}"), 1);
    assert_int_equal(value_of(t, "gcomp_step_errors_total{node=\"1\",status=\"GCOMP_STALL\"}"), 0);
    assert_int_equal(value_of(t, "gcomp_trainers_connected{node=\"1\"}"), 3);
    free(t);

    /* The codec gauge follows the last step: the layer went dense, the topk series is
       gone. */
    ls[0].spec = NULL;
    gcd_step_record again = record(odd, 1.0, ls, 2, 4040, 4040);
    gcd_metrics_step(m, &again, 0);
    t = render(m);
    check_format(t);
    snprintf(key, sizeof(key),
             "gcomp_layer_codec{node=\"1\",%s,layer=\"fc.weight\",codec=\"none\",spec=\"none\"}",
             lbl);
    assert_int_equal(value_of(t, key), 1);
    snprintf(key, sizeof(key),
             "gcomp_layer_codec{node=\"1\",%s,layer=\"fc.weight\",codec=\"topk\",spec=\"%s\"}", lbl,
             spec_text);
    assert_null(line_of(t, key));
    free(t);
    gcd_metrics_destroy(m);
}

static void test_listen_addresses(void **st)
{
    (void)st;
    struct sockaddr_storage sa;
    char shown[96], err[512];
    assert_int_equal(gcd_http_addr("127.0.0.1:9100", 3, &sa, shown, sizeof(shown), err,
                                   sizeof(err)), GCOMP_OK);
    assert_string_equal(shown, "127.0.0.1:9100");
    assert_int_equal(sa.ss_family, AF_INET);
    assert_int_equal(gcd_http_addr("127.0.0.1:9100+node", 3, &sa, shown, sizeof(shown), err,
                                   sizeof(err)), GCOMP_OK);
    assert_string_equal(shown, "127.0.0.1:9103");
    assert_int_equal(gcd_http_addr("127.0.0.1:0", 5, &sa, shown, sizeof(shown), err,
                                   sizeof(err)), GCOMP_OK);
    assert_string_equal(shown, "127.0.0.1:0");
    assert_int_equal(gcd_http_addr("[::1]:9100+node", 1, &sa, shown, sizeof(shown), err,
                                   sizeof(err)), GCOMP_OK);
    assert_string_equal(shown, "[::1]:9101");
    assert_int_equal(sa.ss_family, AF_INET6);

    const struct { const char *spec; int node; const char *says; } bad[] = {
        {"9100", 0, "expected HOST:PORT"},
        {":9100", 0, "no host"},
        {"localhost:9100", 0, "'localhost' is not a numeric IPv4 address"},
        {"127.0.0.1:", 0, "the port must be a number in 0..65535"},
        {"127.0.0.1:65536", 0, "the port must be a number in 0..65535"},
        {"127.0.0.1:91x", 0, "the port must be a number in 0..65535"},
        {"127.0.0.1:-1", 0, "the port must be a number in 0..65535"},
        {"127.0.0.1:0+node", 0, "+node needs a port above 0"},
        {"127.0.0.1:65535+node", 1, "node 1 would listen on port 65536"},
        {"::1:9100", 0, "an IPv6 address goes in brackets"},
        {"[::1]9100", 0, "expected [IPv6]:PORT"},
        {"[nope]:9100", 0, "'nope' is not a numeric IPv6 address"},
        {"[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]:1", 0,
         "the host is not a numeric address"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(gcd_http_addr(bad[i].spec, bad[i].node, &sa, shown, sizeof(shown), err,
                                       sizeof(err)), GCOMP_INVALID);
        if (!strstr(err, bad[i].says) || !strstr(err, bad[i].spec))
            fail_msg("'%s': got '%s', want it to say '%s' and quote the value", bad[i].spec, err,
                     bad[i].says);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_steps_histograms_escaping),
        cmocka_unit_test(test_listen_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
