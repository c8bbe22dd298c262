"""The gated residual layer of WaveNet in pure PyTorch: the definition.

z = causal_conv1d(x, W_conv, b_conv, d) (+ W_local c_local) (+ W_global c_global), 2G channels;
a = tanh(z[:, :G]) * sigmoid(z[:, G:]);  skip = W_s a + b_s;  x_next = x + W_r a + b_r.
"""

import torch
import torch.nn.functional as F

from pyreversible.reference.causal_conv1d import causal_conv1d


def wavenet_layer(
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation=1,
    local_cond=None,
    local_weight=None,
    global_cond=None,
    global_weight=None,
):
    """One WaveNet layer.

    Args:
        x: (B, R, T) residual stream.
        conv_weight: (2G, R, K), conv_bias: (2G,): the dilated causal convolution.
        residual_weight: (R, G), residual_bias: (R,): the 1x1 residual projection.
        skip_weight: (S, G), skip_bias: (S,): the 1x1 skip projection.
        dilation: d >= 1.
        local_cond: (B, C_local, T) and local_weight: (2G, C_local): local conditioning.
        global_cond: (B, C_global) and global_weight: (2G, C_global): global conditioning.

    Returns:
        (x_next (B, R, T), skip (B, S, T)).
    """
    z = causal_conv1d(x, conv_weight, conv_bias, dilation)
    if local_cond is not None:
        z = z + torch.einsum("oc,bct->bot", local_weight, local_cond)
    if global_cond is not None:
        z = z + (global_cond @ global_weight.t()).unsqueeze(-1)
    gate_channels = z.shape[1] // 2
    a = torch.tanh(z[:, :gate_channels]) * torch.sigmoid(z[:, gate_channels:])
    skip = F.conv1d(a, skip_weight.unsqueeze(-1), skip_bias)
    x_next = x + F.conv1d(a, residual_weight.unsqueeze(-1), residual_bias)
    return x_next, skip
