// Helpers shared by the torch.library registrations in csrc/torch: turning tensors into the
// C ABI's dtype codes, strides and streams, and a failed status into a torch error.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#ifdef PYR_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "pyreversible/kernels.h"

namespace pyr {

inline int32_t dtype_code(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return PYR_FLOAT32;
    case at::kDouble:
      return PYR_FLOAT64;
    case at::kHalf:
      return PYR_FLOAT16;
    case at::kBFloat16:
      return PYR_BFLOAT16;
    default:
      TORCH_CHECK_TYPE(false, op, ": unsupported dtype ", t.scalar_type());
  }
}

// The partition as the Python layer encodes it: [kind, parity, dim_a, dim_b, offset_a,
// offset_b, row_pairs, height] (see pyreversible/ops/additive_coupling.py).
inline pyr_partition partition_from(at::IntArrayRef v, const char* op) {
  TORCH_CHECK_VALUE(v.size() == 8, op, ": partition must have 8 entries, got ", v.size());
  pyr_partition p;
  p.kind = static_cast<int32_t>(v[0]);
  p.parity = static_cast<int32_t>(v[1]);
  p.dim_a = v[2];
  p.dim_b = v[3];
  p.offset_a = v[4];
  p.offset_b = v[5];
  p.row_pairs = v[6];
  p.height = v[7];
  return p;
}

// Sets the fields every params struct shares: threads for the CPU, the stream for CUDA.
template <typename Params>
inline void set_execution(Params& p, const at::Tensor& like) {
  p.num_threads = at::get_num_threads();
  p.stream = nullptr;
#ifdef PYR_WITH_CUDA
  if (like.is_cuda()) p.stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
#endif
}

// A failed status as the torch error a caller expects: TypeError for a dtype, ValueError for
// a size, stride or argument, RuntimeError for the rest.
inline void check_status(pyr_status status, const char* op) {
  if (status == PYR_SUCCESS) return;
  const char* message = pyr_status_string(status);
  TORCH_CHECK_TYPE(status != PYR_ERROR_UNSUPPORTED_DTYPE, op, ": ", message);
  TORCH_CHECK_VALUE(status != PYR_ERROR_INVALID_SIZE && status != PYR_ERROR_INVALID_STRIDE &&
                        status != PYR_ERROR_INVALID_ARGUMENT,
                    op, ": ", message);
  TORCH_CHECK(false, op, ": kernel failed: ", message);
}

// Runs the CPU or the CUDA entry point of a kernel, by the device of `like`.
template <typename Params>
inline void launch(pyr_status (*cpu)(const Params*), pyr_status (*cuda)(const Params*),
                   const Params& p, const at::Tensor& like, const char* op) {
  if (like.is_cuda()) {
#ifdef PYR_WITH_CUDA
    const c10::cuda::CUDAGuard guard(like.device());
    check_status(cuda(&p), op);
#else
    (void)cuda;
    TORCH_CHECK(false, op, ": pyreversible._C was built without CUDA");
#endif
  } else {
    check_status(cpu(&p), op);
  }
}

}  // namespace pyr
