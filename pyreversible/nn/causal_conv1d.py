"""CausalConv1d: the causal dilated convolution of WaveNet as a drop-in module."""

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

    Shapes: x (B, C_in, T) -> y (B, C_out, T).

    Example:
        >>> conv = CausalConv1d(16, 32, kernel_size=2, dilation=8)
        >>> conv.receptive_field
        9
        >>> conv(torch.randn(4, 16, 1000)).shape
        torch.Size([4, 32, 1000])
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

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )
