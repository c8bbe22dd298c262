// Fast WaveNet generation on the CPU: every step of the whole network in one call.
//
// At batch 1 a step is a chain of matrix-vector products (about 0.9 M multiply-adds for the
// network of 2 stacks of 10 layers, R = G = 64, S = C = 256), whose weights (3.4 MB in float32)
// do not fit in L2: each step streams them from L3 once, so the kernel is bound by the
// bandwidth of the cache, not by FLOPs. The products therefore read each weight row once per
// step for all the batch rows a thread owns (a block of columns stays in L1 while tiles of up
// to 4 batch rows go past it) and keep their partial sums in registers; everything else a step
// touches (the taps, z, the gate, the skip sum, the head's activations, the CDF) is a few KB of
// per-thread scratch that never leaves L1.
//
// The floors at batch 1 on one core: 0.87 M multiply-adds at 16 per cycle (AVX2; 32 with
// AVX-512) is 22 us a step at 2.45 GHz; reading the 3.47 MB of matrices from L3 takes 70 us at
// the 50 GB/s a plain streaming loop reached on a Zen 3 core and 115 us at the 30 GB/s it
// reached on a Xeon core with AVX-512, so the read is the bound. Over many steps the matrices
// are therefore re-laid once per call into one arena of 64-column panels in the order of use
// (see run()), which the hardware prefetchers stream best.
//
// The gate uses the vector tanh and sigmoid of cpu/activations.h: measured against double over
// [-20, 20], at most 3.3 ulp (tanh, absolute 9e-8) and 2.5 ulp (sigmoid) from the exact values.
// The draw follows pyreversible.reference.sampling exactly: softmax of logits / temperature in
// T, the CDF accumulated in double and rounded to T at every class, #{c : cdf[c] < u}.
//
// Batch rows are independent through a whole step and through the queue, so the threads split
// the batch, each running every step for its rows with no synchronisation at all; at batch 1
// no parallel region is entered. The steps run in one loop here, so that N samples cost one
// call from Python instead of N.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/activations.h"
#include "cpu/common.h"
#include "cpu/gemm.h"
#include "pyreversible/kernels.h"

namespace {

using pyr_cpu::Buffer;
using pyr_cpu::dispatch;
using pyr_cpu::exp_vec;
using pyr_cpu::gate_halves;
using pyr_cpu::kLanes;
using pyr_cpu::kMaxElements;
using pyr_cpu::kVecBytes;
using pyr_cpu::load_vec;
using pyr_cpu::product_fits;
using pyr_cpu::store_vec;
using pyr_cpu::thread_count;

// tensors per layer in the packed weights, and the head's four after the layers
constexpr int64_t kPerLayer = 6;
constexpr int64_t kHead = 4;

// The sizes of the network and where each layer's ring buffer sits in the queue.
struct Net {
  int64_t batch, classes, residual, gate, skip, taps, layers;
  const int64_t* dilations;
};

typedef int64_t Index;

// Columns of one panel of a matrix laid out for streaming (see run()).
constexpr Index kPanel = 64;
// From this many steps on, a call lays the matrices out in panels first.
constexpr Index kPanelSteps = 16;

// y[b, c] += sum_i x[b * ldx + i] w[i * ldw + c] for NB batch rows and CW vectors of columns,
// the partial sums in registers: a weight row is loaded once and meets every batch row.
template <typename T, int NB, int CW>
inline void product_tile(Index k, const T* x, Index ldx, const T* w, Index ldw, T* y, Index ldy) {
  typedef typename pyr_cpu::Vec<T>::type V;
  constexpr int L = kLanes<T>;
  V acc[NB][CW];
  for (int b = 0; b < NB; ++b)
    for (int c = 0; c < CW; ++c) acc[b][c] = load_vec(y + b * ldy + c * L);
  for (Index i = 0; i < k; ++i) {
    V wv[CW];
    for (int c = 0; c < CW; ++c) wv[c] = load_vec(w + i * ldw + c * L);
    for (int b = 0; b < NB; ++b) {
      const T s = x[b * ldx + i];
      for (int c = 0; c < CW; ++c) acc[b][c] += s * wv[c];
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int c = 0; c < CW; ++c) store_vec(y + b * ldy + c * L, acc[b][c]);
}

// The columns [c0, c1) of NB batch rows: blocks of CW vectors, then single vectors, then the
// columns left over one by one. At one row CW is up to 8 (independent FMA chains that cover the
// FMA latency) as a panel's width allows (4 vectors of 16 floats fill a panel of 64 columns);
// from 2 rows on it is 4, NB x 4 accumulators for NB up to kTileRows.
template <typename T, int NB>
inline void product_rows(Index k, const T* x, Index ldx, const T* w, Index ldw, T* y, Index ldy,
                         Index c0, Index c1) {
  constexpr int L = kLanes<T>;
  constexpr int CW = NB == 1 ? std::min<int>(8, kPanel / L) : 4;
  Index c = c0;
  for (; c + CW * L <= c1; c += CW * L) product_tile<T, NB, CW>(k, x, ldx, w + c, ldw, y + c, ldy);
  for (; c + L <= c1; c += L) product_tile<T, NB, 1>(k, x, ldx, w + c, ldw, y + c, ldy);
  for (; c < c1; ++c)
    for (int b = 0; b < NB; ++b) {
      T s = y[b * ldy + c];
      for (Index i = 0; i < k; ++i) s += x[b * ldx + i] * w[i * ldw + c];
      y[b * ldy + c] = s;
    }
}

template <typename T, int NB>
inline void product_rows_n(int nb, Index k, const T* x, Index ldx, const T* w, Index ldw, T* y,
                           Index ldy, Index c0, Index c1) {
  if constexpr (NB > 1) {
    if (nb < NB) return product_rows_n<T, NB - 1>(nb, k, x, ldx, w, ldw, y, ldy, c0, c1);
  }
  product_rows<T, NB>(k, x, ldx, w, ldw, y, ldy, c0, c1);
}

// Batch rows per tile from 4 rows on: as many as the vector registers hold with 4 vectors of
// columns each (6 x 4 accumulators of the 32 registers of AVX-512: 17% more samples/s at batch
// 16 than 3 rows; 3 x 4 of AVX2's 16).
constexpr int kTileRows = kVecBytes == 64 ? 6 : 3;

// y (rows, n) += x (rows, k) w (k, n), w row-major (in, out) as pack_weights lays it out. Up to
// 3 rows run as one tile over all columns; from 4 rows on, each block of 4 vectors of columns
// (k rows of 128 or 256 bytes, near L1) is taken by every tile of kTileRows rows before the next
// block is read, so that the matrix comes from L3 once per step whatever the batch.
template <typename T>
void product(Index rows, Index k, const T* x, Index ldx, const T* w, Index n, T* y, Index ldy) {
  constexpr Index kBlock = 4 * kLanes<T>;
  if (rows < 4) {
    product_rows_n<T, 3>(static_cast<int>(rows), k, x, ldx, w, n, y, ldy, 0, n);
    return;
  }
  for (Index c = 0; c < n; c += kBlock) {
    const Index c1 = std::min(n, c + kBlock);
    for (Index r = 0; r < rows; r += kTileRows)
      product_rows_n<T, kTileRows>(static_cast<int>(std::min<Index>(kTileRows, rows - r)), k,
                                   x + r * ldx, ldx, w, n, y + r * ldy, ldy, c, c1);
  }
}

// product() over a matrix stored as panels of `panel` columns, each (k, width) row-major and
// the panels one after the other; panel 0 is the plain row-major layout.
template <typename T>
void product_panels(Index rows, Index k, const T* x, Index ldx, const T* w, Index n, Index panel,
                    T* y, Index ldy) {
  if (panel <= 0 || panel >= n) return product(rows, k, x, ldx, w, n, y, ldy);
  for (Index c0 = 0; c0 < n; c0 += panel)
    product(rows, k, x, ldx, w + c0 * k, std::min(panel, n - c0), y + c0, ldy);
}

// Copies the (k, n) row-major matrix `w` into panels of `panel` columns at `dst`.
template <typename T>
void pack_panels(const T* w, Index k, Index n, Index panel, T* dst) {
  for (Index c0 = 0; c0 < n; c0 += panel) {
    const Index width = std::min(panel, n - c0);
    for (Index i = 0; i < k; ++i)
      std::memcpy(dst + c0 * k + i * width, w + i * n + c0, width * sizeof(T));
  }
}

// The class drawn from one row of logits: #{c : cdf[c] < u} clamped to C - 1, with cdf =
// cumsum(softmax(logits / temperature)) rounded to T at every element. As torch does on the
// CPU, the softmax divides by the temperature, scales by 1 / sum, and the cumulative sum runs
// in double.
template <typename T>
int64_t draw(const T* logits, Index classes, T temperature, float u, T* work) {
  T top = -std::numeric_limits<T>::infinity();
  bool nan = false;
  for (Index c = 0; c < classes; ++c) {
    work[c] = logits[c] / temperature;
    nan |= std::isnan(work[c]);
    top = std::max(top, work[c]);
  }
  // a NaN logit makes every probability NaN, every comparison false and the sample 0; an
  // infinite maximum makes NaN too (inf - inf), as in torch
  if (nan) return 0;
  Index c = 0;
  if constexpr (std::is_same_v<T, float>) {
    constexpr int L = kLanes<float>;
    for (; c + L <= classes; c += L) store_vec(work + c, exp_vec(load_vec(work + c) - top));
  }
  for (; c < classes; ++c) work[c] = std::exp(work[c] - top);
  double total = 0;
  for (c = 0; c < classes; ++c) total += work[c];
  const T scale = T(1) / static_cast<T>(total);
  double cdf = 0;
  const T threshold = static_cast<T>(u);
  int64_t count = 0;
  for (c = 0; c < classes; ++c) {
    cdf += static_cast<double>(work[c] * scale);
    count += static_cast<T>(cdf) < threshold;
  }
  return std::min<int64_t>(count, classes - 1);
}

// Scratch of one thread for `rows` batch rows, in elements of T.
struct Scratch {
  Index taps, z, gates, skip, hidden, logits, work, total;
  Scratch(const Net& n, Index rows) {
    // each array starts on a 64-byte line: rounded to 16 elements
    auto up = [](Index v) { return (v + 15) / 16 * 16; };
    taps = 0;
    z = taps + up(rows * n.taps * n.residual);
    gates = z + up(rows * 2 * n.gate);
    skip = gates + up(rows * 2 * n.gate);
    hidden = skip + up(rows * n.skip);
    logits = hidden + up(rows * n.skip);
    work = logits + up(rows * n.classes);
    total = work + up(n.classes);
  }
};

// Runs every step for the batch rows [b0, b0 + rows). mats[i] is weight i's matrix as the
// products read it: in panels of `panel` columns, or the packed weight itself for panel 0.
template <typename T>
void run_rows(const pyr_wavenet_step_params* p, const Net& n, Index b0, Index rows,
              const T* const* mats, Index panel, T* scratch) {
  const Scratch at(n, rows);
  const Index R = n.residual, G = n.gate, S = n.skip, C = n.classes, K = n.taps;
  const Index in = K * R, ldq = p->queue_rows * R;
  T* taps = scratch + at.taps;  // (rows, K R): tap k of row b at b K R + k R; h_l is tap K - 1
  T* z = scratch + at.z;        // (rows, 2G)
  T* gates = scratch + at.gates;
  T* skip = scratch + at.skip;  // (rows, S)
  T* hidden = scratch + at.hidden;
  T* logits = scratch + at.logits;
  T* work = scratch + at.work;
  const T* const* w = reinterpret_cast<const T* const*>(p->weights);
  T* queue = static_cast<T*>(p->queue);
  const T* cond = static_cast<const T*>(p->cond);
  const T temperature = static_cast<T>(p->temperature);
  const T* embedding = w[0];
  const T* const* head = w + 1 + kPerLayer * n.layers;

  for (Index s = 0; s < p->steps; ++s) {
    const Index t = p->position + s;
    const int64_t* x = s == 0 ? p->x + b0 : p->samples + (s - 1) * n.batch + b0;
    for (Index b = 0; b < rows; ++b) {
      T* h = taps + b * in + (K - 1) * R;
      if (t > 0)
        std::memcpy(h, embedding + x[b] * R, R * sizeof(T));
      else
        std::fill(h, h + R, T(0));
      std::fill(skip + b * S, skip + (b + 1) * S, T(0));
    }

    Index offset = 0;
    for (Index l = 0; l < n.layers; ++l) {
      const T* const* lw = w + 1 + kPerLayer * l;
      const Index length = (K - 1) * n.dilations[l];
      // the older taps from the ring buffer, then the layer's input takes the oldest's row
      if (length > 0) {
        const Index now = t % length;
        for (Index b = 0; b < rows; ++b) {
          T* q = queue + (b0 + b) * ldq + offset * R;
          for (Index k = 0; k < K - 1; ++k) {
            const Index row = (now + length - (K - 1 - k) * n.dilations[l]) % length;
            std::memcpy(taps + b * in + k * R, q + row * R, R * sizeof(T));
          }
          std::memcpy(q + now * R, taps + b * in + (K - 1) * R, R * sizeof(T));
        }
      }

      for (Index b = 0; b < rows; ++b) {
        std::memcpy(z + b * 2 * G, lw[1], 2 * G * sizeof(T));
        if (cond) {
          const T* c = cond + ((s * n.batch + b0 + b) * n.layers + l) * 2 * G;
          for (Index o = 0; o < 2 * G; ++o) z[b * 2 * G + o] += c[o];
        }
      }
      const T* const* lm = mats + 1 + kPerLayer * l;
      product_panels(rows, in, taps, in, lm[0], 2 * G, panel, z, 2 * G);

      // the gate, a = tanh(z[:G]) sigmoid(z[G:]), written over tanh's half of `gates`
      for (Index b = 0; b < rows; ++b) {
        T* a = gates + b * 2 * G;
        gate_halves(z + b * 2 * G, z + b * 2 * G + G, a, a + G, G);
        for (Index o = 0; o < G; ++o) a[o] *= a[G + o];
      }

      for (Index b = 0; b < rows; ++b) {
        T* sk = skip + b * S;
        for (Index o = 0; o < S; ++o) sk[o] += lw[5][o];
        T* h = taps + b * in + (K - 1) * R;
        for (Index o = 0; o < R; ++o) h[o] += lw[3][o];
      }
      product_panels(rows, G, gates, 2 * G, lm[4], S, panel, skip, S);
      product_panels(rows, G, gates, 2 * G, lm[2], R, panel, taps + (K - 1) * R, in);
      offset += length;
    }

    // the head: relu, head 1x1, relu, out 1x1
    for (Index b = 0; b < rows; ++b) {
      for (Index o = 0; o < S; ++o)
        skip[b * S + o] = skip[b * S + o] < T(0) ? T(0) : skip[b * S + o];
      std::memcpy(hidden + b * S, head[1], S * sizeof(T));
      std::memcpy(logits + b * C, head[3], C * sizeof(T));
    }
    const T* const* head_m = mats + 1 + kPerLayer * n.layers;
    product_panels(rows, S, skip, S, head_m[0], S, panel, hidden, S);
    for (Index i = 0; i < rows * S; ++i) hidden[i] = hidden[i] < T(0) ? T(0) : hidden[i];
    product_panels(rows, S, hidden, S, head_m[2], C, panel, logits, C);

    for (Index b = 0; b < rows; ++b)
      p->samples[s * n.batch + b0 + b] =
          draw(logits + b * C, C, temperature, p->uniform[s * n.batch + b0 + b], work);
    if (s == p->steps - 1 && p->logits)
      std::memcpy(static_cast<T*>(p->logits) + b0 * C, logits, rows * C * sizeof(T));
  }
}

template <typename T>
void run(const pyr_wavenet_step_params* p) {
  const Net n{p->batch,         p->classes,     p->residual_channels, p->gate_channels,
              p->skip_channels, p->kernel_size, p->num_layers,        p->dilations};
  // each thread owns a contiguous block of batch rows for every step
  const int threads = static_cast<int>(std::min<int64_t>(thread_count(p->num_threads), n.batch));
  const Index per_thread = (n.batch + threads - 1) / threads;
  const Index stride = Scratch(n, per_thread).total;
  // allocated before the parallel region: no exception may leave an OpenMP thread
  Buffer<T> scratch(static_cast<size_t>(stride * threads));

  // Over many steps, the matrices are first copied into one arena, in the order the products
  // read them and each in panels of kPanel columns, so that a step reads the network as one
  // sequential stream (the hardware prefetchers' best case) instead of a strided block per
  // column block per matrix; the copy costs about one step's reads.
  const T* const* w = reinterpret_cast<const T* const*>(p->weights);
  std::vector<const T*> mats(w, w + p->num_weights);
  const bool panels = p->steps >= kPanelSteps;
  std::vector<std::pair<Index, Index>> shapes(p->num_weights, {0, 0});
  for (Index l = 0; l < n.layers; ++l) {
    shapes[1 + kPerLayer * l] = {n.taps * n.residual, 2 * n.gate};
    shapes[1 + kPerLayer * l + 4] = {n.gate, n.skip};
    shapes[1 + kPerLayer * l + 2] = {n.gate, n.residual};
  }
  shapes[1 + kPerLayer * n.layers] = {n.skip, n.skip};
  shapes[1 + kPerLayer * n.layers + 2] = {n.skip, n.classes};
  Index total = 0;
  for (const auto& [k, cols] : shapes) total += panels ? k * cols : 0;
  Buffer<T> arena(static_cast<size_t>(std::max<Index>(total, 1)));
  if (panels) {
    Index at = 0;
    // layer by layer in the order of use: conv, skip, residual; then the head
    std::vector<Index> order;
    for (Index l = 0; l < n.layers; ++l)
      for (Index j : {0, 4, 2}) order.push_back(1 + kPerLayer * l + j);
    order.push_back(1 + kPerLayer * n.layers);
    order.push_back(1 + kPerLayer * n.layers + 2);
    for (Index i : order) {
      pack_panels(w[i], shapes[i].first, shapes[i].second, kPanel, arena.get() + at);
      mats[i] = arena.get() + at;
      at += shapes[i].first * shapes[i].second;
    }
  }
  const Index panel = panels ? kPanel : 0;

  if (threads == 1) {
    run_rows<T>(p, n, 0, n.batch, mats.data(), panel, scratch.get());
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const Index b0 = omp_get_thread_num() * per_thread;
    const Index rows = std::min(per_thread, n.batch - b0);
    if (rows > 0)
      run_rows<T>(p, n, b0, rows, mats.data(), panel,
                  scratch.get() + omp_get_thread_num() * stride);
  }
}

}  // namespace

namespace pyr_cpu {

// The checks of every size, pointer and argument of the params but the dtype, shared with the
// CUDA entry point; x (host memory) is read only when read_x.
pyr_status check_wavenet_step(const pyr_wavenet_step_params* p, bool read_x) {
  for (int64_t size : {p->batch, p->classes, p->residual_channels, p->gate_channels,
                       p->skip_channels, p->kernel_size, p->num_layers, p->steps})
    if (size < 1 || size > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  if (!p->dilations || !p->weights || !p->x || !p->uniform || !p->samples)
    return PYR_ERROR_NULL_POINTER;
  if (p->num_weights != 1 + kPerLayer * p->num_layers + kHead) return PYR_ERROR_INVALID_SIZE;
  for (int64_t i = 0; i < p->num_weights; ++i)
    if (!p->weights[i]) return PYR_ERROR_NULL_POINTER;
  // the weights, the conditioning, the outputs and the queue must all be indexable
  const int64_t wide =
      std::max({p->classes, p->residual_channels, 2 * p->gate_channels, p->skip_channels});
  if (!product_fits(wide, wide) || !product_fits(p->kernel_size * p->residual_channels, wide) ||
      !product_fits(p->steps, p->batch) ||
      !product_fits(p->steps * p->batch, p->num_layers * 2 * p->gate_channels) ||
      !product_fits(p->batch, p->classes))
    return PYR_ERROR_INVALID_SIZE;
  int64_t rows = 0;
  for (int64_t l = 0; l < p->num_layers; ++l) {
    if (p->dilations[l] < 1) return PYR_ERROR_INVALID_ARGUMENT;
    if (!product_fits(p->kernel_size - 1, p->dilations[l])) return PYR_ERROR_INVALID_SIZE;
    rows += (p->kernel_size - 1) * p->dilations[l];
    if (rows > kMaxElements) return PYR_ERROR_INVALID_SIZE;
  }
  if (rows != p->queue_rows || !product_fits(rows, p->residual_channels) ||
      !product_fits(p->batch, rows * p->residual_channels))
    return PYR_ERROR_INVALID_SIZE;
  if (rows > 0 && !p->queue) return PYR_ERROR_NULL_POINTER;
  if (p->position < 0 || p->position > kMaxElements - p->steps) return PYR_ERROR_INVALID_ARGUMENT;
  if (!(p->temperature > 0) || !std::isfinite(p->temperature)) return PYR_ERROR_INVALID_ARGUMENT;
  // the embedding row of x is read at the first step: an index outside [0, C) never is (a
  // device kernel, whose x lies in device memory, checks it as it reads it)
  if (read_x && p->position > 0)
    for (int64_t b = 0; b < p->batch; ++b)
      if (p->x[b] < 0 || p->x[b] >= p->classes) return PYR_ERROR_INVALID_ARGUMENT;
  return PYR_SUCCESS;
}

}  // namespace pyr_cpu

extern "C" pyr_status pyr_wavenet_step_cpu(const pyr_wavenet_step_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT64) return PYR_ERROR_UNSUPPORTED_DTYPE;
  const pyr_status status = pyr_cpu::check_wavenet_step(p, true);
  if (status != PYR_SUCCESS) return status;
  return dispatch(p->dtype, [&] { run<float>(p); }, [&] { run<double>(p); });
}
