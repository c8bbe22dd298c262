"""CausalConv1d: the causal dilated convolution of WaveNet as a drop-in module, and the queue
cache that steps it one time step at a time (fast generation)."""

import math

import torch
from torch import nn

from pyreversible import ops


class CausalConv1d(nn.Module):
    """Causal dilated 1-D convolution: y[t] depends on x[t - receptive_field + 1 .. t] only.

    y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] x[b, i, t - (K - 1 - k) d], x = 0 before t = 0.

    Its parameters have nn.Conv1d's names, shapes and initialisation, so it loads the state dict
    of an nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups,
    bias=bias) and then equals that convolution applied to x left-padded by (K - 1) * dilation.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: K >= 1, taps.
        dilation: d >= 1, time steps between taps.
        groups: divides C_in and C_out; groups = C_in = C_out is depthwise.
        bias: whether to learn a bias per output channel.

    Attributes:
        weight: (C_out, C_in / groups, K).
        bias: (C_out,) or None.
        receptive_field: (K - 1) * d + 1, the time steps each output sees.

    Shapes: x (B, C_in, T) -> y (B, C_out, T); one step x_t (B, C_in) -> y_t (B, C_out).

    Example:
        >>> conv = CausalConv1d(16, 32, kernel_size=2, dilation=8)
        >>> conv.receptive_field
        9
        >>> conv(torch.randn(4, 16, 1000)).shape
        torch.Size([4, 32, 1000])
        >>> cache = conv.new_cache(4)
        >>> y_0 = conv.step(torch.randn(4, 16), cache)  # equals conv(x)[:, :, 0]
    """

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, groups=1, bias=True):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("dilation", dilation),
            ("groups", groups),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CausalConv1d: {name} must be an int >= 1, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"CausalConv1d: groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.groups = groups
        self.receptive_field = (kernel_size - 1) * dilation + 1
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Conv1d's initialisation: uniform within 1 / sqrt(fan_in) (kaiming, a = sqrt(5))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1] * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return ops.causal_conv1d(x, self.weight, self.bias, self.dilation, self.groups)

    def new_cache(self, batch, dtype=None, device=None):
        """An empty QueueCache for `step`: the last (K - 1) * d inputs of `batch` rows, zeros
        (the inputs before t = 0); dtype and device default to the weight's."""
        return QueueCache(
            batch,
            self.in_channels,
            (self.kernel_size - 1) * self.dilation,
            dtype=dtype or self.weight.dtype,
            device=device or self.weight.device,
        )

    @torch.no_grad()
    def step(self, x_t, cache):
        """The output at the cache's next time step t, reading the older taps from `cache` and
        pushing x_t into it (inference: no gradient flows through a step).

        y_t[b, o] = bias[o] + sum_i sum_k W[o, i, k] x[b, i, t - (K - 1 - k) d], the same
        function as forward at time t.

        Args:
            x_t: (B, C_in), the input at time t.
            cache: the QueueCache from new_cache(B), at time t.

        Returns:
            y_t: (B, C_out).
        """
        if not isinstance(cache, QueueCache):
            raise TypeError(
                f"CausalConv1d.step: cache must be a QueueCache (from new_cache), got "
                f"{type(cache).__name__}"
            )
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"CausalConv1d.step: x_t must be (B, C_in), got {got}")
        if x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"CausalConv1d.step: x_t has {x_t.shape[1]} channels, the convolution takes "
                f"C_in={self.in_channels}"
            )
        length = (self.kernel_size - 1) * self.dilation
        cache.check("CausalConv1d.step", x_t, length)
        if x_t.dtype != self.weight.dtype:
            raise TypeError(
                f"CausalConv1d.step: x_t is {x_t.dtype}, the weight {self.weight.dtype}"
            )

        # taps[k] is the input at t - (K - 1 - k) d: the newest is x_t, the others are in
        # the ring buffer, where the input at time s lives in row s mod length
        position = cache.position
        taps = [
            cache.buffer[:, (position - (self.kernel_size - 1 - k) * self.dilation) % length]
            for k in range(self.kernel_size - 1)
        ]
        taps.append(x_t)
        batch, groups = x_t.shape[0], self.groups
        # (B, groups, C_in / groups, K) against (groups, C_out / groups, C_in / groups, K)
        x_taps = torch.stack(taps, dim=-1).view(batch, groups, -1, self.kernel_size)
        weight = self.weight.view(groups, -1, *self.weight.shape[1:])
        y_t = torch.einsum("bgik,goik->bgo", x_taps, weight).reshape(batch, -1)
        if self.bias is not None:
            y_t = y_t + self.bias
        # the oldest tap's row was read above and now takes the newest input
        if length:
            cache.buffer[:, position % length] = x_t
        cache.position = position + 1
        return y_t

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


class QueueCache:
    """The queue of one causal convolution for fast generation: a ring buffer of its last
    `length` = (K - 1) * d inputs per batch row, sized per layer (Fast WaveNet).

    The input at time s lives in row s mod length of `buffer`; `position` is the next time
    step. A new cache holds zeros, the inputs before t = 0. A cache belongs to one batch
    size, dtype and device; stepping it with another raises ValueError or TypeError.

    Args:
        batch: B, rows of the batch.
        channels: C_in, the convolution's input channels.
        length: (K - 1) * d >= 0, inputs kept per row.
        dtype, device: of the buffer.

    Attributes:
        buffer: (B, length, C_in).
        position: int, the time step the next `step` computes.

    Example:
        >>> convs = [CausalConv1d(8, 8, 2, dilation=d) for d in (1, 2, 4)]
        >>> caches = [conv.new_cache(3) for conv in convs]
        >>> h = torch.randn(3, 8)
        >>> for conv, cache in zip(convs, caches):
        ...     h = torch.tanh(conv.step(h, cache))
    """

    def __init__(self, batch, channels, length, dtype=None, device=None):
        for name, value, least in (("batch", batch, 1), ("channels", channels, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"QueueCache: {name} must be an int >= {least}, got {value!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"QueueCache: length must be an int >= 0, got {length!r}")
        self.buffer = torch.zeros(batch, length, channels, dtype=dtype, device=device)
        self.position = 0

    @property
    def batch_size(self):
        return self.buffer.shape[0]

    def reset(self):
        """Back to t = 0: zeros, as new."""
        self.buffer.zero_()
        self.position = 0

    def check(self, op, x_t, length):
        """Raises ValueError or TypeError naming `op` unless x_t (B, C) fits this cache and
        the cache keeps `length` inputs (the convolution's (K - 1) * d)."""
        batch, kept, channels = self.buffer.shape
        if x_t.shape[0] != batch:
            raise ValueError(
                f"{op}: the cache was made for batch size {batch}, x_t has batch size "
                f"{x_t.shape[0]} (make a cache per batch size with new_cache)"
            )
        if kept != length or x_t.shape[1] != channels:
            raise ValueError(
                f"{op}: the cache keeps {kept} inputs of {channels} channels, this "
                f"convolution needs {length} of {x_t.shape[1]} (a cache belongs to one layer)"
            )
        if x_t.dtype != self.buffer.dtype or x_t.device != self.buffer.device:
            raise TypeError(
                f"{op}: x_t is {x_t.dtype} on {x_t.device}, the cache {self.buffer.dtype} on "
                f"{self.buffer.device}"
            )

    def __repr__(self):
        batch, length, channels = self.buffer.shape
        return (
            f"QueueCache(batch={batch}, channels={channels}, length={length}, "
            f"position={self.position})"
        )
