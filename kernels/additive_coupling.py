"""Triton kernels of additive coupling (NICE), registered as torch.ops.pyreversible_triton.

The three ops have the schemas and the semantics of their C++ twins in
csrc/torch/additive_coupling.cpp:

- `additive_coupling_fwd`: y_a = x_a, y_b = x_b + sign * shift, one elementwise pass.
- `additive_coupling_mlp_fwd`: the whole layer with an MLP coupling network in one launch;
  each program owns a block of rows and runs it through every layer.
- `additive_coupling_mlp_bwd`: two launches, the row-local backward pass through the layers,
  then every layer's weight and bias gradients as batch reductions.

A partition is the list [kind, parity, dim_a, dim_b, offset_a, offset_b, row_pairs, height] of
pyr_partition (csrc/kernels/include/pyreversible/kernels.h). Matrix products accumulate in
float32 (float64 for float64 inputs); every tensor that an op returns is in the input dtype.
"""

import contextlib

import torch
import triton
import triton.language as tl

_NAMESPACE = "pyreversible_triton"

# The most layers one fused MLP may have: PYR_MAX_LAYERS of the C ABI.
_MAX_LAYERS = 16

_PARTITION_INTERLEAVE = 1

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _partition_position(partition, j, part, INTERLEAVE: tl.constexpr):
    # position within a row of feature j of part a (part 0) or part b (part 1):
    # pyr_partition_position of the C ABI
    if INTERLEAVE:
        row_pairs = partition[6]
        row = j // row_pairs
        k = j - row * row_pairs
        shift = (row % partition[7] + partition[1] + part) & 1
        position = row * 2 * row_pairs + 2 * k + shift
    else:
        position = partition[4] + j + part * (partition[5] - partition[4])
    return position


@triton.jit
def _additive_coupling_fwd_kernel(
    # pointers
    x_ptr,
    shift_ptr,
    y_ptr,
    # sizes: rows, the partition list, +1 forward or -1 inverse
    batch,
    partition,
    sign,
    # strides, in elements
    stride_x_b,
    stride_x_d,
    stride_shift_b,
    stride_shift_d,
    stride_y_b,
    stride_y_d,
    # INTERLEAVE: partition kind; a program covers BLOCK_B rows and BLOCK_D features
    INTERLEAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    features = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_a = partition[2]

    # features dim_a .. D - 1 of the block index part b, the others part a
    in_b = features >= dim_a
    j = tl.where(in_b, features - dim_a, features)
    positions = _partition_position(partition, j, in_b.to(tl.int32), INTERLEAVE)
    rows_64 = rows.to(tl.int64)[:, None]
    mask = (rows < batch)[:, None] & (features < dim_a + partition[3])[None, :]

    x = tl.load(x_ptr + rows_64 * stride_x_b + positions[None, :] * stride_x_d, mask=mask)
    shift = tl.load(
        shift_ptr + rows_64 * stride_shift_b + j[None, :] * stride_shift_d,
        mask=mask & in_b[None, :],
        other=0,
    )
    # a-positions copy x bit for bit (x + 0 would turn -0.0 into +0.0)
    y = tl.where(in_b[None, :], x + shift * sign, x)
    tl.store(y_ptr + rows_64 * stride_y_b + positions[None, :] * stride_y_d, y, mask=mask)


@triton.jit
def _additive_coupling_mlp_fwd_kernel(
    # pointers: x and y, then per layer the weight (out, in), the bias and the activations
    # (batch, out) written for the next layer (hidden outputs or scratch; L - 1 of them)
    x_ptr,
    y_ptr,
    weight_ptrs,
    bias_ptrs,
    hidden_ptrs,
    # sizes: rows, the L + 1 widths (dim_a, hidden widths, dim_b), the partition list, sign
    batch,
    widths,
    partition,
    sign,
    # strides, in elements (weights, biases and activations are contiguous)
    stride_x_b,
    stride_x_d,
    stride_y_b,
    stride_y_d,
    # layers, partition kind, tiles (rows x outputs x inputs), accumulator and dot operand dtypes
    NUM_LAYERS: tl.constexpr,
    INTERLEAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = (rows < batch)[:, None]
    rows_64 = rows.to(tl.int64)[:, None]
    x_rows = x_ptr + rows_64 * stride_x_b
    y_rows = y_ptr + rows_64 * stride_y_b

    for n0 in range(0, partition[2], BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        positions = _partition_position(partition, j, 0, INTERLEAVE)[None, :]
        mask = row_mask & (j < partition[2])[None, :]
        x_a = tl.load(x_rows + positions * stride_x_d, mask=mask)
        tl.store(y_rows + positions * stride_y_d, x_a, mask=mask)

    for layer in tl.static_range(NUM_LAYERS):
        n_in = widths[layer]
        n_out = widths[layer + 1]
        for n0 in range(0, n_out, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_mask = cols < n_out
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, n_in, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_mask = ks < n_in
                if layer == 0:
                    positions = _partition_position(partition, ks, 0, INTERLEAVE)
                    h_ptrs = x_rows + positions[None, :] * stride_x_d
                else:
                    h_ptrs = hidden_ptrs[layer - 1] + rows_64 * n_in + ks[None, :]
                h = tl.load(h_ptrs, mask=row_mask & k_mask[None, :], other=0)
                # (BLOCK_K, BLOCK_N) tile of W^T, read in place from the (out, in) weight
                w_t = tl.load(
                    weight_ptrs[layer] + cols[None, :] * n_in + ks[:, None],
                    mask=k_mask[:, None] & col_mask[None, :],
                    other=0,
                )
                acc = tl.dot(h.to(DOT_DTYPE), w_t.to(DOT_DTYPE), acc, input_precision="ieee")
            bias = tl.load(bias_ptrs[layer] + cols, mask=col_mask, other=0)
            acc += bias.to(ACC_DTYPE)[None, :]
            mask = row_mask & col_mask[None, :]
            if layer < NUM_LAYERS - 1:
                # relu that keeps NaN, as torch.relu does
                h_out = tl.where(acc < 0, 0, acc).to(y_ptr.dtype.element_ty)
                tl.store(hidden_ptrs[layer] + rows_64 * n_out + cols[None, :], h_out, mask=mask)
            else:
                # m is rounded to the input dtype before the add, as the reference does
                shift = acc.to(y_ptr.dtype.element_ty)
                positions = _partition_position(partition, cols, 1, INTERLEAVE)[None, :]
                x_b = tl.load(x_rows + positions * stride_x_d, mask=mask)
                tl.store(y_rows + positions * stride_y_d, x_b + shift * sign, mask=mask)
        if layer < NUM_LAYERS - 1:
            # the next layer reads back activations that other threads of this program wrote
            tl.debug_barrier()


@triton.jit
def _additive_coupling_mlp_bwd_kernel_rows(
    # pointers: dy and dx, then per layer the weight (out, in), the saved activations h_l
    # (L - 1 of them) and g_l = dL/d(pre-activation) of layer l, (batch, out), written here
    dy_ptr,
    dx_ptr,
    weight_ptrs,
    hidden_ptrs,
    grad_ptrs,
    # sizes: rows, the L + 1 widths, the partition list, sign
    batch,
    widths,
    partition,
    sign,
    # strides, in elements
    stride_dy_b,
    stride_dy_d,
    stride_dx_b,
    stride_dx_d,
    # layers, partition kind, tiles (rows x inputs x outputs), accumulator and dot operand dtypes
    NUM_LAYERS: tl.constexpr,
    INTERLEAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = (rows < batch)[:, None]
    rows_64 = rows.to(tl.int64)[:, None]
    dy_rows = dy_ptr + rows_64 * stride_dy_b
    dx_rows = dx_ptr + rows_64 * stride_dx_b
    dim_b = partition[3]

    # dx_b = dy_b, and the last layer's g = sign * dy_b
    for n0 in range(0, dim_b, BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        positions = _partition_position(partition, j, 1, INTERLEAVE)[None, :]
        mask = row_mask & (j < dim_b)[None, :]
        dy_b = tl.load(dy_rows + positions * stride_dy_d, mask=mask)
        tl.store(dx_rows + positions * stride_dx_d, dy_b, mask=mask)
        tl.store(grad_ptrs[NUM_LAYERS - 1] + rows_64 * dim_b + j[None, :], dy_b * sign, mask=mask)
    tl.debug_barrier()

    for step in tl.static_range(NUM_LAYERS):
        layer = NUM_LAYERS - 1 - step
        n_in = widths[layer]
        n_out = widths[layer + 1]
        for n0 in range(0, n_in, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_mask = cols < n_in
            mask = row_mask & col_mask[None, :]
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, n_out, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_mask = ks < n_out
                g = tl.load(
                    grad_ptrs[layer] + rows_64 * n_out + ks[None, :],
                    mask=row_mask & k_mask[None, :],
                    other=0,
                )
                w = tl.load(
                    weight_ptrs[layer] + ks[:, None] * n_in + cols[None, :],
                    mask=k_mask[:, None] & col_mask[None, :],
                    other=0,
                )
                acc = tl.dot(g.to(DOT_DTYPE), w.to(DOT_DTYPE), acc, input_precision="ieee")
            if layer > 0:
                # through the relu of the layer below: zero where its output was not positive
                h = tl.load(hidden_ptrs[layer - 1] + rows_64 * n_in + cols[None, :], mask=mask)
                g_below = tl.where(h > 0, acc, 0).to(dx_ptr.dtype.element_ty)
                tl.store(grad_ptrs[layer - 1] + rows_64 * n_in + cols[None, :], g_below, mask=mask)
            else:
                positions = _partition_position(partition, cols, 0, INTERLEAVE)[None, :]
                dy_a = tl.load(dy_rows + positions * stride_dy_d, mask=mask)
                dx_a = (dy_a.to(ACC_DTYPE) + acc).to(dx_ptr.dtype.element_ty)
                tl.store(dx_rows + positions * stride_dx_d, dx_a, mask=mask)
        if layer > 0:
            # the layer below reads back the g that other threads of this program wrote
            tl.debug_barrier()


@triton.jit
def _additive_coupling_mlp_bwd_kernel_weights(
    # pointers: the conditioning input (x or y), then per layer g_l (batch, out), the saved
    # activations h_l (L - 1 of them), and the outputs dW_l (out, in) and db_l (out,)
    cond_ptr,
    grad_ptrs,
    hidden_ptrs,
    dweight_ptrs,
    dbias_ptrs,
    # sizes: rows, the L + 1 widths, the partition list
    batch,
    widths,
    partition,
    # strides, in elements
    stride_cond_b,
    stride_cond_d,
    # layers, partition kind, tiles (outputs x inputs x rows), accumulator and dot operand dtypes
    NUM_LAYERS: tl.constexpr,
    INTERLEAVE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    pid = tl.program_id(0)

    # the programs are numbered layer after layer, each layer's tiles in row-major order
    first_tile = 0
    for layer in tl.static_range(NUM_LAYERS):
        n_in = widths[layer]
        n_out = widths[layer + 1]
        tiles_n = tl.cdiv(n_in, BLOCK_N)
        num_tiles = tl.cdiv(n_out, BLOCK_M) * tiles_n
        if (pid >= first_tile) & (pid < first_tile + num_tiles):
            tile_m = (pid - first_tile) // tiles_n
            tile_n = (pid - first_tile) % tiles_n
            outs = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
            ins = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
            out_mask = outs < n_out
            in_mask = ins < n_in
            if layer == 0:
                positions = _partition_position(partition, ins, 0, INTERLEAVE)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
            bias_acc = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
            for b0 in range(0, batch, BLOCK_B):
                rows = b0 + tl.arange(0, BLOCK_B)
                rows_64 = rows.to(tl.int64)
                row_mask = rows < batch
                # (BLOCK_M, BLOCK_B) tile of g^T, read in place from the (batch, out) g
                g_t = tl.load(
                    grad_ptrs[layer] + rows_64[None, :] * n_out + outs[:, None],
                    mask=out_mask[:, None] & row_mask[None, :],
                    other=0,
                )
                if layer == 0:
                    h_ptrs = (
                        cond_ptr
                        + rows_64[:, None] * stride_cond_b
                        + positions[None, :] * stride_cond_d
                    )
                else:
                    h_ptrs = hidden_ptrs[layer - 1] + rows_64[:, None] * n_in + ins[None, :]
                h = tl.load(h_ptrs, mask=row_mask[:, None] & in_mask[None, :], other=0)
                acc = tl.dot(g_t.to(DOT_DTYPE), h.to(DOT_DTYPE), acc, input_precision="ieee")
                bias_acc += tl.sum(g_t.to(ACC_DTYPE), axis=1)
            dweight = acc.to(dweight_ptrs[layer].dtype.element_ty)
            tl.store(
                dweight_ptrs[layer] + outs[:, None] * n_in + ins[None, :],
                dweight,
                mask=out_mask[:, None] & in_mask[None, :],
            )
            # the first column of tiles writes the bias gradient
            if tile_n == 0:
                dbias = bias_acc.to(dbias_ptrs[layer].dtype.element_ty)
                tl.store(dbias_ptrs[layer] + outs, dbias, mask=out_mask)
        first_tile += num_tiles


def _block(n, low, high):
    # a power of two covering n, within [low, high]; tl.dot needs tiles of at least 16
    return max(low, min(high, triton.next_power_of_2(max(n, 1))))


def _accumulator(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


def _dot_operand(t):
    # the interpreter multiplies bfloat16 operands of tl.dot as raw bits
    # (triton-lang/triton#11584); products of bfloat16 numbers are exact in float32, so float32
    # operands give the same sums there, while a GPU multiplies bfloat16 directly
    if t.dtype == torch.bfloat16 and t.device.type == "cpu":
        return tl.float32
    return _TL_DTYPES[t.dtype]


def _pointers(tensors, placeholder):
    # a one-layer network has no activations; the kernel never reads the placeholder
    return tuple(tensors) if tensors else (placeholder,)


def _device_guard(t):
    # triton launches on the current device: make it t's
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _additive_coupling_fwd(x, shift, partition, sign):
    """y = x with y_b = x_b + sign * shift at the updated part's positions.

    x: (B, D) and shift: (B, dim_b) with any strides; returns y (B, D), contiguous.
    """
    batch, dim = x.shape
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if batch == 0 or dim == 0:
        return y
    block_d = _block(dim, 16, 1024)
    block_b = _block(batch, 1, max(1, 4096 // block_d))
    grid = (triton.cdiv(batch, block_b), triton.cdiv(dim, block_d))
    with _device_guard(x):
        _additive_coupling_fwd_kernel[grid](
            x,
            shift,
            y,
            batch,
            tuple(partition),
            sign,
            x.stride(0),
            x.stride(1),
            shift.stride(0),
            shift.stride(1),
            y.stride(0),
            y.stride(1),
            INTERLEAVE=partition[0] == _PARTITION_INTERLEAVE,
            BLOCK_B=block_b,
            BLOCK_D=block_d,
        )
    return y


def _additive_coupling_mlp_fwd(x, weights, biases, partition, sign, save_hidden):
    """The fused layer: h_0 = x_a, h_l = relu(h_{l-1} W_l^T + b_l) for l < L,
    m = h_{L-1} W_L^T + b_L, y_a = x_a, y_b = x_b + sign * m.

    x: (B, D) with any strides; weights[l]: (out_l, in_l) and biases[l]: (out_l,), contiguous.
    Returns y (B, D), contiguous, and h_1 .. h_{L-1}, each (B, out_l), when save_hidden (else
    an empty list).
    """
    batch = x.shape[0]
    num_layers = len(weights)
    widths = (partition[2], *(w.shape[0] for w in weights))
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if save_hidden:
        hidden = [x.new_empty(batch, w) for w in widths[1:-1]]
        activations = hidden
    else:
        hidden = []
        # without saving, layer l writes scratch l % 2: it reads the other one
        max_width = max(widths[1:-1], default=0)
        scratch = x.new_empty(min(num_layers - 1, 2), batch * max_width)
        activations = [
            scratch[i % 2, : batch * w].view(batch, w) for i, w in enumerate(widths[1:-1])
        ]
    if batch == 0:
        return y, hidden

    block_b = _block(batch, 16, 32)
    block_n = _block(max(widths[1:]), 16, 64)
    block_k = _block(max(widths[:-1]), 16, 32)
    with _device_guard(x):
        _additive_coupling_mlp_fwd_kernel[(triton.cdiv(batch, block_b),)](
            x,
            y,
            tuple(weights),
            tuple(biases),
            _pointers(activations, x),
            batch,
            widths,
            tuple(partition),
            sign,
            x.stride(0),
            x.stride(1),
            y.stride(0),
            y.stride(1),
            NUM_LAYERS=num_layers,
            INTERLEAVE=partition[0] == _PARTITION_INTERLEAVE,
            BLOCK_B=block_b,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            ACC_DTYPE=_accumulator(x.dtype),
            DOT_DTYPE=_dot_operand(x),
        )
    return y, hidden


def _additive_coupling_mlp_bwd(dy, cond, weights, hidden, partition, sign):
    """Backward of the fused layer: g_L = sign * dy_b, g_{l-1} = (g_l W_l) * [h_{l-1} > 0],
    dW_l = g_l^T h_{l-1}, db_l = sum over rows of g_l, dx = dy with g_0 added at x_a.

    dy, cond: (B, D) with any strides (cond is x or y: their conditioning parts agree);
    hidden: h_1 .. h_{L-1} from the forward. Returns dx (B, D) contiguous, dW_l, db_l.
    """
    batch = dy.shape[0]
    num_layers = len(weights)
    widths = (partition[2], *(w.shape[0] for w in weights))
    dx = torch.empty_like(dy, memory_format=torch.contiguous_format)
    dweights = [torch.empty_like(w) for w in weights]
    dbiases = [dy.new_empty(w.shape[0]) for w in weights]

    # g_l of every layer, in the input dtype like the activations it multiplies
    workspace = dy.new_empty(batch * sum(widths[1:]))
    grads = [
        g.view(batch, w)
        for g, w in zip(workspace.split([batch * w for w in widths[1:]]), widths[1:], strict=True)
    ]
    interleave = partition[0] == _PARTITION_INTERLEAVE
    acc_dtype = _accumulator(dy.dtype)
    dot_dtype = _dot_operand(dy)
    activations = _pointers(hidden, dy)

    with _device_guard(dy):
        if batch > 0:
            block_b = _block(batch, 16, 32)
            block_n = _block(max(widths[:-1]), 16, 64)
            block_k = _block(max(widths[1:]), 16, 32)
            _additive_coupling_mlp_bwd_kernel_rows[(triton.cdiv(batch, block_b),)](
                dy,
                dx,
                tuple(weights),
                activations,
                tuple(grads),
                batch,
                widths,
                tuple(partition),
                sign,
                dy.stride(0),
                dy.stride(1),
                dx.stride(0),
                dx.stride(1),
                NUM_LAYERS=num_layers,
                INTERLEAVE=interleave,
                BLOCK_B=block_b,
                BLOCK_N=block_n,
                BLOCK_K=block_k,
                ACC_DTYPE=acc_dtype,
                DOT_DTYPE=dot_dtype,
            )

        block_m = _block(max(widths[1:]), 16, 64)
        block_n = _block(max(widths[:-1]), 16, 64)
        num_tiles = sum(
            triton.cdiv(widths[i + 1], block_m) * triton.cdiv(widths[i], block_n)
            for i in range(num_layers)
        )
        _additive_coupling_mlp_bwd_kernel_weights[(num_tiles,)](
            cond,
            tuple(grads),
            activations,
            tuple(dweights),
            tuple(dbiases),
            batch,
            widths,
            tuple(partition),
            cond.stride(0),
            cond.stride(1),
            NUM_LAYERS=num_layers,
            INTERLEAVE=interleave,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_B=_block(batch, 16, 32),
            ACC_DTYPE=acc_dtype,
            DOT_DTYPE=dot_dtype,
        )
    return dx, dweights, dbiases


def _check_rows(op, name, t, like):
    if t.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D, got shape {tuple(t.shape)}")
    if t.device != like.device or t.dtype != like.dtype:
        raise TypeError(
            f"{op}: {name} is {t.dtype} on {t.device}, expected {like.dtype} on {like.device}"
        )


def _check_partition(op, partition, dim):
    if len(partition) != 8:
        raise ValueError(f"{op}: partition must have 8 entries, got {len(partition)}")
    if partition[2] + partition[3] != dim:
        raise ValueError(
            f"{op}: the partition's parts have {partition[2]} + {partition[3]} features, the rows "
            f"{dim}"
        )


def _check_layers(op, like, weights, dim_a, dim_b):
    if not 1 <= len(weights) <= _MAX_LAYERS:
        raise ValueError(f"{op}: expected 1 to {_MAX_LAYERS} layers, got {len(weights)}")
    width = dim_a
    for i, w in enumerate(weights):
        _check_rows(op, f"weight {i}", w, like)
        if not w.is_contiguous() or w.shape[1] != width:
            raise ValueError(
                f"{op}: weight {i} must be contiguous with {width} input features, got shape "
                f"{tuple(w.shape)} and strides {w.stride()}"
            )
        width = w.shape[0]
    if width != dim_b:
        raise ValueError(f"{op}: the last weight must have {dim_b} outputs, got {width}")


def _check_dtype(op, x):
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: expected float32, float64, float16 or bfloat16, got {x.dtype}")


@torch.library.custom_op(
    f"{_NAMESPACE}::additive_coupling_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor shift, int[] partition, int sign) -> Tensor",
)
def additive_coupling_fwd(x, shift, partition, sign):
    op = "additive_coupling_fwd"
    _check_rows(op, "x", x, x)
    _check_dtype(op, x)
    _check_rows(op, "shift", shift, x)
    _check_partition(op, partition, x.shape[1])
    if shift.shape != (x.shape[0], partition[3]):
        raise ValueError(
            f"{op}: shift must be ({x.shape[0]}, {partition[3]}), got {tuple(shift.shape)}"
        )
    return _additive_coupling_fwd(x, shift, list(partition), int(sign))


@additive_coupling_fwd.register_fake
def _(x, shift, partition, sign):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op(
    f"{_NAMESPACE}::additive_coupling_mlp_fwd",
    mutates_args=(),
    schema=(
        "(Tensor x, Tensor[] weights, Tensor[] biases, int[] partition, int sign, "
        "bool save_hidden) -> (Tensor, Tensor[])"
    ),
)
def additive_coupling_mlp_fwd(x, weights, biases, partition, sign, save_hidden):
    op = "additive_coupling_mlp_fwd"
    _check_rows(op, "x", x, x)
    _check_dtype(op, x)
    _check_partition(op, partition, x.shape[1])
    _check_layers(op, x, weights, partition[2], partition[3])
    if len(biases) != len(weights):
        raise ValueError(f"{op}: {len(weights)} weights but {len(biases)} biases")
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if b.device != x.device or b.dtype != x.dtype:
            raise TypeError(f"{op}: bias {i} must match x's device and dtype")
        if b.shape != (w.shape[0],) or not b.is_contiguous():
            raise ValueError(
                f"{op}: bias {i} must be contiguous of shape ({w.shape[0]},), got {tuple(b.shape)}"
            )
    return _additive_coupling_mlp_fwd(
        x, list(weights), list(biases), list(partition), int(sign), bool(save_hidden)
    )


@additive_coupling_mlp_fwd.register_fake
def _(x, weights, biases, partition, sign, save_hidden):
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    hidden = [x.new_empty(x.shape[0], w.shape[0]) for w in weights[:-1]] if save_hidden else []
    return y, hidden


@torch.library.custom_op(
    f"{_NAMESPACE}::additive_coupling_mlp_bwd",
    mutates_args=(),
    schema=(
        "(Tensor dy, Tensor cond, Tensor[] weights, Tensor[] hidden, int[] partition, "
        "int sign) -> (Tensor, Tensor[], Tensor[])"
    ),
)
def additive_coupling_mlp_bwd(dy, cond, weights, hidden, partition, sign):
    op = "additive_coupling_mlp_bwd"
    _check_rows(op, "dy", dy, dy)
    _check_dtype(op, dy)
    _check_rows(op, "cond", cond, dy)
    if cond.shape != dy.shape:
        raise ValueError(
            f"{op}: cond must match dy's shape {tuple(dy.shape)}, got {tuple(cond.shape)}"
        )
    _check_partition(op, partition, dy.shape[1])
    _check_layers(op, dy, weights, partition[2], partition[3])
    if len(hidden) != len(weights) - 1:
        raise ValueError(f"{op}: expected {len(weights) - 1} hidden activations, got {len(hidden)}")
    for i, (h, w) in enumerate(zip(hidden, weights[:-1], strict=True)):
        _check_rows(op, f"hidden {i}", h, dy)
        if h.shape != (dy.shape[0], w.shape[0]) or not h.is_contiguous():
            raise ValueError(
                f"{op}: hidden {i} must be contiguous ({dy.shape[0]}, {w.shape[0]}), got "
                f"{tuple(h.shape)}"
            )
    return _additive_coupling_mlp_bwd(
        dy, cond, list(weights), list(hidden), list(partition), int(sign)
    )


@additive_coupling_mlp_bwd.register_fake
def _(dy, cond, weights, hidden, partition, sign):
    dx = torch.empty_like(dy, memory_format=torch.contiguous_format)
    return dx, [torch.empty_like(w) for w in weights], [w.new_empty(w.shape[0]) for w in weights]
