// The elementwise part of a reversible block on CUDA GPUs: out[t] = a[t] + sign[t] * c[t] for one
// or two terms in one launch. Semantics, and the checks of the arguments (one function, but for
// the dtypes), are those of cpu/reversible_block.cpp. The op is memory bound: consecutive
// threads take consecutive features of a row, so the loads and stores of a warp are coalesced
// when the rows have unit stride, and each thread does every term of its elements, so one
// launch reads and writes each element once.
#include <cuda_runtime.h>
#include <stdint.h>

#include "coupling_common.cuh"
#include "pyreversible/kernels.h"

namespace pyr_cpu {
// csrc/kernels/cpu/reversible_block.cpp: every check of the params but the dtype.
pyr_status check_reversible_block(const pyr_reversible_block_params* p);
}  // namespace pyr_cpu

namespace {

using pyr_cuda::AccOf;
using pyr_cuda::from_acc;
using pyr_cuda::to_acc;

constexpr int kThreads = 256;
// Features per thread: four per thread keep enough loads in flight per warp to cover latency.
constexpr int kPerThread = 4;
constexpr int64_t kTileD = kThreads * kPerThread;
// The grid's y extent is capped by CUDA at 65535; further rows are strided over.
constexpr int64_t kMaxGridY = 65535;

template <typename T>
struct Term {
  const T* a;
  int64_t stride_a_b, stride_a_d;
  const T* c;
  int64_t stride_c_b, stride_c_d;
  T* out;
  int64_t stride_out_b, stride_out_d;
  int sign;
};

template <typename T>
struct Args {
  int64_t batch, dim;
  int num_terms;
  Term<T> terms[2];
};

template <typename T>
__device__ __forceinline__ void update(const Term<T>& t, int64_t b, int64_t j) {
  using Acc = typename AccOf<T>::type;
  const Acc a = to_acc(t.a[b * t.stride_a_b + j * t.stride_a_d]);
  const Acc c = to_acc(t.c[b * t.stride_c_b + j * t.stride_c_d]);
  t.out[b * t.stride_out_b + j * t.stride_out_d] = from_acc<T>(t.sign > 0 ? a + c : a - c);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) reversible_block_kernel(Args<T> args) {
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTileD + threadIdx.x;
  for (int64_t b = blockIdx.y; b < args.batch; b += gridDim.y) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t j = j0 + k * kThreads;
      if (j < args.dim) {
        update(args.terms[0], b, j);
        if (args.num_terms == 2) update(args.terms[1], b, j);
      }
    }
  }
}

bool dtype_ok(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 || dtype == PYR_FLOAT16 ||
         dtype == PYR_BFLOAT16;
}

template <typename T>
pyr_status run(const pyr_reversible_block_params* p) {
  Args<T> args;
  args.batch = p->batch;
  args.dim = p->dim;
  args.num_terms = p->num_terms;
  for (int t = 0; t < 2; ++t) {
    // an unused second term repeats the first, so that the struct holds no garbage
    const pyr_reversible_block_term& s = p->terms[t < p->num_terms ? t : 0];
    Term<T>& d = args.terms[t];
    d.a = static_cast<const T*>(s.a);
    d.stride_a_b = s.stride_a_b;
    d.stride_a_d = s.stride_a_d;
    d.c = static_cast<const T*>(s.c);
    d.stride_c_b = s.stride_c_b;
    d.stride_c_d = s.stride_c_d;
    d.out = static_cast<T*>(s.out);
    d.stride_out_b = s.stride_out_b;
    d.stride_out_d = s.stride_out_d;
    d.sign = s.sign;
  }
  const int64_t tiles = (p->dim + kTileD - 1) / kTileD;
  if (tiles > 0x7fffffff) return PYR_ERROR_INVALID_SIZE;
  const dim3 grid(static_cast<unsigned>(tiles),
                  static_cast<unsigned>(p->batch < kMaxGridY ? p->batch : kMaxGridY));
  reversible_block_kernel<T><<<grid, kThreads, 0, static_cast<cudaStream_t>(p->stream)>>>(args);
  return cudaGetLastError() == cudaSuccess ? PYR_SUCCESS : PYR_ERROR_CUDA;
}

}  // namespace

extern "C" pyr_status pyr_reversible_block_cuda(const pyr_reversible_block_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  if (!dtype_ok(p->dtype)) return PYR_ERROR_UNSUPPORTED_DTYPE;
  if (pyr_status s = pyr_cpu::check_reversible_block(p)) return s;
  if (p->batch == 0 || p->dim == 0) return PYR_SUCCESS;
  switch (p->dtype) {
    case PYR_FLOAT32:
      return run<float>(p);
    case PYR_FLOAT64:
      return run<double>(p);
    case PYR_FLOAT16:
      return run<__half>(p);
    case PYR_BFLOAT16:
      return run<__nv_bfloat16>(p);
    default:
      return PYR_ERROR_UNSUPPORTED_DTYPE;
  }
}
