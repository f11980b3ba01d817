/*
 * lgreco_dp.c: L-GreCo's dynamic program (see lgreco_dp.h).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "gcomp.h"
#include "lgreco_dp.h"

int gp_lgreco_dp(int nlayers, int ncand, const double *err, const double *size, double target,
                 int nbuckets, int *choice, gp_lgreco_dp_result *res)
{
    if (nlayers < 0 || ncand < 1 || ncand > GP_LGRECO_DP_MAX_CAND || nbuckets < 1 || !err ||
        !size || !choice)
        return GCOMP_INVALID;
    if (nlayers == 0 || !(target > 0) || !isfinite(target))
        return GCOMP_NOT_FOUND;
    const size_t nb = (size_t)nbuckets + 1, nl = (size_t)nlayers, nc = (size_t)ncand;
    const double unit = target / nbuckets;
    /* The discretised errors; -1 marks a candidate that is no choice (or alone exceeds
       the budget, which no combination can then meet). */
    int *e = malloc(nl * nc * sizeof(int));
    double *prev = malloc(nb * sizeof(double)), *cur = malloc(nb * sizeof(double));
    uint8_t *pick = malloc(nl * nb);
    int rc = e && prev && cur && pick ? GCOMP_OK : GCOMP_NOMEM;
    for (size_t k = 0; k < nl * nc && !rc; k++) {
        double q = err[k] / unit;
        e[k] = isfinite(size[k]) && err[k] >= 0 && q <= (double)nbuckets ? (int)floor(q) : -1;
    }
    for (size_t b = 0; b < nb && !rc; b++)
        prev[b] = b == 0 ? 0.0 : INFINITY;
    for (size_t l = 0; l < nl && !rc; l++) {
        const int *el = e + l * nc;
        const double *sl = size + l * nc;
        uint8_t *pl = pick + l * nb;
        bool any = false;
        for (size_t b = 0; b < nb; b++)
            cur[b] = INFINITY;
        for (size_t b = 0; b < nb; b++) {
            if (prev[b] == INFINITY)
                continue;
            for (size_t j = 0; j < nc; j++) {
                if (el[j] < 0 || b + (size_t)el[j] >= nb)
                    continue;
                size_t to = b + (size_t)el[j];
                double v = prev[b] + sl[j];
                if (v < cur[to]) {
                    cur[to] = v;
                    pl[to] = (uint8_t)j;
                    any = true;
                }
            }
        }
        /* The guard of algorithms.md 3.4: a row with every entry infinite means no
           combination of the layers so far fits the budget. */
        if (!any)
            rc = GCOMP_NOT_FOUND;
        double *t = prev;
        prev = cur;
        cur = t;
    }
    if (!rc) {
        /* The smallest total size; among equal ones the smallest discretised error. */
        size_t best = 0;
        for (size_t b = 1; b < nb; b++)
            if (prev[b] < prev[best])
                best = b;
        gp_lgreco_dp_result r = {.size = 0, .err = 0};
        for (size_t l = nl; l-- > 0;) {
            int j = pick[l * nb + best];
            choice[l] = j;
            r.size += size[l * nc + (size_t)j];
            r.err += err[l * nc + (size_t)j];
            best -= (size_t)e[l * nc + (size_t)j];
        }
        if (res)
            *res = r;
    }
    free(e);
    free(prev);
    free(cur);
    free(pick);
    return rc;
}
