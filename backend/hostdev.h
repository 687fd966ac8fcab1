/* NAC_HOSTDEV marks the static inline functions that both backends compile: plain C on the
 * host, __host__ __device__ under nvcc (the CUDA kernels). */
#ifndef NAC_HOSTDEV_H
#define NAC_HOSTDEV_H

#ifdef __CUDACC__
#define NAC_HOSTDEV __host__ __device__
#else
#define NAC_HOSTDEV
#endif

#endif
