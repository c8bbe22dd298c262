"""MaskedConv2d: the masked convolution of PixelCNN as a drop-in module."""

import math

import torch
from torch import nn

from pyreversible import ops
from pyreversible.reference.masked_conv2d import MASK_TYPES


def _kernel_size(kernel_size):
    # an int, or a square (K, K) pair as nn.Conv2d takes it
    if isinstance(kernel_size, tuple | list):
        if len(kernel_size) != 2 or kernel_size[0] != kernel_size[1]:
            raise ValueError(f"MaskedConv2d: kernel_size must be square, got {tuple(kernel_size)}")
        kernel_size = kernel_size[0]
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"MaskedConv2d: kernel_size must be an odd int >= 1, got {kernel_size!r}")
    return kernel_size


class MaskedConv2d(nn.Module):
    """Masked 2-D convolution (PixelCNN), stride 1, padding K // 2 ("same" size).

    y = conv2d(x, weight * mask, bias), with the mask of type 'A' (taps above the centre row,
    and left of the centre on its row) or 'B' (the centre as well); see
    pyreversible.ops.masked_conv2d. The parameters are laid out as nn.Conv2d's, so an
    nn.Conv2d state dict loads into this module; the masked entries of `weight` are ignored
    and get zero gradient.

    Args:
        in_channels: I.
        out_channels: O.
        kernel_size: K, odd (an int or a square pair).
        mask_type: 'A' (a model's first layer) or 'B' (the layers after it).
        bias: whether to learn a bias (O,).

    Shapes: x (B, I, H, W) -> y (B, O, H, W).

    Example:
        >>> layer = MaskedConv2d(1, 64, 7, mask_type="A")
        >>> layer.load_state_dict(nn.Conv2d(1, 64, 7, padding=3).state_dict())
        <All keys matched successfully>
        >>> layer(torch.rand(8, 1, 28, 28)).shape
        torch.Size([8, 64, 28, 28])
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="B", bias=True):
        super().__init__()
        if mask_type not in MASK_TYPES:
            raise ValueError(f"MaskedConv2d: mask_type must be 'A' or 'B', got {mask_type!r}")
        k = _kernel_size(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = k
        self.mask_type = mask_type
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's initialisation, so that a model built either way starts alike
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return ops.masked_conv2d(x, self.weight, self.bias, self.mask_type)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"mask_type={self.mask_type!r}, bias={self.bias is not None}"
        )
