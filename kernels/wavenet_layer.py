"""Triton kernels of the fused WaveNet layer, registered as torch.ops.pyreversible_triton.

The two ops have the schemas and the semantics of their C++ twins in
csrc/torch/wavenet_layer.cpp:

- `wavenet_layer_fwd`: z = causal_conv1d(x, W_conv, b_conv, d) + W_local c_local
  + W_global c_global; a = tanh(z[:G]) sigmoid(z[G:]); skip = W_s a + b_s;
  x_next = x + W_r a + b_r. One launch; each program owns a tile of time steps of one batch row
  and runs it start to end: the taps of x (masked before t = 0, no padded copy) and the local
  conditioning through tl.dot into the two halves of z, the per-row global term and bias, the
  gate, then the skip and residual projections of the gate's output, block by block of their
  output channels. z goes out to memory only when the backward will need it.
- `wavenet_layer_bwd`: one launch per tile recomputes the gate from the saved z, takes
  da = W_s^T dskip + W_r^T dx_next through tl.dot and the gate's derivative to dz, and writes dz
  and a. dz at time t feeds dx at earlier times, in other tiles, so the rest are reductions over
  those: the causal convolution's own backward kernels (kernels/causal_conv1d.py) on dz give dx
  (plus dx_next), dW_conv and db_conv; the same kernels with one tap give the 1x1 projections'
  weight and bias gradients (dskip and dx_next against a) and the local conditioning's
  (dz against c_local). The global conditioning's gradients are (B, 2G) by (B, C_global)
  products of dz summed over time (summed per tile in the kernel), done by torch.

The whole gate (G channels) lives in one program, up to G = 256. Sums accumulate in float32
(float64 for float64 inputs); every tensor that an op returns is in the input dtype.
"""

import torch
import triton
import triton.language as tl

from .additive_coupling import _accumulator, _block, _device_guard, _dot_operand
from .causal_conv1d import _causal_conv1d_bwd

_NAMESPACE = "pyreversible_triton"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# The widest gate one program holds: z's two halves and a, (G, BLOCK_T) each, stay on chip.
_MAX_GATE = 256


@triton.jit
def _tanh_sigmoid(z_filter, z_gate):
    # tanh from one exponential of -2|z|, which gives exactly +-1 past the float's range (and
    # at +-inf), as torch.tanh does; sigmoid likewise reaches exactly 0 and 1
    e = tl.exp(-2.0 * tl.abs(z_filter))
    magnitude = (1.0 - e) / (1.0 + e)
    tanh = tl.where(z_filter < 0, -magnitude, magnitude)
    sigmoid = 1.0 / (1.0 + tl.exp(-z_gate))
    return tanh, sigmoid


@triton.jit
def _wavenet_layer_fwd_kernel(
    # pointers: biases and conditioning are read only when their flags say so
    x_ptr,
    conv_weight_ptr,
    conv_bias_ptr,
    residual_weight_ptr,
    residual_bias_ptr,
    skip_weight_ptr,
    skip_bias_ptr,
    local_cond_ptr,
    local_weight_ptr,
    global_cond_ptr,
    global_weight_ptr,
    x_next_ptr,
    skip_ptr,
    gate_input_ptr,
    # sizes: channels (residual R, gate G, skip S, conditioning), time steps, kernel, dilation
    residual,
    gate,
    skip_channels,
    local_channels,
    global_channels,
    length,
    taps,
    dilation,
    # strides, in elements (weights contiguous; gate_input contiguous (B, 2G, T))
    stride_x_b,
    stride_x_c,
    stride_x_t,
    stride_local_b,
    stride_local_c,
    stride_local_t,
    stride_global_b,
    stride_global_c,
    stride_x_next_b,
    stride_x_next_c,
    stride_x_next_t,
    stride_skip_b,
    stride_skip_c,
    stride_skip_t,
    # a program covers the whole gate (BLOCK_G) x BLOCK_T time steps of one batch row; inputs
    # and conditioning BLOCK_K channels at a time, projections BLOCK_N outputs at a time
    HAS_CONV_BIAS: tl.constexpr,
    HAS_RESIDUAL_BIAS: tl.constexpr,
    HAS_SKIP_BIAS: tl.constexpr,
    HAS_LOCAL: tl.constexpr,
    HAS_GLOBAL: tl.constexpr,
    SAVE_GATE_INPUT: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0).to(tl.int64)
    times = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    gates = tl.arange(0, BLOCK_G)
    time_mask = times < length
    gate_mask = gates < gate
    x_row = x_ptr + batch_row * stride_x_b
    # rows g (tanh half) and G + g (sigmoid half) of the (2G, R, K) weight
    filter_rows = conv_weight_ptr + gates.to(tl.int64)[:, None] * (residual * taps)
    gate_rows = conv_weight_ptr + (gate + gates).to(tl.int64)[:, None] * (residual * taps)

    z_filter = tl.zeros((BLOCK_G, BLOCK_T), dtype=ACC_DTYPE)
    z_gate = tl.zeros((BLOCK_G, BLOCK_T), dtype=ACC_DTYPE)
    for k in range(taps):
        # tap k reads x (K - 1 - k) * d steps back; before t = 0 it reads the padding's zeros
        sources = times - (taps - 1 - k) * dilation
        source_mask = time_mask & (sources >= 0)
        for i0 in range(0, residual, BLOCK_K):
            ins = i0 + tl.arange(0, BLOCK_K)
            in_mask = ins < residual
            x = tl.load(
                x_row
                + ins.to(tl.int64)[:, None] * stride_x_c
                + sources.to(tl.int64)[None, :] * stride_x_t,
                mask=in_mask[:, None] & source_mask[None, :],
                other=0,
            ).to(DOT_DTYPE)
            w_mask = gate_mask[:, None] & in_mask[None, :]
            w_filter = tl.load(filter_rows + ins[None, :] * taps + k, mask=w_mask, other=0)
            w_gate = tl.load(gate_rows + ins[None, :] * taps + k, mask=w_mask, other=0)
            z_filter = tl.dot(w_filter.to(DOT_DTYPE), x, z_filter, input_precision="ieee")
            z_gate = tl.dot(w_gate.to(DOT_DTYPE), x, z_gate, input_precision="ieee")

    if HAS_LOCAL:
        local_row = local_cond_ptr + batch_row * stride_local_b
        for c0 in range(0, local_channels, BLOCK_K):
            chans = c0 + tl.arange(0, BLOCK_K)
            chan_mask = chans < local_channels
            c = tl.load(
                local_row
                + chans.to(tl.int64)[:, None] * stride_local_c
                + times.to(tl.int64)[None, :] * stride_local_t,
                mask=chan_mask[:, None] & time_mask[None, :],
                other=0,
            ).to(DOT_DTYPE)
            w_mask = gate_mask[:, None] & chan_mask[None, :]
            w_rows = (
                local_weight_ptr + gates.to(tl.int64)[:, None] * local_channels + chans[None, :]
            )
            w_filter = tl.load(w_rows, mask=w_mask, other=0)
            w_gate = tl.load(w_rows + gate * local_channels, mask=w_mask, other=0)
            z_filter = tl.dot(w_filter.to(DOT_DTYPE), c, z_filter, input_precision="ieee")
            z_gate = tl.dot(w_gate.to(DOT_DTYPE), c, z_gate, input_precision="ieee")

    # per-row terms, constant in time: the conv bias and W_global c_global[b]
    row_filter = tl.zeros((BLOCK_G,), dtype=ACC_DTYPE)
    row_gate = tl.zeros((BLOCK_G,), dtype=ACC_DTYPE)
    if HAS_CONV_BIAS:
        row_filter += tl.load(conv_bias_ptr + gates, mask=gate_mask, other=0).to(ACC_DTYPE)
        row_gate += tl.load(conv_bias_ptr + gate + gates, mask=gate_mask, other=0).to(ACC_DTYPE)
    if HAS_GLOBAL:
        global_row = global_cond_ptr + batch_row * stride_global_b
        for c0 in range(0, global_channels, BLOCK_K):
            chans = c0 + tl.arange(0, BLOCK_K)
            chan_mask = chans < global_channels
            c = tl.load(global_row + chans.to(tl.int64) * stride_global_c, mask=chan_mask, other=0)
            w_mask = gate_mask[:, None] & chan_mask[None, :]
            w_rows = (
                global_weight_ptr + gates.to(tl.int64)[:, None] * global_channels + chans[None, :]
            )
            w_filter = tl.load(w_rows, mask=w_mask, other=0)
            w_gate = tl.load(w_rows + gate * global_channels, mask=w_mask, other=0)
            c = c.to(ACC_DTYPE)[None, :]
            row_filter += tl.sum(w_filter.to(ACC_DTYPE) * c, axis=1)
            row_gate += tl.sum(w_gate.to(ACC_DTYPE) * c, axis=1)
    z_filter += row_filter[:, None]
    z_gate += row_gate[:, None]

    if SAVE_GATE_INPUT:
        # offsets in int64 from the batch row on (left to right), so that no product wraps
        z_row = gate_input_ptr + batch_row * 2 * gate * length + times[None, :]
        z_mask = gate_mask[:, None] & time_mask[None, :]
        z_type = gate_input_ptr.dtype.element_ty
        tl.store(z_row + gates.to(tl.int64)[:, None] * length, z_filter.to(z_type), mask=z_mask)
        z_gate_rows = (gates.to(tl.int64) + gate)[:, None] * length
        tl.store(z_row + z_gate_rows, z_gate.to(z_type), mask=z_mask)

    tanh, sigmoid = _tanh_sigmoid(z_filter, z_gate)
    # the padding rows past G stay zero, so that a non-finite x there cannot reach the sums
    a = tl.where(gate_mask[:, None], tanh * sigmoid, 0).to(DOT_DTYPE)

    for n0 in range(0, skip_channels, BLOCK_N):
        outs = n0 + tl.arange(0, BLOCK_N)
        out_mask = outs < skip_channels
        w = tl.load(
            skip_weight_ptr + outs.to(tl.int64)[:, None] * gate + gates[None, :],
            mask=out_mask[:, None] & gate_mask[None, :],
            other=0,
        )
        acc = tl.dot(
            w.to(DOT_DTYPE),
            a,
            tl.zeros((BLOCK_N, BLOCK_T), dtype=ACC_DTYPE),
            input_precision="ieee",
        )
        if HAS_SKIP_BIAS:
            acc += tl.load(skip_bias_ptr + outs, mask=out_mask, other=0).to(ACC_DTYPE)[:, None]
        tl.store(
            skip_ptr
            + batch_row * stride_skip_b
            + outs.to(tl.int64)[:, None] * stride_skip_c
            + times.to(tl.int64)[None, :] * stride_skip_t,
            acc.to(skip_ptr.dtype.element_ty),
            mask=out_mask[:, None] & time_mask[None, :],
        )

    for r0 in range(0, residual, BLOCK_N):
        outs = r0 + tl.arange(0, BLOCK_N)
        out_mask = outs < residual
        io_mask = out_mask[:, None] & time_mask[None, :]
        w = tl.load(
            residual_weight_ptr + outs.to(tl.int64)[:, None] * gate + gates[None, :],
            mask=out_mask[:, None] & gate_mask[None, :],
            other=0,
        )
        acc = tl.dot(
            w.to(DOT_DTYPE),
            a,
            tl.zeros((BLOCK_N, BLOCK_T), dtype=ACC_DTYPE),
            input_precision="ieee",
        )
        if HAS_RESIDUAL_BIAS:
            acc += tl.load(residual_bias_ptr + outs, mask=out_mask, other=0).to(ACC_DTYPE)[:, None]
        x = tl.load(
            x_row
            + outs.to(tl.int64)[:, None] * stride_x_c
            + times.to(tl.int64)[None, :] * stride_x_t,
            mask=io_mask,
            other=0,
        )
        acc += x.to(ACC_DTYPE)
        tl.store(
            x_next_ptr
            + batch_row * stride_x_next_b
            + outs.to(tl.int64)[:, None] * stride_x_next_c
            + times.to(tl.int64)[None, :] * stride_x_next_t,
            acc.to(x_next_ptr.dtype.element_ty),
            mask=io_mask,
        )


@triton.jit
def _wavenet_layer_bwd_kernel_gate(
    # pointers: dz (B, 2G, T) and a (B, G, T) out, contiguous; the per-tile sums of dz over
    # time (B, 2G, tiles) only when SUM_DZ
    dx_next_ptr,
    dskip_ptr,
    gate_input_ptr,
    residual_weight_ptr,
    skip_weight_ptr,
    dz_ptr,
    a_ptr,
    dz_sum_ptr,
    # sizes
    residual,
    gate,
    skip_channels,
    length,
    # strides, in elements (weights contiguous)
    stride_dx_next_b,
    stride_dx_next_c,
    stride_dx_next_t,
    stride_dskip_b,
    stride_dskip_c,
    stride_dskip_t,
    stride_z_b,
    stride_z_c,
    stride_z_t,
    # a program covers the whole gate x BLOCK_T time steps, projections BLOCK_N at a time
    SUM_DZ: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    batch_row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    times = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    gates = tl.arange(0, BLOCK_G)
    time_mask = times < length
    gate_mask = gates < gate
    mask = gate_mask[:, None] & time_mask[None, :]

    z_row = gate_input_ptr + batch_row * stride_z_b + times.to(tl.int64)[None, :] * stride_z_t
    z_filter_rows = gates.to(tl.int64)[:, None] * stride_z_c
    z_gate_rows = (gates.to(tl.int64) + gate)[:, None] * stride_z_c
    z_filter = tl.load(z_row + z_filter_rows, mask=mask, other=0).to(ACC_DTYPE)
    z_gate = tl.load(z_row + z_gate_rows, mask=mask, other=0).to(ACC_DTYPE)
    tanh, sigmoid = _tanh_sigmoid(z_filter, z_gate)
    # offsets in int64 from the batch row on (left to right), so that no product wraps
    out_ptrs = batch_row * gate * length + gates.to(tl.int64)[:, None] * length + times[None, :]
    tl.store(a_ptr + out_ptrs, (tanh * sigmoid).to(a_ptr.dtype.element_ty), mask=mask)

    # da = W_s^T dskip + W_r^T dx_next, the tiles of W^T read in place
    da = tl.zeros((BLOCK_G, BLOCK_T), dtype=ACC_DTYPE)
    for n0 in range(0, skip_channels, BLOCK_N):
        outs = n0 + tl.arange(0, BLOCK_N)
        out_mask = outs < skip_channels
        w_t = tl.load(
            skip_weight_ptr + outs.to(tl.int64)[None, :] * gate + gates[:, None],
            mask=gate_mask[:, None] & out_mask[None, :],
            other=0,
        )
        d = tl.load(
            dskip_ptr
            + batch_row * stride_dskip_b
            + outs.to(tl.int64)[:, None] * stride_dskip_c
            + times.to(tl.int64)[None, :] * stride_dskip_t,
            mask=out_mask[:, None] & time_mask[None, :],
            other=0,
        )
        da = tl.dot(w_t.to(DOT_DTYPE), d.to(DOT_DTYPE), da, input_precision="ieee")
    for r0 in range(0, residual, BLOCK_N):
        outs = r0 + tl.arange(0, BLOCK_N)
        out_mask = outs < residual
        w_t = tl.load(
            residual_weight_ptr + outs.to(tl.int64)[None, :] * gate + gates[:, None],
            mask=gate_mask[:, None] & out_mask[None, :],
            other=0,
        )
        d = tl.load(
            dx_next_ptr
            + batch_row * stride_dx_next_b
            + outs.to(tl.int64)[:, None] * stride_dx_next_c
            + times.to(tl.int64)[None, :] * stride_dx_next_t,
            mask=out_mask[:, None] & time_mask[None, :],
            other=0,
        )
        da = tl.dot(w_t.to(DOT_DTYPE), d.to(DOT_DTYPE), da, input_precision="ieee")

    # the chain rule through a = tanh(z_f) sigmoid(z_g), in the reference's order of factors
    dz_filter = (da * sigmoid) * (1.0 - tanh * tanh)
    dz_gate = (da * tanh) * (sigmoid * (1.0 - sigmoid))
    dz_row = dz_ptr + batch_row * 2 * gate * length + times[None, :]
    tl.store(
        dz_row + gates.to(tl.int64)[:, None] * length,
        dz_filter.to(dz_ptr.dtype.element_ty),
        mask=mask,
    )
    dz_gate_rows = (gates.to(tl.int64) + gate)[:, None] * length
    tl.store(dz_row + dz_gate_rows, dz_gate.to(dz_ptr.dtype.element_ty), mask=mask)

    if SUM_DZ:
        tiles = tl.num_programs(1)
        sums_ptrs = dz_sum_ptr + (2 * batch_row * gate + gates.to(tl.int64)) * tiles + tile
        sum_filter = tl.sum(tl.where(mask, dz_filter, 0), axis=1)
        sum_gate = tl.sum(tl.where(mask, dz_gate, 0), axis=1)
        tl.store(sums_ptrs, sum_filter, mask=gate_mask)
        tl.store(sums_ptrs + gate * tiles, sum_gate, mask=gate_mask)


def _blocks(x, gate, residual, skip_channels, length):
    # the whole gate in one program; time tiles shrink as the gate grows, to keep the three
    # (G, BLOCK_T) tiles of z and a on chip
    op = "wavenet_layer"
    if gate > _MAX_GATE:
        raise NotImplementedError(
            f"{op}: {gate} gate channels on triton are not supported (at most {_MAX_GATE} fit one "
            "program); use backend 'cpp' or 'reference'"
        )
    block_g = _block(gate, 16, _MAX_GATE)
    block_t = _block(length, 16, max(16, 4096 // block_g) if x.is_cuda else 256)
    block_k = _block(residual, 16, 32)
    block_n = _block(max(residual, skip_channels), 16, 64 if x.is_cuda else 256)
    # 8 warps share the registers of the largest tiles (G x BLOCK_T of 4096 elements, three times)
    num_warps = 8 if block_g * block_t >= 4096 else 4
    return block_g, block_k, block_n, block_t, num_warps


def _wavenet_layer_fwd(
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
    save_gate_input,
):
    """(x_next, skip, z): one fused launch; z (B, 2G, T) only when save_gate_input, else an
    empty (0, 2G, T) tensor.

    x: (B, R, T), local_cond: (B, C_local, T), global_cond: (B, C_global), any strides; every
    weight and bias contiguous. Returns contiguous tensors in x's dtype.
    """
    batch, residual, length = x.shape
    gate = conv_weight.shape[0] // 2
    skip_channels = skip_weight.shape[0]
    x_next = x.new_empty(x.shape)
    skip = x.new_empty(batch, skip_channels, length)
    gate_input = x.new_empty(batch if save_gate_input else 0, 2 * gate, length)
    if x.numel() == 0:
        return x_next, skip, gate_input

    block_g, block_k, block_n, block_t, num_warps = _blocks(
        x, gate, residual, skip_channels, length
    )
    local_strides = local_cond.stride() if local_cond is not None else (0, 0, 0)
    global_strides = global_cond.stride() if global_cond is not None else (0, 0)
    grid = (batch, triton.cdiv(length, block_t))
    with _device_guard(x):
        _wavenet_layer_fwd_kernel[grid](
            x,
            conv_weight,
            x if conv_bias is None else conv_bias,
            residual_weight,
            x if residual_bias is None else residual_bias,
            skip_weight,
            x if skip_bias is None else skip_bias,
            x if local_cond is None else local_cond,
            x if local_weight is None else local_weight,
            x if global_cond is None else global_cond,
            x if global_weight is None else global_weight,
            x_next,
            skip,
            gate_input if save_gate_input else x_next,
            residual,
            gate,
            skip_channels,
            0 if local_cond is None else local_cond.shape[1],
            0 if global_cond is None else global_cond.shape[1],
            length,
            conv_weight.shape[2],
            dilation,
            *x.stride(),
            *local_strides,
            *global_strides,
            *x_next.stride(),
            *skip.stride(),
            HAS_CONV_BIAS=conv_bias is not None,
            HAS_RESIDUAL_BIAS=residual_bias is not None,
            HAS_SKIP_BIAS=skip_bias is not None,
            HAS_LOCAL=local_cond is not None,
            HAS_GLOBAL=global_cond is not None,
            SAVE_GATE_INPUT=save_gate_input,
            BLOCK_G=block_g,
            BLOCK_K=block_k,
            BLOCK_N=block_n,
            BLOCK_T=block_t,
            ACC_DTYPE=_accumulator(x.dtype),
            DOT_DTYPE=_dot_operand(x),
            num_warps=num_warps,
        )
    return x_next, skip, gate_input


def _wavenet_layer_bwd(
    dx_next,
    dskip,
    gate_input,
    x,
    conv_weight,
    residual_weight,
    skip_weight,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
):
    """Every gradient of the layer, in the order of the forward's tensors:
    (dx, dW_conv, db_conv, dW_r, db_r, dW_s, db_s, dc_local, dW_local, dc_global, dW_global),
    the conditioning's None without it.

    da = W_s^T dskip + W_r^T dx_next; dz_f = da sigmoid(z_g) (1 - tanh(z_f)^2);
    dz_g = da tanh(z_f) sigmoid(z_g) (1 - sigmoid(z_g)); dx = dx_next + conv^T(dz); the weight
    gradients are sums over batch rows and time of the cotangents times the inputs they met.
    """
    batch, residual, length = x.shape
    gate = conv_weight.shape[0] // 2
    skip_channels = skip_weight.shape[0]
    if x.numel() == 0:
        # with no time step or no batch row, every gradient is a sum of nothing
        def zeros(t):
            return None if t is None else torch.zeros_like(t, memory_format=torch.contiguous_format)

        return (
            zeros(x),
            zeros(conv_weight),
            conv_weight.new_zeros(2 * gate),
            zeros(residual_weight),
            residual_weight.new_zeros(residual),
            zeros(skip_weight),
            skip_weight.new_zeros(skip_channels),
            zeros(local_cond),
            zeros(local_weight),
            zeros(global_cond),
            zeros(global_weight),
        )

    block_g, _, block_n, block_t, num_warps = _blocks(x, gate, residual, skip_channels, length)
    tiles = triton.cdiv(length, block_t)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dz = x.new_empty(batch, 2 * gate, length)
    a = x.new_empty(batch, gate, length)
    has_global = global_cond is not None
    dz_sum = x.new_empty(batch, 2 * gate, tiles, dtype=acc_dtype) if has_global else dz
    with _device_guard(x):
        _wavenet_layer_bwd_kernel_gate[(batch, tiles)](
            dx_next,
            dskip,
            gate_input,
            residual_weight,
            skip_weight,
            dz,
            a,
            dz_sum,
            residual,
            gate,
            skip_channels,
            length,
            *dx_next.stride(),
            *dskip.stride(),
            *gate_input.stride(),
            SUM_DZ=has_global,
            BLOCK_G=block_g,
            BLOCK_N=block_n,
            BLOCK_T=block_t,
            ACC_DTYPE=_accumulator(x.dtype),
            DOT_DTYPE=_dot_operand(x),
            num_warps=num_warps,
        )

    everything = [True, True, True]
    dx, dconv_weight, dconv_bias = _causal_conv1d_bwd(dz, x, conv_weight, dilation, 1, everything)
    dx += dx_next
    # the 1x1 projections and the local conditioning are causal convolutions of one tap
    weights_only = [False, True, True]
    _, dskip_weight, dskip_bias = _causal_conv1d_bwd(
        dskip, a, skip_weight.unsqueeze(-1), 1, 1, weights_only
    )
    _, dresidual_weight, dresidual_bias = _causal_conv1d_bwd(
        dx_next, a, residual_weight.unsqueeze(-1), 1, 1, weights_only
    )
    dlocal_cond = dlocal_weight = dglobal_cond = dglobal_weight = None
    if local_cond is not None:
        dlocal_cond, dlocal_weight, _ = _causal_conv1d_bwd(
            dz, local_cond, local_weight.unsqueeze(-1), 1, 1, [True, True, False]
        )
        dlocal_weight = dlocal_weight.view(local_weight.shape)
    if has_global:
        # z's global term is constant in time: its cotangent is dz summed over time
        dz_rows = dz_sum.sum(dim=2)
        dglobal_weight = (dz_rows.t() @ global_cond.to(acc_dtype)).to(x.dtype)
        dglobal_cond = (dz_rows @ global_weight.to(acc_dtype)).to(x.dtype)
    return (
        dx,
        dconv_weight,
        dconv_bias,
        dresidual_weight.view(residual_weight.shape),
        dresidual_bias,
        dskip_weight.view(skip_weight.shape),
        dskip_bias,
        dlocal_cond,
        dlocal_weight,
        dglobal_cond,
        dglobal_weight,
    )


def _check_like(op, name, t, x):
    if t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device}, x on {x.device}")
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}, x {x.dtype}")


def _check_shape(op, name, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must be {list(expected)}, got {list(t.shape)}")


def _check_layer(
    op,
    x,
    conv_weight,
    residual_weight,
    skip_weight,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
):
    # the checks of set_layer in csrc/torch/wavenet_layer.cpp, with its messages
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (B, R, T), got {x.dim()}-D")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: expected float32, float64, float16 or bfloat16, got {x.dtype}")
    if conv_weight.dim() != 3 or conv_weight.shape[0] % 2 or conv_weight.shape[2] < 1:
        raise ValueError(f"{op}: conv_weight must be (2G, R, K), got {list(conv_weight.shape)}")
    if dilation < 1:
        raise ValueError(f"{op}: dilation must be >= 1, got {dilation}")
    batch, residual, length = x.shape
    gate = conv_weight.shape[0] // 2
    for name, t in (
        ("conv_weight", conv_weight),
        ("residual_weight", residual_weight),
        ("skip_weight", skip_weight),
    ):
        _check_like(op, name, t, x)
    _check_shape(op, "conv_weight", conv_weight, (2 * gate, residual, conv_weight.shape[2]))
    _check_shape(op, "residual_weight", residual_weight, (residual, gate))
    if skip_weight.dim() != 2 or skip_weight.shape[1] != gate:
        raise ValueError(f"{op}: skip_weight must be (S, {gate}), got {list(skip_weight.shape)}")
    if (local_cond is None) != (local_weight is None):
        raise ValueError(f"{op}: local_cond and local_weight must be given together")
    if (global_cond is None) != (global_weight is None):
        raise ValueError(f"{op}: global_cond and global_weight must be given together")
    if local_cond is not None:
        _check_like(op, "local_cond", local_cond, x)
        _check_like(op, "local_weight", local_weight, x)
        if local_cond.dim() != 3 or local_cond.shape[0] != batch or local_cond.shape[2] != length:
            raise ValueError(
                f"{op}: local_cond must be ({batch}, C_local, {length}), got "
                f"{list(local_cond.shape)}"
            )
        _check_shape(op, "local_weight", local_weight, (2 * gate, local_cond.shape[1]))
    if global_cond is not None:
        _check_like(op, "global_cond", global_cond, x)
        _check_like(op, "global_weight", global_weight, x)
        if global_cond.dim() != 2 or global_cond.shape[0] != batch:
            raise ValueError(
                f"{op}: global_cond must be ({batch}, C_global), got {list(global_cond.shape)}"
            )
        _check_shape(op, "global_weight", global_weight, (2 * gate, global_cond.shape[1]))


def _contiguous(t):
    return None if t is None else t.contiguous()


def _bias(op, name, bias, size, x):
    if bias is None:
        return None
    _check_like(op, name, bias, x)
    _check_shape(op, name, bias, (size,))
    return bias.contiguous()


@torch.library.custom_op(
    f"{_NAMESPACE}::wavenet_layer_fwd",
    mutates_args=(),
    schema=(
        "(Tensor x, Tensor conv_weight, Tensor? conv_bias, Tensor residual_weight, "
        "Tensor? residual_bias, Tensor skip_weight, Tensor? skip_bias, int dilation, "
        "Tensor? local_cond, Tensor? local_weight, Tensor? global_cond, Tensor? global_weight, "
        "bool save_gate_input) -> (Tensor, Tensor, Tensor)"
    ),
)
def wavenet_layer_fwd(
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
    save_gate_input,
):
    op = "wavenet_layer_fwd"
    _check_layer(
        op,
        x,
        conv_weight,
        residual_weight,
        skip_weight,
        dilation,
        local_cond,
        local_weight,
        global_cond,
        global_weight,
    )
    gate = conv_weight.shape[0] // 2
    return _wavenet_layer_fwd(
        x,
        conv_weight.contiguous(),
        _bias(op, "conv_bias", conv_bias, 2 * gate, x),
        residual_weight.contiguous(),
        _bias(op, "residual_bias", residual_bias, x.shape[1], x),
        skip_weight.contiguous(),
        _bias(op, "skip_bias", skip_bias, skip_weight.shape[0], x),
        dilation,
        local_cond,
        _contiguous(local_weight),
        global_cond,
        _contiguous(global_weight),
        bool(save_gate_input),
    )


@wavenet_layer_fwd.register_fake
def _(
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
    save_gate_input,
):
    batch, _, length = x.shape
    return (
        x.new_empty(x.shape),
        x.new_empty(batch, skip_weight.shape[0], length),
        x.new_empty(batch if save_gate_input else 0, conv_weight.shape[0], length),
    )


@torch.library.custom_op(
    f"{_NAMESPACE}::wavenet_layer_bwd",
    mutates_args=(),
    schema=(
        "(Tensor dx_next, Tensor dskip, Tensor gate_input, Tensor x, Tensor conv_weight, "
        "Tensor residual_weight, Tensor skip_weight, int dilation, Tensor? local_cond, "
        "Tensor? local_weight, Tensor? global_cond, Tensor? global_weight, "
        "bool[11] output_mask) -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
)
def wavenet_layer_bwd(
    dx_next,
    dskip,
    gate_input,
    x,
    conv_weight,
    residual_weight,
    skip_weight,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
    output_mask,
):
    op = "wavenet_layer_bwd"
    _check_layer(
        op,
        x,
        conv_weight,
        residual_weight,
        skip_weight,
        dilation,
        local_cond,
        local_weight,
        global_cond,
        global_weight,
    )
    gate = conv_weight.shape[0] // 2
    for name, t, shape in (
        ("dx_next", dx_next, x.shape),
        ("dskip", dskip, (x.shape[0], skip_weight.shape[0], x.shape[2])),
        ("gate_input", gate_input, (x.shape[0], 2 * gate, x.shape[2])),
    ):
        _check_like(op, name, t, x)
        _check_shape(op, name, t, shape)
    grads = _wavenet_layer_bwd(
        dx_next,
        dskip,
        gate_input,
        x,
        conv_weight.contiguous(),
        residual_weight.contiguous(),
        skip_weight.contiguous(),
        dilation,
        local_cond,
        _contiguous(local_weight),
        global_cond,
        _contiguous(global_weight),
    )
    # the Triton backward computes every gradient; those not asked for are dropped here, as
    # the C++ op does not return them
    return tuple(g if needed else None for g, needed in zip(grads, output_mask, strict=True))


@wavenet_layer_bwd.register_fake
def _(
    dx_next,
    dskip,
    gate_input,
    x,
    conv_weight,
    residual_weight,
    skip_weight,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
    output_mask,
):
    def like(t):
        return None if t is None else t.new_empty(t.shape)

    grads = (
        like(x),
        like(conv_weight),
        conv_weight.new_empty(conv_weight.shape[0]),
        like(residual_weight),
        residual_weight.new_empty(residual_weight.shape[0]),
        like(skip_weight),
        skip_weight.new_empty(skip_weight.shape[0]),
        like(local_cond),
        like(local_weight),
        like(global_cond),
        like(global_weight),
    )
    return tuple(g if needed else None for g, needed in zip(grads, output_mask, strict=True))
