"""Causal dilated 1-D convolution (WaveNet) in pure PyTorch: the definition.

y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] * x[b, i, t - (K - 1 - k) * d], with x = 0 before
t = 0: nn.Conv1d of the input left-padded by (K - 1) * d, so y[:, :, t] sees x[:, :, :t + 1].
"""

import torch.nn.functional as F


def causal_conv1d(x, weight, bias=None, dilation=1, groups=1):
    """x: (B, C_in, T), weight: (C_out, C_in // groups, K), bias: (C_out,) -> (B, C_out, T)."""
    pad = (weight.shape[-1] - 1) * dilation
    return F.conv1d(F.pad(x, (pad, 0)), weight, bias, dilation=dilation, groups=groups)
