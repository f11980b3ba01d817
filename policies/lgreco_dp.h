/*
 * lgreco_dp.h: the dynamic program of L-GreCo (algorithms.md 3.4), on its own so that
 * it can be tested without the policy around it.
 *
 * Given, for each of nlayers layers and ncand candidate parameters, the compression
 * error err[l][j] and the bytes sent size[l][j], choose one candidate per layer that
 * minimises the total size subject to sum_l err[l][choice[l]] <= target, with the
 * errors discretised into nbuckets buckets of target / nbuckets:
 *   e[l][j] = floor(err[l][j] / (target / nbuckets))
 *   DP[l][b] = min_j DP[l-1][b - e[l][j]] + size[l][j],   DP[-1][0] = 0
 * then the smallest DP[nlayers-1][b] over b <= nbuckets, and a backtrack.
 *
 * The floor makes the discretised error of any choice at most its real error over the
 * unit, so a choice whose real total error is <= target is always feasible: with
 * target = alpha * (the default's total error) and alpha >= 1, the uniform default is
 * feasible and the result is never larger than it. The real total error of the result
 * is below target + nlayers * unit (each floor loses less than one unit).
 */
#ifndef GP_LGRECO_DP_H
#define GP_LGRECO_DP_H

#include <stddef.h>

/* The most candidates per layer the DP accepts (its backtrack table holds bytes). */
#define GP_LGRECO_DP_MAX_CAND 255

typedef struct gp_lgreco_dp_result {
    double size;  /* total bytes of the chosen candidates */
    double err;   /* total (real, not discretised) error of the chosen candidates */
} gp_lgreco_dp_result;

/*
 * err and size are [nlayers * ncand], row l holding layer l's candidates. A candidate
 * whose err or size is not finite, or whose err is negative, is not a choice. On
 * GCOMP_OK choice[l] is the chosen candidate of layer l and *res (if not NULL) the
 * totals. GCOMP_NOT_FOUND: nothing to choose from (nlayers 0, target not positive or
 * not finite, or no combination within target: a DP row with every entry infinite);
 * choice is left untouched then. GCOMP_INVALID: bad sizes; GCOMP_NOMEM.
 * Deterministic: among equal total sizes the smaller discretised total error wins;
 * other ties go to the combination found first (layers in order, candidates in order).
 */
int gp_lgreco_dp(int nlayers, int ncand, const double *err, const double *size, double target,
                 int nbuckets, int *choice, gp_lgreco_dp_result *res);

#endif
