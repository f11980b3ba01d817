#include "grow.h"

#include <stdint.h>
#include <stdlib.h>

void *gk_grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap && arr)
        return arr;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return NULL;
        ncap *= 2;
    }
    if (elem && ncap > SIZE_MAX / elem)
        return NULL;
    size_t bytes = ncap * elem;
    void *p = realloc(arr, bytes ? bytes : 1);
    if (p)
        *cap = ncap;
    return p;
}
