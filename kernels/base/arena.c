#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

struct gk_arena_chunk {
    gk_arena_chunk *next;
    size_t size, used;
    _Alignas(64) unsigned char data[];
};

#define ARENA_ALIGN 64
#define ARENA_MIN_CHUNK ((size_t)1 << 20)

void *gk_arena_alloc(gk_arena *a, size_t bytes)
{
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < bytes)
        return NULL;
    gk_arena_chunk *c = a->head;
    if (c && c->size - c->used >= need) {
        void *p = c->data + c->used;
        c->used += need;
        return p;
    }
    /* A spare chunk that is large enough, else a new one. */
    gk_arena_chunk **sp = &a->spare;
    while (*sp && (*sp)->size < need)
        sp = &(*sp)->next;
    if (*sp) {
        c = *sp;
        *sp = c->next;
    } else {
        size_t size = need > ARENA_MIN_CHUNK ? need : ARENA_MIN_CHUNK;
        if (size > SIZE_MAX - sizeof(*c))
            return NULL;
        c = aligned_alloc(ARENA_ALIGN, (sizeof(*c) + size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1));
        if (!c)
            return NULL;
        c->size = size;
    }
    c->used = need;
    c->next = a->head;
    a->head = c;
    return c->data;
}

gk_arena_mark gk_arena_mark_get(const gk_arena *a)
{
    return (gk_arena_mark){.chunk = a->head, .used = a->head ? a->head->used : 0};
}

void gk_arena_release(gk_arena *a, gk_arena_mark m)
{
    while (a->head && a->head != m.chunk) {
        gk_arena_chunk *c = a->head;
        a->head = c->next;
        c->used = 0;
        c->next = a->spare;
        a->spare = c;
    }
    if (a->head)
        a->head->used = m.used;
}

void gk_arena_free(gk_arena *a)
{
    for (gk_arena_chunk *lists[2] = {a->head, a->spare}, **l = lists; l < lists + 2; l++)
        while (*l) {
            gk_arena_chunk *c = *l;
            *l = c->next;
            free(c);
        }
    a->head = a->spare = NULL;
}
