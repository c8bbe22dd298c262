// torch.library registration of the causal dilated convolution: schemas, argument checks,
// allocation, and dispatch to the C ABI for CPU and CUDA tensors.
#include <tuple>

#include "common.h"

namespace pyr {
namespace {

#ifdef PYR_WITH_CUDA
constexpr auto pyr_fwd_cuda = pyr_causal_conv1d_fwd_cuda;
constexpr auto pyr_bwd_cuda = pyr_causal_conv1d_bwd_cuda;
#else
constexpr decltype(&pyr_causal_conv1d_fwd_cpu) pyr_fwd_cuda = nullptr;
constexpr decltype(&pyr_causal_conv1d_bwd_cpu) pyr_bwd_cuda = nullptr;
#endif

// Checks x (or dy) against the weight and fills the sizes shared by both params structs.
template <typename Params>
void set_shape(Params& p, const at::Tensor& x, const at::Tensor& weight, int64_t dilation,
               int64_t groups, const char* op, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": ", name, " must be (B, C, T), got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(weight.dim() == 3, op, ": weight must be (C_out, C_in / groups, K), got ",
                    weight.dim(), "-D");
  TORCH_CHECK_VALUE(weight.device() == x.device(), op, ": weight is on ", weight.device(), ", ",
                    name, " on ", x.device());
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type(), op, ": weight has dtype ",
                   weight.scalar_type(), ", ", name, " ", x.scalar_type());
  TORCH_CHECK_VALUE(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(groups >= 1 && weight.size(0) % groups == 0, op,
                    ": groups must be >= 1 and divide C_out = ", weight.size(0), ", got ", groups);
  TORCH_CHECK_VALUE(weight.size(2) >= 1, op, ": kernel size must be >= 1, got ", weight.size(2));
  const int64_t in_channels = weight.size(1) * groups;
  p.dtype = dtype_code(x, op);
  p.batch = x.size(0);
  p.in_channels = in_channels;
  p.out_channels = weight.size(0);
  p.length = x.size(2);
  p.kernel_size = weight.size(2);
  p.dilation = dilation;
  p.groups = groups;
}

at::Tensor causal_conv1d_fwd(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t dilation,
                             int64_t groups) {
  constexpr const char* op = "causal_conv1d_fwd";
  pyr_causal_conv1d_params p{};
  set_shape(p, x, weight, dilation, groups, op, "x");
  TORCH_CHECK_VALUE(x.size(1) == p.in_channels, op, ": x has ", x.size(1),
                    " channels, weight expects ", p.in_channels, " (", weight.size(1), " x ",
                    groups, " groups)");
  const auto w = weight.contiguous();
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == p.out_channels, op, ": bias must be (",
                      p.out_channels, ",), got ", bias->sizes());
    TORCH_CHECK_VALUE(bias->device() == x.device(), op, ": bias is on ", bias->device(), ", x on ",
                      x.device());
    TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), op, ": bias has dtype ",
                     bias->scalar_type(), ", x ", x.scalar_type());
    b = bias->contiguous();
  }
  auto y = at::empty({x.size(0), p.out_channels, x.size(2)}, x.options());
  // an empty batch or sequence has nothing to compute; the kernels take sizes >= 1.
  if (y.numel() == 0) return y;

  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_c = x.stride(1);
  p.stride_x_t = x.stride(2);
  p.weight = w.data_ptr();
  p.bias = b.defined() ? b.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.stride_y_b = y.stride(0);
  p.stride_y_c = y.stride(1);
  p.stride_y_t = y.stride(2);
  set_execution(p, x);
  launch(pyr_causal_conv1d_fwd_cpu, pyr_fwd_cuda, p, x, op);
  return y;
}

// Gradients of x, weight and bias, each computed only where output_mask asks for it (the others
// are returned undefined, None in Python).
std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd(const at::Tensor& dy,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 int64_t dilation, int64_t groups,
                                                                 std::array<bool, 3> output_mask) {
  constexpr const char* op = "causal_conv1d_bwd";
  pyr_causal_conv1d_bwd_params p{};
  set_shape(p, dy, weight, dilation, groups, op, "dy");
  TORCH_CHECK_VALUE(dy.size(1) == p.out_channels, op, ": dy has ", dy.size(1),
                    " channels, weight has ", p.out_channels, " outputs");
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(0) == dy.size(0) && x.size(1) == p.in_channels &&
                        x.size(2) == dy.size(2),
                    op, ": x must be (", dy.size(0), ", ", p.in_channels, ", ", dy.size(2),
                    "), got ", x.sizes());
  TORCH_CHECK_VALUE(x.device() == dy.device(), op, ": x is on ", x.device(), ", dy on ",
                    dy.device());
  TORCH_CHECK_TYPE(x.scalar_type() == dy.scalar_type(), op, ": x has dtype ", x.scalar_type(),
                   ", dy ", dy.scalar_type());
  const auto w = weight.contiguous();

  at::Tensor dx, dweight, dbias;
  if (output_mask[0]) dx = at::empty(x.sizes(), x.options());
  if (output_mask[1]) dweight = at::empty(weight.sizes(), weight.options());
  if (output_mask[2]) dbias = at::empty({p.out_channels}, weight.options());
  // with no time step or no batch row, the weight and bias gradients are sums of nothing.
  if (dy.numel() == 0) {
    if (dweight.defined()) dweight.zero_();
    if (dbias.defined()) dbias.zero_();
    return std::make_tuple(dx, dweight, dbias);
  }

  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_c = x.stride(1);
  p.stride_x_t = x.stride(2);
  p.weight = w.data_ptr();
  p.dy = dy.data_ptr();
  p.stride_dy_b = dy.stride(0);
  p.stride_dy_c = dy.stride(1);
  p.stride_dy_t = dy.stride(2);
  if (dx.defined()) {
    p.dx = dx.data_ptr();
    p.stride_dx_b = dx.stride(0);
    p.stride_dx_c = dx.stride(1);
    p.stride_dx_t = dx.stride(2);
  }
  p.dweight = dweight.defined() ? dweight.data_ptr() : nullptr;
  p.dbias = dbias.defined() ? dbias.data_ptr() : nullptr;
  set_execution(p, dy);
  at::Tensor workspace;
#ifdef PYR_WITH_CUDA
  if (dy.is_cuda()) {
    p.workspace_bytes = pyr_causal_conv1d_bwd_cuda_workspace_bytes(&p);
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, dy.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
#endif
  launch(pyr_causal_conv1d_bwd_cpu, pyr_bwd_cuda, p, dy, op);
  return std::make_tuple(dx, dweight, dbias);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def(
      "causal_conv1d_fwd(Tensor x, Tensor weight, Tensor? bias, int dilation, int groups) -> "
      "Tensor");
  m.def(
      "causal_conv1d_bwd(Tensor dy, Tensor x, Tensor weight, int dilation, int groups, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("causal_conv1d_fwd", &causal_conv1d_fwd);
  m.impl("causal_conv1d_bwd", &causal_conv1d_bwd);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("causal_conv1d_fwd", &causal_conv1d_fwd);
  m.impl("causal_conv1d_bwd", &causal_conv1d_bwd);
}
#endif

}  // namespace pyr
