/*
 * hostdev.h: GK_HOSTDEV marks a function that the host code and the CUDA kernels share
 * (__host__ __device__ under nvcc, nothing elsewhere).
 */
#ifndef GK_HOSTDEV_H
#define GK_HOSTDEV_H

#ifdef __CUDACC__
#define GK_HOSTDEV __host__ __device__
#else
#define GK_HOSTDEV
#endif

#endif
