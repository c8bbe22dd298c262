// torch.library registration of fast WaveNet generation: schemas, argument checks, allocation,
// and dispatch to the C ABI. wavenet_step runs one step and returns the logits beside the
// samples; wavenet_generate runs N steps in one kernel call. Both update the queue in place,
// which their schemas declare (Tensor(a!) queue).
#include <limits>
#include <tuple>
#include <vector>

#include "common.h"

namespace pyr {
namespace {

constexpr int64_t kPerLayer = 6;
constexpr int64_t kHead = 4;

void check_like(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " is on ", t.device(),
                    ", the weights on ", like.device());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), ", the weights ", like.scalar_type());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must be ", expected, ", got ",
                    t.sizes());
}

// The checked inputs of one call, kept alive while the kernel runs.
struct Call {
  std::vector<at::Tensor> weights;
  std::vector<const void*> pointers;
  std::vector<int64_t> dilations;
  at::Tensor x, uniform, cond;
};

// Checks every argument against the weights (the checks of pyreversible/ops/wavenet_step.py,
// for callers of torch.ops.pyreversible directly) and fills the params; `steps` < 0 means one
// step (uniform (B,), cond (B, L, 2G)).
Call set_params(pyr_wavenet_step_params& p, const at::Tensor& x, const at::Tensor& uniform,
                const at::Tensor& queue, int64_t position, at::TensorList weights,
                at::IntArrayRef dilations, double temperature,
                const std::optional<at::Tensor>& cond, int64_t steps, const char* op) {
  const auto layers = static_cast<int64_t>(dilations.size());
  TORCH_CHECK_VALUE(layers >= 1, op, ": the network needs at least one layer");
  TORCH_CHECK_VALUE(static_cast<int64_t>(weights.size()) == 1 + kPerLayer * layers + kHead, op,
                    ": weights has ", weights.size(), " tensors; ", layers, " layers take ",
                    1 + kPerLayer * layers + kHead, " (see pack_weights)");
  const at::Tensor& embedding = weights[0];
  TORCH_CHECK_VALUE(embedding.dim() == 2, op, ": embedding must be (C, R), got ",
                    embedding.sizes());
  TORCH_CHECK_VALUE(weights[1].dim() == 3 && weights[1].size(2) % 2 == 0, op,
                    ": conv weight must be (K, R, 2G), got ", weights[1].sizes());
  TORCH_CHECK_VALUE(weights[5].dim() == 2, op, ": skip weight must be (G, S), got ",
                    weights[5].sizes());
  const int64_t classes = embedding.size(0), residual = embedding.size(1);
  const int64_t taps = weights[1].size(0), gate = weights[1].size(2) / 2;
  const int64_t skip = weights[5].size(1);
  Call c;
  std::vector<std::vector<int64_t>> shapes{{classes, residual}};
  for (int64_t l = 0; l < layers; ++l) {
    shapes.push_back({taps, residual, 2 * gate});
    shapes.push_back({2 * gate});
    shapes.push_back({gate, residual});
    shapes.push_back({residual});
    shapes.push_back({gate, skip});
    shapes.push_back({skip});
  }
  for (std::vector<int64_t> shape :
       {std::vector<int64_t>{skip, skip}, {skip}, {skip, classes}, {classes}})
    shapes.push_back(shape);
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string name = "weights[" + std::to_string(i) + "]";
    check_like(weights[i], embedding, op, name.c_str());
    check_shape(weights[i], shapes[i], op, name.c_str());
    c.weights.push_back(weights[i].contiguous());
    c.pointers.push_back(c.weights.back().data_ptr());
  }
  int64_t rows = 0;
  for (int64_t d : dilations) {
    TORCH_CHECK_VALUE(d >= 1, op, ": dilations must be >= 1, got ", dilations);
    rows += (taps - 1) * d;
    c.dilations.push_back(d);
  }

  TORCH_CHECK_TYPE(x.scalar_type() == at::kLong && x.dim() == 1, op,
                   ": x must be a (B,) int64 tensor, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK_VALUE(x.device() == embedding.device(), op, ": x is on ", x.device(),
                    ", the weights on ", embedding.device());
  const int64_t batch = x.size(0);
  TORCH_CHECK_VALUE(batch >= 1, op, ": the batch is empty");
  std::vector<int64_t> lead{batch};
  if (steps >= 0) lead.insert(lead.begin(), steps);
  TORCH_CHECK_TYPE(uniform.scalar_type() == at::kFloat, op, ": uniform must be float32, got ",
                   uniform.scalar_type());
  TORCH_CHECK_VALUE(uniform.device() == embedding.device(), op, ": uniform is on ",
                    uniform.device(), ", the weights on ", embedding.device());
  check_shape(uniform, lead, op, "uniform");
  check_like(queue, embedding, op, "queue");
  TORCH_CHECK_VALUE(queue.sizes() == at::IntArrayRef({batch, rows, residual}), op,
                    ": queue must be (B, Q, R) = (", batch, ", ", rows, ", ", residual,
                    ") for this network and batch, got ", queue.sizes(),
                    " (a queue belongs to one batch size)");
  TORCH_CHECK_VALUE(queue.is_contiguous(), op, ": queue must be contiguous (see new_queue)");
  TORCH_CHECK_VALUE(position >= 0, op, ": position must be >= 0, got ", position);
  TORCH_CHECK_VALUE(temperature > 0 && temperature <= std::numeric_limits<double>::max(), op,
                    ": temperature must be finite and > 0, got ", temperature);
  if (cond.has_value()) {
    check_like(*cond, embedding, op, "cond");
    std::vector<int64_t> shape = lead;
    shape.push_back(layers);
    shape.push_back(2 * gate);
    check_shape(*cond, shape, op, "cond");
    c.cond = cond->contiguous();
  }
  c.x = x.contiguous();
  c.uniform = uniform.contiguous();

  p.dtype = dtype_code(embedding, op);
  p.batch = batch;
  p.classes = classes;
  p.residual_channels = residual;
  p.gate_channels = gate;
  p.skip_channels = skip;
  p.kernel_size = taps;
  p.num_layers = layers;
  p.dilations = c.dilations.data();
  p.num_weights = static_cast<int64_t>(c.pointers.size());
  p.weights = c.pointers.data();
  p.queue_rows = rows;
  p.queue = queue.numel() ? queue.data_ptr() : nullptr;
  p.position = position;
  p.steps = steps >= 0 ? steps : 1;
  p.temperature = temperature;
  p.x = c.x.data_ptr<int64_t>();
  p.uniform = c.uniform.data_ptr<float>();
  p.cond = c.cond.defined() ? c.cond.data_ptr() : nullptr;
  set_execution(p, embedding);
  return c;
}

// Runs the kernel of the weights' device; a class index out of range is the one argument the
// checks above leave to the kernel (it reads x), which reports it before touching any memory.
void run(pyr_wavenet_step_params& p, const at::Tensor& like, const char* op) {
  pyr_status status;
  if (like.is_cuda()) {
#ifdef PYR_WITH_CUDA
    const c10::cuda::CUDAGuard guard(like.device());
    // the kernel cannot report to the host without a synchronisation: x is checked here
    if (p.position > 0) {
      const at::Tensor x =
          at::from_blob(const_cast<int64_t*>(p.x), {p.batch},
                        at::TensorOptions().dtype(at::kLong).device(like.device()));
      TORCH_CHECK_VALUE(((x >= 0) & (x < p.classes)).all().item<bool>(), op,
                        ": x holds a class index outside [0, ", p.classes, ")");
    }
    auto workspace = at::empty({static_cast<int64_t>(pyr_wavenet_step_cuda_workspace_bytes(&p))},
                               like.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
    p.workspace_bytes = static_cast<size_t>(workspace.numel());
    status = pyr_wavenet_step_cuda(&p);
#else
    TORCH_CHECK(false, op, ": pyreversible._C was built without CUDA");
#endif
  } else {
    status = pyr_wavenet_step_cpu(&p);
  }
  TORCH_CHECK_VALUE(status != PYR_ERROR_INVALID_ARGUMENT, op,
                    ": x holds a class index outside [0, ", p.classes, ")");
  check_status(status, op);
}

std::tuple<at::Tensor, at::Tensor> wavenet_step(const at::Tensor& x, const at::Tensor& uniform,
                                                const at::Tensor& queue, int64_t position,
                                                at::TensorList weights, at::IntArrayRef dilations,
                                                double temperature,
                                                const std::optional<at::Tensor>& cond) {
  constexpr const char* op = "wavenet_step";
  pyr_wavenet_step_params p{};
  const Call c =
      set_params(p, x, uniform, queue, position, weights, dilations, temperature, cond, -1, op);
  auto samples = at::empty({p.batch}, x.options());
  auto logits = at::empty({p.batch, p.classes}, c.weights[0].options());
  p.samples = samples.data_ptr<int64_t>();
  p.logits = logits.data_ptr();
  run(p, c.weights[0], op);
  return std::make_tuple(samples, logits);
}

at::Tensor wavenet_generate(const at::Tensor& x, const at::Tensor& uniform, const at::Tensor& queue,
                            int64_t position, at::TensorList weights, at::IntArrayRef dilations,
                            double temperature, const std::optional<at::Tensor>& cond) {
  constexpr const char* op = "wavenet_generate";
  TORCH_CHECK_VALUE(uniform.dim() == 2, op, ": uniform must be (N, B), got ", uniform.sizes());
  const int64_t steps = uniform.size(0);
  TORCH_CHECK_VALUE(steps >= 1, op, ": uniform must hold at least one step, got ", uniform.sizes());
  pyr_wavenet_step_params p{};
  const Call c =
      set_params(p, x, uniform, queue, position, weights, dilations, temperature, cond, steps, op);
  auto samples = at::empty({steps, p.batch}, x.options());
  p.samples = samples.data_ptr<int64_t>();
  run(p, c.weights[0], op);
  return samples;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyreversible, m) {
  m.def(
      "wavenet_step(Tensor x, Tensor uniform, Tensor(a!) queue, int position, Tensor[] weights, "
      "int[] dilations, float temperature, Tensor? cond) -> (Tensor, Tensor)");
  m.def(
      "wavenet_generate(Tensor x, Tensor uniform, Tensor(a!) queue, int position, "
      "Tensor[] weights, int[] dilations, float temperature, Tensor? cond) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyreversible, CPU, m) {
  m.impl("wavenet_step", &wavenet_step);
  m.impl("wavenet_generate", &wavenet_generate);
}

#ifdef PYR_WITH_CUDA
TORCH_LIBRARY_IMPL(pyreversible, CUDA, m) {
  m.impl("wavenet_step", &wavenet_step);
  m.impl("wavenet_generate", &wavenet_generate);
}
#endif

}  // namespace pyr
