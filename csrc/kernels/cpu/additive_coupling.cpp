// Additive coupling on the CPU: the coupling around a given shift, and the whole layer with an
// MLP coupling network fused (forward and backward).
//
// The fused forward splits the rows into blocks; one thread takes a block through every layer,
// keeping the activations of the block in two small buffers that stay in cache, and only the
// output (and the hidden activations when they are saved) goes back to memory. Inside a block
// the activations are stored feature-major, (width, rows): a layer is then C = W A with W read
// as it lies (nn.Linear's layout) and A in contiguous rows, so the weights are neither packed nor
// transposed per call, and the bias becomes a per-row start value of the GEMM tile.
//
// The backward keeps the gradient G (rows, width) like the saved activations H: dW = G^T H
// (G^T read through strides) and G_prev = G W. When a copy of the weight gradients per thread is
// small, each thread takes a slice of the rows through every layer, in blocks like the forward's,
// and the threads' gradients are added once at the end. Otherwise it works on the whole batch,
// one layer at a time: both products of a layer read only G, so their tiles form one parallel
// loop, and layers are separated by a barrier.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
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
using pyr_cpu::kMR;
using pyr_cpu::kNR;
using pyr_cpu::leading_dim;
using pyr_cpu::strides_ok;
using pyr_cpu::thread_count;
using pyr_cpu::transpose;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Whether (a + 64) * (b + 64) elements (a buffer of a by b, padded) stay under kMaxElements.
bool fits(int64_t a, int64_t b) {
  int64_t n;
  return a <= kMaxElements && b <= kMaxElements && !__builtin_mul_overflow(a + 64, b + 64, &n) &&
         n <= kMaxElements;
}

pyr_status check_dtype(int32_t dtype) {
  return dtype == PYR_FLOAT32 || dtype == PYR_FLOAT64 ? PYR_SUCCESS : PYR_ERROR_UNSUPPORTED_DTYPE;
}

// Checks that the partition maps dim_a + dim_b = dim features one-to-one onto the positions of a
// row. Positions grow with the feature index, so the last feature of each part bounds them.
pyr_status check_partition(const pyr_partition& p, int64_t dim) {
  if (dim < 2 || dim > kMaxElements || p.dim_a < 1 || p.dim_b < 1 || p.dim_a >= dim ||
      p.dim_b != dim - p.dim_a)
    return PYR_ERROR_INVALID_SIZE;
  if (p.kind == PYR_PARTITION_SPLIT) {
    // the parts are disjoint ranges whose lengths add up to dim: one starts where the other ends.
    if (p.offset_a < 0 || p.offset_b < 0 || p.offset_a > dim - p.dim_a ||
        p.offset_b > dim - p.dim_b)
      return PYR_ERROR_INVALID_ARGUMENT;
    if (p.offset_a < p.offset_b + p.dim_b && p.offset_b < p.offset_a + p.dim_a)
      return PYR_ERROR_INVALID_ARGUMENT;
    return PYR_SUCCESS;
  }
  if (p.kind != PYR_PARTITION_INTERLEAVE) return PYR_ERROR_INVALID_ARGUMENT;
  if (p.parity != 0 && p.parity != 1) return PYR_ERROR_INVALID_ARGUMENT;
  if (p.row_pairs < 1 || p.height < 1) return PYR_ERROR_INVALID_SIZE;
  // bounding them by dim keeps the position arithmetic far from overflow.
  if (p.row_pairs > dim || p.height > dim) return PYR_ERROR_INVALID_ARGUMENT;
  if (pyr_partition_position(&p, p.dim_a - 1, 0) >= dim ||
      pyr_partition_position(&p, p.dim_b - 1, 1) >= dim)
    return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

pyr_status check_common(int32_t dtype, int32_t sign, int64_t batch, int64_t dim,
                        const pyr_partition& part) {
  if (pyr_status s = check_dtype(dtype)) return s;
  if (sign != 1 && sign != -1) return PYR_ERROR_INVALID_ARGUMENT;
  if (batch < 1) return PYR_ERROR_INVALID_SIZE;
  return check_partition(part, dim);
}

// Checks the layer widths against the partition and that every buffer the MLP needs fits.
pyr_status check_layers(int32_t num_layers, const int64_t* widths, const pyr_partition& part,
                        int64_t batch) {
  if (num_layers < 1 || num_layers > PYR_MAX_LAYERS) return PYR_ERROR_INVALID_ARGUMENT;
  for (int l = 0; l <= num_layers; ++l)
    if (widths[l] < 1 || !fits(widths[l], batch)) return PYR_ERROR_INVALID_SIZE;
  for (int l = 0; l < num_layers; ++l)
    if (!fits(widths[l], widths[l + 1])) return PYR_ERROR_INVALID_SIZE;
  if (widths[0] != part.dim_a || widths[num_layers] != part.dim_b) return PYR_ERROR_INVALID_SIZE;
  return PYR_SUCCESS;
}

// The row positions of the features of part a and part b, computed once per call so that the
// gathers and scatters do no division.
struct Positions {
  std::vector<int64_t> a, b;
  explicit Positions(const pyr_partition& p) : a(p.dim_a), b(p.dim_b) {
    for (int64_t j = 0; j < p.dim_a; ++j) a[j] = pyr_partition_position(&p, j, 0);
    for (int64_t j = 0; j < p.dim_b; ++j) b[j] = pyr_partition_position(&p, j, 1);
  }
};

template <typename T>
void coupling_fwd(const pyr_additive_coupling_params* p, const Positions& pos) {
  const T* x = static_cast<const T*>(p->x);
  const T* shift = static_cast<const T*>(p->shift);
  T* y = static_cast<T*>(p->y);
  const T sign = T(p->sign);
  const int64_t sxd = p->stride_x_d, syd = p->stride_y_d, ssd = p->stride_shift_d;
#pragma omp parallel for num_threads(thread_count(p->num_threads))
  for (int64_t r = 0; r < p->batch; ++r) {
    const T* xr = x + r * p->stride_x_b;
    const T* sr = shift + r * p->stride_shift_b;
    T* yr = y + r * p->stride_y_b;
    for (size_t j = 0; j < pos.a.size(); ++j) yr[pos.a[j] * syd] = xr[pos.a[j] * sxd];
    for (size_t j = 0; j < pos.b.size(); ++j)
      yr[pos.b[j] * syd] = xr[pos.b[j] * sxd] + sign * sr[j * ssd];
  }
}

// Rows per block of the fused forward and of the row-sliced backward: enough that the weights,
// read once per block, feed many rows, few enough that the two activation (or gradient) buffers
// of a block stay near L2 (1 MiB for both measured best on Zen 3, 512 KiB of L2 per core), and
// at least one block per thread.
template <typename T>
int64_t rows_per_block(int64_t batch, int64_t max_width, int threads) {
  constexpr int64_t kL2Budget = 1024 * 1024;
  constexpr int64_t NR = kNR<T>;
  int64_t rows = kL2Budget / (2 * max_width * int64_t(sizeof(T))) / NR * NR;
  rows = std::max<int64_t>(NR, std::min<int64_t>(rows, 256));
  const int64_t per_thread = round_up((batch + threads - 1) / threads, NR);
  return std::min(rows, per_thread);
}

template <typename T>
void coupling_mlp_fwd(const pyr_additive_coupling_mlp_params* p, const Positions& pos) {
  const int L = p->num_layers;
  const int64_t B = p->batch;
  const int64_t max_width = *std::max_element(p->widths, p->widths + L + 1);
  const int threads_wanted = thread_count(p->num_threads);
  const int64_t rows = rows_per_block<T>(B, max_width, threads_wanted);
  const int64_t blocks = (B + rows - 1) / rows;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, blocks));
  const bool save = p->hidden[0] != nullptr;

  // per thread: two (max_width, rows) activation buffers and the GEMM scratch.
  const int64_t ld = leading_dim<T>(rows);
  const int64_t act = max_width * ld;
  const int64_t per_thread = 2 * act + gemm_scratch_size<T>();
  Buffer<T> work_buf(static_cast<size_t>(per_thread * threads));
  T* work = work_buf.get();

#pragma omp parallel num_threads(threads)
  {
    T* in = work + omp_get_thread_num() * per_thread;
    T* out = in + act;
    T* scratch = out + act;
    const T* x = static_cast<const T*>(p->x);
    T* y = static_cast<T*>(p->y);
    const T sign = T(p->sign);
    const int64_t sxb = p->stride_x_b, sxd = p->stride_x_d;
    const int64_t syb = p->stride_y_b, syd = p->stride_y_d;

#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * rows;
      const int64_t mb = std::min(rows, B - r0);

      for (size_t j = 0; j < pos.a.size(); ++j)
        for (int64_t r = 0; r < mb; ++r) in[j * ld + r] = x[(r0 + r) * sxb + pos.a[j] * sxd];

      T* h_in = in;
      T* h_out = out;
      for (int l = 0; l < L; ++l) {
        const int64_t n_in = p->widths[l], n_out = p->widths[l + 1];
        const bool last = l + 1 == L;
        Gemm<T> g{n_out, mb,    n_in, static_cast<const T*>(p->weight[l]), n_in, 1, h_in,
                  ld,    h_out, ld,   static_cast<const T*>(p->bias[l]),   !last};
        gemm(g, scratch);
        if (save && !last)
          transpose(h_out, ld, n_out, mb, static_cast<T*>(p->hidden[l]) + r0 * n_out);
        std::swap(h_in, h_out);
      }

      for (int64_t r = 0; r < mb; ++r) {
        const T* xr = x + (r0 + r) * sxb;
        T* yr = y + (r0 + r) * syb;
        for (size_t j = 0; j < pos.a.size(); ++j) yr[pos.a[j] * syd] = xr[pos.a[j] * sxd];
        for (size_t j = 0; j < pos.b.size(); ++j)
          yr[pos.b[j] * syd] = xr[pos.b[j] * sxd] + sign * h_in[j * ld + r];
      }
    }
  }
}

// relu's backward, as torch has it: C(i, n) = 0 where mask[i * ldm + n] <= 0, so that a NaN
// activation passes its gradient on.
template <typename T>
void relu_backward(T* c, int64_t ldc, const T* mask, int64_t ldm, int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; ++i) {
    const T* mr = mask + i * ldm;
    T* cr = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) cr[j] = mr[j] <= T(0) ? T(0) : cr[j];
  }
}

// A product C = A B split into tiles of tm rows by tn columns (whole micro-kernel tiles).
template <typename T>
struct Tiled {
  Gemm<T> g;
  int64_t tm, tn, tiles_m, tiles_n;
  // relu's backward after each tile, with mask (m, n) row-major; null when none.
  const T* mask;
  int64_t ldm;

  // split_n: shrink the tiles' columns before their rows. A weight gradient splits its columns,
  // so that each tile reads only its own columns of the long, batch-sized B.
  Tiled(const Gemm<T>& g_, int threads, bool split_n, const T* mask_, int64_t ldm_)
      : g(g_), mask(mask_), ldm(ldm_) {
    tm = 96;
    tn = 256;
    // enough tiles that every thread gets several, halving a side only while that makes more
    // tiles and keeps them whole micro-kernel tiles.
    while ((g.m + tm - 1) / tm * ((g.n + tn - 1) / tn) < 4 * threads) {
      const bool more_n = tn > 32 && tn / 2 < g.n;
      const bool more_m = tm > 24 && tm / 2 < g.m;
      if (more_n && (split_n || !more_m))
        tn /= 2;
      else if (more_m)
        tm /= 2;
      else
        break;
    }
    tiles_m = (g.m + tm - 1) / tm;
    tiles_n = (g.n + tn - 1) / tn;
  }
  int64_t count() const { return tiles_m * tiles_n; }

  void run(int64_t t, T* scratch) const {
    const int64_t i0 = t / tiles_n * tm, n0 = t % tiles_n * tn;
    Gemm<T> s = g;
    s.m = std::min(tm, g.m - i0);
    s.n = std::min(tn, g.n - n0);
    s.a = g.a + i0 * g.sam;
    s.b = g.b + n0;
    s.c = g.c + i0 * g.ldc + n0;
    gemm(s, scratch);
    if (mask) relu_backward(s.c, g.ldc, mask + i0 * ldm + n0, ldm, s.m, s.n);
  }
};

// db = the column sums of G (batch, n), split over threads by chunks of columns so that the
// inner loop runs along a row.
template <typename T>
void column_sums(const T* g, int64_t ldg, int64_t batch, int64_t n, T* out) {
  constexpr int64_t kChunk = 64;
#pragma omp for schedule(static) nowait
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t nc = std::min(kChunk, n - c0);
    T acc[kChunk] = {};
    for (int64_t r = 0; r < batch; ++r)
      for (int64_t c = 0; c < nc; ++c) acc[c] += g[r * ldg + c0 + c];
    std::copy(acc, acc + nc, out + c0);
  }
}

// Row r of the backward's inputs, gathered: G_L = sign dy_b into g_row, H_0 = x_a into xa_row.
template <typename T>
void gather_row(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos, int64_t r,
                T* g_row, T* xa_row) {
  const T* dyr = static_cast<const T*>(p->dy) + r * p->stride_dy_b;
  const T* cr = static_cast<const T*>(p->cond) + r * p->stride_cond_b;
  const T sign = T(p->sign);
  for (size_t j = 0; j < pos.b.size(); ++j) g_row[j] = sign * dyr[pos.b[j] * p->stride_dy_d];
  for (size_t j = 0; j < pos.a.size(); ++j) xa_row[j] = cr[pos.a[j] * p->stride_cond_d];
}

// Row r of dx = dy, plus G_0 at the a positions. Each element is read before it is written, so
// dx may be dy itself.
template <typename T>
void scatter_dx_row(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos, int64_t r,
                    const T* g0_row) {
  const T* dyr = static_cast<const T*>(p->dy) + r * p->stride_dy_b;
  T* dxr = static_cast<T*>(p->dx) + r * p->stride_dx_b;
  for (size_t j = 0; j < pos.b.size(); ++j)
    dxr[pos.b[j] * p->stride_dx_d] = dyr[pos.b[j] * p->stride_dy_d];
  for (size_t j = 0; j < pos.a.size(); ++j)
    dxr[pos.a[j] * p->stride_dx_d] = dyr[pos.a[j] * p->stride_dy_d] + g0_row[j];
}

// The backward of a network too large for a copy of its gradients per thread: one layer at a
// time over the whole batch, each product split into tiles over the threads.
template <typename T>
void coupling_mlp_bwd_layers(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos,
                             int threads) {
  const int L = p->num_layers;
  const int64_t B = p->batch;
  const int64_t max_width = *std::max_element(p->widths, p->widths + L + 1);
  // G and G_prev: (batch, width) row-major, like the saved activations, so that relu's mask
  // is read along the rows it applies to.
  const int64_t ldg = leading_dim<T>(max_width);
  const int64_t lda = p->widths[0];

  // G and G_prev, H_0 = x_a (batch, dim_a), and the GEMM scratch of each thread.
  const int64_t g_size = round_up(B * ldg, kNR<T>), xa_size = round_up(B * lda, kNR<T>);
  Buffer<T> work_buf(static_cast<size_t>(2 * g_size + xa_size + threads * gemm_scratch_size<T>()));
  T* g_buf = work_buf.get();
  T* xa = g_buf + 2 * g_size;
  T* scratch_buf = xa + xa_size;

#pragma omp parallel num_threads(threads)
  {
    T* scratch = scratch_buf + omp_get_thread_num() * gemm_scratch_size<T>();
    T* g = g_buf;
    T* g_prev = g + g_size;

#pragma omp for schedule(static)
    for (int64_t r = 0; r < B; ++r) gather_row(p, pos, r, g + r * ldg, xa + r * lda);

    for (int l = L - 1; l >= 0; --l) {
      const int64_t n_in = p->widths[l], n_out = p->widths[l + 1];
      const T* w = static_cast<const T*>(p->weight[l]);
      const T* h = l > 0 ? static_cast<const T*>(p->hidden[l - 1]) : xa;
      const int64_t ldh = l > 0 ? n_in : lda;

      column_sums(g, ldg, B, n_out, static_cast<T*>(p->dbias[l]));

      // dW = G^T H and G_prev = G W read only G, so their tiles share one loop.
      const Tiled<T> dw(Gemm<T>{n_out, n_in, B, g, 1, ldg, h, ldh, static_cast<T*>(p->dweight[l]),
                                n_in, nullptr, false},
                        threads, true, nullptr, 0);
      const Tiled<T> gp(Gemm<T>{B, n_in, n_out, g, ldg, 1, w, n_in, g_prev, ldg, nullptr, false},
                        threads, false, l > 0 ? h : nullptr, ldh);
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < dw.count() + gp.count(); ++t) {
        if (t < dw.count())
          dw.run(t, scratch);
        else
          gp.run(t - dw.count(), scratch);
      }
      std::swap(g, g_prev);
    }

#pragma omp for schedule(static)
    for (int64_t r = 0; r < B; ++r) scatter_dx_row(p, pos, r, g + r * ldg);
  }
}

// Where one thread of the row-sliced backward puts its weight and bias gradients: thread 0 into
// the outputs, the others into partial sums in a workspace, added into the outputs at the end.
template <typename T>
struct Gradients {
  T* dweight[PYR_MAX_LAYERS];
  T* dbias[PYR_MAX_LAYERS];
};

// Elements of one thread's partial gradients, each array rounded to whole vectors.
template <typename T>
int64_t gradient_size(const pyr_additive_coupling_mlp_bwd_params* p) {
  int64_t n = 0;
  for (int l = 0; l < p->num_layers; ++l)
    n += round_up(p->widths[l + 1] * p->widths[l], kNR<T>) + round_up(p->widths[l + 1], kNR<T>);
  return n;
}

// Thread t's gradients; partials holds gradient_size() elements for each thread after the first.
template <typename T>
Gradients<T> thread_gradients(const pyr_additive_coupling_mlp_bwd_params* p, int t, T* partials) {
  Gradients<T> out;
  if (t == 0) {
    for (int l = 0; l < p->num_layers; ++l) {
      out.dweight[l] = static_cast<T*>(p->dweight[l]);
      out.dbias[l] = static_cast<T*>(p->dbias[l]);
    }
    return out;
  }
  T* next = partials + (t - 1) * gradient_size<T>(p);
  for (int l = 0; l < p->num_layers; ++l) {
    const int64_t n_out = p->widths[l + 1], n_in = p->widths[l];
    out.dweight[l] = next;
    next += round_up(n_out * n_in, kNR<T>);
    out.dbias[l] = next;
    next += round_up(n_out, kNR<T>);
  }
  return out;
}

// out = (first ? 0 : out) + the column sums of G (rows, n); out, one row long, stays in L1.
template <typename T>
void add_column_sums(const T* g, int64_t ldg, int64_t rows, int64_t n, bool first, T* out) {
  if (first) std::fill(out, out + n, T(0));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) out[c] += g[r * ldg + c];
}

// The per-thread buffers of the row-sliced backward: G and G_prev (rows, ldg) and
// H_0 = x_a (rows, widths[0]) of one block of rows, and the GEMM scratch.
template <typename T>
struct BlockBuffers {
  T* g;
  T* g_prev;
  int64_t ldg;
  T* xa;
  T* scratch;
};

// Rows r0 .. r0 + mb through every layer, backwards. Their share of the weight and bias
// gradients overwrites grads when first, and is added to them otherwise; their rows of dx are
// written.
template <typename T>
void bwd_block(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos, int64_t r0,
               int64_t mb, bool first, const Gradients<T>& grads, BlockBuffers<T> buf) {
  const int64_t ldg = buf.ldg, lda = p->widths[0];
  for (int64_t r = 0; r < mb; ++r) gather_row(p, pos, r0 + r, buf.g + r * ldg, buf.xa + r * lda);

  for (int l = p->num_layers - 1; l >= 0; --l) {
    const int64_t n_in = p->widths[l], n_out = p->widths[l + 1];
    const T* w = static_cast<const T*>(p->weight[l]);
    const T* h = l > 0 ? static_cast<const T*>(p->hidden[l - 1]) + r0 * n_in : buf.xa;
    const int64_t ldh = l > 0 ? n_in : lda;

    add_column_sums(buf.g, ldg, mb, n_out, first, grads.dbias[l]);
    Gemm<T> dw{n_out, n_in, mb, buf.g, 1, ldg, h, ldh, grads.dweight[l], n_in, nullptr, false};
    dw.accumulate = !first;
    gemm(dw, buf.scratch);
    gemm(Gemm<T>{mb, n_in, n_out, buf.g, ldg, 1, w, n_in, buf.g_prev, ldg, nullptr, false},
         buf.scratch);
    if (l > 0) relu_backward(buf.g_prev, ldg, h, ldh, mb, n_in);
    std::swap(buf.g, buf.g_prev);
  }

  for (int64_t r = 0; r < mb; ++r) scatter_dx_row(p, pos, r0 + r, buf.g + r * ldg);
}

// out += the partial sums of the threads after the first, each stride elements past the last;
// split over the threads by chunks of out.
template <typename T>
void add_partials(T* out, int64_t n, const T* partials, int64_t stride, int others) {
  constexpr int64_t kChunk = 1024;
#pragma omp for schedule(static) nowait
  for (int64_t e0 = 0; e0 < n; e0 += kChunk) {
    const int64_t e1 = std::min(n, e0 + kChunk);
    for (int t = 0; t < others; ++t)
      for (int64_t e = e0; e < e1; ++e) out[e] += partials[t * stride + e];
  }
}

// The outputs += the partial gradients of the threads after the first, split over the threads.
template <typename T>
void add_thread_gradients(const pyr_additive_coupling_mlp_bwd_params* p, T* partials, int threads) {
  const Gradients<T> out = thread_gradients(p, 0, partials);
  const Gradients<T> second = thread_gradients(p, 1, partials);
  const int64_t stride = gradient_size<T>(p);
  for (int l = 0; l < p->num_layers; ++l) {
    const int64_t n_out = p->widths[l + 1], n_in = p->widths[l];
    add_partials(out.dweight[l], n_out * n_in, second.dweight[l], stride, threads - 1);
    add_partials(out.dbias[l], n_out, second.dbias[l], stride, threads - 1);
  }
}

// The backward of a network small enough for a copy of its gradients per thread: each thread
// takes a contiguous slice of the rows through every layer, in blocks that stay in cache, with
// no barrier between layers; the threads' gradients are added once at the end. With few rows
// per layer and thread the per-layer barriers of the layered backward cost as much as the
// products.
template <typename T>
void coupling_mlp_bwd_rows(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos,
                           int threads_wanted) {
  const int L = p->num_layers;
  const int64_t B = p->batch;
  const int64_t max_width = *std::max_element(p->widths, p->widths + L + 1);
  const int64_t rows = rows_per_block<T>(B, max_width, threads_wanted);
  const int64_t blocks = (B + rows - 1) / rows;
  const int threads = static_cast<int>(std::min<int64_t>(threads_wanted, blocks));

  const int64_t ldg = leading_dim<T>(max_width);
  const int64_t g_size = round_up(rows * ldg, kNR<T>);
  const int64_t xa_size = round_up(rows * p->widths[0], kNR<T>);
  const int64_t per_thread = 2 * g_size + xa_size + gemm_scratch_size<T>();
  Buffer<T> work_buf(
      static_cast<size_t>(threads * per_thread + (threads - 1) * gradient_size<T>(p)));
  T* partials = work_buf.get() + threads * per_thread;

#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    T* work = work_buf.get() + t * per_thread;
    const BlockBuffers<T> buf{work, work + g_size, ldg, work + 2 * g_size,
                              work + 2 * g_size + xa_size};
    const Gradients<T> grads = thread_gradients(p, t, partials);

    // contiguous blocks per thread: its first block writes its gradients, the others add to them.
    const int64_t blk0 = blocks * t / threads, blk1 = blocks * (t + 1) / threads;
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t r0 = blk * rows;
      bwd_block(p, pos, r0, std::min(rows, B - r0), blk == blk0, grads, buf);
    }

    if (threads > 1) {
#pragma omp barrier
      add_thread_gradients(p, partials, threads);
    }
  }
}

// Bytes of partial gradients all threads together may keep for the row-sliced backward: past
// them, adding the partials up costs more than the barriers it saves.
constexpr int64_t kPartialGradientBudget = int64_t(4) << 20;

template <typename T>
void coupling_mlp_bwd(const pyr_additive_coupling_mlp_bwd_params* p, const Positions& pos) {
  const int threads = thread_count(p->num_threads);
  if (gradient_size<T>(p) <= kPartialGradientBudget / int64_t(sizeof(T)) / threads)
    coupling_mlp_bwd_rows<T>(p, pos, threads);
  else
    coupling_mlp_bwd_layers<T>(p, pos, threads);
}

pyr_status check_fwd(const pyr_additive_coupling_params* p) {
  if (!p || !p->x || !p->shift || !p->y) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition)) return s;
  if (!strides_ok({{p->batch, p->stride_x_b}, {p->dim, p->stride_x_d}}) ||
      !strides_ok({{p->batch, p->stride_shift_b}, {p->partition.dim_b, p->stride_shift_d}}) ||
      !strides_ok({{p->batch, p->stride_y_b}, {p->dim, p->stride_y_d}}, true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_mlp_fwd(const pyr_additive_coupling_mlp_params* p) {
  if (!p || !p->x || !p->y) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition)) return s;
  if (pyr_status s = check_layers(p->num_layers, p->widths, p->partition, p->batch)) return s;
  for (int l = 0; l < p->num_layers; ++l)
    if (!p->weight[l] || !p->bias[l]) return PYR_ERROR_NULL_POINTER;
  // the hidden activations are saved for all layers or for none.
  for (int l = 1; l + 1 < p->num_layers; ++l)
    if (!p->hidden[l] != !p->hidden[0]) return PYR_ERROR_NULL_POINTER;
  if (!strides_ok({{p->batch, p->stride_x_b}, {p->dim, p->stride_x_d}}) ||
      !strides_ok({{p->batch, p->stride_y_b}, {p->dim, p->stride_y_d}}, true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

pyr_status check_mlp_bwd(const pyr_additive_coupling_mlp_bwd_params* p) {
  if (!p || !p->cond || !p->dy || !p->dx) return PYR_ERROR_NULL_POINTER;
  if (pyr_status s = check_common(p->dtype, p->sign, p->batch, p->dim, p->partition)) return s;
  if (pyr_status s = check_layers(p->num_layers, p->widths, p->partition, p->batch)) return s;
  for (int l = 0; l < p->num_layers; ++l)
    if (!p->weight[l] || !p->dweight[l] || !p->dbias[l]) return PYR_ERROR_NULL_POINTER;
  for (int l = 0; l + 1 < p->num_layers; ++l)
    if (!p->hidden[l]) return PYR_ERROR_NULL_POINTER;
  if (!strides_ok({{p->batch, p->stride_cond_b}, {p->dim, p->stride_cond_d}}) ||
      !strides_ok({{p->batch, p->stride_dy_b}, {p->dim, p->stride_dy_d}}) ||
      !strides_ok({{p->batch, p->stride_dx_b}, {p->dim, p->stride_dx_d}}, true))
    return PYR_ERROR_INVALID_STRIDE;
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_additive_coupling_fwd_cpu(const pyr_additive_coupling_params* p) {
  if (pyr_status s = check_fwd(p)) return s;
  return dispatch(
      p->dtype, [&] { coupling_fwd<float>(p, Positions(p->partition)); },
      [&] { coupling_fwd<double>(p, Positions(p->partition)); });
}

extern "C" pyr_status pyr_additive_coupling_mlp_fwd_cpu(const pyr_additive_coupling_mlp_params* p) {
  if (pyr_status s = check_mlp_fwd(p)) return s;
  return dispatch(
      p->dtype, [&] { coupling_mlp_fwd<float>(p, Positions(p->partition)); },
      [&] { coupling_mlp_fwd<double>(p, Positions(p->partition)); });
}

extern "C" pyr_status pyr_additive_coupling_mlp_bwd_cpu(
    const pyr_additive_coupling_mlp_bwd_params* p) {
  if (pyr_status s = check_mlp_bwd(p)) return s;
  return dispatch(
      p->dtype, [&] { coupling_mlp_bwd<float>(p, Positions(p->partition)); },
      [&] { coupling_mlp_bwd<double>(p, Positions(p->partition)); });
}
