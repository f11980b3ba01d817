/*
 * cpu_supports_compat.h: force-included into every file of a fuzz build made with clang
 * older than 18 (meson.build), whose __builtin_cpu_supports() does not know "f16c"
 * (kernels/cpu/cast.c asks for it, which is a compile error there). The builtin is
 * answered from cpuid instead, for the features gcomp asks about; any other feature
 * aborts with a message, so no answer is ever made up.
 */
#ifndef FZ_CPU_SUPPORTS_COMPAT_H
#define FZ_CPU_SUPPORTS_COMPAT_H

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int fz_cpu_supports(const char *feature)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    /* AVX state is usable only if the OS saves it (OSXSAVE, then XCR0 bits 1 and 2). */
    unsigned lo = 0, hi = 0;
    if (c & bit_OSXSAVE)
        __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    int avx = (c & bit_AVX) && (lo & 6) == 6;
    if (strcmp(feature, "avx") == 0)
        return avx;
    if (strcmp(feature, "f16c") == 0)
        return avx && (c & bit_F16C);
    fprintf(stderr, "cpu_supports_compat.h: no cpuid answer for '%s'; add it\n", feature);
    abort();
}

#define __builtin_cpu_supports(feature) fz_cpu_supports(feature)

#endif
