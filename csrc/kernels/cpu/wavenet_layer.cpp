// The gated residual layer of WaveNet on the CPU: forward and backward.
//
// The forward splits the work into items of (batch row, tile of time steps) and runs each one
// start to end in cache, so that z, the gate and the projections never go out to memory as
// whole tensors. For one item: the K taps of x are gathered (with zeros before t = 0) into a
// block whose row i * K + k is channel i shifted by tap k, and c_local's tile is copied below
// them; one GEMM with [W_conv | W_local] gives z, starting from a per-row bias (conv bias plus
// W_global c_global[b], computed once per batch row); the gate makes a; one GEMM with
// [W_s; W_r] gives skip and the residual branch, and x's own tile (the tap of shift 0, already
// gathered) is added to the latter to give x_next.
//
// For the backward, the forward saves z (2G channels) rather than a, tanh and sigmoid (3G) or
// nothing: the backward needs tanh and sigmoid of z to differentiate the gate and a for the
// projections' weight gradients, and all three are cheap to recompute from z tile by tile,
// while recomputing z itself would cost the convolution's GEMM again (its FLOPs are about half
// of the forward's). The backward runs in one pass, over items of (batch row, chunk of time
// tiles). Per tile: da from one GEMM of [W_s; W_r]^T with the tile of [dskip; dx_next], dz
// through the gate's derivative into a per-thread ring of tiles, the weight gradients of the
// projections, of the local conditioning and of the convolution as per-thread partial sums,
// dc_local with one GEMM, and dz summed over time for the global conditioning and the conv
// bias. dx at time t reads dz at t + shift(k), up to (K - 1) d steps later: each tile of dx
// (one GEMM of W_conv^T with the future taps of dz, plus dx_next) runs as soon as the ring
// holds the dz it reads, and the dz of the reach past a chunk's end is recomputed there rather
// than shared between threads. dz never goes out to memory as a (B, 2G, T) tensor.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu/activations.h"
#include "cpu/common.h"
#include "cpu/gemm.h"
#include "cpu/taps.h"
#include "pyreversible/kernels.h"

namespace {

using pyr_cpu::Buffer;
using pyr_cpu::dispatch;
using pyr_cpu::drop_taps_past_end;
using pyr_cpu::gate_halves;
using pyr_cpu::gather_taps;
using pyr_cpu::gemm;
using pyr_cpu::Gemm;
using pyr_cpu::gemm_scratch_size;
using pyr_cpu::kMaxElements;
using pyr_cpu::kNR;
using pyr_cpu::leading_dim;
using pyr_cpu::load_vec;
using pyr_cpu::product_fits;
using pyr_cpu::row_sum;
using pyr_cpu::store_vec;
using pyr_cpu::strides_ok;
using pyr_cpu::thread_count;
using pyr_cpu::time_tile;
using pyr_cpu::transpose;

// Bytes of one thread's tile buffers: about its share of L2.
constexpr int64_t kTileBudget = 512 * 1024;

// The sizes of one layer.
struct Shape {
  int64_t batch, residual, gate, skip, length, taps, dilation, local, global;

  // How far back in time tap k reads: tap K - 1 is the current step.
  int64_t shift(int64_t k) const { return (taps - 1 - k) * dilation; }
  // Rows of the input block of z's GEMM: the taps of x, then c_local's channels.
  int64_t in_rows() const { return residual * taps + local; }
  // Rows of the projections' output: skip, then the residual branch.
  int64_t out_rows() const { return skip + residual; }
};

template <typename P>
Shape shape_of(const P* p) {
  return Shape{p->batch,          p->residual_channels, p->gate_channels, p->skip_channels,
               p->length,         p->kernel_size,       p->dilation,      p->local_channels,
               p->global_channels};
}

template <typename P>
pyr_status check_shape(const P* p) {
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT64) return PYR_ERROR_UNSUPPORTED_DTYPE;
  for (int64_t size : {p->batch, p->residual_channels, p->gate_channels, p->skip_channels,
                       p->length, p->kernel_size})
    if (size < 1 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  for (int64_t size : {p->local_channels, p->global_channels})
    if (size < 0 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  if (p->dilation < 1) return PYR_ERROR_INVALID_ARGUMENT;
  const Shape s = shape_of(p);
  // the reach back in time, the weights and the per-thread tiles must be indexable.
  if (!product_fits(s.taps - 1, s.dilation) || !product_fits(2 * s.gate, s.in_rows()) ||
      !product_fits(s.out_rows(), s.gate) ||
      !product_fits(s.in_rows() + 3 * s.gate + s.out_rows(), 1024) ||
      !product_fits(s.batch, 2 * s.gate * s.length))
    return PYR_ERROR_INVALID_SIZE;
  return PYR_SUCCESS;
}

// tile[r * ld + n] = src[r * sr + n * st] for a rows by nt block.
template <typename T>
void load_tile(const T* src, int64_t sr, int64_t st, int64_t rows, int64_t nt, T* tile,
               int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    if (st == 1) {
      std::memcpy(tile + r * ld, src + r * sr, nt * sizeof(T));
    } else {
      for (int64_t n = 0; n < nt; ++n) tile[r * ld + n] = src[r * sr + n * st];
    }
  }
}

// dst[r * sr + n * st] = tile[r * ld + n] for a rows by nt block.
template <typename T>
void store_tile(const T* tile, int64_t ld, int64_t rows, int64_t nt, T* dst, int64_t sr,
                int64_t st) {
  for (int64_t r = 0; r < rows; ++r) {
    if (st == 1) {
      std::memcpy(dst + r * sr, tile + r * ld, nt * sizeof(T));
    } else {
      for (int64_t n = 0; n < nt; ++n) dst[r * sr + n * st] = tile[r * ld + n];
    }
  }
}

template <typename T>
void layer_fwd(const pyr_wavenet_layer_params* p) {
  const Shape s = shape_of(p);
  const int64_t gg = 2 * s.gate, in_rows = s.in_rows(), out_rows = s.out_rows();
  const T* x = static_cast<const T*>(p->x);
  const T* conv_w = static_cast<const T*>(p->conv_weight);
  const T* conv_b = static_cast<const T*>(p->conv_bias);
  const T* local = static_cast<const T*>(p->local_cond);
  const T* local_w = static_cast<const T*>(p->local_weight);
  const T* global = static_cast<const T*>(p->global_cond);
  const T* global_w = static_cast<const T*>(p->global_weight);
  T* x_next = static_cast<T*>(p->x_next);
  T* skip = static_cast<T*>(p->skip);
  T* gate_input = static_cast<T*>(p->gate_input);

  // the weights as the two GEMMs take them: [W_conv as (2G, R K) | W_local] and [W_s; W_r],
  // with [b_s; b_r] beside the latter.
  std::vector<T> w_in(static_cast<size_t>(gg * in_rows));
  std::vector<T> w_out(static_cast<size_t>(out_rows * s.gate)), b_out(out_rows, T(0));
  for (int64_t o = 0; o < gg; ++o) {
    std::copy(conv_w + o * s.residual * s.taps, conv_w + (o + 1) * s.residual * s.taps,
              w_in.begin() + o * in_rows);
    if (s.local)
      std::copy(local_w + o * s.local, local_w + (o + 1) * s.local,
                w_in.begin() + o * in_rows + s.residual * s.taps);
  }
  std::copy(static_cast<const T*>(p->skip_weight),
            static_cast<const T*>(p->skip_weight) + s.skip * s.gate, w_out.begin());
  std::copy(static_cast<const T*>(p->residual_weight),
            static_cast<const T*>(p->residual_weight) + s.residual * s.gate,
            w_out.begin() + s.skip * s.gate);
  if (p->skip_bias) std::copy_n(static_cast<const T*>(p->skip_bias), s.skip, b_out.begin());
  if (p->residual_bias)
    std::copy_n(static_cast<const T*>(p->residual_bias), s.residual, b_out.begin() + s.skip);

  // z's bias per batch row: the conv bias plus the global conditioning, constant over time.
  std::vector<T> b_in(static_cast<size_t>(s.batch * gg));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t o = 0; o < gg; ++o) {
      T sum = conv_b ? conv_b[o] : T(0);
      for (int64_t c = 0; c < s.global; ++c)
        sum += global_w[o * s.global + c] * global[b * p->stride_global_b + c * p->stride_global_c];
      b_in[b * gg + o] = sum;
    }

  const int threads_wanted = thread_count(p->num_threads);
  const int64_t tile = time_tile<T>(in_rows + gg + s.gate + out_rows, s.length, s.batch,
                                    kTileBudget, threads_wanted);
  const int64_t tiles = (s.length + tile - 1) / tile;
  const int64_t items = s.batch * tiles;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, items));
  const int64_t ld = leading_dim<T>(tile);
  // per thread: the input block, z, a, the projections' output, one row of sigmoids and the
  // GEMM scratch.
  const int64_t per_thread = (in_rows + gg + s.gate + out_rows + 1) * ld + gemm_scratch_size<T>();
  std::unique_ptr<T[]> work(new T[per_thread * threads]);

#pragma omp parallel num_threads(threads)
  {
    T* in = work.get() + omp_get_thread_num() * per_thread;
    T* z = in + in_rows * ld;
    T* a = z + gg * ld;
    T* out = a + s.gate * ld;
    T* sg = out + out_rows * ld;
    T* scratch = sg + ld;

#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / tiles, t0 = item % tiles * tile, nt = std::min(tile, s.length - t0);
      gather_taps(x + b * p->stride_x_b, p->stride_x_c, p->stride_x_t, s.residual, s, t0, nt, -1,
                  in, ld);
      if (s.local)
        load_tile(local + b * p->stride_local_b + t0 * p->stride_local_t, p->stride_local_c,
                  p->stride_local_t, s.local, nt, in + s.residual * s.taps * ld, ld);

      Gemm<T> gz{gg, nt, in_rows, w_in.data(), in_rows, 1, in, ld, z, ld, &b_in[b * gg], false};
      gemm(gz, scratch);
      if (gate_input)
        for (int64_t o = 0; o < gg; ++o)
          std::memcpy(gate_input + (b * gg + o) * s.length + t0, z + o * ld, nt * sizeof(T));

      for (int64_t i = 0; i < s.gate; ++i) {
        T* ai = a + i * ld;
        gate_halves(z + i * ld, z + (s.gate + i) * ld, ai, sg, nt);
        for (int64_t n = 0; n < nt; ++n) ai[n] *= sg[n];
      }

      Gemm<T> go{out_rows, nt, s.gate, w_out.data(), s.gate,       1,
                 a,        ld, out,    ld,           b_out.data(), false};
      gemm(go, scratch);

      T* skip_t = skip + b * p->stride_skip_b + t0 * p->stride_skip_t;
      store_tile(out, ld, s.skip, nt, skip_t, p->stride_skip_c, p->stride_skip_t);
      // x's own tile is the gathered tap of shift 0 (tap K - 1) of each channel.
      T* next_t = x_next + b * p->stride_x_next_b + t0 * p->stride_x_next_t;
      for (int64_t i = 0; i < s.residual; ++i) {
        T* res = out + (s.skip + i) * ld;
        const T* xi = in + (i * s.taps + s.taps - 1) * ld;
        for (int64_t n = 0; n < nt; ++n) res[n] += xi[n];
      }
      store_tile(out + s.skip * ld, ld, s.residual, nt, next_t, p->stride_x_next_c,
                 p->stride_x_next_t);
    }
  }
}

// Chunks per batch row for the backward, so that batch * chunks items share out evenly over the
// threads: the fewest within 10% of an even share (every chunk after a row's first costs dz
// recomputed over the reach of the taps past its end), at most one per tile.
int64_t chunks_per_row(int64_t batch, int64_t tiles, int threads) {
  const double even = static_cast<double>(batch) / threads;
  for (int64_t c = 1; c < tiles; ++c) {
    const double load = static_cast<double>((batch * c + threads - 1) / threads) / c;
    if (load <= 1.1 * even) return c;
  }
  return tiles;
}

template <typename T>
void layer_bwd(const pyr_wavenet_layer_bwd_params* p) {
  const Shape s = shape_of(p);
  const int64_t gg = 2 * s.gate, out_rows = s.out_rows(), T_len = s.length;
  const int64_t rows_x = s.residual * s.taps, rows_dz = gg * s.taps;
  const T* z_saved = static_cast<const T*>(p->gate_input);
  const T* x = static_cast<const T*>(p->x);
  const T* conv_w = static_cast<const T*>(p->conv_weight);
  const T* local = static_cast<const T*>(p->local_cond);
  const T* local_w = static_cast<const T*>(p->local_weight);
  const T* global = static_cast<const T*>(p->global_cond);
  const T* global_w = static_cast<const T*>(p->global_weight);
  const T* dx_next = static_cast<const T*>(p->dx_next);
  const T* dskip = static_cast<const T*>(p->dskip);
  T* dx = static_cast<T*>(p->dx);
  T* dlocal = static_cast<T*>(p->dlocal_cond);

  std::vector<T> w_out(static_cast<size_t>(out_rows * s.gate));
  std::copy(static_cast<const T*>(p->skip_weight),
            static_cast<const T*>(p->skip_weight) + s.skip * s.gate, w_out.begin());
  std::copy(static_cast<const T*>(p->residual_weight),
            static_cast<const T*>(p->residual_weight) + s.residual * s.gate,
            w_out.begin() + s.skip * s.gate);

  const bool want_dw_out = p->dskip_weight || p->dresidual_weight;
  const bool want_db_out = p->dskip_bias || p->dresidual_bias;
  const bool want_dw_local = s.local && p->dlocal_weight;
  const bool want_dlocal = s.local && dlocal;
  const bool want_dw_conv = p->dconv_weight != nullptr;
  const bool want_dz_sum = s.global && (p->dglobal_cond || p->dglobal_weight);
  // dz summed over time, per batch row: the global conditioning's gradients and db_conv.
  const bool want_dz_rows = want_dz_sum || p->dconv_bias;
  // what is computed follows from the gradients asked for: dz feeds the convolution's and the
  // conditioning's gradients, the gate (da, tanh, sigmoid) feeds dz and a for [dW_s; dW_r];
  // [db_s; db_r] needs neither.
  const bool want_dz = dx || want_dw_conv || want_dz_rows || want_dw_local || want_dlocal;
  const bool want_gate = want_dz || want_dw_out;
  if (!want_gate && !want_db_out) return;

  // dx = W_conv^T (the future taps of dz) takes the weight as (R, 2G K): w_t[i][o K + k] =
  // W_conv[o][i][k].
  std::vector<T> w_t(dx ? static_cast<size_t>(s.residual * rows_dz) : 0);
  for (int64_t o = 0; o < gg && dx; ++o)
    for (int64_t i = 0; i < s.residual; ++i)
      for (int64_t k = 0; k < s.taps; ++k)
        w_t[i * rows_dz + o * s.taps + k] = conv_w[(o * s.residual + i) * s.taps + k];
  bool finite_weight = true;
  for (const T w : w_t) finite_weight = finite_weight && std::isfinite(w);

  const int threads_wanted = thread_count(p->num_threads);
  const int64_t taps_rows = std::max(dx ? rows_dz : 0, want_dw_conv ? rows_x : 0);
  const int64_t tile_rows = out_rows + 3 * s.gate + s.residual + 2 * gg + taps_rows + 2 * s.local;
  const int64_t tile = time_tile<T>(tile_rows, s.length, s.batch, kTileBudget, threads_wanted);
  const int64_t tiles = (T_len + tile - 1) / tile;
  const int64_t per_row = chunks_per_row(s.batch, tiles, threads_wanted);
  const int64_t chunk_tiles = (tiles + per_row - 1) / per_row;
  const int64_t chunks = (tiles + chunk_tiles - 1) / chunk_tiles;
  const int64_t items = s.batch * chunks;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, items));
  const int64_t ld = leading_dim<T>(tile);
  // dx at t reads dz up to t + reach. A chunk's tiles run forward in time, each dx tile as
  // soon as the dz it reads is there; past the chunk's end, the tiles of the reach are
  // recomputed (for dz alone). A ring of whole tiles keeps dz from the oldest dx tile still
  // waiting to the newest tile done: time t is in column t % width.
  const int64_t reach = dx ? s.shift(0) : 0;
  const int64_t ring_tiles = std::min(tiles, 1 + (reach + tile - 1) / tile);
  const int64_t width = ring_tiles * tile, ldr = leading_dim<T>(width);

  // per thread: the tile of [dskip; dx_next], da, a transposed (time, channel), the ring of dz,
  // the gathered taps (of dz for dx, of x for dW_conv), dz's tile transposed, a dx tile,
  // c_local's tile transposed and a dc_local tile, a row of tanh and one of sigmoid, the GEMM
  // scratch, then the partial sums of [dW_s; dW_r], [db_s; db_r], dW_local, dz over time and
  // dW_conv (as (R K, 2G)).
  const int64_t size_dout = out_rows * ld, size_da = s.gate * ld;
  const int64_t size_at = want_dw_out ? ld * s.gate : 0, size_ring = want_dz ? gg * ldr : 0;
  const int64_t size_taps = taps_rows * ld, size_dzt = want_dw_conv ? ld * gg : 0;
  const int64_t size_dxt = dx ? s.residual * ld : 0;
  const int64_t size_ct = want_dw_local ? ld * s.local : 0,
                size_dc = want_dlocal ? s.local * ld : 0;
  const int64_t size_dw_out = want_dw_out ? out_rows * s.gate : 0, size_db_out = out_rows;
  const int64_t size_dw_local = gg * s.local, size_dz_rows = want_dz_rows ? s.batch * gg : 0;
  const int64_t size_dw_conv = want_dw_conv ? rows_x * gg : 0;
  const int64_t size_parts =
      size_dw_out + size_db_out + size_dw_local + size_dz_rows + size_dw_conv;
  const int64_t per_thread = size_dout + size_da + size_at + size_ring + size_taps + size_dzt +
                             size_dxt + size_ct + size_dc + 2 * ld + gemm_scratch_size<T>() +
                             size_parts;
  const int64_t offset_parts = per_thread - size_parts;
  Buffer<T> work(static_cast<size_t>(per_thread * threads));
  for (int t = 0; t < threads; ++t)
    std::fill_n(work.get() + t * per_thread + offset_parts, size_parts, T(0));

#pragma omp parallel num_threads(threads)
  {
    T* dout = work.get() + omp_get_thread_num() * per_thread;
    T* da = dout + size_dout;
    T* at = da + size_da;
    T* ring = at + size_at;
    T* taps = ring + size_ring;
    T* dzt = taps + size_taps;
    T* dxt = dzt + size_dzt;
    T* ct = dxt + size_dxt;
    T* dc = ct + size_ct;
    T* th = dc + size_dc;
    T* sg = th + ld;
    T* scratch = sg + ld;
    T* part_dw_out = scratch + gemm_scratch_size<T>();
    T* part_db_out = part_dw_out + size_dw_out;
    T* part_dw_local = part_db_out + size_db_out;
    T* part_dz_rows = part_dw_local + size_dw_local;
    T* part_dw_conv = part_dz_rows + size_dz_rows;

    // Tile j of batch row b: dz into the ring and, when the tile is the chunk's own (not one
    // of the reach past its end), its share of every gradient but dx.
    auto dz_tile = [&](int64_t b, int64_t j, bool own) {
      const int64_t t0 = j * tile, nt = std::min(tile, T_len - t0);
      load_tile(dskip + b * p->stride_dskip_b + t0 * p->stride_dskip_t, p->stride_dskip_c,
                p->stride_dskip_t, s.skip, nt, dout, ld);
      load_tile(dx_next + b * p->stride_dx_next_b + t0 * p->stride_dx_next_t, p->stride_dx_next_c,
                p->stride_dx_next_t, s.residual, nt, dout + s.skip * ld, ld);
      for (int64_t r = 0; r < out_rows && own && want_db_out; ++r)
        part_db_out[r] += row_sum(dout + r * ld, nt);
      if (!want_gate) return;

      // da = [W_s; W_r]^T [dskip; dx_next]: the stacked weight read transposed in place.
      Gemm<T> gda{s.gate, nt, out_rows, w_out.data(), 1, s.gate, dout, ld, da, ld, nullptr, false};
      gemm(gda, scratch);

      // the gate's derivative, with a (for the weight gradients) recomputed from z on the way.
      const T* zb = z_saved + b * gg * T_len + t0;
      T* dz = ring + t0 % width;
      for (int64_t i = 0; i < s.gate; ++i) {
        gate_halves(zb + i * T_len, zb + (s.gate + i) * T_len, th, sg, nt);
        if (want_dz) {
          T* dzf = dz + i * ldr;
          T* dzg = dz + (s.gate + i) * ldr;
          for (int64_t n = 0; n < nt; ++n) {
            const T d = da[i * ld + n];
            dzf[n] = d * sg[n] * (T(1) - th[n] * th[n]);
            dzg[n] = d * th[n] * sg[n] * (T(1) - sg[n]);
          }
        }
        if (own && want_dw_out)
          for (int64_t n = 0; n < nt; ++n) at[n * s.gate + i] = th[n] * sg[n];
      }
      if (!own) return;

      if (want_dw_out) {
        // [dW_s; dW_r] += [dskip; dx_next] a^T over the tile
        Gemm<T> gw{out_rows, s.gate,      nt,     dout,    ld,    1,   at,
                   s.gate,   part_dw_out, s.gate, nullptr, false, true};
        gemm(gw, scratch);
      }

      for (int64_t o = 0; o < gg && want_dz_rows; ++o)
        part_dz_rows[b * gg + o] += row_sum(dz + o * ldr, nt);

      if (want_dw_local) {
        const T* lc = local + b * p->stride_local_b + t0 * p->stride_local_t;
        for (int64_t c = 0; c < s.local; ++c)
          for (int64_t n = 0; n < nt; ++n)
            ct[n * s.local + c] = lc[c * p->stride_local_c + n * p->stride_local_t];
        // dW_local += dz c_local^T over the tile
        Gemm<T> gw{gg,      s.local,       nt,      dz,      ldr,   1,   ct,
                   s.local, part_dw_local, s.local, nullptr, false, true};
        gemm(gw, scratch);
      }

      if (want_dlocal) {
        // dc_local = W_local^T dz: W_local (2G, C_local) read transposed in place
        Gemm<T> gc{s.local, nt, gg, local_w, 1, s.local, dz, ldr, dc, ld, nullptr, false};
        gemm(gc, scratch);
        store_tile(dc, ld, s.local, nt, dlocal + b * p->stride_dlocal_b + t0 * p->stride_dlocal_t,
                   p->stride_dlocal_c, p->stride_dlocal_t);
      }

      if (want_dw_conv) {
        // dW_conv (as (R K, 2G)) += the past taps of x times dz^T over the tile
        gather_taps(x + b * p->stride_x_b, p->stride_x_c, p->stride_x_t, s.residual, s, t0, nt, -1,
                    taps, ld);
        transpose(dz, ldr, gg, nt, dzt);
        Gemm<T> gw{rows_x, gg, nt, taps, ld, 1, dzt, gg, part_dw_conv, gg, nullptr, false, true};
        gemm(gw, scratch);
      }
    };

    // dx's tile j of batch row b: W_conv^T (the future taps of dz, from the ring) + dx_next.
    auto dx_tile = [&](int64_t b, int64_t j) {
      const int64_t t0 = j * tile, nt = std::min(tile, T_len - t0);
      for (int64_t k = 0; k < s.taps; ++k) {
        const int64_t start = t0 + s.shift(k);
        const int64_t hi = std::max<int64_t>(0, std::min(nt, T_len - start));
        for (int64_t o = 0; o < gg; ++o) {
          T* row = taps + (o * s.taps + k) * ld;
          for (int64_t n = 0; n < hi;) {
            const int64_t col = (start + n) % width, count = std::min(hi - n, width - col);
            std::memcpy(row + n, ring + o * ldr + col, count * sizeof(T));
            n += count;
          }
          std::fill(row + hi, row + nt, T(0));
        }
      }
      Gemm<T> gx{s.residual, nt, rows_dz, w_t.data(), rows_dz, 1,
                 taps,       ld, dxt,     ld,         nullptr, false};
      gemm(gx, scratch);
      if (!finite_weight)
        drop_taps_past_end(w_t.data(), s.residual, gg, taps, ld, s, t0, nt, dxt, ld);
      const T* dn = dx_next + b * p->stride_dx_next_b + t0 * p->stride_dx_next_t;
      for (int64_t i = 0; i < s.residual; ++i) {
        T* row = dxt + i * ld;
        const T* in = dn + i * p->stride_dx_next_c;
        if (p->stride_dx_next_t == 1) {
          for (int64_t n = 0; n < nt; ++n) row[n] += in[n];
        } else {
          for (int64_t n = 0; n < nt; ++n) row[n] += in[n * p->stride_dx_next_t];
        }
      }
      store_tile(dxt, ld, s.residual, nt, dx + b * p->stride_dx_b + t0 * p->stride_dx_t,
                 p->stride_dx_c, p->stride_dx_t);
    };

    // a chunk's tiles run forward in time, then the tiles of the reach past its end; dx's
    // tiles follow as soon as the ring holds the dz they read.
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / chunks, first = item % chunks * chunk_tiles;
      const int64_t end = std::min(tiles, first + chunk_tiles);
      const int64_t reach_end = std::min(tiles, (end * tile + reach + tile - 1) / tile);
      int64_t next_dx = first;
      for (int64_t j = first; j < reach_end; ++j) {
        dz_tile(b, j, j < end);
        const int64_t done = std::min(T_len, (j + 1) * tile);
        while (dx && next_dx < end &&
               std::min(T_len, std::min((next_dx + 1) * tile, T_len) + reach) <= done)
          dx_tile(b, next_dx++);
      }
    }
  }

  // the partial sums of every thread, added up.
  std::vector<T> sums(static_cast<size_t>(size_parts), T(0));
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < size_parts; ++j)
      sums[j] += work.get()[t * per_thread + offset_parts + j];
  const T* dw_out = sums.data();
  const T* db_out = dw_out + size_dw_out;
  const T* dw_local = db_out + size_db_out;
  const T* dz_rows = dw_local + size_dw_local;
  const T* dw_conv = dz_rows + size_dz_rows;
  if (p->dskip_weight) std::copy_n(dw_out, s.skip * s.gate, static_cast<T*>(p->dskip_weight));
  if (p->dresidual_weight)
    std::copy_n(dw_out + s.skip * s.gate, s.residual * s.gate,
                static_cast<T*>(p->dresidual_weight));
  if (p->dskip_bias) std::copy_n(db_out, s.skip, static_cast<T*>(p->dskip_bias));
  if (p->dresidual_bias)
    std::copy_n(db_out + s.skip, s.residual, static_cast<T*>(p->dresidual_bias));
  if (want_dw_local) std::copy_n(dw_local, size_dw_local, static_cast<T*>(p->dlocal_weight));
  if (want_dw_conv) {
    T* dw = static_cast<T*>(p->dconv_weight);
    for (int64_t o = 0; o < gg; ++o)
      for (int64_t r = 0; r < rows_x; ++r) dw[o * rows_x + r] = dw_conv[r * gg + o];
  }
  if (p->dconv_bias) {
    T* db = static_cast<T*>(p->dconv_bias);
    for (int64_t o = 0; o < gg; ++o) {
      T sum = 0;
      for (int64_t b = 0; b < s.batch; ++b) sum += dz_rows[b * gg + o];
      db[o] = sum;
    }
  }

  // the global conditioning: its projection is constant over time, so its gradients take dz
  // summed over time, (batch, 2G), a small product done here.
  if (s.global && p->dglobal_cond) {
    T* dg = static_cast<T*>(p->dglobal_cond);
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t c = 0; c < s.global; ++c) {
        T sum = 0;
        for (int64_t o = 0; o < gg; ++o) sum += global_w[o * s.global + c] * dz_rows[b * gg + o];
        dg[b * s.global + c] = sum;
      }
  }
  if (s.global && p->dglobal_weight) {
    T* dgw = static_cast<T*>(p->dglobal_weight);
    for (int64_t o = 0; o < gg; ++o)
      for (int64_t c = 0; c < s.global; ++c) {
        T sum = 0;
        for (int64_t b = 0; b < s.batch; ++b)
          sum += dz_rows[b * gg + o] * global[b * p->stride_global_b + c * p->stride_global_c];
        dgw[o * s.global + c] = sum;
      }
  }
}

// The layouts of the inputs both passes may read: x and the conditioning, those given.
template <typename P>
bool inputs_strides_ok(const P* p) {
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
      !strides_ok({{p->batch, p->stride_x_next_b},
                   {p->residual_channels, p->stride_x_next_c},
                   {p->length, p->stride_x_next_t}},
                  true) ||
      !strides_ok({{p->batch, p->stride_skip_b},
                   {p->skip_channels, p->stride_skip_c},
                   {p->length, p->stride_skip_t}},
                  true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_wavenet_layer_bwd_params* p) {
  if (!p || !p->conv_weight || !p->residual_weight || !p->skip_weight || !p->gate_input ||
      !p->dx_next || !p->dskip || (p->dconv_weight && !p->x))
    return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
  if (!conditioning_consistent(p)) return PYR_ERROR_NULL_POINTER;
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
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_wavenet_layer_fwd_cpu(const pyr_wavenet_layer_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return dispatch(p->dtype, [&] { layer_fwd<float>(p); }, [&] { layer_fwd<double>(p); });
}

extern "C" pyr_status pyr_wavenet_layer_bwd_cpu(const pyr_wavenet_layer_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  return dispatch(p->dtype, [&] { layer_bwd<float>(p); }, [&] { layer_bwd<double>(p); });
}
