/*
 * launch.h: what the CUDA codecs (the .cu files of kernels/cuda) share: the check of the execution
 * context, the stream, the grid of an elementwise kernel, and CUDA errors as gcomp
 * statuses. Internal to kernels/cuda; C++ (nvcc) only.
 *
 * The contract of every CUDA implementation, on top of kernels/codec.h: call->exec is
 * not NULL, exec->backend is GK_BACKEND_CUDA and exec->mem is GK_MEM_DEVICE, so x, send,
 * recv[] and out are device pointers (recv and bytes themselves are host arrays). The
 * work is enqueued on exec->stream (NULL: the legacy default stream) and the call
 * returns without waiting for it: x, send and out hold their results once the stream
 * has reached that point, and the caller synchronises the stream before it reads them
 * or hands them to a collective. Temporaries come from the stream-ordered allocator
 * (cudaMallocAsync) and are released on the same stream. The return value reports
 * errors known when the work is enqueued (bad arguments, launch failures, no memory);
 * an error while the kernels run shows at the caller's synchronisation.
 */
#ifndef GK_CUDA_LAUNCH_H
#define GK_CUDA_LAUNCH_H

#include <cuda_runtime.h>

extern "C" {
#include "../codec.h"
#include "gcomp.h"
}

/* A CUDA error as a gcomp status: GCOMP_OK, GCOMP_NOMEM for an allocation that
   failed, GCOMP_INVALID for arguments CUDA refused, GCOMP_INTERNAL otherwise
   (no device, no driver, a failed launch). */
static inline int gk_cuda_status(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return GCOMP_OK;
    case cudaErrorMemoryAllocation:
        return GCOMP_NOMEM;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
        return GCOMP_INVALID;
    default:
        return GCOMP_INTERNAL;
    }
}

/* Whether the call may run on the CUDA backend (see above). */
static inline bool gk_cuda_call_ok(const gk_call *call)
{
    return call->exec && call->exec->backend == GK_BACKEND_CUDA &&
           call->exec->mem == GK_MEM_DEVICE;
}

static inline cudaStream_t gk_cuda_stream(const gk_call *call)
{
    return (cudaStream_t)call->exec->stream;
}

/* Threads per block and blocks for a grid-stride loop over n elements (n >= 1). */
#define GK_CUDA_THREADS 256
static inline unsigned gk_cuda_blocks(size_t n)
{
    size_t b = (n + GK_CUDA_THREADS - 1) / GK_CUDA_THREADS;
    return b < 4096 ? (unsigned)b : 4096u;
}

/* The status of the kernels just launched (launch errors only; see above). */
static inline int gk_cuda_launched(void)
{
    return gk_cuda_status(cudaGetLastError());
}

#endif /* GK_CUDA_LAUNCH_H */
