// Calls every entry point of the installed library with bad arguments, one fault at a time, and
// checks the exact status code that comes back (and, under the sanitizers, that nothing is read
// or written out of place). Each kernel starts from valid params over real buffers; its CPU entry
// point must accept them, then each spoiled copy must be refused. The CUDA entry points get the
// same spoiled copies (never the valid ones: the buffers are host memory) and must refuse them
// with the same codes, or with PYR_ERROR_NOT_BUILT in a library built without CUDA.
//
// "A stride that reaches outside a buffer": the C ABI carries no buffer lengths, so the kernels
// refuse the layouts no buffer can have (see layout rules in pyreversible/kernels.h): a negative
// stride, a furthest element past 2^50 elements, and for outputs a stride 0 over more than one
// element.
#include <pyreversible/kernels.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

constexpr int64_t kHuge = int64_t(1) << 62;

template <typename P>
struct Bad {
  const char* what;
  pyr_status expected;
  std::function<void(P&)> spoil;
  bool cpu_only = false;   // a fault only for the CPU (float16 is a CUDA dtype)
  bool cuda_only = false;  // a fault only for CUDA (the CPU kernels take no workspace)
};

void expect(const char* entry, const char* what, pyr_status got, pyr_status want) {
  ++checks;
  if (got != want) {
    ++failures;
    std::fprintf(stderr, "FAIL %s, %s: got %d (%s), want %d (%s)\n", entry, what, int(got),
                 pyr_status_string(got), int(want), pyr_status_string(want));
  }
}

// The checks of one entry point. `cuda` entry points are never given the valid params.
template <typename P>
void run(const char* entry, pyr_status (*fn)(const P*), const P& valid,
         const std::vector<Bad<P>>& bads, bool cuda) {
  const bool stub = cuda && !pyr_built_with_cuda();
  if (!cuda) expect(entry, "valid arguments", fn(&valid), PYR_SUCCESS);
  expect(entry, "params NULL", fn(nullptr), stub ? PYR_ERROR_NOT_BUILT : PYR_ERROR_NULL_POINTER);
  for (const Bad<P>& bad : bads) {
    if (cuda ? bad.cpu_only : bad.cuda_only) continue;
    P p = valid;
    bad.spoil(p);
    expect(entry, bad.what, fn(&p), stub ? PYR_ERROR_NOT_BUILT : bad.expected);
  }
}

// A workspace query refuses NULL params with 0 (and so does its stub).
template <typename P>
void expect_no_workspace(const char* entry, size_t (*query)(const P*)) {
  expect(entry, "params NULL", query(nullptr) == 0 ? PYR_SUCCESS : PYR_ERROR_CUDA, PYR_SUCCESS);
}

// The faults every kernel's dtype field can have.
template <typename P>
void add_dtype_faults(std::vector<Bad<P>>& bads) {
  bads.push_back({"dtype 99", PYR_ERROR_UNSUPPORTED_DTYPE, [](P& p) { p.dtype = 99; }});
  bads.push_back({"dtype -1", PYR_ERROR_UNSUPPORTED_DTYPE, [](P& p) { p.dtype = -1; }});
  bads.push_back({"dtype float16 on the CPU", PYR_ERROR_UNSUPPORTED_DTYPE,
                  [](P& p) { p.dtype = PYR_FLOAT16; }, true});
  bads.push_back({"dtype bfloat16 on the CPU", PYR_ERROR_UNSUPPORTED_DTYPE,
                  [](P& p) { p.dtype = PYR_BFLOAT16; }, true});
}

// Zeroed float64 storage for the valid params; sized generously, it outlives every call.
struct Arena {
  std::vector<std::vector<double>> blocks;
  double* get(size_t n) {
    blocks.emplace_back(n, 0.0);
    return blocks.back().data();
  }
};

pyr_partition half_partition(int64_t dim) {
  pyr_partition part{};
  part.kind = PYR_PARTITION_SPLIT;
  part.dim_a = dim / 2;
  part.dim_b = dim - dim / 2;
  part.offset_a = 0;
  part.offset_b = dim / 2;
  part.row_pairs = 1;
  part.height = 1;
  return part;
}

// Faults of the fields every coupling params struct shares.
template <typename P>
void add_coupling_faults(std::vector<Bad<P>>& bads) {
  add_dtype_faults(bads);
  bads.push_back({"batch 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = 0; }});
  bads.push_back({"batch -3", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = -3; }});
  bads.push_back({"dim 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.dim = 0; }});
  bads.push_back(
      {"dim_b + dim_a != dim", PYR_ERROR_INVALID_SIZE, [](P& p) { p.partition.dim_b -= 1; }});
  bads.push_back({"sign 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.sign = 0; }});
  bads.push_back(
      {"partition kind 7", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.partition.kind = 7; }});
  bads.push_back(
      {"overlapping parts", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.partition.offset_b -= 1; }});
  bads.push_back({"interleave parity 2", PYR_ERROR_INVALID_ARGUMENT, [](P& p) {
                    p.partition.kind = PYR_PARTITION_INTERLEAVE;
                    p.partition.parity = 2;
                    p.partition.row_pairs = p.dim / 2;
                  }});
}

void test_additive_coupling(Arena& arena) {
  const int64_t batch = 3, dim = 6;
  pyr_additive_coupling_params p{};
  p.dtype = PYR_FLOAT64;
  p.sign = 1;
  p.batch = batch;
  p.dim = dim;
  p.partition = half_partition(dim);
  p.x = arena.get(batch * dim), p.stride_x_b = dim, p.stride_x_d = 1;
  p.shift = arena.get(batch * dim), p.stride_shift_b = dim / 2, p.stride_shift_d = 1;
  p.y = arena.get(batch * dim), p.stride_y_b = dim, p.stride_y_d = 1;
  using P = pyr_additive_coupling_params;
  std::vector<Bad<P>> bads;
  add_coupling_faults(bads);
  bads.push_back({"x NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x = nullptr; }});
  bads.push_back({"shift NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.shift = nullptr; }});
  bads.push_back({"y NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.y = nullptr; }});
  bads.push_back({"stride_x_d -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_d = -1; }});
  bads.push_back(
      {"stride_shift_b 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_shift_b = kHuge; }});
  bads.push_back(
      {"stride_y_d 0 (output)", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_d = 0; }});
  run("pyr_additive_coupling_fwd_cpu", pyr_additive_coupling_fwd_cpu, p, bads, false);
  run("pyr_additive_coupling_fwd_cuda", pyr_additive_coupling_fwd_cuda, p, bads, true);
}

void test_additive_coupling_mlp(Arena& arena) {
  const int64_t batch = 3, dim = 6;
  const int64_t widths[] = {3, 4, 5, 3};
  pyr_additive_coupling_mlp_params p{};
  p.dtype = PYR_FLOAT64;
  p.sign = -1;
  p.batch = batch;
  p.dim = dim;
  p.partition = half_partition(dim);
  p.num_layers = 3;
  for (int l = 0; l <= 3; ++l) p.widths[l] = widths[l];
  for (int l = 0; l < 3; ++l) {
    p.weight[l] = arena.get(widths[l] * widths[l + 1]);
    p.bias[l] = arena.get(widths[l + 1]);
  }
  for (int l = 0; l < 2; ++l) p.hidden[l] = arena.get(batch * widths[l + 1]);
  p.x = arena.get(batch * dim), p.stride_x_b = 1, p.stride_x_d = batch;  // column-major x
  p.y = arena.get(batch * dim), p.stride_y_b = dim, p.stride_y_d = 1;
  using P = pyr_additive_coupling_mlp_params;
  std::vector<Bad<P>> bads;
  add_coupling_faults(bads);
  bads.push_back({"x NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x = nullptr; }});
  bads.push_back({"y NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.y = nullptr; }});
  bads.push_back({"weight[1] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.weight[1] = nullptr; }});
  bads.push_back({"bias[2] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.bias[2] = nullptr; }});
  bads.push_back({"hidden[1] NULL, hidden[0] given", PYR_ERROR_NULL_POINTER,
                  [](P& p) { p.hidden[1] = nullptr; }});
  bads.push_back({"num_layers 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.num_layers = 0; }});
  bads.push_back({"num_layers 17", PYR_ERROR_INVALID_ARGUMENT,
                  [](P& p) { p.num_layers = PYR_MAX_LAYERS + 1; }});
  bads.push_back({"widths[1] 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.widths[1] = 0; }});
  bads.push_back({"widths[0] != dim_a", PYR_ERROR_INVALID_SIZE, [](P& p) { p.widths[0] = 2; }});
  bads.push_back({"stride_x_b -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_b = -1; }});
  bads.push_back({"stride_x_d 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_d = kHuge; }});
  bads.push_back(
      {"stride_y_b 0 (output)", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_b = 0; }});
  run("pyr_additive_coupling_mlp_fwd_cpu", pyr_additive_coupling_mlp_fwd_cpu, p, bads, false);
  run("pyr_additive_coupling_mlp_fwd_cuda", pyr_additive_coupling_mlp_fwd_cuda, p, bads, true);
  expect("pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes", "params NULL",
         pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes(nullptr) == 0 ? PYR_SUCCESS
                                                                          : PYR_ERROR_CUDA,
         PYR_SUCCESS);
}

void test_additive_coupling_mlp_bwd(Arena& arena) {
  const int64_t batch = 3, dim = 6;
  const int64_t widths[] = {3, 4, 5, 3};
  pyr_additive_coupling_mlp_bwd_params p{};
  p.dtype = PYR_FLOAT64;
  p.sign = 1;
  p.batch = batch;
  p.dim = dim;
  p.partition = half_partition(dim);
  p.num_layers = 3;
  for (int l = 0; l <= 3; ++l) p.widths[l] = widths[l];
  for (int l = 0; l < 3; ++l) {
    p.weight[l] = arena.get(widths[l] * widths[l + 1]);
    p.dweight[l] = arena.get(widths[l] * widths[l + 1]);
    p.dbias[l] = arena.get(widths[l + 1]);
  }
  for (int l = 0; l < 2; ++l) p.hidden[l] = arena.get(batch * widths[l + 1]);
  p.cond = arena.get(batch * dim), p.stride_cond_b = dim, p.stride_cond_d = 1;
  p.dy = arena.get(batch * dim), p.stride_dy_b = dim, p.stride_dy_d = 1;
  p.dx = arena.get(batch * dim), p.stride_dx_b = dim, p.stride_dx_d = 1;
  // the CUDA backward's workspace: enough for any of these params (the CPU ignores it)
  p.workspace = arena.get(1024), p.workspace_bytes = 1024 * sizeof(double);
  using P = pyr_additive_coupling_mlp_bwd_params;
  std::vector<Bad<P>> bads;
  add_coupling_faults(bads);
  bads.push_back({"cond NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.cond = nullptr; }});
  bads.push_back({"dy NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.dy = nullptr; }});
  bads.push_back({"dx NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.dx = nullptr; }});
  bads.push_back({"weight[0] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.weight[0] = nullptr; }});
  bads.push_back({"hidden[1] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.hidden[1] = nullptr; }});
  bads.push_back({"dweight[2] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.dweight[2] = nullptr; }});
  bads.push_back({"dbias[0] NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.dbias[0] = nullptr; }});
  bads.push_back({"num_layers -1", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.num_layers = -1; }});
  bads.push_back({"widths[3] != dim_b", PYR_ERROR_INVALID_SIZE, [](P& p) { p.widths[3] = 4; }});
  bads.push_back(
      {"stride_cond_d -2", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_cond_d = -2; }});
  bads.push_back(
      {"stride_dy_b 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_dy_b = kHuge; }});
  bads.push_back(
      {"stride_dx_d 0 (output)", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_dx_d = 0; }});
  run("pyr_additive_coupling_mlp_bwd_cpu", pyr_additive_coupling_mlp_bwd_cpu, p, bads, false);
  run("pyr_additive_coupling_mlp_bwd_cuda", pyr_additive_coupling_mlp_bwd_cuda, p, bads, true);
  expect("pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes", "params NULL",
         pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes(nullptr) == 0 ? PYR_SUCCESS
                                                                          : PYR_ERROR_CUDA,
         PYR_SUCCESS);
}

// Faults of the size fields the two convolutions share.
template <typename P>
void add_conv_faults(std::vector<Bad<P>>& bads) {
  add_dtype_faults(bads);
  bads.push_back({"batch 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = 0; }});
  bads.push_back({"in_channels -1", PYR_ERROR_INVALID_SIZE, [](P& p) { p.in_channels = -1; }});
  bads.push_back({"out_channels 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.out_channels = 0; }});
  bads.push_back({"kernel_size 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.kernel_size = 0; }});
  bads.push_back({"x NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x = nullptr; }});
  bads.push_back({"weight NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.weight = nullptr; }});
  bads.push_back({"stride_x_b -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_b = -1; }});
  bads.push_back({"stride_x_c 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_c = kHuge; }});
}

template <typename P>
void add_causal_faults(std::vector<Bad<P>>& bads) {
  add_conv_faults(bads);
  bads.push_back({"length 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.length = 0; }});
  bads.push_back(
      {"length 2^60", PYR_ERROR_INVALID_SIZE, [](P& p) { p.length = int64_t(1) << 60; }});
  bads.push_back({"reach back (K - 1) d past 2^50", PYR_ERROR_INVALID_SIZE, [](P& p) {
                    p.kernel_size = int64_t(1) << 30;
                    p.dilation = int64_t(1) << 30;
                  }});
  bads.push_back({"dilation 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.dilation = 0; }});
  bads.push_back({"groups 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.groups = 0; }});
  bads.push_back(
      {"groups 3 not dividing 4 channels", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.groups = 3; }});
  bads.push_back({"stride_x_t -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_t = -1; }});
}

void test_causal_conv1d(Arena& arena) {
  const int64_t batch = 2, c_in = 4, c_out = 6, length = 5, k = 3, groups = 2;
  pyr_causal_conv1d_params p{};
  p.dtype = PYR_FLOAT64;
  p.batch = batch, p.in_channels = c_in, p.out_channels = c_out, p.length = length;
  p.kernel_size = k, p.dilation = 2, p.groups = groups;
  p.x = arena.get(batch * c_in * length);
  p.stride_x_b = c_in * length, p.stride_x_c = length, p.stride_x_t = 1;
  p.weight = arena.get(c_out * c_in / groups * k);
  p.bias = arena.get(c_out);
  p.y = arena.get(batch * c_out * length);
  p.stride_y_b = c_out * length, p.stride_y_c = 1, p.stride_y_t = c_out;  // channels last
  using P = pyr_causal_conv1d_params;
  std::vector<Bad<P>> bads;
  add_causal_faults(bads);
  bads.push_back({"y NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.y = nullptr; }});
  bads.push_back(
      {"stride_y_t 0 (output)", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_t = 0; }});
  bads.push_back({"stride_y_c -6", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_c = -6; }});
  run("pyr_causal_conv1d_fwd_cpu", pyr_causal_conv1d_fwd_cpu, p, bads, false);
  run("pyr_causal_conv1d_fwd_cuda", pyr_causal_conv1d_fwd_cuda, p, bads, true);

  pyr_causal_conv1d_bwd_params q{};
  q.dtype = PYR_FLOAT64;
  q.batch = batch, q.in_channels = c_in, q.out_channels = c_out, q.length = length;
  q.kernel_size = k, q.dilation = 2, q.groups = groups;
  q.x = p.x, q.stride_x_b = p.stride_x_b, q.stride_x_c = p.stride_x_c, q.stride_x_t = 1;
  q.weight = p.weight;
  q.dy = arena.get(batch * c_out * length);
  q.stride_dy_b = c_out * length, q.stride_dy_c = length, q.stride_dy_t = 1;
  q.dx = arena.get(batch * c_in * length);
  q.stride_dx_b = c_in * length, q.stride_dx_c = length, q.stride_dx_t = 1;
  q.dweight = arena.get(c_out * c_in / groups * k);
  q.dbias = arena.get(c_out);
  using Q = pyr_causal_conv1d_bwd_params;
  std::vector<Bad<Q>> qbads;
  add_causal_faults(qbads);
  qbads.push_back({"dy NULL", PYR_ERROR_NULL_POINTER, [](Q& q) { q.dy = nullptr; }});
  qbads.push_back({"stride_dy_t -1", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dy_t = -1; }});
  qbads.push_back(
      {"stride_dx_c 0 (output)", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dx_c = 0; }});
  qbads.push_back(
      {"stride_dx_b 2^62", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dx_b = kHuge; }});
  run("pyr_causal_conv1d_bwd_cpu", pyr_causal_conv1d_bwd_cpu, q, qbads, false);
  run("pyr_causal_conv1d_bwd_cuda", pyr_causal_conv1d_bwd_cuda, q, qbads, true);
  expect_no_workspace("pyr_causal_conv1d_bwd_cuda_workspace_bytes",
                      pyr_causal_conv1d_bwd_cuda_workspace_bytes);
}

template <typename P>
void add_masked_faults(std::vector<Bad<P>>& bads) {
  add_conv_faults(bads);
  bads.push_back({"height 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.height = 0; }});
  bads.push_back({"width -4", PYR_ERROR_INVALID_SIZE, [](P& p) { p.width = -4; }});
  bads.push_back({"kernel_size 4 (even)", PYR_ERROR_INVALID_SIZE, [](P& p) { p.kernel_size = 4; }});
  bads.push_back({"mask_type 2", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.mask_type = 2; }});
  bads.push_back({"stride_x_w -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_w = -1; }});
  bads.push_back(
      {"stride_weight_h 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_weight_h = kHuge; }});
  bads.push_back(
      {"stride_weight_o -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_weight_o = -1; }});
}

void test_masked_conv2d(Arena& arena) {
  const int64_t batch = 2, c_in = 3, c_out = 4, h = 5, w = 4, k = 3;
  pyr_masked_conv2d_params p{};
  p.dtype = PYR_FLOAT64;
  p.mask_type = PYR_MASK_A;
  p.batch = batch, p.in_channels = c_in, p.out_channels = c_out, p.height = h, p.width = w;
  p.kernel_size = k;
  p.x = arena.get(batch * c_in * h * w);
  p.stride_x_b = c_in * h * w, p.stride_x_c = h * w, p.stride_x_h = w, p.stride_x_w = 1;
  p.weight = arena.get(c_out * c_in * k * k);
  p.stride_weight_o = c_in * k * k, p.stride_weight_i = k * k;
  p.stride_weight_h = k, p.stride_weight_w = 1;
  p.bias = arena.get(c_out);
  p.y = arena.get(batch * c_out * h * w);
  p.stride_y_b = c_out * h * w, p.stride_y_c = h * w, p.stride_y_h = w, p.stride_y_w = 1;
  using P = pyr_masked_conv2d_params;
  std::vector<Bad<P>> bads;
  add_masked_faults(bads);
  bads.push_back({"y NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.y = nullptr; }});
  bads.push_back(
      {"stride_y_h 0 (output)", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_h = 0; }});
  bads.push_back({"stride_y_b 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_y_b = kHuge; }});
  run("pyr_masked_conv2d_fwd_cpu", pyr_masked_conv2d_fwd_cpu, p, bads, false);
  run("pyr_masked_conv2d_fwd_cuda", pyr_masked_conv2d_fwd_cuda, p, bads, true);

  pyr_masked_conv2d_bwd_params q{};
  q.dtype = PYR_FLOAT64;
  q.mask_type = PYR_MASK_B;
  q.batch = batch, q.in_channels = c_in, q.out_channels = c_out, q.height = h, q.width = w;
  q.kernel_size = k;
  q.x = p.x, q.stride_x_b = p.stride_x_b, q.stride_x_c = p.stride_x_c;
  q.stride_x_h = p.stride_x_h, q.stride_x_w = 1;
  q.weight = p.weight, q.stride_weight_o = p.stride_weight_o, q.stride_weight_i = k * k;
  q.stride_weight_h = k, q.stride_weight_w = 1;
  q.dy = arena.get(batch * c_out * h * w);
  q.stride_dy_b = c_out * h * w, q.stride_dy_c = h * w, q.stride_dy_h = w, q.stride_dy_w = 1;
  q.dx = arena.get(batch * c_in * h * w);
  q.stride_dx_b = c_in * h * w, q.stride_dx_c = h * w, q.stride_dx_h = w, q.stride_dx_w = 1;
  q.dweight = arena.get(c_out * c_in * k * k);
  q.dbias = arena.get(c_out);
  using Q = pyr_masked_conv2d_bwd_params;
  std::vector<Bad<Q>> qbads;
  add_masked_faults(qbads);
  qbads.push_back({"dy NULL", PYR_ERROR_NULL_POINTER, [](Q& q) { q.dy = nullptr; }});
  qbads.push_back({"stride_dy_c -1", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dy_c = -1; }});
  qbads.push_back(
      {"stride_dx_w 0 (output)", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dx_w = 0; }});
  qbads.push_back({"stride_dx_h -1", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dx_h = -1; }});
  run("pyr_masked_conv2d_bwd_cpu", pyr_masked_conv2d_bwd_cpu, q, qbads, false);
  run("pyr_masked_conv2d_bwd_cuda", pyr_masked_conv2d_bwd_cuda, q, qbads, true);
  expect_no_workspace("pyr_masked_conv2d_bwd_cuda_workspace_bytes",
                      pyr_masked_conv2d_bwd_cuda_workspace_bytes);
}

// Faults of the fields the WaveNet layer's forward and backward share.
template <typename P>
void add_wavenet_faults(std::vector<Bad<P>>& bads) {
  add_dtype_faults(bads);
  bads.push_back({"batch 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = 0; }});
  bads.push_back(
      {"residual_channels -1", PYR_ERROR_INVALID_SIZE, [](P& p) { p.residual_channels = -1; }});
  bads.push_back({"gate_channels 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.gate_channels = 0; }});
  bads.push_back({"skip_channels 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.skip_channels = 0; }});
  bads.push_back({"length -1", PYR_ERROR_INVALID_SIZE, [](P& p) { p.length = -1; }});
  bads.push_back({"kernel_size 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.kernel_size = 0; }});
  bads.push_back(
      {"local_channels -2", PYR_ERROR_INVALID_SIZE, [](P& p) { p.local_channels = -2; }});
  bads.push_back({"dilation 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.dilation = 0; }});
  bads.push_back(
      {"conv_weight NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.conv_weight = nullptr; }});
  bads.push_back(
      {"residual_weight NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.residual_weight = nullptr; }});
  bads.push_back(
      {"skip_weight NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.skip_weight = nullptr; }});
  bads.push_back({"local_cond NULL with local_channels 2", PYR_ERROR_NULL_POINTER,
                  [](P& p) { p.local_cond = nullptr; }});
  bads.push_back({"global_weight NULL with global_channels 3", PYR_ERROR_NULL_POINTER,
                  [](P& p) { p.global_weight = nullptr; }});
  bads.push_back({"stride_x_t -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_x_t = -1; }});
  bads.push_back(
      {"stride_local_t 2^62", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_local_t = kHuge; }});
  bads.push_back(
      {"stride_global_b -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_global_b = -1; }});
}

void test_wavenet_layer(Arena& arena) {
  const int64_t batch = 2, r = 3, g = 2, s = 4, length = 5, k = 2, local = 2, global = 3;
  pyr_wavenet_layer_params p{};
  p.dtype = PYR_FLOAT64;
  p.batch = batch, p.residual_channels = r, p.gate_channels = g, p.skip_channels = s;
  p.length = length, p.kernel_size = k, p.dilation = 2;
  p.local_channels = local, p.global_channels = global;
  p.x = arena.get(batch * r * length);
  p.stride_x_b = r * length, p.stride_x_c = length, p.stride_x_t = 1;
  p.conv_weight = arena.get(2 * g * r * k), p.conv_bias = arena.get(2 * g);
  p.residual_weight = arena.get(r * g), p.residual_bias = arena.get(r);
  p.skip_weight = arena.get(s * g), p.skip_bias = arena.get(s);
  p.local_cond = arena.get(batch * local * length);
  p.stride_local_b = local * length, p.stride_local_c = length, p.stride_local_t = 1;
  p.local_weight = arena.get(2 * g * local);
  p.global_cond = arena.get(batch * global);
  p.stride_global_b = global, p.stride_global_c = 1;
  p.global_weight = arena.get(2 * g * global);
  p.x_next = arena.get(batch * r * length);
  p.stride_x_next_b = r * length, p.stride_x_next_c = length, p.stride_x_next_t = 1;
  p.skip = arena.get(batch * s * length);
  p.stride_skip_b = s * length, p.stride_skip_c = length, p.stride_skip_t = 1;
  p.gate_input = arena.get(batch * 2 * g * length);
  using P = pyr_wavenet_layer_params;
  std::vector<Bad<P>> bads;
  add_wavenet_faults(bads);
  bads.push_back({"x NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x = nullptr; }});
  bads.push_back({"x_next NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x_next = nullptr; }});
  bads.push_back({"skip NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.skip = nullptr; }});
  bads.push_back({"stride_x_next_t 0 (output)", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.stride_x_next_t = 0; }});
  bads.push_back(
      {"stride_skip_c -1", PYR_ERROR_INVALID_STRIDE, [](P& p) { p.stride_skip_c = -1; }});
  bads.push_back({"stride_skip_t 2^62 (output)", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.stride_skip_t = kHuge; }});
  run("pyr_wavenet_layer_fwd_cpu", pyr_wavenet_layer_fwd_cpu, p, bads, false);
  run("pyr_wavenet_layer_fwd_cuda", pyr_wavenet_layer_fwd_cuda, p, bads, true);

  pyr_wavenet_layer_bwd_params q{};
  q.dtype = PYR_FLOAT64;
  q.batch = batch, q.residual_channels = r, q.gate_channels = g, q.skip_channels = s;
  q.length = length, q.kernel_size = k, q.dilation = 2;
  q.local_channels = local, q.global_channels = global;
  q.x = p.x, q.stride_x_b = p.stride_x_b, q.stride_x_c = p.stride_x_c, q.stride_x_t = 1;
  q.conv_weight = p.conv_weight, q.residual_weight = p.residual_weight;
  q.skip_weight = p.skip_weight;
  q.local_cond = p.local_cond, q.local_weight = p.local_weight;
  q.stride_local_b = p.stride_local_b, q.stride_local_c = p.stride_local_c;
  q.stride_local_t = 1;
  q.global_cond = p.global_cond, q.global_weight = p.global_weight;
  q.stride_global_b = global, q.stride_global_c = 1;
  q.gate_input = p.gate_input;
  q.dx_next = arena.get(batch * r * length);
  q.stride_dx_next_b = r * length, q.stride_dx_next_c = length, q.stride_dx_next_t = 1;
  q.dskip = arena.get(batch * s * length);
  q.stride_dskip_b = s * length, q.stride_dskip_c = length, q.stride_dskip_t = 1;
  q.dx = arena.get(batch * r * length);
  q.stride_dx_b = r * length, q.stride_dx_c = length, q.stride_dx_t = 1;
  q.dconv_weight = arena.get(2 * g * r * k), q.dconv_bias = arena.get(2 * g);
  q.dresidual_weight = arena.get(r * g), q.dresidual_bias = arena.get(r);
  q.dskip_weight = arena.get(s * g), q.dskip_bias = arena.get(s);
  q.dlocal_cond = arena.get(batch * local * length);
  q.stride_dlocal_b = local * length, q.stride_dlocal_c = length, q.stride_dlocal_t = 1;
  q.dlocal_weight = arena.get(2 * g * local);
  q.dglobal_cond = arena.get(batch * global), q.dglobal_weight = arena.get(2 * g * global);
  using Q = pyr_wavenet_layer_bwd_params;
  std::vector<Bad<Q>> qbads;
  add_wavenet_faults(qbads);
  qbads.push_back(
      {"x NULL with dconv_weight", PYR_ERROR_NULL_POINTER, [](Q& q) { q.x = nullptr; }});
  qbads.push_back(
      {"gate_input NULL", PYR_ERROR_NULL_POINTER, [](Q& q) { q.gate_input = nullptr; }});
  qbads.push_back({"dx_next NULL", PYR_ERROR_NULL_POINTER, [](Q& q) { q.dx_next = nullptr; }});
  qbads.push_back({"dskip NULL", PYR_ERROR_NULL_POINTER, [](Q& q) { q.dskip = nullptr; }});
  qbads.push_back(
      {"stride_dskip_b -1", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dskip_b = -1; }});
  qbads.push_back(
      {"stride_dx_t 0 (output)", PYR_ERROR_INVALID_STRIDE, [](Q& q) { q.stride_dx_t = 0; }});
  qbads.push_back({"stride_dlocal_c 0 (output)", PYR_ERROR_INVALID_STRIDE,
                   [](Q& q) { q.stride_dlocal_c = 0; }});
  qbads.push_back({"stride_dx_next_c 2^62", PYR_ERROR_INVALID_STRIDE,
                   [](Q& q) { q.stride_dx_next_c = kHuge; }});
  run("pyr_wavenet_layer_bwd_cpu", pyr_wavenet_layer_bwd_cpu, q, qbads, false);
  run("pyr_wavenet_layer_bwd_cuda", pyr_wavenet_layer_bwd_cuda, q, qbads, true);
  expect_no_workspace("pyr_wavenet_layer_bwd_cuda_workspace_bytes",
                      pyr_wavenet_layer_bwd_cuda_workspace_bytes);
}

// The whole network for some steps: no strides (every array contiguous by the ABI), so the
// faults are sizes, pointers, the queue's row count and the sampling arguments. The valid params
// are float32, which both the CPU and the CUDA kernel take.
void test_wavenet_step(Arena& arena) {
  const int64_t batch = 2, c = 5, r = 3, g = 2, s = 4, k = 3, layers = 2, steps = 3;
  static const int64_t dilations[] = {1, 2};
  static int64_t x[] = {4, 0};
  const int64_t rows = (k - 1) * (dilations[0] + dilations[1]);
  const int64_t num_weights = 1 + 6 * layers + 4;
  // the weights' shapes, in the order of pack_weights
  std::vector<int64_t> sizes = {c * r};
  for (int64_t l = 0; l < layers; ++l)
    sizes.insert(sizes.end(), {k * r * 2 * g, 2 * g, g * r, r, g * s, s});
  sizes.insert(sizes.end(), {s * s, s, s * c, c});
  static std::vector<const void*> weights;
  for (int64_t n : sizes) weights.push_back(arena.get(n));
  pyr_wavenet_step_params p{};
  p.dtype = PYR_FLOAT32;
  p.batch = batch, p.classes = c, p.residual_channels = r, p.gate_channels = g;
  p.skip_channels = s, p.kernel_size = k, p.num_layers = layers, p.dilations = dilations;
  p.num_weights = num_weights, p.weights = weights.data();
  p.queue_rows = rows, p.queue = arena.get(batch * rows * r);
  p.position = 3, p.steps = steps, p.temperature = 0.8;
  p.x = x;
  p.uniform = reinterpret_cast<const float*>(arena.get(steps * batch));  // zeros: class 0
  p.cond = arena.get(steps * batch * layers * 2 * g);
  p.samples = reinterpret_cast<int64_t*>(arena.get(steps * batch));
  p.logits = arena.get(batch * c);
  // the CUDA kernel's workspace: never reached by the faults but its own
  p.workspace = arena.get(1024), p.workspace_bytes = 1024 * sizeof(double);
  using P = pyr_wavenet_step_params;
  std::vector<Bad<P>> bads;
  add_dtype_faults(bads);
  bads.push_back({"dtype float64 on CUDA", PYR_ERROR_UNSUPPORTED_DTYPE,
                  [](P& p) { p.dtype = PYR_FLOAT64; }, false, true});
  bads.push_back({"batch 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = 0; }});
  bads.push_back({"classes -1", PYR_ERROR_INVALID_SIZE, [](P& p) { p.classes = -1; }});
  bads.push_back(
      {"residual_channels 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.residual_channels = 0; }});
  bads.push_back({"gate_channels 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.gate_channels = 0; }});
  bads.push_back({"skip_channels -2", PYR_ERROR_INVALID_SIZE, [](P& p) { p.skip_channels = -2; }});
  bads.push_back({"kernel_size 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.kernel_size = 0; }});
  bads.push_back({"num_layers 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.num_layers = 0; }});
  bads.push_back({"steps 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.steps = 0; }});
  bads.push_back(
      {"classes 2^60", PYR_ERROR_INVALID_SIZE, [](P& p) { p.classes = int64_t(1) << 60; }});
  bads.push_back({"classes * classes past 2^50", PYR_ERROR_INVALID_SIZE,
                  [](P& p) { p.classes = int64_t(1) << 26; }});
  bads.push_back(
      {"num_weights one short", PYR_ERROR_INVALID_SIZE, [](P& p) { p.num_weights -= 1; }});
  bads.push_back(
      {"num_weights for three layers", PYR_ERROR_INVALID_SIZE, [](P& p) { p.num_layers = 3; }});
  bads.push_back({"queue_rows one more than the layers'", PYR_ERROR_INVALID_SIZE,
                  [](P& p) { p.queue_rows += 1; }});
  bads.push_back({"queue_rows 0", PYR_ERROR_INVALID_SIZE, [](P& p) { p.queue_rows = 0; }});
  bads.push_back({"(K - 1) d past 2^50", PYR_ERROR_INVALID_SIZE, [](P& p) {
                    static const int64_t huge[] = {1, int64_t(1) << 50};
                    p.dilations = huge;
                  }});
  bads.push_back({"dilations[1] 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) {
                    static const int64_t zero[] = {1, 0};
                    p.dilations = zero;
                  }});
  bads.push_back({"dilations NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.dilations = nullptr; }});
  bads.push_back({"weights NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.weights = nullptr; }});
  bads.push_back({"weights[5] NULL", PYR_ERROR_NULL_POINTER, [](P& p) {
                    static std::vector<const void*> holed;
                    holed.assign(p.weights, p.weights + p.num_weights);
                    holed[5] = nullptr;
                    p.weights = holed.data();
                  }});
  bads.push_back({"queue NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.queue = nullptr; }});
  bads.push_back({"x NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.x = nullptr; }});
  bads.push_back({"uniform NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.uniform = nullptr; }});
  bads.push_back({"samples NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.samples = nullptr; }});
  bads.push_back({"position -1", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.position = -1; }});
  bads.push_back(
      {"position 2^50", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.position = int64_t(1) << 50; }});
  bads.push_back({"temperature 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.temperature = 0; }});
  bads.push_back({"temperature -1", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.temperature = -1; }});
  bads.push_back(
      {"temperature NaN", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.temperature = std::nan(""); }});
  bads.push_back(
      {"temperature inf", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.temperature = HUGE_VAL; }});
  // x is host memory only for the CPU kernel (CUDA checks it on the device as it reads it)
  bads.push_back({"x[1] = classes", PYR_ERROR_INVALID_ARGUMENT,
                  [](P& p) {
                    static const int64_t out[] = {0, 5};
                    p.x = out;
                  },
                  true});
  bads.push_back({"x[0] -1", PYR_ERROR_INVALID_ARGUMENT,
                  [](P& p) {
                    static const int64_t out[] = {-1, 0};
                    p.x = out;
                  },
                  true});
  bads.push_back(
      {"workspace NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.workspace = nullptr; }, false, true});
  bads.push_back({"workspace misaligned", PYR_ERROR_INVALID_ARGUMENT,
                  [](P& p) { p.workspace = static_cast<char*>(p.workspace) + 4; }, false, true});
  run("pyr_wavenet_step_cpu", pyr_wavenet_step_cpu, p, bads, false);
  run("pyr_wavenet_step_cuda", pyr_wavenet_step_cuda, p, bads, true);
  expect_no_workspace("pyr_wavenet_step_cuda_workspace_bytes",
                      pyr_wavenet_step_cuda_workspace_bytes);

  // at position 0 x is not read (the input is zeros): an index out of range is no fault there
  P first = p;
  static const int64_t unread[] = {-7, 99};
  first.x = unread, first.position = 0;
  expect("pyr_wavenet_step_cpu", "x out of range at position 0", pyr_wavenet_step_cpu(&first),
         PYR_SUCCESS);
  // and without cond, logits or, when no layer has a past (K = 1), a queue
  P bare = p;
  bare.cond = nullptr, bare.logits = nullptr;
  bare.kernel_size = 1, bare.queue_rows = 0, bare.queue = nullptr;
  expect("pyr_wavenet_step_cpu", "no cond, logits or queue (K = 1)", pyr_wavenet_step_cpu(&bare),
         PYR_SUCCESS);
}

// The elementwise kernel of a reversible block with two terms, as the backward half-step runs
// it: the first out of place over a half of a (batch, 2, dim) buffer, the second in place over
// a column-major array with a broadcast (all strides 0) input. 0 rows or features are valid
// and read no pointer; a term past num_terms is never read.
void test_reversible_block(Arena& arena) {
  const int64_t batch = 3, dim = 5;
  pyr_reversible_block_params p{};
  p.dtype = PYR_FLOAT64;
  p.num_terms = 2;
  p.batch = batch, p.dim = dim;
  pyr_reversible_block_term& half = p.terms[0];
  half.a = arena.get(batch * 2 * dim) + dim, half.stride_a_b = 2 * dim, half.stride_a_d = 1;
  half.c = arena.get(batch * dim), half.stride_c_b = dim, half.stride_c_d = 1;
  half.out = arena.get(batch * dim), half.stride_out_b = dim, half.stride_out_d = 1;
  half.sign = -1;
  pyr_reversible_block_term& in_place = p.terms[1];
  double* dx = arena.get(batch * dim);
  in_place.a = dx, in_place.stride_a_b = 1, in_place.stride_a_d = batch;
  in_place.c = arena.get(1), in_place.stride_c_b = 0, in_place.stride_c_d = 0;
  in_place.out = dx, in_place.stride_out_b = 1, in_place.stride_out_d = batch;
  in_place.sign = 1;
  using P = pyr_reversible_block_params;
  std::vector<Bad<P>> bads;
  add_dtype_faults(bads);
  bads.push_back({"dtype 99, batch 0", PYR_ERROR_UNSUPPORTED_DTYPE, [](P& p) {
                    p.dtype = 99;
                    p.batch = 0;
                  }});
  bads.push_back({"batch -1", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = -1; }});
  bads.push_back({"dim -4", PYR_ERROR_INVALID_SIZE, [](P& p) { p.dim = -4; }});
  bads.push_back({"dim 2^60", PYR_ERROR_INVALID_SIZE, [](P& p) { p.dim = int64_t(1) << 60; }});
  bads.push_back(
      {"batch * dim past 2^50", PYR_ERROR_INVALID_SIZE, [](P& p) { p.batch = int64_t(1) << 48; }});
  bads.push_back({"num_terms 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.num_terms = 0; }});
  bads.push_back({"num_terms 3", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.num_terms = 3; }});
  bads.push_back(
      {"terms[0].sign 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.terms[0].sign = 0; }});
  bads.push_back(
      {"terms[1].sign -2", PYR_ERROR_INVALID_ARGUMENT, [](P& p) { p.terms[1].sign = -2; }});
  bads.push_back({"terms[1].sign 2, dim 0", PYR_ERROR_INVALID_ARGUMENT, [](P& p) {
                    p.terms[1].sign = 2;
                    p.dim = 0;
                  }});
  bads.push_back({"terms[0].a NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.terms[0].a = nullptr; }});
  bads.push_back({"terms[1].c NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.terms[1].c = nullptr; }});
  bads.push_back(
      {"terms[0].out NULL", PYR_ERROR_NULL_POINTER, [](P& p) { p.terms[0].out = nullptr; }});
  bads.push_back({"terms[0].stride_a_b -1", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[0].stride_a_b = -1; }});
  bads.push_back({"terms[1].stride_out_d -5", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[1].stride_out_d = -5; }});
  bads.push_back({"terms[0].stride_c_d 2^62", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[0].stride_c_d = kHuge; }});
  // each dimension's reach within 2^50, their sum past it
  bads.push_back({"terms[1].stride_a_b 2^49, reach 2^50 + 12", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[1].stride_a_b = int64_t(1) << 49; }});
  bads.push_back({"terms[0].stride_out_d 0 (output)", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[0].stride_out_d = 0; }});
  bads.push_back({"terms[1].stride_out_b 0 (output, in place)", PYR_ERROR_INVALID_STRIDE,
                  [](P& p) { p.terms[1].stride_out_b = p.terms[1].stride_a_b = 0; }});
  run("pyr_reversible_block_cpu", pyr_reversible_block_cpu, p, bads, false);
  run("pyr_reversible_block_cuda", pyr_reversible_block_cuda, p, bads, true);

  // nothing to do: every pointer may be NULL (torch leaves empty tensors' pointers null)
  const pyr_status done = pyr_built_with_cuda() ? PYR_SUCCESS : PYR_ERROR_NOT_BUILT;
  P empty{};
  empty.dtype = PYR_FLOAT32, empty.num_terms = 2, empty.batch = 0, empty.dim = 4;
  empty.terms[0].sign = empty.terms[1].sign = 1;
  expect("pyr_reversible_block_cpu", "batch 0, no pointers", pyr_reversible_block_cpu(&empty),
         PYR_SUCCESS);
  expect("pyr_reversible_block_cuda", "batch 0, no pointers", pyr_reversible_block_cuda(&empty),
         done);
  empty.batch = 2, empty.dim = 0;
  expect("pyr_reversible_block_cpu", "dim 0, no pointers", pyr_reversible_block_cpu(&empty),
         PYR_SUCCESS);
  expect("pyr_reversible_block_cuda", "dim 0, no pointers", pyr_reversible_block_cuda(&empty),
         done);
  // a term past num_terms is not read, and a row's stride is not used when there is one row
  P one = p;
  one.num_terms = 1;
  one.terms[1] = pyr_reversible_block_term{};
  one.terms[1].stride_a_b = -1, one.terms[1].sign = 0;
  expect("pyr_reversible_block_cpu", "one term, terms[1] unset", pyr_reversible_block_cpu(&one),
         PYR_SUCCESS);
  one.batch = 1;
  one.terms[0].stride_a_b = kHuge, one.terms[0].stride_out_b = 0;
  expect("pyr_reversible_block_cpu", "one row, any row strides", pyr_reversible_block_cpu(&one),
         PYR_SUCCESS);
}

}  // namespace

int main() {
  std::printf("pyreversible %s, CUDA kernels %s\n", pyr_version(),
              pyr_built_with_cuda() ? "on" : "off");
  for (int s = PYR_SUCCESS; s <= PYR_ERROR_NOT_BUILT; ++s)
    expect("pyr_status_string", "a known code",
           pyr_status_string(pyr_status(s))[0] ? PYR_SUCCESS : PYR_ERROR_CUDA, PYR_SUCCESS);

  // One line per kernel family: a new kernel adds its test function here.
  Arena arena;
  test_additive_coupling(arena);
  test_additive_coupling_mlp(arena);
  test_additive_coupling_mlp_bwd(arena);
  test_causal_conv1d(arena);
  test_masked_conv2d(arena);
  test_wavenet_layer(arena);
  test_wavenet_step(arena);
  test_reversible_block(arena);

  std::printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
