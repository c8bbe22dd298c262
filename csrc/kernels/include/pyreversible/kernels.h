/*
 * pyreversible kernels: the C ABI.
 *
 * Plain C functions over parameter structs. Pointers are raw device or host pointers, sizes and
 * strides are in elements (not bytes). Every function returns a pyr_status; no C++ exception
 * crosses this header. Nothing here includes torch.
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

/* A short English message for a status code. */
const char* pyr_status_string(pyr_status status);

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
 * x, y: (batch, D) with strides; shift: (batch, dim_b) with strides. y may not alias x or shift.
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
 * CUDA: accumulates in float32 for float16 and bfloat16.
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
/* Bytes of workspace the CUDA forward needs for these params (0 when hidden[] is given). */
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
/* Bytes of workspace the CUDA backward needs for these params. */
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
 * below 1 or one too large to index, PYR_ERROR_INVALID_ARGUMENT for a dilation below 1 or groups
 * that do not divide both channel counts, PYR_ERROR_INVALID_STRIDE for a negative stride and
 * PYR_ERROR_UNSUPPORTED_DTYPE for a dtype other than float32 and float64 (CPU).
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
 * Backward of the causal convolution. Given dy = dL/dy (batch, out_channels, length):
 *   dx[b, i, t] = sum_{o in i's group} sum_k W[o, i, k] * dy[b, o, t + (K - 1 - k) * d]
 *                 (dy = 0 from t = length on),
 *   dW[o, i, k] = sum_b sum_t dy[b, o, t] * x[b, i, t - (K - 1 - k) * d],
 *   db[o]       = sum_b sum_t dy[b, o, t].
 * dx: like x, with strides; dweight, dbias: contiguous like weight and bias. Each of dx,
 * dweight and dbias may be NULL, and is then not computed; the others are overwritten, not
 * accumulated into. x is needed (non-NULL) only when dweight is asked for. Status codes as for
 * the forward.
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
} pyr_causal_conv1d_bwd_params;

pyr_status pyr_causal_conv1d_bwd_cpu(const pyr_causal_conv1d_bwd_params* p);

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
 * Backward of the masked convolution, given dy = dL/dy (batch, out_channels, height, width):
 *   dx[b, i, h, w]   = sum_o sum_{(ky, kx) kept} W[o, i, ky, kx] * dy[b, o, h - ky + c, w - kx +
 * c], dW[o, i, ky, kx] = sum_{b, h, w} dy[b, o, h, w] * x[b, i, h + ky - c, w + kx - c] when (ky,
 * kx) is kept, exactly 0 when it is masked, db[o]            = sum_{b, h, w} dy[b, o, h, w]. dx:
 * like x, with strides; dweight: (out_channels, in_channels, K, K) contiguous; dbias:
 * (out_channels,) contiguous. Each of dx, dweight and dbias may be NULL, and is then not
 * computed; those given are overwritten, not accumulated into. No output may alias an input.
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
} pyr_masked_conv2d_bwd_params;

pyr_status pyr_masked_conv2d_bwd_cpu(const pyr_masked_conv2d_bwd_params* p);

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
 * backward pass. Status codes as for the causal convolution.
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
 * pointers of the forward pass are read as there (x only for dconv_weight).
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
} pyr_wavenet_layer_bwd_params;

pyr_status pyr_wavenet_layer_bwd_cpu(const pyr_wavenet_layer_bwd_params* p);

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
 * features do nothing and read no pointer), PYR_ERROR_NULL_POINTER for a missing array,
 * PYR_ERROR_INVALID_STRIDE for a negative stride, PYR_ERROR_INVALID_ARGUMENT for num_terms
 * other than 1 or 2 or a sign other than +1 or -1, PYR_ERROR_UNSUPPORTED_DTYPE for a dtype
 * other than float32 and float64 (CPU). CUDA: float16 and bfloat16 add in float32 and round once.
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
