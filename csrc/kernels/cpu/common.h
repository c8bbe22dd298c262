// Helpers shared by the CPU kernels: threads, aligned scratch, buffer strides, size bounds and
// the dtype dispatch that keeps exceptions inside the C ABI.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "cpu/gemm.h"
#include "layout.h"
#include "pyreversible/kernels.h"

namespace pyr_cpu {

using pyr_layout::kMaxElements;
using pyr_layout::strides_ok;

// Whether a * b elements stay under kMaxElements.
inline bool product_fits(int64_t a, int64_t b) {
  int64_t n;
  return !__builtin_mul_overflow(a, b, &n) && n <= kMaxElements;
}

// The threads a kernel runs on: the params' num_threads, or OpenMP's default for 0.
inline int thread_count(int32_t requested) {
  return requested > 0 ? requested : omp_get_max_threads();
}

// A 64-byte aligned array of n elements, freed with its owner. Left uninitialised: the kernels
// read no element they have not written.
template <typename T>
class Buffer {
 public:
  explicit Buffer(size_t n)
      : data_(static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)))) {}
  ~Buffer() { ::operator delete(data_, std::align_val_t(64)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return data_; }

 private:
  T* data_;
};

// sum of src[0 .. n), in vector lanes (a reduction the compiler would not reorder on its own:
// as one chain of scalar adds, summing a tile's rows took a tenth of a backward).
template <typename T>
T row_sum(const T* src, int64_t n) {
  typedef typename Vec<T>::type V;
  constexpr int L = kLanes<T>;
  V acc0{}, acc1{};
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    acc0 += load_vec(src + j);
    acc1 += load_vec(src + j + L);
  }
  acc0 += acc1;
  T sum = 0;
  for (int l = 0; l < L; ++l) sum += acc0[l];
  for (; j < n; ++j) sum += src[j];
  return sum;
}

// The row length of a buffer of n columns: whole GEMM panels of NR, and an odd number of them,
// so that consecutive rows do not map to the same few cache sets.
template <typename T>
int64_t leading_dim(int64_t n) {
  const int64_t panels = (n + kNR<T> - 1) / kNR<T>;
  return (panels | 1) * kNR<T>;
}

// Time steps per tile of a sequence kernel: as many as keep `rows` rows of a tile within
// `budget_bytes` (about the L2 a thread has), at most 512 (past that the GEMM gains nothing), in
// whole micro-kernel panels, and few enough that `sequences` sequences of `length` steps give
// every thread a few tiles.
template <typename T>
int64_t time_tile(int64_t rows, int64_t length, int64_t sequences, int64_t budget_bytes,
                  int threads) {
  constexpr int64_t NR = kNR<T>;
  int64_t tile = budget_bytes / int64_t(sizeof(T)) / rows / NR * NR;
  tile = std::max(NR, std::min<int64_t>(tile, 512));
  while (tile > NR && sequences * ((length + tile - 1) / tile) < 4 * threads) tile /= 2;
  tile = std::max(NR, tile / NR * NR);
  return std::min(tile, (length + NR - 1) / NR * NR);
}

// The columns of a strip of 16 rows that transpose_strip() moves: none here; the AVX overload
// below takes the float case.
template <typename T>
int64_t transpose_strip(const T*, int64_t, int64_t, T*, int64_t) {
  return 0;
}

#if defined(__AVX__)
// dst (8, ldd) = the transpose of the 8 x 8 floats at src (row length lds), in registers: pairs
// of rows interleaved, then pairs of pairs, then the 128-bit halves swapped into place.
inline void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[i + j] holds columns j and j + 4 of rows i .. i + 3, one per 128-bit half.
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ldd, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}

// Transposes the whole 8-column tiles of a strip of 16 rows, two 8 x 8 tiles per step, so that
// each column written fills 64 bytes of dst; returns how many columns it did.
inline int64_t transpose_strip(const float* src, int64_t lds, int64_t cols, float* dst,
                               int64_t ldd) {
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    transpose_8x8(src + c, lds, dst + c * ldd, ldd);
    transpose_8x8(src + 8 * lds + c, lds, dst + c * ldd + 8, ldd);
  }
  return c;
}
#endif

// dst (cols, rows) row-major = src (rows, cols) with row length lds: a block of activations
// back to the (batch, width) layout of a coupling layer, or a tile of a sequence to (time,
// channel) for the B of a weight gradient's GEMM. In strips of 16 source rows, so that the
// lines a strip reads stay in L1 while its columns are written.
template <typename T>
void transpose(const T* src, int64_t lds, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t kStrip = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kStrip) {
    const int64_t i1 = std::min(rows, i0 + kStrip);
    const int64_t done =
        i1 - i0 == kStrip ? transpose_strip(src + i0 * lds, lds, cols, dst + i0, rows) : 0;
    for (int64_t c = done; c < cols; ++c)
      for (int64_t i = i0; i < i1; ++i) dst[c * rows + i] = src[i * lds + c];
  }
}

// Runs f32() or f64() by the params' dtype (checked before); no exception leaves it: running
// out of memory and a status thrown by a nested kernel come back as status codes.
template <typename F32, typename F64>
pyr_status dispatch(int32_t dtype, F32 f32, F64 f64) {
  try {
    if (dtype == PYR_FLOAT32)
      f32();
    else
      f64();
    return PYR_SUCCESS;
  } catch (const std::bad_alloc&) {
    return PYR_ERROR_OUT_OF_MEMORY;
  } catch (pyr_status status) {
    return status;
  } catch (...) {
    return PYR_ERROR_INVALID_ARGUMENT;
  }
}

}  // namespace pyr_cpu
