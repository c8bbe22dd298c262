// torch.library registration of the fused WaveNet layer: schemas, argument checks, allocation,
// and dispatch to the C ABI for CPU and CUDA tensors.
#include <array>
#include <tuple>

#include "common.h"

namespace pyr {
namespace {

#ifdef PYR_WITH_CUDA
constexpr auto pyr_fwd_cuda = pyr_wavenet_layer_fwd_cuda;
constexpr auto pyr_bwd_cuda = pyr_wavenet_layer_bwd_cuda;
#else
constexpr decltype(&pyr_wavenet_layer_fwd_cpu) pyr_fwd_cuda = nullptr;
constexpr decltype(&pyr_wavenet_layer_bwd_cpu) pyr_bwd_cuda = nullptr;
#endif

void check_like(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " is on ", t.device(), ", x on ",
                    x.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), ", x ", x.scalar_type());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must be ", expected, ", got ",
                    t.sizes());
}

// The tensors of both passes, checked against x and each other, made contiguous where the
// kernels want them so, with the sizes filled into the params.
struct Layer {
  at::Tensor conv_weight, residual_weight, skip_weight, local_weight, global_weight;
  at::Tensor local_cond, global_cond;
};

template <typename Params>
Layer set_layer(Params& p, const at::Tensor& x, const at::Tensor& conv_weight,
                const at::Tensor& residual_weight, const at::Tensor& skip_weight,
                const std::optional<at::Tensor>& local_cond,
                const std::optional<at::Tensor>& local_weight,
                const std::optional<at::Tensor>& global_cond,
                const std::optional<at::Tensor>& global_weight, int64_t dilation, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be (B, R, T), got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(
      conv_weight.dim() == 3 && conv_weight.size(0) % 2 == 0 && conv_weight.size(2) >= 1, op,
      ": conv_weight must be (2G, R, K), got ", conv_weight.sizes());
  TORCH_CHECK_VALUE(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
  const int64_t batch = x.size(0), residual = x.size(1), length = x.size(2);
  const int64_t gate = conv_weight.size(0) / 2;
  check_like(conv_weight, x, op, "conv_weight");
  check_like(residual_weight, x, op, "residual_weight");
  check_like(skip_weight, x, op, "skip_weight");
  check_shape(conv_weight, {2 * gate, residual, conv_weight.size(2)}, op, "conv_weight");
  check_shape(residual_weight, {residual, gate}, op, "residual_weight");
  TORCH_CHECK_VALUE(skip_weight.dim() == 2 && skip_weight.size(1) == gate, op,
                    ": skip_weight must be (S, ", gate, "), got ", skip_weight.sizes());
  TORCH_CHECK_VALUE(local_cond.has_value() == local_weight.has_value(), op,
                    ": local_cond and local_weight must be given together");
  TORCH_CHECK_VALUE(global_cond.has_value() == global_weight.has_value(), op,
                    ": global_cond and global_weight must be given together");

  Layer l{conv_weight.contiguous(),
          residual_weight.contiguous(),
          skip_weight.contiguous(),
          {},
          {},
          {},
          {}};
  p.dtype = dtype_code(x, op);
  p.batch = batch;
  p.residual_channels = residual;
  p.gate_channels = gate;
  p.skip_channels = skip_weight.size(0);
  p.length = length;
  p.kernel_size = conv_weight.size(2);
  p.dilation = dilation;
  if (local_cond.has_value()) {
    check_like(*local_cond, x, op, "local_cond");
    check_like(*local_weight, x, op, "local_weight");
    TORCH_CHECK_VALUE(
        local_cond->dim() == 3 && local_cond->size(0) == batch && local_cond->size(2) == length, op,
        ": local_cond must be (", batch, ", C_local, ", length, "), got ", local_cond->sizes());
    check_shape(*local_weight, {2 * gate, local_cond->size(1)}, op, "local_weight");
    l.local_cond = *local_cond;
    l.local_weight = local_weight->contiguous();
    p.local_channels = local_cond->size(1);
    p.local_cond = l.local_cond.data_ptr();
    p.stride_local_b = l.local_cond.stride(0);
    p.stride_local_c = l.local_cond.stride(1);
    p.stride_local_t = l.local_cond.stride(2);
    p.local_weight = l.local_weight.data_ptr();
  }
  if (global_cond.has_value()) {
    check_like(*global_cond, x, op, "global_cond");
    check_like(*global_weight, x, op, "global_weight");
    TORCH_CHECK_VALUE(global_cond->dim() == 2 && global_cond->size(0) == batch, op,
                      ": global_cond must be (", batch, ", C_global), got ", global_cond->sizes());
    check_shape(*global_weight, {2 * gate, global_cond->size(1)}, op, "global_weight");
    l.global_cond = *global_cond;
    l.global_weight = global_weight->contiguous();
    p.global_channels = global_cond->size(1);
    p.global_cond = l.global_cond.data_ptr();
    p.stride_global_b = l.global_cond.stride(0);
    p.stride_global_c = l.global_cond.stride(1);
    p.global_weight = l.global_weight.data_ptr();
  }
  p.x = x.data_ptr();
  p.stride_x_b = x.stride(0);
  p.stride_x_c = x.stride(1);
  p.stride_x_t = x.stride(2);
  p.conv_weight = l.conv_weight.data_ptr();
  p.residual_weight = l.residual_weight.data_ptr();
  p.skip_weight = l.skip_weight.data_ptr();
  return l;
}

at::Tensor bias_of(const std::optional<at::Tensor>& bias, int64_t size, const at::Tensor& x,
                   const char* op, const char* name) {
  if (!bias.has_value()) return {};
  check_like(*bias, x, op, name);
  check_shape(*bias, {size}, op, name);
  return bias->contiguous();
}

// (x_next, skip, gate_input): gate_input is z, saved for the backward when save_gate_input,
// otherwise an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> wavenet_layer_fwd(
    const at::Tensor& x, const at::Tensor& conv_weight, const std::optional<at::Tensor>& conv_bias,
    const at::Tensor& residual_weight, const std::optional<at::Tensor>& residual_bias,
    const at::Tensor& skip_weight, const std::optional<at::Tensor>& skip_bias, int64_t dilation,
    const std::optional<at::Tensor>& local_cond, const std::optional<at::Tensor>& local_weight,
    const std::optional<at::Tensor>& global_cond, const std::optional<at::Tensor>& global_weight,
    bool save_gate_input) {
  constexpr const char* op = "wavenet_layer_fwd";
  pyr_wavenet_layer_params p{};
  const Layer l = set_layer(p, x, conv_weight, residual_weight, skip_weight, local_cond,
                            local_weight, global_cond, global_weight, dilation, op);
  const auto cb = bias_of(conv_bias, 2 * p.gate_channels, x, op, "conv_bias");
  const auto rb = bias_of(residual_bias, p.residual_channels, x, op, "residual_bias");
  const auto sb = bias_of(skip_bias, p.skip_channels, x, op, "skip_bias");
  auto x_next = at::empty(x.sizes(), x.options());
  auto skip = at::empty({p.batch, p.skip_channels, p.length}, x.options());
  auto gate_input =
      at::empty({save_gate_input ? p.batch : 0, 2 * p.gate_channels, p.length}, x.options());
  // an empty batch or sequence has nothing to compute; the kernels take sizes >= 1.
  if (x.numel() == 0 || skip.numel() == 0) return std::make_tuple(x_next, skip, gate_input);

  p.conv_bias = cb.defined() ? cb.data_ptr() : nullptr;
  p.residual_bias = rb.defined() ? rb.data_ptr() : nullptr;
  p.skip_bias = sb.defined() ? sb.data_ptr() : nullptr;
  p.x_next = x_next.data_ptr();
  p.stride_x_next_b = x_next.stride(0);
  p.stride_x_next_c = x_next.stride(1);
  p.stride_x_next_t = x_next.stride(2);
  p.skip = skip.data_ptr();
  p.stride_skip_b = skip.stride(0);
  p.stride_skip_c = skip.stride(1);
  p.stride_skip_t = skip.stride(2);
  p.gate_input = save_gate_input ? gate_input.data_ptr() : nullptr;
  set_execution(p, x);
  launch(pyr_wavenet_layer_fwd_cpu, pyr_fwd_cuda, p, x, op);
  return std::make_tuple(x_next, skip, gate_input);
}

// The gradients, in the order of the forward's tensors: (dx, dconv_weight, dconv_bias,
// dresidual_weight, dresidual_bias, dskip_weight, dskip_bias, dlocal_cond, dlocal_weight,
// dglobal_cond, dglobal_weight). Each is computed only where output_mask asks for it and the
// layer has it (the conditioning's need the conditioning); the others are undefined (None).
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads wavenet_layer_bwd(
    const at::Tensor& dx_next, const at::Tensor& dskip, const at::Tensor& gate_input,
    const at::Tensor& x, const at::Tensor& conv_weight, const at::Tensor& residual_weight,
    const at::Tensor& skip_weight, int64_t dilation, const std::optional<at::Tensor>& local_cond,
    const std::optional<at::Tensor>& local_weight, const std::optional<at::Tensor>& global_cond,
    const std::optional<at::Tensor>& global_weight, std::array<bool, 11> output_mask) {
  constexpr const char* op = "wavenet_layer_bwd";
  pyr_wavenet_layer_bwd_params p{};
  const Layer l = set_layer(p, x, conv_weight, residual_weight, skip_weight, local_cond,
                            local_weight, global_cond, global_weight, dilation, op);
  check_like(dx_next, x, op, "dx_next");
  check_like(dskip, x, op, "dskip");
  check_like(gate_input, x, op, "gate_input");
  check_shape(dx_next, x.sizes(), op, "dx_next");
  check_shape(dskip, {p.batch, p.skip_channels, p.length}, op, "dskip");
  check_shape(gate_input, {p.batch, 2 * p.gate_channels, p.length}, op, "gate_input");
  const auto z = gate_input.contiguous();

  const auto& opts = x.options();
  const bool local = local_cond.has_value(), global = global_cond.has_value();
  auto grad = [&](int index, bool exists, at::IntArrayRef shape) {
    return output_mask[index] && exists ? at::empty(shape, opts) : at::Tensor();
  };
  Grads grads{grad(0, true, x.sizes()),
              grad(1, true, conv_weight.sizes()),
              grad(2, true, {2 * p.gate_channels}),
              grad(3, true, residual_weight.sizes()),
              grad(4, true, {p.residual_channels}),
              grad(5, true, skip_weight.sizes()),
              grad(6, true, {p.skip_channels}),
              grad(7, local, local ? local_cond->sizes() : at::IntArrayRef{}),
              grad(8, local, local ? local_weight->sizes() : at::IntArrayRef{}),
              grad(9, global, global ? global_cond->sizes() : at::IntArrayRef{}),
              grad(10, global, global ? global_weight->sizes() : at::IntArrayRef{})};
  auto& [dx, dconv_weight, dconv_bias, dresidual_weight, dresidual_bias, dskip_weight, dskip_bias,
         dlocal_cond, dlocal_weight, dglobal_cond, dglobal_weight] = grads;
  // with no time step or no batch row, every gradient is a sum of nothing.
  if (x.numel() == 0 || dskip.numel() == 0) {
    std::apply([](auto&... g) { ((g.defined() ? void(g.zero_()) : void()), ...); }, grads);
    return grads;
  }
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; };

  p.gate_input = z.data_ptr();
  p.dx_next = dx_next.data_ptr();
  p.stride_dx_next_b = dx_next.stride(0);
  p.stride_dx_next_c = dx_next.stride(1);
  p.stride_dx_next_t = dx_next.stride(2);
  p.dskip = dskip.data_ptr();
  p.stride_dskip_b = dskip.stride(0);
  p.stride_dskip_c = dskip.stride(1);
  p.stride_dskip_t = dskip.stride(2);
  if (dx.defined()) {
    p.dx = dx.data_ptr();
    p.stride_dx_b = dx.stride(0);
    p.stride_dx_c = dx.stride(1);
    p.stride_dx_t = dx.stride(2);
  }
  p.dconv_weight = ptr(dconv_weight);
  p.dconv_bias = ptr(dconv_bias);
  p.dresidual_weight = ptr(dresidual_weight);
  p.dresidual_bias = ptr(dresidual_bias);
  p.dskip_weight = ptr(dskip_weight);
  p.dskip_bias = ptr(dskip_bias);
  if (dlocal_cond.defined()) {
    p.dlocal_cond = dlocal_cond.data_ptr();
    p.stride_dlocal_b = dlocal_cond.stride(0);
    p.stride_dlocal_c = dlocal_cond.stride(1);
    p.stride_dlocal_t = dlocal_cond.stride(2);
  }
  p.dlocal_weight = ptr(dlocal_weight);
  p.dglobal_cond = ptr(dglobal_cond);
  p.dglobal_weight = ptr(dglobal_weight);
  set_execution(p, x);
  at::Tensor workspace;
#ifdef PYR_WITH_CUDA
  if (x.is_cuda()) {
    p.workspace_bytes = pyr_wavenet_layer_bwd_cuda_workspace_bytes(&p);
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, opts.dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
#endif
  launch(pyr_wavenet_layer_bwd_cpu, pyr_bwd_cuda, p, x, op);
  return grads;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def(
      "wavenet_layer_fwd(Tensor x, Tensor conv_weight, Tensor? conv_bias, Tensor residual_weight, "
      "Tensor? residual_bias, Tensor skip_weight, Tensor? skip_bias, int dilation, "
      "Tensor? local_cond, Tensor? local_weight, Tensor? global_cond, Tensor? global_weight, "
      "bool save_gate_input) -> (Tensor, Tensor, Tensor)");
  m.def(
      "wavenet_layer_bwd(Tensor dx_next, Tensor dskip, Tensor gate_input, Tensor x, "
      "Tensor conv_weight, Tensor residual_weight, Tensor skip_weight, int dilation, "
      "Tensor? local_cond, Tensor? local_weight, Tensor? global_cond, Tensor? global_weight, "
      "bool[11] output_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("wavenet_layer_fwd", &wavenet_layer_fwd);
  m.impl("wavenet_layer_bwd", &wavenet_layer_bwd);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("wavenet_layer_fwd", &wavenet_layer_fwd);
  m.impl("wavenet_layer_bwd", &wavenet_layer_bwd);
}
#endif

}  // namespace pyr
