// Helpers shared by the CPU kernels: threads, aligned scratch, buffer strides, size bounds and
// the dtype dispatch that keeps exceptions inside the C ABI.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>

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
