"""The reversible block (RevNet) in pure PyTorch: the definition every kernel is tested against.

x = (x1, x2), split in halves along dim 1:  y1 = x1 + F(x2),  y2 = x2 + G(y1);
inverse:  x2 = y2 - G(y1),  x1 = y1 - F(x2).

The kernels do only the elementwise part of a block; F and G are any modules. Their two
functions are the steps of a memory-efficient sequence of blocks:

- `reversible_block_fwd`: one addition of the forward, out = x + sign * shift;
- `reversible_block_bwd`: one half-step of the backward, the inverse subtraction of one half
  of the input together with the gradient addition of the other half,
  x = y - shift,  dx = dy + grad.
"""

import torch


def check_halves(op, x):
    """Raise unless x is a floating-point tensor of rank >= 2 with an even size along dim 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[1] % 2:
        raise ValueError(
            f"{op}: x must be (B, 2C, ...) with an even size along dim 1, got {tuple(x.shape)}"
        )


def check_shift(op, name, shift, half):
    """Raise unless the output `shift` of F or G has the shape, device of the half it updates."""
    if not isinstance(shift, torch.Tensor) or shift.shape != half.shape:
        got = tuple(shift.shape) if isinstance(shift, torch.Tensor) else type(shift).__name__
        raise ValueError(
            f"{op}: {name} must return a tensor shaped like its input {tuple(half.shape)}, "
            f"got {got}"
        )
    if shift.device != half.device:
        raise ValueError(f"{op}: {name} returned a tensor on {shift.device}, x is on {half.device}")


def reversible_block(x, f, g):
    """y = (x1 + F(x2), x2 + G(y1)) with (x1, x2) the halves of x along dim 1."""
    check_halves("reversible_block", x)
    x1, x2 = x.chunk(2, dim=1)
    shift = f(x2)
    check_shift("reversible_block", "f", shift, x2)
    y1 = x1 + shift
    shift = g(y1)
    check_shift("reversible_block", "g", shift, y1)
    return torch.cat([y1, x2 + shift], dim=1)


def reversible_block_inverse(y, f, g):
    """x = (y1 - F(x2), x2) with x2 = y2 - G(y1): the inverse of reversible_block."""
    check_halves("reversible_block_inverse", y)
    y1, y2 = y.chunk(2, dim=1)
    x2 = y2 - g(y1)
    return torch.cat([y1 - f(x2), x2], dim=1)


def reversible_block_fwd(x, shift, sign=1):
    """out = x + sign * shift, elementwise; x, shift: (B, M)."""
    return x + shift if sign == 1 else x - shift


def reversible_block_bwd(y, shift, dy, grad):
    """(x, dx) = (y - shift, dy + grad), elementwise; every argument (B, M)."""
    return y - shift, dy + grad
