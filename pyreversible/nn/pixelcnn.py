"""PixelCNN: an autoregressive model of images built from masked convolutions."""

import torch
import torch.nn.functional as F
from torch import nn

from pyreversible.nn.masked_conv2d import MaskedConv2d
from pyreversible.reference.sampling import inverse_cdf_sample


class PixelCNN(nn.Module):
    """PixelCNN (van den Oord et al., 2016): p(x) = prod over pixels in raster order of
    p(x_p | x_<p), each a softmax over `num_levels` grey levels per channel.

    A type-A masked convolution (kernel_size) reads only the pixels before each one, type-B
    3x3 masked convolutions with ReLUs follow (num_layers in all), and a 1x1 convolution gives
    the logits. The channels of a pixel are modelled independently given the pixels before it.

    Args:
        in_channels: C, channels of the images.
        num_levels: L, grey levels per channel; images hold integers in [0, L).
        hidden_channels: width of the masked convolutions.
        num_layers: masked convolutions in all (the first of type A).
        kernel_size: odd size of the type-A convolution.

    Shapes: x a LongTensor (B, C, H, W) of levels; forward gives logits (B, L, C, H, W);
    log_prob gives (B,) in nats.

    Example:
        >>> model = PixelCNN(in_channels=1, num_levels=17, hidden_channels=32, num_layers=4)
        >>> x = torch.randint(0, 17, (8, 1, 8, 8))
        >>> loss = -model.log_prob(x).mean()
        >>> samples = model.sample(4, 8, 8, generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self, in_channels=1, num_levels=256, hidden_channels=64, num_layers=7, kernel_size=7
    ):
        super().__init__()
        for name, value, least in (
            ("in_channels", in_channels, 1),
            ("num_levels", num_levels, 2),
            ("hidden_channels", hidden_channels, 1),
            ("num_layers", num_layers, 1),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"PixelCNN: {name} must be an int >= {least}, got {value!r}")
        self.in_channels = in_channels
        self.num_levels = num_levels
        layers = [MaskedConv2d(in_channels, hidden_channels, kernel_size, mask_type="A")]
        for _ in range(num_layers - 1):
            layers += [nn.ReLU(), MaskedConv2d(hidden_channels, hidden_channels, 3, "B")]
        layers += [nn.ReLU(), nn.Conv2d(hidden_channels, num_levels * in_channels, 1)]
        self.net = nn.Sequential(*layers)

    def _check(self, x):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.long:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"PixelCNN: x must be a LongTensor of levels, got {got}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PixelCNN: x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.numel() and (x.min() < 0 or x.max() >= self.num_levels):
            raise ValueError(
                f"PixelCNN: levels must lie in [0, {self.num_levels}), got "
                f"[{x.min().item()}, {x.max().item()}]"
            )

    def forward(self, x):
        """Logits (B, L, C, H, W) of every pixel given the pixels before it."""
        self._check(x)
        param = self.net[0].weight
        h = x.to(param.dtype) * (2 / (self.num_levels - 1)) - 1
        logits = self.net(h)
        b, _, height, width = logits.shape
        return logits.view(b, self.num_levels, self.in_channels, height, width)

    def log_prob(self, x):
        """log p(x) in nats, (B,)."""
        nll = F.cross_entropy(self(x), x, reduction="none")
        return -nll.flatten(1).sum(dim=1)

    @torch.no_grad()
    def sample(self, n, height, width, generator=None):
        """n images (n, C, height, width) of levels, drawn one pixel at a time in raster order
        by inverse-CDF sampling from uniform numbers drawn from `generator`."""
        param = self.net[0].weight
        x = torch.zeros(n, self.in_channels, height, width, dtype=torch.long, device=param.device)
        for i in range(height):
            for j in range(width):
                # (n, C, L) logits of pixel (i, j) given the pixels drawn so far
                logits = self(x)[:, :, :, i, j].transpose(1, 2)
                u = torch.rand(n, self.in_channels, generator=generator, device=param.device)
                x[:, :, i, j] = inverse_cdf_sample(logits, u)
        return x
