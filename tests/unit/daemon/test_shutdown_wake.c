/*
 * A fixed bug (docs/RELIABILITY.md): gcompd could abort in libuv at shutdown. main()
 * sets d.stopping, then calls gcd_sessions_wake(). If the loop thread handled another
 * wake in between (the engine's reply to `gcompctl shutdown`, a trainer's closed
 * session), on_wake() saw stopping, closed its handles, uv_run() returned and
 * gcd_sessions_run() closed the loop; main's uv_async_send() then wrote to the loop's
 * closed eventfd and libuv called abort(). Seen in the sanitized integration run. This
 * test makes that order happen; it aborted before the fix (wake_closed).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon.h"

int main(void)
{
    static gcd d;
    char dir[] = "/tmp/gcd-wake-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    snprintf(d.cfg.dir, sizeof(d.cfg.dir), "%s", dir);
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    if (gcd_sessions_start(&d) != 0)
        return 2;
    pthread_t loop;
    pthread_create(&loop, NULL, gcd_sessions_run, &d);
    pthread_mutex_lock(&d.mu);
    d.stopping = true;
    pthread_mutex_unlock(&d.mu);
    gcd_sessions_wake(&d); /* another wake, handled after stopping was set */
    pthread_join(loop, NULL);
    rmdir(dir); /* empty: the loop thread removed its sockets */
    gcd_sessions_wake(&d); /* main()'s own wake, now after the loop is closed */
    printf("test_shutdown_wake: a wake after the loop thread stopped did not abort\n");
    return 0;
}
