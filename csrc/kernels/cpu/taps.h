// The taps of a causal dilated convolution, shared by the CPU kernels that run one
// (causal_conv1d, wavenet_layer): gathering shifted windows of a sequence into one block, so
// that every tap's channel mixing is a single GEMM, and the correction of dx's end columns when
// the weight is not finite.
//
// `S` is a kernel's shape: it gives `taps`, `length` and `shift(k)`, how far back in time tap k
// reads (tap K - 1 is the current step).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace pyr_cpu {

// Gathers the taps of `channels` rows of src (channel stride sc, time stride st) for the nt time
// steps from t0: row i * K + k of `tile` holds src[i, t0 + n + direction * shift(k)], and 0
// where that time is outside [0, length). direction -1 reads the past (a forward's x), +1 the
// future (a backward's dy).
template <typename T, typename S>
void gather_taps(const T* src, int64_t sc, int64_t st, int64_t channels, const S& s, int64_t t0,
                 int64_t nt, int64_t direction, T* tile, int64_t ld) {
  for (int64_t k = 0; k < s.taps; ++k) {
    const int64_t start = t0 + direction * s.shift(k);
    // the columns n whose time start + n lies inside the sequence: [lo, hi)
    const int64_t lo = std::min(nt, std::max<int64_t>(0, -start));
    const int64_t hi = std::max(lo, std::min(nt, s.length - start));
    for (int64_t i = 0; i < channels; ++i) {
      T* row = tile + (i * s.taps + k) * ld;
      const T* in = src + i * sc;
      std::fill(row, row + lo, T(0));
      if (st == 1) {
        std::memcpy(row + lo, in + start + lo, (hi - lo) * sizeof(T));
      } else {
        for (int64_t n = lo; n < hi; ++n) row[n] = in[(start + n) * st];
      }
      std::fill(row + hi, row + nt, T(0));
    }
  }
}

// dx = W^T (the future taps of dy), computed as one GEMM of the gathered taps, gives the taps
// that read past the end of dy w * 0. The reference has no such terms (it pads only the past),
// so with a NaN or infinite weight the columns they reach are recomputed here without them.
// w_t: the weight as (rows_out, channels * K), taps: the gathered future taps (ld), c: the
// rows_out x nt result (ldc).
template <typename T, typename S>
void drop_taps_past_end(const T* w_t, int64_t rows_out, int64_t channels, const T* taps, int64_t ld,
                        const S& s, int64_t t0, int64_t nt, T* c, int64_t ldc) {
  const int64_t rows_in = channels * s.taps;
  const int64_t first = std::max<int64_t>(0, s.length - s.shift(0) - t0);
  for (int64_t i = 0; i < rows_out; ++i)
    for (int64_t n = first; n < nt; ++n) {
      T sum = 0;
      for (int64_t r = 0; r < rows_in; ++r)
        if (t0 + n + s.shift(r % s.taps) < s.length) sum += w_t[i * rows_in + r] * taps[r * ld + n];
      c[i * ldc + n] = sum;
    }
}

}  // namespace pyr_cpu
