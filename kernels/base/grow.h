/*
 * grow.h: gcomp's one growable array. Arrays are a pointer, a count and a capacity
 * owned by the caller; gk_grow makes room.
 */
#ifndef GK_GROW_H
#define GK_GROW_H

#include <stddef.h>

/*
 * Return arr with room for at least `need` elements of `elem` bytes, growing *cap
 * (doubling, from 8). NULL on overflow or out of memory: arr and *cap are then
 * unchanged and still owned by the caller. Typical use:
 *     T *a = gk_grow(v->items, &v->cap, v->n + 1, sizeof(*a));
 *     if (!a) return GCOMP_NOMEM;
 *     v->items = a;
 */
void *gk_grow(void *arr, size_t *cap, size_t need, size_t elem);

#endif
