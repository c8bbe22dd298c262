"""NICE: additive coupling layers and a scaling layer, with a factorised prior."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyreversible.nn.additive_coupling import AdditiveCoupling
from pyreversible.nn.scaling import Scaling

PRIORS = ("logistic", "gaussian")


class NICE(nn.Module):
    """Non-linear Independent Components Estimation (Dinh et al., 2014).

    z = f(x) with f = scaling o coupling_n o ... o coupling_1 (odd-even partitions alternating
    parity); log p(x) = sum_d log p_H(z_d) + sum(s), with the standard logistic prior
    log p_H(h) = -softplus(h) - softplus(-h) or the standard Gaussian.

    Args:
        dim: features per sample (D).
        num_couplings: number of additive coupling layers.
        hidden, num_hidden_layers: the width and depth of each coupling network.
        prior: 'logistic' or 'gaussian'.

    Shapes: x and z are (B, D); log_prob gives (B,) in nats.

    Example:
        >>> model = NICE(64, num_couplings=4, hidden=256, num_hidden_layers=3)
        >>> loss = -model.log_prob(torch.rand(32, 64)).mean()
        >>> samples = model.sample(16)
    """

    def __init__(self, dim, num_couplings=4, hidden=1000, num_hidden_layers=5, prior="logistic"):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"NICE: prior must be one of {PRIORS}, got {prior!r}")
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"NICE: dim must be an int >= 2, got {dim!r}")
        self.dim = dim
        self.prior = prior
        self.couplings = nn.ModuleList(
            AdditiveCoupling(dim, hidden, num_hidden_layers, "odd-even", parity=i % 2)
            for i in range(num_couplings)
        )
        self.scaling = Scaling(dim)

    def _check(self, x, name):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"NICE: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"NICE: {name} must be (B, {self.dim}), got {tuple(x.shape)}")

    def forward(self, x):
        """x (B, D) -> (z (B, D), log|det J| (B,))."""
        self._check(x, "x")
        for layer in self.couplings:
            x = layer(x)
        return self.scaling(x)

    def inverse(self, z):
        """z (B, D) -> x (B, D), the exact inverse of forward."""
        self._check(z, "z")
        x = self.scaling.inverse(z)
        for layer in reversed(self.couplings):
            x = layer.inverse(x)
        return x

    def prior_log_prob(self, z):
        """log p_H(z) summed over features: (B,) in nats."""
        if self.prior == "logistic":
            return -(F.softplus(z) + F.softplus(-z)).sum(dim=1)
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(dim=1)

    def log_prob(self, x):
        """log p(x) in nats, (B,)."""
        z, logdet = self(x)
        return self.prior_log_prob(z) + logdet

    @torch.no_grad()
    def sample(self, n, generator=None):
        """n samples (n, D) drawn from the prior and mapped through the inverse."""
        param = self.scaling.log_scale
        shape = (n, self.dim)
        if self.prior == "logistic":
            u = torch.rand(shape, generator=generator, device=param.device, dtype=param.dtype)
            u = u.clamp(torch.finfo(param.dtype).tiny, 1 - torch.finfo(param.dtype).eps)
            z = torch.log(u) - torch.log1p(-u)
        else:
            z = torch.randn(shape, generator=generator, device=param.device, dtype=param.dtype)
        return self.inverse(z)
