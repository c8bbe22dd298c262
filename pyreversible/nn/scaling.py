"""Scaling: NICE's diagonal scaling layer."""

import torch
from torch import nn


class Scaling(nn.Module):
    """y = x * exp(s), log|det J| = sum(s), with one learned log-scale per feature.

    Args:
        dim: features per sample, an int, or a shape such as (C, H, W).

    Shapes: x and y are (B, *dim); the log-determinant is (B,), the same for every row.

    Example:
        >>> layer = Scaling(784)
        >>> y, logdet = layer(torch.randn(16, 784))
    """

    def __init__(self, dim):
        super().__init__()
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def _check(self, x):
        if x.shape[1:] != self.log_scale.shape:
            raise ValueError(
                f"Scaling: x must be (B, {', '.join(map(str, self.log_scale.shape))}), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x):
        self._check(x)
        logdet = self.log_scale.sum().expand(x.shape[0])
        return x * torch.exp(self.log_scale), logdet

    def inverse(self, y):
        self._check(y)
        return y * torch.exp(-self.log_scale)
