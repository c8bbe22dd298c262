// Masked 2-D convolution (PixelCNN) on CUDA GPUs: forward and backward. Semantics are those of
// cpu/masked_conv2d.cpp (see pyreversible/kernels.h).
//
// The kept taps of a mask are the first `kept` of the K * K in raster order (c K + c for type A,
// one more for B), so tap j < kept sits at (j / K, j % K) and the masked ones are never visited.
// The forward is an implicit GEMM per batch row: y (O x H W) = W (O x I kept) times the tap
// matrix (I kept x H W) whose row i kept + j is input channel i shifted by tap j, read from x in
// place with zeros outside the image (conv_common.cuh). A block computes 64 output channels by
// 64 pixels in raster order, through shared-memory chunks of 16 (channel, tap) rows. The input
// gradient is the same with the roles turned (dy's taps mirrored), and the weight and bias
// gradients one split reduction over (batch row, image row, column) of dy times x's taps, with a
// column of ones for the bias; the masked entries of dW are set to zero beforehand.
#include <cuda_runtime.h>
#include <stdint.h>

#include "conv_common.cuh"
#include "pyreversible/kernels.h"

namespace {

using pyr_cuda::AccOf;
using pyr_cuda::from_acc;
using pyr_cuda::SplitShape;
using pyr_cuda::to_acc;

// The shape shared by the three problems. Pixels and (channel, tap) indices are decoded in 32
// bits: the checks bound H W, I kept + 1 and O kept below 2^31.
struct Geometry {
  int64_t height, width;
  uint32_t kernel, kept, centre, width32;

  // The (channel, tap row, tap column) of reduction index r = channel * kept + j.
  __device__ __forceinline__ void tap(int64_t r, uint32_t* ch, int64_t* ky, int64_t* kx) const {
    const uint32_t c = static_cast<uint32_t>(r) / kept;
    const uint32_t j = static_cast<uint32_t>(r) - c * kept;
    const uint32_t row = j / kernel;
    *ch = c;
    *ky = row;
    *kx = j - row * kernel;
  }

  // The (row, column) of a pixel index h W + w.
  __device__ __forceinline__ void pixel(int64_t n, int64_t* h, int64_t* w) const {
    const uint32_t row = static_cast<uint32_t>(n) / width32;
    *h = row;
    *w = static_cast<uint32_t>(n) - row * width32;
  }
};

// src[ch, h, w] of an image through its strides, 0 outside it.
template <typename T>
__device__ __forceinline__ typename AccOf<T>::type image_at(const T* src, int64_t stride_c,
                                                            int64_t stride_h, int64_t stride_w,
                                                            const Geometry& g, uint32_t ch,
                                                            int64_t h, int64_t w) {
  using Acc = typename AccOf<T>::type;
  if (h < 0 || h >= g.height || w < 0 || w >= g.width) return Acc(0);
  return to_acc(src[static_cast<int64_t>(ch) * stride_c + h * stride_h + w * stride_w]);
}

struct WeightStrides {
  int64_t o, i, h, w;
};

// y = W taps(x) + bias per batch row: rows are output channels, columns pixels, the reduction
// runs over (input channel, kept tap) rows.
template <typename T>
struct MaskedFwd {
  using Acc = typename AccOf<T>::type;
  // a kept row of W is contiguous along the taps; x along the pixels of a row
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch, O, H W, I kept
  Geometry g;
  const T* x;
  int64_t stride_x_b, stride_x_c, stride_x_h, stride_x_w;
  const T* weight;
  WeightStrides sw;
  const T* bias;
  T* y;
  int64_t stride_y_b, stride_y_c, stride_y_h, stride_y_w;

  struct Loader {
    const T* w;  // W[m0]
    WeightStrides sw;
    int64_t w_rows;
    const T* x;  // x[b]
    int64_t sc, sh, sw_x, n0, pixels;
    Geometry g;
    __device__ Acc a(int m, int64_t r) const {
      if (m >= w_rows) return Acc(0);
      uint32_t i;
      int64_t ky, kx;
      g.tap(r, &i, &ky, &kx);
      return to_acc(w[m * sw.o + static_cast<int64_t>(i) * sw.i + ky * sw.h + kx * sw.w]);
    }
    __device__ Acc b(int64_t r, int n) const {
      if (n0 + n >= pixels) return Acc(0);
      uint32_t i;
      int64_t ky, kx, h, w;
      g.tap(r, &i, &ky, &kx);
      g.pixel(n0 + n, &h, &w);
      return image_at(x, sc, sh, sw_x, g, i, h + ky - g.centre, w + kx - g.centre);
    }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    return Loader{weight + m0 * sw.o,
                  sw,
                  rows - m0,
                  x + job * stride_x_b,
                  stride_x_c,
                  stride_x_h,
                  stride_x_w,
                  n0,
                  cols,
                  g};
  }

  __device__ void store(int64_t job, int64_t m, int64_t n, Acc v) const {
    int64_t h, w;
    g.pixel(n, &h, &w);
    if (bias) v += to_acc(bias[m]);
    y[job * stride_y_b + m * stride_y_c + h * stride_y_h + w * stride_y_w] = from_acc<T>(v);
  }
};

// dx = W^T taps(dy) per batch row, the taps mirrored: dx[i, h, w] = sum_{o, j}
// W[o, i, ky, kx] dy[o, h - ky + c, w - kx + c]. Rows are input channels, the reduction runs
// over (output channel, kept tap) rows.
template <typename T>
struct MaskedBwdData {
  using Acc = typename AccOf<T>::type;
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch, I, H W, O kept
  Geometry g;
  const T* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_h, stride_dy_w;
  const T* weight;
  WeightStrides sw;
  T* dx;
  int64_t stride_dx_b, stride_dx_c, stride_dx_h, stride_dx_w;

  struct Loader {
    const T* w;  // W[:, m0]
    WeightStrides sw;
    int64_t w_rows;
    const T* dy;  // dy[b]
    int64_t sc, sh, sw_dy, n0, pixels;
    Geometry g;
    __device__ Acc a(int m, int64_t r) const {
      if (m >= w_rows) return Acc(0);
      uint32_t o;
      int64_t ky, kx;
      g.tap(r, &o, &ky, &kx);
      return to_acc(w[static_cast<int64_t>(o) * sw.o + m * sw.i + ky * sw.h + kx * sw.w]);
    }
    __device__ Acc b(int64_t r, int n) const {
      if (n0 + n >= pixels) return Acc(0);
      uint32_t o;
      int64_t ky, kx, h, w;
      g.tap(r, &o, &ky, &kx);
      g.pixel(n0 + n, &h, &w);
      return image_at(dy, sc, sh, sw_dy, g, o, h - ky + g.centre, w - kx + g.centre);
    }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    return Loader{weight + m0 * sw.i,
                  sw,
                  rows - m0,
                  dy + job * stride_dy_b,
                  stride_dy_c,
                  stride_dy_h,
                  stride_dy_w,
                  n0,
                  cols,
                  g};
  }

  __device__ void store(int64_t job, int64_t m, int64_t n, Acc v) const {
    int64_t h, w;
    g.pixel(n, &h, &w);
    dx[job * stride_dx_b + m * stride_dx_c + h * stride_dx_h + w * stride_dx_w] = from_acc<T>(v);
  }
};

// [dW | db] = sum over (batch row, image row, column) of dy (O) times [taps(x) | 1]: column
// c < weight_cols is the (input channel, kept tap) c of dW, column weight_cols db (when asked
// for). The reduction's outer rows are (batch row, image row) pairs, its inner steps columns.
template <typename T>
struct MaskedBwdWeight : SplitShape {
  using Acc = typename AccOf<T>::type;
  // both operands are read along the columns of an image row, the reduction
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = true;
  // SplitShape: jobs = 1, rows = O, cols = weight_cols (+ 1), outer = batch H, inner = W
  int64_t weight_cols, in_channels;
  Geometry g;
  const T* x;
  int64_t stride_x_b, stride_x_c, stride_x_h, stride_x_w;
  const T* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_h, stride_dy_w;
  T* dweight;  // (O, I, K, K) contiguous
  T* dbias;

  struct Loader {
    const T* dy;  // dy[b, m0, h]
    int64_t dy_sc, dy_sw, dy_rows;
    const T* x;  // x[b]
    int64_t x_sc, x_sh, x_sw, h, c0, weight_cols, cols;
    Geometry g;
    __device__ Acc a(int m, int64_t w) const {
      return m < dy_rows ? to_acc(dy[m * dy_sc + w * dy_sw]) : Acc(0);
    }
    __device__ Acc b(int64_t w, int n) const {
      const int64_t c = c0 + n;
      if (c >= weight_cols) return c < cols ? Acc(1) : Acc(0);
      uint32_t i;
      int64_t ky, kx;
      g.tap(c, &i, &ky, &kx);
      return image_at(x, x_sc, x_sh, x_sw, g, i, h + ky - g.centre, w + kx - g.centre);
    }
  };

  __device__ Loader loader(int64_t, int64_t m0, int64_t c0, int64_t row) const {
    const int64_t b = row / g.height;
    const int64_t h = row - b * g.height;
    return Loader{dy + b * stride_dy_b + m0 * stride_dy_c + h * stride_dy_h,
                  stride_dy_c,
                  stride_dy_w,
                  rows - m0,
                  x + b * stride_x_b,
                  stride_x_c,
                  stride_x_h,
                  stride_x_w,
                  h,
                  c0,
                  weight_cols,
                  cols,
                  g};
  }

  __device__ void store(int64_t, int64_t m, int64_t c, Acc v) const {
    if (c < weight_cols) {
      uint32_t i;
      int64_t ky, kx;
      g.tap(c, &i, &ky, &kx);
      const int64_t k = g.kernel;
      dweight[((m * in_channels + i) * k + ky) * k + kx] = from_acc<T>(v);
    } else {
      dbias[m] = from_acc<T>(v);
    }
  }
};

template <typename P>
Geometry geometry_of(const P* p) {
  const int64_t k = p->kernel_size;
  const int64_t c = k / 2;
  const int64_t kept = c * k + c + (p->mask_type == PYR_MASK_B ? 1 : 0);
  return Geometry{p->height,
                  p->width,
                  static_cast<uint32_t>(k),
                  static_cast<uint32_t>(kept),
                  static_cast<uint32_t>(c),
                  static_cast<uint32_t>(p->width)};
}

template <typename T>
struct FwdFn {
  static pyr_status run(const pyr_masked_conv2d_params* p) {
    MaskedFwd<T> f;
    f.g = geometry_of(p);
    f.jobs = p->batch;
    f.rows = p->out_channels;
    f.cols = p->height * p->width;
    f.depth = p->in_channels * f.g.kept;
    f.x = static_cast<const T*>(p->x);
    f.stride_x_b = p->stride_x_b;
    f.stride_x_c = p->stride_x_c;
    f.stride_x_h = p->stride_x_h;
    f.stride_x_w = p->stride_x_w;
    f.weight = static_cast<const T*>(p->weight);
    f.sw = {p->stride_weight_o, p->stride_weight_i, p->stride_weight_h, p->stride_weight_w};
    f.bias = static_cast<const T*>(p->bias);
    f.y = static_cast<T*>(p->y);
    f.stride_y_b = p->stride_y_b;
    f.stride_y_c = p->stride_y_c;
    f.stride_y_h = p->stride_y_h;
    f.stride_y_w = p->stride_y_w;
    return pyr_cuda::launch_tile_gemm(f, static_cast<cudaStream_t>(p->stream));
  }
};

// The split reduction's shape; weight_cols 0 without dweight, no bias column without dbias.
SplitShape weight_shape(const pyr_masked_conv2d_bwd_params* p, const Geometry& g) {
  SplitShape s;
  s.jobs = 1;
  s.rows = p->out_channels;
  s.cols = (p->dweight ? p->in_channels * g.kept : 0) + (p->dbias ? 1 : 0);
  s.outer = p->batch * p->height;
  s.inner = p->width;
  return s;
}

size_t bwd_workspace(const pyr_masked_conv2d_bwd_params* p) {
  const SplitShape s = weight_shape(p, geometry_of(p));
  if (s.cols < 1) return 0;
  return static_cast<size_t>(s.partial_elements()) * pyr_cuda::acc_bytes(p->dtype);
}

template <typename T>
struct BwdFn {
  static pyr_status run(const pyr_masked_conv2d_bwd_params* p) {
    using Acc = typename AccOf<T>::type;
    const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    const Geometry g = geometry_of(p);
    if (p->dx) {
      MaskedBwdData<T> d;
      d.g = g;
      d.jobs = p->batch;
      d.rows = p->in_channels;
      d.cols = p->height * p->width;
      d.depth = p->out_channels * g.kept;
      d.dy = static_cast<const T*>(p->dy);
      d.stride_dy_b = p->stride_dy_b;
      d.stride_dy_c = p->stride_dy_c;
      d.stride_dy_h = p->stride_dy_h;
      d.stride_dy_w = p->stride_dy_w;
      d.weight = static_cast<const T*>(p->weight);
      d.sw = {p->stride_weight_o, p->stride_weight_i, p->stride_weight_h, p->stride_weight_w};
      d.dx = static_cast<T*>(p->dx);
      d.stride_dx_b = p->stride_dx_b;
      d.stride_dx_c = p->stride_dx_c;
      d.stride_dx_h = p->stride_dx_h;
      d.stride_dx_w = p->stride_dx_w;
      const pyr_status status = pyr_cuda::launch_tile_gemm(d, stream);
      if (status != PYR_SUCCESS) return status;
    }
    if (p->dweight) {
      // the masked entries stay zero; the reduction writes the kept ones
      const size_t bytes =
          static_cast<size_t>(p->out_channels * p->in_channels * p->kernel_size * p->kernel_size) *
          sizeof(T);
      if (cudaMemsetAsync(p->dweight, 0, bytes, stream) != cudaSuccess) return PYR_ERROR_CUDA;
    }
    MaskedBwdWeight<T> w;
    static_cast<SplitShape&>(w) = weight_shape(p, g);
    if (w.cols < 1) return PYR_SUCCESS;
    w.weight_cols = p->dweight ? p->in_channels * g.kept : 0;
    w.in_channels = p->in_channels;
    w.g = g;
    w.x = static_cast<const T*>(p->x);
    w.stride_x_b = p->stride_x_b;
    w.stride_x_c = p->stride_x_c;
    w.stride_x_h = p->stride_x_h;
    w.stride_x_w = p->stride_x_w;
    w.dy = static_cast<const T*>(p->dy);
    w.stride_dy_b = p->stride_dy_b;
    w.stride_dy_c = p->stride_dy_c;
    w.stride_dy_h = p->stride_dy_h;
    w.stride_dy_w = p->stride_dy_w;
    w.dweight = static_cast<T*>(p->dweight);
    w.dbias = static_cast<T*>(p->dbias);
    return pyr_cuda::launch_split_gemm(w, static_cast<Acc*>(p->workspace), stream);
  }
};

bool dtype_ok(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 || dtype == PYR_FLOAT16 ||
         dtype == PYR_BFLOAT16;
}

// The checks of cpu/masked_conv2d.cpp, and those of the kernels here: pixels and (channel,
// tap) indices are decoded in 32 bits, and pixel tiles must fit the grid.
template <typename Params>
pyr_status check_shape(const Params* p) {
  if (!dtype_ok(p->dtype)) return PYR_ERROR_UNSUPPORTED_DTYPE;
  if (p->mask_type != PYR_MASK_A && p->mask_type != PYR_MASK_B) return PYR_ERROR_INVALID_ARGUMENT;
  if (p->batch < 1 || p->in_channels < 1 || p->out_channels < 1 || p->height < 1 || p->width < 1 ||
      p->kernel_size < 1 || p->kernel_size % 2 == 0)
    return PYR_ERROR_INVALID_SIZE;
  using pyr_cuda::kMaxElements;
  using pyr_cuda::product_fits;
  const int64_t sizes[] = {p->batch, p->in_channels, p->out_channels, p->height, p->width};
  for (int64_t size : sizes)
    if (size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  // k < 2^16, so k * k fits 32 bits
  const int64_t k = p->kernel_size;
  if (k > 65535) return PYR_ERROR_INVALID_SIZE;
  const int64_t kk = k * k;
  if (!product_fits(p->height, p->width) || p->height * p->width > INT32_MAX)
    return PYR_ERROR_INVALID_SIZE;
  const int64_t pixels = p->height * p->width;
  const int64_t channels = p->in_channels > p->out_channels ? p->in_channels : p->out_channels;
  if (!product_fits(channels, pixels) || !product_fits(p->batch, channels * pixels) ||
      !product_fits(p->batch, p->height))
    return PYR_ERROR_INVALID_SIZE;
  // the weight, and the (channel, tap) indices of the reductions (with dW's bias column)
  if (!product_fits(p->in_channels, p->out_channels) ||
      !product_fits(p->in_channels * p->out_channels, kk) ||
      !product_fits(p->in_channels + 1, kk) || (p->in_channels + 1) * kk > INT32_MAX ||
      !product_fits(p->out_channels, kk) || p->out_channels * kk > INT32_MAX)
    return PYR_ERROR_INVALID_SIZE;
  using pyr_cuda::strides_ok;
  if (!strides_ok({{p->batch, p->stride_x_b},
                   {p->in_channels, p->stride_x_c},
                   {p->height, p->stride_x_h},
                   {p->width, p->stride_x_w}}) ||
      !strides_ok({{p->out_channels, p->stride_weight_o},
                   {p->in_channels, p->stride_weight_i},
                   {k, p->stride_weight_h},
                   {k, p->stride_weight_w}}))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_fwd(const pyr_masked_conv2d_params* p) {
  if (!p || !p->x || !p->weight || !p->y) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  if (!pyr_cuda::strides_ok({{p->batch, p->stride_y_b},
                             {p->out_channels, p->stride_y_c},
                             {p->height, p->stride_y_h},
                             {p->width, p->stride_y_w}},
                            true))
    return PYR_ERROR_INVALID_STRIDE;
  if (p->y == p->x) return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_masked_conv2d_bwd_params* p) {
  if (!p || !p->x || !p->weight || !p->dy) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  using pyr_cuda::strides_ok;
  if (!strides_ok({{p->batch, p->stride_dy_b},
                   {p->out_channels, p->stride_dy_c},
                   {p->height, p->stride_dy_h},
                   {p->width, p->stride_dy_w}}) ||
      (p->dx && !strides_ok({{p->batch, p->stride_dx_b},
                             {p->in_channels, p->stride_dx_c},
                             {p->height, p->stride_dx_h},
                             {p->width, p->stride_dx_w}},
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

extern "C" pyr_status pyr_masked_conv2d_fwd_cuda(const pyr_masked_conv2d_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return pyr_cuda::dispatch_dtype<FwdFn>(p);
}

extern "C" size_t pyr_masked_conv2d_bwd_cuda_workspace_bytes(
    const pyr_masked_conv2d_bwd_params* p) {
  if (!p || check_shape(p) != PYR_SUCCESS) return 0;
  return bwd_workspace(p);
}

extern "C" pyr_status pyr_masked_conv2d_bwd_cuda(const pyr_masked_conv2d_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  return pyr_cuda::dispatch_dtype<BwdFn>(p);
}
