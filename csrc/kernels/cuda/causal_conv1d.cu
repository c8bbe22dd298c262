// Causal dilated 1-D convolution on CUDA GPUs: forward and backward. Semantics are those of
// cpu/causal_conv1d.cpp (see pyreversible/kernels.h).
//
// The forward is an implicit GEMM per (batch row, group): y (co x T) = W (co x ci K) times the
// tap matrix (ci K x T) whose row i K + k is input channel i shifted back by (K - 1 - k) d, read
// from x in place with zeros before t = 0 (conv_common.cuh: CausalTaps). A block computes 64
// output channels by 64 time steps; each chunk of 16 (channel, tap) rows of the weight and of the
// taps goes through shared memory, so a dilated tap costs an offset, not a copy. The input
// gradient is the same product with the roles turned: dx (ci x T) = W^T (ci x co K) times dy's
// taps shifted forward. The weight and bias gradients are one split reduction over (batch row,
// time step) of dy times the taps of x, with a column of ones for the bias. The depthwise
// convolution (one channel per group) has no channel mixing, so it runs as a direct loop, one
// thread per output over its K taps.
#include <cuda_runtime.h>
#include <stdint.h>

#include "conv_common.cuh"
#include "pyreversible/kernels.h"

namespace {

using pyr_cuda::AccOf;
using pyr_cuda::CausalBwdData;
using pyr_cuda::CausalBwdWeight;
using pyr_cuda::CausalTaps;
using pyr_cuda::from_acc;
using pyr_cuda::SplitShape;
using pyr_cuda::to_acc;

// y = W taps(x) + bias per (batch row, group): rows are the group's output channels, columns
// time steps, the reduction runs over (input channel, tap) rows r = i K + k.
template <typename T>
struct ConvFwd {
  using Acc = typename AccOf<T>::type;
  // the weight is contiguous along r; x along time
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch * groups, co, length, ci * K
  int64_t groups, ci, co, length, dilation;
  uint32_t taps;
  const T* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const T* weight;
  const T* bias;
  T* y;
  int64_t stride_y_b, stride_y_c, stride_y_t;

  struct Loader {
    const T* w;  // the weight's row m0 of the group, rows of `depth` elements
    int64_t w_rows, depth, n0;
    CausalTaps<T> x_taps;
    __device__ Acc a(int m, int64_t r) const {
      return m < w_rows ? to_acc(w[m * depth + r]) : Acc(0);
    }
    __device__ Acc b(int64_t r, int n) const { return x_taps.at(r, n0 + n); }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    const int64_t b = job / groups;
    const int64_t g = job - b * groups;
    const CausalTaps<T> x_taps{x + b * stride_x_b + g * ci * stride_x_c,
                               stride_x_c,
                               stride_x_t,
                               length,
                               dilation,
                               taps,
                               -1};
    return Loader{weight + (g * co + m0) * depth, co - m0, depth, n0, x_taps};
  }

  __device__ void store(int64_t job, int64_t m, int64_t n, Acc v) const {
    const int64_t b = job / groups;
    const int64_t o = (job - b * groups) * co + m;
    if (bias) v += to_acc(bias[o]);
    y[b * stride_y_b + o * stride_y_c + n * stride_y_t] = from_acc<T>(v);
  }
};

struct DepthwiseShape {
  int64_t batch, channels, length, taps, dilation;
};

// The depthwise convolution, one thread per output over its K taps:
// dst[b, c, t] = bias[c] + sum_k w[c, k] src[b, c, t + dir (K - 1 - k) d]. dir = -1: the
// forward (src = x, dst = y), whose taps before t = 0 read the padding's zeros (multiplied, so
// that a non-finite weight meets them as in torch); dir = +1: the input gradient (src = dy,
// dst = dx, no bias), whose taps past the end do not exist (torch pads only the past). Grid: x
// over blocks of 256 time steps, y over (batch row, channel) pairs, looping.
template <typename T>
struct DepthwiseArgs {
  DepthwiseShape s;
  int dir;
  const T* src;
  int64_t stride_src_b, stride_src_c, stride_src_t;
  const T* weight;
  const T* bias;
  T* dst;
  int64_t stride_dst_b, stride_dst_c, stride_dst_t;
};

template <typename T>
__global__ void __launch_bounds__(256) causal_conv1d_depthwise_kernel(DepthwiseArgs<T> a) {
  using Acc = typename AccOf<T>::type;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.s.length) return;
  for (int64_t row = blockIdx.y; row < a.s.batch * a.s.channels; row += gridDim.y) {
    const int64_t b = row / a.s.channels;
    const int64_t c = row - b * a.s.channels;
    const T* src = a.src + b * a.stride_src_b + c * a.stride_src_c;
    const T* w = a.weight + c * a.s.taps;
    Acc sum = a.bias ? to_acc(a.bias[c]) : Acc(0);
    for (int64_t k = 0; k < a.s.taps; ++k) {
      const int64_t tt = t + a.dir * (a.s.taps - 1 - k) * a.s.dilation;
      if (tt >= 0 && tt < a.s.length) {
        sum += to_acc(w[k]) * to_acc(src[tt * a.stride_src_t]);
      } else if (a.dir < 0) {
        sum += to_acc(w[k]) * Acc(0);
      }
    }
    a.dst[b * a.stride_dst_b + c * a.stride_dst_c + t * a.stride_dst_t] = from_acc<T>(sum);
  }
}

template <typename T>
pyr_status launch_depthwise(const DepthwiseArgs<T>& a, cudaStream_t stream) {
  const int64_t t_blocks = pyr_cuda::ceil_div(a.s.length, 256);
  if (t_blocks > INT32_MAX) return PYR_ERROR_INVALID_SIZE;
  const dim3 grid(static_cast<unsigned>(t_blocks),
                  static_cast<unsigned>(pyr_cuda::min64(a.s.batch * a.s.channels, 65535)));
  causal_conv1d_depthwise_kernel<T><<<grid, 256, 0, stream>>>(a);
  return pyr_cuda::launch_status();
}

template <typename P>
bool is_depthwise(const P* p) {
  return p->in_channels == p->groups && p->out_channels == p->groups;
}

template <typename T>
struct FwdFn {
  static pyr_status run(const pyr_causal_conv1d_params* p) {
    const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    if (is_depthwise(p)) {
      const DepthwiseArgs<T> a{{p->batch, p->in_channels, p->length, p->kernel_size, p->dilation},
                               -1,
                               static_cast<const T*>(p->x),
                               p->stride_x_b,
                               p->stride_x_c,
                               p->stride_x_t,
                               static_cast<const T*>(p->weight),
                               static_cast<const T*>(p->bias),
                               static_cast<T*>(p->y),
                               p->stride_y_b,
                               p->stride_y_c,
                               p->stride_y_t};
      return launch_depthwise(a, stream);
    }
    ConvFwd<T> c;
    c.ci = p->in_channels / p->groups;
    c.co = p->out_channels / p->groups;
    c.jobs = p->batch * p->groups;
    c.rows = c.co;
    c.cols = p->length;
    c.depth = c.ci * p->kernel_size;
    c.groups = p->groups;
    c.length = p->length;
    c.dilation = p->dilation;
    c.taps = static_cast<uint32_t>(p->kernel_size);
    c.x = static_cast<const T*>(p->x);
    c.stride_x_b = p->stride_x_b;
    c.stride_x_c = p->stride_x_c;
    c.stride_x_t = p->stride_x_t;
    c.weight = static_cast<const T*>(p->weight);
    c.bias = static_cast<const T*>(p->bias);
    c.y = static_cast<T*>(p->y);
    c.stride_y_b = p->stride_y_b;
    c.stride_y_c = p->stride_y_c;
    c.stride_y_t = p->stride_y_t;
    return pyr_cuda::launch_tile_gemm(c, stream);
  }
};

// The split reduction of the weight and bias gradients; weight_cols 0 without dweight.
template <typename T>
CausalBwdWeight<T, T> weight_problem(const pyr_causal_conv1d_bwd_params* p) {
  CausalBwdWeight<T, T> w;
  w.ci = p->in_channels / p->groups;
  w.co = p->out_channels / p->groups;
  w.weight_cols = p->dweight ? w.ci * p->kernel_size : 0;
  w.jobs = p->groups;
  w.rows = w.co;
  w.cols = w.weight_cols + (p->dbias ? 1 : 0);
  w.outer = p->batch;
  w.inner = p->length;
  w.length = p->length;
  w.dilation = p->dilation;
  w.taps = static_cast<uint32_t>(p->kernel_size);
  w.x = static_cast<const T*>(p->x);
  w.stride_x_b = p->stride_x_b;
  w.stride_x_c = p->stride_x_c;
  w.stride_x_t = p->stride_x_t;
  w.dy = static_cast<const T*>(p->dy);
  w.stride_dy_b = p->stride_dy_b;
  w.stride_dy_c = p->stride_dy_c;
  w.stride_dy_t = p->stride_dy_t;
  w.dweight = static_cast<T*>(p->dweight);
  w.dbias = static_cast<T*>(p->dbias);
  return w;
}

// Bytes of the weight-gradient workspace: the partial sums of every split, in the accumulation
// type; 0 when neither dweight nor dbias is asked for.
size_t bwd_workspace(const pyr_causal_conv1d_bwd_params* p) {
  if (!p->dweight && !p->dbias) return 0;
  const int64_t ci = p->in_channels / p->groups;
  SplitShape s;
  s.jobs = p->groups;
  s.rows = p->out_channels / p->groups;
  s.cols = (p->dweight ? ci * p->kernel_size : 0) + (p->dbias ? 1 : 0);
  s.outer = p->batch;
  s.inner = p->length;
  return static_cast<size_t>(s.partial_elements()) * pyr_cuda::acc_bytes(p->dtype);
}

template <typename T>
struct BwdFn {
  static pyr_status run(const pyr_causal_conv1d_bwd_params* p) {
    using Acc = typename AccOf<T>::type;
    const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    pyr_status status = PYR_SUCCESS;
    if (p->dx && is_depthwise(p)) {
      const DepthwiseArgs<T> a{{p->batch, p->in_channels, p->length, p->kernel_size, p->dilation},
                               +1,
                               static_cast<const T*>(p->dy),
                               p->stride_dy_b,
                               p->stride_dy_c,
                               p->stride_dy_t,
                               static_cast<const T*>(p->weight),
                               nullptr,
                               static_cast<T*>(p->dx),
                               p->stride_dx_b,
                               p->stride_dx_c,
                               p->stride_dx_t};
      status = launch_depthwise(a, stream);
    } else if (p->dx) {
      CausalBwdData<T, T> c;
      c.ci = p->in_channels / p->groups;
      c.co = p->out_channels / p->groups;
      c.jobs = p->batch * p->groups;
      c.rows = c.ci;
      c.cols = p->length;
      c.depth = c.co * p->kernel_size;
      c.groups = p->groups;
      c.length = p->length;
      c.dilation = p->dilation;
      c.taps = static_cast<uint32_t>(p->kernel_size);
      c.dy = static_cast<const T*>(p->dy);
      c.stride_dy_b = p->stride_dy_b;
      c.stride_dy_c = p->stride_dy_c;
      c.stride_dy_t = p->stride_dy_t;
      c.weight = static_cast<const T*>(p->weight);
      c.add = nullptr;
      c.dx = static_cast<T*>(p->dx);
      c.stride_dx_b = p->stride_dx_b;
      c.stride_dx_c = p->stride_dx_c;
      c.stride_dx_t = p->stride_dx_t;
      status = pyr_cuda::launch_tile_gemm(c, stream);
    }
    if (status != PYR_SUCCESS || (!p->dweight && !p->dbias)) return status;
    return pyr_cuda::launch_split_gemm(weight_problem<T>(p), static_cast<Acc*>(p->workspace),
                                       stream);
  }
};

bool dtype_ok(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 || dtype == PYR_FLOAT16 ||
         dtype == PYR_BFLOAT16;
}

// The checks of cpu/causal_conv1d.cpp, and those of the kernels here: the (channel, tap) rows
// of a reduction are decoded in 32 bits, and time tiles must fit the grid.
template <typename P>
pyr_status check_shape(const P* p) {
  if (!dtype_ok(p->dtype)) return PYR_ERROR_UNSUPPORTED_DTYPE;
  const int64_t sizes[] = {p->batch, p->in_channels, p->out_channels, p->length, p->kernel_size};
  for (int64_t size : sizes)
    if (size < 1 || size > pyr_cuda::kMaxElements) return PYR_ERROR_INVALID_SIZE;
  if (p->dilation < 1 || p->groups < 1) return PYR_ERROR_INVALID_ARGUMENT;
  if (p->in_channels % p->groups || p->out_channels % p->groups) return PYR_ERROR_INVALID_ARGUMENT;
  const int64_t ci = p->in_channels / p->groups;
  const int64_t co = p->out_channels / p->groups;
  if (!pyr_cuda::product_fits(p->kernel_size - 1, p->dilation) ||
      !pyr_cuda::product_fits(p->out_channels, ci * p->kernel_size) ||
      !pyr_cuda::product_fits(p->batch, p->out_channels) ||
      !pyr_cuda::product_fits(p->batch, p->in_channels) || ci * p->kernel_size + 1 > INT32_MAX ||
      co * p->kernel_size > INT32_MAX || p->length > int64_t{INT32_MAX} * 64)
    return PYR_ERROR_INVALID_SIZE;
  return PYR_SUCCESS;
}

pyr_status check_fwd(const pyr_causal_conv1d_params* p) {
  if (!p || !p->x || !p->weight || !p->y) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  using pyr_cuda::strides_ok;
  if (!strides_ok({{p->batch, p->stride_x_b},
                   {p->in_channels, p->stride_x_c},
                   {p->length, p->stride_x_t}}) ||
      !strides_ok(
          {{p->batch, p->stride_y_b}, {p->out_channels, p->stride_y_c}, {p->length, p->stride_y_t}},
          true))
    return PYR_ERROR_INVALID_STRIDE;
  if (p->y == p->x) return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_causal_conv1d_bwd_params* p) {
  if (!p || !p->weight || !p->dy || (p->dweight && !p->x)) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  using pyr_cuda::strides_ok;
  if ((p->x && !strides_ok({{p->batch, p->stride_x_b},
                            {p->in_channels, p->stride_x_c},
                            {p->length, p->stride_x_t}})) ||
      !strides_ok({{p->batch, p->stride_dy_b},
                   {p->out_channels, p->stride_dy_c},
                   {p->length, p->stride_dy_t}}) ||
      (p->dx && !strides_ok({{p->batch, p->stride_dx_b},
                             {p->in_channels, p->stride_dx_c},
                             {p->length, p->stride_dx_t}},
                            true)))
    return PYR_ERROR_INVALID_STRIDE;
  const size_t need = bwd_workspace(p);
  if (need > 0) {
    if (!p->workspace) return PYR_ERROR_NULL_POINTER;
    if (p->workspace_bytes < need) return PYR_ERROR_INVALID_SIZE;
    if (reinterpret_cast<uintptr_t>(p->workspace) % pyr_cuda::acc_bytes(p->dtype))
      return PYR_ERROR_INVALID_ARGUMENT;
  }
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_causal_conv1d_fwd_cuda(const pyr_causal_conv1d_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return pyr_cuda::dispatch_dtype<FwdFn>(p);
}

extern "C" size_t pyr_causal_conv1d_bwd_cuda_workspace_bytes(
    const pyr_causal_conv1d_bwd_params* p) {
  if (!p || check_shape(p) != PYR_SUCCESS) return 0;
  return bwd_workspace(p);
}

extern "C" pyr_status pyr_causal_conv1d_bwd_cuda(const pyr_causal_conv1d_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  if (!p->dx && !p->dweight && !p->dbias) return PYR_SUCCESS;
  return pyr_cuda::dispatch_dtype<BwdFn>(p);
}
