// torch.library registration of the reversible block's elementwise kernels: schemas, argument
// checks and dispatch to the C ABI for CPU and CUDA tensors. Both ops write into outputs the
// caller passes (a half of a buffer that carries a sequence of blocks) and return nothing.
#include "common.h"

namespace pyr {
namespace {

#ifdef PYR_WITH_CUDA
constexpr auto pyr_block_cuda = pyr_reversible_block_cuda;
#else
constexpr decltype(&pyr_reversible_block_cpu) pyr_block_cuda = nullptr;
#endif

// Checks one (B, M) operand against the output of its term and fills its pointer and strides.
void set_operand(const at::Tensor& t, const at::Tensor& out, const char* op, const char* name,
                 const void** ptr, int64_t* stride_b, int64_t* stride_d) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.sizes() == out.sizes(), op, ": ", name, " must be (",
                    out.size(0), ", ", out.size(1), ") like its output, got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == out.device(), op, ": ", name, " is on ", t.device(),
                    ", its output on ", out.device());
  TORCH_CHECK_TYPE(t.scalar_type() == out.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), ", its output ", out.scalar_type());
  *ptr = t.data_ptr();
  *stride_b = t.stride(0);
  *stride_d = t.stride(1);
}

void set_term(pyr_reversible_block_term& term, const at::Tensor& a, const at::Tensor& c,
              const at::Tensor& out, int64_t sign, const char* op, const char* a_name,
              const char* c_name) {
  TORCH_CHECK_VALUE(out.dim() == 2, op, ": outputs must be (B, M), got ", out.dim(), "-D");
  TORCH_CHECK_VALUE(sign == 1 || sign == -1, op, ": sign must be 1 or -1, got ", sign);
  set_operand(a, out, op, a_name, &term.a, &term.stride_a_b, &term.stride_a_d);
  set_operand(c, out, op, c_name, &term.c, &term.stride_c_b, &term.stride_c_d);
  term.out = out.data_ptr();
  term.stride_out_b = out.stride(0);
  term.stride_out_d = out.stride(1);
  term.sign = static_cast<int32_t>(sign);
}

void run(pyr_reversible_block_params& p, const at::Tensor& out, const char* op) {
  p.dtype = dtype_code(out, op);
  p.batch = out.size(0);
  p.dim = out.size(1);
  set_execution(p, out);
  launch(pyr_reversible_block_cpu, pyr_block_cuda, p, out, op);
}

void reversible_block_fwd(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& out,
                          int64_t sign) {
  constexpr const char* op = "reversible_block_fwd";
  pyr_reversible_block_params p{};
  p.num_terms = 1;
  set_term(p.terms[0], x, shift, out, sign, op, "x", "shift");
  run(p, out, op);
}

void reversible_block_bwd(const at::Tensor& y, const at::Tensor& shift, const at::Tensor& x,
                          const at::Tensor& dy, const at::Tensor& grad, const at::Tensor& dx) {
  constexpr const char* op = "reversible_block_bwd";
  TORCH_CHECK_VALUE(x.dim() == 2 && dx.sizes() == x.sizes(), op,
                    ": x and dx must be (B, M) of one shape, got ", x.sizes(), " and ", dx.sizes());
  TORCH_CHECK_VALUE(dx.device() == x.device(), op, ": dx is on ", dx.device(), ", x on ",
                    x.device());
  pyr_reversible_block_params p{};
  p.num_terms = 2;
  set_term(p.terms[0], y, shift, x, -1, op, "y", "shift");
  set_term(p.terms[1], dy, grad, dx, 1, op, "dy", "grad");
  run(p, x, op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def("reversible_block_fwd(Tensor x, Tensor shift, Tensor(a!) out, int sign) -> ()");
  m.def(
      "reversible_block_bwd(Tensor y, Tensor shift, Tensor(a!) x, Tensor dy, Tensor grad, "
      "Tensor(b!) dx) -> ()");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("reversible_block_fwd", &reversible_block_fwd);
  m.impl("reversible_block_bwd", &reversible_block_bwd);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("reversible_block_fwd", &reversible_block_fwd);
  m.impl("reversible_block_bwd", &reversible_block_bwd);
}
#endif

}  // namespace pyr
