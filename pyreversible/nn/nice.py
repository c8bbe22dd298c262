"""NICE: additive coupling layers and a scaling layer, with a factorised prior."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from pyreversible import _backend
from pyreversible.nn.additive_coupling import AdditiveCoupling, CouplingMLP
from pyreversible.nn.scaling import Scaling
from pyreversible.ops.additive_coupling import _kernels, _rows, partition_layout

PRIORS = ("logistic", "gaussian")


def _coupling_backward(layer, y, dy):
    """(x, dx, [(param, grad)]) of one coupling layer, from its output y and dy = dL/dy.

    A fused MLP coupling on a compiled backend needs one kernel call for x and the hidden
    activations: the inverse computes m(y_a), and y_a = x_a, so its hidden activations are
    the forward's; the fused backward then runs on them. Any other layer is inverted, then
    recomputed with autograd recording.
    """
    net = layer.coupling_net
    if isinstance(net, CouplingMLP):
        backend = _backend.resolve("additive_coupling_mlp", y.device, y.dtype)
        if backend != "reference":
            weights, biases = net.parameters_by_kind()
            weights = [w.detach().contiguous() for w in weights]
            biases = [b.detach().contiguous() for b in biases]
            layout = partition_layout(y.shape, layer.partition, layer.parity)
            kernels = _kernels(backend)
            x, hidden = kernels.additive_coupling_mlp_fwd(
                _rows(y), weights, biases, layout, -1, True
            )
            dx, dweights, dbiases = kernels.additive_coupling_mlp_bwd(
                _rows(dy), _rows(y), weights, hidden, layout, 1
            )
            grads = list(zip(net.weights, dweights, strict=True))
            grads += list(zip(net.biases, dbiases, strict=True))
            return x.view(y.shape), dx.view(y.shape), grads
    x = layer.inverse(y)
    params = [p for p in layer.parameters() if p.requires_grad]
    with torch.enable_grad():
        x_in = x.detach().requires_grad_()
        dx, *dparams = torch.autograd.grad(layer(x_in), [x_in, *params], dy, allow_unused=True)
    return x, dx, list(zip(params, dparams, strict=True))


class _CouplingStackFunction(torch.autograd.Function):
    """The coupling layers of a NICE as one autograd node that saves only their output.

    inputs: x, the NICE, then the couplings' parameters that require grad.
    """

    @staticmethod
    def forward(ctx, x, model, *params):
        for layer in model.couplings:
            x = layer(x)
        ctx.model = model
        ctx.params = params
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        index = {id(p): k for k, p in enumerate(ctx.params)}
        param_grads = [None] * len(ctx.params)
        for layer in reversed(ctx.model.couplings):
            y, dy, grads = _coupling_backward(layer, y, dy)
            for p, grad in grads:
                k = index.get(id(p))
                if k is not None and grad is not None:
                    param_grads[k] = grad if param_grads[k] is None else param_grads[k] + grad
        return dy if ctx.needs_input_grad[0] else None, None, *param_grads


@torch._dynamo.disable
def _memory_efficient_couplings(model, x, params):
    # a graph break under torch.compile, as for ReversibleSequential
    return _CouplingStackFunction.apply(x, model, *params)


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
        memory_efficient: True keeps only the coupling layers' output for backward, whatever
            their number, and recomputes every layer's input (its inverse) and its coupling
            network's activations in the backward; False is ordinary autograd.

    Shapes: x and z are (B, D); log_prob gives (B,) in nats.

    Example:
        >>> model = NICE(64, num_couplings=4, hidden=256, num_hidden_layers=3)
        >>> loss = -model.log_prob(torch.rand(32, 64)).mean()
        >>> samples = model.sample(16)
    """

    def __init__(
        self,
        dim,
        num_couplings=4,
        hidden=1000,
        num_hidden_layers=5,
        prior="logistic",
        memory_efficient=False,
    ):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"NICE: prior must be one of {PRIORS}, got {prior!r}")
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"NICE: dim must be an int >= 2, got {dim!r}")
        self.dim = dim
        self.prior = prior
        self.memory_efficient = bool(memory_efficient)
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
        params = [p for p in self.couplings.parameters() if p.requires_grad]
        if self.memory_efficient and torch.is_grad_enabled() and (x.requires_grad or params):
            x = _memory_efficient_couplings(self, x, params)
        else:
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
