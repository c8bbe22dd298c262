// Masked 2-D convolution (PixelCNN) on the CPU, forward and backward, as an implicit GEMM over
// the kept taps.
//
// The work is split into tiles of whole output rows of one image. A tile's input rows are
// copied once into a zero-padded buffer whose rows lie Wp = W + c apart: the c zeros that start
// a row pad its left edge and the right edge of the row above it. Output pixel (r, w) of the
// tile is then grid column n = r * Wp + w, and for every tap (ky, kx) the input it reads is the
// buffer shifted by ky * Wp + kx: a (channels x grid columns) matrix with contiguous columns,
// which is what gemm() takes as B. The windows of every kept tap, stacked, are the B of one
// GEMM with the kept taps of W side by side (O x taps I): gemm() reads B's rows through a table
// of their offsets in the buffer, so a window is never copied but into the GEMM's own packed
// panels, and a tile of the output stays in registers across all the taps. The c grid columns
// per row past the image's width are computed and dropped (c / (W + c) of the work), the price
// of never copying a window. The kept taps are the first ones in raster order, so a masked tap
// is never read.
//
// The backward reads a tile's dy rows (and the c rows below them) into the same layout: dx is
// the same product over dy with the taps mirrored, and dW of a tap is dy's tile (O x grid columns,
// zero in the dropped columns) times the x window, read from a channels-last copy of the tile's
// input so that its columns are contiguous. dW and db are summed over fixed runs of tiles, and
// the runs' sums added in order at the end.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <new>
#include <vector>

#include "cpu/common.h"
#include "cpu/gemm.h"
#include "pyreversible/kernels.h"

namespace {

using pyr_cpu::Buffer;
using pyr_cpu::dispatch;
using pyr_cpu::Gemm;
using pyr_cpu::gemm;
using pyr_cpu::gemm_scratch_size;
using pyr_cpu::kMaxElements;
using pyr_cpu::kNR;
using pyr_cpu::leading_dim;
using pyr_cpu::strides_ok;
using pyr_cpu::thread_count;

// The sizes every pass shares. taps: the kept taps, the first `taps` of the K * K in raster
// order; wp: the row length of the padded buffers.
struct Shape {
  int64_t batch, in_ch, out_ch, height, width, k, c, taps, wp;
};

template <typename Params>
Shape shape_of(const Params* p) {
  const int64_t k = p->kernel_size, c = k / 2;
  return Shape{p->batch,
               p->in_channels,
               p->out_channels,
               p->height,
               p->width,
               k,
               c,
               c * k + c + (p->mask_type == PYR_MASK_B ? 1 : 0),
               p->width + c};
}

// C (m x n) = A B, or C += A B with accumulate; A(i, k) = a[i * sam + k * sak],
// B(k, n) = b[k * ldb + n], C(i, n) = c[i * ldc + n].
template <typename T>
Gemm<T> product(int64_t m, int64_t n, int64_t k, const T* a, int64_t sam, int64_t sak, const T* b,
                int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  Gemm<T> g{m, n, k, a, sam, sak, b, ldb, c, ldc, nullptr, false};
  g.accumulate = accumulate;
  return g;
}

// A split of the images into tiles of `rows` output rows.
struct Tiling {
  int64_t rows, per_image, count;
};

// Rows per tile: as many as keep the tile's buffers (`channels` rows of Wp per output row)
// within a share of L2, so that each tap's GEMM has long rows; then fewer, while there are not
// two tiles per thread.
Tiling tiling(const Shape& s, int64_t channels, int64_t elem_bytes, int threads) {
  constexpr int64_t kL2Budget = 256 * 1024;
  int64_t rows = kL2Budget / std::max<int64_t>(1, channels * s.wp * elem_bytes);
  rows = std::max<int64_t>(1, std::min(rows, s.height));
  while (rows > 1 && s.batch * ((s.height + rows - 1) / rows) < 2 * threads) rows = (rows + 1) / 2;
  const int64_t per_image = (s.height + rows - 1) / rows;
  return Tiling{rows, per_image, s.batch * per_image};
}

// The kept taps of the weight, whatever its strides, as the GEMMs take them: tap-major,
// wt[(t * O + o) * I + i] = W[o, i, t / K, t % K], for dx (W^T with the taps stacked along k);
// or output-major, wt[(o * taps + t) * I + i], for the forward (W with the taps stacked along k).
template <typename T>
void pack_weight(const T* w, int64_t so, int64_t si, int64_t sh, int64_t sw, const Shape& s,
                 bool output_major, T* wt) {
  for (int64_t t = 0; t < s.taps; ++t) {
    const T* wtap = w + (t / s.k) * sh + (t % s.k) * sw;
    for (int64_t o = 0; o < s.out_ch; ++o) {
      T* dst = wt + (output_major ? o * s.taps + t : t * s.out_ch + o) * s.in_ch;
      for (int64_t i = 0; i < s.in_ch; ++i) dst[i] = wtap[o * so + i * si];
    }
  }
}

// Copies rows first .. first + rows - 1 of `channels` channels of one image (rows outside the
// image read as zeros) into buf: channel ch at buf + ch * ld, row j at j * wp + c, with zeros
// in the c columns before each row and from the end of the last row to ld.
template <typename T>
void load_rows(const T* src, int64_t channels, int64_t sc, int64_t sh, int64_t sw, int64_t first,
               int64_t rows, const Shape& s, T* buf, int64_t ld) {
  for (int64_t ch = 0; ch < channels; ++ch) {
    T* dst = buf + ch * ld;
    for (int64_t j = 0; j < rows; ++j) {
      T* d = dst + j * s.wp;
      const int64_t h = first + j;
      std::fill(d, d + s.c, T(0));
      if (h < 0 || h >= s.height) {
        std::fill(d + s.c, d + s.wp, T(0));
        continue;
      }
      const T* row = src + ch * sc + h * sh;
      if (sw == 1) {
        std::copy(row, row + s.width, d + s.c);
      } else {
        for (int64_t q = 0; q < s.width; ++q) d[s.c + q] = row[q * sw];
      }
    }
    std::fill(dst + rows * s.wp, dst + ld, T(0));
  }
}

// load_rows, channels-last: element (ch, pos) at buf[pos * channels + ch], for every position
// below `positions`.
template <typename T>
void load_rows_channels_last(const T* src, int64_t channels, int64_t sc, int64_t sh, int64_t sw,
                             int64_t first, int64_t rows, const Shape& s, T* buf,
                             int64_t positions) {
  std::fill(buf, buf + positions * channels, T(0));
  for (int64_t j = 0; j < rows; ++j) {
    const int64_t h = first + j;
    if (h < 0 || h >= s.height) continue;
    T* d = buf + (j * s.wp + s.c) * channels;
    for (int64_t q = 0; q < s.width; ++q)
      for (int64_t ch = 0; ch < channels; ++ch)
        d[q * channels + ch] = src[ch * sc + h * sh + q * sw];
  }
}

// Writes the valid columns of a tile's grid (channel ch at buf + ch * ld, row r at r * wp) to
// rows first .. first + rows - 1 of one image.
template <typename T>
void store_rows(const T* buf, int64_t ld, int64_t channels, int64_t first, int64_t rows,
                const Shape& s, T* dst, int64_t sc, int64_t sh, int64_t sw) {
  for (int64_t ch = 0; ch < channels; ++ch)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = buf + ch * ld + r * s.wp;
      T* d = dst + ch * sc + (first + r) * sh;
      if (sw == 1) {
        std::copy(row, row + s.width, d);
      } else {
        for (int64_t q = 0; q < s.width; ++q) d[q * sw] = row[q];
      }
    }
}

// Fills a (batch, channels, height, width) tensor with value[ch] (or zero where value is null).
template <typename T>
void fill_channels(T* dst, const Shape& s, int64_t channels, int64_t sb, int64_t sc, int64_t sh,
                   int64_t sw, const T* value, int threads) {
#pragma omp parallel for collapse(2) num_threads(threads)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t ch = 0; ch < channels; ++ch) {
      const T v = value ? value[ch] : T(0);
      for (int64_t h = 0; h < s.height; ++h)
        for (int64_t q = 0; q < s.width; ++q) dst[b * sb + ch * sc + h * sh + q * sw] = v;
    }
}

template <typename T>
void masked_conv2d_fwd(const pyr_masked_conv2d_params* p) {
  const Shape s = shape_of(p);
  const T* x = static_cast<const T*>(p->x);
  const T* bias = static_cast<const T*>(p->bias);
  T* y = static_cast<T*>(p->y);
  const int threads_wanted = thread_count(p->num_threads);

  // type A with K = 1 keeps no tap: the output is the bias.
  if (s.taps == 0) {
    fill_channels(y, s, s.out_ch, p->stride_y_b, p->stride_y_c, p->stride_y_h, p->stride_y_w, bias,
                  threads_wanted);
    return;
  }

  Buffer<T> wt(static_cast<size_t>(s.taps * s.out_ch * s.in_ch));
  pack_weight(static_cast<const T*>(p->weight), p->stride_weight_o, p->stride_weight_i,
              p->stride_weight_h, p->stride_weight_w, s, true, wt.get());

  const Tiling tl = tiling(s, s.in_ch + s.out_ch, sizeof(T), threads_wanted);
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, tl.count));
  // the input rows of a tile: c above its first output row, and one of zeros below its last so
  // that the shifted windows never read past the buffer.
  const int64_t ld_x = leading_dim<T>((tl.rows + s.c + 1) * s.wp);
  const int64_t ld_y = leading_dim<T>(tl.rows * s.wp);
  const int64_t per_thread = s.in_ch * ld_x + s.out_ch * ld_y + gemm_scratch_size<T>();
  Buffer<T> work(static_cast<size_t>(per_thread * threads));
  // every tap in one GEMM: row t * I + i of its B is input channel i's window for tap t.
  std::vector<int64_t> windows(static_cast<size_t>(s.taps * s.in_ch));
  for (int64_t t = 0; t < s.taps; ++t)
    for (int64_t i = 0; i < s.in_ch; ++i)
      windows[t * s.in_ch + i] = i * ld_x + (t / s.k) * s.wp + t % s.k;

#pragma omp parallel num_threads(threads)
  {
    T* xbuf = work.get() + omp_get_thread_num() * per_thread;
    T* ybuf = xbuf + s.in_ch * ld_x;
    T* scratch = ybuf + s.out_ch * ld_y;

    // tiles are independent: handed out as threads come free, so that a thread the OS delays
    // (other work on the machine) holds up no other.
#pragma omp for schedule(dynamic)
    for (int64_t tile = 0; tile < tl.count; ++tile) {
      const int64_t b = tile / tl.per_image;
      const int64_t h0 = tile % tl.per_image * tl.rows;
      const int64_t rows = std::min(tl.rows, s.height - h0);
      // the grid columns of the tile, without the dropped ones after its last row.
      const int64_t n = (rows - 1) * s.wp + s.width;

      load_rows(x + b * p->stride_x_b, s.in_ch, p->stride_x_c, p->stride_x_h, p->stride_x_w,
                h0 - s.c, rows + s.c, s, xbuf, ld_x);
      // Y (O x n) = bias + [W_0 .. W_taps-1] (O x taps I) times the windows stacked (taps I x n)
      Gemm<T> g = product(s.out_ch, n, s.taps * s.in_ch, wt.get(), s.taps * s.in_ch, 1, xbuf, 0,
                          ybuf, ld_y, false);
      g.bias = bias;
      g.b_rows = windows.data();
      gemm(g, scratch);
      store_rows(ybuf, ld_y, s.out_ch, h0, rows, s, y + b * p->stride_y_b, p->stride_y_c,
                 p->stride_y_h, p->stride_y_w);
    }
  }
}

template <typename T>
void masked_conv2d_bwd(const pyr_masked_conv2d_bwd_params* p) {
  const Shape s = shape_of(p);
  const T* x = static_cast<const T*>(p->x);
  const T* dy = static_cast<const T*>(p->dy);
  T* dx = static_cast<T*>(p->dx);
  T* dweight = static_cast<T*>(p->dweight);
  T* dbias = static_cast<T*>(p->dbias);
  const int threads_wanted = thread_count(p->num_threads);
  const int64_t kk = s.k * s.k;
  const int64_t dw_size = s.taps * s.out_ch * s.in_ch;

  if (dx && s.taps == 0)
    fill_channels(dx, s, s.in_ch, p->stride_dx_b, p->stride_dx_c, p->stride_dx_h, p->stride_dx_w,
                  static_cast<const T*>(nullptr), threads_wanted);
  const bool want_dx = dx && s.taps > 0;
  const bool want_dw = dweight && s.taps > 0;

  Buffer<T> wt(static_cast<size_t>(std::max<int64_t>(1, dw_size)));
  if (want_dx)
    pack_weight(static_cast<const T*>(p->weight), p->stride_weight_o, p->stride_weight_i,
                p->stride_weight_h, p->stride_weight_w, s, false, wt.get());

  const Tiling tl = tiling(s, s.out_ch + 2 * s.in_ch, sizeof(T), threads_wanted);
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, tl.count));
  // dy rows of a tile: its own and the c below, whose pixels its pixels feed through the taps
  // above the centre row; plus a row of zeros, as in the forward.
  const int64_t positions = (tl.rows + s.c + 1) * s.wp;
  const int64_t ld_dy = leading_dim<T>(positions);
  const int64_t ld_dx = leading_dim<T>(tl.rows * s.wp);
  const int64_t x_size = (positions * s.in_ch + kNR<T> - 1) / kNR<T> * kNR<T>;
  const int64_t sums = (dw_size + s.out_ch + kNR<T> - 1) / kNR<T> * kNR<T>;
  // per thread: the dy, dx and x buffers of a tile, then scratch.
  const int64_t scratch_at = s.out_ch * ld_dy + s.in_ch * ld_dx + x_size;
  const int64_t per_thread = scratch_at + gemm_scratch_size<T>();
  Buffer<T> work(static_cast<size_t>(per_thread * threads));
  // the tiles fall into fixed runs of consecutive tiles, each with its own sums of dW and db:
  // the sums group the same terms on every run, so the gradients are reproducible bit for bit,
  // while the runs go to threads as they come free; two runs per thread let one thread take
  // over work from another that the OS delays.
  const int64_t groups = std::min<int64_t>(tl.count, 2 * threads);
  Buffer<T> group_sums(static_cast<size_t>(groups * sums));
  // dx(r, w) reads dy(r + c - ky, w + c - kx): every tap in one GEMM, row t * O + o of its B
  // being dy channel o's window shifted the other way.
  std::vector<int64_t> windows(static_cast<size_t>(s.taps * s.out_ch));
  for (int64_t t = 0; t < s.taps; ++t)
    for (int64_t o = 0; o < s.out_ch; ++o)
      windows[t * s.out_ch + o] = o * ld_dy + (s.c - t / s.k) * s.wp + 2 * s.c - t % s.k;

#pragma omp parallel num_threads(threads)
  {
    T* dybuf = work.get() + omp_get_thread_num() * per_thread;
    T* dxbuf = dybuf + s.out_ch * ld_dy;
    T* xbuf = dxbuf + s.in_ch * ld_dx;
    T* scratch = dybuf + scratch_at;

#pragma omp for schedule(dynamic)
    for (int64_t group = 0; group < groups; ++group) {
      T* dw_sum = group_sums.get() + group * sums;
      T* db_sum = dw_sum + dw_size;
      std::fill(dw_sum, dw_sum + dw_size + s.out_ch, T(0));
      const int64_t first = group * tl.count / groups, last = (group + 1) * tl.count / groups;
      for (int64_t tile = first; tile < last; ++tile) {
        const int64_t b = tile / tl.per_image;
        const int64_t h0 = tile % tl.per_image * tl.rows;
        const int64_t rows = std::min(tl.rows, s.height - h0);
        const int64_t n = (rows - 1) * s.wp + s.width;

        load_rows(dy + b * p->stride_dy_b, s.out_ch, p->stride_dy_c, p->stride_dy_h, p->stride_dy_w,
                  h0, rows + s.c, s, dybuf, ld_dy);
        // the tile's own dy, grid column n at dybuf + c + n: zero in the dropped columns, which
        // are the padding before the next row.
        const T* dy_tile = dybuf + s.c;

        if (want_dx) {
          // dX (I x n) = [W_0^T .. W_taps-1^T] (I x taps O) times the mirrored dy windows
          // stacked (taps O x n)
          Gemm<T> g = product(s.in_ch, n, s.taps * s.out_ch, wt.get(), 1, s.in_ch, dybuf, 0, dxbuf,
                              ld_dx, false);
          g.b_rows = windows.data();
          gemm(g, scratch);
          store_rows(dxbuf, ld_dx, s.in_ch, h0, rows, s, dx + b * p->stride_dx_b, p->stride_dx_c,
                     p->stride_dx_h, p->stride_dx_w);
        }

        if (want_dw) {
          load_rows_channels_last(x + b * p->stride_x_b, s.in_ch, p->stride_x_c, p->stride_x_h,
                                  p->stride_x_w, h0 - s.c, rows + s.c, s, xbuf, positions);
          for (int64_t t = 0; t < s.taps; ++t) {
            const int64_t ky = t / s.k, kx = t % s.k;
            // dW_t (O x I) += dy's tile (O x n) times the window (n x I, channels-last).
            const T* window = xbuf + (ky * s.wp + kx) * s.in_ch;
            T* dw_tap = dw_sum + t * s.out_ch * s.in_ch;
            const Gemm<T> g = product(s.out_ch, s.in_ch, n, dy_tile, ld_dy, 1, window, s.in_ch,
                                      dw_tap, s.in_ch, true);
            gemm(g, scratch);
          }
        }

        if (dbias) {
          for (int64_t o = 0; o < s.out_ch; ++o) {
            const T* row = dy_tile + o * ld_dy;
            T acc = T(0);
            for (int64_t j = 0; j < n; ++j) acc += row[j];
            db_sum[o] += acc;
          }
        }
      }
    }

    // the runs' sums, added in order; masked taps of dW are written as zeros.
    if (dweight) {
#pragma omp for schedule(static)
      for (int64_t oi = 0; oi < s.out_ch * s.in_ch; ++oi) {
        T* d = dweight + oi * kk;
        for (int64_t t = 0; t < s.taps; ++t) {
          T acc = T(0);
          for (int64_t group = 0; group < groups; ++group)
            acc += group_sums.get()[group * sums + t * s.out_ch * s.in_ch + oi];
          d[t] = acc;
        }
        std::fill(d + s.taps, d + kk, T(0));
      }
    }
    if (dbias) {
#pragma omp for schedule(static)
      for (int64_t o = 0; o < s.out_ch; ++o) {
        T acc = T(0);
        for (int64_t group = 0; group < groups; ++group)
          acc += group_sums.get()[group * sums + dw_size + o];
        dbias[o] = acc;
      }
    }
  }
}

// Whether the product of the factors stays under kMaxElements.
bool fits(std::initializer_list<int64_t> factors) {
  int64_t n = 1;
  for (int64_t f : factors)
    if (f > kMaxElements || __builtin_mul_overflow(n, f, &n) || n > kMaxElements) return false;
  return true;
}

template <typename Params>
pyr_status check_shape(const Params* p) {
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT64) return PYR_ERROR_UNSUPPORTED_DTYPE;
  if (p->mask_type != PYR_MASK_A && p->mask_type != PYR_MASK_B) return PYR_ERROR_INVALID_ARGUMENT;
  if (p->batch < 1 || p->in_channels < 1 || p->out_channels < 1 || p->height < 1 || p->width < 1 ||
      p->kernel_size < 1 || p->kernel_size % 2 == 0)
    return PYR_ERROR_INVALID_SIZE;
  const int64_t k = p->kernel_size, channels = std::max(p->in_channels, p->out_channels);
  // the tensors, the weight, and the padded buffers of a tile of the whole image.
  if (!fits({p->batch, channels, p->height, p->width}) ||
      !fits({p->in_channels, p->out_channels, k, k}) ||
      !fits({3 * channels, p->height + k + 1, p->width + k + 64}))
    return PYR_ERROR_INVALID_SIZE;
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
  if (!strides_ok({{p->batch, p->stride_y_b},
                   {p->out_channels, p->stride_y_c},
                   {p->height, p->stride_y_h},
                   {p->width, p->stride_y_w}},
                  true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_bwd(const pyr_masked_conv2d_bwd_params* p) {
  if (!p || !p->x || !p->weight || !p->dy) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_shape(p)) return s;
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
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_masked_conv2d_fwd_cpu(const pyr_masked_conv2d_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return dispatch(
      p->dtype, [&] { masked_conv2d_fwd<float>(p); }, [&] { masked_conv2d_fwd<double>(p); });
}

extern "C" pyr_status pyr_masked_conv2d_bwd_cpu(const pyr_masked_conv2d_bwd_params* p) {
  if (pyr_status s = check_bwd(p)) return s;
  return dispatch(
      p->dtype, [&] { masked_conv2d_bwd<float>(p); }, [&] { masked_conv2d_bwd<double>(p); });
}
