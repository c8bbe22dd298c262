"""Reversible blocks (RevNet) and a sequence of them that trains without stored activations.

A block maps x = (x1, x2), the halves of x along dim 1, to y1 = x1 + F(x2), y2 = x2 + G(y1),
and y back to x2 = y2 - G(y1), x1 = y1 - F(x2). ReversibleSequential(memory_efficient=True)
keeps only its final output for backward: one autograd.Function covers the whole sequence,
and its backward walks the blocks in reverse, reconstructing each block's input from its
output with the fused kernels of pyreversible.ops.reversible_block while it recomputes F and
G with autograd recording and backpropagates through them. Activation memory is then that of
one block, whatever the depth.

What the recomputation preserves, so that its gradients are ordinary autograd's:

- random numbers: the CPU generator's state (and the CUDA generator's of x's device) is saved
  before each call of F and of G in the forward and set again before its recomputation, so
  dropout draws the same mask; the generators are put back as they were after the backward;
- buffers: a module's buffers that a call of F or G changes (batch norm's running statistics,
  num_batches_tracked, spectral norm's power-iteration vector, any buffer written in place or
  reassigned) are kept as they were before that call, and the recomputation runs on a copy of
  those values, which is then dropped. So the recomputation sees what the forward saw, and
  every buffer ends as after one ordinary forward (batch norm is not updated twice). This
  needs no knowledge of the module (no momentum trick): whether a call changed a buffer is
  read from its identity, version counter and values (a copy taken before the call, compared
  after it); buffers it leaves alone cost nothing after the call. The copies kept are the
  size of the changed buffers, independent of the batch;
- autocast: the recomputation runs under the autocast state (per device type, enabled and
  dtype) of the forward, wherever the backward runs;
- gradients: the parameters of F and G are inputs of the autograd.Function, and its backward
  returns their gradients (computed with torch.autograd.grad, never accumulated into .grad
  from inside), so `.backward()`, `torch.autograd.grad` and DDP's gradient hooks see one
  gradient per parameter, exactly as in ordinary autograd; an input that does not require
  grad gets none.

Known costs: the node returns every parameter's gradient at its end, so DDP's communication
does not overlap the stack's backward, and with zero_grad(set_to_none=False) AccumulateGrad
adds them into existing .grad tensors (a transient second copy of the gradients).

F and G must be deterministic functions of their input, their parameters, their buffers and
the random numbers they draw, and must not change their input in place. check_reconstruction
verifies the first of these at run time.
"""

import contextlib

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from pyreversible.ops.reversible_block import (
    halves,
    resolve,
    reversible_block,
    reversible_block_fwd,
    reversible_block_inverse,
    step_back,
)
from pyreversible.reference.reversible_block import check_halves, check_shift

# Default tolerances of the drift check, per dtype: the relative error of a reconstructed
# input (see _fingerprint) above which it raises. A block's inverse loses a few units of
# rounding of |F| + |G| relative to |x| (float32: ~1e-7), compounded over the blocks behind it
# and amplified by F's and G's Lipschitz constants; the defaults leave two to three orders of
# magnitude over that for a few hundred well-conditioned blocks.
RECONSTRUCTION_TOLERANCES = {
    torch.float64: 1e-9,
    torch.float32: 1e-3,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-2,
}


class ReversibleBlock(nn.Module):
    """A reversible block: y1 = x1 + f(x2), y2 = x2 + g(y1), with x = (x1, x2) along dim 1.

    Args:
        f, g: modules mapping a (B, C, ...) tensor to one of the same shape.

    Shapes: x and y are (B, 2C, ...).

    Example:
        >>> block = ReversibleBlock(nn.Linear(4, 4), nn.Linear(4, 4))
        >>> x = torch.randn(3, 8)
        >>> torch.allclose(block.inverse(block(x)), x, atol=1e-5)
        True
    """

    def __init__(self, f, g):
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, x):
        return reversible_block(x, self.f, self.g)

    def inverse(self, y):
        """y (B, 2C, ...) -> x, the exact inverse of forward (up to rounding)."""
        return reversible_block_inverse(y, self.f, self.g)


def _rng_state(device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device):
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def _buffer_snapshot(module):
    # every buffer with its version and a copy, before a call that may change it
    return [
        (m, name, b, b._version, b.clone())
        for m in module.modules()
        for name, b in m._buffers.items()
        if b is not None
    ]


def _changed_buffers(snapshot):
    # the (module, name, value before the call) of the buffers the call wrote or reassigned
    return [
        (m, name, before)
        for m, name, b, version, before in snapshot
        # batch norm's CPU kernel writes its running statistics without bumping their
        # version counter, so the values are compared as well
        if m._buffers.get(name) is not b or b._version != version or not torch.equal(b, before)
    ]


def _autocast_state():
    return [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda")]


@contextlib.contextmanager
def _replay(rng, buffers, autocast_state, device):
    # the conditions of one call of F or G in the forward, for its recomputation
    current = [(m, name, m._buffers[name]) for m, name, _ in buffers]
    try:
        for m, name, before in buffers:
            # a copy, so that a second backward (retain_graph) replays the same values
            m._buffers[name] = before.clone()
        if rng is not None:
            _set_rng_state(rng, device)
        with contextlib.ExitStack() as stack:
            for device_type, enabled, dtype in autocast_state:
                if device_type == "cuda" and not torch.cuda.is_available():
                    continue
                if enabled or torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled))
            with torch.enable_grad():
                yield
    finally:
        for m, name, value in current:
            m._buffers[name] = value


_PROJECTIONS = {}


def _projection(numel, device, dtype):
    # a fixed random vector of `numel` entries, the same for every call
    key = (numel, device, dtype)
    if key not in _PROJECTIONS:
        generator = torch.Generator().manual_seed(0x5EED)
        v = torch.randn(numel, generator=generator, dtype=torch.float64)
        _PROJECTIONS[key] = (v.to(device=device, dtype=dtype), v.norm().item())
    return _PROJECTIONS[key]


def _fingerprint(x):
    """Per row of x (B, ...): its projection on a fixed random vector v, and its norm.

    |v . x' - v . x| <= |v| |x' - x|, so the projection's change, divided by |v| |x|, bounds
    from below the relative error of a reconstruction x' of x: two numbers per row to store,
    instead of the row.
    """
    flat = x.reshape(x.shape[0], -1)
    v, _ = _projection(flat.shape[1], flat.device, flat.dtype)
    return torch.stack([flat @ v, flat.norm(dim=1)]).float()


def _check_drift(index, x, fingerprint, tolerance):
    flat = x.reshape(x.shape[0], -1)
    _, v_norm = _projection(flat.shape[1], flat.device, flat.dtype)
    projection = (flat @ _projection(flat.shape[1], flat.device, flat.dtype)[0]).float()
    scale = v_norm * fingerprint[1].clamp_min(torch.finfo(torch.float32).tiny)
    error = ((projection - fingerprint[0]).abs() / scale).max().item()
    if not error <= tolerance:
        raise RuntimeError(
            f"ReversibleSequential: the input of block {index} was reconstructed with relative "
            f"error {error:.3g}, above the tolerance {tolerance:.3g}: f or g of this block or a "
            "later one did not compute the same function in the backward as in the forward "
            "(state changed in between, or a non-invertible overflow); its gradients are wrong"
        )


class _Record:
    # what the backward needs of one block: generator states and changed buffers before each
    # call of f and g, and the fingerprint of the block's input
    __slots__ = ("rng_f", "rng_g", "buffers_f", "buffers_g", "fingerprint")


def _run_blocks(blocks, x, records=None, preserve_rng_state=True, check=False):
    # the forward of the sequence in one output buffer, each block updating it in place
    half_shape = (x.shape[0], x.shape[1] // 2, *x.shape[2:])
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    out1, out2 = halves(out)
    y1, y2 = halves(x)
    for i, block in enumerate(blocks):
        if records is not None:
            record = _Record()
            record.fingerprint = _fingerprint(x if i == 0 else out) if check else None
            record.rng_f = _rng_state(x.device) if preserve_rng_state else None
            snapshot = _buffer_snapshot(block.f)
        shift = block.f(y2.view(half_shape))
        check_shift("ReversibleSequential", f"f of block {i}", shift, y2.view(half_shape))
        if records is not None:
            record.buffers_f = _changed_buffers(snapshot)
            record.rng_g = _rng_state(x.device) if preserve_rng_state else None
        reversible_block_fwd(y1, shift.reshape(y1.shape), out1)
        if records is not None:
            snapshot = _buffer_snapshot(block.g)
        shift = block.g(out1.view(half_shape))
        check_shift("ReversibleSequential", f"g of block {i}", shift, out1.view(half_shape))
        reversible_block_fwd(y2, shift.reshape(y2.shape), out2)
        if records is not None:
            record.buffers_g = _changed_buffers(snapshot)
            records.append(record)
        y1, y2 = out1, out2
    return out


def _grad(output, inputs, cotangent):
    # d<output, cotangent>/d inputs, None for an input output does not depend on
    if not output.requires_grad:
        return [None] * len(inputs)
    return torch.autograd.grad(
        output, inputs, cotangent.to(output.dtype).reshape(output.shape), allow_unused=True
    )


class _ReversibleSequentialFunction(torch.autograd.Function):
    """The whole sequence as one autograd node that saves only its output.

    inputs: x, the ReversibleSequential, then every parameter of its blocks that requires
    grad (each once), whose gradients the backward returns.
    """

    @staticmethod
    def forward(ctx, x, seq, *params):
        records = []
        out = _run_blocks(seq.blocks, x, records, seq.preserve_rng_state, seq.check_reconstruction)
        ctx.seq = seq
        ctx.records = records
        ctx.autocast = _autocast_state()
        ctx.params = params
        ctx.half_shape = (x.shape[0], x.shape[1] // 2, *x.shape[2:])
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        seq, records, half_shape = ctx.seq, ctx.records, ctx.half_shape
        device = y.device
        index = {id(p): k for k, p in enumerate(ctx.params)}
        param_grads = [None] * len(ctx.params)
        tolerance = seq.reconstruction_tolerance or RECONSTRUCTION_TOLERANCES.get(y.dtype, 1e-3)

        def accumulate(params, grads):
            for p, grad in zip(params, grads, strict=True):
                k = index[id(p)]
                if grad is not None:
                    param_grads[k] = grad if param_grads[k] is None else param_grads[k] + grad

        # y and dy are the caller's; the input and its gradient are rebuilt in two buffers of
        # ours, each block's step overwriting the one after it in place
        x = torch.empty_like(y, memory_format=torch.contiguous_format)
        dx = torch.empty_like(y, memory_format=torch.contiguous_format)
        x1, x2 = halves(x)
        dx1, dx2 = halves(dx)
        y1, y2 = halves(y)
        dy1, dy2 = halves(dy)
        rng_before = _rng_state(device) if seq.preserve_rng_state else None
        fused_step_back = step_back(resolve(device, y.dtype))
        try:
            for i in reversed(range(len(seq.blocks))):
                block, record = seq.blocks[i], records[i]

                # G at y1: reconstruct x2 = y2 - G(y1) and accumulate dy1 += (dG/dy1)^T dy2
                g_params = [p for p in block.g.parameters() if id(p) in index]
                with _replay(record.rng_g, record.buffers_g, ctx.autocast, device):
                    z = y1.view(half_shape).detach().requires_grad_()
                    shift = block.g(z)
                dz, *grads = _grad(shift, [z, *g_params], dy2)
                accumulate(g_params, grads)
                if dz is None:
                    dz = torch.zeros_like(z)
                fused_step_back(
                    y2, shift.detach().reshape(y2.shape), x2, dy1, dz.reshape(dy1.shape), dx1
                )
                del shift, dz, z

                # F at x2: reconstruct x1 = y1 - F(x2) and dx2 = dy2 + (dF/dx2)^T dy1
                f_params = [p for p in block.f.parameters() if id(p) in index]
                with _replay(record.rng_f, record.buffers_f, ctx.autocast, device):
                    z = x2.view(half_shape).detach().requires_grad_()
                    shift = block.f(z)
                dz, *grads = _grad(shift, [z, *f_params], dx1)
                accumulate(f_params, grads)
                if dz is None:
                    dz = torch.zeros_like(z)
                fused_step_back(
                    y1, shift.detach().reshape(y1.shape), x1, dy2, dz.reshape(dy2.shape), dx2
                )
                del shift, dz, z

                if record.fingerprint is not None:
                    _check_drift(i, x, record.fingerprint, tolerance)
                y1, y2, dy1, dy2 = x1, x2, dx1, dx2
        finally:
            if rng_before is not None:
                _set_rng_state(rng_before, device)
        return dx.view(y.shape) if ctx.needs_input_grad[0] else None, None, *param_grads


@torch._dynamo.disable
def _memory_efficient(seq, x, params):
    # a graph break under torch.compile: dynamo cannot trace a backward that calls autograd
    return _ReversibleSequentialFunction.apply(x, seq, *params)


class ReversibleSequential(nn.Module):
    """A sequence of reversible blocks; with memory_efficient=True its training keeps no
    activations: y = block_n(... block_1(x)), x recomputed block by block from y in backward.

    Args:
        *blocks: ReversibleBlock modules (any module with `f` and `g` submodules).
        memory_efficient: True keeps only the final output for backward, whatever the depth,
            and recomputes every block's input and F and G in the backward (about 4/3 of the
            FLOPs of ordinary training); False is ordinary autograd, for comparison.
        check_reconstruction: in backward, compare each reconstructed block input against a
            fingerprint stored in the forward (two numbers per sample and block) and raise
            RuntimeError with the block index and the error when the relative error passes
            `reconstruction_tolerance`. Off by default (it costs a reduction over x per block).
        reconstruction_tolerance: the drift check's tolerance; None takes
            RECONSTRUCTION_TOLERANCES for x's dtype.
        preserve_rng_state: save and restore the random generators around each F and G, so
            that dropout in them recomputes the same mask (as torch.utils.checkpoint does).

    Shapes: x and y are (B, 2C, ...).

    Example:
        >>> def mlp():
        ...     return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
        >>> net = ReversibleSequential(*[ReversibleBlock(mlp(), mlp()) for _ in range(16)])
        >>> x = torch.randn(32, 128, requires_grad=True)
        >>> net(x).square().mean().backward()
        >>> torch.allclose(net.inverse(net(x)), x, atol=1e-4)
        True
    """

    def __init__(
        self,
        *blocks,
        memory_efficient=True,
        check_reconstruction=False,
        reconstruction_tolerance=None,
        preserve_rng_state=True,
    ):
        super().__init__()
        for i, block in enumerate(blocks):
            if not (isinstance(block, nn.Module) and hasattr(block, "f") and hasattr(block, "g")):
                raise TypeError(
                    f"ReversibleSequential: block {i} must be a ReversibleBlock (a module with "
                    f"f and g), got {type(block).__name__}"
                )
        self.blocks = nn.ModuleList(blocks)
        self.memory_efficient = bool(memory_efficient)
        self.check_reconstruction = bool(check_reconstruction)
        self.reconstruction_tolerance = reconstruction_tolerance
        self.preserve_rng_state = bool(preserve_rng_state)

    def forward(self, x):
        check_halves("ReversibleSequential", x)
        if not self.blocks:
            return x
        if not self.memory_efficient:
            for block in self.blocks:
                x = block(x)
            return x
        params = list({id(p): p for p in self.blocks.parameters() if p.requires_grad}.values())
        if torch.is_grad_enabled() and (x.requires_grad or params):
            return _memory_efficient(self, x, params)
        with torch.no_grad():
            return _run_blocks(self.blocks, x)

    def inverse(self, y):
        """y (B, 2C, ...) -> x, the inverse of forward (up to rounding)."""
        check_halves("ReversibleSequential.inverse", y)
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y

    def extra_repr(self):
        return (
            f"memory_efficient={self.memory_efficient}, "
            f"check_reconstruction={self.check_reconstruction}"
        )
