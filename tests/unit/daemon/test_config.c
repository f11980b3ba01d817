/* gcompd's settings: precedence, validation, per-node trainer counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "gcomp.h"

static int load(gcd_config *c, char *err, int argc, ...)
{
    char *argv[16] = {"gcompd"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return gcd_config_load(argc + 1, argv, c, err, 512);
}

static void test_defaults_and_codec_shorthand(void **st)
{
    (void)st;
    gcd_config c;
    char err[512];
    unsetenv("GCOMP_JOB_ID");
    assert_int_equal(load(&c, err, 2, "--job-id", "j7"), GCOMP_OK);
    assert_string_equal(c.dir, "/tmp/gcomp-j7");
    assert_string_equal(c.policy, "static:codec=none");
    assert_int_equal(c.timeout_ms, 60000);
    assert_int_equal(load(&c, err, 3, "--job-id=j7", "--codec", "none"), GCOMP_OK);
    assert_string_equal(c.policy, "static:codec=none");
}

static void test_errors_name_the_key(void **st)
{
    (void)st;
    gcd_config c;
    char err[512];
    unsetenv("GCOMP_JOB_ID");
    assert_int_equal(load(&c, err, 0), GCOMP_INVALID);
    assert_non_null(strstr(err, "--job-id is required"));
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--timeout-ms", "abc"), GCOMP_INVALID);
    assert_non_null(strstr(err, "--timeout-ms"));
    assert_int_equal(load(&c, err, 3, "--job-id", "j", "--bogus"), GCOMP_INVALID);
    assert_non_null(strstr(err, "--bogus"));
    assert_int_equal(load(&c, err, 2, "--job-id", "a/b"), GCOMP_INVALID);
    assert_int_equal(load(&c, err, 6, "--job-id", "j", "--codec", "none", "--policy", "static"),
                     GCOMP_INVALID);
    assert_non_null(strstr(err, "exclude"));
    /* --metrics-listen: off by default, checked at load (http.h has the whole syntax). */
    assert_int_equal(load(&c, err, 2, "--job-id", "j"), GCOMP_OK);
    assert_string_equal(c.metrics_listen, "");
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--metrics-listen", "127.0.0.1:9100+node"),
                     GCOMP_OK);
    assert_string_equal(c.metrics_listen, "127.0.0.1:9100+node");
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--metrics-listen", "localhost:9100"),
                     GCOMP_INVALID);
    assert_non_null(strstr(err, "--metrics-listen 'localhost:9100'"));
}

static void test_env_and_file_precedence(void **st)
{
    (void)st;
    gcd_config c;
    char err[512];
    char path[] = "/tmp/gcomp-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# comment\njob-id = fromfile\ntimeout-ms = 1234\ncycle-ms=7\n");
    fclose(f);
    setenv("GCOMP_TIMEOUT_MS", "4321", 1);
    assert_int_equal(load(&c, err, 2, "--config", path), GCOMP_OK);
    assert_string_equal(c.job_id, "fromfile");
    assert_int_equal(c.timeout_ms, 4321); /* environment over file */
    assert_int_equal(c.cycle_ms, 7);
    assert_int_equal(load(&c, err, 4, "--config", path, "--timeout-ms", "999"), GCOMP_OK);
    assert_int_equal(c.timeout_ms, 999); /* command line over environment */
    unsetenv("GCOMP_TIMEOUT_MS");
    f = fopen(path, "w");
    fprintf(f, "nonsense = 1\n");
    fclose(f);
    assert_int_equal(load(&c, err, 2, "--config", path), GCOMP_INVALID);
    assert_non_null(strstr(err, "unknown key 'nonsense'"));
    unlink(path);
}

static void test_trainers_per_node(void **st)
{
    (void)st;
    gcd_config c;
    char err[512];
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--trainers", "3"), GCOMP_OK);
    assert_int_equal(gcd_config_trainers(&c, 2, 4, err, sizeof(err)), 3);
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--trainers", "2,1,1"), GCOMP_OK);
    assert_int_equal(gcd_config_trainers(&c, 0, 3, err, sizeof(err)), 2);
    assert_int_equal(gcd_config_trainers(&c, 2, 3, err, sizeof(err)), 1);
    assert_int_equal(gcd_config_trainers(&c, 0, 2, err, sizeof(err)), GCOMP_INVALID);
    assert_non_null(strstr(err, "3 values for 2 nodes"));
    assert_int_equal(load(&c, err, 4, "--job-id", "j", "--trainers", "0"), GCOMP_OK);
    assert_int_equal(gcd_config_trainers(&c, 0, 1, err, sizeof(err)), GCOMP_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_codec_shorthand),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_env_and_file_precedence),
        cmocka_unit_test(test_trainers_per_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
