/*
 * clock.h: gcomp's one clock, CLOCK_MONOTONIC, for every duration and deadline (never
 * the wall clock, which jumps). Any thread.
 */
#ifndef GK_CLOCK_H
#define GK_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Seconds since an arbitrary fixed point. */
static inline double gk_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds since the same point. */
static inline int64_t gk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
