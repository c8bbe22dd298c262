// Fast WaveNet generation on CUDA GPUs: one persistent cooperative kernel runs every step.
// Semantics are those of cpu/wavenet_step.cpp (pyreversible/reference/wavenet_step.py).
//
// The grid is at most one block per multiprocessor, all resident at once (cooperative launch),
// and the blocks split the output channels of every product between them. At the start each
// block copies its slice of the network into shared memory (or, when the slices do not fit, into
// its own part of the workspace), laid out so that a warp reads consecutive elements: its gate
// pairs of every layer's convolution (z[o] and z[G + o] together, so that the gate needs no
// exchange), its columns of the skip projections of every layer, of the head and of the output
// layer. A step then is:
//   per layer: each block computes z and the gate for its pairs, for every batch row, and writes
//     a to global memory; grid barrier; every block reads the whole a and updates its own copy
//     of the layer input h in shared memory with the residual projection (G x R, read from L2:
//     recomputing it in every block costs less than a second barrier per layer), and block 0
//     pushes the layer's input into the queue;
//   the skip sum over every layer at once (a of all layers against the stacked skip columns),
//   relu; barrier; the head; barrier; the output layer; barrier; a warp per batch row draws the
//   sample (softmax with temperature and an inclusive scan for the CDF, in float32); barrier,
//   after which every block embeds the new samples.
// That is L + 4 grid barriers per step. Weights are float32 or float16; every sum, the gate and
// the sampling run in float32. Buffers that other blocks wrote during the launch are read with
// ld.global.cg (L2, never a stale L1 line).
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include <algorithm>
#include <vector>

#include "coupling_common.cuh"
#include "pyreversible/kernels.h"

namespace cg = cooperative_groups;

namespace pyr_cpu {
// csrc/kernels/cpu/wavenet_step.cpp: every check of the params but the dtype and x.
pyr_status check_wavenet_step(const pyr_wavenet_step_params* p, bool read_x);
}  // namespace pyr_cpu

namespace {

using pyr_cuda::min64;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kPerLayer = 6;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// loads through L2 only, of data that another block may have written during the launch
__device__ __forceinline__ float load_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_cg(const __half* p) {
  return __half2float(__ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}
__device__ __forceinline__ int64_t load_cg(const int64_t* p) {
  return static_cast<int64_t>(__ldcg(reinterpret_cast<const long long*>(p)));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

__device__ __forceinline__ int64_t warp_sum(int64_t v) {
  for (int o = 16; o > 0; o >>= 1)
    v += static_cast<int64_t>(__shfl_xor_sync(kFull, static_cast<long long>(v), o));
  return v;
}

// How the blocks share the work, and where everything lives in the workspace.
struct Plan {
  int blocks;
  // gate pairs, skip columns, head columns and classes per block
  int64_t pairs, skips, heads, classes;
  int64_t slice_elems;  // elements of one block's weight slices
  bool use_smem;
  size_t smem_bytes;
  size_t table, gates, skip_relu, hidden, logits, x_next, error, slices, total;
};

size_t align_up(size_t v) { return (v + 255) / 256 * 256; }

template <typename T>
struct StepArgs {
  int64_t batch, classes, residual, gate, skip, taps, layers, queue_rows, position, steps;
  float temperature;
  const void* const* weights;  // the table of weight pointers, copied to the workspace
  const int64_t* dilations;    // L, in the workspace
  const int64_t* offsets;      // L, first queue row of each layer, in the workspace
  T* queue;
  const int64_t* x;
  const float* uniform;
  const T* cond;
  int64_t* samples;
  T* logits_out;
  float* gates;      // (B, L, G): the gate outputs of the step's layers
  float* skip_relu;  // (B, S)
  float* hidden;     // (B, S)
  float* logits;     // (B, C)
  int64_t* x_next;   // (B,)
  int* error;        // set to 1 when x holds a class index out of range
  T* slices;         // the blocks' weight slices when they are not in shared memory
  int64_t slice_elems;
  int use_smem;
  int64_t pairs, skips, heads, classes_per_block;
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) wavenet_step_kernel(const StepArgs<T> a) {
  cg::grid_group grid = cg::this_grid();
  extern __shared__ float4 smem_raw[];
  float* smem = reinterpret_cast<float*>(smem_raw);
  const int64_t B = a.batch, R = a.residual, G = a.gate, S = a.skip, C = a.classes;
  const int64_t K = a.taps, L = a.layers, Q = a.queue_rows;
  const int64_t KR = K * R, LG = L * G, GG = 2 * G;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t block = blockIdx.x;
  const int64_t np = a.pairs, ns = a.skips, nh = a.heads, nc = a.classes_per_block;
  const int64_t p0 = block * np, s0 = block * ns, h0 = block * nh, c0 = block * nc;
  const T* const* W = reinterpret_cast<const T* const*>(a.weights);

  // shared: every block's own copy of the layer input h (B, R) and of the layer's a (B, G),
  // then the slices when they fit
  float* h = smem;
  float* stage = h + B * R;
  T* slices = a.use_smem ? reinterpret_cast<T*>(stage + B * G) : a.slices + block * a.slice_elems;
  T* conv_s = slices;                    // [pair][f or g][layer][k R + i]
  T* skip_s = conv_s + np * 2 * L * KR;  // [column][layer G + o]
  T* head_s = skip_s + ns * LG;          // [column][i]
  T* out_s = head_s + nh * S;            // [column][i]

  for (int64_t e = threadIdx.x; e < np * 2 * L * KR; e += kThreads) {
    const int64_t ki = e % KR, l = (e / KR) % L, half = (e / (KR * L)) % 2, pair = e / (KR * L * 2);
    const int64_t o = p0 + pair;
    conv_s[e] = o < G ? W[1 + kPerLayer * l][ki * GG + half * G + o] : from_float<T>(0.f);
  }
  for (int64_t e = threadIdx.x; e < ns * LG; e += kThreads) {
    const int64_t i = e % LG, c = s0 + e / LG;
    skip_s[e] = c < S ? W[1 + kPerLayer * (i / G) + 4][(i % G) * S + c] : from_float<T>(0.f);
  }
  for (int64_t e = threadIdx.x; e < nh * S; e += kThreads) {
    const int64_t i = e % S, c = h0 + e / S;
    head_s[e] = c < S ? W[1 + kPerLayer * L][i * S + c] : from_float<T>(0.f);
  }
  for (int64_t e = threadIdx.x; e < nc * S; e += kThreads) {
    const int64_t i = e % S, c = c0 + e / S;
    out_s[e] = c < C ? W[1 + kPerLayer * L + 2][i * C + c] : from_float<T>(0.f);
  }
  __syncthreads();

  for (int64_t s = 0; s < a.steps; ++s) {
    const int64_t t = a.position + s;
    // h_0 = embedding[x] (zeros at t = 0); an index out of range reads nothing
    for (int64_t e = threadIdx.x; e < B * R; e += kThreads) {
      const int64_t b = e / R, r = e % R;
      float v = 0.f;
      if (t > 0) {
        const int64_t xb = s == 0 ? a.x[b] : load_cg(a.x_next + b);
        if (xb >= 0 && xb < C)
          v = to_float(W[0][xb * R + r]);
        else if (block == 0 && r == 0)
          atomicExch(a.error, 1);
      }
      h[e] = v;
    }
    __syncthreads();

    for (int64_t l = 0; l < L; ++l) {
      const int64_t d = a.dilations[l], length = (K - 1) * d, offset = a.offsets[l];
      const int64_t now = length > 0 ? t % length : 0;
      const T* conv_bias = W[1 + kPerLayer * l + 1];
      // z for this block's gate pairs, a warp per (batch row, pair), and the gate
      for (int64_t q = warp; q < B * np; q += kWarps) {
        const int64_t b = q / np, pair = q % np, o = p0 + pair;
        if (o >= G) continue;
        const T* wf = conv_s + ((pair * 2) * L + l) * KR;
        const T* wg = conv_s + ((pair * 2 + 1) * L + l) * KR;
        float zf = 0.f, zg = 0.f;
        for (int64_t ki = lane; ki < KR; ki += 32) {
          const int64_t k = ki / R, i = ki - k * R;
          float v;
          if (k == K - 1) {
            v = h[b * R + i];
          } else {
            // k < K - 1 happens only for K >= 2, where length >= 1
            const int64_t row = (now + length - (K - 1 - k) * d) % length;
            v = load_cg(a.queue + (b * Q + offset + row) * R + i);
          }
          zf += v * to_float(wf[ki]);
          zg += v * to_float(wg[ki]);
        }
        zf = warp_sum(zf);
        zg = warp_sum(zg);
        if (lane == 0) {
          zf += to_float(conv_bias[o]);
          zg += to_float(conv_bias[G + o]);
          if (a.cond) {
            const T* c = a.cond + ((s * B + b) * L + l) * GG;
            zf += to_float(c[o]);
            zg += to_float(c[G + o]);
          }
          a.gates[(b * L + l) * G + o] = tanhf(zf) * (1.f / (1.f + expf(-zg)));
        }
      }
      grid.sync();

      // every tap of this layer has been read: block 0 pushes h into the oldest tap's row; each
      // block takes the whole a and updates its h (the same loop order keeps h[e] one thread's)
      for (int64_t e = threadIdx.x; e < B * R; e += kThreads)
        if (block == 0 && length > 0)
          a.queue[((e / R) * Q + offset + now) * R + e % R] = from_float<T>(h[e]);
      for (int64_t e = threadIdx.x; e < B * G; e += kThreads)
        stage[e] = load_cg(a.gates + ((e / G) * L + l) * G + e % G);
      __syncthreads();
      const T* res = W[1 + kPerLayer * l + 2];
      const T* res_bias = W[1 + kPerLayer * l + 3];
      for (int64_t e = threadIdx.x; e < B * R; e += kThreads) {
        const int64_t b = e / R, r = e % R;
        float acc = to_float(res_bias[r]);
        for (int64_t o = 0; o < G; ++o) acc += stage[b * G + o] * to_float(res[o * R + r]);
        h[e] += acc;
      }
      __syncthreads();
    }

    // skip = relu(sum over layers of skip_l^T a_l + b_l) for this block's columns
    for (int64_t q = warp; q < B * ns; q += kWarps) {
      const int64_t b = q / ns, col = q % ns, c = s0 + col;
      if (c >= S) continue;
      float acc = 0.f;
      for (int64_t i = lane; i < LG; i += 32)
        acc += load_cg(a.gates + b * LG + i) * to_float(skip_s[col * LG + i]);
      acc = warp_sum(acc);
      if (lane == 0) {
        for (int64_t l = 0; l < L; ++l) acc += to_float(W[1 + kPerLayer * l + 5][c]);
        a.skip_relu[b * S + c] = acc < 0.f ? 0.f : acc;
      }
    }
    grid.sync();

    for (int64_t q = warp; q < B * nh; q += kWarps) {
      const int64_t b = q / nh, col = q % nh, c = h0 + col;
      if (c >= S) continue;
      float acc = 0.f;
      for (int64_t i = lane; i < S; i += 32)
        acc += load_cg(a.skip_relu + b * S + i) * to_float(head_s[col * S + i]);
      acc = warp_sum(acc);
      if (lane == 0) {
        acc += to_float(W[1 + kPerLayer * L + 1][c]);
        a.hidden[b * S + c] = acc < 0.f ? 0.f : acc;
      }
    }
    grid.sync();

    for (int64_t q = warp; q < B * nc; q += kWarps) {
      const int64_t b = q / nc, col = q % nc, c = c0 + col;
      if (c >= C) continue;
      float acc = 0.f;
      for (int64_t i = lane; i < S; i += 32)
        acc += load_cg(a.hidden + b * S + i) * to_float(out_s[col * S + i]);
      acc = warp_sum(acc);
      if (lane == 0) a.logits[b * C + c] = acc + to_float(W[1 + kPerLayer * L + 3][c]);
    }
    grid.sync();

    // a warp per batch row: lane j takes the classes [j per, (j + 1) per); the logits are
    // rounded to T first, as the reference samples from logits in the weights' dtype
    for (int64_t b = block * kWarps + warp; b < B; b += static_cast<int64_t>(gridDim.x) * kWarps) {
      const float* lg = a.logits + b * C;
      const int64_t per = (C + 31) / 32;
      const int64_t lo = min64(C, lane * per), hi = min64(C, lo + per);
      float top = -INFINITY;
      bool has_nan = false;
      for (int64_t c = lo; c < hi; ++c) {
        const float v = to_float(from_float<T>(load_cg(lg + c))) / a.temperature;
        has_nan |= isnan(v);
        top = fmaxf(top, v);
      }
      top = warp_max(top);
      has_nan = __any_sync(kFull, has_nan);
      float part = 0.f;
      for (int64_t c = lo; c < hi; ++c)
        part += expf(to_float(from_float<T>(load_cg(lg + c))) / a.temperature - top);
      const float total = warp_sum(part);
      // the lanes' probability mass, scanned: the CDF before lane j's first class
      float mass = 0.f;
      for (int64_t c = lo; c < hi; ++c)
        mass += expf(to_float(from_float<T>(load_cg(lg + c))) / a.temperature - top) / total;
      float scan = mass;
      for (int o = 1; o < 32; o <<= 1) {
        const float n = __shfl_up_sync(kFull, scan, o);
        if (lane >= o) scan += n;
      }
      float cdf = scan - mass;
      const float u = a.uniform[s * B + b];
      int64_t count = 0;
      for (int64_t c = lo; c < hi; ++c) {
        cdf += expf(to_float(from_float<T>(load_cg(lg + c))) / a.temperature - top) / total;
        count += cdf < u;
      }
      count = warp_sum(count);
      if (lane == 0) {
        // NaN logits make every comparison false in the reference: class 0
        const int64_t sample = has_nan ? 0 : min64(count, C - 1);
        a.samples[s * B + b] = sample;
        a.x_next[b] = sample;
      }
      if (s == a.steps - 1 && a.logits_out)
        for (int64_t c = lo; c < hi; ++c) a.logits_out[b * C + c] = from_float<T>(load_cg(lg + c));
    }
    grid.sync();
  }
}

pyr_status make_plan(const pyr_wavenet_step_params* p, Plan* plan) {
  int device = 0, sms = 0, max_smem = 0, cooperative = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess)
    return PYR_ERROR_CUDA;
  if (!cooperative || sms < 1) return PYR_ERROR_CUDA;
  const int64_t B = p->batch, R = p->residual_channels, G = p->gate_channels;
  const int64_t S = p->skip_channels, C = p->classes, K = p->kernel_size, L = p->num_layers;
  // one block per multiprocessor at most, and no more than the widest product has columns
  const int64_t widest = std::max({G, S, C});
  plan->blocks = static_cast<int>(std::min<int64_t>(sms, widest));
  const int64_t n = plan->blocks;
  plan->pairs = (G + n - 1) / n;
  plan->skips = (S + n - 1) / n;
  plan->heads = (S + n - 1) / n;
  plan->classes = (C + n - 1) / n;
  plan->slice_elems =
      plan->pairs * 2 * L * K * R + plan->skips * L * G + plan->heads * S + plan->classes * S;
  const size_t elem = p->dtype == PYR_FLOAT16 ? 2 : 4;
  const size_t base = static_cast<size_t>(B * (R + G)) * sizeof(float);
  if (base > static_cast<size_t>(max_smem)) return PYR_ERROR_INVALID_SIZE;
  plan->use_smem = base + plan->slice_elems * elem <= static_cast<size_t>(max_smem);
  plan->smem_bytes = plan->use_smem ? base + plan->slice_elems * elem : base;

  size_t at = 0;
  plan->table = at;
  at = align_up(at + (p->num_weights + 2 * L) * sizeof(int64_t));
  plan->gates = at;
  at = align_up(at + B * L * G * sizeof(float));
  plan->skip_relu = at;
  at = align_up(at + B * S * sizeof(float));
  plan->hidden = at;
  at = align_up(at + B * S * sizeof(float));
  plan->logits = at;
  at = align_up(at + B * C * sizeof(float));
  plan->x_next = at;
  at = align_up(at + B * sizeof(int64_t));
  plan->error = at;
  at = align_up(at + sizeof(int));
  plan->slices = at;
  if (!plan->use_smem) at = align_up(at + n * plan->slice_elems * elem);
  plan->total = at;
  return PYR_SUCCESS;
}

template <typename T>
pyr_status launch(const pyr_wavenet_step_params* p, const Plan& plan) {
  cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
  char* ws = static_cast<char*>(p->workspace);
  const int64_t L = p->num_layers;

  // the weight pointers, the dilations and each layer's first queue row, for the device
  std::vector<int64_t> table(p->num_weights + 2 * L);
  for (int64_t i = 0; i < p->num_weights; ++i)
    table[i] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p->weights[i]));
  int64_t offset = 0;
  for (int64_t l = 0; l < L; ++l) {
    table[p->num_weights + l] = p->dilations[l];
    table[p->num_weights + L + l] = offset;
    offset += (p->kernel_size - 1) * p->dilations[l];
  }
  // from pageable memory: the call returns once the table is staged, so `table` may go
  if (cudaMemcpyAsync(ws + plan.table, table.data(), table.size() * sizeof(int64_t),
                      cudaMemcpyHostToDevice, stream) != cudaSuccess ||
      cudaMemsetAsync(ws + plan.error, 0, sizeof(int), stream) != cudaSuccess)
    return PYR_ERROR_CUDA;

  StepArgs<T> a;
  a.batch = p->batch;
  a.classes = p->classes;
  a.residual = p->residual_channels;
  a.gate = p->gate_channels;
  a.skip = p->skip_channels;
  a.taps = p->kernel_size;
  a.layers = L;
  a.queue_rows = p->queue_rows;
  a.position = p->position;
  a.steps = p->steps;
  a.temperature = static_cast<float>(p->temperature);
  a.weights = reinterpret_cast<const void* const*>(ws + plan.table);
  a.dilations = reinterpret_cast<const int64_t*>(ws + plan.table) + p->num_weights;
  a.offsets = a.dilations + L;
  a.queue = static_cast<T*>(p->queue);
  a.x = p->x;
  a.uniform = p->uniform;
  a.cond = static_cast<const T*>(p->cond);
  a.samples = p->samples;
  a.logits_out = static_cast<T*>(p->logits);
  a.gates = reinterpret_cast<float*>(ws + plan.gates);
  a.skip_relu = reinterpret_cast<float*>(ws + plan.skip_relu);
  a.hidden = reinterpret_cast<float*>(ws + plan.hidden);
  a.logits = reinterpret_cast<float*>(ws + plan.logits);
  a.x_next = reinterpret_cast<int64_t*>(ws + plan.x_next);
  a.error = reinterpret_cast<int*>(ws + plan.error);
  a.slices = reinterpret_cast<T*>(ws + plan.slices);
  a.slice_elems = plan.slice_elems;
  a.use_smem = plan.use_smem ? 1 : 0;
  a.pairs = plan.pairs;
  a.skips = plan.skips;
  a.heads = plan.heads;
  a.classes_per_block = plan.classes;

  const void* kernel = reinterpret_cast<const void*>(&wavenet_step_kernel<T>);
  int per_sm = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(plan.smem_bytes)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, plan.smem_bytes) !=
          cudaSuccess)
    return PYR_ERROR_CUDA;
  // the grid barrier needs every block resident: one per multiprocessor must fit
  if (per_sm < 1) return PYR_ERROR_INVALID_SIZE;
  void* args[] = {&a};
  if (cudaLaunchCooperativeKernel(kernel, dim3(plan.blocks), dim3(kThreads), args, plan.smem_bytes,
                                  stream) != cudaSuccess)
    return PYR_ERROR_CUDA;
  return cudaGetLastError() == cudaSuccess ? PYR_SUCCESS : PYR_ERROR_CUDA;
}

}  // namespace

extern "C" size_t pyr_wavenet_step_cuda_workspace_bytes(const pyr_wavenet_step_params* p) {
  Plan plan;
  if (!p || pyr_cpu::check_wavenet_step(p, false) != PYR_SUCCESS ||
      make_plan(p, &plan) != PYR_SUCCESS)
    return 0;
  return plan.total;
}

extern "C" pyr_status pyr_wavenet_step_cuda(const pyr_wavenet_step_params* p) {
  if (!p) return PYR_ERROR_NULL_POINTER;
  if (p->dtype != PYR_FLOAT32 && p->dtype != PYR_FLOAT16) return PYR_ERROR_UNSUPPORTED_DTYPE;
  // x lies in device memory: the kernel checks each index as it reads it (see a.error)
  const pyr_status status = pyr_cpu::check_wavenet_step(p, false);
  if (status != PYR_SUCCESS) return status;
  // before the plan, which asks the device: a bad workspace is refused on any machine
  if (!p->workspace) return PYR_ERROR_NULL_POINTER;
  if (reinterpret_cast<uintptr_t>(p->workspace) % sizeof(int64_t))
    return PYR_ERROR_INVALID_ARGUMENT;
  Plan plan;
  const pyr_status planned = make_plan(p, &plan);
  if (planned != PYR_SUCCESS) return planned;
  if (p->workspace_bytes < plan.total) return PYR_ERROR_INVALID_SIZE;
  try {
    return p->dtype == PYR_FLOAT32 ? launch<float>(p, plan) : launch<__half>(p, plan);
  } catch (...) {
    return PYR_ERROR_OUT_OF_MEMORY;
  }
}
