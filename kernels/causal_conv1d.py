"""Triton kernels of the causal dilated convolution, registered as torch.ops.pyreversible_triton.

The two ops have the schemas and the semantics of their C++ twins in
csrc/torch/causal_conv1d.cpp:

- `causal_conv1d_fwd`: y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] x[b, i, t - (K - 1 - k) d],
  with x = 0 before t = 0. Each program owns a tile of output channels and time steps of one
  batch row and group; for every tap it reads the tile of x shifted back by the tap's reach
  (masked before t = 0, never a padded copy) and multiplies it by the tap's weight slice.
- `causal_conv1d_bwd`: the gradients that output_mask asks for, one launch each: dx, the
  transposed convolution whose taps look forward in time (dy = 0 from t = T on); dW, a reduction
  over batch rows and time of dy times the shifted x; db, the sums of dy.

Products go through tl.dot on tiles padded to 16 with masks, except in depthwise convolutions
(one input and one output channel per group), whose programs cover blocks of channels and take
elementwise products. Either way every tap multiplies the padding's zeros too, so that a
non-finite weight makes NaN exactly where the reference does. Sums accumulate in float32
(float64 for float64 inputs); every tensor that an op returns is in the input dtype.
"""

import torch
import triton
import triton.language as tl

from .additive_coupling import _accumulator, _block, _device_guard, _dot_operand

_NAMESPACE = "pyreversible_triton"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _causal_conv1d_fwd_kernel(
    # pointers: the bias is read only when HAS_BIAS
    x_ptr,
    weight_ptr,
    bias_ptr,
    y_ptr,
    # sizes: groups, channels per group, time steps, kernel size, dilation
    groups,
    in_per_group,
    out_per_group,
    length,
    taps,
    dilation,
    # strides, in elements (the weight is contiguous (C_out, C_in / groups, K))
    stride_x_b,
    stride_x_c,
    stride_x_t,
    stride_y_b,
    stride_y_c,
    stride_y_t,
    # a program covers BLOCK_O output channels x BLOCK_T time steps, BLOCK_I inputs at a time
    HAS_BIAS: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0) // groups
    group = tl.program_id(0) % groups
    outs = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    times = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    out_mask = outs < out_per_group
    time_mask = times < length
    channels_out = group * out_per_group + outs
    x_group = (
        x_ptr
        + batch_row.to(tl.int64) * stride_x_b
        + (group * in_per_group).to(tl.int64) * stride_x_c
    )
    weight_rows = weight_ptr + channels_out.to(tl.int64)[:, None] * (in_per_group * taps)

    acc = tl.zeros((BLOCK_O, BLOCK_T), dtype=ACC_DTYPE)
    for k in range(taps):
        # tap k reads x (K - 1 - k) * d steps back; before t = 0 it reads the padding's zeros
        sources = times - (taps - 1 - k) * dilation
        source_mask = time_mask & (sources >= 0)
        for i0 in range(0, in_per_group, BLOCK_I):
            ins = i0 + tl.arange(0, BLOCK_I)
            in_mask = ins < in_per_group
            w = tl.load(
                weight_rows + ins[None, :] * taps + k,
                mask=out_mask[:, None] & in_mask[None, :],
                other=0,
            )
            x = tl.load(
                x_group
                + ins.to(tl.int64)[:, None] * stride_x_c
                + sources.to(tl.int64)[None, :] * stride_x_t,
                mask=in_mask[:, None] & source_mask[None, :],
                other=0,
            )
            acc = tl.dot(w.to(DOT_DTYPE), x.to(DOT_DTYPE), acc, input_precision="ieee")

    if HAS_BIAS:
        bias = tl.load(bias_ptr + channels_out, mask=out_mask, other=0)
        acc += bias.to(ACC_DTYPE)[:, None]
    y_ptrs = (
        y_ptr
        + batch_row.to(tl.int64) * stride_y_b
        + channels_out.to(tl.int64)[:, None] * stride_y_c
        + times.to(tl.int64)[None, :] * stride_y_t
    )
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_mask[:, None] & time_mask[None, :])


@triton.jit
def _causal_conv1d_bwd_kernel_input(
    # pointers
    dy_ptr,
    weight_ptr,
    dx_ptr,
    # sizes: groups, channels per group, time steps, kernel size, dilation
    groups,
    in_per_group,
    out_per_group,
    length,
    taps,
    dilation,
    # strides, in elements (the weight is contiguous (C_out, C_in / groups, K))
    stride_dy_b,
    stride_dy_c,
    stride_dy_t,
    stride_dx_b,
    stride_dx_c,
    stride_dx_t,
    # a program covers BLOCK_I input channels x BLOCK_T time steps, BLOCK_O outputs at a time
    BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0) // groups
    group = tl.program_id(0) % groups
    ins = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    times = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    in_mask = ins < in_per_group
    time_mask = times < length
    dy_group = (
        dy_ptr
        + batch_row.to(tl.int64) * stride_dy_b
        + (group * out_per_group).to(tl.int64) * stride_dy_c
    )
    weight_group = weight_ptr + (group * out_per_group).to(tl.int64) * (in_per_group * taps)

    acc = tl.zeros((BLOCK_I, BLOCK_T), dtype=ACC_DTYPE)
    for k in range(taps):
        # x[t] fed y[t + (K - 1 - k) d] through tap k; from t = T on, dy is the zero padding
        targets = times + (taps - 1 - k) * dilation
        target_mask = targets < length
        for o0 in range(0, out_per_group, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            out_mask = outs < out_per_group
            # (BLOCK_I, BLOCK_O) tile of W[:, :, k]^T, read in place
            w_t = tl.load(
                weight_group + outs[None, :] * (in_per_group * taps) + ins[:, None] * taps + k,
                mask=in_mask[:, None] & out_mask[None, :],
                other=0,
            )
            dy = tl.load(
                dy_group
                + outs.to(tl.int64)[:, None] * stride_dy_c
                + targets.to(tl.int64)[None, :] * stride_dy_t,
                mask=out_mask[:, None] & target_mask[None, :],
                other=0,
            )
            acc = tl.dot(w_t.to(DOT_DTYPE), dy.to(DOT_DTYPE), acc, input_precision="ieee")

    dx_ptrs = (
        dx_ptr
        + batch_row.to(tl.int64) * stride_dx_b
        + (group * in_per_group + ins).to(tl.int64)[:, None] * stride_dx_c
        + times.to(tl.int64)[None, :] * stride_dx_t
    )
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=in_mask[:, None] & time_mask[None, :])


@triton.jit
def _causal_conv1d_bwd_kernel_weight(
    # pointers: the output holds one (C_out, C_in / groups, K) slice per split, contiguous
    dy_ptr,
    x_ptr,
    dweight_ptr,
    # sizes: groups, channels per group, time steps, kernel size, dilation, then the
    # (batch row, time block) chunks of the reduction and how many each split sums
    groups,
    in_per_group,
    out_per_group,
    length,
    taps,
    dilation,
    num_chunks,
    chunks_per_split,
    # strides, in elements
    stride_dy_b,
    stride_dy_c,
    stride_dy_t,
    stride_x_b,
    stride_x_c,
    stride_x_t,
    # a program covers BLOCK_O outputs x BLOCK_I inputs of one tap, BLOCK_T time steps at a time
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    split = tl.program_id(0) // groups
    group = tl.program_id(0) % groups
    outs = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    ins = (tl.program_id(2) // taps) * BLOCK_I + tl.arange(0, BLOCK_I)
    k = tl.program_id(2) % taps
    out_mask = outs < out_per_group
    in_mask = ins < in_per_group
    reach = (taps - 1 - k) * dilation
    dy_rows = dy_ptr + (group * out_per_group + outs).to(tl.int64)[:, None] * stride_dy_c
    x_rows = x_ptr + (group * in_per_group + ins).to(tl.int64)[None, :] * stride_x_c
    time_blocks = tl.cdiv(length, BLOCK_T)

    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)
    first = split * chunks_per_split
    for chunk in range(first, tl.minimum(first + chunks_per_split, num_chunks)):
        batch_row = (chunk // time_blocks).to(tl.int64)
        times = (chunk % time_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        sources = times - reach
        dy = tl.load(
            dy_rows + batch_row * stride_dy_b + times.to(tl.int64)[None, :] * stride_dy_t,
            mask=out_mask[:, None] & (times < length)[None, :],
            other=0,
        )
        # (BLOCK_T, BLOCK_I) tile of the shifted x^T; the padding's zeros before t = 0
        x_t = tl.load(
            x_rows + batch_row * stride_x_b + sources.to(tl.int64)[:, None] * stride_x_t,
            mask=((sources >= 0) & (times < length))[:, None] & in_mask[None, :],
            other=0,
        )
        acc = tl.dot(dy.to(DOT_DTYPE), x_t.to(DOT_DTYPE), acc, input_precision="ieee")

    out_channels = groups * out_per_group
    dweight_ptrs = (
        dweight_ptr
        + split.to(tl.int64) * (out_channels * in_per_group * taps)
        + (group * out_per_group + outs)[:, None] * (in_per_group * taps)
        + ins[None, :] * taps
        + k
    )
    tl.store(
        dweight_ptrs,
        acc.to(dweight_ptr.dtype.element_ty),
        mask=out_mask[:, None] & in_mask[None, :],
    )


@triton.jit
def _causal_conv1d_bwd_kernel_bias(
    # pointers: the output holds one (C_out,) slice per split, contiguous
    dy_ptr,
    dbias_ptr,
    # sizes: channels, time steps, the (batch row, time block) chunks and how many each split sums
    channels,
    length,
    num_chunks,
    chunks_per_split,
    # strides, in elements
    stride_dy_b,
    stride_dy_c,
    stride_dy_t,
    # a program covers BLOCK_C channels, BLOCK_T time steps at a time
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    split = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_mask = chans < channels
    dy_rows = dy_ptr + chans.to(tl.int64)[:, None] * stride_dy_c
    time_blocks = tl.cdiv(length, BLOCK_T)

    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=ACC_DTYPE)
    first = split * chunks_per_split
    for chunk in range(first, tl.minimum(first + chunks_per_split, num_chunks)):
        batch_row = (chunk // time_blocks).to(tl.int64)
        times = (chunk % time_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        dy = tl.load(
            dy_rows + batch_row * stride_dy_b + times.to(tl.int64)[None, :] * stride_dy_t,
            mask=chan_mask[:, None] & (times < length)[None, :],
            other=0,
        )
        acc += dy.to(ACC_DTYPE)

    dbias = tl.sum(acc, axis=1).to(dbias_ptr.dtype.element_ty)
    tl.store(dbias_ptr + split.to(tl.int64) * channels + chans, dbias, mask=chan_mask)


@triton.jit
def _causal_conv1d_fwd_kernel_depthwise(
    # pointers: in from x (or dy), out to y (or dx); the bias is read only when HAS_BIAS
    in_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    # sizes: channels, time steps, kernel size, dilation, and the direction of the taps:
    # -1 for the forward (back in time), +1 for dx (forward in time)
    channels,
    length,
    taps,
    dilation,
    direction,
    # strides, in elements (the weight is contiguous (C, 1, K))
    stride_in_b,
    stride_in_c,
    stride_in_t,
    stride_out_b,
    stride_out_c,
    stride_out_t,
    # a program covers BLOCK_C channels x BLOCK_T time steps of one batch row
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0).to(tl.int64)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    times = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    chan_mask = chans < channels
    time_mask = times < length
    in_rows = in_ptr + batch_row * stride_in_b + chans.to(tl.int64)[:, None] * stride_in_c

    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=ACC_DTYPE)
    for k in range(taps):
        # outside [0, T) the tap reads the padding's zeros, which still meet the weight
        sources = times + direction * (taps - 1 - k) * dilation
        source_mask = time_mask & (sources >= 0) & (sources < length)
        w = tl.load(weight_ptr + chans * taps + k, mask=chan_mask, other=0)
        x = tl.load(
            in_rows + sources.to(tl.int64)[None, :] * stride_in_t,
            mask=chan_mask[:, None] & source_mask[None, :],
            other=0,
        )
        acc += w.to(ACC_DTYPE)[:, None] * x.to(ACC_DTYPE)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + chans, mask=chan_mask, other=0)
        acc += bias.to(ACC_DTYPE)[:, None]
    out_ptrs = (
        out_ptr
        + batch_row * stride_out_b
        + chans.to(tl.int64)[:, None] * stride_out_c
        + times.to(tl.int64)[None, :] * stride_out_t
    )
    tl.store(
        out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=chan_mask[:, None] & time_mask[None, :]
    )


@triton.jit
def _causal_conv1d_bwd_kernel_weight_depthwise(
    # pointers: the output holds one (C, 1, K) slice per split, contiguous
    dy_ptr,
    x_ptr,
    dweight_ptr,
    # sizes: channels, time steps, kernel size, dilation, then the (batch row, time block)
    # chunks of the reduction and how many each split sums
    channels,
    length,
    taps,
    dilation,
    num_chunks,
    chunks_per_split,
    # strides, in elements
    stride_dy_b,
    stride_dy_c,
    stride_dy_t,
    stride_x_b,
    stride_x_c,
    stride_x_t,
    # a program covers BLOCK_C channels of one tap, BLOCK_T time steps at a time
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    split = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(2)
    chan_mask = chans < channels
    reach = (taps - 1 - k) * dilation
    dy_rows = dy_ptr + chans.to(tl.int64)[:, None] * stride_dy_c
    x_rows = x_ptr + chans.to(tl.int64)[:, None] * stride_x_c
    time_blocks = tl.cdiv(length, BLOCK_T)

    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=ACC_DTYPE)
    first = split * chunks_per_split
    for chunk in range(first, tl.minimum(first + chunks_per_split, num_chunks)):
        batch_row = (chunk // time_blocks).to(tl.int64)
        times = (chunk % time_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        sources = times - reach
        time_mask = times < length
        dy = tl.load(
            dy_rows + batch_row * stride_dy_b + times.to(tl.int64)[None, :] * stride_dy_t,
            mask=chan_mask[:, None] & time_mask[None, :],
            other=0,
        )
        x = tl.load(
            x_rows + batch_row * stride_x_b + sources.to(tl.int64)[None, :] * stride_x_t,
            mask=chan_mask[:, None] & (time_mask & (sources >= 0))[None, :],
            other=0,
        )
        acc += dy.to(ACC_DTYPE) * x.to(ACC_DTYPE)

    dweight = tl.sum(acc, axis=1).to(dweight_ptr.dtype.element_ty)
    dweight_ptrs = dweight_ptr + split.to(tl.int64) * (channels * taps) + chans * taps + k
    tl.store(dweight_ptrs, dweight, mask=chan_mask)


def _splits(t, tiles, num_chunks):
    # programs per output tile of a reduction over num_chunks chunks: enough to fill a GPU
    # (a few programs per multiprocessor), one under the interpreter, where each costs time
    if not t.is_cuda:
        return 1
    target = 4 * torch.cuda.get_device_properties(t.device).multi_processor_count
    return max(1, min(num_chunks, triton.cdiv(target, tiles)))


def _widest(t):
    # the widest channel block of a tl.dot tile: float64 tiles at 64 would take 128 KiB of
    # shared memory in the weight gradient, more than most GPUs give a program
    return 32 if t.dtype == torch.float64 else 64


def _depthwise(src, weight, bias, out, dilation, direction):
    # out[b, c, t] = bias[c] + sum_k W[c, 0, k] src[b, c, t + direction (K - 1 - k) d]: the
    # forward (direction -1, from x) or dx (direction +1, from dy) of a depthwise convolution
    batch, channels, length = src.shape
    block_c = _block(channels, 1, 16)
    block_t = _block(length, 16, 128)
    grid = (batch, triton.cdiv(channels, block_c), triton.cdiv(length, block_t))
    _causal_conv1d_fwd_kernel_depthwise[grid](
        src,
        weight,
        out if bias is None else bias,
        out,
        channels,
        length,
        weight.shape[2],
        dilation,
        direction,
        *src.stride(),
        *out.stride(),
        HAS_BIAS=bias is not None,
        BLOCK_C=block_c,
        BLOCK_T=block_t,
        ACC_DTYPE=_accumulator(src.dtype),
    )


def _causal_conv1d_fwd(x, weight, bias, dilation, groups):
    """y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] x[b, i, t - (K - 1 - k) d], x = 0 for t < 0.

    x: (B, C_in, T) with any strides; weight: (C_out, C_in / groups, K), contiguous; bias:
    (C_out,), contiguous, or None. Returns y (B, C_out, T), contiguous. A depthwise
    convolution (one input and one output per group) takes elementwise products instead.
    """
    batch, _, length = x.shape
    out_channels, in_per_group, taps = weight.shape
    out_per_group = out_channels // groups
    y = x.new_empty(batch, out_channels, length)
    if y.numel() == 0:
        return y
    if in_per_group == 1 and out_per_group == 1:
        with _device_guard(x):
            _depthwise(x, weight, bias, y, dilation, -1)
        return y

    block_o = _block(out_per_group, 16, _widest(x))
    block_i = _block(in_per_group, 16, 32)
    block_t = _block(length, 16, 64)
    grid = (batch * groups, triton.cdiv(out_per_group, block_o), triton.cdiv(length, block_t))
    with _device_guard(x):
        _causal_conv1d_fwd_kernel[grid](
            x,
            weight,
            y if bias is None else bias,
            y,
            groups,
            in_per_group,
            out_per_group,
            length,
            taps,
            dilation,
            *x.stride(),
            *y.stride(),
            HAS_BIAS=bias is not None,
            BLOCK_O=block_o,
            BLOCK_I=block_i,
            BLOCK_T=block_t,
            ACC_DTYPE=_accumulator(x.dtype),
            DOT_DTYPE=_dot_operand(x),
        )
    return y


def _causal_conv1d_bwd(dy, x, weight, dilation, groups, output_mask):
    """The gradients of y = causal_conv1d(x, W, b) that output_mask asks for, None for the rest:

    dx[b, i, t] = sum_o sum_k W[o, i, k] dy[b, o, t + (K - 1 - k) d], dy = 0 from t = T on;
    dW[o, i, k] = sum_b sum_t dy[b, o, t] x[b, i, t - (K - 1 - k) d], x = 0 before t = 0;
    db[o] = sum_b sum_t dy[b, o, t]  (i and o within one group).

    dy: (B, C_out, T) and x: (B, C_in, T) with any strides; weight contiguous. Returns dx
    (B, C_in, T), dW and db, contiguous, in the input dtype. The weight and bias sums of each
    output tile are split over several programs on a GPU and their partial sums added after.
    """
    batch, out_channels, length = dy.shape
    _, in_per_group, taps = weight.shape
    out_per_group = out_channels // groups
    need_dx, need_dweight, need_dbias = output_mask
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else None
    dweight = weight.new_empty(weight.shape) if need_dweight else None
    dbias = weight.new_empty(out_channels) if need_dbias else None
    if dy.numel() == 0:
        # with no batch row or no time step, the weight and bias gradients are sums of nothing
        for t in (dweight, dbias):
            if t is not None:
                t.zero_()
        return dx, dweight, dbias

    acc_dtype = _accumulator(dy.dtype)
    dot_dtype = _dot_operand(dy)
    sum_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    depthwise = in_per_group == 1 and out_per_group == 1
    block_t = _block(length, 16, 64)
    num_chunks = batch * triton.cdiv(length, block_t)
    with _device_guard(dy):
        if need_dx and depthwise:
            _depthwise(dy, weight, None, dx, dilation, 1)
        elif need_dx:
            block_i = _block(in_per_group, 16, _widest(dy))
            block_o = _block(out_per_group, 16, 32)
            grid = (
                batch * groups,
                triton.cdiv(in_per_group, block_i),
                triton.cdiv(length, block_t),
            )
            _causal_conv1d_bwd_kernel_input[grid](
                dy,
                weight,
                dx,
                groups,
                in_per_group,
                out_per_group,
                length,
                taps,
                dilation,
                *dy.stride(),
                *dx.stride(),
                BLOCK_I=block_i,
                BLOCK_O=block_o,
                BLOCK_T=block_t,
                ACC_DTYPE=acc_dtype,
                DOT_DTYPE=dot_dtype,
            )

        if need_dweight and depthwise:
            block_c = _block(out_channels, 1, 16)
            tiles = triton.cdiv(out_channels, block_c) * taps
            splits = _splits(dy, tiles, num_chunks)
            partial = (
                dweight if splits == 1 else dy.new_empty(splits, *weight.shape, dtype=sum_dtype)
            )
            _causal_conv1d_bwd_kernel_weight_depthwise[
                (splits, triton.cdiv(out_channels, block_c), taps)
            ](
                dy,
                x,
                partial,
                out_channels,
                length,
                taps,
                dilation,
                num_chunks,
                triton.cdiv(num_chunks, splits),
                *dy.stride(),
                *x.stride(),
                BLOCK_C=block_c,
                BLOCK_T=block_t,
                ACC_DTYPE=acc_dtype,
            )
            if splits > 1:
                dweight.copy_(partial.sum(dim=0))
        elif need_dweight:
            block_o = _block(out_per_group, 16, _widest(dy))
            block_i = _block(in_per_group, 16, _widest(dy))
            tiles = (
                groups * triton.cdiv(out_per_group, block_o) * triton.cdiv(in_per_group, block_i)
            ) * taps
            splits = _splits(dy, tiles, num_chunks)
            partial = (
                dweight if splits == 1 else dy.new_empty(splits, *weight.shape, dtype=sum_dtype)
            )
            grid = (
                splits * groups,
                triton.cdiv(out_per_group, block_o),
                triton.cdiv(in_per_group, block_i) * taps,
            )
            _causal_conv1d_bwd_kernel_weight[grid](
                dy,
                x,
                partial,
                groups,
                in_per_group,
                out_per_group,
                length,
                taps,
                dilation,
                num_chunks,
                triton.cdiv(num_chunks, splits),
                *dy.stride(),
                *x.stride(),
                BLOCK_O=block_o,
                BLOCK_I=block_i,
                BLOCK_T=block_t,
                ACC_DTYPE=acc_dtype,
                DOT_DTYPE=dot_dtype,
            )
            if splits > 1:
                dweight.copy_(partial.sum(dim=0))

        if need_dbias:
            block_c = _block(out_channels, 16, 64)
            tiles = triton.cdiv(out_channels, block_c)
            splits = _splits(dy, tiles, num_chunks)
            partial = dbias if splits == 1 else dy.new_empty(splits, out_channels, dtype=sum_dtype)
            _causal_conv1d_bwd_kernel_bias[(splits, tiles)](
                dy,
                partial,
                out_channels,
                length,
                num_chunks,
                triton.cdiv(num_chunks, splits),
                *dy.stride(),
                BLOCK_C=block_c,
                BLOCK_T=block_t,
                ACC_DTYPE=acc_dtype,
            )
            if splits > 1:
                dbias.copy_(partial.sum(dim=0))
    return dx, dweight, dbias


def _check_dtype(op, t):
    if t.dtype not in _DTYPES:
        raise TypeError(f"{op}: expected float32, float64, float16 or bfloat16, got {t.dtype}")


def _check_weight(op, name, t, weight, dilation, groups):
    # the checks of set_shape in csrc/torch/causal_conv1d.cpp, with its messages
    if t.dim() != 3:
        raise ValueError(f"{op}: {name} must be (B, C, T), got {t.dim()}-D")
    _check_dtype(op, t)
    if weight.dim() != 3:
        raise ValueError(f"{op}: weight must be (C_out, C_in / groups, K), got {weight.dim()}-D")
    if weight.device != t.device:
        raise ValueError(f"{op}: weight is on {weight.device}, {name} on {t.device}")
    if weight.dtype != t.dtype:
        raise TypeError(f"{op}: weight has dtype {weight.dtype}, {name} {t.dtype}")
    if dilation < 1:
        raise ValueError(f"{op}: dilation must be >= 1, got {dilation}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(
            f"{op}: groups must be >= 1 and divide C_out = {weight.shape[0]}, got {groups}"
        )
    if weight.shape[2] < 1:
        raise ValueError(f"{op}: kernel size must be >= 1, got {weight.shape[2]}")


@torch.library.custom_op(
    f"{_NAMESPACE}::causal_conv1d_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, int dilation, int groups) -> Tensor",
)
def causal_conv1d_fwd(x, weight, bias, dilation, groups):
    op = "causal_conv1d_fwd"
    _check_weight(op, "x", x, weight, dilation, groups)
    in_channels = weight.shape[1] * groups
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels, weight expects {in_channels} "
            f"({weight.shape[1]} x {groups} groups)"
        )
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{op}: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"{op}: bias is on {bias.device}, x on {x.device}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{op}: bias has dtype {bias.dtype}, x {x.dtype}")
        bias = bias.contiguous()
    return _causal_conv1d_fwd(x, weight.contiguous(), bias, dilation, groups)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, dilation, groups):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2])


@torch.library.custom_op(
    f"{_NAMESPACE}::causal_conv1d_bwd",
    mutates_args=(),
    schema=(
        "(Tensor dy, Tensor x, Tensor weight, int dilation, int groups, bool[3] output_mask) -> "
        "(Tensor, Tensor, Tensor)"
    ),
)
def causal_conv1d_bwd(dy, x, weight, dilation, groups, output_mask):
    op = "causal_conv1d_bwd"
    _check_weight(op, "dy", dy, weight, dilation, groups)
    if dy.shape[1] != weight.shape[0]:
        raise ValueError(
            f"{op}: dy has {dy.shape[1]} channels, weight has {weight.shape[0]} outputs"
        )
    expected = (dy.shape[0], weight.shape[1] * groups, dy.shape[2])
    if x.dim() != 3 or tuple(x.shape) != expected:
        shape = ", ".join(str(n) for n in expected)
        raise ValueError(f"{op}: x must be ({shape}), got {list(x.shape)}")
    if x.device != dy.device:
        raise ValueError(f"{op}: x is on {x.device}, dy on {dy.device}")
    if x.dtype != dy.dtype:
        raise TypeError(f"{op}: x has dtype {x.dtype}, dy {dy.dtype}")
    return _causal_conv1d_bwd(
        dy, x, weight.contiguous(), dilation, groups, [bool(m) for m in output_mask]
    )


@causal_conv1d_bwd.register_fake
def _(dy, x, weight, dilation, groups, output_mask):
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
    dweight = weight.new_empty(weight.shape) if output_mask[1] else None
    dbias = weight.new_empty(weight.shape[0]) if output_mask[2] else None
    return dx, dweight, dbias
