// The elementwise part of a reversible block on the CPU: out[t] = a[t] + sign[t] * c[t] for one
// or two terms, in one pass over (batch, dim). The op is memory bound (two reads and a write
// per element and term, no reuse), so the kernel streams: rows are cut into chunks that the
// threads share, each chunk's terms done back to back, and unit-stride rows take a loop the
// compiler vectorises. Small arrays stay on one thread, where waking the others costs more than
// the pass.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "cpu/common.h"
#include "pyreversible/kernels.h"

namespace {

using pyr_cpu::dispatch;
using pyr_cpu::thread_count;

// Elements per chunk of a row: 16 KiB of float32 per array, a few pages the prefetcher follows.
constexpr int64_t kChunk = 4096;

// Below this many elements (per term) one thread does the pass.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// Elements [begin, end) of row b of one term.
template <typename T>
void update(const pyr_reversible_block_term& term, int64_t b, int64_t begin, int64_t end) {
  const T* a = static_cast<const T*>(term.a) + b * term.stride_a_b;
  const T* c = static_cast<const T*>(term.c) + b * term.stride_c_b;
  T* out = static_cast<T*>(term.out) + b * term.stride_out_b;
  const T sign = static_cast<T>(term.sign);
  if (term.stride_a_d == 1 && term.stride_c_d == 1 && term.stride_out_d == 1) {
    // out may be a itself: each element is read before it is written, at the same index
#pragma omp simd
    for (int64_t j = begin; j < end; ++j) out[j] = a[j] + sign * c[j];
    return;
  }
  for (int64_t j = begin; j < end; ++j)
    out[j * term.stride_out_d] = a[j * term.stride_a_d] + sign * c[j * term.stride_c_d];
}

template <typename T>
void reversible_block(const pyr_reversible_block_params* p) {
  const int64_t chunks_per_row = (p->dim + kChunk - 1) / kChunk;
  const int64_t chunks = p->batch * chunks_per_row;
  const int threads = p->batch * p->dim < kParallelMin ? 1 : thread_count(p->num_threads);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t b = chunk / chunks_per_row;
    const int64_t begin = (chunk % chunks_per_row) * kChunk;
    const int64_t end = std::min(begin + kChunk, p->dim);
    for (int t = 0; t < p->num_terms; ++t) update<T>(p->terms[t], b, begin, end);
  }
}

}  // namespace

namespace pyr_cpu {

// Every check of the params but the dtype, shared with the CUDA entry point so that both refuse
// the same arguments with the same codes.
pyr_status check_reversible_block(const pyr_reversible_block_params* p) {
  if (p->num_terms != 1 && p->num_terms != 2) return PYR_ERROR_INVALID_ARGUMENT;
  for (int t = 0; t < p->num_terms; ++t)
    if (p->terms[t].sign != 1 && p->terms[t].sign != -1) return PYR_ERROR_INVALID_ARGUMENT;
  if (p->batch < 0 || p->dim < 0 || p->batch > kMaxElements || p->dim > kMaxElements ||
      !product_fits(p->batch, p->dim))
    return PYR_ERROR_INVALID_SIZE;
  // empty arrays (whose pointers torch leaves null) are valid, and nothing is done
  if (p->batch == 0 || p->dim == 0) return PYR_SUCCESS;
  for (int t = 0; t < p->num_terms; ++t) {
    const pyr_reversible_block_term& term = p->terms[t];
    if (!term.a || !term.c || !term.out) return PYR_ERROR_NULL_POINTER;
    if (!strides_ok({{p->batch, term.stride_a_b}, {p->dim, term.stride_a_d}}) ||
        !strides_ok({{p->batch, term.stride_c_b}, {p->dim, term.stride_c_d}}) ||
        !strides_ok({{p->batch, term.stride_out_b}, {p->dim, term.stride_out_d}}, true))
      return PYR_ERROR_INVALID_STRIDE;
  }
  return PYR_SUCCESS;
}

}  // namespace pyr_cpu

extern "C" pyr_status pyr_reversible_block_cpu(const pyr_reversible_block_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT64) return PYR_ERROR_UNSUPPORTED_DTYPE;
  if (pyr_status s = pyr_cpu::check_reversible_block(p)) return s;
  if (p->batch == 0 || p->dim == 0) return PYR_SUCCESS;
  return dispatch(
      p->dtype, [&] { reversible_block<float>(p); }, [&] { reversible_block<double>(p); });
}
