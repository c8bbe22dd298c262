"""NICE, AdditiveCoupling and Scaling as modules."""

import copy
import math

import pytest
import torch
from helpers import BACKENDS, DEVICE, assert_close
from torch import nn

import pyreversible
from pyreversible.nn import NICE, AdditiveCoupling, Scaling


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("prior", ["logistic", "gaussian"])
def test_nice_log_prob_and_inverse(backend, prior):
    model = NICE(6, num_couplings=4, hidden=8, num_hidden_layers=2, prior=prior).to(DEVICE).double()
    with torch.no_grad():
        model.scaling.log_scale.normal_()
    x = torch.randn(5, 6, dtype=torch.float64, device=DEVICE)
    with pyreversible.use_backend(backend):
        z, logdet = model(x)
        log_prob = model.log_prob(x)
        back = model.inverse(z)
    assert z.shape == x.shape and logdet.shape == (5,) and log_prob.shape == (5,)
    assert_close(logdet, model.scaling.log_scale.sum().expand(5))
    if prior == "logistic":
        prior_term = -(nn.functional.softplus(z) + nn.functional.softplus(-z)).sum(1)
    else:
        prior_term = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    assert_close(log_prob, prior_term + logdet)
    assert_close(back, x)


def test_nice_layers_alternate_parity_and_scaling_comes_last():
    model = NICE(8, num_couplings=4, hidden=4, num_hidden_layers=1)
    assert [layer.parity for layer in model.couplings] == [0, 1, 0, 1]
    assert all(layer.partition == "odd-even" for layer in model.couplings)
    assert list(model.children())[-1] is model.scaling


@pytest.mark.parametrize("prior", ["logistic", "gaussian"])
def test_nice_sample_is_seeded_and_inverts(prior):
    model = NICE(6, num_couplings=2, hidden=8, num_hidden_layers=1, prior=prior).to(DEVICE)
    a = model.sample(1000, generator=torch.Generator(DEVICE).manual_seed(3))
    b = model.sample(1000, generator=torch.Generator(DEVICE).manual_seed(3))
    assert a.shape == (1000, 6)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    z, _ = model(a)
    # z follows the prior: its standard deviation is pi / sqrt(3) (logistic) or 1
    expected_std = math.pi / math.sqrt(3) if prior == "logistic" else 1.0
    assert abs(z.std().item() - expected_std) < 0.1


def test_additive_coupling_module_state_dict_is_plain_linear():
    layer = AdditiveCoupling(10, hidden=7, num_hidden_layers=2)
    keys = set(layer.state_dict())
    assert keys == {f"coupling_net.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_additive_coupling_with_user_net(backend):
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    layer = AdditiveCoupling((2, 4, 6), partition="checkerboard", parity=1, coupling_net=net)
    layer = layer.to(DEVICE).double()
    x = torch.randn(3, 2, 4, 6, dtype=torch.float64, device=DEVICE)
    with pyreversible.use_backend(backend):
        y = layer(x)
        assert_close(layer.inverse(y), x)
    with pyreversible.use_backend("reference"):
        assert_close(y, layer(x))


def test_scaling():
    layer = Scaling(4)
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    x = torch.randn(3, 4)
    y, logdet = layer(x)
    assert_close(y, x * torch.tensor([0.0, 1.0, -1.0, 0.5]).exp())
    assert_close(logdet, torch.full((3,), 0.5))
    assert_close(layer.inverse(y), x)
    with pytest.raises(ValueError, match=r"x must be \(B, 4\)"):
        layer(torch.randn(3, 5))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: NICE(8, prior="laplace"), "prior must be one of"),
        (lambda: NICE(1), "dim must be an int >= 2"),
        (lambda: AdditiveCoupling(8, partition="stripes"), "partition must be one of"),
        (lambda: AdditiveCoupling(8, partition="channel"), r"needs dim = \(C, H, W\)"),
        (lambda: AdditiveCoupling((2, 3, 5), partition="checkerboard"), "even width"),
        (lambda: AdditiveCoupling(8, parity=3), "parity must be 0 or 1"),
    ],
)
def test_bad_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_nice_rejects_wrong_shapes():
    model = NICE(8, num_couplings=2, hidden=4, num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"x must be \(B, 8\)"):
        model.log_prob(torch.randn(3, 9))
    with pytest.raises(ValueError, match=r"z must be \(B, 8\)"):
        model.inverse(torch.randn(3, 8, 1))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model(None)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("custom_net", [False, True])
def test_nice_memory_efficient_gradients_equal_ordinary(backend, custom_net):
    model = NICE(6, num_couplings=4, hidden=8, num_hidden_layers=2).to(DEVICE).double()
    if custom_net:
        # a coupling network that is not the fused MLP: inverted, then recomputed by autograd
        model.couplings[1] = AdditiveCoupling(
            6,
            partition="odd-even",
            parity=1,
            coupling_net=nn.Sequential(nn.Linear(3, 3), nn.Tanh()),
        ).to(DEVICE, torch.float64)
    efficient = copy.deepcopy(model)
    efficient.memory_efficient = True
    x = torch.randn(5, 6, dtype=torch.float64, device=DEVICE)
    grads = []
    for m in (efficient, model):
        xm = x.clone().requires_grad_()
        with pyreversible.use_backend(backend):
            loss = -m.log_prob(xm).sum()
        params = list(m.parameters())
        grads.append(torch.autograd.grad(loss, [xm, *params]))
    for got, want in zip(*grads, strict=True):
        # the inverse of each layer rounds once more than the forward: float64 rounding
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


def test_nice_memory_efficient_saves_only_the_output():
    saved = {}
    for n in (2, 8):
        model = NICE(6, num_couplings=n, hidden=8, num_hidden_layers=2, memory_efficient=True)
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel() * t.element_size())
            return t

        x = torch.randn(5, 6, device=DEVICE)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.log_prob(x).sum()
        saved[n] = sum(sizes)
    # the couplings' output and what the scaling layer and the prior save, at any depth
    assert saved[2] == saved[8]
