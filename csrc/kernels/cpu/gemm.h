// A small register-blocked GEMM for the CPU kernels: C = init + A B, optionally followed by
// ReLU. A is read through two element strides (so it can be a matrix or a transposed one without
// a copy), B row-major with contiguous columns, C row-major. Written with GCC vector extensions:
// with -march=native each vector is one zmm register on an AVX-512 machine and one ymm register
// on an AVX2 machine, and the multiply-add contracts to an FMA; elsewhere the compiler lowers the
// same code to what the target has.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace pyr_cpu {

// Bytes of one vector: a zmm register where the target has AVX-512, else 32 bytes (one AVX
// register, two SSE/NEON ones).
#ifdef __AVX512F__
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};

template <typename T>
constexpr int kLanes = kVecBytes / sizeof(T);

// The micro-kernel's tile: MR rows of A times NV vectors of B (NR columns). With AVX-512, 6 x 4
// accumulators, four B vectors and a broadcast take 29 of the 32 registers, and 24 FMAs per
// step of k share 10 loads; with AVX2's 16 registers, 6 x 2 (15 registers, 12 FMAs per 8
// loads). Measured on a 2-vCPU AVX-512 Xeon, 6 x 4 against 6 x 2 took the training step of a
// NICE coupling layer (mnist, B=256) from 36.4-39.1 to 33.8-34.2 ms and causal_conv1d's (bench
// conv, K=3) from 58.2-58.8 to 52.7-53.0 ms; the narrow coupling layer (width 128) lost about 3%.
constexpr int kMR = 6;
constexpr int kNV = kVecBytes == 64 ? 4 : 2;
template <typename T>
constexpr int kNR = kNV * kLanes<T>;

// Blocking of k (so that a KC x NR panel of B stays near L1 while rows of A go past it) and of
// the rows of A (so that an MC x KC block of A stays in L2). Chosen by measurement on Zen 3 (AVX2);
// with AVX-512's wider panels (128 KiB at KC = 512, in L2), KC = 256 measured no different.
constexpr int64_t kKC = 512;
constexpr int64_t kMC = 96;

template <typename T>
inline typename Vec<T>::type load_vec(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store_vec(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// How a tile's accumulators start: at zero, at a per-row bias, or at the current C (a later
// block of k, or an accumulating GEMM).
enum class Init { kZero, kBias, kLoad };

// The operands of one GEMM: A(i, k) = a[i * sam + k * sak], B(k, n) = b[k * ldb + n],
// C(i, n) = c[i * ldc + n].
template <typename T>
struct Gemm {
  int64_t m, n, k;
  const T* a;
  int64_t sam, sak;
  const T* b;
  int64_t ldb;
  T* c;
  int64_t ldc;
  // per-row bias added before the products (may be null) and ReLU applied after them.
  const T* bias;
  bool relu;
  // C += A B instead of C = A B (the bias is then ignored): a sum over blocks of k computed by
  // separate calls, such as a weight gradient over several blocks of the batch.
  bool accumulate = false;
  // Row k of B at b + b_rows[k] instead of b + k * ldb: a B stacked from shifted windows of one
  // buffer, such as every tap of a convolution in one product.
  const int64_t* b_rows = nullptr;
};

// One MR x (NV vectors) tile of C over kc steps of k, b a packed panel (NV * L columns,
// zero-padded past the matrix). Only the first n_valid columns of C are touched.
template <typename T, int MR, int NV>
inline void micro_kernel(int64_t kc, const T* a, int64_t sam, int64_t sak, const T* b, T* c,
                         int64_t ldc, int n_valid, Init init, const T* bias, bool relu) {
  typedef typename Vec<T>::type V;
  constexpr int L = kLanes<T>;
  constexpr int NR = NV * L;
  V acc[MR][NV];

  for (int i = 0; i < MR; ++i) {
    if (init == Init::kLoad && n_valid == NR) {
      for (int v = 0; v < NV; ++v) acc[i][v] = load_vec(c + i * ldc + v * L);
    } else if (init == Init::kLoad) {
      // a partial tile goes through a copy so that nothing past the matrix is read.
      T tile[NR] = {};
      std::memcpy(tile, c + i * ldc, n_valid * sizeof(T));
      for (int v = 0; v < NV; ++v) acc[i][v] = load_vec(tile + v * L);
    } else {
      T start = init == Init::kBias ? bias[i] : T(0);
      for (int v = 0; v < NV; ++v) acc[i][v] = V{} + start;
    }
  }

  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load_vec(b + v * L);
    b += NR;
    for (int i = 0; i < MR; ++i) {
      T s = a[i * sam];
      for (int v = 0; v < NV; ++v) acc[i][v] += s * bv[v];
    }
    a += sak;
  }

  for (int i = 0; i < MR; ++i) {
    // written as "negative -> 0" so that a NaN stays NaN, as torch.relu leaves it.
    if (relu)
      for (int v = 0; v < NV; ++v) acc[i][v] = acc[i][v] < V{} ? V{} : acc[i][v];
    if (n_valid == NR) {
      for (int v = 0; v < NV; ++v) store_vec(c + i * ldc + v * L, acc[i][v]);
    } else {
      T tile[NR];
      for (int v = 0; v < NV; ++v) store_vec(tile + v * L, acc[i][v]);
      std::memcpy(c + i * ldc, tile, n_valid * sizeof(T));
    }
  }
}

// The rows left over by MR get a kernel of their own height instead of a scalar loop.
template <typename T, int NV>
inline void micro_kernel_rows(int mr, int64_t kc, const T* a, int64_t sam, int64_t sak, const T* b,
                              T* c, int64_t ldc, int n_valid, Init init, const T* bias, bool relu) {
  switch (mr) {
    case 6:
      micro_kernel<T, 6, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
      break;
    case 5:
      micro_kernel<T, 5, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
      break;
    case 4:
      micro_kernel<T, 4, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
      break;
    case 3:
      micro_kernel<T, 3, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
      break;
    case 2:
      micro_kernel<T, 2, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
      break;
    default:
      micro_kernel<T, 1, NV>(kc, a, sam, sak, b, c, ldc, n_valid, init, bias, relu);
  }
}

// Copies kc rows of n_valid <= NV * L columns of B, row p starting at row(p), into a contiguous
// panel, zeroing the columns past n_valid. Read straight from B, the kc rows of a panel lie ldb
// apart, and when that distance is a multiple of a page fraction they all fall into a few sets
// of L1 and evict each other; the packed panel is one contiguous block that stays in cache while
// the rows of A go past.
template <int NV, typename T, typename Row>
inline void pack_panel(int64_t kc, Row row, int n_valid, T* panel) {
  constexpr int L = kLanes<T>;
  constexpr int NR = NV * L;
  if (n_valid == NR) {
    for (int64_t p = 0; p < kc; ++p) {
      const T* b = row(p);
      for (int v = 0; v < NV; ++v) store_vec(panel + p * NR + v * L, load_vec(b + v * L));
    }
    return;
  }
  for (int64_t p = 0; p < kc; ++p) {
    std::memcpy(panel + p * NR, row(p), n_valid * sizeof(T));
    std::fill(panel + p * NR + n_valid, panel + (p + 1) * NR, T(0));
  }
}

// One panel of NV vectors of B (columns n0 .. n0 + n_valid) through rows m0 .. m0 + mc of A.
template <int NV, typename T>
inline void gemm_panel(const Gemm<T>& g, int64_t m0, int64_t mc, int64_t k0, int64_t kc, int64_t n0,
                       int n_valid, Init init, bool relu, T* panel) {
  const T* b = g.b + n0;
  if (g.b_rows)
    pack_panel<NV>(kc, [&](int64_t p) { return b + g.b_rows[k0 + p]; }, n_valid, panel);
  else
    pack_panel<NV>(kc, [&](int64_t p) { return b + (k0 + p) * g.ldb; }, n_valid, panel);
  for (int64_t i = m0; i < m0 + mc; i += kMR) {
    const int mr = static_cast<int>(std::min<int64_t>(kMR, m0 + mc - i));
    micro_kernel_rows<T, NV>(mr, kc, g.a + i * g.sam + k0 * g.sak, g.sam, g.sak, panel,
                             g.c + i * g.ldc + n0, g.ldc, n_valid, init,
                             g.bias ? g.bias + i : nullptr, relu);
  }
}

// Elements of scratch one thread needs for gemm(): one packed panel of B.
template <typename T>
constexpr int64_t gemm_scratch_size() {
  return kKC * kNR<T>;
}

// One mc x kc block of A times the kc x n block of B below it, into C's rows m0 .. m0 + mc; a
// last panel of half the width or less runs on half the vectors, so that a narrow matrix does
// not pay for a panel of zeros.
template <typename T>
inline void gemm_block(const Gemm<T>& g, int64_t m0, int64_t mc, int64_t k0, int64_t kc, T* panel) {
  constexpr int NR = kNR<T>;
  const Init init = k0 > 0 || g.accumulate ? Init::kLoad : (g.bias ? Init::kBias : Init::kZero);
  const bool relu = g.relu && k0 + kc == g.k;
  for (int64_t n0 = 0; n0 < g.n; n0 += NR) {
    const int n_valid = static_cast<int>(std::min<int64_t>(NR, g.n - n0));
    if (kNV > 1 && n_valid <= NR / 2)
      gemm_panel<kNV / 2>(g, m0, mc, k0, kc, n0, n_valid, init, relu, panel);
    else
      gemm_panel<kNV>(g, m0, mc, k0, kc, n0, n_valid, init, relu, panel);
  }
}

// C = (bias, 0, or C when accumulating) + A B, then ReLU when asked; single-threaded (callers
// split the work).
// scratch: gemm_scratch_size<T>() elements. A is read in place: a packed copy cost more than it
// saved at the sizes measured.
template <typename T>
void gemm(const Gemm<T>& g, T* scratch) {
  if (g.k <= 2 * kKC) {
    // a layer (k up to a few hundred or a thousand): the k blocks of one block of rows run back
    // to back, so its tile of C stays in cache and the rows of A are read once; B, re-read for
    // every block of rows, is the small operand here (a block of the batch).
    for (int64_t m0 = 0; m0 < g.m; m0 += kMC)
      for (int64_t k0 = 0; k0 < g.k; k0 += kKC)
        gemm_block(g, m0, std::min(kMC, g.m - m0), k0, std::min(kKC, g.k - k0), scratch);
    return;
  }
  // a reduction over a long k (the batch, for a weight gradient): C is the small operand, kept
  // in cache while the long A and B stream past it.
  for (int64_t k0 = 0; k0 < g.k; k0 += kKC)
    for (int64_t m0 = 0; m0 < g.m; m0 += kMC)
      gemm_block(g, m0, std::min(kMC, g.m - m0), k0, std::min(kKC, g.k - k0), scratch);
}

}  // namespace pyr_cpu
