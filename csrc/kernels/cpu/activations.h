// Elementwise activations of the CPU kernels in vector lanes: exp, tanh and the WaveNet gate's
// two halves, shared by the WaveNet layer and the generation step.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/gemm.h"

namespace pyr_cpu {

template <typename T>
T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

typedef Vec<float>::type VF;
constexpr int kLanesF = kLanes<float>;

// exp of a vector of floats: libm's expf is scalar, and through it the gate's two exponentials
// per element took a quarter of the forward's time at the benchmark's size. 2^n e^r with
// n = round(v / ln 2) and a degree-6 polynomial for e^r on |r| <= ln 2 / 2, good to about 2
// ulp. Computed for v clamped to where 2^n is a normal float; past the ends the result is 0
// (below the normal range) or infinity (past FLT_MAX), so that a saturated gate's derivative
// is exactly 0, as torch's is, and 0 times an infinite input makes NaN as there. A NaN stays
// NaN: it fails every comparison.
inline VF exp_vec(VF v) {
  const VF hi = VF{} + 88.3f, lo = VF{} + -87.3f;
  const VF in = v;
  v = v > hi ? hi : v;
  v = v < lo ? lo : v;
  const VF fn = v * 1.44269504088896341f + 0.5f;
  typedef int32_t VI __attribute__((vector_size(kVecBytes)));
  VI n = __builtin_convertvector(fn, VI);
  VF nf = __builtin_convertvector(n, VF);
  // the conversion truncates toward zero; this makes it the floor
  n = nf > fn ? n - 1 : n;
  nf = __builtin_convertvector(n, VF);
  const VF r = v - nf * 0.693359375f - nf * -2.12194440e-4f;
  VF y = VF{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  VI bits = (n + 127) << 23;
  VF scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  y *= scale;
  y = in > 88.7228f ? VF{} + __builtin_huge_valf() : y;
  return in < lo ? VF{} : y;
}

// tanh from one exponential, t = e^(-2|v|): tanh |v| = (1 - t) / (1 + t), whose 1 - t loses
// relative accuracy near 0, where the Taylor series to v^7 takes over.
inline VF tanh_vec(VF v) {
  const VF mag = v < 0.0f ? -v : v;
  const VF t = exp_vec(-2.0f * mag);
  VF big = (1.0f - t) / (1.0f + t);
  big = v < 0.0f ? -big : big;
  const VF v2 = v * v;
  const VF small = v + v * v2 * (-1.0f / 3 + v2 * (2.0f / 15 + v2 * (-17.0f / 315)));
  // a NaN fails both comparisons and takes `big`, which is NaN
  return mag < 0.125f ? small : big;
}

// th[n] = tanh(zf[n]), sg[n] = sigmoid(zg[n]) for n < count: the gate's two halves. float in
// vector lanes; double through libm, to keep its full precision.
template <typename T>
void gate_halves(const T* zf, const T* zg, T* th, T* sg, int64_t count) {
  int64_t n = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; n + kLanesF <= count; n += kLanesF) {
      store_vec(th + n, tanh_vec(load_vec(zf + n)));
      store_vec(sg + n, 1.0f / (1.0f + exp_vec(-load_vec(zg + n))));
    }
  }
  for (; n < count; ++n) {
    th[n] = std::tanh(zf[n]);
    sg[n] = sigmoid(zg[n]);
  }
}

}  // namespace pyr_cpu
