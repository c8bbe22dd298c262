/*
 * pyreversible kernels: the C ABI.
 *
 * Plain C functions over parameter structs. Pointers are raw device or host pointers, sizes and
 * strides are in elements (not bytes). Every function returns a pyr_status; no C++ exception
 * crosses this header. Nothing here includes torch.
 *
 * Conventions of every entry point:
 * - A params struct is read, never kept: the call returns when the work is done (CPU) or
 *   queued on `stream` (CUDA). Zero-initialise a struct before filling it in: the optional
 *   pointers (bias, conditioning, gradients not wanted) are then NULL, and num_threads and
 *   stream their defaults.
 * - Tensors are (sizes, strides) views of the caller's buffers; "contiguous" means row-major
 *   with no gaps. The arguments are checked before any memory is touched, and a bad one makes
 *   the call return its status without side effects:
 *     PYR_ERROR_NULL_POINTER      the params, or a pointer the call needs, is NULL;
 *     PYR_ERROR_INVALID_SIZE      a size is below 1 (0 where a size may be absent), sizes
 *                                 disagree, or one is too large to index (beyond 2^50 elements);
 *     PYR_ERROR_INVALID_STRIDE    a layout no buffer can have: a negative stride, a furthest
 *                                 element sum((size - 1) * stride) beyond 2^50, or, for an
 *                                 output, a stride 0 along a dimension of size > 1 (two elements
 *                                 in one place). The ABI carries no buffer lengths: that every
 *                                 element of a view lies inside its buffer is the caller's part;
 *     PYR_ERROR_UNSUPPORTED_DTYPE a dtype code that is not a pyr_dtype, or one the kernel lacks
 *                                 (the CPU kernels take float32 and float64);
 *     PYR_ERROR_INVALID_ARGUMENT  any other value out of its range (sign, dilation, groups,
 *                                 mask type, partition, layer count, workspace alignment);
 *     PYR_ERROR_OUT_OF_MEMORY     the kernel's scratch could not be allocated (CPU);
 *     PYR_ERROR_CUDA              a CUDA call failed (the launch, or the device);
 *     PYR_ERROR_NOT_BUILT         a *_cuda entry point of a library built without CUDA
 *                                 (pyr_built_with_cuda() returns 0); it checks nothing.
 *   When several arguments are bad, which of their codes comes back is not specified.
 * - num_threads (CPU) is the number of OpenMP threads, 0 for the OpenMP runtime's default;
 *   stream (CUDA) is a cudaStream_t, NULL for the default stream. Each is ignored by the other.
 * - Outputs are overwritten, never accumulated into, and may not overlap an input unless the
 *   entry point says so.
 */
#ifndef PYREVERSIBLE_KERNELS_H
#define PYREVERSIBLE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYR_VERSION_MAJOR 0
#define PYR_VERSION_MINOR 1
#define PYR_VERSION_PATCH 0

/* The most layers (hidden layers + the output layer) a fused coupling MLP may have. */
#define PYR_MAX_LAYERS 16

typedef enum pyr_status {
  PYR_SUCCESS = 0,
  PYR_ERROR_NULL_POINTER = 1,
  PYR_ERROR_INVALID_SIZE = 2,
  PYR_ERROR_INVALID_STRIDE = 3,
  PYR_ERROR_UNSUPPORTED_DTYPE = 4,
  PYR_ERROR_INVALID_ARGUMENT = 5,
  PYR_ERROR_OUT_OF_MEMORY = 6,
  PYR_ERROR_CUDA = 7,
  PYR_ERROR_NOT_BUILT = 8
} pyr_status;

typedef enum pyr_dtype {
  PYR_FLOAT32 = 0,
  PYR_FLOAT64 = 1,
  PYR_FLOAT16 = 2,
  PYR_BFLOAT16 = 3
} pyr_dtype;

/* "major.minor.patch" of the library. */
const char* pyr_version(void);

/* A short English message for a status code ("unknown status" for a value not in pyr_status);
   a static string, never NULL. */
const char* pyr_status_string(pyr_status status);

/* 1 when the CUDA kernels were built into this library, 0 when its *_cuda entry points only
   return PYR_ERROR_NOT_BUILT. */
int pyr_built_with_cuda(void);

/*
 * A partition of the D features of a row into a conditioning part a (dim_a features) and an
 * updated part b (dim_b = D - dim_a features). Feature j of part a (0 <= j < dim_a) sits at
 * position pyr_partition_position(p, j, 0) of the row, feature j of part b at
 * pyr_partition_position(p, j, 1). Rows are addressed through (B, D) strides, so a (B, C, H, W)
 * tensor is presented as its (B, C*H*W) view.
 *
 *   PYR_PARTITION_SPLIT:      a-feature j at offset_a + j, b-feature j at offset_b + j, the
 *                             two ranges disjoint and inside the row
 *                             (the "half" partition of a vector, "channel" of an image).
 *   PYR_PARTITION_INTERLEAVE: rows of 2 * row_pairs positions, `height` rows per channel;
 *                             position k of a row belongs to part a when
 *                             (k + row % height + parity) is even. Feature j of a part is the
 *                             (j % row_pairs)-th of its positions in row j / row_pairs
 *                             ("odd-even" of a vector: height 1, row_pairs = ceil(D / 2);
 *                             "checkerboard" of an image: height H, row_pairs = W / 2).
 */
typedef enum pyr_partition_kind {
  PYR_PARTITION_SPLIT = 0,
  PYR_PARTITION_INTERLEAVE = 1
} pyr_partition_kind;

typedef struct pyr_partition {
  int32_t kind;      /* pyr_partition_kind */
  int32_t parity;    /* INTERLEAVE: 0 or 1 */
  int64_t dim_a;     /* features in the conditioning part */
  int64_t dim_b;     /* features in the updated part */
  int64_t offset_a;  /* SPLIT: first position of part a */
  int64_t offset_b;  /* SPLIT: first position of part b */
  int64_t row_pairs; /* INTERLEAVE: positions of one part per row */
  int64_t height;    /* INTERLEAVE: rows per channel */
} pyr_partition;

/* The position within a row of feature j of part a (part = 0) or part b (part = 1). */
static inline int64_t pyr_partition_position(const pyr_partition* p, int64_t j, int part) {
  if (p->kind == PYR_PARTITION_SPLIT) return (part ? p->offset_b : p->offset_a) + j;
  int64_t row = j / p->row_pairs;
  int64_t k = j - row * p->row_pairs;
  int64_t shift = (row % p->height + p->parity + part) & 1;
  return row * 2 * p->row_pairs + 2 * k + shift;
}

/*
 * Additive coupling around a shift computed elsewhere (any coupling network):
 *   y_a = x_a,  y_b = x_b + sign * shift.
 * x, y: (batch, D) with strides; shift: (batch, dim_b) with strides, column j the shift of
 * feature j of part b. y may not alias x or shift.
 * Returns PYR_ERROR_NULL_POINTER for a missing x, shift or y; PYR_ERROR_INVALID_SIZE for a batch
 * below 1, D below 2 or dim_a + dim_b != D; PYR_ERROR_INVALID_ARGUMENT for a sign other than
 * +1 and -1 or a partition that is not a split of the row into its two parts (unknown kind,
 * parity not 0 or 1, overlapping or out-of-row positions); PYR_ERROR_INVALID_STRIDE and
 * PYR_ERROR_UNSUPPORTED_DTYPE as above (float16 and bfloat16 on CUDA only).
 */
typedef struct pyr_additive_coupling_params {
  int32_t dtype; /* pyr_dtype */
  int32_t sign;  /* +1 forward, -1 inverse */
  int64_t batch;
  int64_t dim; /* D = dim_a + dim_b */
  pyr_partition partition;
  const void* x;
  int64_t stride_x_b, stride_x_d;
  const void* shift;
  int64_t stride_shift_b, stride_shift_d;
  void* y;
  int64_t stride_y_b, stride_y_d;
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_additive_coupling_params;

pyr_status pyr_additive_coupling_fwd_cpu(const pyr_additive_coupling_params* p);
pyr_status pyr_additive_coupling_fwd_cuda(const pyr_additive_coupling_params* p);

/*
 * The whole coupling layer with an MLP coupling network, fused:
 *   h_0 = x_a,  h_l = relu(h_{l-1} W_l^T + b_l) for l = 1 .. L-1,
 *   m(x_a) = h_{L-1} W_L^T + b_L,
 *   y_a = x_a,  y_b = x_b + sign * m(x_a).
 * weight[l]: (widths[l+1], widths[l]) contiguous (nn.Linear's layout), bias[l]: (widths[l+1],),
 * widths[0] = dim_a, widths[num_layers] = dim_b. hidden[l] for l < num_layers - 1, when not NULL,
 * receives h_{l+1} as a contiguous (batch, widths[l+1]) array for the backward pass; all of them
 * are NULL or none. x, y: (batch, D) with strides; y may not alias x.
 * CUDA: accumulates in float32 for float16 and bfloat16; needs `workspace` (device memory of
 * the queried size, aligned to the dtype) when hidden[] is NULL and there is a hidden layer.
 * Returns the codes of pyr_additive_coupling_fwd_cpu, and PYR_ERROR_NULL_POINTER for a missing
 * weight or bias, or hidden[] given for some layers and not others (or a needed workspace);
 * PYR_ERROR_INVALID_ARGUMENT for num_layers outside 1 .. PYR_MAX_LAYERS; PYR_ERROR_INVALID_SIZE
 * for a width below 1, widths[0] != dim_a or widths[num_layers] != dim_b (or a workspace smaller
 * than asked).
 */
typedef struct pyr_additive_coupling_mlp_params {
  int32_t dtype;
  int32_t sign;
  int64_t batch;
  int64_t dim;
  pyr_partition partition;
  int32_t num_layers;
  int64_t widths[PYR_MAX_LAYERS + 1];
  const void* weight[PYR_MAX_LAYERS];
  const void* bias[PYR_MAX_LAYERS];
  void* hidden[PYR_MAX_LAYERS];
  const void* x;
  int64_t stride_x_b, stride_x_d;
  void* y;
  int64_t stride_y_b, stride_y_d;
  void* workspace; /* CUDA: pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
  int32_t num_threads;
  void* stream;
} pyr_additive_coupling_mlp_params;

pyr_status pyr_additive_coupling_mlp_fwd_cpu(const pyr_additive_coupling_mlp_params* p);
pyr_status pyr_additive_coupling_mlp_fwd_cuda(const pyr_additive_coupling_mlp_params* p);
/* Bytes of workspace the CUDA forward needs for these params (0 when hidden[] is given, for
   NULL params, and in a library built without CUDA). */
size_t pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes(
    const pyr_additive_coupling_mlp_params* p);

/*
 * Backward of the fused layer. Given dy = dL/dy (or dL/dx for the inverse, sign -1), the
 * conditioning features (read from `cond`, which is x or y: their a-parts are equal) and the
 * hidden activations saved by the forward:
 *   g_L = sign * dy_b,  dW_l = g_l^T h_{l-1},  db_l = sum over rows of g_l,
 *   g_{l-1} = (g_l W_l) * [not h_{l-1} <= 0],  dx = dy,  dx_a += g_0.
 * The ReLU mask is torch's: zero where h <= 0, so a NaN activation passes its gradient on.
 * dx: (batch, D) with strides; dweight[l], dbias[l] contiguous like weight[l], bias[l]. All
 * outputs are overwritten, not accumulated into. dx may alias dy (it is then updated in place).
 * hidden[l], weight[l], dweight[l], dbias[l] as in the forward; cond, dy: (batch, D) with
 * strides. CUDA: `workspace` is always needed (the queried size, device memory, aligned to the
 * accumulation type). Status codes as for the forward, and PYR_ERROR_NULL_POINTER for a missing
 * cond, dy, dx, dweight[l], dbias[l] or hidden[l] (l < num_layers - 1).
 */
typedef struct pyr_additive_coupling_mlp_bwd_params {
  int32_t dtype;
  int32_t sign;
  int64_t batch;
  int64_t dim;
  pyr_partition partition;
  int32_t num_layers;
  int64_t widths[PYR_MAX_LAYERS + 1];
  const void* weight[PYR_MAX_LAYERS];
  const void* hidden[PYR_MAX_LAYERS];
  const void* cond;
  int64_t stride_cond_b, stride_cond_d;
  const void* dy;
  int64_t stride_dy_b, stride_dy_d;
  void* dx;
  int64_t stride_dx_b, stride_dx_d;
  void* dweight[PYR_MAX_LAYERS];
  void* dbias[PYR_MAX_LAYERS];
  void* workspace; /* CUDA: pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
  int32_t num_threads;
  void* stream;
} pyr_additive_coupling_mlp_bwd_params;

pyr_status pyr_additive_coupling_mlp_bwd_cpu(const pyr_additive_coupling_mlp_bwd_params* p);
pyr_status pyr_additive_coupling_mlp_bwd_cuda(const pyr_additive_coupling_mlp_bwd_params* p);
/* Bytes of workspace the CUDA backward needs for these params (0 for NULL params, and in a
   library built without CUDA). */
size_t pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes(
    const pyr_additive_coupling_mlp_bwd_params* p);

/*
 * Causal dilated 1-D convolution (WaveNet), nn.Conv1d on the input left-padded by (K - 1) * d,
 * without the padded copy:
 *   y[b, o, t] = bias[o] + sum_{i in o's group} sum_k W[o, i, k] * x[b, i, t - (K - 1 - k) * d],
 * with x = 0 before t = 0. Channels are split into `groups` groups; output channel o reads the
 * in_channels / groups input channels of its group (groups = in_channels = out_channels is the
 * depthwise convolution).
 * x: (batch, in_channels, length) with strides; y: (batch, out_channels, length) with strides,
 * not aliasing x; weight: (out_channels, in_channels / groups, kernel_size) contiguous
 * (nn.Conv1d's layout); bias: (out_channels,) contiguous, or NULL for none.
 * Returns PYR_ERROR_NULL_POINTER for a missing x, weight or y, PYR_ERROR_INVALID_SIZE for a size
 * below 1 or one too large to index (also (K - 1) * d), PYR_ERROR_INVALID_ARGUMENT for a
 * dilation below 1 or groups that do not divide both channel counts, PYR_ERROR_INVALID_STRIDE
 * for a layout of x or y that breaks the rules above and PYR_ERROR_UNSUPPORTED_DTYPE for a dtype
 * other than float32 and float64 (CPU).
 */
typedef struct pyr_causal_conv1d_params {
  int32_t dtype; /* pyr_dtype */
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t length;      /* T, time steps */
  int64_t kernel_size; /* K, taps */
  int64_t dilation;    /* d, time steps between taps */
  int64_t groups;
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const void* weight;
  const void* bias;
  void* y;
  int64_t stride_y_b, stride_y_c, stride_y_t;
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_causal_conv1d_params;

pyr_status pyr_causal_conv1d_fwd_cpu(const pyr_causal_conv1d_params* p);
/*
 * The same on a CUDA device, for float32, float64, float16 and bfloat16 (the 16-bit types
 * accumulate in float32), on `stream`; pointers are device pointers. Returns after the launch
 * (PYR_ERROR_CUDA when it failed), with the status codes of the CPU version otherwise, and
 * PYR_ERROR_INVALID_SIZE also for in_channels / groups * kernel_size or out_channels / groups *
 * kernel_size at or past 2^31.
 */
pyr_status pyr_causal_conv1d_fwd_cuda(const pyr_causal_conv1d_params* p);

/*
 * Backward of the causal convolution. Given dy = dL/dy (batch, out_channels, length):
 *   dx[b, i, t] = sum_{o in i's group} sum_k W[o, i, k] * dy[b, o, t + (K - 1 - k) * d]
 *                 (dy = 0 from t = length on),
 *   dW[o, i, k] = sum_b sum_t dy[b, o, t] * x[b, i, t - (K - 1 - k) * d],
 *   db[o]       = sum_b sum_t dy[b, o, t].
 * dx: like x, with strides; dweight, dbias: contiguous like weight and bias. Each of dx,
 * dweight and dbias may be NULL, and is then not computed; the others are overwritten, not
 * accumulated into. x is needed (non-NULL) only when dweight is asked for; weight and dy always.
 * Status codes as for the forward (PYR_ERROR_NULL_POINTER for a missing weight, dy, or x with
 * dweight).
 */
typedef struct pyr_causal_conv1d_bwd_params {
  int32_t dtype;
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t length;
  int64_t kernel_size;
  int64_t dilation;
  int64_t groups;
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const void* weight;
  const void* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_t;
  void* dx;
  int64_t stride_dx_b, stride_dx_c, stride_dx_t;
  void* dweight;
  void* dbias;
  int32_t num_threads;
  void* stream;
  void* workspace; /* CUDA: pyr_causal_conv1d_bwd_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
} pyr_causal_conv1d_bwd_params;

pyr_status pyr_causal_conv1d_bwd_cpu(const pyr_causal_conv1d_bwd_params* p);
/*
 * The backward on a CUDA device, as pyr_causal_conv1d_fwd_cuda. dweight and dbias are summed
 * over the batch and time in a fixed order through `workspace` (device memory of at least
 * pyr_causal_conv1d_bwd_cuda_workspace_bytes(p) bytes, aligned to 8; it may be NULL when that
 * is 0): PYR_ERROR_NULL_POINTER without it, PYR_ERROR_INVALID_SIZE when it is too small.
 */
pyr_status pyr_causal_conv1d_bwd_cuda(const pyr_causal_conv1d_bwd_params* p);
/* Bytes of workspace the CUDA backward needs for these params (0 without dweight and dbias). */
size_t pyr_causal_conv1d_bwd_cuda_workspace_bytes(const pyr_causal_conv1d_bwd_params* p);

/*
 * Masked 2-D convolution (PixelCNN), stride 1, zero padding K / 2 ("same" size):
 *   y[b, o, h, w] = bias[o] + sum_i sum_{(ky, kx) kept} W[o, i, ky, kx]
 *                                                      * x[b, i, h + ky - c, w + kx - c],
 * with c = K / 2 and K odd. Mask type A keeps the taps above the centre row and, on the centre
 * row, those left of the centre; type B keeps the centre as well. In raster order the kept taps
 * are the first c * K + c (A) or c * K + c + 1 (B) of the K * K: only those are visited, the
 * masked taps are never read. So y at a pixel depends on x at pixels before it in raster
 * order (A), or before it and at it (B).
 * x, y: (batch, in_channels or out_channels, height, width) with strides; weight:
 * (out_channels, in_channels, K, K) with strides (nn.Conv2d's layout; its masked entries are
 * ignored); bias: (out_channels,) contiguous, or NULL for none. y may not alias x.
 * Returns PYR_ERROR_NULL_POINTER for a missing x, weight or y; PYR_ERROR_INVALID_SIZE for a size
 * below 1, an even kernel_size, or sizes too large to index; PYR_ERROR_INVALID_ARGUMENT for a
 * mask type other than PYR_MASK_A and PYR_MASK_B; PYR_ERROR_INVALID_STRIDE (x, weight, y) and
 * PYR_ERROR_UNSUPPORTED_DTYPE as above (CPU: float32 and float64).
 */
typedef enum pyr_mask_type { PYR_MASK_A = 0, PYR_MASK_B = 1 } pyr_mask_type;

typedef struct pyr_masked_conv2d_params {
  int32_t dtype;     /* pyr_dtype */
  int32_t mask_type; /* pyr_mask_type */
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t height;
  int64_t width;
  int64_t kernel_size; /* K, odd */
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_h, stride_x_w;
  const void* weight;
  int64_t stride_weight_o, stride_weight_i, stride_weight_h, stride_weight_w;
  const void* bias;
  void* y;
  int64_t stride_y_b, stride_y_c, stride_y_h, stride_y_w;
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_masked_conv2d_params;

pyr_status pyr_masked_conv2d_fwd_cpu(const pyr_masked_conv2d_params* p);
/*
 * The same on a CUDA device, for float32, float64, float16 and bfloat16 (the 16-bit types
 * accumulate in float32), on `stream`; pointers are device pointers. Returns after the launch
 * (PYR_ERROR_CUDA when it failed), with the status codes of the CPU version otherwise, and
 * PYR_ERROR_INVALID_SIZE also for height * width, (in_channels + 1) * K * K or
 * out_channels * K * K at or past 2^31, or K past 65535.
 */
pyr_status pyr_masked_conv2d_fwd_cuda(const pyr_masked_conv2d_params* p);

/*
 * Backward of the masked convolution, given dy = dL/dy (batch, out_channels, height, width):
 *   dx[b, i, h, w] = sum_o sum_{(ky, kx) kept} W[o, i, ky, kx] * dy[b, o, h - ky + c, w - kx + c],
 *   dW[o, i, ky, kx] = sum_{b, h, w} dy[b, o, h, w] * x[b, i, h + ky - c, w + kx - c]
 *                      when (ky, kx) is kept, exactly 0 when it is masked,
 *   db[o] = sum_{b, h, w} dy[b, o, h, w].
 * dx: like x, with strides; dweight: (out_channels, in_channels, K, K) contiguous; dbias:
 * (out_channels,) contiguous. Each of dx, dweight and dbias may be NULL, and is then not
 * computed; those given are overwritten, not accumulated into. No output may alias an input.
 * x, weight and dy are always needed. Status codes as for the forward.
 */
typedef struct pyr_masked_conv2d_bwd_params {
  int32_t dtype;
  int32_t mask_type;
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t height;
  int64_t width;
  int64_t kernel_size;
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_h, stride_x_w;
  const void* weight;
  int64_t stride_weight_o, stride_weight_i, stride_weight_h, stride_weight_w;
  const void* dy;
  int64_t stride_dy_b, stride_dy_c, stride_dy_h, stride_dy_w;
  void* dx;
  int64_t stride_dx_b, stride_dx_c, stride_dx_h, stride_dx_w;
  void* dweight;
  void* dbias;
  int32_t num_threads;
  void* stream;
  void* workspace; /* CUDA: pyr_masked_conv2d_bwd_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
} pyr_masked_conv2d_bwd_params;

pyr_status pyr_masked_conv2d_bwd_cpu(const pyr_masked_conv2d_bwd_params* p);
/*
 * The backward on a CUDA device, as pyr_masked_conv2d_fwd_cuda. dweight and dbias are summed
 * in a fixed order through `workspace` (device memory of at least
 * pyr_masked_conv2d_bwd_cuda_workspace_bytes(p) bytes, aligned to 8; it may be NULL when that
 * is 0): PYR_ERROR_NULL_POINTER without it, PYR_ERROR_INVALID_SIZE when it is too small.
 */
pyr_status pyr_masked_conv2d_bwd_cuda(const pyr_masked_conv2d_bwd_params* p);
/* Bytes of workspace the CUDA backward needs for these params (0 without dweight and dbias). */
size_t pyr_masked_conv2d_bwd_cuda_workspace_bytes(const pyr_masked_conv2d_bwd_params* p);

/*
 * The gated residual layer of WaveNet, fused:
 *   z[b, :, t] = conv_bias + sum_k W_conv[:, :, k] x[b, :, t - (K - 1 - k) * d]
 *                + W_local c_local[b, :, t] + W_global c_global[b],       (2G channels)
 *   a = tanh(z[:G]) * sigmoid(z[G:]),                                     (G channels)
 *   skip = W_s a + b_s,  x_next = x + W_r a + b_r,                        (S, R channels)
 * with x = 0 before t = 0. Each tile of time steps of one batch row runs start to end in cache:
 * its taps gathered, one GEMM to z (with c_local's tile as extra rows beside the taps), the
 * gate, one GEMM of [W_s; W_r] to skip and the residual.
 * x: (batch, R, length) with strides; conv_weight: (2G, R, K) contiguous (nn.Conv1d's layout);
 * residual_weight: (R, G), skip_weight: (S, G) contiguous; every bias contiguous or NULL for
 * none. local_cond: (batch, local_channels, length) with strides and local_weight:
 * (2G, local_channels) contiguous, both NULL (and local_channels 0) for none; global_cond:
 * (batch, global_channels) with strides and global_weight: (2G, global_channels) contiguous,
 * likewise. x_next: like x, skip: (batch, S, length), with strides, aliasing no input.
 * gate_input, when not NULL, receives z as a contiguous (batch, 2G, length) array for the
 * backward pass. Returns PYR_ERROR_NULL_POINTER for a missing x, conv_weight, residual_weight,
 * skip_weight, x_next or skip, or conditioning given by halves (a tensor without its weight, or
 * a pointer given with 0 channels or none with channels > 0); PYR_ERROR_INVALID_SIZE for a size
 * below 1 (local_channels and global_channels below 0) or too large to index;
 * PYR_ERROR_INVALID_ARGUMENT for a dilation below 1; PYR_ERROR_INVALID_STRIDE and
 * PYR_ERROR_UNSUPPORTED_DTYPE as above (CPU: float32 and float64).
 */
typedef struct pyr_wavenet_layer_params {
  int32_t dtype; /* pyr_dtype */
  int64_t batch;
  int64_t residual_channels; /* R */
  int64_t gate_channels;     /* G: the convolution has 2G outputs */
  int64_t skip_channels;     /* S */
  int64_t length;            /* T, time steps */
  int64_t kernel_size;       /* K, taps */
  int64_t dilation;          /* d, time steps between taps */
  int64_t local_channels;    /* C_local, 0 for no local conditioning */
  int64_t global_channels;   /* C_global, 0 for no global conditioning */
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const void* conv_weight;
  const void* conv_bias;
  const void* residual_weight;
  const void* residual_bias;
  const void* skip_weight;
  const void* skip_bias;
  const void* local_cond;
  int64_t stride_local_b, stride_local_c, stride_local_t;
  const void* local_weight;
  const void* global_cond;
  int64_t stride_global_b, stride_global_c;
  const void* global_weight;
  void* x_next;
  int64_t stride_x_next_b, stride_x_next_c, stride_x_next_t;
  void* skip;
  int64_t stride_skip_b, stride_skip_c, stride_skip_t;
  void* gate_input;
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_wavenet_layer_params;

pyr_status pyr_wavenet_layer_fwd_cpu(const pyr_wavenet_layer_params* p);
/*
 * The same on a CUDA device, for float32, float64, float16 and bfloat16 (the 16-bit types
 * accumulate in float32, and the gate is computed from z before it is rounded), on `stream`;
 * pointers are device pointers. One launch; a block keeps a (G x 64 time steps) in shared
 * memory, so G is bounded by the device's shared memory per block (about 600 for float32 on
 * an A100, 850 on an H100): PYR_ERROR_INVALID_SIZE past it, and also for R * K or 2G * K at or
 * past 2^31. Other status codes as for the CPU version, and PYR_ERROR_CUDA for a failed launch.
 */
pyr_status pyr_wavenet_layer_fwd_cuda(const pyr_wavenet_layer_params* p);

/*
 * Backward of the layer. Given dx_next = dL/dx_next, dskip = dL/dskip and the z saved by the
 * forward (gate_input):
 *   da = W_s^T dskip + W_r^T dx_next,
 *   dz[:G] = da * sigmoid(z[G:]) * (1 - tanh(z[:G])^2),
 *   dz[G:] = da * tanh(z[:G]) * sigmoid(z[G:]) * (1 - sigmoid(z[G:])),
 *   dW_s = dskip a^T, db_s = sum dskip, dW_r = dx_next a^T, db_r = sum dx_next,
 *   dW_local = dz c_local^T, dc_local = W_local^T dz,
 *   dW_global = (sum_t dz) c_global^T, dc_global = W_global^T sum_t dz,
 *   dx = dx_next + the causal convolution's dx of dz (its taps look forward in time), and
 *   dW_conv, db_conv as the causal convolution's backward gives them for dz,
 * sums over the batch and time. dx and dlocal_cond take strides; every other gradient is
 * contiguous like its parameter (dglobal_cond (batch, global_channels)). Each gradient may be
 * NULL, and is then not computed; the others are overwritten, not accumulated into. The
 * pointers of the forward pass are read as there (x only for dconv_weight). Status codes as for
 * the forward, with PYR_ERROR_NULL_POINTER for a missing gate_input, dx_next or dskip, and
 * PYR_ERROR_INVALID_STRIDE for the layouts of dx_next, dskip, dx and dlocal_cond too.
 */
typedef struct pyr_wavenet_layer_bwd_params {
  int32_t dtype;
  int64_t batch;
  int64_t residual_channels;
  int64_t gate_channels;
  int64_t skip_channels;
  int64_t length;
  int64_t kernel_size;
  int64_t dilation;
  int64_t local_channels;
  int64_t global_channels;
  const void* x;
  int64_t stride_x_b, stride_x_c, stride_x_t;
  const void* conv_weight;
  const void* residual_weight;
  const void* skip_weight;
  const void* local_cond;
  int64_t stride_local_b, stride_local_c, stride_local_t;
  const void* local_weight;
  const void* global_cond;
  int64_t stride_global_b, stride_global_c;
  const void* global_weight;
  const void* gate_input; /* z, contiguous (batch, 2G, length) */
  const void* dx_next;
  int64_t stride_dx_next_b, stride_dx_next_c, stride_dx_next_t;
  const void* dskip;
  int64_t stride_dskip_b, stride_dskip_c, stride_dskip_t;
  void* dx;
  int64_t stride_dx_b, stride_dx_c, stride_dx_t;
  void* dconv_weight;
  void* dconv_bias;
  void* dresidual_weight;
  void* dresidual_bias;
  void* dskip_weight;
  void* dskip_bias;
  void* dlocal_cond;
  int64_t stride_dlocal_b, stride_dlocal_c, stride_dlocal_t;
  void* dlocal_weight;
  void* dglobal_cond;
  void* dglobal_weight;
  int32_t num_threads;
  void* stream;
  void* workspace; /* CUDA: pyr_wavenet_layer_bwd_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
} pyr_wavenet_layer_bwd_params;

pyr_status pyr_wavenet_layer_bwd_cpu(const pyr_wavenet_layer_bwd_params* p);
/*
 * The backward on a CUDA device, as pyr_wavenet_layer_fwd_cuda. Only the launches that feed a
 * gradient asked for run. dz (and a, for dskip_weight and dresidual_weight) are kept in float32
 * (float64 for float64) in `workspace` (device memory of at least
 * pyr_wavenet_layer_bwd_cuda_workspace_bytes(p) bytes, aligned to 8; it may be NULL when that is
 * 0), which also holds the partial sums of the weight gradients, added in a fixed order:
 * PYR_ERROR_NULL_POINTER without it, PYR_ERROR_INVALID_SIZE when it is too small.
 */
pyr_status pyr_wavenet_layer_bwd_cuda(const pyr_wavenet_layer_bwd_params* p);
/* Bytes of workspace the CUDA backward needs for these params and the gradients asked for. */
size_t pyr_wavenet_layer_bwd_cuda_workspace_bytes(const pyr_wavenet_layer_bwd_params* p);

/*
 * Fast WaveNet generation (Fast WaveNet queues): `steps` consecutive time steps of the whole
 * network, each feeding its sample to the next; pyreversible/reference/wavenet_step.py is the
 * definition. Step s generates time t = position + s for every batch row from x_s, the sample
 * at t - 1 (x_0 = x, then the previous step's samples):
 *   h_0 = embedding[x_s] (zeros at t = 0, where x is not read);
 *   per layer l, dilation d_l, ring buffer of n_l = (K - 1) d_l queue rows from o_l = sum of
 *   the earlier layers' n: tap k < K - 1 reads h_l(t - (K - 1 - k) d_l) from queue row
 *   o_l + (t - (K - 1 - k) d_l) mod n_l, tap K - 1 is h_l itself, and after the reads row
 *   o_l + t mod n_l takes h_l;
 *     z = conv_bias_l + sum_k conv_l[k]^T tap_k (+ cond[s, b, l]),
 *     a = tanh(z[:G]) * sigmoid(z[G:]),
 *     skip += skip_l^T a + skip_bias_l,  h_{l+1} = h_l + residual_l^T a + residual_bias_l;
 *   logits = out^T relu(head^T relu(skip) + head_bias) + out_bias,
 *   samples[s, b] = #{c : cdf[c] < uniform[s, b]}, clamped to C - 1, with
 *   cdf = cumsum(softmax(logits / temperature)) in float32 (float64 for float64 weights).
 * weights: num_weights = 1 + 6 L + 4 pointers in the order of pack_weights, each array
 * contiguous, every matrix (in, out): embedding (C, R); per layer conv (K, R, 2G), conv bias
 * (2G,), residual (G, R), residual bias (R,), skip (G, S), skip bias (S,); head (S, S), head bias
 * (S,), out (S, C), out bias (C,). queue: (batch, Q, R) contiguous, Q = queue_rows =
 * (K - 1) sum_l d_l, updated in place (may be NULL when Q = 0). x: (batch,) class indices, each
 * in [0, C) when position > 0 (CPU: checked, PYR_ERROR_INVALID_ARGUMENT otherwise, before anything
 * is written; CUDA: x is in device memory, so the caller checks it, and the kernel reads no row
 * outside the embedding, taking zeros for an index out of range). uniform: (steps, batch)
 * contiguous float32 whatever the dtype. cond: (steps, batch, L, 2G) contiguous, or NULL for none.
 * samples: (steps, batch) int64. logits: (batch, C), the last step's, or NULL. CPU: float32 and
 * float64; CUDA: float32 and float16 (float32 accumulation and sampling), workspace of
 * pyr_wavenet_step_cuda_workspace_bytes() bytes, aligned to 8. Returns PYR_ERROR_NULL_POINTER
 * for a missing pointer, PYR_ERROR_INVALID_SIZE for a size below 1, one too large to index, a
 * weight count or queue_rows that does not fit the sizes, or a workspace too small,
 * PYR_ERROR_INVALID_ARGUMENT for a dilation below 1, a negative position, a temperature that is
 * not finite and > 0, a class index out of range or a misaligned workspace,
 * PYR_ERROR_UNSUPPORTED_DTYPE for another dtype.
 */
typedef struct pyr_wavenet_step_params {
  int32_t dtype; /* pyr_dtype of the weights, queue, cond and logits */
  int64_t batch;
  int64_t classes;           /* C */
  int64_t residual_channels; /* R */
  int64_t gate_channels;     /* G: the convolutions have 2G outputs */
  int64_t skip_channels;     /* S */
  int64_t kernel_size;       /* K, taps */
  int64_t num_layers;        /* L */
  const int64_t* dilations;  /* L entries, each >= 1 */
  int64_t num_weights;       /* 1 + 6 L + 4 */
  const void* const* weights;
  int64_t queue_rows; /* Q */
  void* queue;
  int64_t position; /* t of the first step, >= 0 */
  int64_t steps;    /* >= 1 */
  double temperature;
  const int64_t* x;
  const float* uniform;
  const void* cond;
  int64_t* samples;
  void* logits;
  void* workspace; /* CUDA: pyr_wavenet_step_cuda_workspace_bytes() bytes */
  size_t workspace_bytes;
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_wavenet_step_params;

pyr_status pyr_wavenet_step_cpu(const pyr_wavenet_step_params* p);
pyr_status pyr_wavenet_step_cuda(const pyr_wavenet_step_params* p);
/* Bytes of workspace the CUDA kernel needs for these params. */
size_t pyr_wavenet_step_cuda_workspace_bytes(const pyr_wavenet_step_params* p);

/*
 * The elementwise part of a reversible block (RevNet), y1 = x1 + F(x2), y2 = x2 + G(y1):
 * one or two updates of (batch, dim) arrays in one pass,
 *   out[t] = a[t] + sign[t] * c[t]   for each term t < num_terms.
 * One term is a forward addition (y1 = x1 + F(x2)) or an inverse subtraction; two terms are a
 * half-step of the memory-efficient backward: the inverse subtraction of one half,
 * x2 = y2 - G(y1), with the gradient addition of the other, dy1 + (dG/dy1)^T dy2 (or
 * x1 = y1 - F(x2) with dy2 + (dF/dx2)^T dy1). Every array has its own strides, so a half of a
 * (batch, 2, dim) buffer is passed as it lies. out[t] may be a[t] itself (same pointer and
 * strides: updated in place, which lets one buffer carry a whole sequence of blocks); it may
 * not overlap any other array otherwise.
 * Returns PYR_ERROR_INVALID_SIZE for a negative size or one too large to index (0 rows or
 * features do nothing and read no pointer or stride), PYR_ERROR_NULL_POINTER for a missing
 * array, PYR_ERROR_INVALID_STRIDE for a layout no buffer can have (the rules above; out[t] is an
 * output, in place too), PYR_ERROR_INVALID_ARGUMENT for num_terms other than 1 or 2 or a sign
 * other than +1 or -1 among the num_terms terms, PYR_ERROR_UNSUPPORTED_DTYPE for a dtype other
 * than float32 and float64 (CPU). CUDA: float16 and bfloat16 add in float32 and round once; the
 * same checks otherwise. A term past num_terms is not read.
 */
typedef struct pyr_reversible_block_term {
  const void* a;
  int64_t stride_a_b, stride_a_d;
  const void* c;
  int64_t stride_c_b, stride_c_d;
  void* out;
  int64_t stride_out_b, stride_out_d;
  int32_t sign; /* +1 or -1 */
} pyr_reversible_block_term;

typedef struct pyr_reversible_block_params {
  int32_t dtype; /* pyr_dtype */
  int32_t num_terms;
  int64_t batch;
  int64_t dim;
  pyr_reversible_block_term terms[2];
  int32_t num_threads; /* CPU: threads to use; 0 means the OpenMP runtime's default */
  void* stream;        /* CUDA: a cudaStream_t, NULL for the default stream */
} pyr_reversible_block_params;

pyr_status pyr_reversible_block_cpu(const pyr_reversible_block_params* p);
pyr_status pyr_reversible_block_cuda(const pyr_reversible_block_params* p);

#ifdef __cplusplus
}
#endif

#endif /* PYREVERSIBLE_KERNELS_H */
