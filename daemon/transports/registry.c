/*
 * registry.c: every data transport gcompd knows, in one array (the first is the
 * default). A transport whose code was not built is listed with a stub that answers
 * "not built in" (GCOMP_NOT_BUILT), never "unknown".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "gcomp.h"
#include "gcomp_config.h"

extern const gcd_data_ops gcd_data_mpi;
#if GCOMP_HAVE_UCX
extern const gcd_data_ops gcd_data_ucx;
#endif

/* Stubs of the transports this build lacks. */
static int not_built(const char *name, const char *why, char *err, size_t errlen)
{
    snprintf(err, errlen, "transport '%s' is not built in (%s)", name, why);
    return GCOMP_NOT_BUILT;
}

#if !GCOMP_HAVE_UCX
static int ucx_stub_init(gcd_ctl *ctl, int lanes, void **priv, char *err, size_t errlen)
{
    (void)ctl;
    (void)lanes;
    (void)priv;
    return not_built("ucx", "no UCX data plane in this build: configure with libucx-dev "
                     "installed, -Ducx=enabled", err, errlen);
}
#endif

static int nccl_stub_init(gcd_ctl *ctl, int lanes, void **priv, char *err, size_t errlen)
{
    (void)ctl;
    (void)lanes;
    (void)priv;
    return not_built("nccl", "no NCCL data plane in this build", err, errlen);
}

static bool stub_moves(void *priv, gk_mem mem)
{
    (void)priv;
    (void)mem;
    return false;
}

#if !GCOMP_HAVE_UCX
static const gcd_data_ops ucx_stub = {
    .name = "ucx",
    .summary = "UCX host-memory data plane (not built in)",
    .init = ucx_stub_init,
    .moves = stub_moves,
};
#endif

static const gcd_data_ops nccl_stub = {
    .name = "nccl",
    .summary = "NCCL device-memory data plane (not built in)",
    .init = nccl_stub_init,
    .moves = stub_moves,
};

const gcd_data_ops *const gcd_data_transports[] = {
    &gcd_data_mpi,
#if GCOMP_HAVE_UCX
    &gcd_data_ucx,
#else
    &ucx_stub,
#endif
    &nccl_stub,
};

const int gcd_ndata_transports = sizeof(gcd_data_transports) / sizeof(gcd_data_transports[0]);

const gcd_data_ops *gcd_data_find(const char *name)
{
    for (int i = 0; i < gcd_ndata_transports; i++)
        if (strcmp(gcd_data_transports[i]->name, name) == 0)
            return gcd_data_transports[i];
    return NULL;
}

int gcd_data_alloc(gcd_data *d, gk_mem mem, size_t bytes, gcd_buf *out)
{
    if (d->ops->alloc)
        return d->ops->alloc(d->priv, mem, bytes, out);
    if (mem != GK_MEM_HOST)
        return GCOMP_NOT_BUILT;
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        return GCOMP_NOMEM;
    *out = (gcd_buf){.ptr = p, .bytes = bytes, .mem = GK_MEM_HOST};
    return GCOMP_OK;
}

void gcd_data_release(gcd_data *d, gcd_buf *b)
{
    if (!b->ptr)
        return;
    if (d->ops->release)
        d->ops->release(d->priv, b);
    else
        free(b->ptr);
    *b = (gcd_buf){0};
}
