"""Additive coupling (NICE) in pure PyTorch: the definition every kernel is tested against.

A partition splits the features of x into a conditioning part x_a and an updated part x_b:

- ``half`` of x (B, D): the first D // 2 features and the rest;
- ``odd-even`` of x (B, D): the even-indexed features and the odd-indexed ones;
- ``channel`` of x (B, C, H, W): the first C // 2 channels and the rest;
- ``checkerboard`` of x (B, C, H, W), W even: the pixels with (h + w) even and those with
  (h + w) odd, each part laid out as (B, C, H, W // 2) in row-major order.

`parity` 0 makes the first of the two the conditioning part, 1 the second; alternating it
from layer to layer lets every feature be updated.
"""

import torch
import torch.nn.functional as F

PARTITIONS = ("half", "odd-even", "checkerboard", "channel")
_IMAGE_PARTITIONS = ("checkerboard", "channel")


def check_partition(op, x, partition, parity):
    """Raise ValueError or TypeError unless (x, partition, parity) describe a valid split."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if partition not in PARTITIONS:
        raise ValueError(f"{op}: partition must be one of {PARTITIONS}, got {partition!r}")
    if parity not in (0, 1) or isinstance(parity, bool):
        raise ValueError(f"{op}: parity must be 0 or 1, got {parity!r}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got {x.dtype}")
    rank = 4 if partition in _IMAGE_PARTITIONS else 2
    layout = "(B, C, H, W)" if rank == 4 else "(B, D)"
    if x.dim() != rank:
        raise ValueError(
            f"{op}: partition {partition!r} needs x of shape {layout}, got shape {tuple(x.shape)}"
        )
    if partition == "checkerboard" and x.shape[3] % 2:
        raise ValueError(f"{op}: partition 'checkerboard' needs an even width W, got {x.shape[3]}")
    split_size = x.shape[1] if partition != "checkerboard" else 2
    if split_size < 2:
        what = "channels" if partition == "channel" else "features"
        raise ValueError(f"{op}: partition {partition!r} needs at least 2 {what}, got {x.shape[1]}")


def check_shift(op, shift, x_b):
    """Raise unless the coupling network's output `shift` can be added to x_b."""
    if not isinstance(shift, torch.Tensor) or shift.shape != x_b.shape:
        got = tuple(shift.shape) if isinstance(shift, torch.Tensor) else type(shift).__name__
        raise ValueError(
            f"{op}: coupling_net must return a tensor shaped like x_b {tuple(x_b.shape)}, got {got}"
        )
    if shift.dtype != x_b.dtype or shift.device != x_b.device:
        raise TypeError(
            f"{op}: coupling_net returned {shift.dtype} on {shift.device}, expected x's "
            f"{x_b.dtype} on {x_b.device}"
        )


def _checkerboard_first(h, parity, device):
    # (H, 1) mask of the rows whose even columns belong to the conditioning part
    return ((torch.arange(h, device=device) + parity) % 2 == 0).view(h, 1)


def partition_split(x, partition, parity=0):
    """Split x into (x_a, x_b), the conditioning and the updated part.

    x: (B, D) for 'half' and 'odd-even', (B, C, H, W) for 'channel' and 'checkerboard'.
    """
    check_partition("partition_split", x, partition, parity)
    if partition == "half" or partition == "channel":
        first, second = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2 :]
    elif partition == "odd-even":
        first, second = x[:, 0::2], x[:, 1::2]
    else:
        pairs = x.unflatten(3, (x.shape[3] // 2, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        a_is_even = _checkerboard_first(x.shape[2], parity, x.device)
        return torch.where(a_is_even, even, odd), torch.where(a_is_even, odd, even)
    return (first, second) if parity == 0 else (second, first)


def partition_merge(x_a, x_b, partition, parity=0):
    """The inverse of partition_split: the x whose split is (x_a, x_b)."""
    first, second = (x_a, x_b) if parity == 0 else (x_b, x_a)
    if partition == "half" or partition == "channel":
        return torch.cat([first, second], dim=1)
    if partition == "odd-even":
        x = first.new_zeros(first.shape[0], first.shape[1] + second.shape[1])
        x[:, 0::2] = first
        x[:, 1::2] = second
        return x
    if partition == "checkerboard":
        a_is_even = _checkerboard_first(x_a.shape[2], parity, x_a.device)
        even = torch.where(a_is_even, x_a, x_b)
        odd = torch.where(a_is_even, x_b, x_a)
        return torch.stack([even, odd], dim=-1).flatten(3)
    raise ValueError(f"partition_merge: partition must be one of {PARTITIONS}, got {partition!r}")


def mlp(h, weights, biases):
    """h_l = relu(h_{l-1} W_l^T + b_l) for every layer but the last, which has no ReLU."""
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = F.linear(h, w, b)
        if i + 1 < len(weights):
            h = F.relu(h)
    return h


def additive_coupling(x, coupling_net, partition="half", parity=0, reverse=False):
    """y_a = x_a, y_b = x_b + m(x_a) (reverse: x_b - m(x_a)), with m = coupling_net."""
    x_a, x_b = partition_split(x, partition, parity)
    shift = coupling_net(x_a)
    check_shift("additive_coupling", shift, x_b)
    return partition_merge(x_a, x_b - shift if reverse else x_b + shift, partition, parity)


def additive_coupling_mlp(x, weights, biases, partition="half", parity=0, reverse=False):
    """additive_coupling with m(x_a) = mlp(x_a flattened, weights, biases), shaped like x_b."""
    x_a, x_b = partition_split(x, partition, parity)
    shift = mlp(x_a.flatten(1), weights, biases).view_as(x_b)
    return partition_merge(x_a, x_b - shift if reverse else x_b + shift, partition, parity)
