// Causal dilated 1-D convolution on the CPU: forward and backward.
//
// The work is split into items of (batch row, group, tile of time steps), shared out over the
// threads. For one item, the K taps of the input are shifted windows of x; they are gathered,
// with zeros before t = 0, into one (in_channels / groups * K, tile) block whose row i * K + k
// is channel i shifted by tap k. That block is the input of a single GEMM with the weight read
// in place as a (out_channels / groups, in_channels / groups * K) matrix (nn.Conv1d's layout),
// so the channel mixing of every tap runs in one register-blocked product, and the padded input
// is never built: only a tile of it, in cache. The gather also absorbs any strides of x.
//
// The backward runs the same items. dx is the anti-causal convolution of dy with the weight
// transposed (the taps look forward in time), one GEMM per item with the taps of dy gathered
// the same way. dW = dy x^T over the tile, accumulated into per-thread partial sums that are
// added up once at the end; db is summed alongside.
//
// The depthwise convolution (one input and one output channel per group) has no channel mixing
// to block, so it runs as a direct loop over time per (batch row, channel), vectorised along t.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "cpu/common.h"
#include "cpu/gemm.h"
#include "cpu/taps.h"
#include "pyreversible/kernels.h"

namespace {

using pyr_cpu::Buffer;
using pyr_cpu::dispatch;
using pyr_cpu::drop_taps_past_end;
using pyr_cpu::gather_taps;
using pyr_cpu::gemm;
using pyr_cpu::Gemm;
using pyr_cpu::gemm_scratch_size;
using pyr_cpu::kLanes;
using pyr_cpu::kMaxElements;
using pyr_cpu::kNR;
using pyr_cpu::leading_dim;
using pyr_cpu::load_vec;
using pyr_cpu::product_fits;
using pyr_cpu::row_sum;
using pyr_cpu::strides_ok;
using pyr_cpu::thread_count;
using pyr_cpu::time_tile;
using pyr_cpu::transpose;

// Bytes of one thread's tile buffers: about its share of L2.
constexpr int64_t kTileBudget = 256 * 1024;

// The sizes of one convolution, with the per-group channel counts worked out once.
struct Shape {
  int64_t batch, in_channels, out_channels, length, taps, dilation, groups;
  // input and output channels per group
  int64_t ci, co;

  // How far back in time tap k reads: tap K - 1 is the current step.
  int64_t shift(int64_t k) const { return (taps - 1 - k) * dilation; }
};

template <typename P>
Shape shape_of(const P* p) {
  return Shape{p->batch,
               p->in_channels,
               p->out_channels,
               p->length,
               p->kernel_size,
               p->dilation,
               p->groups,
               p->in_channels / p->groups,
               p->out_channels / p->groups};
}

template <typename P>
pyr_status check_shape(const P* p) {
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT64) return PYR_ERROR_UNSUPPORTED_DTYPE;
  for (int64_t size : {p->batch, p->in_channels, p->out_channels, p->length, p->kernel_size})
    if (size < 1 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  if (p->dilation < 1 || p->groups < 1) return PYR_ERROR_INVALID_ARGUMENT;
  if (p->in_channels % p->groups || p->out_channels % p->groups) return PYR_ERROR_INVALID_ARGUMENT;
  // the furthest reach back in time, and the weight and the gathered tiles, must be indexable.
  const int64_t ci = p->in_channels / p->groups;
  if (!product_fits(p->kernel_size - 1, p->dilation) ||
      !product_fits(p->out_channels, ci * p->kernel_size) ||
      !product_fits(std::max(ci, p->out_channels / p->groups) * p->kernel_size, 1024))
    return PYR_ERROR_INVALID_SIZE;
  return PYR_SUCCESS;
}

// dst[r, n] (strides sr, sn) = src[r * ld + n] for a rows by nt block: a tile computed in a
// buffer going out to a tensor whose time steps are not contiguous.
template <typename T>
void scatter_tile(const T* src, int64_t ld, int64_t rows, int64_t nt, T* dst, int64_t sr,
                  int64_t sn) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < nt; ++n) dst[r * sr + n * sn] = src[r * ld + n];
}

template <typename T>
void conv_fwd(const pyr_causal_conv1d_params* p) {
  const Shape s = shape_of(p);
  const int threads_wanted = thread_count(p->num_threads);
  const int64_t rows = s.ci * s.taps;
  const int64_t tile =
      time_tile<T>(rows, s.length, s.batch * s.groups, kTileBudget, threads_wanted);
  const int64_t tiles = (s.length + tile - 1) / tile;
  const int64_t items = s.batch * s.groups * tiles;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, items));
  const int64_t ld = leading_dim<T>(tile);
  // y is written in place when its time steps are contiguous, through a buffer otherwise.
  const bool direct = p->stride_y_t == 1;
  const int64_t per_thread = rows * ld + (direct ? 0 : s.co * ld) + gemm_scratch_size<T>();
  std::vector<T> work(static_cast<size_t>(per_thread * threads));

  const T* x = static_cast<const T*>(p->x);
  const T* w = static_cast<const T*>(p->weight);
  const T* bias = static_cast<const T*>(p->bias);
  T* y = static_cast<T*>(p->y);

#pragma omp parallel num_threads(threads)
  {
    T* taps = work.data() + omp_get_thread_num() * per_thread;
    T* out = taps + rows * ld;
    T* scratch = out + (direct ? 0 : s.co * ld);

#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / (s.groups * tiles), g = item / tiles % s.groups;
      const int64_t t0 = item % tiles * tile, nt = std::min(tile, s.length - t0);
      gather_taps(x + b * p->stride_x_b + g * s.ci * p->stride_x_c, p->stride_x_c, p->stride_x_t,
                  s.ci, s, t0, nt, -1, taps, ld);

      T* yt = y + b * p->stride_y_b + g * s.co * p->stride_y_c + t0 * p->stride_y_t;
      T* c = direct ? yt : out;
      const int64_t ldc = direct ? p->stride_y_c : ld;
      const T* bias_g = bias ? bias + g * s.co : nullptr;
      Gemm<T> gm{s.co, nt, rows, w + g * s.co * rows, rows, 1, taps, ld, c, ldc, bias_g, false};
      gemm(gm, scratch);
      if (!direct) scatter_tile(out, ld, s.co, nt, yt, p->stride_y_c, p->stride_y_t);
    }
  }
}

// Time steps per chunk of the depthwise loops: the chunk's accumulators stay in L1.
constexpr int64_t kChunk = 2048;

// acc[n] += w * src[(start + n) * st] for the n in [0, nt) whose time start + n is inside
// [0, length): one tap of a depthwise convolution over a chunk. With `padding`, the other n get
// w * 0, as the zeros of a padded input would give them: a NaN or infinite w then propagates
// as it does in the reference (the forward); without, they get nothing (dx, whose taps read
// past the end of dy, which the reference never pads).
template <typename T>
void axpy_tap(T w, const T* src, int64_t st, int64_t start, int64_t nt, int64_t length,
              bool padding, T* acc) {
  const int64_t lo = std::min(nt, std::max<int64_t>(0, -start));
  const int64_t hi = std::max(lo, std::min(nt, length - start));
  if (padding) {
    for (int64_t n = 0; n < lo; ++n) acc[n] += w * T(0);
    for (int64_t n = hi; n < nt; ++n) acc[n] += w * T(0);
  }
  if (st == 1) {
    const T* in = src + start;
    for (int64_t n = lo; n < hi; ++n) acc[n] += w * in[n];
  } else {
    for (int64_t n = lo; n < hi; ++n) acc[n] += w * src[(start + n) * st];
  }
}

// sum_n a[n * sa] * b[n * sb]; with unit strides in vector lanes (a reduction the compiler
// would not reorder on its own).
template <typename T>
T dot(const T* a, int64_t sa, const T* b, int64_t sb, int64_t n) {
  T sum = 0;
  int64_t j = 0;
  if (sa == 1 && sb == 1) {
    typedef typename pyr_cpu::Vec<T>::type V;
    constexpr int L = kLanes<T>;
    V acc0{}, acc1{};
    for (; j + 2 * L <= n; j += 2 * L) {
      acc0 += load_vec(a + j) * load_vec(b + j);
      acc1 += load_vec(a + j + L) * load_vec(b + j + L);
    }
    acc0 += acc1;
    for (int l = 0; l < L; ++l) sum += acc0[l];
  }
  for (; j < n; ++j) sum += a[j * sa] * b[j * sb];
  return sum;
}

template <typename T>
void depthwise_fwd(const pyr_causal_conv1d_params* p) {
  const Shape s = shape_of(p);
  const int64_t rows = s.batch * s.in_channels;
  const int threads = static_cast<int>(std::min<int64_t>(thread_count(p->num_threads), rows));
  const T* x = static_cast<const T*>(p->x);
  const T* w = static_cast<const T*>(p->weight);
  const T* bias = static_cast<const T*>(p->bias);
  T* y = static_cast<T*>(p->y);

#pragma omp parallel num_threads(threads)
  {
    T acc[kChunk];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / s.in_channels, c = r % s.in_channels;
      const T* xr = x + b * p->stride_x_b + c * p->stride_x_c;
      T* yr = y + b * p->stride_y_b + c * p->stride_y_c;
      for (int64_t t0 = 0; t0 < s.length; t0 += kChunk) {
        const int64_t nt = std::min(kChunk, s.length - t0);
        std::fill(acc, acc + nt, bias ? bias[c] : T(0));
        for (int64_t k = 0; k < s.taps; ++k)
          axpy_tap(w[c * s.taps + k], xr, p->stride_x_t, t0 - s.shift(k), nt, s.length, true, acc);
        for (int64_t n = 0; n < nt; ++n) yr[(t0 + n) * p->stride_y_t] = acc[n];
      }
    }
  }
}

template <typename T>
void depthwise_bwd(const pyr_causal_conv1d_bwd_params* p) {
  const Shape s = shape_of(p);
  const int threads = thread_count(p->num_threads);
  const T* x = static_cast<const T*>(p->x);
  const T* w = static_cast<const T*>(p->weight);
  const T* dy = static_cast<const T*>(p->dy);
  T* dx = static_cast<T*>(p->dx);
  T* dw = static_cast<T*>(p->dweight);
  T* db = static_cast<T*>(p->dbias);
  const int64_t sdt = p->stride_dy_t, sxt = p->stride_x_t;

#pragma omp parallel num_threads(threads)
  {
    T acc[kChunk];
    // dx: the taps read forward in time.
    if (dx) {
#pragma omp for schedule(static) nowait
      for (int64_t r = 0; r < s.batch * s.in_channels; ++r) {
        const int64_t b = r / s.in_channels, c = r % s.in_channels;
        const T* dyr = dy + b * p->stride_dy_b + c * p->stride_dy_c;
        T* dxr = dx + b * p->stride_dx_b + c * p->stride_dx_c;
        for (int64_t t0 = 0; t0 < s.length; t0 += kChunk) {
          const int64_t nt = std::min(kChunk, s.length - t0);
          std::fill(acc, acc + nt, T(0));
          for (int64_t k = 0; k < s.taps; ++k)
            axpy_tap(w[c * s.taps + k], dyr, sdt, t0 + s.shift(k), nt, s.length, false, acc);
          for (int64_t n = 0; n < nt; ++n) dxr[(t0 + n) * p->stride_dx_t] = acc[n];
        }
      }
    }

    // dW and db: per channel, reduced over the batch inside, so no partial sums are needed.
    if (dw || db) {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < s.in_channels; ++c) {
        for (int64_t k = 0; k < s.taps && dw; ++k) {
          const int64_t shift = s.shift(k);
          T sum = 0;
          const int64_t valid = std::max<int64_t>(0, s.length - shift);
          for (int64_t b = 0; b < s.batch; ++b) {
            const T* dyr = dy + b * p->stride_dy_b + c * p->stride_dy_c;
            const T* xr = x + b * p->stride_x_b + c * p->stride_x_c;
            if (valid > 0) sum += dot(dyr + shift * sdt, sdt, xr, sxt, valid);
            // the padding's zeros times dy, so that a NaN or infinite dy propagates as in the
            // reference
            for (int64_t t = 0; t < s.length - valid; ++t) sum += dyr[t * sdt] * T(0);
          }
          dw[c * s.taps + k] = sum;
        }
        if (!db) continue;
        T sum = 0;
        for (int64_t b = 0; b < s.batch; ++b) {
          const T* dyr = dy + b * p->stride_dy_b + c * p->stride_dy_c;
          for (int64_t t = 0; t < s.length; ++t) sum += dyr[t * sdt];
        }
        db[c] = sum;
      }
    }
  }
}

template <typename T>
void conv_bwd(const pyr_causal_conv1d_bwd_params* p) {
  const Shape s = shape_of(p);
  const T* x = static_cast<const T*>(p->x);
  const T* w = static_cast<const T*>(p->weight);
  const T* dy = static_cast<const T*>(p->dy);
  T* dx = static_cast<T*>(p->dx);
  T* dw = static_cast<T*>(p->dweight);
  T* db = static_cast<T*>(p->dbias);

  const int threads_wanted = thread_count(p->num_threads);
  // rows of the two gathered blocks: taps of x (for dW) and of dy (for dx)
  const int64_t rows_x = s.ci * s.taps, rows_dy = s.co * s.taps;
  const int64_t rows = std::max<int64_t>({dx ? rows_dy : 0, dw ? rows_x : 0, 1});
  const int64_t tile =
      time_tile<T>(rows, s.length, s.batch * s.groups, kTileBudget, threads_wanted);
  const int64_t tiles = (s.length + tile - 1) / tile;
  const int64_t items = s.batch * s.groups * tiles;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, items));
  const int64_t ld = leading_dim<T>(tile);
  const bool direct = p->stride_dx_t == 1;
  const int64_t weight_size = s.out_channels * rows_x;

  // dx = W^T dy needs the weight as (ci, co * K) per group: w_t[g][i][o * K + k] = W[o, i, k].
  std::vector<T> w_t(dx ? static_cast<size_t>(weight_size) : 0);
  for (int64_t g = 0; g < s.groups && dx; ++g)
    for (int64_t o = 0; o < s.co; ++o)
      for (int64_t i = 0; i < s.ci; ++i)
        for (int64_t k = 0; k < s.taps; ++k)
          w_t[(g * s.ci + i) * rows_dy + o * s.taps + k] =
              w[((g * s.co + o) * s.ci + i) * s.taps + k];

  bool finite_weight = true;
  for (int64_t j = 0; j < weight_size && dx; ++j)
    finite_weight = finite_weight && std::isfinite(w[j]);

  // per thread: the gathered taps of dy (dx) and of x (dW), dy's tile transposed (dW), a dx
  // tile when dx's time steps are not contiguous, the GEMM scratch, and the partial sums of dW
  // and db.
  const int64_t size_dy = dx ? rows_dy * ld : 0, size_x = dw ? rows_x * ld : 0;
  const int64_t size_dyt = dw ? ld * s.co : 0, size_out = dx && !direct ? s.ci * ld : 0;
  const int64_t size_dw = dw ? weight_size : 0, size_db = db ? s.out_channels : 0;
  const int64_t per_thread =
      size_dy + size_x + size_dyt + size_out + gemm_scratch_size<T>() + size_dw + size_db;
  const int64_t offset_dw = per_thread - size_dw - size_db, offset_db = per_thread - size_db;
  // zeroed: the partial sums start at zero.
  std::vector<T> work(static_cast<size_t>(per_thread * threads));

#pragma omp parallel num_threads(threads)
  {
    T* taps_dy = work.data() + omp_get_thread_num() * per_thread;
    T* taps_x = taps_dy + size_dy;
    T* dyt = taps_x + size_x;
    T* out = dyt + size_dyt;
    T* scratch = out + size_out;
    T* part_dw = taps_dy + offset_dw;
    T* part_db = taps_dy + offset_db;

#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / (s.groups * tiles), g = item / tiles % s.groups;
      const int64_t t0 = item % tiles * tile, nt = std::min(tile, s.length - t0);
      const T* dyg = dy + b * p->stride_dy_b + g * s.co * p->stride_dy_c;
      const T* xg = x ? x + b * p->stride_x_b + g * s.ci * p->stride_x_c : nullptr;

      if (dx) {
        gather_taps(dyg, p->stride_dy_c, p->stride_dy_t, s.co, s, t0, nt, 1, taps_dy, ld);
        T* dxt = dx + b * p->stride_dx_b + g * s.ci * p->stride_dx_c + t0 * p->stride_dx_t;
        T* c = direct ? dxt : out;
        const int64_t ldc = direct ? p->stride_dx_c : ld;
        const T* w_g = w_t.data() + g * s.ci * rows_dy;
        Gemm<T> gm{s.ci, nt, rows_dy, w_g, rows_dy, 1, taps_dy, ld, c, ldc, nullptr, false};
        gemm(gm, scratch);
        if (!finite_weight) drop_taps_past_end(w_g, s.ci, s.co, taps_dy, ld, s, t0, nt, c, ldc);
        if (!direct) scatter_tile(out, ld, s.ci, nt, dxt, p->stride_dx_c, p->stride_dx_t);
      }

      const T* dy_tile = dyg + t0 * p->stride_dy_t;
      const int64_t sdc = p->stride_dy_c, sdt = p->stride_dy_t;
      for (int64_t o = 0; o < s.co && db; ++o) {
        const T* row = dy_tile + o * sdc;
        T sum = 0;
        if (sdt == 1) {
          sum = row_sum(row, nt);
        } else {
          for (int64_t n = 0; n < nt; ++n) sum += row[n * sdt];
        }
        part_db[g * s.co + o] += sum;
      }

      if (dw) {
        // dy's tile transposed to (time, channel), the layout the GEMM takes its B operand in
        if (sdt == 1) {
          transpose(dy_tile, sdc, s.co, nt, dyt);
        } else {
          for (int64_t o = 0; o < s.co; ++o)
            for (int64_t n = 0; n < nt; ++n) dyt[n * s.co + o] = dy_tile[o * sdc + n * sdt];
        }
        gather_taps(xg, p->stride_x_c, p->stride_x_t, s.ci, s, t0, nt, -1, taps_x, ld);
        // part[i * K + k][o] += sum over the tile of x's tap (i, k) times dy[o]
        Gemm<T> gm{rows_x, s.co,    nt,    taps_x, ld, 1, dyt, s.co, part_dw + g * rows_x * s.co,
                   s.co,   nullptr, false, true};
        gemm(gm, scratch);
      }
    }

    // the partial sums of every thread, added into dW (o, i, k) and db.
#pragma omp for schedule(static)
    for (int64_t j = 0; j < size_dw; ++j) {
      const int64_t o = j / rows_x, r = j % rows_x, g = o / s.co;
      const int64_t src = (g * rows_x + r) * s.co + o % s.co;
      T sum = 0;
      for (int t = 0; t < threads; ++t) sum += work[t * per_thread + offset_dw + src];
      dw[j] = sum;
    }
#pragma omp for schedule(static)
    for (int64_t o = 0; o < size_db; ++o) {
      T sum = 0;
      for (int t = 0; t < threads; ++t) sum += work[t * per_thread + offset_db + o];
      db[o] = sum;
    }
  }
}

pyr_status check_fwd(const pyr_causal_conv1d_params* p) {
  if (!p || !p->x || !p->weight || !p->y) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  if (!strides_ok({{p->batch, p->stride_x_b},
                   {p->in_channels, p->stride_x_c},
                   {p->length, p->stride_x_t}}) ||
      !strides_ok(
          {{p->batch, p->stride_y_b}, {p->out_channels, p->stride_y_c}, {p->length, p->stride_y_t}},
          true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_causal_conv1d_bwd_params* p) {
  if (!p || !p->weight || !p->dy || (p->dweight && !p->x)) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
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
  return PYR_SUCCESS;
}

bool depthwise(const Shape& s) { return s.ci == 1 && s.co == 1; }

}  // namespace

extern "C" pyr_status pyr_causal_conv1d_fwd_cpu(const pyr_causal_conv1d_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  const bool dw = depthwise(shape_of(p));
  return dispatch(
      p->dtype, [&] { dw ? depthwise_fwd<float>(p) : conv_fwd<float>(p); },
      [&] { dw ? depthwise_fwd<double>(p) : conv_fwd<double>(p); });
}

extern "C" pyr_status pyr_causal_conv1d_bwd_cpu(const pyr_causal_conv1d_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  if (!p->dx && !p->dweight && !p->dbias) return PYR_SUCCESS;
  const bool dw = depthwise(shape_of(p));
  return dispatch(
      p->dtype, [&] { dw ? depthwise_bwd<float>(p) : conv_bwd<float>(p); },
      [&] { dw ? depthwise_bwd<double>(p) : conv_bwd<double>(p); });
}
