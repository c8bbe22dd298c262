// Device helpers shared by the convolution kernels (causal_conv1d, masked_conv2d, wavenet_layer).
//
// Every convolution here is an implicit GEMM: out(m, n) = sum_r A(m, r) * B(r, n), where one
// operand is a weight and the other the input's taps, gathered on the fly by a loader from the
// input in place (zero outside it), so that no padded or unfolded copy is ever built. A block of
// 256 threads computes one 64 x 64 output tile, reading both operands through shared memory in
// chunks of 16 reduction steps. Two kernels run such tiles over a problem: tile_gemm_kernel for
// outputs and input gradients (the reduction runs over channels and taps), and split_gemm_kernel
// with split_sum_kernel for weight gradients (the reduction runs over batch rows and time steps;
// it is split over blocks, whose partial sums go to a workspace and are added up in a fixed
// order, so the result does not depend on scheduling).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "../layout.h"
#include "coupling_common.cuh"
#include "pyreversible/kernels.h"

namespace pyr_cuda {

// An output tile is kTile x kTile and the reduction runs in chunks of kChunk steps. The 256
// threads form a 16 x 16 grid (tx = tid % 16, ty = tid / 16); each computes the 4 x 4 outputs
// at rows ty + 16 i and columns tx + 16 j (i, j < 4), so that the 16 threads of a half warp
// store 16 consecutive columns and read shared memory as broadcasts (rows) or consecutive words
// (columns).
constexpr int kTile = 64;
constexpr int kChunk = 16;
constexpr int kTileThreads = 256;
// The tile kernels ask for room for 2 blocks per multiprocessor (at most 128 registers a
// thread): left to itself, ptxas capped some of them at 64 registers and spilled.
constexpr int kTileMinBlocks = 2;

// One chunk of both operands. a[k][m] = A(m, r0 + k), b[k][n] = B(r0 + k, n); each row padded by
// one element so that the column-wise stores of a warp spread over the banks.
template <typename Acc>
struct TileSmem {
  Acc a[kChunk][kTile + 1];
  Acc b[kChunk][kTile + 1];
};

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

inline pyr_status launch_status() {
  return cudaGetLastError() == cudaSuccess ? PYR_SUCCESS : PYR_ERROR_CUDA;
}

// acc[i][j] += sum_{k < count} A(ty + 16 i, r0 + k) * B(r0 + k, tx + 16 j), count <= kChunk.
// The loader l answers l.a(m, r) for 0 <= m < kTile and l.b(r, n) for 0 <= n < kTile, with
// r0 <= r < r0 + count only, and returns 0 for rows or columns past the problem's. A_R_FAST
// (B_R_FAST) says that consecutive threads load consecutive reduction steps of A (B), which is
// what keeps the loads coalesced when the operand is contiguous along the reduction; otherwise
// they load consecutive rows (columns). With ABSENT, l.present(r, n) says which terms of B
// exist at all: an absent one adds nothing, not A * 0, so that a NaN or infinite A does not
// reach it (torch's input gradients of a padded convolution have no terms for the padding);
// `present` is the shared array that carries it. Every thread of the block must call this: it
// synchronises before and after using the shared chunk.
template <bool A_R_FAST, bool B_R_FAST, bool ABSENT = false, typename Acc, typename Loader>
__device__ __forceinline__ void mma_chunk(TileSmem<Acc>& s, Acc (&acc)[4][4], const Loader& l,
                                          int64_t r0, int count, bool (*present)[kTile] = nullptr) {
  const int tid = threadIdx.x;
  // kChunk * kTile = 1024 elements per operand, 4 per thread.
#pragma unroll
  for (int q = 0; q < kChunk * kTile / kTileThreads; ++q) {
    const int e = tid + q * kTileThreads;
    const int k = A_R_FAST ? e % kChunk : e / kTile;
    const int m = A_R_FAST ? e / kChunk : e % kTile;
    s.a[k][m] = k < count ? l.a(m, r0 + k) : Acc(0);
  }
#pragma unroll
  for (int q = 0; q < kChunk * kTile / kTileThreads; ++q) {
    const int e = tid + q * kTileThreads;
    const int k = B_R_FAST ? e % kChunk : e / kTile;
    const int n = B_R_FAST ? e / kChunk : e % kTile;
    s.b[k][n] = k < count ? l.b(r0 + k, n) : Acc(0);
    if constexpr (ABSENT) present[k][n] = k < count && l.present(r0 + k, n);
  }
  __syncthreads();

  const int tx = tid % 16;
  const int ty = tid / 16;
#pragma unroll
  for (int k = 0; k < kChunk; ++k) {
    Acc av[4], bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = s.a[k][ty + 16 * i];
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = s.b[k][tx + 16 * j];
    if constexpr (ABSENT) {
      bool pv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) pv[j] = present[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += pv[j] ? av[i] * bv[j] : Acc(0);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
  }
  __syncthreads();
}

// Whether a tile problem's B has absent terms: its Loader has present(r, n), and the problem
// has_absent(n0), which says whether the column tile at n0 meets any (see mma_chunk).
template <typename P, typename = void>
struct HasAbsentTerms : std::false_type {};
template <typename P>
struct HasAbsentTerms<P, std::void_t<decltype(&P::Loader::present)>> : std::true_type {};

template <typename Acc>
__device__ __forceinline__ void zero(Acc (&acc)[4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
}

// out(job, m, n) = sum_{r < depth} A_job(m, r) B_job(r, n) for m < rows, n < cols, each of
// `jobs` independent products (a batch row, or a batch row and a group). P provides:
//   using Acc; static constexpr bool kARFast, kBRFast;
//   int64_t jobs, rows, cols, depth;
//   Loader loader(int64_t job, int64_t m0, int64_t n0) const  (the tile at rows m0, columns n0);
//   void store(int64_t job, int64_t m, int64_t n, Acc v) const (called once per output).
// Grid: x over column tiles; y over (job, row tile) pairs, looping past gridDim.y.
template <typename P>
__global__ void __launch_bounds__(kTileThreads, kTileMinBlocks) tile_gemm_kernel(const P p) {
  using Acc = typename P::Acc;
  __shared__ TileSmem<Acc> s;
  // which terms of B exist, for the problems that have absent ones
  __shared__ bool present[HasAbsentTerms<P>::value ? kChunk : 1][kTile];
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int64_t m_tiles = ceil_div(p.rows, kTile);
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int64_t jm = blockIdx.y; jm < p.jobs * m_tiles; jm += gridDim.y) {
    const int64_t job = jm / m_tiles;
    const int64_t m0 = (jm - job * m_tiles) * kTile;
    const auto l = p.loader(job, m0, n0);
    Acc acc[4][4];
    zero(acc);
    bool absent = false;
    if constexpr (HasAbsentTerms<P>::value) absent = p.has_absent(n0);
    for (int64_t r0 = 0; r0 < p.depth; r0 += kChunk) {
      const int count = static_cast<int>(min64(kChunk, p.depth - r0));
      if constexpr (HasAbsentTerms<P>::value) {
        if (absent) {
          mma_chunk<P::kARFast, P::kBRFast, true>(s, acc, l, r0, count, present);
          continue;
        }
      }
      mma_chunk<P::kARFast, P::kBRFast>(s, acc, l, r0, count);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t n = n0 + tx + 16 * j;
        if (m < p.rows && n < p.cols) p.store(job, m, n, acc[i][j]);
      }
    }
  }
}

// Column tiles must fit gridDim.x; (job, row tile) pairs loop over at most 65535 blocks in y.
template <typename P>
pyr_status launch_tile_gemm(const P& p, cudaStream_t stream) {
  if (p.jobs < 1 || p.rows < 1 || p.cols < 1) return PYR_SUCCESS;
  const int64_t n_tiles = ceil_div(p.cols, kTile);
  const int64_t pairs = p.jobs * ceil_div(p.rows, kTile);
  if (n_tiles > INT32_MAX) return PYR_ERROR_INVALID_SIZE;
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(min64(pairs, 65535)));
  tile_gemm_kernel<P><<<grid, kTileThreads, 0, stream>>>(p);
  return launch_status();
}

// How a weight gradient's reduction over `outer` rows (batch rows, or image rows) of `inner`
// steps each (time steps, or pixels) is split over blocks: split s takes rows
// [(s / inner_splits) * rows_per, + rows_per) and steps [(s % inner_splits) * inner_per,
// + inner_per) of each, both clipped to the problem. The plan depends on the sizes only, so that
// the workspace size asked for before the launch is the one the launch uses.
struct SplitPlan {
  int64_t rows_per, inner_per, row_splits, inner_splits;
  int64_t splits() const { return row_splits * inner_splits; }
};

// About 1024 blocks in all (a few per multiprocessor on the largest GPUs), with at least 8
// chunks of the reduction each, so that the partial sums stay few next to the work.
inline SplitPlan plan_split(int64_t outer, int64_t inner, int64_t tile_blocks) {
  const int64_t chunks_per_row = ceil_div(inner, kChunk);
  int64_t want = ceil_div(1024, tile_blocks < 1 ? 1 : tile_blocks);
  want = min64(want, ceil_div(outer * chunks_per_row, 8));
  if (want < 1) want = 1;
  SplitPlan plan;
  if (want <= outer) {
    plan.rows_per = ceil_div(outer, want);
    plan.inner_per = chunks_per_row * kChunk;
  } else {
    plan.rows_per = 1;
    plan.inner_per = ceil_div(chunks_per_row, ceil_div(want, outer)) * kChunk;
  }
  plan.row_splits = ceil_div(outer, plan.rows_per);
  plan.inner_splits = ceil_div(inner, plan.inner_per);
  return plan;
}

// The sizes of a split reduction: out(job, m, c) = sum_{row < outer} sum_{i < inner}
// A_job,row(m, i) B_job,row(i, c).
struct SplitShape {
  int64_t jobs, rows, cols, outer, inner;
  int64_t tile_blocks() const { return jobs * ceil_div(rows, kTile) * ceil_div(cols, kTile); }
  SplitPlan plan() const { return plan_split(outer, inner, tile_blocks()); }
  // Elements of the partial sums: one (jobs, rows, cols) array per split.
  int64_t partial_elements() const { return plan().splits() * jobs * rows * cols; }
};

// The partial sums of split blockIdx.z. P provides SplitShape's fields and:
//   using Acc; static constexpr bool kARFast, kBRFast;
//   Loader loader(int64_t job, int64_t m0, int64_t c0, int64_t row) const;
//   void store(int64_t job, int64_t m, int64_t c, Acc v) const (for split_sum_kernel).
// partial[((split * jobs + job) * rows + m) * cols + c] is written for every output of every
// split, zero where the split's range is empty. Grid: x over column tiles, y over (job, row tile)
// pairs (looping), z over splits.
template <typename P>
__global__ void __launch_bounds__(kTileThreads, kTileMinBlocks)
    split_gemm_kernel(const P p, const SplitPlan plan, typename P::Acc* partial) {
  using Acc = typename P::Acc;
  __shared__ TileSmem<Acc> s;
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int64_t m_tiles = ceil_div(p.rows, kTile);
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t split = blockIdx.z;
  const int64_t row_lo = (split / plan.inner_splits) * plan.rows_per;
  const int64_t row_hi = min64(p.outer, row_lo + plan.rows_per);
  const int64_t in_lo = (split % plan.inner_splits) * plan.inner_per;
  const int64_t in_hi = min64(p.inner, in_lo + plan.inner_per);
  for (int64_t jm = blockIdx.y; jm < p.jobs * m_tiles; jm += gridDim.y) {
    const int64_t job = jm / m_tiles;
    const int64_t m0 = (jm - job * m_tiles) * kTile;
    Acc acc[4][4];
    zero(acc);
    for (int64_t row = row_lo; row < row_hi; ++row) {
      const auto l = p.loader(job, m0, c0, row);
      for (int64_t i0 = in_lo; i0 < in_hi; i0 += kChunk)
        mma_chunk<P::kARFast, P::kBRFast>(s, acc, l, i0,
                                          static_cast<int>(min64(kChunk, in_hi - i0)));
    }
    Acc* out = partial + (split * p.jobs + job) * p.rows * p.cols;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t c = c0 + tx + 16 * j;
        if (m < p.rows && c < p.cols) out[m * p.cols + c] = acc[i][j];
      }
    }
  }
}

// out(job, m, c) = the partial sums of every split added in split order, handed to p.store.
template <typename P>
__global__ void __launch_bounds__(256)
    split_sum_kernel(const P p, int64_t splits, const typename P::Acc* partial) {
  using Acc = typename P::Acc;
  const int64_t per_job = p.rows * p.cols;
  const int64_t per_split = p.jobs * per_job;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < per_split;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Acc sum = Acc(0);
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * per_split + e];
    const int64_t job = e / per_job;
    const int64_t m = (e - job * per_job) / p.cols;
    const int64_t c = e - job * per_job - m * p.cols;
    p.store(job, m, c, sum);
  }
}

// Runs a split reduction: the partial sums into `workspace` (at least
// p.partial_elements() * sizeof(Acc) bytes, checked by the caller), then their sum.
template <typename P>
pyr_status launch_split_gemm(const P& p, typename P::Acc* workspace, cudaStream_t stream) {
  if (p.jobs < 1 || p.rows < 1 || p.cols < 1) return PYR_SUCCESS;
  const SplitPlan plan = p.plan();
  const int64_t pairs = p.jobs * ceil_div(p.rows, kTile);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.cols, kTile)),
                  static_cast<unsigned>(min64(pairs, 65535)), static_cast<unsigned>(plan.splits()));
  split_gemm_kernel<P><<<grid, kTileThreads, 0, stream>>>(p, plan, workspace);
  const pyr_status status = launch_status();
  if (status != PYR_SUCCESS) return status;
  const int64_t blocks = min64(ceil_div(p.jobs * p.rows * p.cols, 256), int64_t{1} << 16);
  split_sum_kernel<P>
      <<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p, plan.splits(), workspace);
  return launch_status();
}

// Row r = i * taps + k of the tap matrix of a causal convolution, at time t:
// src[i, t + dir * (taps - 1 - k) * dilation], and 0 where that time is outside [0, length).
// dir = -1 for the forward (the taps look back), +1 for the input gradient (they look forward).
// The caller bounds r by channels * taps, which it checked fits 32 bits.
template <typename T>
struct CausalTaps {
  const T* src;  // channel 0 of the batch row (and group)
  int64_t stride_c, stride_t, length, dilation;
  uint32_t taps;
  int dir;

  // Whether the time that row r reads at t is inside [0, length).
  __device__ __forceinline__ bool inside(int64_t r, int64_t t) const {
    const uint32_t i = static_cast<uint32_t>(r) / taps;
    const uint32_t k = static_cast<uint32_t>(r) - i * taps;
    const int64_t tt = t + dir * static_cast<int64_t>(taps - 1 - k) * dilation;
    return tt >= 0 && tt < length;
  }

  __device__ __forceinline__ typename AccOf<T>::type at(int64_t r, int64_t t) const {
    using Acc = typename AccOf<T>::type;
    const uint32_t i = static_cast<uint32_t>(r) / taps;
    const uint32_t k = static_cast<uint32_t>(r) - i * taps;
    const int64_t tt = t + dir * static_cast<int64_t>(taps - 1 - k) * dilation;
    if (tt < 0 || tt >= length) return Acc(0);
    return to_acc(src[static_cast<int64_t>(i) * stride_c + tt * stride_t]);
  }
};

// The input gradient of a causal convolution, per (batch row, group):
//   dx[i, t] = sum_{o, k} W[o, i, k] dy[o, t + (K - 1 - k) d]  (+ add[i, t] when add is given),
// rows are the group's input channels and the reduction runs over (output channel, tap) rows
// r = o K + k, whose taps of dy look forward in time. The terms past the end of dy are absent,
// not zero (torch pads only the past): the column tiles within (K - 1) d of the end leave them
// out (mma_chunk's ABSENT), so that a non-finite weight reaches the same steps as in torch. dy has
// type TD: T, or the accumulation type for a gradient kept in a workspace (the WaveNet layer's dz),
// which adds its residual path's gradient through `add`.
template <typename T, typename TD>
struct CausalBwdData {
  using Acc = typename AccOf<T>::type;
  // W[o, i, k] is contiguous along k, so along r within an output channel; dy along time
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch * groups, ci, length, co * K
  int64_t groups, ci, co, length, dilation;
  uint32_t taps;
  const TD* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_t;
  const T* weight;  // (groups * co, ci, K) contiguous
  const T* add;     // (batch, groups * ci, length) with strides, or NULL
  int64_t stride_add_b, stride_add_c, stride_add_t;
  T* dx;
  int64_t stride_dx_b, stride_dx_c, stride_dx_t;

  struct Loader {
    const T* w;  // the group's weight
    int64_t i0, ci;
    uint32_t taps;
    int64_t n0;
    CausalTaps<TD> dy_taps;
    __device__ Acc a(int m, int64_t r) const {
      const int64_t i = i0 + m;
      if (i >= ci) return Acc(0);
      const uint32_t o = static_cast<uint32_t>(r) / taps;
      const uint32_t k = static_cast<uint32_t>(r) - o * taps;
      return to_acc(w[(static_cast<int64_t>(o) * ci + i) * taps + k]);
    }
    __device__ Acc b(int64_t r, int n) const { return dy_taps.at(r, n0 + n); }
    __device__ bool present(int64_t r, int n) const { return dy_taps.inside(r, n0 + n); }
  };

  // Whether the column tile at n0 has taps that reach past the end of dy.
  __device__ bool has_absent(int64_t n0) const {
    return n0 + kTile - 1 + static_cast<int64_t>(taps - 1) * dilation >= length;
  }

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    const int64_t b = job / groups;
    const int64_t g = job - b * groups;
    const CausalTaps<TD> dy_taps{dy + b * stride_dy_b + g * co * stride_dy_c,
                                 stride_dy_c,
                                 stride_dy_t,
                                 length,
                                 dilation,
                                 taps,
                                 +1};
    return Loader{weight + g * co * ci * taps, m0, ci, taps, n0, dy_taps};
  }

  __device__ void store(int64_t job, int64_t m, int64_t n, Acc v) const {
    const int64_t b = job / groups;
    const int64_t i = (job - b * groups) * ci + m;
    if (add) v += to_acc(add[b * stride_add_b + i * stride_add_c + n * stride_add_t]);
    dx[b * stride_dx_b + i * stride_dx_c + n * stride_dx_t] = from_acc<T>(v);
  }
};

// The weight and bias gradients of a causal convolution, per group: [dW | db] = sum over
// (batch row, time step) of dy (co) times [taps(x) | 1] (ci K + 1). Column c < weight_cols is
// the (input channel, tap) c of dW, column weight_cols db (when asked for); weight_cols is 0
// when only db is wanted. dy has type TD, as in CausalBwdData.
template <typename T, typename TD>
struct CausalBwdWeight : SplitShape {
  using Acc = typename AccOf<T>::type;
  // both operands are read along time, the reduction
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = true;
  // SplitShape: jobs = groups, rows = co, cols = weight_cols (+ 1), outer = batch, inner = length
  int64_t ci, co, weight_cols, length, dilation;
  uint32_t taps;
  const T* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const TD* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_t;
  T* dweight;  // (groups * co, ci, K) contiguous, or NULL
  T* dbias;    // (groups * co,), or NULL

  struct Loader {
    const TD* dy;  // dy's channel m0 of the group, in the batch row
    int64_t stride_c, stride_t, dy_rows, c0, weight_cols, cols;
    CausalTaps<T> x_taps;
    __device__ Acc a(int m, int64_t t) const {
      return m < dy_rows ? to_acc(dy[m * stride_c + t * stride_t]) : Acc(0);
    }
    __device__ Acc b(int64_t t, int n) const {
      const int64_t c = c0 + n;
      if (c < weight_cols) return x_taps.at(c, t);
      return c < cols ? Acc(1) : Acc(0);
    }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t c0, int64_t row) const {
    const CausalTaps<T> x_taps{x + row * stride_x_b + job * ci * stride_x_c,
                               stride_x_c,
                               stride_x_t,
                               length,
                               dilation,
                               taps,
                               -1};
    return Loader{dy + row * stride_dy_b + (job * co + m0) * stride_dy_c,
                  stride_dy_c,
                  stride_dy_t,
                  co - m0,
                  c0,
                  weight_cols,
                  cols,
                  x_taps};
  }

  __device__ void store(int64_t job, int64_t m, int64_t c, Acc v) const {
    const int64_t o = job * co + m;
    if (c < weight_cols) {
      dweight[o * weight_cols + c] = from_acc<T>(v);
    } else {
      dbias[o] = from_acc<T>(v);
    }
  }
};

// Bytes of the accumulation type of a dtype: float for float32 and the 16-bit types.
inline size_t acc_bytes(int32_t dtype) { return dtype == PYR_FLOAT64 ? 8 : 4; }

// Runs Fn<T>::run(p) for the params' dtype.
template <template <typename> class Fn, typename Params>
pyr_status dispatch_dtype(const Params* p) {
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

// Sizes past this are rejected: with every size and product of sizes below 2^50 elements, the
// 64-bit index arithmetic of the kernels cannot overflow.
using pyr_layout::kMaxElements;
// the layout rules of the CPU kernels (negative strides, reach, outputs' zero strides)
using pyr_layout::strides_ok;

inline bool product_fits(int64_t a, int64_t b) {
  int64_t n;
  return a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &n) && n <= kMaxElements;
}

}  // namespace pyr_cuda
