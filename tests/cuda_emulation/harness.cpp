// Compares the CUDA kernels, run under host emulation, with the CPU kernels (the oracle, in
// double, on the same inputs rounded to the kernel's dtype).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "pyreversible/kernels.h"

static std::mt19937_64 rng(1234);
static int failures = 0;

template <typename T>
T cvt(double v);
template <>
float cvt<float>(double v) {
  return (float)v;
}
template <>
double cvt<double>(double v) {
  return v;
}
template <>
__half cvt<__half>(double v) {
  return __float2half_rn((float)v);
}
template <>
__nv_bfloat16 cvt<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn((float)v);
}
double back(float v) { return v; }
double back(double v) { return v; }
double back(__half v) { return __half2float(v); }
double back(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
int code();
template <>
int code<float>() {
  return PYR_FLOAT32;
}
template <>
int code<double>() {
  return PYR_FLOAT64;
}
template <>
int code<__half>() {
  return PYR_FLOAT16;
}
template <>
int code<__nv_bfloat16>() {
  return PYR_BFLOAT16;
}
template <typename T>
double tol();
template <>
double tol<double>() {
  return 1e-11;
}
template <>
double tol<float>() {
  return 2e-5;
}
template <>
double tol<__half>() {
  return 6e-3;
}
template <>
double tol<__nv_bfloat16>() {
  return 4e-2;
}

// A dense array with logical dims; `perm` says the memory order of the dims (last fastest) for
// the kernel's copy; the oracle always gets the contiguous copy.
struct Arr {
  std::vector<int64_t> dims;
  std::vector<double> v;  // contiguous values
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

Arr randn(std::vector<int64_t> dims, double scale = 1.0) {
  Arr a{dims, {}};
  std::normal_distribution<double> nd(0, 1);
  a.v.resize(a.numel());
  for (auto& x : a.v) x = scale * nd(rng);
  return a;
}

std::vector<int64_t> cstrides(const std::vector<int64_t>& d) {
  std::vector<int64_t> s(d.size());
  int64_t acc = 1;
  for (int i = (int)d.size() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= d[i];
  }
  return s;
}

// strides for memory order perm (perm lists dims from slowest to fastest), with an extra gap
// factor on the fastest dim (>1 makes it non-unit stride)
std::vector<int64_t> pstrides(const std::vector<int64_t>& d, std::vector<int> perm, int gap) {
  std::vector<int64_t> s(d.size());
  int64_t acc = gap;
  for (int i = (int)perm.size() - 1; i >= 0; --i) {
    s[perm[i]] = acc;
    acc *= d[perm[i]];
  }
  return s;
}

template <typename T>
struct Buf {
  std::vector<T> mem;
  std::vector<int64_t> strides;
  std::vector<int64_t> dims;
  T* data() { return mem.data(); }
};

template <typename T>
Buf<T> to_buf(const Arr& a, std::vector<int64_t> strides) {
  Buf<T> b;
  b.dims = a.dims;
  b.strides = strides;
  int64_t span = 1;
  for (size_t i = 0; i < a.dims.size(); ++i) span += (a.dims[i] - 1) * strides[i];
  b.mem.assign(span + 1, cvt<T>(std::nan("")));
  auto cs = cstrides(a.dims);
  for (int64_t e = 0; e < a.numel(); ++e) {
    int64_t off = 0, rem = e;
    for (size_t i = 0; i < a.dims.size(); ++i) {
      off += (rem / cs[i]) * strides[i];
      rem %= cs[i];
    }
    b.mem[off] = cvt<T>(a.v[e]);
  }
  return b;
}

template <typename T>
Buf<T> empty_buf(std::vector<int64_t> dims, std::vector<int64_t> strides) {
  Arr a{dims, {}};
  a.v.assign(a.numel(), std::nan(""));
  return to_buf<T>(a, strides);
}

template <typename T>
Arr from_buf(const Buf<T>& b) {
  Arr a{b.dims, {}};
  a.v.resize(a.numel());
  auto cs = cstrides(a.dims);
  for (int64_t e = 0; e < a.numel(); ++e) {
    int64_t off = 0, rem = e;
    for (size_t i = 0; i < a.dims.size(); ++i) {
      off += (rem / cs[i]) * b.strides[i];
      rem %= cs[i];
    }
    a.v[e] = back(b.mem[off]);
  }
  return a;
}

// the values as the kernel's dtype sees them
template <typename T>
Arr rounded(const Arr& a) {
  Arr r = a;
  for (auto& x : r.v) x = back(cvt<T>(x));
  return r;
}

void compare(const std::string& what, const Arr& got, const Arr& want, double t) {
  double scale = 1, err = 0;
  for (double w : want.v) scale = std::max(scale, std::fabs(w));
  bool nan = false;
  for (size_t i = 0; i < want.v.size(); ++i) {
    if (std::isnan(got.v[i]) != std::isnan(want.v[i])) nan = true;
    err = std::max(err, std::fabs(got.v[i] - want.v[i]));
  }
  if (nan || !(err <= t * scale)) {
    ++failures;
    std::printf("FAIL %s: max err %.3g (scale %.3g, tol %.3g)%s\n", what.c_str(), err, scale, t,
                nan ? " NaN mismatch" : "");
  }
}

struct Workspace {
  std::vector<double> mem;
  void* get(size_t bytes) {
    mem.assign(bytes / 8 + 1, std::nan(""));
    return mem.data();
  }
};

// A non-finite value planted in one input (-1: none), to check that NaN and infinity reach the
// same outputs as in the CPU kernels (which the pytest suite checks against torch).
static int poison = -1;

void plant(Arr& a, int which) {
  if (poison == which) a.v[a.v.size() / 3] = std::nan("");
}

// ---------------------------------------------------------------- causal_conv1d
template <typename T>
void causal_case(int64_t B, int64_t ci, int64_t co, int64_t L, int64_t K, int64_t d, int64_t g,
                 bool bias) {
  char name[200];
  std::snprintf(name, sizeof name, "causal<%d> B%ld ci%ld co%ld T%ld K%ld d%ld g%ld b%d", code<T>(),
                B, ci, co, L, K, d, g, (int)bias);
  Arr x = rounded<T>(randn({B, ci, L}));
  Arr w = rounded<T>(randn({co, ci / g, K}, 1.0 / std::sqrt(double(ci / g * K))));
  plant(x, 0);
  plant(w, 1);
  Arr b = rounded<T>(randn({co}, 0.1));
  Arr dy = rounded<T>(randn({B, co, L}));
  // oracle (double, contiguous)
  Arr y_ref{{B, co, L}, std::vector<double>(B * co * L)};
  pyr_causal_conv1d_params p{};
  p.dtype = PYR_FLOAT64;
  p.batch = B;
  p.in_channels = ci;
  p.out_channels = co;
  p.length = L;
  p.kernel_size = K;
  p.dilation = d;
  p.groups = g;
  p.x = x.v.data();
  p.stride_x_b = ci * L;
  p.stride_x_c = L;
  p.stride_x_t = 1;
  p.weight = w.v.data();
  p.bias = bias ? b.v.data() : nullptr;
  p.y = y_ref.v.data();
  p.stride_y_b = co * L;
  p.stride_y_c = L;
  p.stride_y_t = 1;
  p.num_threads = 1;
  if (pyr_causal_conv1d_fwd_cpu(&p)) {
    std::printf("cpu fwd failed\n");
    ++failures;
    return;
  }
  // kernel: x channels-last with a gap, y channels-last
  auto xb = to_buf<T>(x, pstrides(x.dims, {0, 2, 1}, 2));
  auto wb = to_buf<T>(w, cstrides(w.dims));
  auto bb = to_buf<T>(b, cstrides(b.dims));
  auto yb = empty_buf<T>({B, co, L}, pstrides({B, co, L}, {0, 2, 1}, 1));
  pyr_causal_conv1d_params q = p;
  q.dtype = code<T>();
  q.x = xb.data();
  q.stride_x_b = xb.strides[0];
  q.stride_x_c = xb.strides[1];
  q.stride_x_t = xb.strides[2];
  q.weight = wb.data();
  q.bias = bias ? bb.data() : nullptr;
  q.y = yb.data();
  q.stride_y_b = yb.strides[0];
  q.stride_y_c = yb.strides[1];
  q.stride_y_t = yb.strides[2];
  if (pyr_causal_conv1d_fwd_cuda(&q)) {
    std::printf("cuda fwd failed\n");
    ++failures;
    return;
  }
  compare(std::string(name) + " y", from_buf(yb), y_ref, tol<T>());

  for (int mask = 1; mask < 8; mask += (mask == 1 ? 1 : 3)) {  // 1, 2, 5: dx / dw / dx+db...
    const bool want_dx = mask & 1, want_dw = mask & 2, want_db = (mask & 4) || mask == 7;
    Arr dx_ref{{B, ci, L}, std::vector<double>(B * ci * L)};
    Arr dw_ref{w.dims, std::vector<double>(w.v.size())};
    Arr db_ref{{co}, std::vector<double>(co)};
    pyr_causal_conv1d_bwd_params r{};
    r.dtype = PYR_FLOAT64;
    r.batch = B;
    r.in_channels = ci;
    r.out_channels = co;
    r.length = L;
    r.kernel_size = K;
    r.dilation = d;
    r.groups = g;
    r.x = x.v.data();
    r.stride_x_b = ci * L;
    r.stride_x_c = L;
    r.stride_x_t = 1;
    r.weight = w.v.data();
    r.dy = dy.v.data();
    r.stride_dy_b = co * L;
    r.stride_dy_c = L;
    r.stride_dy_t = 1;
    r.dx = want_dx ? dx_ref.v.data() : nullptr;
    r.stride_dx_b = ci * L;
    r.stride_dx_c = L;
    r.stride_dx_t = 1;
    r.dweight = want_dw ? dw_ref.v.data() : nullptr;
    r.dbias = want_db ? db_ref.v.data() : nullptr;
    r.num_threads = 1;
    if (pyr_causal_conv1d_bwd_cpu(&r)) {
      std::printf("cpu bwd failed\n");
      ++failures;
      return;
    }
    auto dyb = to_buf<T>(dy, pstrides(dy.dims, {0, 2, 1}, 3));
    auto dxb = empty_buf<T>({B, ci, L}, pstrides({B, ci, L}, {0, 2, 1}, 1));
    auto dwb = empty_buf<T>(w.dims, cstrides(w.dims));
    auto dbb = empty_buf<T>({co}, {1});
    pyr_causal_conv1d_bwd_params s = r;
    s.dtype = code<T>();
    s.x = xb.data();
    s.stride_x_b = xb.strides[0];
    s.stride_x_c = xb.strides[1];
    s.stride_x_t = xb.strides[2];
    s.weight = wb.data();
    s.dy = dyb.data();
    s.stride_dy_b = dyb.strides[0];
    s.stride_dy_c = dyb.strides[1];
    s.stride_dy_t = dyb.strides[2];
    s.dx = want_dx ? dxb.data() : nullptr;
    s.stride_dx_b = dxb.strides[0];
    s.stride_dx_c = dxb.strides[1];
    s.stride_dx_t = dxb.strides[2];
    s.dweight = want_dw ? dwb.data() : nullptr;
    s.dbias = want_db ? dbb.data() : nullptr;
    Workspace ws;
    s.workspace_bytes = pyr_causal_conv1d_bwd_cuda_workspace_bytes(&s);
    s.workspace = ws.get(s.workspace_bytes);
    if (pyr_causal_conv1d_bwd_cuda(&s)) {
      std::printf("cuda bwd failed\n");
      ++failures;
      return;
    }
    std::string n = std::string(name) + " mask" + std::to_string(mask);
    if (want_dx) compare(n + " dx", from_buf(dxb), dx_ref, tol<T>());
    if (want_dw) compare(n + " dw", from_buf(dwb), dw_ref, tol<T>() * 4);
    if (want_db) compare(n + " db", from_buf(dbb), db_ref, tol<T>() * 4);
  }
}

// ---------------------------------------------------------------- masked_conv2d
template <typename T>
void masked_case(int64_t B, int64_t I, int64_t O, int64_t H, int64_t W, int64_t K, int mt,
                 bool bias) {
  char name[200];
  std::snprintf(name, sizeof name, "masked<%d> B%ld I%ld O%ld %ldx%ld K%ld %c b%d", code<T>(), B, I,
                O, H, W, K, mt ? 'B' : 'A', (int)bias);
  Arr x = rounded<T>(randn({B, I, H, W}));
  plant(x, 0);
  Arr w = rounded<T>(randn({O, I, K, K}, 1.0 / std::sqrt(double(I * K * K))));
  Arr b = rounded<T>(randn({O}, 0.1));
  Arr dy = rounded<T>(randn({B, O, H, W}));
  Arr y_ref{{B, O, H, W}, std::vector<double>(B * O * H * W)};
  pyr_masked_conv2d_params p{};
  p.dtype = PYR_FLOAT64;
  p.mask_type = mt;
  p.batch = B;
  p.in_channels = I;
  p.out_channels = O;
  p.height = H;
  p.width = W;
  p.kernel_size = K;
  p.x = x.v.data();
  auto xs = cstrides(x.dims), ws_ = cstrides(w.dims), ys = cstrides(y_ref.dims);
  p.stride_x_b = xs[0];
  p.stride_x_c = xs[1];
  p.stride_x_h = xs[2];
  p.stride_x_w = xs[3];
  p.weight = w.v.data();
  p.stride_weight_o = ws_[0];
  p.stride_weight_i = ws_[1];
  p.stride_weight_h = ws_[2];
  p.stride_weight_w = ws_[3];
  p.bias = bias ? b.v.data() : nullptr;
  p.y = y_ref.v.data();
  p.stride_y_b = ys[0];
  p.stride_y_c = ys[1];
  p.stride_y_h = ys[2];
  p.stride_y_w = ys[3];
  p.num_threads = 1;
  if (pyr_masked_conv2d_fwd_cpu(&p)) {
    std::printf("cpu fwd failed\n");
    ++failures;
    return;
  }
  auto xb = to_buf<T>(x, pstrides(x.dims, {0, 2, 3, 1}, 2));
  auto wb = to_buf<T>(w, pstrides(w.dims, {2, 3, 1, 0}, 1));
  auto bb = to_buf<T>(b, {1});
  auto yb = empty_buf<T>(y_ref.dims, pstrides(y_ref.dims, {0, 2, 3, 1}, 1));
  pyr_masked_conv2d_params q = p;
  q.dtype = code<T>();
  q.x = xb.data();
  q.stride_x_b = xb.strides[0];
  q.stride_x_c = xb.strides[1];
  q.stride_x_h = xb.strides[2];
  q.stride_x_w = xb.strides[3];
  q.weight = wb.data();
  q.stride_weight_o = wb.strides[0];
  q.stride_weight_i = wb.strides[1];
  q.stride_weight_h = wb.strides[2];
  q.stride_weight_w = wb.strides[3];
  q.bias = bias ? bb.data() : nullptr;
  q.y = yb.data();
  q.stride_y_b = yb.strides[0];
  q.stride_y_c = yb.strides[1];
  q.stride_y_h = yb.strides[2];
  q.stride_y_w = yb.strides[3];
  if (pyr_masked_conv2d_fwd_cuda(&q)) {
    std::printf("cuda fwd failed\n");
    ++failures;
    return;
  }
  compare(std::string(name) + " y", from_buf(yb), y_ref, tol<T>());

  for (int need_dx = 0; need_dx < 2; ++need_dx) {
    Arr dx_ref{x.dims, std::vector<double>(x.v.size())};
    Arr dw_ref{w.dims, std::vector<double>(w.v.size())};
    Arr db_ref{{O}, std::vector<double>(O)};
    pyr_masked_conv2d_bwd_params r{};
    r.dtype = PYR_FLOAT64;
    r.mask_type = mt;
    r.batch = B;
    r.in_channels = I;
    r.out_channels = O;
    r.height = H;
    r.width = W;
    r.kernel_size = K;
    r.x = x.v.data();
    r.stride_x_b = xs[0];
    r.stride_x_c = xs[1];
    r.stride_x_h = xs[2];
    r.stride_x_w = xs[3];
    r.weight = w.v.data();
    r.stride_weight_o = ws_[0];
    r.stride_weight_i = ws_[1];
    r.stride_weight_h = ws_[2];
    r.stride_weight_w = ws_[3];
    r.dy = dy.v.data();
    r.stride_dy_b = ys[0];
    r.stride_dy_c = ys[1];
    r.stride_dy_h = ys[2];
    r.stride_dy_w = ys[3];
    r.dx = need_dx ? dx_ref.v.data() : nullptr;
    r.stride_dx_b = xs[0];
    r.stride_dx_c = xs[1];
    r.stride_dx_h = xs[2];
    r.stride_dx_w = xs[3];
    r.dweight = dw_ref.v.data();
    r.dbias = db_ref.v.data();
    r.num_threads = 1;
    if (pyr_masked_conv2d_bwd_cpu(&r)) {
      std::printf("cpu bwd failed\n");
      ++failures;
      return;
    }
    auto dyb = to_buf<T>(dy, pstrides(dy.dims, {0, 2, 1, 3}, 2));
    auto dxb = empty_buf<T>(x.dims, pstrides(x.dims, {0, 3, 2, 1}, 1));
    auto dwb = empty_buf<T>(w.dims, cstrides(w.dims));
    auto dbb = empty_buf<T>({O}, {1});
    pyr_masked_conv2d_bwd_params s = r;
    s.dtype = code<T>();
    s.x = xb.data();
    s.stride_x_b = xb.strides[0];
    s.stride_x_c = xb.strides[1];
    s.stride_x_h = xb.strides[2];
    s.stride_x_w = xb.strides[3];
    s.weight = wb.data();
    s.stride_weight_o = wb.strides[0];
    s.stride_weight_i = wb.strides[1];
    s.stride_weight_h = wb.strides[2];
    s.stride_weight_w = wb.strides[3];
    s.dy = dyb.data();
    s.stride_dy_b = dyb.strides[0];
    s.stride_dy_c = dyb.strides[1];
    s.stride_dy_h = dyb.strides[2];
    s.stride_dy_w = dyb.strides[3];
    s.dx = need_dx ? dxb.data() : nullptr;
    s.stride_dx_b = dxb.strides[0];
    s.stride_dx_c = dxb.strides[1];
    s.stride_dx_h = dxb.strides[2];
    s.stride_dx_w = dxb.strides[3];
    s.dweight = dwb.data();
    s.dbias = dbb.data();
    Workspace wsp;
    s.workspace_bytes = pyr_masked_conv2d_bwd_cuda_workspace_bytes(&s);
    s.workspace = wsp.get(s.workspace_bytes);
    if (pyr_masked_conv2d_bwd_cuda(&s)) {
      std::printf("cuda bwd failed\n");
      ++failures;
      return;
    }
    std::string n = std::string(name) + " need_dx" + std::to_string(need_dx);
    if (need_dx) compare(n + " dx", from_buf(dxb), dx_ref, tol<T>());
    compare(n + " dw", from_buf(dwb), dw_ref, tol<T>() * 4);
    compare(n + " db", from_buf(dbb), db_ref, tol<T>() * 4);
  }
}

// ---------------------------------------------------------------- wavenet_layer
template <typename T>
void wavenet_case(int64_t B, int64_t R, int64_t G, int64_t S, int64_t L, int64_t K, int64_t d,
                  int64_t Cl, int64_t Cg) {
  char name[200];
  std::snprintf(name, sizeof name, "wavenet<%d> B%ld R%ld G%ld S%ld T%ld K%ld d%ld l%ld g%ld",
                code<T>(), B, R, G, S, L, K, d, Cl, Cg);
  const double fan = R * K + Cl + Cg;
  Arr x = rounded<T>(randn({B, R, L}));
  plant(x, 0);
  Arr cw = rounded<T>(randn({2 * G, R, K}, 1 / std::sqrt(fan)));
  plant(cw, 1);
  Arr cb = rounded<T>(randn({2 * G}, 0.1));
  Arr rw = rounded<T>(randn({R, G}, 1 / std::sqrt(double(G))));
  Arr rb = rounded<T>(randn({R}, 0.1));
  Arr sw = rounded<T>(randn({S, G}, 1 / std::sqrt(double(G))));
  Arr sb = rounded<T>(randn({S}, 0.1));
  Arr lc = rounded<T>(randn({B, Cl, L}));
  Arr lw = rounded<T>(randn({2 * G, Cl}, 1 / std::sqrt(fan)));
  Arr gc = rounded<T>(randn({B, Cg}));
  Arr gw = rounded<T>(randn({2 * G, Cg}, 1 / std::sqrt(fan)));
  Arr dxn = rounded<T>(randn({B, R, L}));
  Arr dsk = rounded<T>(randn({B, S, L}));

  // kernel buffers
  auto xb = to_buf<T>(x, pstrides(x.dims, {0, 2, 1}, 2));
  auto cwb = to_buf<T>(cw, cstrides(cw.dims));
  auto cbb = to_buf<T>(cb, {1});
  auto rwb = to_buf<T>(rw, cstrides(rw.dims));
  auto rbb = to_buf<T>(rb, {1});
  auto swb = to_buf<T>(sw, cstrides(sw.dims));
  auto sbb = to_buf<T>(sb, {1});
  auto lcb = to_buf<T>(lc, pstrides(lc.dims, {0, 2, 1}, 1));
  auto lwb = to_buf<T>(lw, cstrides(lw.dims));
  auto gcb = to_buf<T>(gc, pstrides(gc.dims, {1, 0}, 2));
  auto gwb = to_buf<T>(gw, cstrides(gw.dims));
  auto xnb = empty_buf<T>({B, R, L}, pstrides({B, R, L}, {0, 2, 1}, 1));
  auto skb = empty_buf<T>({B, S, L}, cstrides({B, S, L}));
  auto zb = empty_buf<T>({B, 2 * G, L}, cstrides({B, 2 * G, L}));

  pyr_wavenet_layer_params q{};
  q.dtype = code<T>();
  q.batch = B;
  q.residual_channels = R;
  q.gate_channels = G;
  q.skip_channels = S;
  q.length = L;
  q.kernel_size = K;
  q.dilation = d;
  q.local_channels = Cl;
  q.global_channels = Cg;
  q.x = xb.data();
  q.stride_x_b = xb.strides[0];
  q.stride_x_c = xb.strides[1];
  q.stride_x_t = xb.strides[2];
  q.conv_weight = cwb.data();
  q.conv_bias = cbb.data();
  q.residual_weight = rwb.data();
  q.residual_bias = rbb.data();
  q.skip_weight = swb.data();
  q.skip_bias = sbb.data();
  if (Cl) {
    q.local_cond = lcb.data();
    q.stride_local_b = lcb.strides[0];
    q.stride_local_c = lcb.strides[1];
    q.stride_local_t = lcb.strides[2];
    q.local_weight = lwb.data();
  }
  if (Cg) {
    q.global_cond = gcb.data();
    q.stride_global_b = gcb.strides[0];
    q.stride_global_c = gcb.strides[1];
    q.global_weight = gwb.data();
  }
  q.x_next = xnb.data();
  q.stride_x_next_b = xnb.strides[0];
  q.stride_x_next_c = xnb.strides[1];
  q.stride_x_next_t = xnb.strides[2];
  q.skip = skb.data();
  q.stride_skip_b = skb.strides[0];
  q.stride_skip_c = skb.strides[1];
  q.stride_skip_t = skb.strides[2];
  q.gate_input = zb.data();
  if (pyr_wavenet_layer_fwd_cuda(&q)) {
    std::printf("cuda fwd failed\n");
    ++failures;
    return;
  }

  Arr xn_ref{{B, R, L}, std::vector<double>(B * R * L)};
  Arr sk_ref{{B, S, L}, std::vector<double>(B * S * L)};
  Arr z_ref{{B, 2 * G, L}, std::vector<double>(B * 2 * G * L)};
  pyr_wavenet_layer_params p{};
  p.dtype = PYR_FLOAT64;
  p.batch = B;
  p.residual_channels = R;
  p.gate_channels = G;
  p.skip_channels = S;
  p.length = L;
  p.kernel_size = K;
  p.dilation = d;
  p.local_channels = Cl;
  p.global_channels = Cg;
  p.x = x.v.data();
  p.stride_x_b = R * L;
  p.stride_x_c = L;
  p.stride_x_t = 1;
  p.conv_weight = cw.v.data();
  p.conv_bias = cb.v.data();
  p.residual_weight = rw.v.data();
  p.residual_bias = rb.v.data();
  p.skip_weight = sw.v.data();
  p.skip_bias = sb.v.data();
  if (Cl) {
    p.local_cond = lc.v.data();
    p.stride_local_b = Cl * L;
    p.stride_local_c = L;
    p.stride_local_t = 1;
    p.local_weight = lw.v.data();
  }
  if (Cg) {
    p.global_cond = gc.v.data();
    p.stride_global_b = Cg;
    p.stride_global_c = 1;
    p.global_weight = gw.v.data();
  }
  p.x_next = xn_ref.v.data();
  p.stride_x_next_b = R * L;
  p.stride_x_next_c = L;
  p.stride_x_next_t = 1;
  p.skip = sk_ref.v.data();
  p.stride_skip_b = S * L;
  p.stride_skip_c = L;
  p.stride_skip_t = 1;
  p.gate_input = z_ref.v.data();
  p.num_threads = 1;
  if (pyr_wavenet_layer_fwd_cpu(&p)) {
    std::printf("cpu fwd failed\n");
    ++failures;
    return;
  }
  compare(std::string(name) + " z", from_buf(zb), z_ref, tol<T>());
  compare(std::string(name) + " x_next", from_buf(xnb), xn_ref, tol<T>() * 2);
  compare(std::string(name) + " skip", from_buf(skb), sk_ref, tol<T>() * 2);

  // backward: the oracle reads the kernel's z (rounded to T)
  Arr z = from_buf(zb);
  std::vector<std::vector<bool>> masks = {
      std::vector<bool>(11, true),
      {false, false, false, false, true, false, true, false, false, false, false},
      {false, false, false, false, false, true, false, false, false, false, false},
      {true, false, false, false, false, false, false, true, false, true, false},
      {false, true, true, true, false, false, false, false, true, false, true}};
  for (size_t mi = 0; mi < masks.size(); ++mi) {
    const auto& m = masks[mi];
    std::vector<Arr> ref = {Arr{x.dims, std::vector<double>(x.v.size())},
                            Arr{cw.dims, std::vector<double>(cw.v.size())},
                            Arr{cb.dims, std::vector<double>(cb.v.size())},
                            Arr{rw.dims, std::vector<double>(rw.v.size())},
                            Arr{rb.dims, std::vector<double>(rb.v.size())},
                            Arr{sw.dims, std::vector<double>(sw.v.size())},
                            Arr{sb.dims, std::vector<double>(sb.v.size())},
                            Arr{lc.dims, std::vector<double>(lc.v.size())},
                            Arr{lw.dims, std::vector<double>(lw.v.size())},
                            Arr{gc.dims, std::vector<double>(gc.v.size())},
                            Arr{gw.dims, std::vector<double>(gw.v.size())}};
    std::vector<bool> have = {true, true,   true,   true,   true,  true,
                              true, Cl > 0, Cl > 0, Cg > 0, Cg > 0};
    pyr_wavenet_layer_bwd_params r{};
    r.dtype = PYR_FLOAT64;
    r.batch = B;
    r.residual_channels = R;
    r.gate_channels = G;
    r.skip_channels = S;
    r.length = L;
    r.kernel_size = K;
    r.dilation = d;
    r.local_channels = Cl;
    r.global_channels = Cg;
    r.x = x.v.data();
    r.stride_x_b = R * L;
    r.stride_x_c = L;
    r.stride_x_t = 1;
    r.conv_weight = cw.v.data();
    r.residual_weight = rw.v.data();
    r.skip_weight = sw.v.data();
    r.local_cond = p.local_cond;
    r.stride_local_b = p.stride_local_b;
    r.stride_local_c = p.stride_local_c;
    r.stride_local_t = p.stride_local_t;
    r.local_weight = p.local_weight;
    r.global_cond = p.global_cond;
    r.stride_global_b = p.stride_global_b;
    r.stride_global_c = p.stride_global_c;
    r.global_weight = p.global_weight;
    r.gate_input = z.v.data();
    r.dx_next = dxn.v.data();
    r.stride_dx_next_b = R * L;
    r.stride_dx_next_c = L;
    r.stride_dx_next_t = 1;
    r.dskip = dsk.v.data();
    r.stride_dskip_b = S * L;
    r.stride_dskip_c = L;
    r.stride_dskip_t = 1;
    auto pick = [&](int i) -> void* { return m[i] && have[i] ? ref[i].v.data() : nullptr; };
    r.dx = pick(0);
    r.stride_dx_b = R * L;
    r.stride_dx_c = L;
    r.stride_dx_t = 1;
    r.dconv_weight = pick(1);
    r.dconv_bias = pick(2);
    r.dresidual_weight = pick(3);
    r.dresidual_bias = pick(4);
    r.dskip_weight = pick(5);
    r.dskip_bias = pick(6);
    r.dlocal_cond = pick(7);
    r.stride_dlocal_b = Cl * L;
    r.stride_dlocal_c = L;
    r.stride_dlocal_t = 1;
    r.dlocal_weight = pick(8);
    r.dglobal_cond = pick(9);
    r.dglobal_weight = pick(10);
    r.num_threads = 1;
    if (pyr_wavenet_layer_bwd_cpu(&r)) {
      std::printf("cpu bwd failed\n");
      ++failures;
      return;
    }

    auto zbuf = to_buf<T>(z, cstrides(z.dims));
    auto dxnb = to_buf<T>(dxn, pstrides(dxn.dims, {0, 2, 1}, 2));
    auto dskb = to_buf<T>(dsk, pstrides(dsk.dims, {0, 2, 1}, 1));
    std::vector<Buf<T>> out;
    out.push_back(empty_buf<T>(x.dims, pstrides(x.dims, {0, 2, 1}, 1)));
    for (int i = 1; i < 11; ++i) {
      if (i == 7)
        out.push_back(empty_buf<T>(lc.dims, pstrides(lc.dims, {0, 2, 1}, 2)));
      else
        out.push_back(empty_buf<T>(ref[i].dims, cstrides(ref[i].dims)));
    }
    pyr_wavenet_layer_bwd_params s{};
    s = r;
    s.dtype = code<T>();
    s.x = xb.data();
    s.stride_x_b = xb.strides[0];
    s.stride_x_c = xb.strides[1];
    s.stride_x_t = xb.strides[2];
    s.conv_weight = cwb.data();
    s.residual_weight = rwb.data();
    s.skip_weight = swb.data();
    s.local_cond = q.local_cond;
    s.stride_local_b = q.stride_local_b;
    s.stride_local_c = q.stride_local_c;
    s.stride_local_t = q.stride_local_t;
    s.local_weight = q.local_weight;
    s.global_cond = q.global_cond;
    s.stride_global_b = q.stride_global_b;
    s.stride_global_c = q.stride_global_c;
    s.global_weight = q.global_weight;
    s.gate_input = zbuf.data();
    s.dx_next = dxnb.data();
    s.stride_dx_next_b = dxnb.strides[0];
    s.stride_dx_next_c = dxnb.strides[1];
    s.stride_dx_next_t = dxnb.strides[2];
    s.dskip = dskb.data();
    s.stride_dskip_b = dskb.strides[0];
    s.stride_dskip_c = dskb.strides[1];
    s.stride_dskip_t = dskb.strides[2];
    auto pk = [&](int i) -> void* { return m[i] && have[i] ? out[i].data() : nullptr; };
    s.dx = pk(0);
    s.stride_dx_b = out[0].strides[0];
    s.stride_dx_c = out[0].strides[1];
    s.stride_dx_t = out[0].strides[2];
    s.dconv_weight = pk(1);
    s.dconv_bias = pk(2);
    s.dresidual_weight = pk(3);
    s.dresidual_bias = pk(4);
    s.dskip_weight = pk(5);
    s.dskip_bias = pk(6);
    s.dlocal_cond = pk(7);
    s.stride_dlocal_b = out[7].strides[0];
    s.stride_dlocal_c = out[7].strides[1];
    s.stride_dlocal_t = out[7].strides[2];
    s.dlocal_weight = pk(8);
    s.dglobal_cond = pk(9);
    s.dglobal_weight = pk(10);
    Workspace wsp;
    s.workspace_bytes = pyr_wavenet_layer_bwd_cuda_workspace_bytes(&s);
    s.workspace = wsp.get(s.workspace_bytes);
    if (int st = pyr_wavenet_layer_bwd_cuda(&s)) {
      std::printf("cuda bwd failed %d\n", st);
      ++failures;
      return;
    }
    const char* names[] = {"dx",  "dcw", "dcb", "drw", "drb", "dsw",
                           "dsb", "dlc", "dlw", "dgc", "dgw"};
    for (int i = 0; i < 11; ++i) {
      if (!(m[i] && have[i])) {
        // an output not asked for is not written
        Arr o = from_buf(out[i]);
        for (double v : o.v)
          if (!std::isnan(v)) {
            ++failures;
            std::printf("FAIL %s mask%zu %s written\n", name, mi, names[i]);
            break;
          }
        continue;
      }
      compare(std::string(name) + " mask" + std::to_string(mi) + " " + names[i], from_buf(out[i]),
              ref[i], tol<T>() * 8);
    }
  }
}

static std::string only;

bool runs(const char* group) { return only.empty() || only == group; }

template <typename T>
void run_all() {
  if (runs("causal")) {
    causal_case<T>(1, 3, 5, 1, 1, 1, 1, true);
    causal_case<T>(3, 4, 6, 3, 2, 1, 1, false);
    causal_case<T>(2, 70, 130, 150, 3, 5, 1, true);
    causal_case<T>(2, 6, 4, 100, 2, 7, 2, true);
    causal_case<T>(2, 5, 5, 77, 3, 4, 5, true);
    causal_case<T>(1, 2, 4, 300, 2, 512, 2, false);
    causal_case<T>(2, 4, 8, 40, 5, 3, 4, true);
  }
  if (runs("masked")) {
    masked_case<T>(1, 1, 1, 1, 1, 1, 0, true);
    masked_case<T>(2, 3, 70, 9, 11, 5, 0, true);
    masked_case<T>(2, 4, 3, 8, 9, 3, 1, false);
    masked_case<T>(1, 2, 2, 5, 30, 7, 1, true);
    masked_case<T>(1, 2, 3, 4, 4, 1, 1, true);
  }
  if (runs("wavenet")) {
    wavenet_case<T>(1, 3, 2, 5, 1, 1, 1, 0, 0);
    wavenet_case<T>(2, 5, 35, 70, 70, 2, 3, 3, 2);
    wavenet_case<T>(3, 4, 3, 6, 63, 3, 512, 0, 2);
    wavenet_case<T>(2, 3, 4, 5, 20, 2, 2, 2, 0);
  }
  if (runs("nonfinite")) {
    // a NaN in x (poison 0) or in the weight (poison 1) meets the zero padding of the taps
    for (poison = 0; poison < 2; ++poison) {
      causal_case<T>(2, 4, 6, 30, 3, 2, 2, true);
      causal_case<T>(2, 5, 5, 30, 3, 4, 5, true);
    }
    // (not the masked convolution: its CPU kernel computes the c columns past each image row,
    // whose dy is zero, so a NaN of x reaches more taps of dW there than in torch)
    poison = 0;
    wavenet_case<T>(2, 3, 4, 5, 20, 2, 2, 0, 0);
    poison = 1;
    wavenet_case<T>(2, 3, 4, 5, 20, 2, 2, 0, 0);
    poison = -1;
  }
}

int main(int argc, char** argv) {
  if (argc > 1) only = argv[1];
  run_all<double>();
  run_all<float>();
  run_all<__half>();
  run_all<__nv_bfloat16>();
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures != 0;
}
