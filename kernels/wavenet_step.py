"""Triton kernel of fast WaveNet generation, registered as torch.ops.pyreversible_triton.

The two ops have the schemas and the semantics of their C++ twins in csrc/torch/wavenet_step.cpp
(pyreversible/reference/wavenet_step.py is the definition):

- `wavenet_step`: one step of the whole network for every batch row; (samples, logits).
- `wavenet_generate`: N steps, each feeding its samples to the next; samples (N, B).

One launch runs every step: a program owns one batch row, which is independent of the others
through the whole network and through its queue, and loops over steps, layers and blocks of
output channels inside the kernel. The vectors a step passes from one product to the next
(the layer input h, z, the gate, the skip sum, the head's activations, the logits) go through a
small per-row scratch in global memory, which stays in L1/L2, with a barrier between a write and
the reads of other threads; the weights, stacked per kind over the layers once per call, are
read in (BLOCK_I, BLOCK_O) tiles. Sums, the softmax and the CDF run in float32 (float64 for
float64 weights); the queue and the logits are stored in the weights' dtype.
"""

import torch
import triton
import triton.language as tl

from pyreversible.reference.wavenet_step import WEIGHTS_PER_LAYER, queue_layout

from .additive_coupling import _accumulator, _block, _device_guard

_NAMESPACE = "pyreversible_triton"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _product(acc, x_ptr, n_in, w_ptr, ld_w, outs, out_mask, BLOCK_I: tl.constexpr):
    # acc[o] + sum_i x[i] w[i, o] over the n_in inputs, BLOCK_I at a time; w is (n_in, ld_w)
    for i0 in range(0, n_in, BLOCK_I):
        ins = i0 + tl.arange(0, BLOCK_I)
        in_mask = ins < n_in
        x = tl.load(x_ptr + ins, mask=in_mask, other=0).to(acc.dtype)
        w = tl.load(
            w_ptr + ins[:, None] * ld_w + outs[None, :],
            mask=in_mask[:, None] & out_mask[None, :],
            other=0,
        )
        acc += tl.sum(x[:, None] * w.to(acc.dtype), axis=0)
    return acc


@triton.jit
def _wavenet_step_fwd_kernel(
    # pointers: inputs, the queue (updated), outputs, per-row scratch, the stacked weights and
    # the layers' ring buffers; cond_ptr and logits_ptr are read/written only when asked
    x_ptr,
    uniform_ptr,
    queue_ptr,
    cond_ptr,
    samples_ptr,
    logits_ptr,
    scratch_ptr,
    embedding_ptr,
    conv_ptr,
    conv_bias_ptr,
    residual_ptr,
    residual_bias_ptr,
    skip_ptr,
    skip_bias_ptr,
    head_ptr,
    head_bias_ptr,
    out_ptr,
    out_bias_ptr,
    offsets_ptr,
    dilations_ptr,
    # sizes: batch, classes C, channels R, G, S, taps K, layers L, queue rows Q, the first
    # time step, the steps to run, the temperature
    batch,
    classes,
    residual,
    gate,
    skip,
    taps,
    layers,
    queue_rows,
    position,
    steps,
    temperature,
    # the scratch of one row: h (R), z (2G), a (G), skip sum (S), head activations (S), logits
    # (C), at these offsets, stride_scratch elements per row
    off_z,
    off_a,
    off_skip,
    off_hidden,
    off_logits,
    stride_scratch,
    HAS_COND: tl.constexpr,
    WRITE_LOGITS: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    scratch = scratch_ptr + row * stride_scratch
    h_s = scratch
    z_s = scratch + off_z
    a_s = scratch + off_a
    skip_s = scratch + off_skip
    hidden_s = scratch + off_hidden
    logits_s = scratch + off_logits
    queue = queue_ptr + row * queue_rows * residual
    gg = 2 * gate
    classes_all = tl.arange(0, BLOCK_C)
    class_mask = classes_all < classes
    # an index out of [0, C) is refused by the op before the launch; masked here all the same,
    # so that the embedding is never read outside its rows
    sample = tl.load(x_ptr + row)

    for s in range(steps):
        t = position + s
        # h_0 = embedding[x] (zeros at t = 0); the skip sum starts at zero
        valid = (sample >= 0) & (sample < classes) & (t > 0)
        # the row read is always inside the embedding; an invalid one is replaced by zeros
        safe = tl.where(valid, sample, 0)
        for o0 in range(0, residual, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            mask = outs < residual
            h = tl.load(embedding_ptr + safe * residual + outs, mask=mask, other=0)
            tl.store(h_s + outs, tl.where(valid, h.to(ACC_DTYPE), 0.0), mask=mask)
        for o0 in range(0, skip, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            tl.store(skip_s + outs, tl.zeros((BLOCK_O,), ACC_DTYPE), mask=outs < skip)
        tl.debug_barrier()

        for layer in range(layers):
            offset = tl.load(offsets_ptr + layer)
            dilation = tl.load(dilations_ptr + layer)
            length = (taps - 1) * dilation
            now = t % tl.maximum(length, 1)
            conv = conv_ptr + tl.cast(layer, tl.int64) * taps * residual * gg
            # z = b + sum over the older taps (queue rows) and the newest (h) of conv[k]^T tap
            for o0 in range(0, gg, BLOCK_O):
                outs = o0 + tl.arange(0, BLOCK_O)
                mask = outs < gg
                acc = tl.load(conv_bias_ptr + layer * gg + outs, mask=mask, other=0).to(ACC_DTYPE)
                if HAS_COND:
                    cond_row = cond_ptr + ((s * batch + row) * layers + layer) * gg
                    acc += tl.load(cond_row + outs, mask=mask, other=0).to(ACC_DTYPE)
                for k in range(taps - 1):
                    source = (now + length - (taps - 1 - k) * dilation) % tl.maximum(length, 1)
                    acc = _product(
                        acc,
                        queue + (offset + source) * residual,
                        residual,
                        conv + k * residual * gg,
                        gg,
                        outs,
                        mask,
                        BLOCK_I,
                    )
                acc = _product(
                    acc, h_s, residual, conv + (taps - 1) * residual * gg, gg, outs, mask, BLOCK_I
                )
                tl.store(z_s + outs, acc, mask=mask)
            tl.debug_barrier()

            # the gate; then the queue row of the oldest tap, read above, takes h
            for o0 in range(0, gate, BLOCK_O):
                outs = o0 + tl.arange(0, BLOCK_O)
                mask = outs < gate
                zf = tl.load(z_s + outs, mask=mask, other=0)
                zg = tl.load(z_s + gate + outs, mask=mask, other=0)
                # tanh(v) = 2 sigmoid(2v) - 1, from one exponential of -|2v| that cannot overflow
                e2 = tl.exp(-2.0 * tl.abs(zf))
                th = (1.0 - e2) / (1.0 + e2)
                th = tl.where(zf < 0, -th, th)
                sg = 1.0 / (1.0 + tl.exp(-zg))
                tl.store(a_s + outs, th * sg, mask=mask)
            if length > 0:
                for o0 in range(0, residual, BLOCK_O):
                    outs = o0 + tl.arange(0, BLOCK_O)
                    mask = outs < residual
                    h = tl.load(h_s + outs, mask=mask, other=0)
                    tl.store(
                        queue + (offset + now) * residual + outs,
                        h.to(queue_ptr.dtype.element_ty),
                        mask=mask,
                    )
            tl.debug_barrier()

            # skip += skip^T a + b_s;  h += residual^T a + b_r
            for o0 in range(0, skip, BLOCK_O):
                outs = o0 + tl.arange(0, BLOCK_O)
                mask = outs < skip
                acc = tl.load(skip_bias_ptr + layer * skip + outs, mask=mask, other=0)
                acc = _product(
                    acc.to(ACC_DTYPE),
                    a_s,
                    gate,
                    skip_ptr + tl.cast(layer, tl.int64) * gate * skip,
                    skip,
                    outs,
                    mask,
                    BLOCK_I,
                )
                acc += tl.load(skip_s + outs, mask=mask, other=0)
                tl.store(skip_s + outs, acc, mask=mask)
            for o0 in range(0, residual, BLOCK_O):
                outs = o0 + tl.arange(0, BLOCK_O)
                mask = outs < residual
                acc = tl.load(residual_bias_ptr + layer * residual + outs, mask=mask, other=0)
                acc = _product(
                    acc.to(ACC_DTYPE),
                    a_s,
                    gate,
                    residual_ptr + tl.cast(layer, tl.int64) * gate * residual,
                    residual,
                    outs,
                    mask,
                    BLOCK_I,
                )
                acc += tl.load(h_s + outs, mask=mask, other=0)
                tl.store(h_s + outs, acc, mask=mask)
            tl.debug_barrier()

        # the head: relu(skip) -> head 1x1 -> relu -> out 1x1
        for o0 in range(0, skip, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            mask = outs < skip
            v = tl.load(skip_s + outs, mask=mask, other=0)
            tl.store(skip_s + outs, tl.where(v < 0, 0.0, v), mask=mask)
        tl.debug_barrier()
        for o0 in range(0, skip, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            mask = outs < skip
            acc = tl.load(head_bias_ptr + outs, mask=mask, other=0).to(ACC_DTYPE)
            acc = _product(acc, skip_s, skip, head_ptr, skip, outs, mask, BLOCK_I)
            tl.store(hidden_s + outs, tl.where(acc < 0, 0.0, acc), mask=mask)
        tl.debug_barrier()
        for o0 in range(0, classes, BLOCK_O):
            outs = o0 + tl.arange(0, BLOCK_O)
            mask = outs < classes
            acc = tl.load(out_bias_ptr + outs, mask=mask, other=0).to(ACC_DTYPE)
            acc = _product(acc, hidden_s, skip, out_ptr, classes, outs, mask, BLOCK_I)
            tl.store(logits_s + outs, acc, mask=mask)
        tl.debug_barrier()

        # sample = #{c : cdf[c] < u}, clamped to C - 1, cdf = cumsum(softmax(logits / T))
        logits = tl.load(logits_s + classes_all, mask=class_mask, other=0)
        if WRITE_LOGITS:
            if s == steps - 1:
                tl.store(
                    logits_ptr + row * classes + classes_all,
                    logits.to(logits_ptr.dtype.element_ty),
                    mask=class_mask,
                )
        # the logits as the reference's softmax sees them: rounded to the weights' dtype
        v = logits.to(logits_ptr.dtype.element_ty).to(ACC_DTYPE) / temperature
        v = tl.where(class_mask, v, -float("inf"))
        e = tl.exp(v - tl.max(v, axis=0))
        e = tl.where(class_mask, e, 0.0)
        cdf = tl.cumsum(e / tl.sum(e, axis=0), axis=0)
        u = tl.load(uniform_ptr + s * batch + row).to(ACC_DTYPE)
        count = tl.sum(((cdf < u) & class_mask).to(tl.int64), axis=0)
        sample = tl.minimum(count, classes - 1)
        tl.store(samples_ptr + s * batch + row, sample)
        tl.debug_barrier()


def _wavenet_step_fwd(x, uniform, queue, position, weights, dilations, temperature, cond, steps):
    """Runs `steps` steps (uniform (steps, B), cond (steps, B, L, 2G) or None); returns samples
    (steps, B) and the last step's logits (B, C)."""
    embedding = weights[0]
    classes, residual = embedding.shape
    taps, _, gg = weights[1].shape
    gate, skip = gg // 2, weights[5].shape[1]
    layers = len(dilations)
    batch = x.shape[0]
    per_layer = [weights[1 + i :: WEIGHTS_PER_LAYER][:layers] for i in range(WEIGHTS_PER_LAYER)]
    conv, conv_bias, res, res_bias, skip_w, skip_bias = (torch.stack(t) for t in per_layer)
    head, head_bias, out, out_bias = (w.contiguous() for w in weights[-4:])
    layout = queue_layout(taps, dilations)
    offsets = torch.tensor([o for o, _ in layout], dtype=torch.int64, device=x.device)
    dilation_t = torch.tensor(list(dilations), dtype=torch.int64, device=x.device)
    acc_dtype = torch.float64 if embedding.dtype == torch.float64 else torch.float32

    # per row: h (R), z (2G), a (G), skip (S), hidden (S), logits (C), each at a 16-multiple
    sizes = [residual, gg, gate, skip, skip, classes]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + triton.cdiv(size, 16) * 16)
    scratch = torch.empty(batch, starts[-1], dtype=acc_dtype, device=x.device)
    samples = torch.empty(steps, batch, dtype=torch.int64, device=x.device)
    logits = embedding.new_empty(batch, classes)
    with _device_guard(x):
        _wavenet_step_fwd_kernel[(batch,)](
            x.contiguous(),
            uniform.contiguous(),
            queue,
            cond.contiguous() if cond is not None else scratch,
            samples,
            logits,
            scratch,
            embedding,
            conv,
            conv_bias,
            res,
            res_bias,
            skip_w,
            skip_bias,
            head,
            head_bias,
            out,
            out_bias,
            offsets,
            dilation_t,
            batch,
            classes,
            residual,
            gate,
            skip,
            taps,
            layers,
            queue.shape[1],
            position,
            steps,
            float(temperature),
            *starts[1:6],
            starts[-1],
            HAS_COND=cond is not None,
            WRITE_LOGITS=True,
            BLOCK_I=_block(max(residual, gate, skip), 16, 64),
            BLOCK_O=_block(max(residual, gg, skip, classes), 16, 64),
            BLOCK_C=_block(classes, 16, 1 << 20),
            ACC_DTYPE=_accumulator(embedding.dtype),
        )
    return samples, logits


def _check(op, x, uniform, queue, position, weights, dilations, temperature, cond, steps):
    # the checks of set_params in csrc/torch/wavenet_step.cpp, through the ops layer's
    from pyreversible.ops.wavenet_step import check_args

    if not weights or weights[0].dtype not in _DTYPES:
        dtype = weights[0].dtype if weights else None
        raise TypeError(
            f"{op}: expected float32, float64, float16 or bfloat16 weights, got {dtype}"
        )
    check_args(op, x, uniform, queue, position, weights, dilations, temperature, cond, steps)


_SCHEMA = (
    "(Tensor x, Tensor uniform, Tensor(a!) queue, int position, Tensor[] weights, int[] dilations, "
    "float temperature, Tensor? cond)"
)


@torch.library.custom_op(
    f"{_NAMESPACE}::wavenet_step", mutates_args={"queue"}, schema=_SCHEMA + " -> (Tensor, Tensor)"
)
def wavenet_step(x, uniform, queue, position, weights, dilations, temperature, cond):
    op = "wavenet_step"
    _check(op, x, uniform, queue, position, weights, list(dilations), temperature, cond, None)
    samples, logits = _wavenet_step_fwd(
        x,
        uniform[None],
        queue,
        position,
        weights,
        dilations,
        temperature,
        None if cond is None else cond[None],
        1,
    )
    return samples[0], logits


@wavenet_step.register_fake
def _(x, uniform, queue, position, weights, dilations, temperature, cond):
    return x.new_empty(x.shape[0]), weights[0].new_empty(x.shape[0], weights[0].shape[0])


@torch.library.custom_op(
    f"{_NAMESPACE}::wavenet_generate", mutates_args={"queue"}, schema=_SCHEMA + " -> Tensor"
)
def wavenet_generate(x, uniform, queue, position, weights, dilations, temperature, cond):
    op = "wavenet_generate"
    steps = uniform.shape[0] if uniform.dim() == 2 else -1
    _check(op, x, uniform, queue, position, weights, list(dilations), temperature, cond, steps)
    samples, _ = _wavenet_step_fwd(
        x, uniform, queue, position, weights, dilations, temperature, cond, steps
    )
    return samples


@wavenet_generate.register_fake
def _(x, uniform, queue, position, weights, dilations, temperature, cond):
    return x.new_empty(uniform.shape[0], x.shape[0])
