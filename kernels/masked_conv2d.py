"""Triton kernels of the masked 2-D convolution (PixelCNN), registered as
torch.ops.pyreversible_triton.

The two ops have the schemas and the semantics of their C++ twins in
csrc/torch/masked_conv2d.cpp:

- `masked_conv2d_fwd`: y[b, o, h, w] = bias[o] + sum_i sum_{(ky, kx) kept} W[o, i, ky, kx]
  x[b, i, h + ky - c, w + kx - c], c = K // 2, x = 0 outside the image. Each program owns a tile
  of output channels and pixels (raster order) of one batch row; for every kept tap it reads the
  tile of x shifted by the tap (masked outside the image, never a padded copy) and multiplies it
  by the tap's weight slice.
- `masked_conv2d_bwd`: dx, the transposed convolution over the same kept taps; dW, a reduction
  over batch rows and pixels of dy times the shifted x, exactly zero at the masked taps; db, the
  sums of dy.

The kept taps of either mask are the first c K + c (type A) or c K + c + 1 (type B) of the K x K
in raster order, so the kernels loop over that many taps and never visit a masked one. Products
go through tl.dot on tiles padded to 16 with masks; taps that reach outside the image multiply
the padding's zeros, so that a non-finite weight makes NaN exactly where the reference's zero
padding does. Sums accumulate in float32 (float64 for float64 inputs); every tensor that an op
returns is in the input dtype.
"""

import torch
import triton
import triton.language as tl

from .additive_coupling import _accumulator, _block, _device_guard, _dot_operand
from .causal_conv1d import _splits, _widest

_NAMESPACE = "pyreversible_triton"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _masked_conv2d_fwd_kernel(
    # pointers: the bias is read only when HAS_BIAS
    x_ptr,
    weight_ptr,
    bias_ptr,
    y_ptr,
    # sizes: channels, image, kernel size, and how many taps of the K x K the mask keeps
    in_channels,
    out_channels,
    height,
    width,
    kernel_size,
    kept_taps,
    # strides, in elements (the weight is contiguous (O, I, K, K))
    stride_x_b,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    stride_y_b,
    stride_y_c,
    stride_y_h,
    stride_y_w,
    # a program covers BLOCK_O output channels x BLOCK_P pixels, BLOCK_I inputs at a time
    HAS_BIAS: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0).to(tl.int64)
    outs = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    pixels = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    out_mask = outs < out_channels
    pixel_mask = pixels < height * width
    rows = pixels // width
    cols = pixels % width
    centre = kernel_size // 2
    taps = kernel_size * kernel_size
    x_row = x_ptr + batch_row * stride_x_b
    weight_rows = weight_ptr + outs.to(tl.int64)[:, None] * (in_channels * taps)

    acc = tl.zeros((BLOCK_O, BLOCK_P), dtype=ACC_DTYPE)
    for tap in range(kept_taps):
        # outside the image the tap reads the padding's zeros
        src_rows = rows + tap // kernel_size - centre
        src_cols = cols + tap % kernel_size - centre
        src_mask = (
            pixel_mask
            & (src_rows >= 0)
            & (src_rows < height)
            & (src_cols >= 0)
            & (src_cols < width)
        )
        src_offsets = src_rows.to(tl.int64) * stride_x_h + src_cols.to(tl.int64) * stride_x_w
        for i0 in range(0, in_channels, BLOCK_I):
            ins = i0 + tl.arange(0, BLOCK_I)
            in_mask = ins < in_channels
            w = tl.load(
                weight_rows + ins[None, :] * taps + tap,
                mask=out_mask[:, None] & in_mask[None, :],
                other=0,
            )
            x = tl.load(
                x_row + ins.to(tl.int64)[:, None] * stride_x_c + src_offsets[None, :],
                mask=in_mask[:, None] & src_mask[None, :],
                other=0,
            )
            acc = tl.dot(w.to(DOT_DTYPE), x.to(DOT_DTYPE), acc, input_precision="ieee")

    if HAS_BIAS:
        bias = tl.load(bias_ptr + outs, mask=out_mask, other=0)
        acc += bias.to(ACC_DTYPE)[:, None]
    y_ptrs = (
        y_ptr
        + batch_row * stride_y_b
        + outs.to(tl.int64)[:, None] * stride_y_c
        + (rows.to(tl.int64) * stride_y_h + cols.to(tl.int64) * stride_y_w)[None, :]
    )
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_mask[:, None] & pixel_mask[None, :])


@triton.jit
def _masked_conv2d_bwd_kernel_input(
    # pointers
    dy_ptr,
    weight_ptr,
    dx_ptr,
    # sizes: channels, image, kernel size, and how many taps of the K x K the mask keeps
    in_channels,
    out_channels,
    height,
    width,
    kernel_size,
    kept_taps,
    # strides, in elements (the weight is contiguous (O, I, K, K))
    stride_dy_b,
    stride_dy_c,
    stride_dy_h,
    stride_dy_w,
    stride_dx_b,
    stride_dx_c,
    stride_dx_h,
    stride_dx_w,
    # a program covers BLOCK_I input channels x BLOCK_P pixels, BLOCK_O outputs at a time
    BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0).to(tl.int64)
    ins = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    pixels = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_mask = ins < in_channels
    pixel_mask = pixels < height * width
    rows = pixels // width
    cols = pixels % width
    centre = kernel_size // 2
    taps = kernel_size * kernel_size
    dy_row = dy_ptr + batch_row * stride_dy_b

    acc = tl.zeros((BLOCK_I, BLOCK_P), dtype=ACC_DTYPE)
    for tap in range(kept_taps):
        # x at p fed y at p - (ky - c, kx - c) through the tap; outside the image dy is zero
        dst_rows = rows - tap // kernel_size + centre
        dst_cols = cols - tap % kernel_size + centre
        dst_mask = (
            pixel_mask
            & (dst_rows >= 0)
            & (dst_rows < height)
            & (dst_cols >= 0)
            & (dst_cols < width)
        )
        dst_offsets = dst_rows.to(tl.int64) * stride_dy_h + dst_cols.to(tl.int64) * stride_dy_w
        for o0 in range(0, out_channels, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            out_mask = outs < out_channels
            # (BLOCK_I, BLOCK_O) tile of W[:, :, ky, kx]^T, read in place
            w_t = tl.load(
                weight_ptr
                + outs.to(tl.int64)[None, :] * (in_channels * taps)
                + ins[:, None] * taps
                + tap,
                mask=in_mask[:, None] & out_mask[None, :],
                other=0,
            )
            dy = tl.load(
                dy_row + outs.to(tl.int64)[:, None] * stride_dy_c + dst_offsets[None, :],
                mask=out_mask[:, None] & dst_mask[None, :],
                other=0,
            )
            acc = tl.dot(w_t.to(DOT_DTYPE), dy.to(DOT_DTYPE), acc, input_precision="ieee")

    dx_ptrs = (
        dx_ptr
        + batch_row * stride_dx_b
        + ins.to(tl.int64)[:, None] * stride_dx_c
        + (rows.to(tl.int64) * stride_dx_h + cols.to(tl.int64) * stride_dx_w)[None, :]
    )
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=in_mask[:, None] & pixel_mask[None, :])


@triton.jit
def _masked_conv2d_bwd_kernel_weight(
    # pointers: the output holds one (O, I, K, K) slice per split, contiguous, zero at the
    # masked taps, which no program visits
    dy_ptr,
    x_ptr,
    dweight_ptr,
    # sizes: channels, image, kernel size, kept taps, then the (batch row, pixel block) chunks
    # of the reduction and how many each split sums
    in_channels,
    out_channels,
    height,
    width,
    kernel_size,
    kept_taps,
    num_chunks,
    chunks_per_split,
    # strides, in elements
    stride_dy_b,
    stride_dy_c,
    stride_dy_h,
    stride_dy_w,
    stride_x_b,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    # a program covers BLOCK_O outputs x BLOCK_I inputs of one kept tap, BLOCK_P pixels at a time
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    split = tl.program_id(0)
    outs = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    taps = kernel_size * kernel_size
    ins = (tl.program_id(2) // kept_taps) * BLOCK_I + tl.arange(0, BLOCK_I)
    tap = tl.program_id(2) % kept_taps
    out_mask = outs < out_channels
    in_mask = ins < in_channels
    shift_rows = tap // kernel_size - kernel_size // 2
    shift_cols = tap % kernel_size - kernel_size // 2
    dy_rows = dy_ptr + outs.to(tl.int64)[:, None] * stride_dy_c
    x_rows = x_ptr + ins.to(tl.int64)[None, :] * stride_x_c
    pixel_blocks = tl.cdiv(height * width, BLOCK_P)

    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)
    first = split * chunks_per_split
    for chunk in range(first, tl.minimum(first + chunks_per_split, num_chunks)):
        batch_row = (chunk // pixel_blocks).to(tl.int64)
        pixels = (chunk % pixel_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
        pixel_mask = pixels < height * width
        rows = pixels // width
        cols = pixels % width
        dy = tl.load(
            dy_rows
            + batch_row * stride_dy_b
            + (rows.to(tl.int64) * stride_dy_h + cols.to(tl.int64) * stride_dy_w)[None, :],
            mask=out_mask[:, None] & pixel_mask[None, :],
            other=0,
        )
        # (BLOCK_P, BLOCK_I) tile of the shifted x^T; the padding's zeros outside the image
        src_rows = rows + shift_rows
        src_cols = cols + shift_cols
        src_mask = (
            pixel_mask
            & (src_rows >= 0)
            & (src_rows < height)
            & (src_cols >= 0)
            & (src_cols < width)
        )
        x_t = tl.load(
            x_rows
            + batch_row * stride_x_b
            + (src_rows.to(tl.int64) * stride_x_h + src_cols.to(tl.int64) * stride_x_w)[:, None],
            mask=src_mask[:, None] & in_mask[None, :],
            other=0,
        )
        acc = tl.dot(dy.to(DOT_DTYPE), x_t.to(DOT_DTYPE), acc, input_precision="ieee")

    dweight_ptrs = (
        dweight_ptr
        + split.to(tl.int64) * (out_channels * in_channels * taps)
        + outs.to(tl.int64)[:, None] * (in_channels * taps)
        + ins[None, :] * taps
        + tap
    )
    tl.store(
        dweight_ptrs,
        acc.to(dweight_ptr.dtype.element_ty),
        mask=out_mask[:, None] & in_mask[None, :],
    )


@triton.jit
def _masked_conv2d_bwd_kernel_bias(
    # pointers: the output holds one (O,) slice per split, contiguous
    dy_ptr,
    dbias_ptr,
    # sizes: channels, image, the (batch row, pixel block) chunks and how many each split sums
    channels,
    height,
    width,
    num_chunks,
    chunks_per_split,
    # strides, in elements
    stride_dy_b,
    stride_dy_c,
    stride_dy_h,
    stride_dy_w,
    # a program covers BLOCK_C channels, BLOCK_P pixels at a time
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    split = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_mask = chans < channels
    dy_rows = dy_ptr + chans.to(tl.int64)[:, None] * stride_dy_c
    pixel_blocks = tl.cdiv(height * width, BLOCK_P)

    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC_DTYPE)
    first = split * chunks_per_split
    for chunk in range(first, tl.minimum(first + chunks_per_split, num_chunks)):
        batch_row = (chunk // pixel_blocks).to(tl.int64)
        pixels = (chunk % pixel_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
        rows = pixels // width
        cols = pixels % width
        dy = tl.load(
            dy_rows
            + batch_row * stride_dy_b
            + (rows.to(tl.int64) * stride_dy_h + cols.to(tl.int64) * stride_dy_w)[None, :],
            mask=chan_mask[:, None] & (pixels < height * width)[None, :],
            other=0,
        )
        acc += dy.to(ACC_DTYPE)

    dbias = tl.sum(acc, axis=1).to(dbias_ptr.dtype.element_ty)
    tl.store(dbias_ptr + split.to(tl.int64) * channels + chans, dbias, mask=chan_mask)


def _widest_pixels(t):
    # pixels per tile: 64 on a GPU; under the interpreter, where each operation costs the same
    # whatever its size, a whole small image at once
    return 64 if t.is_cuda else 1024


def _kept_taps(kernel_size, mask_type):
    # the kept taps are a prefix of the K x K in raster order: the c rows above the centre,
    # then c taps left of it (A), or those and the centre (B)
    centre = kernel_size // 2
    return centre * kernel_size + centre + (mask_type == "B")


def _masked_conv2d_fwd(x, weight, bias, mask_type):
    """y[b, o, h, w] = bias[o] + sum_i sum_{kept (ky, kx)} W[o, i, ky, kx] x[b, i, h + ky - c,
    w + kx - c], x = 0 outside the image.

    x: (B, I, H, W) with any strides; weight: (O, I, K, K), contiguous; bias: (O,), contiguous,
    or None. Returns y (B, O, H, W), contiguous.
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_size, _ = weight.shape
    y = x.new_empty(batch, out_channels, height, width)
    pixels = height * width
    block_o = _block(out_channels, 16, _widest(x))
    block_i = _block(in_channels, 16, 32)
    block_p = _block(pixels, 16, _widest_pixels(x))
    grid = (batch, triton.cdiv(out_channels, block_o), triton.cdiv(pixels, block_p))
    with _device_guard(x):
        _masked_conv2d_fwd_kernel[grid](
            x,
            weight,
            y if bias is None else bias,
            y,
            in_channels,
            out_channels,
            height,
            width,
            kernel_size,
            _kept_taps(kernel_size, mask_type),
            *x.stride(),
            *y.stride(),
            HAS_BIAS=bias is not None,
            BLOCK_O=block_o,
            BLOCK_I=block_i,
            BLOCK_P=block_p,
            ACC_DTYPE=_accumulator(x.dtype),
            DOT_DTYPE=_dot_operand(x),
        )
    return y


def _masked_conv2d_bwd(dy, x, weight, mask_type, need_dx):
    """The gradients of y = masked_conv2d(x, W, b):

    dx[b, i, h, w] = sum_o sum_{kept (ky, kx)} W[o, i, ky, kx] dy[b, o, h - ky + c, w - kx + c];
    dW[o, i, ky, kx] = sum_b sum_{h, w} dy[b, o, h, w] x[b, i, h + ky - c, w + kx - c] at the
    kept taps, 0 at the masked ones; db[o] = sum_b sum_{h, w} dy[b, o, h, w].

    dy: (B, O, H, W) and x: (B, I, H, W) with any strides; weight contiguous. Returns dx (an
    empty (0,) tensor unless need_dx), dW and db, contiguous, in the input dtype. The weight and
    bias sums of each output tile are split over several programs on a GPU and their partial
    sums added after.
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_size, _ = weight.shape
    kept_taps = _kept_taps(kernel_size, mask_type)
    pixels = height * width
    acc_dtype = _accumulator(dy.dtype)
    dot_dtype = _dot_operand(dy)
    sum_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    block_p = _block(pixels, 16, _widest_pixels(dy))
    num_chunks = batch * triton.cdiv(pixels, block_p)
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    # the masked taps' gradient is exactly zero: no program visits them
    dweight = weight.new_zeros(weight.shape)
    dbias = weight.new_empty(out_channels)
    with _device_guard(dy):
        if need_dx:
            block_i = _block(in_channels, 16, _widest(dy))
            block_o = _block(out_channels, 16, 32)
            grid = (batch, triton.cdiv(in_channels, block_i), triton.cdiv(pixels, block_p))
            _masked_conv2d_bwd_kernel_input[grid](
                dy,
                weight,
                dx,
                in_channels,
                out_channels,
                height,
                width,
                kernel_size,
                kept_taps,
                *dy.stride(),
                *dx.stride(),
                BLOCK_I=block_i,
                BLOCK_O=block_o,
                BLOCK_P=block_p,
                ACC_DTYPE=acc_dtype,
                DOT_DTYPE=dot_dtype,
            )

        block_o = _block(out_channels, 16, _widest(dy))
        block_i = _block(in_channels, 16, _widest(dy))
        grid = (
            1,
            triton.cdiv(out_channels, block_o),
            triton.cdiv(in_channels, block_i) * kept_taps,
        )
        splits = _splits(dy, grid[1] * grid[2], num_chunks)
        partial = dweight if splits == 1 else dy.new_zeros(splits, *weight.shape, dtype=sum_dtype)
        # type A with K = 1 keeps no tap at all: no program to launch
        if kept_taps > 0:
            _masked_conv2d_bwd_kernel_weight[(splits, *grid[1:])](
                dy,
                x,
                partial,
                in_channels,
                out_channels,
                height,
                width,
                kernel_size,
                kept_taps,
                num_chunks,
                triton.cdiv(num_chunks, splits),
                *dy.stride(),
                *x.stride(),
                BLOCK_O=block_o,
                BLOCK_I=block_i,
                BLOCK_P=block_p,
                ACC_DTYPE=acc_dtype,
                DOT_DTYPE=dot_dtype,
            )
        if splits > 1 and kept_taps > 0:
            dweight.copy_(partial.sum(dim=0))

        block_c = _block(out_channels, 16, 64)
        tiles = triton.cdiv(out_channels, block_c)
        splits = _splits(dy, tiles, num_chunks)
        partial = dbias if splits == 1 else dy.new_empty(splits, out_channels, dtype=sum_dtype)
        _masked_conv2d_bwd_kernel_bias[(splits, tiles)](
            dy,
            partial,
            out_channels,
            height,
            width,
            num_chunks,
            triton.cdiv(num_chunks, splits),
            *dy.stride(),
            BLOCK_C=block_c,
            BLOCK_P=block_p,
            ACC_DTYPE=acc_dtype,
        )
        if splits > 1:
            dbias.copy_(partial.sum(dim=0))
    return dx, dweight, dbias


def _check_operands(op, x, weight, mask_type):
    # the checks of set_operands in csrc/torch/masked_conv2d.cpp, with its messages
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (B, C, H, W), got {x.dim()}-D")
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be (O, I, K, K), got {weight.dim()}-D")
    if weight.device != x.device:
        raise ValueError(f"{op}: weight is on {weight.device}, x on {x.device}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight has dtype {weight.dtype}, x {x.dtype}")
    k = weight.shape[2]
    if weight.shape[3] != k or k % 2 != 1:
        raise ValueError(
            f"{op}: weight must have a square kernel of odd size, got {list(weight.shape)}"
        )
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight has {weight.shape[1]} input channels, x {x.shape[1]}")
    if x.numel() == 0 or weight.numel() == 0:
        raise ValueError(
            f"{op}: x {list(x.shape)} and weight {list(weight.shape)} must not be empty"
        )
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: expected float32, float64, float16 or bfloat16, got {x.dtype}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"{op}: mask_type must be 'A' or 'B', got '{mask_type}'")


@torch.library.custom_op(
    f"{_NAMESPACE}::masked_conv2d_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, str mask_type) -> Tensor",
)
def masked_conv2d_fwd(x, weight, bias, mask_type):
    op = "masked_conv2d_fwd"
    _check_operands(op, x, weight, mask_type)
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{op}: bias must be ({weight.shape[0]},), got {list(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"{op}: bias is on {bias.device}, x on {x.device}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: bias has dtype {bias.dtype}, x {x.dtype}")
        bias = bias.contiguous()
    return _masked_conv2d_fwd(x, weight.contiguous(), bias, mask_type)


@masked_conv2d_fwd.register_fake
def _(x, weight, bias, mask_type):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])


@torch.library.custom_op(
    f"{_NAMESPACE}::masked_conv2d_bwd",
    mutates_args=(),
    schema=(
        "(Tensor dy, Tensor x, Tensor weight, str mask_type, bool need_dx) -> "
        "(Tensor, Tensor, Tensor)"
    ),
)
def masked_conv2d_bwd(dy, x, weight, mask_type, need_dx):
    op = "masked_conv2d_bwd"
    _check_operands(op, x, weight, mask_type)
    expected = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
    if dy.dim() != 4 or tuple(dy.shape) != expected:
        shape = ", ".join(str(n) for n in expected)
        raise ValueError(f"{op}: dy must be ({shape}), got {list(dy.shape)}")
    if dy.device != x.device:
        raise ValueError(f"{op}: dy is on {dy.device}, x on {x.device}")
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dy has dtype {dy.dtype}, x {x.dtype}")
    return _masked_conv2d_bwd(dy, x, weight.contiguous(), mask_type, bool(need_dx))


@masked_conv2d_bwd.register_fake
def _(dy, x, weight, mask_type, need_dx):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    return dx, weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])
