"""Additive coupling: every backend against the reference, outputs and every gradient."""

import pytest
import torch
from helpers import BACKENDS, DEVICE, DTYPES, assert_close, strided
from torch import nn

import pyreversible
from pyreversible import ops, reference
from pyreversible.ops.additive_coupling import _NAMESPACE, _kernels, partition_layout

# (batch, partition, feature shape); B and D cover 1, 3, 129 and 2, 5, 784
CASES = [
    (1, "half", (2,)),
    (3, "half", (5,)),
    (129, "half", (784,)),
    (3, "odd-even", (2,)),
    (1, "odd-even", (5,)),
    (129, "odd-even", (64,)),
    (3, "odd-even", (784,)),
    (3, "channel", (2, 3, 5)),
    (4, "channel", (3, 4, 4)),
    (1, "checkerboard", (2, 3, 4)),
    (5, "checkerboard", (3, 5, 6)),
]
CASE_IDS = [f"B{b}-{p}-{'x'.join(map(str, s))}" for b, p, s in CASES]


def mlp_params(dim_a, dim_b, hidden, num_hidden, dtype, scale=1.0):
    widths = [dim_a] + [hidden] * num_hidden + [dim_b]
    weights, biases = [], []
    for i, o in zip(widths[:-1], widths[1:], strict=True):
        weights.append(scale * torch.randn(o, i, dtype=dtype, device=DEVICE) / i**0.5)
        biases.append(0.1 * torch.randn(o, dtype=dtype, device=DEVICE))
    return weights, biases


def part_sizes(x, partition, parity):
    x_a, x_b = reference.partition_split(x, partition, parity)
    return x_a[0].numel(), x_b[0].numel()


def grads(y, inputs, cotangent):
    return torch.autograd.grad(y, inputs, cotangent)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_mlp_matches_reference(backend, dtype, case, reverse):
    batch, partition, shape = case
    parity = batch % 2
    x = torch.randn(batch, *shape, dtype=dtype, device=DEVICE, requires_grad=True)
    dim_a, dim_b = part_sizes(x, partition, parity)
    weights, biases = mlp_params(dim_a, dim_b, 24, 2, dtype)
    params = [p.requires_grad_() for p in weights + biases]
    cotangent = torch.randn_like(x)

    with pyreversible.use_backend(backend):
        y = ops.additive_coupling_mlp(x, weights, biases, partition, parity, reverse)
    expected = reference.additive_coupling_mlp(x, weights, biases, partition, parity, reverse)

    assert y.shape == x.shape
    assert_close(y, expected)
    for got, want in zip(
        grads(y, [x, *params], cotangent), grads(expected, [x, *params], cotangent), strict=True
    ):
        assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_hidden", [0, 1, 4])
def test_mlp_depths_and_widths(backend, num_hidden):
    x = torch.randn(7, 9, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weights, biases = mlp_params(5, 4, 3, num_hidden, torch.float64)
    params = [p.requires_grad_() for p in weights + biases]
    with pyreversible.use_backend(backend):
        y = ops.additive_coupling_mlp(x, weights, biases, "odd-even", 0)
    expected = reference.additive_coupling_mlp(x, weights, biases, "odd-even", 0)
    assert_close(y, expected)
    cotangent = torch.randn_like(x)
    for got, want in zip(
        grads(y, [x, *params], cotangent), grads(expected, [x, *params], cotangent), strict=True
    ):
        assert_close(got, want)


def coupling_net(partition, shape, dtype):
    # a user network mapping x_a to the shape of x_b, of the kind each partition is used with
    if partition in ("half", "odd-even"):
        d = shape[0]
        first = d // 2 if partition == "half" else (d + 1) // 2
        net = nn.Sequential(nn.Linear(first, 11), nn.Tanh(), nn.Linear(11, d - first))
    elif partition == "channel":
        first = shape[0] // 2
        net = nn.Conv2d(first, shape[0] - first, 3, padding=1)
    else:
        net = nn.Sequential(
            nn.Conv2d(shape[0], 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, shape[0], 1)
        )
    return net.to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_module_coupling_matches_reference(backend, dtype, case, reverse):
    batch, partition, shape = case
    # parity 0 only: with odd sizes the two parities' parts differ in size, and the net is
    # built for parity 0; the kernels see parity through the MLP test above
    x = torch.randn(batch, *shape, dtype=dtype, device=DEVICE, requires_grad=True)
    net = coupling_net(partition, shape, dtype)
    params = list(net.parameters())
    cotangent = torch.randn_like(x)

    with pyreversible.use_backend(backend):
        y = ops.additive_coupling(x, net, partition, 0, reverse)
    expected = reference.additive_coupling(x, net, partition, 0, reverse)

    assert_close(y, expected)
    for got, want in zip(
        grads(y, [x, *params], cotangent), grads(expected, [x, *params], cotangent), strict=True
    ):
        assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "partition, shape", [("odd-even", (9,)), ("half", (8,)), ("checkerboard", (2, 3, 4))]
)
def test_non_contiguous_inputs(backend, partition, shape):
    x = torch.randn(6, *shape, dtype=torch.float64, device=DEVICE)
    dim_a, dim_b = part_sizes(x, partition, 1)
    weights, biases = mlp_params(dim_a, dim_b, 8, 1, torch.float64)
    cotangent = torch.randn_like(x)
    x_strided = strided(x).requires_grad_()
    assert not x_strided.is_contiguous()

    with pyreversible.use_backend(backend):
        y = ops.additive_coupling_mlp(x_strided, weights, biases, partition, 1)
        (dx,) = torch.autograd.grad(y, x_strided, strided(cotangent))
    x.requires_grad_()
    expected = reference.additive_coupling_mlp(x, weights, biases, partition, 1)
    (dx_expected,) = torch.autograd.grad(expected, x, cotangent)
    assert_close(y, expected)
    assert_close(dx, dx_expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "partition, shape",
    [("odd-even", (5,)), ("half", (4,)), ("checkerboard", (1, 3, 2)), ("channel", (3, 1, 2))],
)
def test_gradcheck(backend, partition, shape):
    x = torch.randn(3, *shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    dim_a, dim_b = part_sizes(x, partition, 0)
    weights, biases = mlp_params(dim_a, dim_b, 4, 1, torch.float64)
    params = [p.requires_grad_() for p in weights + biases]
    net = coupling_net(partition, shape, torch.float64)

    def fused(x, *params):
        return ops.additive_coupling_mlp(x, params[:2], params[2:], partition, 0, reverse=True)

    def module(x):
        return ops.additive_coupling(x, net, partition, 0)

    with pyreversible.use_backend(backend):
        assert torch.autograd.gradcheck(fused, (x, *params))
        assert torch.autograd.gradcheck(module, (x,))


def round_trip_bound(layers, activations, dtype):
    """Error bound of inverse(forward(x)) through a stack of coupling layers.

    Forward rounds y_b = fl(x_b + m) and the inverse fl(y_b - m): each layer adds at most
    2 u M, with u the unit roundoff and M the largest magnitude met. An error d already in the
    inverse's input reaches m, whose Lipschitz constant is at most K = prod ||W_l||_2 (ReLU is
    1-Lipschitz), so it leaves the layer at most (1 + K) d. Summed over the stack:
    d_0 <= 2 u M sum_l prod_{j < l} (1 + K_j), with a factor 2 of margin.
    """
    u = torch.finfo(dtype).eps / 2
    magnitude = max(a.abs().max().item() for a in activations)
    bound, growth = 0.0, 1.0
    for layer in layers:
        net = layer.coupling_net
        lipschitz = 1.0
        for w in net.weights:
            lipschitz *= torch.linalg.matrix_norm(w.detach().double(), ord=2).item()
        bound += 2 * u * magnitude * growth
        growth *= 1 + lipschitz
    return 2 * bound


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("depth", [4, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip(backend, depth, dtype):
    if backend == "triton" and DEVICE == "cpu" and depth == 64:
        depth = 16  # the interpreter is slow; 16 layers already exercise the accumulation
    dim = 32
    layers = [
        pyreversible.nn.AdditiveCoupling(dim, 32, 2, "odd-even", parity=i % 2) for i in range(depth)
    ]
    for layer in layers:
        # weights small enough that m is a contraction (K ~ 0.1): the bound stays meaningful
        for w in layer.coupling_net.weights:
            w.data.mul_(0.3)
        layer.to(device=DEVICE, dtype=dtype)
    x = torch.randn(17, dim, dtype=dtype, device=DEVICE)
    with torch.no_grad(), pyreversible.use_backend(backend):
        activations = [x]
        for layer in layers:
            activations.append(layer(activations[-1]))
        back = activations[-1]
        for layer in reversed(layers):
            back = layer.inverse(back)
    error = (back - x).abs().max().item()
    assert error <= round_trip_bound(layers, activations, dtype)


def op_args(dtype=torch.float64):
    x = torch.randn(5, 7, dtype=dtype, device=DEVICE)
    layout = partition_layout(x.shape, "odd-even", 1)
    weights, biases = mlp_params(layout[2], layout[3], 6, 2, dtype)
    return x, layout, weights, biases


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    namespace = getattr(torch.ops, _NAMESPACE[backend])
    _kernels(backend)
    x, layout, weights, biases = op_args()
    y, hidden = namespace.additive_coupling_mlp_fwd(x, weights, biases, layout, 1, True)
    shift = torch.randn(5, layout[3], dtype=x.dtype, device=DEVICE)
    dy = torch.randn_like(x)
    # the ops carry no autograd of their own (the autograd.Functions in pyreversible.ops do)
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(namespace.additive_coupling_fwd, (x, shift, layout, -1), test_utils=utils)
    torch.library.opcheck(
        namespace.additive_coupling_mlp_fwd, (x, weights, biases, layout, 1, True), test_utils=utils
    )
    torch.library.opcheck(
        namespace.additive_coupling_mlp_bwd, (dy, y, weights, hidden, layout, 1), test_utils=utils
    )


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_compile_nice_fullgraph(backend):
    model = pyreversible.nn.NICE(10, num_couplings=4, hidden=16, num_hidden_layers=2).to(DEVICE)
    x = torch.rand(8, 10, device=DEVICE)

    def loss(x):
        return -model.log_prob(x).mean()

    with pyreversible.use_backend(backend):
        expected = loss(x)
        expected_grads = torch.autograd.grad(expected, list(model.parameters()))
        compiled = torch.compile(loss, fullgraph=True)
        got = compiled(x)
        got_grads = torch.autograd.grad(got, list(model.parameters()))
    assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert_close(g, e)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, w, b, "diagonal"),
            ValueError,
            "partition must be one of",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, w, b, "half", parity=2),
            ValueError,
            "parity must be 0 or 1",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x[0], w, b, "half"),
            ValueError,
            r"needs x of shape \(B, D\)",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x.view(4, 2, 2, 2), w, b, "half"),
            ValueError,
            "needs x of shape",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, w, b, "channel"),
            ValueError,
            r"\(B, C, H, W\)",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x.view(4, 1, 2, 4), w, b, "channel"),
            ValueError,
            "at least 2 channels",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x.view(4, 2, 4, 1), w, b, "checkerboard"),
            ValueError,
            "even width",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x[:, :1], w, b, "odd-even"),
            ValueError,
            "at least 2 features",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x.long(), w, b, "half"),
            TypeError,
            "floating-point",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x.double(), w, b, "half"),
            TypeError,
            "expected x's torch.float64",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, w[:1], b, "half"),
            ValueError,
            "as many biases as weights",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, [w[0].t(), w[1]], b, "half"),
            ValueError,
            r"weight \(out, 4\)",
        ),
        (lambda x, w, b: ops.additive_coupling_mlp(x[:, :7], w, b, "half"), ValueError, "weight"),
        (
            lambda x, w, b: ops.additive_coupling_mlp(
                x, [w[0], w[1][:3]], [b[0], b[1][:3]], "half"
            ),
            ValueError,
            "4 outputs",
        ),
        (
            lambda x, w, b: ops.additive_coupling_mlp(x, [w[0].to("meta"), w[1]], b, "half"),
            ValueError,
            "is on meta",
        ),
        (
            lambda x, w, b: ops.additive_coupling(x, lambda a: a[:, :3], "half"),
            ValueError,
            "shaped like x_b",
        ),
        (
            lambda x, w, b: ops.additive_coupling(x, lambda a: a.double(), "half"),
            TypeError,
            "coupling_net returned",
        ),
    ],
)
def test_bad_input(call, error, message):
    x = torch.randn(4, 8, device=DEVICE)
    weights, biases = mlp_params(4, 4, 5, 1, torch.float32)
    for backend in ["reference", *BACKENDS]:
        with pyreversible.use_backend(backend), pytest.raises(error, match=message):
            call(x, weights, biases)


def test_cpp_on_cpu_rejects_half_precision():
    if DEVICE != "cpu" or "cpp" not in BACKENDS:
        pytest.skip("the C++ CPU kernels are what this checks")
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    weights, biases = mlp_params(4, 4, 5, 1, torch.bfloat16)
    with pyreversible.use_backend("cpp"), pytest.raises(TypeError, match="takes float32, float64"):
        ops.additive_coupling_mlp(x, weights, biases)
    # auto falls back to a backend that takes the dtype
    y = ops.additive_coupling_mlp(x, weights, biases)
    assert_close(y, reference.additive_coupling_mlp(x, weights, biases), dtype=torch.bfloat16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_rejects_inconsistent_layout(backend):
    namespace = _kernels(backend)
    x, layout, weights, biases = op_args()
    shift = torch.randn(5, layout[3], dtype=x.dtype, device=DEVICE)
    # dim_a + dim_b no longer equals D: the kernel's own check answers before it runs
    bad = list(layout)
    bad[2] += 1
    with pytest.raises(ValueError):
        namespace.additive_coupling_mlp_fwd(x, weights, biases, bad, 1, False)
    with pytest.raises((ValueError, RuntimeError), match="shift"):
        namespace.additive_coupling_fwd(x, shift[:, :-1], layout, 1)
