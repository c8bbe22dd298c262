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

// The micro-kernel's tile: MR rows of A times NR columns of B. 6 x 2 accumulators, two B vectors
// and one broadcast use 15 of the 16 AVX2 registers (of the 32 of AVX-512), and 12 FMAs per step
// of k hide the load latency of the two B vectors.
constexpr int kMR = 6;
template <typename T>
constexpr int kNR = 2 * kLanes<T>;

// Blocking of k (so that a KC x NR panel of B stays near L1 while rows of A go past it) and of
// the rows of A (so that an MC x KC block of A stays in L2). Chosen by measurement on Zen 3 (AVX2).
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

// One MR x NR tile of C over kc steps of k, b a packed panel (NR columns, zero-padded past the
// matrix). Only the first n_valid columns of C are touched.
template <typename T, int MR>
inline void micro_kernel(int64_t kc, const T* a, int64_t sam, int64_t sak, const T* b, int64_t ldb,
                         T* c, int64_t ldc, int n_valid, Init init, const T* bias, bool relu) {
  typedef typename Vec<T>::type V;
  constexpr int L = kLanes<T>;
  constexpr int NR = kNR<T>;
  V acc[MR][2];

  for (int i = 0; i < MR; ++i) {
    if (init == Init::kLoad && n_valid == NR) {
      acc[i][0] = load_vec(c + i * ldc);
      acc[i][1] = load_vec(c + i * ldc + L);
    } else if (init == Init::kLoad) {
      // a partial tile goes through a copy so that nothing past the matrix is read.
      T tile[NR] = {};
      std::memcpy(tile, c + i * ldc, n_valid * sizeof(T));
      acc[i][0] = load_vec(tile);
      acc[i][1] = load_vec(tile + L);
    } else {
      T start = init == Init::kBias ? bias[i] : T(0);
      acc[i][0] = V{} + start;
      acc[i][1] = V{} + start;
    }
  }

  for (int64_t p = 0; p < kc; ++p) {
    V b0 = load_vec(b);
    V b1 = load_vec(b + L);
    b += ldb;
    for (int i = 0; i < MR; ++i) {
      T s = a[i * sam];
      acc[i][0] += s * b0;
      acc[i][1] += s * b1;
    }
    a += sak;
  }

  for (int i = 0; i < MR; ++i) {
    // written as "negative -> 0" so that a NaN stays NaN, as torch.relu leaves it.
    if (relu) {
      acc[i][0] = acc[i][0] < V{} ? V{} : acc[i][0];
      acc[i][1] = acc[i][1] < V{} ? V{} : acc[i][1];
    }
    if (n_valid == NR) {
      store_vec(c + i * ldc, acc[i][0]);
      store_vec(c + i * ldc + L, acc[i][1]);
    } else {
      T tile[NR];
      store_vec(tile, acc[i][0]);
      store_vec(tile + L, acc[i][1]);
      std::memcpy(c + i * ldc, tile, n_valid * sizeof(T));
    }
  }
}

// The rows left over by MR get a kernel of their own height instead of a scalar loop.
template <typename T>
inline void micro_kernel_rows(int mr, int64_t kc, const T* a, int64_t sam, int64_t sak, const T* b,
                              int64_t ldb, T* c, int64_t ldc, int n_valid, Init init, const T* bias,
                              bool relu) {
  switch (mr) {
    case 6:
      micro_kernel<T, 6>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
      break;
    case 5:
      micro_kernel<T, 5>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
      break;
    case 4:
      micro_kernel<T, 4>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
      break;
    case 3:
      micro_kernel<T, 3>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
      break;
    case 2:
      micro_kernel<T, 2>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
      break;
    default:
      micro_kernel<T, 1>(kc, a, sam, sak, b, ldb, c, ldc, n_valid, init, bias, relu);
  }
}

// Copies kc rows of n_valid <= NR columns of B, row p starting at row(p), into a contiguous
// panel, zeroing the columns past n_valid. Read straight from B, the kc rows of a panel lie ldb
// apart, and when that distance is a multiple of a page fraction they all fall into a few sets
// of L1 and evict each other; the packed panel is one contiguous kc * NR block that stays in
// cache while the rows of A go past.
template <typename T, typename Row>
inline void pack_panel(int64_t kc, Row row, int n_valid, T* panel) {
  constexpr int NR = kNR<T>;
  constexpr int L = kLanes<T>;
  if (n_valid == NR) {
    for (int64_t p = 0; p < kc; ++p) {
      const T* b = row(p);
      store_vec(panel + p * NR, load_vec(b));
      store_vec(panel + p * NR + L, load_vec(b + L));
    }
    return;
  }
  for (int64_t p = 0; p < kc; ++p) {
    std::memcpy(panel + p * NR, row(p), n_valid * sizeof(T));
    std::fill(panel + p * NR + n_valid, panel + (p + 1) * NR, T(0));
  }
}

// Elements of scratch one thread needs for gemm(): one packed panel of B.
template <typename T>
constexpr int64_t gemm_scratch_size() {
  return kKC * kNR<T>;
}

// One mc x kc block of A times the kc x n block of B below it, into C's rows m0 .. m0 + mc.
template <typename T>
inline void gemm_block(const Gemm<T>& g, int64_t m0, int64_t mc, int64_t k0, int64_t kc, T* panel) {
  constexpr int NR = kNR<T>;
  const Init init = k0 > 0 || g.accumulate ? Init::kLoad : (g.bias ? Init::kBias : Init::kZero);
  const bool relu = g.relu && k0 + kc == g.k;
  for (int64_t n0 = 0; n0 < g.n; n0 += NR) {
    const int n_valid = static_cast<int>(std::min<int64_t>(NR, g.n - n0));
    const T* b = g.b + n0;
    if (g.b_rows)
      pack_panel(kc, [&](int64_t p) { return b + g.b_rows[k0 + p]; }, n_valid, panel);
    else
      pack_panel(kc, [&](int64_t p) { return b + (k0 + p) * g.ldb; }, n_valid, panel);
    for (int64_t i = m0; i < m0 + mc; i += kMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kMR, m0 + mc - i));
      micro_kernel_rows<T>(mr, kc, g.a + i * g.sam + k0 * g.sak, g.sam, g.sak, panel, NR,
                           g.c + i * g.ldc + n0, g.ldc, n_valid, init,
                           g.bias ? g.bias + i : nullptr, relu);
    }
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
