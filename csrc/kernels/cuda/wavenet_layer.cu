// The gated residual layer of WaveNet on CUDA GPUs: forward and backward. Semantics are those
// of cpu/wavenet_layer.cpp (see pyreversible/kernels.h).
//
// The forward is one kernel; a block runs one tile of 64 time steps of one batch row start to
// end. z is computed 32 gate channels at a time as a 64-row output tile (conv_common.cuh): rows
// 0-31 are the tanh half z[i0 .. i0 + 31] and rows 32-63 the sigmoid half z[G + i0 ..], so that
// each thread holds both halves of its channels and forms a = tanh(z_f) sigmoid(z_g) in
// registers. The reduction runs over the taps of x (gathered in place, zeros before t = 0) and
// then the channels of c_local; z's bias, the conv bias plus W_global c_global[b], is computed
// once per block into shared memory. a (G x 64) stays in shared memory, and the second product
// [W_s; W_r] a gives skip and, with x's own tile added, x_next. z goes out only when the
// backward wants it.
//
// The backward is a sequence of launches through a workspace: da = [W_s; W_r]^T [dskip; dx_next]
// per tile, with the gate's derivative in its epilogue, giving dz (and a, recomputed from the
// saved z, for the projections' weight gradients) in the accumulation type; then the split
// reductions of the weight gradients over (batch row, time), dc_local = W_local^T dz per tile,
// dz summed over time for the global conditioning, and the causal convolution's backward on dz
// (its input gradient with dx_next added in the epilogue). Each is launched only when one of
// the gradients it feeds is asked for.
#include <cuda_runtime.h>
#include <stdint.h>

#include "conv_common.cuh"
#include "pyreversible/kernels.h"

namespace {

using pyr_cuda::AccOf;
using pyr_cuda::CausalBwdData;
using pyr_cuda::CausalBwdWeight;
using pyr_cuda::CausalTaps;
using pyr_cuda::ceil_div;
using pyr_cuda::from_acc;
using pyr_cuda::kChunk;
using pyr_cuda::kTile;
using pyr_cuda::kTileThreads;
using pyr_cuda::min64;
using pyr_cuda::SplitShape;
using pyr_cuda::TileSmem;
using pyr_cuda::to_acc;

// tanh and sigmoid at full precision: a saturated gate gives exactly 1 or 0 (its derivative 0),
// and a NaN stays NaN, as in torch.
__device__ __forceinline__ float gate_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double gate_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float gate_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ double gate_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

struct Sizes {
  int64_t batch, residual, gate, skip, length, taps, dilation, local, global;
};

template <typename P>
Sizes sizes_of(const P* p) {
  return Sizes{p->batch,          p->residual_channels, p->gate_channels, p->skip_channels,
               p->length,         p->kernel_size,       p->dilation,      p->local_channels,
               p->global_channels};
}

template <typename T>
struct FwdArgs {
  Sizes s;
  const T* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const T* conv_weight;  // (2G, R K) contiguous
  const T* conv_bias;
  const T* residual_weight;  // (R, G)
  const T* residual_bias;
  const T* skip_weight;  // (S, G)
  const T* skip_bias;
  const T* local_cond;
  int64_t stride_local_b, stride_local_c, stride_local_t;
  const T* local_weight;  // (2G, C_local)
  const T* global_cond;
  int64_t stride_global_b, stride_global_c;
  const T* global_weight;  // (2G, C_global)
  T* x_next;
  int64_t stride_x_next_b, stride_x_next_c, stride_x_next_t;
  T* skip;
  int64_t stride_skip_b, stride_skip_c, stride_skip_t;
  T* gate_input;  // (B, 2G, T) contiguous, or NULL
};

// The z tile of gate channels [i0, i0 + 32) at times [t0, t0 + 64) of one batch row: tile row
// m < 32 is z's row i0 + m (tanh half), row m >= 32 is z's row G + i0 + m - 32 (sigmoid half).
// The reduction runs over the R K taps of x, then the C_local channels of c_local.
template <typename T>
struct ZLoader {
  using Acc = typename AccOf<T>::type;
  const T* conv_weight;
  const T* local_weight;
  int64_t i0, gate, rk, local, t0, length;
  CausalTaps<T> x_taps;  // x[b]
  const T* local_cond;   // c_local[b]
  int64_t stride_local_c, stride_local_t;

  __device__ Acc a(int m, int64_t r) const {
    const int64_t ch = i0 + (m % (kTile / 2));
    if (ch >= gate) return Acc(0);
    const int64_t o = (m < kTile / 2 ? 0 : gate) + ch;
    if (r < rk) return to_acc(conv_weight[o * rk + r]);
    return to_acc(local_weight[o * local + (r - rk)]);
  }
  __device__ Acc b(int64_t r, int n) const {
    const int64_t t = t0 + n;
    if (r < rk) return x_taps.at(r, t);
    if (t >= length) return Acc(0);
    return to_acc(local_cond[(r - rk) * stride_local_c + t * stride_local_t]);
  }
};

// The [skip; residual] tile of rows [m0, m0 + 64): [W_s; W_r] times a, read from shared memory.
template <typename T>
struct OutLoader {
  using Acc = typename AccOf<T>::type;
  const T* skip_weight;
  const T* residual_weight;
  int64_t m0, skip, rows, gate;
  const Acc* a_tile;  // (G, kTile)

  __device__ Acc a(int m, int64_t r) const {
    const int64_t row = m0 + m;
    if (row >= rows) return Acc(0);
    if (row < skip) return to_acc(skip_weight[row * gate + r]);
    return to_acc(residual_weight[(row - skip) * gate + r]);
  }
  __device__ Acc b(int64_t r, int n) const { return a_tile[r * kTile + n]; }
};

// Dynamic shared memory of the forward: the operand chunks, a (G x 64), z's bias (2G).
template <typename Acc>
size_t fwd_smem_bytes(int64_t gate) {
  return sizeof(TileSmem<Acc>) + static_cast<size_t>(gate * kTile + 2 * gate) * sizeof(Acc);
}

// Grid: x over tiles of 64 time steps, y over batch rows (looping past gridDim.y).
template <typename T>
__global__ void __launch_bounds__(kTileThreads, pyr_cuda::kTileMinBlocks)
    wavenet_layer_fwd_kernel(const FwdArgs<T> p) {
  using Acc = typename AccOf<T>::type;
  extern __shared__ __align__(16) unsigned char smem[];
  TileSmem<Acc>& s = *reinterpret_cast<TileSmem<Acc>*>(smem);
  Acc* a_tile = reinterpret_cast<Acc*>(smem + sizeof(TileSmem<Acc>));
  Acc* z_bias = a_tile + p.s.gate * kTile;
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int64_t gate = p.s.gate;
  const int64_t gg = 2 * gate;
  const int64_t length = p.s.length;
  const int64_t rk = p.s.residual * p.s.taps;
  const int64_t depth = rk + p.s.local;
  const int64_t out_rows = p.s.skip + p.s.residual;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTile;

  for (int64_t b = blockIdx.y; b < p.s.batch; b += gridDim.y) {
    for (int64_t o = threadIdx.x; o < gg; o += kTileThreads) {
      Acc v = p.conv_bias ? to_acc(p.conv_bias[o]) : Acc(0);
      for (int64_t c = 0; c < p.s.global; ++c)
        v += to_acc(p.global_weight[o * p.s.global + c]) *
             to_acc(p.global_cond[b * p.stride_global_b + c * p.stride_global_c]);
      z_bias[o] = v;
    }
    __syncthreads();

    const CausalTaps<T> x_taps{p.x + b * p.stride_x_b,
                               p.stride_x_c,
                               p.stride_x_t,
                               length,
                               p.s.dilation,
                               static_cast<uint32_t>(p.s.taps),
                               -1};
    for (int64_t i0 = 0; i0 < gate; i0 += kTile / 2) {
      const ZLoader<T> l{p.conv_weight,
                         p.local_weight,
                         i0,
                         gate,
                         rk,
                         p.s.local,
                         t0,
                         length,
                         x_taps,
                         p.local_cond ? p.local_cond + b * p.stride_local_b : nullptr,
                         p.stride_local_c,
                         p.stride_local_t};
      Acc acc[4][4];
      pyr_cuda::zero(acc);
      for (int64_t r0 = 0; r0 < depth; r0 += kChunk)
        pyr_cuda::mma_chunk<true, false>(s, acc, l, r0,
                                         static_cast<int>(min64(kChunk, depth - r0)));
      // acc[h] holds z's tanh row of channel i0 + ty + 16 h, acc[h + 2] its sigmoid row.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t ch = i0 + ty + 16 * h;
        if (ch >= gate) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = tx + 16 * j;
          const int64_t t = t0 + n;
          const Acc zf = acc[h][j] + z_bias[ch];
          const Acc zg = acc[h + 2][j] + z_bias[gate + ch];
          if (p.gate_input && t < length) {
            p.gate_input[(b * gg + ch) * length + t] = from_acc<T>(zf);
            p.gate_input[(b * gg + gate + ch) * length + t] = from_acc<T>(zg);
          }
          a_tile[ch * kTile + n] = gate_tanh(zf) * gate_sigmoid(zg);
        }
      }
    }
    __syncthreads();

    for (int64_t m0 = 0; m0 < out_rows; m0 += kTile) {
      const OutLoader<T> l{p.skip_weight, p.residual_weight, m0, p.s.skip, out_rows, gate, a_tile};
      Acc acc[4][4];
      pyr_cuda::zero(acc);
      for (int64_t r0 = 0; r0 < gate; r0 += kChunk)
        pyr_cuda::mma_chunk<true, false>(s, acc, l, r0, static_cast<int>(min64(kChunk, gate - r0)));
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = m0 + ty + 16 * i;
        if (row >= out_rows) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t t = t0 + tx + 16 * j;
          if (t >= length) continue;
          if (row < p.s.skip) {
            const Acc bias = p.skip_bias ? to_acc(p.skip_bias[row]) : Acc(0);
            p.skip[b * p.stride_skip_b + row * p.stride_skip_c + t * p.stride_skip_t] =
                from_acc<T>(acc[i][j] + bias);
          } else {
            const int64_t c = row - p.s.skip;
            const Acc bias = p.residual_bias ? to_acc(p.residual_bias[c]) : Acc(0);
            const Acc xv = to_acc(p.x[b * p.stride_x_b + c * p.stride_x_c + t * p.stride_x_t]);
            p.x_next[b * p.stride_x_next_b + c * p.stride_x_next_c + t * p.stride_x_next_t] =
                from_acc<T>(acc[i][j] + bias + xv);
          }
        }
      }
    }
    // the next batch row rewrites z_bias and a_tile
    __syncthreads();
  }
}

template <typename T>
struct FwdFn {
  static pyr_status run(const pyr_wavenet_layer_params* p) {
    using Acc = typename AccOf<T>::type;
    FwdArgs<T> a;
    a.s = sizes_of(p);
    a.x = static_cast<const T*>(p->x);
    a.stride_x_b = p->stride_x_b;
    a.stride_x_c = p->stride_x_c;
    a.stride_x_t = p->stride_x_t;
    a.conv_weight = static_cast<const T*>(p->conv_weight);
    a.conv_bias = static_cast<const T*>(p->conv_bias);
    a.residual_weight = static_cast<const T*>(p->residual_weight);
    a.residual_bias = static_cast<const T*>(p->residual_bias);
    a.skip_weight = static_cast<const T*>(p->skip_weight);
    a.skip_bias = static_cast<const T*>(p->skip_bias);
    a.local_cond = static_cast<const T*>(p->local_cond);
    a.stride_local_b = p->stride_local_b;
    a.stride_local_c = p->stride_local_c;
    a.stride_local_t = p->stride_local_t;
    a.local_weight = static_cast<const T*>(p->local_weight);
    a.global_cond = static_cast<const T*>(p->global_cond);
    a.stride_global_b = p->stride_global_b;
    a.stride_global_c = p->stride_global_c;
    a.global_weight = static_cast<const T*>(p->global_weight);
    a.x_next = static_cast<T*>(p->x_next);
    a.stride_x_next_b = p->stride_x_next_b;
    a.stride_x_next_c = p->stride_x_next_c;
    a.stride_x_next_t = p->stride_x_next_t;
    a.skip = static_cast<T*>(p->skip);
    a.stride_skip_b = p->stride_skip_b;
    a.stride_skip_c = p->stride_skip_c;
    a.stride_skip_t = p->stride_skip_t;
    a.gate_input = static_cast<T*>(p->gate_input);

    // a's tile grows with G; past the default 48 KiB the kernel opts in to what the device has.
    const size_t smem = fwd_smem_bytes<Acc>(p->gate_channels);
    if (smem > 48 * 1024) {
      int device = 0;
      int limit = 0;
      if (cudaGetDevice(&device) != cudaSuccess ||
          cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
              cudaSuccess)
        return PYR_ERROR_CUDA;
      if (smem > static_cast<size_t>(limit)) return PYR_ERROR_INVALID_SIZE;
      if (cudaFuncSetAttribute(wavenet_layer_fwd_kernel<T>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)) != cudaSuccess)
        return PYR_ERROR_CUDA;
    }
    const int64_t t_tiles = ceil_div(p->length, kTile);
    const dim3 grid(static_cast<unsigned>(t_tiles), static_cast<unsigned>(min64(p->batch, 65535)));
    wavenet_layer_fwd_kernel<T>
        <<<grid, kTileThreads, smem, static_cast<cudaStream_t>(p->stream)>>>(a);
    return pyr_cuda::launch_status();
  }
};

// da = [W_s; W_r]^T [dskip; dx_next] per batch row and tile of time, and in the epilogue the
// gate's derivative from the saved z: dz (2G rows) and a (G rows) into the workspace, each only
// where its pointer is given. Rows are gate channels; the reduction runs over [skip; residual].
template <typename T>
struct GateBwd {
  using Acc = typename AccOf<T>::type;
  // W_s and W_r are (S, G) and (R, G): contiguous along the gate channels, the rows here
  static constexpr bool kARFast = false;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch, G, length, S + R
  int64_t skip;
  const T* skip_weight;
  const T* residual_weight;
  const T* dskip;
  int64_t stride_dskip_b, stride_dskip_c, stride_dskip_t;
  const T* dx_next;
  int64_t stride_dx_next_b, stride_dx_next_c, stride_dx_next_t;
  const T* z;  // (B, 2G, T) contiguous
  Acc* dz;     // (B, 2G, T), or NULL
  Acc* a;      // (B, G, T), or NULL

  struct Loader {
    const T* skip_weight;
    const T* residual_weight;
    int64_t m0, gate, skip, n0, length;
    const T* dskip;  // dskip[b]
    int64_t dskip_c, dskip_t;
    const T* dx_next;  // dx_next[b]
    int64_t dx_next_c, dx_next_t;
    __device__ Acc a(int m, int64_t r) const {
      const int64_t ch = m0 + m;
      if (ch >= gate) return Acc(0);
      if (r < skip) return to_acc(skip_weight[r * gate + ch]);
      return to_acc(residual_weight[(r - skip) * gate + ch]);
    }
    __device__ Acc b(int64_t r, int n) const {
      const int64_t t = n0 + n;
      if (t >= length) return Acc(0);
      if (r < skip) return to_acc(dskip[r * dskip_c + t * dskip_t]);
      return to_acc(dx_next[(r - skip) * dx_next_c + t * dx_next_t]);
    }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    return Loader{skip_weight,
                  residual_weight,
                  m0,
                  rows,
                  skip,
                  n0,
                  cols,
                  dskip + job * stride_dskip_b,
                  stride_dskip_c,
                  stride_dskip_t,
                  dx_next + job * stride_dx_next_b,
                  stride_dx_next_c,
                  stride_dx_next_t};
  }

  __device__ void store(int64_t job, int64_t ch, int64_t t, Acc da) const {
    const int64_t gate = rows;
    const int64_t length = cols;
    const int64_t f = (job * 2 * gate + ch) * length + t;
    const int64_t g = f + gate * length;
    const Acc th = gate_tanh(to_acc(z[f]));
    const Acc sg = gate_sigmoid(to_acc(z[g]));
    if (dz) {
      dz[f] = da * sg * (Acc(1) - th * th);
      dz[g] = da * th * sg * (Acc(1) - sg);
    }
    if (a) a[(job * gate + ch) * length + t] = th * sg;
  }
};

// [dW_s; dW_r | db_s; db_r] = sum over (batch row, time) of [dskip; dx_next] times [a | 1]:
// column c < weight_cols is gate channel c, column weight_cols the biases (when asked for).
template <typename T>
struct OutBwdWeight : SplitShape {
  using Acc = typename AccOf<T>::type;
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = true;
  // SplitShape: jobs = 1, rows = S + R, cols = weight_cols (+ 1), outer = batch, inner = length
  int64_t skip, gate, weight_cols, length;
  const T* dskip;
  int64_t stride_dskip_b, stride_dskip_c, stride_dskip_t;
  const T* dx_next;
  int64_t stride_dx_next_b, stride_dx_next_c, stride_dx_next_t;
  const Acc* a;  // (B, G, T) contiguous
  T* dskip_weight;
  T* dresidual_weight;
  T* dskip_bias;
  T* dresidual_bias;

  struct Loader {
    int64_t m0, rows, skip;
    const T* dskip;  // dskip[b]
    int64_t dskip_c, dskip_t;
    const T* dx_next;  // dx_next[b]
    int64_t dx_next_c, dx_next_t;
    const Acc* act;  // a[b]
    int64_t length, c0, weight_cols, cols;
    __device__ Acc a(int m, int64_t t) const {
      const int64_t row = m0 + m;
      if (row >= rows) return Acc(0);
      if (row < skip) return to_acc(dskip[row * dskip_c + t * dskip_t]);
      return to_acc(dx_next[(row - skip) * dx_next_c + t * dx_next_t]);
    }
    __device__ Acc b(int64_t t, int n) const {
      const int64_t c = c0 + n;
      if (c < weight_cols) return act[c * length + t];
      return c < cols ? Acc(1) : Acc(0);
    }
  };

  __device__ Loader loader(int64_t, int64_t m0, int64_t c0, int64_t row) const {
    return Loader{m0,
                  rows,
                  skip,
                  dskip + row * stride_dskip_b,
                  stride_dskip_c,
                  stride_dskip_t,
                  dx_next + row * stride_dx_next_b,
                  stride_dx_next_c,
                  stride_dx_next_t,
                  a ? a + row * gate * length : nullptr,
                  length,
                  c0,
                  weight_cols,
                  cols};
  }

  __device__ void store(int64_t, int64_t row, int64_t c, Acc v) const {
    const bool is_skip = row < skip;
    const int64_t r = is_skip ? row : row - skip;
    if (c < weight_cols) {
      T* dw = is_skip ? dskip_weight : dresidual_weight;
      if (dw) dw[r * gate + c] = from_acc<T>(v);
    } else {
      T* db = is_skip ? dskip_bias : dresidual_bias;
      if (db) db[r] = from_acc<T>(v);
    }
  }
};

// dW_local = sum over (batch row, time) of dz (2G) times c_local (C_local).
template <typename T>
struct LocalBwdWeight : SplitShape {
  using Acc = typename AccOf<T>::type;
  static constexpr bool kARFast = true;
  static constexpr bool kBRFast = true;
  // SplitShape: jobs = 1, rows = 2G, cols = C_local, outer = batch, inner = length
  int64_t length;
  const Acc* dz;  // (B, 2G, T) contiguous
  const T* local_cond;
  int64_t stride_local_b, stride_local_c, stride_local_t;
  T* dlocal_weight;  // (2G, C_local)

  struct Loader {
    const Acc* dz;  // dz[b, m0]
    int64_t dz_rows, length;
    const T* local_cond;  // c_local[b, c0]
    int64_t local_c, local_t, local_cols;
    __device__ Acc a(int m, int64_t t) const { return m < dz_rows ? dz[m * length + t] : Acc(0); }
    __device__ Acc b(int64_t t, int n) const {
      return n < local_cols ? to_acc(local_cond[n * local_c + t * local_t]) : Acc(0);
    }
  };

  __device__ Loader loader(int64_t, int64_t m0, int64_t c0, int64_t row) const {
    return Loader{dz + (row * rows + m0) * length,
                  rows - m0,
                  length,
                  local_cond + row * stride_local_b + c0 * stride_local_c,
                  stride_local_c,
                  stride_local_t,
                  cols - c0};
  }

  __device__ void store(int64_t, int64_t m, int64_t c, Acc v) const {
    dlocal_weight[m * cols + c] = from_acc<T>(v);
  }
};

// dc_local = W_local^T dz per batch row: rows are c_local's channels, the reduction runs over
// z's 2G rows.
template <typename T>
struct LocalBwdData {
  using Acc = typename AccOf<T>::type;
  // W_local is (2G, C_local): contiguous along the rows here; dz along time
  static constexpr bool kARFast = false;
  static constexpr bool kBRFast = false;
  int64_t jobs, rows, cols, depth;  // batch, C_local, length, 2G
  const T* local_weight;
  const Acc* dz;
  T* dlocal_cond;
  int64_t stride_dlocal_b, stride_dlocal_c, stride_dlocal_t;

  struct Loader {
    const T* w;
    int64_t m0, local;
    const Acc* dz;  // dz[b]
    int64_t n0, length;
    __device__ Acc a(int m, int64_t r) const {
      return m0 + m < local ? to_acc(w[r * local + m0 + m]) : Acc(0);
    }
    __device__ Acc b(int64_t r, int n) const {
      return n0 + n < length ? dz[r * length + n0 + n] : Acc(0);
    }
  };

  __device__ Loader loader(int64_t job, int64_t m0, int64_t n0) const {
    return Loader{local_weight, m0, rows, dz + job * depth * cols, n0, cols};
  }

  __device__ void store(int64_t job, int64_t c, int64_t t, Acc v) const {
    dlocal_cond[job * stride_dlocal_b + c * stride_dlocal_c + t * stride_dlocal_t] = from_acc<T>(v);
  }
};

// dz_sum[row] = sum over time of dz[row] for the batch * 2G rows of dz: one block per row
// (looping), a strided sum per thread, then a tree in shared memory.
template <typename Acc>
__global__ void __launch_bounds__(256)
    wavenet_layer_bwd_kernel_time_sum(const Acc* dz, int64_t rows, int64_t length, Acc* dz_sum) {
  __shared__ Acc part[256];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    Acc sum = Acc(0);
    for (int64_t t = threadIdx.x; t < length; t += 256) sum += dz[row * length + t];
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int half = 128; half > 0; half /= 2) {
      if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) dz_sum[row] = part[0];
    __syncthreads();
  }
}

// The global conditioning's gradients from dz summed over time (B, 2G), one thread per output:
//   dc_global[b, c] = sum_o W_global[o, c] dz_sum[b, o]   (e < B C_global),
//   dW_global[o, c] = sum_b dz_sum[b, o] c_global[b, c]   (the next 2G C_global of e).
template <typename T>
__global__ void __launch_bounds__(256)
    wavenet_layer_bwd_kernel_global(const typename AccOf<T>::type* dz_sum, int64_t batch,
                                    int64_t gg, int64_t global, const T* global_cond,
                                    int64_t stride_global_b, int64_t stride_global_c,
                                    const T* global_weight, T* dglobal_cond, T* dglobal_weight) {
  using Acc = typename AccOf<T>::type;
  const int64_t n_cond = dglobal_cond ? batch * global : 0;
  const int64_t n_weight = dglobal_weight ? gg * global : 0;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < n_cond + n_weight; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Acc sum = Acc(0);
    if (e < n_cond) {
      const int64_t b = e / global;
      const int64_t c = e - b * global;
      for (int64_t o = 0; o < gg; ++o)
        sum += to_acc(global_weight[o * global + c]) * dz_sum[b * gg + o];
      dglobal_cond[e] = from_acc<T>(sum);
    } else {
      const int64_t o = (e - n_cond) / global;
      const int64_t c = (e - n_cond) - o * global;
      for (int64_t b = 0; b < batch; ++b)
        sum += dz_sum[b * gg + o] * to_acc(global_cond[b * stride_global_b + c * stride_global_c]);
      dglobal_weight[e - n_cond] = from_acc<T>(sum);
    }
  }
}

// Which launches the backward makes, from the gradients asked for.
struct BwdPlan {
  bool conv_data, conv_weight, local_data, local_weight, global, out_weight, out_any;
  bool need_dz() const { return conv_data || conv_weight || local_data || local_weight || global; }
  bool need_gate() const { return need_dz() || out_weight; }
};

BwdPlan plan_of(const pyr_wavenet_layer_bwd_params* p) {
  BwdPlan b;
  b.conv_data = p->dx != nullptr;
  b.conv_weight = p->dconv_weight || p->dconv_bias;
  b.local_data = p->local_channels > 0 && p->dlocal_cond;
  b.local_weight = p->local_channels > 0 && p->dlocal_weight;
  b.global = p->global_channels > 0 && (p->dglobal_cond || p->dglobal_weight);
  b.out_weight = p->dskip_weight || p->dresidual_weight;
  b.out_any = b.out_weight || p->dskip_bias || p->dresidual_bias;
  return b;
}

// The shapes of the three split reductions (cols < 1 where one is not run).
SplitShape out_shape(const pyr_wavenet_layer_bwd_params* p, const BwdPlan& plan) {
  const bool bias = p->dskip_bias || p->dresidual_bias;
  return SplitShape{1, p->skip_channels + p->residual_channels,
                    (plan.out_weight ? p->gate_channels : 0) + (bias ? 1 : 0), p->batch, p->length};
}

SplitShape local_shape(const pyr_wavenet_layer_bwd_params* p, const BwdPlan& plan) {
  return SplitShape{1, 2 * p->gate_channels, plan.local_weight ? p->local_channels : 0, p->batch,
                    p->length};
}

SplitShape conv_shape(const pyr_wavenet_layer_bwd_params* p, const BwdPlan& plan) {
  (void)plan;
  return SplitShape{
      1, 2 * p->gate_channels,
      (p->dconv_weight ? p->residual_channels * p->kernel_size : 0) + (p->dconv_bias ? 1 : 0),
      p->batch, p->length};
}

// The workspace, in elements of the accumulation type, in this order: dz (B, 2G, T), a (B, G,
// T), dz summed over time (B, 2G), and the partial sums of the largest split reduction (they
// run one after another on the stream, so they share it).
struct Workspace {
  int64_t dz, a, dz_sum, partial;
  int64_t total() const { return dz + a + dz_sum + partial; }
};

Workspace workspace_of(const pyr_wavenet_layer_bwd_params* p) {
  const BwdPlan plan = plan_of(p);
  Workspace w{0, 0, 0, 0};
  const int64_t rows = p->batch * p->length;
  if (plan.need_dz()) w.dz = rows * 2 * p->gate_channels;
  if (plan.out_weight) w.a = rows * p->gate_channels;
  if (plan.global) w.dz_sum = p->batch * 2 * p->gate_channels;
  const SplitShape splits[] = {out_shape(p, plan), local_shape(p, plan), conv_shape(p, plan)};
  for (const SplitShape& s : splits) {
    if (s.cols > 0 && s.partial_elements() > w.partial) w.partial = s.partial_elements();
  }
  return w;
}

template <typename T>
struct BwdFn {
  static pyr_status run(const pyr_wavenet_layer_bwd_params* p) {
    using Acc = typename AccOf<T>::type;
    const cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    const BwdPlan plan = plan_of(p);
    const Workspace sizes = workspace_of(p);
    Acc* ws = static_cast<Acc*>(p->workspace);
    Acc* dz = plan.need_dz() ? ws : nullptr;
    Acc* a = plan.out_weight ? ws + sizes.dz : nullptr;
    Acc* dz_sum = ws + sizes.dz + sizes.a;
    Acc* partial = dz_sum + sizes.dz_sum;
    const int64_t gate = p->gate_channels;
    const int64_t gg = 2 * gate;
    const int64_t length = p->length;
    pyr_status status = PYR_SUCCESS;

    if (plan.need_gate()) {
      GateBwd<T> g;
      g.jobs = p->batch;
      g.rows = gate;
      g.cols = length;
      g.depth = p->skip_channels + p->residual_channels;
      g.skip = p->skip_channels;
      g.skip_weight = static_cast<const T*>(p->skip_weight);
      g.residual_weight = static_cast<const T*>(p->residual_weight);
      g.dskip = static_cast<const T*>(p->dskip);
      g.stride_dskip_b = p->stride_dskip_b;
      g.stride_dskip_c = p->stride_dskip_c;
      g.stride_dskip_t = p->stride_dskip_t;
      g.dx_next = static_cast<const T*>(p->dx_next);
      g.stride_dx_next_b = p->stride_dx_next_b;
      g.stride_dx_next_c = p->stride_dx_next_c;
      g.stride_dx_next_t = p->stride_dx_next_t;
      g.z = static_cast<const T*>(p->gate_input);
      g.dz = dz;
      g.a = a;
      if ((status = pyr_cuda::launch_tile_gemm(g, stream)) != PYR_SUCCESS) return status;
    }

    if (plan.out_any) {
      OutBwdWeight<T> o;
      static_cast<SplitShape&>(o) = out_shape(p, plan);
      o.skip = p->skip_channels;
      o.gate = gate;
      o.weight_cols = plan.out_weight ? gate : 0;
      o.length = length;
      o.dskip = static_cast<const T*>(p->dskip);
      o.stride_dskip_b = p->stride_dskip_b;
      o.stride_dskip_c = p->stride_dskip_c;
      o.stride_dskip_t = p->stride_dskip_t;
      o.dx_next = static_cast<const T*>(p->dx_next);
      o.stride_dx_next_b = p->stride_dx_next_b;
      o.stride_dx_next_c = p->stride_dx_next_c;
      o.stride_dx_next_t = p->stride_dx_next_t;
      o.a = a;
      o.dskip_weight = static_cast<T*>(p->dskip_weight);
      o.dresidual_weight = static_cast<T*>(p->dresidual_weight);
      o.dskip_bias = static_cast<T*>(p->dskip_bias);
      o.dresidual_bias = static_cast<T*>(p->dresidual_bias);
      if ((status = pyr_cuda::launch_split_gemm(o, partial, stream)) != PYR_SUCCESS) return status;
    }

    if (plan.local_weight) {
      LocalBwdWeight<T> l;
      static_cast<SplitShape&>(l) = local_shape(p, plan);
      l.length = length;
      l.dz = dz;
      l.local_cond = static_cast<const T*>(p->local_cond);
      l.stride_local_b = p->stride_local_b;
      l.stride_local_c = p->stride_local_c;
      l.stride_local_t = p->stride_local_t;
      l.dlocal_weight = static_cast<T*>(p->dlocal_weight);
      if ((status = pyr_cuda::launch_split_gemm(l, partial, stream)) != PYR_SUCCESS) return status;
    }

    if (plan.local_data) {
      LocalBwdData<T> l;
      l.jobs = p->batch;
      l.rows = p->local_channels;
      l.cols = length;
      l.depth = gg;
      l.local_weight = static_cast<const T*>(p->local_weight);
      l.dz = dz;
      l.dlocal_cond = static_cast<T*>(p->dlocal_cond);
      l.stride_dlocal_b = p->stride_dlocal_b;
      l.stride_dlocal_c = p->stride_dlocal_c;
      l.stride_dlocal_t = p->stride_dlocal_t;
      if ((status = pyr_cuda::launch_tile_gemm(l, stream)) != PYR_SUCCESS) return status;
    }

    if (plan.global) {
      const int64_t rows = p->batch * gg;
      wavenet_layer_bwd_kernel_time_sum<Acc>
          <<<static_cast<unsigned>(min64(rows, int64_t{1} << 16)), 256, 0, stream>>>(
              dz, rows, length, dz_sum);
      if ((status = pyr_cuda::launch_status()) != PYR_SUCCESS) return status;
      const int64_t outputs = p->batch * p->global_channels + gg * p->global_channels;
      wavenet_layer_bwd_kernel_global<T>
          <<<static_cast<unsigned>(min64(ceil_div(outputs, 256), int64_t{1} << 16)), 256, 0,
             stream>>>(dz_sum, p->batch, gg, p->global_channels,
                       static_cast<const T*>(p->global_cond), p->stride_global_b,
                       p->stride_global_c, static_cast<const T*>(p->global_weight),
                       static_cast<T*>(p->dglobal_cond), static_cast<T*>(p->dglobal_weight));
      if ((status = pyr_cuda::launch_status()) != PYR_SUCCESS) return status;
    }

    if (plan.conv_data) {
      // dx = the causal convolution's input gradient of dz, plus dx_next (the residual path)
      CausalBwdData<T, Acc> c;
      c.jobs = p->batch;
      c.rows = p->residual_channels;
      c.cols = length;
      c.depth = gg * p->kernel_size;
      c.groups = 1;
      c.ci = p->residual_channels;
      c.co = gg;
      c.length = length;
      c.dilation = p->dilation;
      c.taps = static_cast<uint32_t>(p->kernel_size);
      c.dy = dz;
      c.stride_dy_b = gg * length;
      c.stride_dy_c = length;
      c.stride_dy_t = 1;
      c.weight = static_cast<const T*>(p->conv_weight);
      c.add = static_cast<const T*>(p->dx_next);
      c.stride_add_b = p->stride_dx_next_b;
      c.stride_add_c = p->stride_dx_next_c;
      c.stride_add_t = p->stride_dx_next_t;
      c.dx = static_cast<T*>(p->dx);
      c.stride_dx_b = p->stride_dx_b;
      c.stride_dx_c = p->stride_dx_c;
      c.stride_dx_t = p->stride_dx_t;
      if ((status = pyr_cuda::launch_tile_gemm(c, stream)) != PYR_SUCCESS) return status;
    }

    if (plan.conv_weight) {
      CausalBwdWeight<T, Acc> c;
      static_cast<SplitShape&>(c) = conv_shape(p, plan);
      c.ci = p->residual_channels;
      c.co = gg;
      c.weight_cols = p->dconv_weight ? p->residual_channels * p->kernel_size : 0;
      c.length = length;
      c.dilation = p->dilation;
      c.taps = static_cast<uint32_t>(p->kernel_size);
      c.x = static_cast<const T*>(p->x);
      c.stride_x_b = p->stride_x_b;
      c.stride_x_c = p->stride_x_c;
      c.stride_x_t = p->stride_x_t;
      c.dy = dz;
      c.stride_dy_b = gg * length;
      c.stride_dy_c = length;
      c.stride_dy_t = 1;
      c.dweight = static_cast<T*>(p->dconv_weight);
      c.dbias = static_cast<T*>(p->dconv_bias);
      if ((status = pyr_cuda::launch_split_gemm(c, partial, stream)) != PYR_SUCCESS) return status;
    }
    return PYR_SUCCESS;
  }
};

bool dtype_ok(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 || dtype == PYR_FLOAT16 ||
         dtype == PYR_BFLOAT16;
}

// The checks of cpu/wavenet_layer.cpp, and those of the kernels here: the (channel, tap) rows
// of the convolution are decoded in 32 bits, and time tiles must fit the grid.
template <typename P>
pyr_status check_shape(const P* p) {
  using pyr_cuda::kMaxElements;
  using pyr_cuda::product_fits;
  if (!dtype_ok(p->dtype)) return PYR_ERROR_UNSUPPORTED_DTYPE;
  const int64_t positive[] = {p->batch,  p->residual_channels, p->gate_channels, p->skip_channels,
                              p->length, p->kernel_size};
  for (int64_t size : positive)
    if (size < 1 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  const int64_t optional[] = {p->local_channels, p->global_channels};
  for (int64_t size : optional)
    if (size < 0 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  if (p->dilation < 1) return PYR_ERROR_INVALID_ARGUMENT;
  const int64_t gg = 2 * p->gate_channels;
  const int64_t channels = p->residual_channels + p->skip_channels + gg + p->local_channels;
  if (!product_fits(p->kernel_size - 1, p->dilation) ||
      !product_fits(p->residual_channels, p->kernel_size) ||
      p->residual_channels * p->kernel_size + 1 > INT32_MAX || !product_fits(gg, p->kernel_size) ||
      gg * p->kernel_size > INT32_MAX ||
      !product_fits(gg, p->residual_channels * p->kernel_size + p->local_channels) ||
      !product_fits(gg, p->global_channels) || !product_fits(p->batch, p->global_channels) ||
      !product_fits(p->batch, p->length) || !product_fits(p->batch * p->length, channels) ||
      p->length > int64_t{INT32_MAX} * kTile)
    return PYR_ERROR_INVALID_SIZE;
  return PYR_SUCCESS;
}

// The layouts of the inputs both passes may read: x and the conditioning, those given (the
// rules of cpu/wavenet_layer.cpp).
template <typename P>
bool inputs_strides_ok(const P* p) {
  using pyr_cuda::strides_ok;
  return (!p->x || strides_ok({{p->batch, p->stride_x_b},
                               {p->residual_channels, p->stride_x_c},
                               {p->length, p->stride_x_t}})) &&
         (!p->local_cond || strides_ok({{p->batch, p->stride_local_b},
                                        {p->local_channels, p->stride_local_c},
                                        {p->length, p->stride_local_t}})) &&
         (!p->global_cond ||
          strides_ok({{p->batch, p->stride_global_b}, {p->global_channels, p->stride_global_c}}));
}

// The conditioning pointers are all given with channels > 0, or all NULL with channels 0.
template <typename P>
bool conditioning_consistent(const P* p) {
  const bool local = p->local_cond && p->local_weight, global = p->global_cond && p->global_weight;
  const bool no_local = !p->local_cond && !p->local_weight;
  const bool no_global = !p->global_cond && !p->global_weight;
  return (local ? p->local_channels > 0 : no_local && p->local_channels == 0) &&
         (global ? p->global_channels > 0 : no_global && p->global_channels == 0);
}

pyr_status check_fwd(const pyr_wavenet_layer_params* p) {
  if (!p || !p->x || !p->conv_weight || !p->residual_weight || !p->skip_weight || !p->x_next ||
      !p->skip)
    return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  if (!conditioning_consistent(p)) return PYR_ERROR_NULL_POINTER;
  if (!inputs_strides_ok(p) ||
      !pyr_cuda::strides_ok({{p->batch, p->stride_x_next_b},
                             {p->residual_channels, p->stride_x_next_c},
                             {p->length, p->stride_x_next_t}},
                            true) ||
      !pyr_cuda::strides_ok({{p->batch, p->stride_skip_b},
                             {p->skip_channels, p->stride_skip_c},
                             {p->length, p->stride_skip_t}},
                            true))
    return PYR_ERROR_INVALID_STRIDE;
  if (p->x_next == p->x || p->skip == p->x || p->skip == p->x_next)
    return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_wavenet_layer_bwd_params* p) {
  if (!p || !p->conv_weight || !p->residual_weight || !p->skip_weight || !p->gate_input ||
      !p->dx_next || !p->dskip || (p->dconv_weight && !p->x))
    return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  if (!conditioning_consistent(p)) return PYR_ERROR_NULL_POINTER;
  using pyr_cuda::strides_ok;
  if (!inputs_strides_ok(p) ||
      !strides_ok({{p->batch, p->stride_dx_next_b},
                   {p->residual_channels, p->stride_dx_next_c},
                   {p->length, p->stride_dx_next_t}}) ||
      !strides_ok({{p->batch, p->stride_dskip_b},
                   {p->skip_channels, p->stride_dskip_c},
                   {p->length, p->stride_dskip_t}}) ||
      (p->dx && !strides_ok({{p->batch, p->stride_dx_b},
                             {p->residual_channels, p->stride_dx_c},
                             {p->length, p->stride_dx_t}},
                            true)) ||
      (p->dlocal_cond && !strides_ok({{p->batch, p->stride_dlocal_b},
                                      {p->local_channels, p->stride_dlocal_c},
                                      {p->length, p->stride_dlocal_t}},
                                     true)))
    return PYR_ERROR_INVALID_STRIDE;
  const int64_t need = workspace_of(p).total();
  if (need > 0) {
    if (!p->workspace) return PYR_ERROR_NULL_POINTER;
    if (p->workspace_bytes < static_cast<size_t>(need) * pyr_cuda::acc_bytes(p->dtype))
      return PYR_ERROR_INVALID_SIZE;
    if (reinterpret_cast<uintptr_t>(p->workspace) % pyr_cuda::acc_bytes(p->dtype))
      return PYR_ERROR_INVALID_ARGUMENT;
  }
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_wavenet_layer_fwd_cuda(const pyr_wavenet_layer_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return pyr_cuda::dispatch_dtype<FwdFn>(p);
}

extern "C" size_t pyr_wavenet_layer_bwd_cuda_workspace_bytes(
    const pyr_wavenet_layer_bwd_params* p) {
  if (!p || check_shape(p) != PYR_SUCCESS) return 0;
  return static_cast<size_t>(workspace_of(p).total()) * pyr_cuda::acc_bytes(p->dtype);
}

extern "C" pyr_status pyr_wavenet_layer_bwd_cuda(const pyr_wavenet_layer_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  return pyr_cuda::dispatch_dtype<BwdFn>(p);
}
