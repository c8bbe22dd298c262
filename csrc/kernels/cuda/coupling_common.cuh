// Device helpers shared by the coupling kernels: the accumulation type of each dtype, loads and
// stores through it, and the partition's feature <-> position maps.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "pyreversible/kernels.h"

namespace pyr_cuda {

// float32 accumulates the 16-bit types (their products and sums lose too much in 16 bits);
// double keeps double.
template <typename T>
struct AccOf {
  using type = float;
};

template <>
struct AccOf<double> {
  using type = double;
};

// Conversions go through the intrinsics only: the torch extension build defines
// __CUDA_NO_HALF_CONVERSIONS__ and __CUDA_NO_BFLOAT16_CONVERSIONS__, which hide the operators.
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename AccOf<T>::type v);

template <>
__device__ __forceinline__ float from_acc<float>(float v) {
  return v;
}

template <>
__device__ __forceinline__ double from_acc<double>(double v) {
  return v;
}

template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}

template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The position of feature j of part a (part = 0) or b (part = 1): the same formula as
// pyr_partition_position in pyreversible/kernels.h, which is a host-only inline function.
__device__ __forceinline__ int64_t partition_position(const pyr_partition& p, int64_t j, int part) {
  if (p.kind == PYR_PARTITION_SPLIT) return (part ? p.offset_b : p.offset_a) + j;
  const int64_t row = j / p.row_pairs;
  const int64_t k = j - row * p.row_pairs;
  const int64_t shift = (row % p.height + p.parity + part) & 1;
  return row * 2 * p.row_pairs + 2 * k + shift;
}

// The inverse map: the part and feature index of position k. Exact for a partition that is a
// bijection onto the row's positions, which the host checks before any launch.
__device__ __forceinline__ void feature_of_position(const pyr_partition& p, int64_t k, int* part,
                                                    int64_t* j) {
  if (p.kind == PYR_PARTITION_SPLIT) {
    const bool in_b = k >= p.offset_b && k < p.offset_b + p.dim_b;
    *part = in_b ? 1 : 0;
    *j = k - (in_b ? p.offset_b : p.offset_a);
    return;
  }
  // Position k sits in row k / (2 row_pairs) at slot r; slot r holds the (r / 2)-th feature of
  // the part whose shift, (row % height + parity + part) & 1, equals r & 1.
  const int64_t width = 2 * p.row_pairs;
  const int64_t row = k / width;
  const int64_t r = k - row * width;
  const int64_t shift_a = (row % p.height + p.parity) & 1;
  *part = (r & 1) == shift_a ? 0 : 1;
  *j = row * p.row_pairs + r / 2;
}

}  // namespace pyr_cuda
