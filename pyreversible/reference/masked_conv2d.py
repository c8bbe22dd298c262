"""Masked 2-D convolution (PixelCNN) in pure PyTorch: the definition.

Weight (O, I, K, K), K odd, centre c = K // 2. Mask type "A" keeps the taps above the centre
row and, on the centre row, those left of the centre; type "B" keeps the centre as well. The
output at a pixel then depends only on pixels before it in raster order (A), or before it and
itself (B).
"""

import torch
import torch.nn.functional as F

MASK_TYPES = ("A", "B")


def conv_mask(kernel_size, mask_type, device=None, dtype=None):
    """(K, K) tensor of ones at the kept taps, zeros at the masked ones."""
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size, device=device, dtype=dtype)
    mask[:c] = 1
    mask[c, : c + (mask_type == "B")] = 1
    return mask


def masked_conv2d(x, weight, bias=None, mask_type="B"):
    """x: (B, C_in, H, W), weight: (C_out, C_in, K, K), bias: (C_out,) -> (B, C_out, H, W)."""
    k = weight.shape[-1]
    kept = conv_mask(k, mask_type, device=weight.device, dtype=torch.bool)
    # masked taps are ignored, not multiplied by zero: a NaN stored there stays out of y, and
    # their gradient is zero
    return F.conv2d(x, torch.where(kept, weight, 0), bias, padding=k // 2)
