// torch.library registration of the additive coupling kernels: schemas, argument checks,
// allocation, and dispatch to the C ABI for CPU and CUDA tensors.
#include <vector>

#include "common.h"

namespace pyr {
namespace {

void check_rows(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 2, op, ": ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " is on ", t.device(), ", x on ",
                    x.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), ", x ", x.scalar_type());
}

#ifdef PYR_WITH_CUDA
constexpr auto pyr_fwd_cuda = pyr_additive_coupling_fwd_cuda;
constexpr auto pyr_mlp_fwd_cuda = pyr_additive_coupling_mlp_fwd_cuda;
constexpr auto pyr_mlp_bwd_cuda = pyr_additive_coupling_mlp_bwd_cuda;
#else
constexpr decltype(&pyr_additive_coupling_fwd_cpu) pyr_fwd_cuda = nullptr;
constexpr decltype(&pyr_additive_coupling_mlp_fwd_cpu) pyr_mlp_fwd_cuda = nullptr;
constexpr decltype(&pyr_additive_coupling_mlp_bwd_cpu) pyr_mlp_bwd_cuda = nullptr;
#endif

at::Tensor additive_coupling_fwd(const at::Tensor& x, const at::Tensor& shift,
                                 at::IntArrayRef partition, int64_t sign) {
  constexpr const char* op = "additive_coupling_fwd";
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be (B, D), got ", x.dim(), "-D");
  check_rows(shift, x, op, "shift");
  pyr_additive_coupling_params p{};
  p.partition = partition_from(partition, op);
  TORCH_CHECK_VALUE(shift.size(0) == x.size(0) && shift.size(1) == p.partition.dim_b, op,
                    ": shift must be (", x.size(0), ", ", p.partition.dim_b, "), got ",
                    shift.sizes());
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  p.dtype = dtype_code(x, op);
  p.sign = static_cast<int32_t>(sign);
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_d = x.stride(1);
  p.shift = shift.data_ptr();
  p.stride_shift_b = shift.stride(0);
  p.stride_shift_d = shift.stride(1);
  p.y = y.data_ptr();
  p.stride_y_b = y.stride(0);
  p.stride_y_d = y.stride(1);
  set_execution(p, x);
  launch(pyr_additive_coupling_fwd_cpu, pyr_fwd_cuda, p, x, op);
  return y;
}

// Fills the layer description shared by the forward and backward params of the fused MLP.
template <typename Params>
void set_layers(Params& p, const at::Tensor& x, at::TensorList weights, const char* op) {
  const auto num_layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(num_layers >= 1 && num_layers <= PYR_MAX_LAYERS, op, ": expected 1 to ",
                    PYR_MAX_LAYERS, " layers, got ", num_layers);
  p.num_layers = static_cast<int32_t>(num_layers);
  p.widths[0] = p.partition.dim_a;
  for (int64_t l = 0; l < num_layers; ++l) {
    const auto& w = weights[l];
    check_rows(w, x, op, "weight");
    TORCH_CHECK_VALUE(w.is_contiguous(), op, ": weight ", l, " must be contiguous");
    TORCH_CHECK_VALUE(w.size(1) == p.widths[l], op, ": weight ", l, " must have ", p.widths[l],
                      " input features, got ", w.size(1));
    p.widths[l + 1] = w.size(0);
    p.weight[l] = w.data_ptr();
  }
  TORCH_CHECK_VALUE(p.widths[num_layers] == p.partition.dim_b, op, ": the last weight must have ",
                    p.partition.dim_b, " output features, got ", p.widths[num_layers]);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> additive_coupling_mlp_fwd(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases, at::IntArrayRef partition,
    int64_t sign, bool save_hidden) {
  constexpr const char* op = "additive_coupling_mlp_fwd";
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be (B, D), got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(biases.size() == weights.size(), op, ": ", weights.size(), " weights but ",
                    biases.size(), " biases");
  pyr_additive_coupling_mlp_params p{};
  p.partition = partition_from(partition, op);
  set_layers(p, x, weights, op);
  for (size_t l = 0; l < biases.size(); ++l) {
    const auto& b = biases[l];
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == p.widths[l + 1] && b.is_contiguous(), op,
                      ": bias ", l, " must be contiguous of shape (", p.widths[l + 1], ",), got ",
                      b.sizes());
    TORCH_CHECK_VALUE(b.device() == x.device(), op, ": bias ", l, " is on ", b.device(), ", x on ",
                      x.device());
    TORCH_CHECK_TYPE(b.scalar_type() == x.scalar_type(), op, ": bias ", l, " has dtype ",
                     b.scalar_type(), ", x ", x.scalar_type());
    p.bias[l] = b.data_ptr();
  }

  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  std::vector<at::Tensor> hidden;
  if (save_hidden) {
    for (int32_t l = 0; l + 1 < p.num_layers; ++l) {
      hidden.push_back(at::empty({x.size(0), p.widths[l + 1]}, x.options()));
      p.hidden[l] = hidden.back().data_ptr();
    }
  }
  p.dtype = dtype_code(x, op);
  p.sign = static_cast<int32_t>(sign);
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_d = x.stride(1);
  p.y = y.data_ptr();
  p.stride_y_b = y.stride(0);
  p.stride_y_d = y.stride(1);
  set_execution(p, x);
  at::Tensor workspace;
#ifdef PYR_WITH_CUDA
  if (x.is_cuda()) {
    p.workspace_bytes = pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes(&p);
    const auto bytes = static_cast<int64_t>(p.workspace_bytes);
    workspace = at::empty({bytes}, x.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
#endif
  launch(pyr_additive_coupling_mlp_fwd_cpu, pyr_mlp_fwd_cuda, p, x, op);
  return std::make_tuple(y, hidden);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> additive_coupling_mlp_bwd(
    const at::Tensor& dy, const at::Tensor& cond, at::TensorList weights, at::TensorList hidden,
    at::IntArrayRef partition, int64_t sign) {
  constexpr const char* op = "additive_coupling_mlp_bwd";
  TORCH_CHECK_VALUE(dy.dim() == 2, op, ": dy must be (B, D), got ", dy.dim(), "-D");
  check_rows(cond, dy, op, "cond");
  TORCH_CHECK_VALUE(cond.sizes() == dy.sizes(), op, ": cond must match dy's shape ", dy.sizes(),
                    ", got ", cond.sizes());
  pyr_additive_coupling_mlp_bwd_params p{};
  p.partition = partition_from(partition, op);
  set_layers(p, dy, weights, op);
  TORCH_CHECK_VALUE(static_cast<int32_t>(hidden.size()) == p.num_layers - 1, op, ": expected ",
                    p.num_layers - 1, " hidden activations, got ", hidden.size());
  for (int32_t l = 0; l + 1 < p.num_layers; ++l) {
    const auto& h = hidden[l];
    check_rows(h, dy, op, "hidden");
    TORCH_CHECK_VALUE(h.is_contiguous() && h.size(0) == dy.size(0) && h.size(1) == p.widths[l + 1],
                      op, ": hidden ", l, " must be contiguous (", dy.size(0), ", ",
                      p.widths[l + 1], "), got ", h.sizes());
    p.hidden[l] = h.data_ptr();
  }

  auto dx = at::empty_like(dy, at::MemoryFormat::Contiguous);
  std::vector<at::Tensor> dweights, dbiases;
  for (int32_t l = 0; l < p.num_layers; ++l) {
    dweights.push_back(at::empty_like(weights[l]));
    dbiases.push_back(at::empty({p.widths[l + 1]}, dy.options()));
    p.dweight[l] = dweights.back().data_ptr();
    p.dbias[l] = dbiases.back().data_ptr();
  }
  p.dtype = dtype_code(dy, op);
  p.sign = static_cast<int32_t>(sign);
  p.batch = dy.size(0);
  p.dim = dy.size(1);
  p.cond = cond.data_ptr();
  p.stride_cond_b = cond.stride(0);
  p.stride_cond_d = cond.stride(1);
  p.dy = dy.data_ptr();
  p.stride_dy_b = dy.stride(0);
  p.stride_dy_d = dy.stride(1);
  p.dx = dx.data_ptr();
  p.stride_dx_b = dx.stride(0);
  p.stride_dx_d = dx.stride(1);
  set_execution(p, dy);
  at::Tensor workspace;
#ifdef PYR_WITH_CUDA
  if (dy.is_cuda()) {
    p.workspace_bytes = pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes(&p);
    const auto bytes = static_cast<int64_t>(p.workspace_bytes);
    workspace = at::empty({bytes}, dy.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
#endif
  launch(pyr_additive_coupling_mlp_bwd_cpu, pyr_mlp_bwd_cuda, p, dy, op);
  return std::make_tuple(dx, dweights, dbiases);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def("additive_coupling_fwd(Tensor x, Tensor shift, int[] partition, int sign) -> Tensor");
  m.def(
      "additive_coupling_mlp_fwd(Tensor x, Tensor[] weights, Tensor[] biases, int[] partition, "
      "int sign, bool save_hidden) -> (Tensor, Tensor[])");
  m.def(
      "additive_coupling_mlp_bwd(Tensor dy, Tensor cond, Tensor[] weights, Tensor[] hidden, "
      "int[] partition, int sign) -> (Tensor, Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("additive_coupling_fwd", &additive_coupling_fwd);
  m.impl("additive_coupling_mlp_fwd", &additive_coupling_mlp_fwd);
  m.impl("additive_coupling_mlp_bwd", &additive_coupling_mlp_bwd);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("additive_coupling_fwd", &additive_coupling_fwd);
  m.impl("additive_coupling_mlp_fwd", &additive_coupling_mlp_fwd);
  m.impl("additive_coupling_mlp_bwd", &additive_coupling_mlp_bwd);
}
#endif

}  // namespace pyr
