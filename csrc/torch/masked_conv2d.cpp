// torch.library registration of the masked 2-D convolution (PixelCNN): schemas, argument
// checks, allocation, and dispatch to the C ABI for CPU and CUDA tensors.
//
//   masked_conv2d_fwd(x, weight, bias, mask_type) -> y
//   masked_conv2d_bwd(dy, x, weight, mask_type, need_dx) -> (dx, dweight, dbias)
//
// x: (B, I, H, W), weight: (O, I, K, K) with K odd, bias: (O,) or None, mask_type "A" or "B";
// any strides. The backward returns dx shaped like x (an empty (0,) tensor when need_dx is
// false: the first layer of a model has no input gradient to compute), dweight (O, I, K, K)
// with zeros at the masked taps, and dbias (O,), all contiguous.
#include <string_view>

#include "common.h"

namespace pyr {
namespace {

#ifdef PYR_WITH_CUDA
constexpr auto pyr_fwd_cuda = pyr_masked_conv2d_fwd_cuda;
constexpr auto pyr_bwd_cuda = pyr_masked_conv2d_bwd_cuda;
#else
constexpr decltype(&pyr_masked_conv2d_fwd_cpu) pyr_fwd_cuda = nullptr;
constexpr decltype(&pyr_masked_conv2d_bwd_cpu) pyr_bwd_cuda = nullptr;
#endif

int32_t mask_code(std::string_view mask_type, const char* op) {
  TORCH_CHECK_VALUE(mask_type == "A" || mask_type == "B", op,
                    ": mask_type must be 'A' or 'B', got '", mask_type, "'");
  return mask_type == "A" ? PYR_MASK_A : PYR_MASK_B;
}

// Checks x and weight against each other and fills the sizes and strides the forward and
// backward params share.
template <typename Params>
void set_operands(Params& p, const at::Tensor& x, const at::Tensor& weight,
                  std::string_view mask_type, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be (B, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(weight.dim() == 4, op, ": weight must be (O, I, K, K), got ", weight.dim(),
                    "-D");
  TORCH_CHECK_VALUE(weight.device() == x.device(), op, ": weight is on ", weight.device(),
                    ", x on ", x.device());
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type(), op, ": weight has dtype ",
                   weight.scalar_type(), ", x ", x.scalar_type());
  const int64_t k = weight.size(2);
  TORCH_CHECK_VALUE(weight.size(3) == k && k % 2 == 1, op,
                    ": weight must have a square kernel of odd size, got ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(1) == x.size(1), op, ": weight has ", weight.size(1),
                    " input channels, x ", x.size(1));
  TORCH_CHECK_VALUE(x.numel() > 0 && weight.numel() > 0, op, ": x ", x.sizes(), " and weight ",
                    weight.sizes(), " must not be empty");
  p.dtype = dtype_code(x, op);
  p.mask_type = mask_code(mask_type, op);
  p.batch = x.size(0);
  p.in_channels = x.size(1);
  p.out_channels = weight.size(0);
  p.height = x.size(2);
  p.width = x.size(3);
  p.kernel_size = k;
  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_c = x.stride(1);
  p.stride_x_h = x.stride(2);
  p.stride_x_w = x.stride(3);
  p.weight = weight.data_ptr();
  p.stride_weight_o = weight.stride(0);
  p.stride_weight_i = weight.stride(1);
  p.stride_weight_h = weight.stride(2);
  p.stride_weight_w = weight.stride(3);
  set_execution(p, x);
}

at::Tensor masked_conv2d_fwd(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, std::string_view mask_type) {
  constexpr const char* op = "masked_conv2d_fwd";
  pyr_masked_conv2d_params p{};
  set_operands(p, x, weight, mask_type, op);
  at::Tensor b;
  if (bias.has_value()) {
    b = bias->contiguous();
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == p.out_channels, op, ": bias must be (",
                      p.out_channels, ",), got ", b.sizes());
    TORCH_CHECK_VALUE(b.device() == x.device(), op, ": bias is on ", b.device(), ", x on ",
                      x.device());
    TORCH_CHECK_TYPE(b.scalar_type() == x.scalar_type(), op, ": bias has dtype ", b.scalar_type(),
                     ", x ", x.scalar_type());
    p.bias = b.data_ptr();
  }
  auto y = at::empty({p.batch, p.out_channels, p.height, p.width}, x.options());
  p.y = y.data_ptr();
  p.stride_y_b = y.stride(0);
  p.stride_y_c = y.stride(1);
  p.stride_y_h = y.stride(2);
  p.stride_y_w = y.stride(3);
  launch(pyr_masked_conv2d_fwd_cpu, pyr_fwd_cuda, p, x, op);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_bwd(const at::Tensor& dy,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 std::string_view mask_type,
                                                                 bool need_dx) {
  constexpr const char* op = "masked_conv2d_bwd";
  pyr_masked_conv2d_bwd_params p{};
  set_operands(p, x, weight, mask_type, op);
  TORCH_CHECK_VALUE(dy.dim() == 4 && dy.size(0) == p.batch && dy.size(1) == p.out_channels &&
                        dy.size(2) == p.height && dy.size(3) == p.width,
                    op, ": dy must be (", p.batch, ", ", p.out_channels, ", ", p.height, ", ",
                    p.width, "), got ", dy.sizes());
  TORCH_CHECK_VALUE(dy.device() == x.device(), op, ": dy is on ", dy.device(), ", x on ",
                    x.device());
  TORCH_CHECK_TYPE(dy.scalar_type() == x.scalar_type(), op, ": dy has dtype ", dy.scalar_type(),
                   ", x ", x.scalar_type());
  p.dy = dy.data_ptr();
  p.stride_dy_b = dy.stride(0);
  p.stride_dy_c = dy.stride(1);
  p.stride_dy_h = dy.stride(2);
  p.stride_dy_w = dy.stride(3);

  auto dx = need_dx ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  if (need_dx) {
    p.dx = dx.data_ptr();
    p.stride_dx_b = dx.stride(0);
    p.stride_dx_c = dx.stride(1);
    p.stride_dx_h = dx.stride(2);
    p.stride_dx_w = dx.stride(3);
  }
  auto dweight = at::empty(weight.sizes(), weight.options());
  auto dbias = at::empty({p.out_channels}, x.options());
  p.dweight = dweight.data_ptr();
  p.dbias = dbias.data_ptr();
  at::Tensor workspace;
#ifdef PYR_WITH_CUDA
  if (x.is_cuda()) {
    p.workspace_bytes = pyr_masked_conv2d_bwd_cuda_workspace_bytes(&p);
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, x.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
#endif
  launch(pyr_masked_conv2d_bwd_cpu, pyr_bwd_cuda, p, x, op);
  return std::make_tuple(dx, dweight, dbias);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def("masked_conv2d_fwd(Tensor x, Tensor weight, Tensor? bias, str mask_type) -> Tensor");
  m.def(
      "masked_conv2d_bwd(Tensor dy, Tensor x, Tensor weight, str mask_type, bool need_dx) -> "
      "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("masked_conv2d_fwd", &masked_conv2d_fwd);
  m.impl("masked_conv2d_bwd", &masked_conv2d_bwd);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("masked_conv2d_fwd", &masked_conv2d_fwd);
  m.impl("masked_conv2d_bwd", &masked_conv2d_bwd);
}
#endif

}  // namespace pyr
