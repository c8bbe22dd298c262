// Additive coupling on CUDA GPUs: the shift-only coupling, and the coupling layer fused with its
// MLP coupling network, forward and backward. Semantics are those of cpu/additive_coupling.cpp.
#include <cuda_runtime.h>
#include <stdint.h>

#include "../layout.h"
#include "coupling_common.cuh"
#include "pyreversible/kernels.h"

namespace {

using pyr_cuda::AccOf;
using pyr_cuda::feature_of_position;
using pyr_cuda::from_acc;
using pyr_cuda::min64;
using pyr_cuda::partition_position;
using pyr_cuda::to_acc;

constexpr int kFwdThreads = 256;

// Columns of one output tile and the reduction chunk of the tiled matmuls.
constexpr int kTileN = 64;
constexpr int kTileK = 32;

// Rows (batch) per chunk and output tile side of the weight-gradient kernel.
constexpr int kWeightTileB = 32;
constexpr int kWeightTile = 64;
constexpr int kWeightThreads = 256;

template <typename T>
struct FwdArgs {
  int64_t batch, dim;
  pyr_partition part;
  int sign;
  const T* x;
  int64_t stride_x_b, stride_x_d;
  const T* shift;
  int64_t stride_shift_b, stride_shift_d;
  T* y;
  int64_t stride_y_b, stride_y_d;
  // log2 of the positions a block covers, 1 .. 8: the least power of two >= dim, up to 256.
  int pos_shift;
};

// One thread per (row, position): a block covers 2^pos_shift positions of 256 >> pos_shift rows,
// so that rows shorter than a block still fill it. A thread decodes its position's part and
// feature index once, then walks down the rows.
template <typename T>
__global__ void __launch_bounds__(kFwdThreads) additive_coupling_fwd_kernel(FwdArgs<T> a) {
  using Acc = typename AccOf<T>::type;
  const int lanes = 1 << a.pos_shift;
  const int64_t k = (static_cast<int64_t>(blockIdx.x) << a.pos_shift) + (threadIdx.x & (lanes - 1));
  if (k >= a.dim) return;
  int part;
  int64_t j;
  feature_of_position(a.part, k, &part, &j);
  const Acc sign = static_cast<Acc>(a.sign);
  const int64_t rows_per_block = kFwdThreads >> a.pos_shift;
  const int64_t step = rows_per_block * gridDim.y;
  for (int64_t b = blockIdx.y * rows_per_block + (threadIdx.x >> a.pos_shift); b < a.batch;
       b += step) {
    const T xv = a.x[b * a.stride_x_b + k * a.stride_x_d];
    T out = xv;
    if (part) {
      const Acc s = to_acc(a.shift[b * a.stride_shift_b + j * a.stride_shift_d]);
      out = from_acc<T>(to_acc(xv) + sign * s);
    }
    a.y[b * a.stride_y_b + k * a.stride_y_d] = out;
  }
}

// Shared memory of a (ROWS x kTileN) output tile: a chunk of the input rows and the matching
// chunk of the weight, both padded by one column so that the column-wise stores and the
// row-wise reads of a warp fall in distinct banks.
template <typename Acc, int ROWS>
struct RowTile {
  Acc a[ROWS][kTileK + 1];
  Acc w[kTileK][kTileN + 1];
};

// acc[r][c] = sum_k A(ty + r * ROWS / 2, k) * W(k, tx + 16 * c) over k < k_size, for a block
// of ROWS * 8 threads (tx = tid % 16, ty = tid / 16). load_a(r, k) reads row r of the tile,
// load_w(k, n) column n of the tile; neither is called outside rows x cols x k_size.
// K_CONTIGUOUS says that W(k, n) and W(k + 1, n) are adjacent in memory, so the loads walk k
// first to stay coalesced. Every thread of the block must call this (it synchronises).
template <typename Acc, int ROWS, bool K_CONTIGUOUS, typename LoadA, typename LoadW>
__device__ __forceinline__ void row_tile_matmul(RowTile<Acc, ROWS>& s, Acc (&acc)[2][4], int rows,
                                                int cols, int64_t k_size, LoadA load_a,
                                                LoadW load_w) {
  constexpr int kThreads = ROWS * 8;
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[r][c] = Acc(0);

  for (int64_t k0 = 0; k0 < k_size; k0 += kTileK) {
    const int k_valid = static_cast<int>(min64(kTileK, k_size - k0));
    for (int e = tid; e < ROWS * kTileK; e += kThreads) {
      const int r = e / kTileK;
      const int kk = e % kTileK;
      s.a[r][kk] = (r < rows && kk < k_valid) ? load_a(r, k0 + kk) : Acc(0);
    }
    for (int e = tid; e < kTileK * kTileN; e += kThreads) {
      const int kk = K_CONTIGUOUS ? e % kTileK : e / kTileN;
      const int n = K_CONTIGUOUS ? e / kTileK : e % kTileN;
      s.w[kk][n] = (n < cols && kk < k_valid) ? load_w(k0 + kk, n) : Acc(0);
    }
    __syncthreads();

#pragma unroll 8
    for (int kk = 0; kk < kTileK; ++kk) {
      const Acc a0 = s.a[ty][kk];
      const Acc a1 = s.a[ty + ROWS / 2][kk];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const Acc w = s.w[kk][tx + 16 * c];
        acc[0][c] += a0 * w;
        acc[1][c] += a1 * w;
      }
    }
    __syncthreads();
  }
}

template <typename T>
struct MlpFwdArgs {
  int64_t batch;
  pyr_partition part;
  int sign;
  int num_layers;
  int64_t widths[PYR_MAX_LAYERS + 1];
  const T* weight[PYR_MAX_LAYERS];
  const T* bias[PYR_MAX_LAYERS];
  // act[l] receives h_{l+1} as (batch, widths[l + 1]): the caller's hidden[l], or a scratch
  // buffer of the workspace when the caller keeps no hidden activations.
  T* act[PYR_MAX_LAYERS];
  const T* x;
  int64_t stride_x_b, stride_x_d;
  T* y;
  int64_t stride_y_b, stride_y_d;
};

// The whole coupling layer for ROWS rows per block. A row's MLP needs no other row, so each
// block runs every layer for its rows; layer l + 1 reads what layer l of the same block wrote
// to global memory, which __syncthreads() makes visible within the block.
// The explicit minimum of one block per multiprocessor lifts the 64-register cap ptxas chose
// by itself for this kernel on sm_80, under which it spilled.
template <typename T, int ROWS>
__global__ void __launch_bounds__(ROWS * 8, 1) additive_coupling_mlp_fwd_kernel(MlpFwdArgs<T> a) {
  using Acc = typename AccOf<T>::type;
  constexpr int kThreads = ROWS * 8;
  __shared__ RowTile<Acc, ROWS> s;
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * ROWS;
  const int rows = static_cast<int>(min64(ROWS, a.batch - row0));
  const pyr_partition part = a.part;
  const int64_t dim_a = part.dim_a;
  const Acc sign = static_cast<Acc>(a.sign);
  const T* x = a.x;
  const int64_t stride_x_b = a.stride_x_b;
  const int64_t stride_x_d = a.stride_x_d;

  for (int64_t e = tid; e < rows * dim_a; e += kThreads) {
    const int64_t row = row0 + e / dim_a;
    const int64_t k = partition_position(part, e % dim_a, 0);
    a.y[row * a.stride_y_b + k * a.stride_y_d] = x[row * stride_x_b + k * stride_x_d];
  }

  for (int l = 0; l < a.num_layers; ++l) {
    const int64_t n_in = a.widths[l];
    const int64_t n_out = a.widths[l + 1];
    const bool last = l + 1 == a.num_layers;
    const T* w = a.weight[l];
    const T* bias = a.bias[l];
    const T* in = l == 0 ? nullptr : a.act[l - 1];
    T* out = last ? nullptr : a.act[l];

    for (int64_t n0 = 0; n0 < n_out; n0 += kTileN) {
      const int cols = static_cast<int>(min64(kTileN, n_out - n0));
      auto load_a = [=](int r, int64_t k) -> Acc {
        const int64_t row = row0 + r;
        if (l == 0) {
          const int64_t pos = partition_position(part, k, 0);
          return to_acc(x[row * stride_x_b + pos * stride_x_d]);
        }
        return to_acc(in[row * n_in + k]);
      };
      auto load_w = [=](int64_t k, int n) -> Acc { return to_acc(w[(n0 + n) * n_in + k]); };
      Acc acc[2][4];
      row_tile_matmul<Acc, ROWS, true>(s, acc, rows, cols, n_in, load_a, load_w);

#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int tr = ty + r * (ROWS / 2);
        if (tr >= rows) continue;
        const int64_t row = row0 + tr;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int n = tx + 16 * c;
          if (n >= cols) continue;
          const int64_t col = n0 + n;
          const Acc v = acc[r][c] + to_acc(bias[col]);
          if (!last) {
            // v < 0 rather than fmax, so that a NaN stays NaN as it does in torch.relu.
            out[row * n_out + col] = from_acc<T>(v < Acc(0) ? Acc(0) : v);
          } else {
            // m is rounded to T before the add, as the unfused layer rounds its output.
            const Acc m = to_acc(from_acc<T>(v));
            const int64_t k = partition_position(part, col, 1);
            const Acc xb = to_acc(x[row * stride_x_b + k * stride_x_d]);
            a.y[row * a.stride_y_b + k * a.stride_y_d] = from_acc<T>(xb + sign * m);
          }
        }
      }
    }
    __syncthreads();
  }
}

template <typename T>
struct MlpBwdArgs {
  int64_t batch;
  pyr_partition part;
  int sign;
  int num_layers;
  int64_t widths[PYR_MAX_LAYERS + 1];
  const T* weight[PYR_MAX_LAYERS];
  const T* hidden[PYR_MAX_LAYERS];
  // g[l] for 1 <= l <= num_layers: dL/d(pre-activation of layer l), (batch, widths[l]), in the
  // workspace; g[0] is unused (g_0 goes straight into dx).
  typename AccOf<T>::type* g[PYR_MAX_LAYERS + 1];
  const T* cond;
  int64_t stride_cond_b, stride_cond_d;
  const T* dy;
  int64_t stride_dy_b, stride_dy_d;
  T* dx;
  int64_t stride_dx_b, stride_dx_d;
  T* dweight[PYR_MAX_LAYERS];
  T* dbias[PYR_MAX_LAYERS];
};

// The row-local half of the backward: g_L = sign * dy_b, then g_{l-1} = (g_l W_l) masked by
// h_{l-1} > 0, layer by layer down to g_0, which is added to dy_a to give dx_a. dx may alias
// dy: every element of dx is written by the thread that last read it from dy.
template <typename T, int ROWS>
__global__ void __launch_bounds__(ROWS * 8) additive_coupling_mlp_bwd_kernel_rows(MlpBwdArgs<T> a) {
  using Acc = typename AccOf<T>::type;
  constexpr int kThreads = ROWS * 8;
  __shared__ RowTile<Acc, ROWS> s;
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * ROWS;
  const int rows = static_cast<int>(min64(ROWS, a.batch - row0));
  const int64_t dim_b = a.part.dim_b;
  const int L = a.num_layers;
  const Acc sign = static_cast<Acc>(a.sign);

  Acc* g_last = a.g[L];
  for (int64_t e = tid; e < rows * dim_b; e += kThreads) {
    const int64_t row = row0 + e / dim_b;
    const int64_t j = e % dim_b;
    const int64_t k = partition_position(a.part, j, 1);
    const T d = a.dy[row * a.stride_dy_b + k * a.stride_dy_d];
    g_last[row * dim_b + j] = sign * to_acc(d);
    a.dx[row * a.stride_dx_b + k * a.stride_dx_d] = d;
  }
  __syncthreads();

  for (int l = L; l >= 1; --l) {
    // t = g_l W_l: the reduction runs over widths[l], the output over widths[l - 1].
    const int64_t n_k = a.widths[l];
    const int64_t n_out = a.widths[l - 1];
    const T* w = a.weight[l - 1];
    const Acc* g_in = a.g[l];
    Acc* g_out = a.g[l - 1];
    const T* h = l >= 2 ? a.hidden[l - 2] : nullptr;

    for (int64_t n0 = 0; n0 < n_out; n0 += kTileN) {
      const int cols = static_cast<int>(min64(kTileN, n_out - n0));
      auto load_a = [=](int r, int64_t k) -> Acc { return g_in[(row0 + r) * n_k + k]; };
      auto load_w = [=](int64_t k, int n) -> Acc { return to_acc(w[k * n_out + n0 + n]); };
      Acc acc[2][4];
      row_tile_matmul<Acc, ROWS, false>(s, acc, rows, cols, n_k, load_a, load_w);

#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int tr = ty + r * (ROWS / 2);
        if (tr >= rows) continue;
        const int64_t row = row0 + tr;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int n = tx + 16 * c;
          if (n >= cols) continue;
          const int64_t col = n0 + n;
          if (l >= 2) {
            const bool active = to_acc(h[row * n_out + col]) > Acc(0);
            g_out[row * n_out + col] = active ? acc[r][c] : Acc(0);
          } else {
            // g_0 is rounded to T before the add, as autograd sums two gradients of dtype T.
            const Acc g0 = to_acc(from_acc<T>(acc[r][c]));
            const int64_t k = partition_position(a.part, col, 0);
            const Acc d = to_acc(a.dy[row * a.stride_dy_b + k * a.stride_dy_d]);
            a.dx[row * a.stride_dx_b + k * a.stride_dx_d] = from_acc<T>(d + g0);
          }
        }
      }
    }
    __syncthreads();
  }
}

// dW_l = g_l^T h_{l-1} and db_l = sum over rows of g_l for layer l = blockIdx.z + 1, one
// (kWeightTile x kWeightTile) tile of (out, in) per block, looping over the batch. The bias
// gradient is column widths[l - 1] of the same product with a column of ones appended to h.
template <typename T>
__global__ void __launch_bounds__(kWeightThreads)
    additive_coupling_mlp_bwd_kernel_weights(MlpBwdArgs<T> a) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc gs[kWeightTileB][kWeightTile];
  __shared__ Acc hs[kWeightTileB][kWeightTile];
  const int layer = blockIdx.z;
  const int64_t n_in = a.widths[layer];
  const int64_t n_out = a.widths[layer + 1];
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kWeightTile;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kWeightTile;
  // The grid covers the widest layer; a whole block past this layer's (out, in + 1) leaves.
  if (i0 > n_in || o0 >= n_out) return;

  const int tid = threadIdx.x;
  const int ti = tid % 16;
  const int to = tid / 16;
  const Acc* g = a.g[layer + 1];
  const T* h = layer == 0 ? nullptr : a.hidden[layer - 1];
  Acc acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[r][c] = Acc(0);

  for (int64_t b0 = 0; b0 < a.batch; b0 += kWeightTileB) {
    for (int e = tid; e < kWeightTileB * kWeightTile; e += kWeightThreads) {
      const int bb = e / kWeightTile;
      const int n = e % kWeightTile;
      const int64_t b = b0 + bb;
      const int64_t o = o0 + n;
      const int64_t i = i0 + n;
      gs[bb][n] = (b < a.batch && o < n_out) ? g[b * n_out + o] : Acc(0);
      Acc hv = Acc(0);
      if (b < a.batch && i < n_in) {
        if (layer == 0) {
          const int64_t k = partition_position(a.part, i, 0);
          hv = to_acc(a.cond[b * a.stride_cond_b + k * a.stride_cond_d]);
        } else {
          hv = to_acc(h[b * n_in + i]);
        }
      } else if (b < a.batch && i == n_in) {
        hv = Acc(1);
      }
      hs[bb][n] = hv;
    }
    __syncthreads();

#pragma unroll 8
    for (int bb = 0; bb < kWeightTileB; ++bb) {
      Acc gv[4], hv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) gv[r] = gs[bb][to + 16 * r];
#pragma unroll
      for (int c = 0; c < 4; ++c) hv[c] = hs[bb][ti + 16 * c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += gv[r] * hv[c];
    }
    __syncthreads();
  }

  T* dw = a.dweight[layer];
  T* db = a.dbias[layer];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t o = o0 + to + 16 * r;
    if (o >= n_out) continue;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t i = i0 + ti + 16 * c;
      if (i < n_in) {
        dw[o * n_in + i] = from_acc<T>(acc[r][c]);
      } else if (i == n_in) {
        db[o] = from_acc<T>(acc[r][c]);
      }
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool dtype_ok(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 || dtype == PYR_FLOAT16 ||
         dtype == PYR_BFLOAT16;
}

size_t dtype_size(int32_t dtype) {
  if (dtype == PYR_FLOAT64) return 8;
  if (dtype == PYR_FLOAT32) return 4;
  return 2;
}

// Bytes of the accumulation type: float for float32 and the 16-bit types, double for float64.
size_t acc_size(int32_t dtype) { return dtype == PYR_FLOAT64 ? 8 : 4; }

// The partition must be a bijection of the features onto the dim positions: every kernel
// writes each output position exactly once and no thread may race another on it.
pyr_status check_partition(const pyr_partition& p, int64_t dim) {
  if (p.dim_a < 1 || p.dim_b < 1 || p.dim_a > dim - p.dim_b || p.dim_a + p.dim_b != dim)
    return PYR_ERROR_INVALID_SIZE;
  if (p.kind == PYR_PARTITION_SPLIT) {
    if (p.offset_a < 0 || p.offset_b < 0 || p.offset_a > dim - p.dim_a ||
        p.offset_b > dim - p.dim_b)
      return PYR_ERROR_INVALID_ARGUMENT;
    if (p.offset_a + p.dim_a > p.offset_b && p.offset_b + p.dim_b > p.offset_a)
      return PYR_ERROR_INVALID_ARGUMENT;
    return PYR_SUCCESS;
  }
  if (p.kind != PYR_PARTITION_INTERLEAVE) return PYR_ERROR_INVALID_ARGUMENT;
  if ((p.parity != 0 && p.parity != 1) || p.row_pairs < 1 || p.height < 1)
    return PYR_ERROR_INVALID_ARGUMENT;
  // Positions grow with the feature index, so the last feature of each part bounds them all.
  if (pyr_partition_position(&p, p.dim_a - 1, 0) >= dim ||
      pyr_partition_position(&p, p.dim_b - 1, 1) >= dim)
    return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

// The layout rules of pyr_layout::strides_ok (layout.h), shared with the CPU kernels: no
// negative stride, no reach past kMaxElements, and for an output no stride 0 over more than one
// element (two threads would write one place).
bool strides_ok(int64_t b, int64_t d, int64_t batch, int64_t dim) {
  return pyr_layout::strides_ok({{batch, b}, {dim, d}});
}

bool out_strides_ok(int64_t b, int64_t d, int64_t batch, int64_t dim) {
  return pyr_layout::strides_ok({{batch, b}, {dim, d}}, true);
}

pyr_status check_common(int32_t dtype, int32_t sign, int64_t batch, int64_t dim,
                        const pyr_partition& part) {
  if (!dtype_ok(dtype)) return PYR_ERROR_UNSUPPORTED_DTYPE;
  if (sign != 1 && sign != -1) return PYR_ERROR_INVALID_ARGUMENT;
  if (batch < 1 || dim < 2) return PYR_ERROR_INVALID_SIZE;
  return check_partition(part, dim);
}

// The layer widths chain from dim_a to dim_b, and a layer's outputs fit the weight-gradient
// grid, whose y dimension (at most 65535 blocks) runs over them.
template <typename Params>
pyr_status check_layers(const Params& p) {
  if (p.num_layers < 1 || p.num_layers > PYR_MAX_LAYERS) return PYR_ERROR_INVALID_ARGUMENT;
  for (int l = 0; l <= p.num_layers; ++l) {
    if (p.widths[l] < 1 || (l > 0 && p.widths[l] > int64_t{65535} * kWeightTile))
      return PYR_ERROR_INVALID_SIZE;
  }
  if (p.widths[0] != p.partition.dim_a || p.widths[p.num_layers] != p.partition.dim_b)
    return PYR_ERROR_INVALID_SIZE;
  for (int l = 0; l < p.num_layers; ++l) {
    if (!p.weight[l]) return PYR_ERROR_NULL_POINTER;
  }
  return PYR_SUCCESS;
}

bool aligned(const void* ptr, size_t alignment) {
  return reinterpret_cast<uintptr_t>(ptr) % alignment == 0;
}

// Rows per block of the row-local kernels: 32 rows reuse each weight tile twice as often as
// 16, and are taken once the batch still gives every multiprocessor two blocks.
int rows_per_block(int64_t batch) {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return 16;
  }
  return ceil_div(batch, 32) >= 2 * static_cast<int64_t>(sms) ? 32 : 16;
}

pyr_status launch_status() {
  return cudaGetLastError() == cudaSuccess ? PYR_SUCCESS : PYR_ERROR_CUDA;
}

template <typename T>
pyr_status run_fwd(const pyr_additive_coupling_params* p) {
  FwdArgs<T> a;
  a.batch = p->batch;
  a.dim = p->dim;
  a.part = p->partition;
  a.sign = p->sign;
  a.x = static_cast<const T*>(p->x);
  a.stride_x_b = p->stride_x_b;
  a.stride_x_d = p->stride_x_d;
  a.shift = static_cast<const T*>(p->shift);
  a.stride_shift_b = p->stride_shift_b;
  a.stride_shift_d = p->stride_shift_d;
  a.y = static_cast<T*>(p->y);
  a.stride_y_b = p->stride_y_b;
  a.stride_y_d = p->stride_y_d;
  a.pos_shift = 0;
  while (a.pos_shift < 8 && (int64_t{1} << a.pos_shift) < p->dim) ++a.pos_shift;
  const int64_t rows_per_block = kFwdThreads >> a.pos_shift;
  const dim3 grid(static_cast<unsigned>(ceil_div(p->dim, int64_t{1} << a.pos_shift)),
                  static_cast<unsigned>(min64(ceil_div(p->batch, rows_per_block), 65535)));
  additive_coupling_fwd_kernel<T>
      <<<grid, kFwdThreads, 0, static_cast<cudaStream_t>(p->stream)>>>(a);
  return launch_status();
}

// Hidden widths h_1 .. h_{L-1}; 0 when the MLP is a single linear layer.
template <typename Params>
int64_t max_hidden_width(const Params& p) {
  int64_t m = 0;
  for (int l = 1; l < p.num_layers; ++l) m = p.widths[l] > m ? p.widths[l] : m;
  return m;
}

template <typename T>
pyr_status run_mlp_fwd(const pyr_additive_coupling_mlp_params* p) {
  MlpFwdArgs<T> a;
  a.batch = p->batch;
  a.part = p->partition;
  a.sign = p->sign;
  a.num_layers = p->num_layers;
  const int64_t max_width = max_hidden_width(*p);
  T* scratch = static_cast<T*>(p->workspace);
  for (int l = 0; l <= PYR_MAX_LAYERS; ++l) a.widths[l] = l <= p->num_layers ? p->widths[l] : 0;
  for (int l = 0; l < PYR_MAX_LAYERS; ++l) {
    const bool used = l < p->num_layers;
    a.weight[l] = used ? static_cast<const T*>(p->weight[l]) : nullptr;
    a.bias[l] = used ? static_cast<const T*>(p->bias[l]) : nullptr;
    a.act[l] = nullptr;
    if (l + 1 < p->num_layers) {
      // Without hidden outputs, layer l writes buffer l % 2 while it reads buffer (l + 1) % 2.
      a.act[l] =
          p->hidden[0] ? static_cast<T*>(p->hidden[l]) : scratch + (l % 2) * p->batch * max_width;
    }
  }
  a.x = static_cast<const T*>(p->x);
  a.stride_x_b = p->stride_x_b;
  a.stride_x_d = p->stride_x_d;
  a.y = static_cast<T*>(p->y);
  a.stride_y_b = p->stride_y_b;
  a.stride_y_d = p->stride_y_d;
  const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
  if (rows_per_block(p->batch) == 32) {
    const unsigned blocks = static_cast<unsigned>(ceil_div(p->batch, 32));
    additive_coupling_mlp_fwd_kernel<T, 32><<<blocks, 32 * 8, 0, stream>>>(a);
  } else {
    const unsigned blocks = static_cast<unsigned>(ceil_div(p->batch, 16));
    additive_coupling_mlp_fwd_kernel<T, 16><<<blocks, 16 * 8, 0, stream>>>(a);
  }
  return launch_status();
}

template <typename T>
pyr_status run_mlp_bwd(const pyr_additive_coupling_mlp_bwd_params* p) {
  using Acc = typename AccOf<T>::type;
  MlpBwdArgs<T> a;
  a.batch = p->batch;
  a.part = p->partition;
  a.sign = p->sign;
  a.num_layers = p->num_layers;
  Acc* ws = static_cast<Acc*>(p->workspace);
  int64_t max_in = 0;
  int64_t max_out = 0;
  a.g[0] = nullptr;
  for (int l = 0; l <= PYR_MAX_LAYERS; ++l) a.widths[l] = l <= p->num_layers ? p->widths[l] : 0;
  for (int l = 0; l < PYR_MAX_LAYERS; ++l) {
    const bool used = l < p->num_layers;
    a.weight[l] = used ? static_cast<const T*>(p->weight[l]) : nullptr;
    a.hidden[l] = l + 1 < p->num_layers ? static_cast<const T*>(p->hidden[l]) : nullptr;
    a.dweight[l] = used ? static_cast<T*>(p->dweight[l]) : nullptr;
    a.dbias[l] = used ? static_cast<T*>(p->dbias[l]) : nullptr;
    a.g[l + 1] = used ? ws : nullptr;
    if (used) {
      ws += p->batch * p->widths[l + 1];
      max_in = p->widths[l] > max_in ? p->widths[l] : max_in;
      max_out = p->widths[l + 1] > max_out ? p->widths[l + 1] : max_out;
    }
  }
  a.cond = static_cast<const T*>(p->cond);
  a.stride_cond_b = p->stride_cond_b;
  a.stride_cond_d = p->stride_cond_d;
  a.dy = static_cast<const T*>(p->dy);
  a.stride_dy_b = p->stride_dy_b;
  a.stride_dy_d = p->stride_dy_d;
  a.dx = static_cast<T*>(p->dx);
  a.stride_dx_b = p->stride_dx_b;
  a.stride_dx_d = p->stride_dx_d;
  const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);

  if (rows_per_block(p->batch) == 32) {
    const unsigned blocks = static_cast<unsigned>(ceil_div(p->batch, 32));
    additive_coupling_mlp_bwd_kernel_rows<T, 32><<<blocks, 32 * 8, 0, stream>>>(a);
  } else {
    const unsigned blocks = static_cast<unsigned>(ceil_div(p->batch, 16));
    additive_coupling_mlp_bwd_kernel_rows<T, 16><<<blocks, 16 * 8, 0, stream>>>(a);
  }
  pyr_status status = launch_status();
  if (status != PYR_SUCCESS) return status;

  // Column widths[l] of layer l's tile grid is the bias gradient, hence max_in + 1 columns.
  const dim3 grid(static_cast<unsigned>(ceil_div(max_in + 1, kWeightTile)),
                  static_cast<unsigned>(ceil_div(max_out, kWeightTile)),
                  static_cast<unsigned>(p->num_layers));
  additive_coupling_mlp_bwd_kernel_weights<T><<<grid, kWeightThreads, 0, stream>>>(a);
  return launch_status();
}

template <template <typename> class Fn, typename Params>
pyr_status dispatch(const Params* p) {
  switch (p->dtype) {
    case PYR_FLOAT32:
      return Fn<float>::run(p);
    case PYR_FLOAT64:
      return Fn<double>::run(p);
    case PYR_FLOAT16:
      return Fn<__half>::run(p);
    case PYR_BFLOAT16:
      return Fn<__nv_bfloat16>::run(p);
    default:
      return PYR_ERROR_UNSUPPORTED_DTYPE;
  }
}

template <typename T>
struct FwdFn {
  static pyr_status run(const pyr_additive_coupling_params* p) { return run_fwd<T>(p); }
};

template <typename T>
struct MlpFwdFn {
  static pyr_status run(const pyr_additive_coupling_mlp_params* p) { return run_mlp_fwd<T>(p); }
};

template <typename T>
struct MlpBwdFn {
  static pyr_status run(const pyr_additive_coupling_mlp_bwd_params* p) { return run_mlp_bwd<T>(p); }
};

pyr_status check_fwd(const pyr_additive_coupling_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  const pyr_status status = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition);
  if (status != PYR_SUCCESS) return status;
  if (!strides_ok(p->stride_x_b, p->stride_x_d, p->batch, p->dim) ||
      !strides_ok(p->stride_shift_b, p->stride_shift_d, p->batch, p->partition.dim_b) ||
      !out_strides_ok(p->stride_y_b, p->stride_y_d, p->batch, p->dim))
    return PYR_ERROR_INVALID_STRIDE;
  if (!p->x || !p->shift || !p->y) return PYR_ERROR_NULL_POINTER;
  if (p->y == p->x || p->y == p->shift) return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

// The fused forward's scratch: two ping-pong (batch, widest hidden) buffers of the input dtype,
// needed only when the caller keeps no hidden activations and there is a hidden layer.
size_t mlp_fwd_workspace(const pyr_additive_coupling_mlp_params* p) {
  if (!p || p->num_layers < 2 || p->num_layers > PYR_MAX_LAYERS || p->batch < 1) return 0;
  if (p->hidden[0]) return 0;
  const int64_t width = max_hidden_width(*p);
  if (width < 1) return 0;
  return 2 * static_cast<size_t>(p->batch) * static_cast<size_t>(width) * dtype_size(p->dtype);
}

// The backward's workspace: g_l for l = 1 .. L, (batch, widths[l]) each, in the accumulation
// type, kept for the weight gradients.
size_t mlp_bwd_workspace(const pyr_additive_coupling_mlp_bwd_params* p) {
  if (!p || p->num_layers < 1 || p->num_layers > PYR_MAX_LAYERS || p->batch < 1) return 0;
  size_t elements = 0;
  for (int l = 1; l <= p->num_layers; ++l) {
    if (p->widths[l] < 1) return 0;
    elements += static_cast<size_t>(p->batch) * static_cast<size_t>(p->widths[l]);
  }
  return elements * acc_size(p->dtype);
}

pyr_status check_mlp_fwd(const pyr_additive_coupling_mlp_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  pyr_status status = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition);
  if (status != PYR_SUCCESS) return status;
  status = check_layers(*p);
  if (status != PYR_SUCCESS) return status;
  if (!strides_ok(p->stride_x_b, p->stride_x_d, p->batch, p->dim) ||
      !out_strides_ok(p->stride_y_b, p->stride_y_d, p->batch, p->dim))
    return PYR_ERROR_INVALID_STRIDE;
  if (!p->x || !p->y) return PYR_ERROR_NULL_POINTER;
  if (p->y == p->x) return PYR_ERROR_INVALID_ARGUMENT;
  for (int l = 0; l < p->num_layers; ++l) {
    if (!p->bias[l]) return PYR_ERROR_NULL_POINTER;
  }
  // hidden[] is all or nothing: with hidden[0] set, every hidden layer needs its output.
  for (int l = 1; l + 1 < p->num_layers; ++l) {
    if (!p->hidden[l] != !p->hidden[0]) return PYR_ERROR_NULL_POINTER;
  }
  const size_t need = mlp_fwd_workspace(p);
  if (need > 0) {
    if (!p->workspace) return PYR_ERROR_NULL_POINTER;
    if (p->workspace_bytes < need) return PYR_ERROR_INVALID_SIZE;
    if (!aligned(p->workspace, dtype_size(p->dtype))) return PYR_ERROR_INVALID_ARGUMENT;
  }
  return PYR_SUCCESS;
}

pyr_status check_mlp_bwd(const pyr_additive_coupling_mlp_bwd_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  pyr_status status = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition);
  if (status != PYR_SUCCESS) return status;
  status = check_layers(*p);
  if (status != PYR_SUCCESS) return status;
  if (!strides_ok(p->stride_cond_b, p->stride_cond_d, p->batch, p->dim) ||
      !strides_ok(p->stride_dy_b, p->stride_dy_d, p->batch, p->dim) ||
      !out_strides_ok(p->stride_dx_b, p->stride_dx_d, p->batch, p->dim))
    return PYR_ERROR_INVALID_STRIDE;
  if (!p->cond || !p->dy || !p->dx) return PYR_ERROR_NULL_POINTER;
  for (int l = 0; l < p->num_layers; ++l) {
    if (!p->dweight[l] || !p->dbias[l]) return PYR_ERROR_NULL_POINTER;
    if (l + 1 < p->num_layers && !p->hidden[l]) return PYR_ERROR_NULL_POINTER;
  }
  const size_t need = mlp_bwd_workspace(p);
  if (!p->workspace) return PYR_ERROR_NULL_POINTER;
  if (p->workspace_bytes < need) return PYR_ERROR_INVALID_SIZE;
  if (!aligned(p->workspace, acc_size(p->dtype))) return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_additive_coupling_fwd_cuda(const pyr_additive_coupling_params* p) {
  const pyr_status status = check_fwd(p);
  if (status != PYR_SUCCESS) return status;
  return dispatch<FwdFn>(p);
}

extern "C" size_t pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes(
    const pyr_additive_coupling_mlp_params* p) {
  return mlp_fwd_workspace(p);
}

extern "C" pyr_status pyr_additive_coupling_mlp_fwd_cuda(
    const pyr_additive_coupling_mlp_params* p) {
  const pyr_status status = check_mlp_fwd(p);
  if (status != PYR_SUCCESS) return status;
  return dispatch<MlpFwdFn>(p);
}

extern "C" size_t pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes(
    const pyr_additive_coupling_mlp_bwd_params* p) {
  return mlp_bwd_workspace(p);
}

extern "C" pyr_status pyr_additive_coupling_mlp_bwd_cuda(
    const pyr_additive_coupling_mlp_bwd_params* p) {
  const pyr_status status = check_mlp_bwd(p);
  if (status != PYR_SUCCESS) return status;
  return dispatch<MlpBwdFn>(p);
}
