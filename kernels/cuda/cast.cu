/*
 * fp16, bf16 on the device (semantics in ref/cast.c, contract in cuda/launch.h). One
 * thread per element, grid-stride: v = clamp(x / W, +-L) rounded to the narrow type by
 * the reference's own conversions (halfconv.h, __host__ __device__ under nvcc), and the
 * residual x - W widen(v). Division, product and difference are written as the
 * round-to-nearest intrinsics so that nvcc cannot contract them into a fused
 * multiply-add: every element is bit for bit the reference's.
 */
#include <stdint.h>

#include "../halfconv.h"
#include "launch.h"

struct cast_fp16 {
    static __host__ __device__ uint16_t narrow(float f) { return gk_float_to_half(f); }
    static __host__ __device__ float widen(uint16_t h) { return gk_half_to_float(h); }
    static const uint16_t max_bits = 0x7bffu; /* 65504 */
};

struct cast_bf16 {
    static __host__ __device__ uint16_t narrow(float f) { return gk_float_to_bf16(f); }
    static __host__ __device__ float widen(uint16_t h) { return gk_bf16_to_float(h); }
    static const uint16_t max_bits = 0x7f7fu; /* 3.3895e38 */
};

/* The largest narrow value <= MAX / W, as float (as ref/cast.c computes it). */
template <class T> static float cast_limit(int nodes)
{
    float bound = T::widen(T::max_bits) / (float)nodes;
    uint16_t h = T::narrow(bound);
    if (T::widen(h) > bound)
        h--;
    return T::widen(h);
}

template <class T>
static __global__ void cast_encode_kernel(float *x, uint16_t *v, size_t d, float W, float lim)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += stride) {
        float y = __fdiv_rn(x[i], W);
        if (y > lim)
            y = lim;
        if (y < -lim)
            y = -lim;
        uint16_t h = T::narrow(y);
        v[i] = h;
        x[i] = __fsub_rn(x[i], __fmul_rn(W, T::widen(h)));
    }
}

template <class T>
static __global__ void cast_decode_kernel(const uint16_t *sum, float *out, size_t d)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += stride)
        out[i] = T::widen(sum[i]);
}

template <class T> static int cast_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    if (!gk_cuda_call_ok(call))
        return GCOMP_INVALID;
    size_t d = call->layer->numel;
    cast_encode_kernel<T><<<gk_cuda_blocks(d), GK_CUDA_THREADS, 0, gk_cuda_stream(call)>>>(
        x, (uint16_t *)send, d, (float)call->nodes, cast_limit<T>(call->nodes));
    int rc = gk_cuda_launched();
    if (rc == GCOMP_OK)
        *bytes = d * sizeof(uint16_t);
    return rc;
}

template <class T>
static int cast_decode(const gk_call *call, float *x, const void *const *recv, const size_t *bytes,
                       int nrecv, float *out)
{
    (void)x;
    if (!gk_cuda_call_ok(call))
        return GCOMP_INVALID;
    size_t d = call->layer->numel;
    if (nrecv != 1 || bytes[0] != d * sizeof(uint16_t))
        return GCOMP_PROTOCOL;
    cast_decode_kernel<T><<<gk_cuda_blocks(d), GK_CUDA_THREADS, 0, gk_cuda_stream(call)>>>(
        (const uint16_t *)recv[0], out, d);
    return gk_cuda_launched();
}

/* The entries the registry's codecs name (ref/cast.c): C linkage, and declared extern
   because a const object in C++ is otherwise local to its file. */
extern "C" {
extern const gk_codec_impl gk_fp16_cuda, gk_bf16_cuda;
const gk_codec_impl gk_fp16_cuda = {cast_encode<cast_fp16>, cast_decode<cast_fp16>};
const gk_codec_impl gk_bf16_cuda = {cast_encode<cast_bf16>, cast_decode<cast_bf16>};
}
