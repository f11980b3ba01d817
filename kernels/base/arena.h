/*
 * arena.h: scratch memory for one thread (a worker of the daemon's pool, or a test).
 * Allocations are bumped from chunks that are kept across uses, so a codec or policy
 * that needs temporary buffers every step does not fault fresh pages in every step.
 * Release to a mark frees everything allocated after it (for reuse, not to the system).
 *
 * Threads: an arena belongs to one thread at a time.
 */
#ifndef GK_ARENA_H
#define GK_ARENA_H

#include <stddef.h>

typedef struct gk_arena_chunk gk_arena_chunk;

typedef struct gk_arena {
    gk_arena_chunk *head; /* chunks in use, newest first; spare ones after `spare` */
    gk_arena_chunk *spare;
} gk_arena;

typedef struct gk_arena_mark {
    gk_arena_chunk *chunk;
    size_t used;
} gk_arena_mark;

/* bytes of scratch aligned to 64 bytes, valid until a release below it or the arena is
   freed; NULL when out of memory. The memory is not zeroed. */
void *gk_arena_alloc(gk_arena *a, size_t bytes);
gk_arena_mark gk_arena_mark_get(const gk_arena *a);
void gk_arena_release(gk_arena *a, gk_arena_mark m);
/* Give every chunk back to the system. A zeroed gk_arena is empty and valid. */
void gk_arena_free(gk_arena *a);

#endif
