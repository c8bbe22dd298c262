"""Additive coupling (NICE): y_a = x_a, y_b = x_b + m(x_a); inverse x_b = y_b - m(y_a).

Two fused forms:

- `additive_coupling_mlp`: m is an MLP given by its weights and biases. The whole layer (the
  split, every linear layer with its ReLU, the add and the merge) is one kernel call, which
  keeps the hidden activations of narrow networks in cache.
- `additive_coupling`: m is any callable (a user nn.Module). The split feeds m, and one kernel
  call adds m's output into y without materialising x_b or the concatenation.

Both run on the backend chosen by pyreversible.set_backend (see pyreversible._backend).
"""

import torch

from pyreversible import _backend
from pyreversible.reference.additive_coupling import (
    additive_coupling as reference_additive_coupling,
)
from pyreversible.reference.additive_coupling import (
    additive_coupling_mlp as reference_additive_coupling_mlp,
)
from pyreversible.reference.additive_coupling import (
    check_partition,
    check_shift,
    partition_split,
)

_SIGN = {False: 1, True: -1}

# Kernel namespace of each compiled backend: the same op names live in both.
_NAMESPACE = {"cpp": "pyreversible", "triton": "pyreversible_triton"}


def _kernels(backend):
    if backend == "triton":
        # importing the module registers the pyreversible_triton ops
        import pyreversible.kernels.additive_coupling  # noqa: F401
    return getattr(torch.ops, _NAMESPACE[backend])


def partition_layout(shape, partition, parity):
    """The partition as the kernels take it, on the (B, D) view of a tensor of `shape`.

    Returns [kind, parity, dim_a, dim_b, offset_a, offset_b, row_pairs, height] with the
    meaning of pyr_partition in csrc/kernels/include/pyreversible/kernels.h.
    """
    if partition in ("half", "channel"):
        per_channel = shape[2] * shape[3] if partition == "channel" else 1
        first = (shape[1] // 2) * per_channel
        dim = shape[1] * per_channel
        sizes, offsets = (first, dim - first), (0, first)
        a, b = (0, 1) if parity == 0 else (1, 0)
        return [0, parity, sizes[a], sizes[b], offsets[a], offsets[b], 1, 1]
    if partition == "odd-even":
        dim = shape[1]
        dim_a = (dim - parity + 1) // 2
        return [1, parity, dim_a, dim - dim_a, 0, 0, (dim + 1) // 2, 1]
    half = shape[1] * shape[2] * shape[3] // 2
    return [1, parity, half, half, 0, 0, shape[3] // 2, shape[2]]


def _rows(t):
    # (B, D) view of x; image tensors whose strides allow no such view are copied
    return t if t.dim() == 2 else t.reshape(t.shape[0], -1)


class AdditiveCouplingFunction(torch.autograd.Function):
    """y = x with shift added (or subtracted) at the updated part; x and y are (B, D)."""

    @staticmethod
    def forward(ctx, x, shift, config):
        backend, _, layout, _, sign = config
        ctx.config = config
        return _kernels(backend).additive_coupling_fwd(x, shift, layout, sign)

    @staticmethod
    def backward(ctx, dy):
        _, shape, _, partition_args, sign = ctx.config
        _, dy_b = partition_split(dy.reshape(shape), *partition_args)
        dshift = dy_b.reshape(dy.shape[0], -1)
        return dy, dshift if sign == 1 else -dshift, None


class AdditiveCouplingMLPFunction(torch.autograd.Function):
    """The fused MLP coupling layer on the (B, D) view; params are the weights, then biases."""

    @staticmethod
    def forward(ctx, x, config, *params):
        backend, layout, sign = config
        num_layers = len(params) // 2
        weights, biases = params[:num_layers], params[num_layers:]
        y, hidden = _kernels(backend).additive_coupling_mlp_fwd(
            x, weights, biases, layout, sign, True
        )
        ctx.config = config
        ctx.num_layers = num_layers
        # x and y share the conditioning part: either serves the backward, keep the input
        ctx.save_for_backward(x, *weights, *hidden)
        return y

    @staticmethod
    def backward(ctx, dy):
        backend, layout, sign = ctx.config
        x, *rest = ctx.saved_tensors
        weights, hidden = rest[: ctx.num_layers], rest[ctx.num_layers :]
        dx, dweights, dbiases = _kernels(backend).additive_coupling_mlp_bwd(
            dy, x, weights, hidden, layout, sign
        )
        return dx, None, *dweights, *dbiases


def _check_params(op, x, weights, biases, dim_a, dim_b):
    if len(weights) != len(biases) or not weights:
        raise ValueError(
            f"{op}: expected as many biases as weights (at least one), got {len(weights)} "
            f"weights and {len(biases)} biases"
        )
    if len(weights) > 16:
        raise NotImplementedError(f"{op}: at most 16 layers are fused, got {len(weights)}")
    width = dim_a
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise TypeError(f"{op}: weights and biases must be tensors (layer {i})")
        if w.dtype != x.dtype or b.dtype != x.dtype:
            raise TypeError(
                f"{op}: layer {i} has dtypes {w.dtype}/{b.dtype}, expected x's {x.dtype}"
            )
        if w.device != x.device or b.device != x.device:
            raise ValueError(f"{op}: layer {i} is on {w.device}, x on {x.device}")
        if w.dim() != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise ValueError(
                f"{op}: layer {i} must have weight (out, {width}) and bias (out,), got "
                f"{tuple(w.shape)} and {tuple(b.shape)}"
            )
        width = w.shape[0]
    if width != dim_b:
        raise ValueError(
            f"{op}: the last layer must have {dim_b} outputs (the updated part), got {width}"
        )


def additive_coupling_mlp(x, weights, biases, partition="half", parity=0, reverse=False):
    """Additive coupling whose coupling network is an MLP with ReLU hidden layers, fused.

    m(x_a) = W_L relu(... relu(W_1 x_a + b_1) ...) + b_L;  y_a = x_a,  y_b = x_b +- m(x_a).

    Args:
        x: (B, D) for partitions 'half' and 'odd-even', (B, C, H, W) for 'channel' and
            'checkerboard' (whose parts are flattened to vectors for the MLP).
        weights: L tensors (out_l, in_l) in nn.Linear's layout; in_1 = |x_a|, out_L = |x_b|.
        biases: L tensors (out_l,).
        partition: 'half', 'odd-even', 'checkerboard' or 'channel'.
        parity: 0 or 1, which part conditions.
        reverse: False for the forward map, True for its inverse (subtract instead of add).

    Returns:
        y, shaped like x.

    Example:
        >>> x = torch.randn(8, 6)
        >>> ws = [torch.randn(16, 3), torch.randn(3, 16)]
        >>> bs = [torch.zeros(16), torch.zeros(3)]
        >>> y = additive_coupling_mlp(x, ws, bs, "odd-even")
        >>> torch.allclose(additive_coupling_mlp(y, ws, bs, "odd-even", reverse=True), x)
        True
    """
    op = "additive_coupling_mlp"
    check_partition(op, x, partition, parity)
    weights, biases = list(weights), list(biases)
    layout = partition_layout(x.shape, partition, parity)
    _check_params(op, x, weights, biases, layout[2], layout[3])
    backend = _backend.resolve(op, x.device, x.dtype)
    if backend == "reference":
        return reference_additive_coupling_mlp(x, weights, biases, partition, parity, reverse)
    weights = [w.contiguous() for w in weights]
    biases = [b.contiguous() for b in biases]
    params = weights + biases
    sign = _SIGN[bool(reverse)]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        y = AdditiveCouplingMLPFunction.apply(_rows(x), (backend, layout, sign), *params)
    else:
        # inference (an inverse, sampling): no autograd node, no hidden activations kept
        y, _ = _kernels(backend).additive_coupling_mlp_fwd(
            _rows(x), weights, biases, layout, sign, False
        )
    return y.view(x.shape)


def additive_coupling(x, coupling_net, partition="half", parity=0, reverse=False):
    """Additive coupling around any coupling network m, with the add fused into the merge.

    y_a = x_a,  y_b = x_b + m(x_a)  (reverse: y_b = x_b - m(x_a)).

    Args:
        x: (B, D) for partitions 'half' and 'odd-even', (B, C, H, W) for 'channel' and
            'checkerboard'.
        coupling_net: a callable taking x_a and returning a tensor shaped like x_b
            (see pyreversible.reference.partition_split for the parts' shapes).
        partition, parity, reverse: as in additive_coupling_mlp.

    Returns:
        y, shaped like x.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
        >>> x = torch.randn(8, 6)
        >>> y = additive_coupling(x, net, "half")
    """
    op = "additive_coupling"
    check_partition(op, x, partition, parity)
    backend = _backend.resolve(op, x.device, x.dtype)
    if backend == "reference":
        return reference_additive_coupling(x, coupling_net, partition, parity, reverse)
    x_a, x_b = partition_split(x, partition, parity)
    shift = coupling_net(x_a)
    check_shift(op, shift, x_b)
    layout = partition_layout(x.shape, partition, parity)
    config = (backend, x.shape, layout, (partition, parity), _SIGN[bool(reverse)])
    y = AdditiveCouplingFunction.apply(_rows(x), shift.reshape(x.shape[0], -1), config)
    return y.view(x.shape)


def _register_fakes():
    # shapes of the compiled ops' outputs, for torch.compile and FakeTensor tracing
    @torch.library.register_fake("pyreversible::additive_coupling_fwd")
    def _(x, shift, partition, sign):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("pyreversible::additive_coupling_mlp_fwd")
    def _(x, weights, biases, partition, sign, save_hidden):
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        hidden = [x.new_empty(x.shape[0], w.shape[0]) for w in weights[:-1]] if save_hidden else []
        return y, hidden

    @torch.library.register_fake("pyreversible::additive_coupling_mlp_bwd")
    def _(dy, cond, weights, hidden, partition, sign):
        dx = torch.empty_like(dy, memory_format=torch.contiguous_format)
        return (
            dx,
            [torch.empty_like(w) for w in weights],
            [w.new_empty(w.shape[0]) for w in weights],
        )


if _backend._C is not None:
    _register_fakes()
