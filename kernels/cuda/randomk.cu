/*
 * randomk on the device (semantics in ref/randomk.c, contract in cuda/launch.h).
 *
 * The shared draw is gk_sparse_floyd's, run by one device thread into a bitmap of n bits
 * with the reference's generator (rng.h, __host__ __device__ under nvcc): the same k
 * draws in the same order, so the same indices on every node and backend. Floyd's
 * algorithm is sequential (each draw looks at the ones before), so this costs k
 * dependent steps on one thread; a parallel draw of the same set is later work.
 *
 * The chosen indices are then visited in ascending order, as the reference sends them,
 * by one block: each thread takes a run of bitmap words, an exclusive scan of the runs'
 * popcounts gives each its first payload slot. Encode gathers x there; decode scatters
 * sum / W (the division rounded to nearest, as on the host) into a zeroed out and zeroes
 * x at the same indices. Temporaries: the bitmap, n / 8 bytes, per call.
 */
#include <stdint.h>

extern "C" {
#include "../sparse.h"
}
#include "../rng.h"
#include "launch.h"

#define RANDOMK_SCAN_THREADS 1024

/* gk_sparse_floyd with the bitmap as mark/marked; bits zeroed. One thread. */
static __global__ void randomk_floyd_kernel(uint64_t seed, uint64_t layer_id, uint64_t step,
                                            size_t n, size_t k, uint64_t *bits)
{
    gk_rng r;
    gk_rng_seed(&r, seed, layer_id, step, 0);
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)gk_rng_below(&r, (uint64_t)j + 1);
        size_t m = ((bits[t >> 6] >> (t & 63)) & 1) ? j : t;
        bits[m >> 6] |= (uint64_t)1 << (m & 63);
    }
}

/* Encode (sum == NULL): val[j] = x[i_j]. Decode: out[i_j] = sum[j] / W, x[i_j] = 0.
   i_j is the j-th set bit of bits (nw words). One block of RANDOMK_SCAN_THREADS. */
static __global__ void randomk_pass_kernel(const uint64_t *bits, size_t nw, float *x,
                                           float *val, const float *sum, float *out, float W)
{
    __shared__ size_t first[RANDOMK_SCAN_THREADS];
    unsigned t = threadIdx.x;
    size_t per = (nw + blockDim.x - 1) / blockDim.x;
    size_t lo = (size_t)t * per < nw ? (size_t)t * per : nw;
    size_t hi = lo + per < nw ? lo + per : nw;
    size_t count = 0;
    for (size_t w = lo; w < hi; w++)
        count += (size_t)__popcll(bits[w]);
    first[t] = count;
    __syncthreads();
    for (unsigned off = 1; off < blockDim.x; off <<= 1) { /* inclusive scan */
        size_t add = t >= off ? first[t - off] : 0;
        __syncthreads();
        first[t] += add;
        __syncthreads();
    }
    size_t j = first[t] - count;
    for (size_t w = lo; w < hi; w++)
        for (uint64_t b = bits[w]; b; b &= b - 1) {
            size_t i = w * 64 + (size_t)(__ffsll((long long)b) - 1);
            if (!sum) {
                val[j++] = x[i];
            } else {
                out[i] = __fdiv_rn(sum[j++], W);
                x[i] = 0.0f;
            }
        }
}

/* Draw the layer's indices into a new device bitmap and run the pass over them. */
static int randomk_cuda_run(const gk_call *call, float *x, float *val, const float *sum,
                            float *out)
{
    cudaStream_t s = gk_cuda_stream(call);
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    size_t nw = (n + 63) / 64;
    uint64_t *bits = NULL;
    cudaError_t e = cudaMallocAsync((void **)&bits, nw * sizeof(*bits), s);
    if (e != cudaSuccess)
        return gk_cuda_status(e);
    if ((e = cudaMemsetAsync(bits, 0, nw * sizeof(*bits), s)) != cudaSuccess)
        goto err_free_bits;
    if (out && (e = cudaMemsetAsync(out, 0, n * sizeof(*out), s)) != cudaSuccess)
        goto err_free_bits;
    randomk_floyd_kernel<<<1, 1, 0, s>>>(call->seed, call->layer->id, call->step, n, k, bits);
    randomk_pass_kernel<<<1, RANDOMK_SCAN_THREADS, 0, s>>>(bits, nw, x, val, sum, out,
                                                           (float)call->nodes);
    e = cudaGetLastError();
err_free_bits:
    cudaError_t ef = cudaFreeAsync(bits, s);
    return gk_cuda_status(e != cudaSuccess ? e : ef);
}

static int randomk_cuda_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    if (!gk_cuda_call_ok(call))
        return GCOMP_INVALID;
    int rc = randomk_cuda_run(call, x, (float *)send, NULL, NULL);
    if (rc == GCOMP_OK)
        *bytes = gk_sparse_spec_k(call->spec, call->layer) * sizeof(float);
    return rc;
}

static int randomk_cuda_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    if (!gk_cuda_call_ok(call))
        return GCOMP_INVALID;
    size_t k = gk_sparse_spec_k(call->spec, call->layer);
    if (nrecv != 1 || !recv || !recv[0] || bytes[0] != k * sizeof(float))
        return GCOMP_INVALID;
    return randomk_cuda_run(call, x, NULL, (const float *)recv[0], out);
}

/* The entries the registry's codecs name (ref/randomk.c): C linkage, and declared extern
   because a const object in C++ is otherwise local to its file. */
extern "C" {
extern const gk_codec_impl gk_randomk_cuda;
const gk_codec_impl gk_randomk_cuda = {randomk_cuda_encode, randomk_cuda_decode};
}
