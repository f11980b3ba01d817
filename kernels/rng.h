/*
 * rng.h: the shared generator. Seeded from (job seed, layer id, step, stream), it
 * yields the same numbers on every node, which is what makes Random-K indices and
 * PowerSGD's first Q agree without sending them. xoshiro256** seeded by splitmix64.
 * Under nvcc the integer functions (seed, next, below, uniform) are __host__ __device__,
 * so that CUDA kernels draw the very same numbers (kernels/cuda/randomk.cu); normal is
 * host only (the device's log and cos round differently).
 */
#ifndef GK_RNG_H
#define GK_RNG_H

#include <math.h>
#include <stdint.h>

#include "base/hostdev.h"

typedef struct gk_rng {
    uint64_t s[4];
} gk_rng;

GK_HOSTDEV static inline uint64_t gk_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* stream separates independent uses within one layer and step (e.g. node index for
   node-local stochastic rounding, 0 for shared draws). */
GK_HOSTDEV static inline void gk_rng_seed(gk_rng *r, uint64_t seed, uint64_t layer_id,
                                          uint64_t step, uint64_t stream)
{
    /* Each step draws from x, then xors the advanced x: written out because in C the
       order of the read of x and the call in `x ^= gk_splitmix64(&x) + ...` is
       unspecified (GCC and Clang call first, as C++17, and so nvcc's device code, must). */
    uint64_t x = seed, z;
    z = gk_splitmix64(&x);
    x ^= z + layer_id;
    z = gk_splitmix64(&x);
    x ^= z + step;
    z = gk_splitmix64(&x);
    x ^= z + stream;
    for (int i = 0; i < 4; i++)
        r->s[i] = gk_splitmix64(&x);
}

GK_HOSTDEV static inline uint64_t gk_rng_next(gk_rng *r)
{
    uint64_t *s = r->s;
    uint64_t t = s[1] << 17, v = s[1] * 5;
    uint64_t out = ((v << 7) | (v >> 57)) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

/* Uniform in [0, 1) with 24 random bits. */
GK_HOSTDEV static inline float gk_rng_uniform(gk_rng *r)
{
    return (float)(gk_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for n < 2^32). */
GK_HOSTDEV static inline uint64_t gk_rng_below(gk_rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)gk_rng_next(r) * n) >> 64);
}

/* Standard normal (Box-Muller, one value per call). */
static inline float gk_rng_normal(gk_rng *r)
{
    double u1 = ((double)(gk_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(gk_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif /* GK_RNG_H */
