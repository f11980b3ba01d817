/*
 * ckpt.h: what the policies' save() and load() share on top of base/binio.h: refusing a
 * checkpoint made with other arguments, reading counts and float arrays without trusting
 * their lengths, and the status a refused load returns.
 *
 * Every policy's record is: gk_put_tag(w, TAG, VERSION), the arguments its state depends
 * on (each written with gk_put / gk_put_str and read back with gp_ckpt_arg_*), then its
 * fields. load() reads everything into a new state first and replaces the old one only
 * when all of it was read and checked, so a refused checkpoint leaves the policy as it
 * was.
 *
 * Threads: whatever thread owns the writer or reader (the engine's, per policy.h).
 */
#ifndef GP_CKPT_H
#define GP_CKPT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/binio.h"

/* Read an argument of the saved state and fail the reader, with r->err "POLICY
   checkpoint made with KEY=SAVED; this POLICY has KEY=WANT", when it is not `want`.
   Return false on any failure. */
bool gp_ckpt_arg_f64(gk_reader *r, const char *policy, const char *key, double want);
bool gp_ckpt_arg_i64(gk_reader *r, const char *policy, const char *key, int64_t want);
bool gp_ckpt_arg_str(gk_reader *r, const char *policy, const char *key, const char *want);

/* Read a count (u64) and fail the reader, naming `what`, when it exceeds max. */
bool gp_ckpt_count(gk_reader *r, const char *what, uint64_t max, uint64_t *n);

/* Read n floats (as gk_put_f32s wrote them) into a new malloc'd array *out (NULL when
   n is 0; the caller frees it). The array grows with what was read, so a length beyond
   the data fails as truncated without allocating it. On failure *out is NULL. */
bool gp_ckpt_get_f32s_new(gk_reader *r, uint64_t n, float **out);

/* The status of a refused load: GCOMP_IO when the checkpoint ended early or could not
   be read, GCOMP_INVALID when it was read and refused (another record or version,
   other arguments, a value out of range); r->err says which. */
int gp_ckpt_status(const gk_reader *r);

#endif
