"""Reversible block (RevNet): y1 = x1 + F(x2), y2 = x2 + G(y1); inverse x2 = y2 - G(y1), ...

The fused kernels do the elementwise part of a block, each element read and written once:

- `reversible_block_fwd`: out = x + sign * shift (a forward addition, or an inverse
  subtraction) written into `out`, which may be `x` itself, so that a sequence of blocks runs
  in one buffer that becomes the next block's input;
- `reversible_block_bwd`: one half-step of the memory-efficient backward, two updates in one
  pass: the inverse subtraction of one half, x = y - shift, and the gradient addition of the
  other half, dx = dy + grad; x may be y and dx may be dy (updated in place).

Every operand is a (B, M) tensor with any strides (a half of a (B, 2C, ...) tensor seen as
(B, 2, M) and indexed at one half is such a view). Operands of another dtype than the output
(F's output under autocast) go through torch's own elementwise ops instead, which promote.

`reversible_block` and `reversible_block_inverse` are a whole block around modules F and G;
pyreversible.nn.ReversibleSequential runs a sequence of them without stored activations.
Runs on the backend chosen by pyreversible.set_backend (see pyreversible._backend).
"""

import torch

from pyreversible import _backend
from pyreversible.reference.reversible_block import (
    check_halves,
    check_shift,
)
from pyreversible.reference.reversible_block import (
    reversible_block as reference_reversible_block,
)
from pyreversible.reference.reversible_block import (
    reversible_block_inverse as reference_reversible_block_inverse,
)

# The compiled backends this op has, per device type (the argument `backends` of resolve).
_BACKENDS = {"cpu": ("cpp", "triton"), "cuda": ("cpp", "triton")}

# Kernel namespace of each compiled backend: the same op names live in both.
_NAMESPACE = {"cpp": "pyreversible", "triton": "pyreversible_triton"}


def _kernels(backend):
    if backend == "triton":
        # importing the module registers the pyreversible_triton ops
        import pyreversible.kernels.reversible_block  # noqa: F401
    return getattr(torch.ops, _NAMESPACE[backend])


def _check_rows(op, out, **operands):
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{op}: outputs must be floating-point (B, M) tensors, got {got}")
    for name, t in operands.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.shape != out.shape:
            raise ValueError(
                f"{op}: {name} must have the output's shape {tuple(out.shape)}, got "
                f"{tuple(t.shape)}"
            )
        if t.device != out.device:
            raise ValueError(f"{op}: {name} is on {t.device}, the output on {out.device}")


def _same_dtype(out, *operands):
    return all(t.dtype == out.dtype for t in operands)


def reversible_block_fwd(x, shift, out, sign=1):
    """out = x + sign * shift, written into `out` (which may be `x`); returns out.

    Args:
        x, shift, out: (B, M), any strides; out may be x itself, but not overlap it otherwise.
        sign: +1 (a forward addition) or -1 (an inverse subtraction).

    Example:
        >>> buf = torch.randn(4, 2, 3)
        >>> reversible_block_fwd(buf[:, 0], torch.ones(4, 3), buf[:, 0])  # in place
    """
    op = "reversible_block_fwd"
    _check_rows(op, out, x=x, shift=shift)
    if sign not in (1, -1) or isinstance(sign, bool):
        raise ValueError(f"{op}: sign must be 1 or -1, got {sign!r}")
    backend = _backend.resolve("reversible_block", out.device, out.dtype, backends=_BACKENDS)
    if backend == "reference" or not _same_dtype(out, x, shift):
        return torch.add(x, shift, alpha=sign, out=out)
    _kernels(backend).reversible_block_fwd(x, shift, out, sign)
    return out


def reversible_block_bwd(y, shift, x, dy, grad, dx):
    """x = y - shift and dx = dy + grad in one pass, written into x and dx; returns (x, dx).

    The backward half-step of a block: with (shift, grad) = (G(y1), (dG/dy1)^T dy2) it
    reconstructs x2 and accumulates dy1; with (F(x2), (dF/dx2)^T dy1) it reconstructs x1 and
    gives dx2.

    Args:
        y, shift, x: (B, M), any strides; x may be y itself (updated in place).
        dy, grad, dx: (B, M'), any strides; dx may be dy itself.

    Example:
        >>> y, dy = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
        >>> s, g = torch.randn(4, 3), torch.randn(4, 3)
        >>> reversible_block_bwd(y[:, 1], s, y[:, 1], dy[:, 0], g, dy[:, 0])
    """
    op = "reversible_block_bwd"
    _check_rows(op, x, y=y, shift=shift)
    _check_rows(op, dx, dy=dy, grad=grad)
    if dx.device != x.device:
        raise ValueError(f"{op}: dx is on {dx.device}, x on {x.device}")
    backend = _backend.resolve("reversible_block", x.device, x.dtype, backends=_BACKENDS)
    fused = backend != "reference" and x.shape == dx.shape
    if not fused or not _same_dtype(x, y, shift, dy, grad, dx):
        torch.sub(y, shift, out=x)
        torch.add(dy, grad, out=dx)
        return x, dx
    _kernels(backend).reversible_block_bwd(y, shift, x, dy, grad, dx)
    return x, dx


def step_back(backend):
    """reversible_block_bwd for a loop over many blocks: the backend resolved once, for x's
    device and dtype, and the argument checks left to the kernels (the caller's shapes are
    consistent by construction); operands of another dtype go through reversible_block_bwd.

    Returns a function (y, shift, x, dy, grad, dx) -> None.
    """
    if backend == "reference":
        return reversible_block_bwd
    kernel = _kernels(backend).reversible_block_bwd

    def run(y, shift, x, dy, grad, dx):
        if _same_dtype(x, y, shift, dy, grad, dx) and x.shape == dx.shape:
            kernel(y, shift, x, dy, grad, dx)
        else:
            reversible_block_bwd(y, shift, x, dy, grad, dx)

    return run


def resolve(device, dtype):
    """The backend that runs the reversible_block kernels on `device` for `dtype`."""
    return _backend.resolve("reversible_block", device, dtype, backends=_BACKENDS)


def halves(t):
    """The two halves of t (B, 2C, ...) along dim 1 as (B, C * ...) tensors (views if it can)."""
    return t.reshape(t.shape[0], 2, -1).unbind(1)


def reversible_block(x, f, g):
    """A reversible block: y1 = x1 + F(x2), y2 = x2 + G(y1), with x = (x1, x2) along dim 1.

    With autograd recording (x or F's and G's parameters requiring grad) this is the reference
    composition, which autograd differentiates as usual; without it, the two additions run
    fused into one output buffer.

    Args:
        x: (B, 2C, ...).
        f, g: callables mapping a (B, C, ...) tensor to one of the same shape.

    Returns:
        y: (B, 2C, ...), contiguous.

    Example:
        >>> from torch import nn
        >>> f, g = nn.Linear(3, 3), nn.Linear(3, 3)
        >>> y = reversible_block(torch.randn(5, 6), f, g)
    """
    op = "reversible_block"
    check_halves(op, x)
    if torch.is_grad_enabled():
        return reference_reversible_block(x, f, g)
    x1, x2 = x.chunk(2, dim=1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    out1, out2 = halves(out)
    shift = f(x2)
    check_shift(op, "f", shift, x2)
    reversible_block_fwd(x1.reshape(out1.shape), shift.reshape(out1.shape), out1)
    shift = g(out1.view(x1.shape))
    check_shift(op, "g", shift, x1)
    reversible_block_fwd(x2.reshape(out2.shape), shift.reshape(out2.shape), out2)
    return out


def reversible_block_inverse(y, f, g):
    """The inverse of reversible_block: x2 = y2 - G(y1), x1 = y1 - F(x2).

    Args:
        y: (B, 2C, ...).
        f, g: as in reversible_block.

    Returns:
        x: (B, 2C, ...), contiguous.
    """
    op = "reversible_block_inverse"
    check_halves(op, y)
    if torch.is_grad_enabled():
        return reference_reversible_block_inverse(y, f, g)
    y1, y2 = y.chunk(2, dim=1)
    out = torch.empty_like(y, memory_format=torch.contiguous_format)
    out1, out2 = halves(out)
    shift = g(y1)
    check_shift(op, "g", shift, y1)
    reversible_block_fwd(y2.reshape(out2.shape), shift.reshape(out2.shape), out2, sign=-1)
    shift = f(out2.view(y2.shape))
    check_shift(op, "f", shift, y2)
    reversible_block_fwd(y1.reshape(out1.shape), shift.reshape(out1.shape), out1, sign=-1)
    return out


def _register_fakes():
    # the ops only write into tensors they are given: nothing to allocate under FakeTensor
    @torch.library.register_fake("pyreversible::reversible_block_fwd")
    def _(x, shift, out, sign):
        return None

    @torch.library.register_fake("pyreversible::reversible_block_bwd")
    def _(y, shift, x, dy, grad, dx):
        return None


if _backend._C is not None and hasattr(torch.ops.pyreversible, "reversible_block_fwd"):
    _register_fakes()
