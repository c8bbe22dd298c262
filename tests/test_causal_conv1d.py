"""Causal dilated convolution: every backend against the reference and nn.Conv1d on the
left-padded input, outputs and every gradient."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, DTYPES, assert_close, strided
from torch import nn

import pyreversible
from pyreversible import _backend, ops, reference
from pyreversible.nn import CausalConv1d
from pyreversible.ops.causal_conv1d import _BACKENDS, _kernels

# the compiled backends this op has on the test device, of those that can run here
CONV_BACKENDS = [b for b in BACKENDS if b in _BACKENDS.get(DEVICE, ())]

# (B, C_in, C_out, T, K, dilation, groups, bias): together they cover K 1, 2, 3, 5, dilations
# 1, 2, 7, 64, 512 (some reaching back further than the whole sequence), groups 1, 2 and
# depthwise (and C_in groups with two outputs each, which takes the GEMM path), T 1, 3, 63,
# 129, 1000, batch 1 and 3, with and without bias.
CASES = [
    (1, 3, 5, 1, 1, 1, 1, True),
    (3, 4, 6, 3, 2, 1, 1, False),
    (1, 4, 6, 63, 3, 2, 2, True),
    (3, 5, 5, 129, 5, 7, 5, True),
    (3, 8, 4, 1000, 2, 64, 1, True),
    (1, 6, 6, 1000, 3, 512, 6, False),
    (3, 4, 8, 129, 2, 512, 2, True),
    (1, 16, 16, 1000, 3, 7, 1, True),
    (3, 6, 6, 63, 5, 64, 3, True),
    (1, 2, 4, 1000, 1, 512, 2, False),
    (3, 32, 32, 1000, 2, 2, 1, True),
    (3, 4, 8, 63, 3, 1, 4, True),
]

# Under the Triton interpreter every program runs in Python, one after another: smaller cases
# that still cover K 1, 2, 3, dilations 1, 2, 7, 64 (past the whole sequence too), groups 1, 2
# and depthwise (and one input with two outputs per group, which is not), T 1, 3, 63, 129, and
# tiles of several channel and time blocks (40 inputs and 70 outputs exceed one block of each).
INTERPRETED_CASES = [
    (1, 3, 5, 1, 1, 1, 1, True),
    (3, 4, 6, 3, 2, 1, 1, False),
    (1, 4, 6, 63, 3, 2, 2, True),
    (2, 4, 4, 129, 3, 7, 4, True),
    (2, 4, 8, 129, 2, 64, 2, False),
    (1, 6, 6, 63, 2, 64, 6, True),
    (1, 40, 70, 129, 2, 7, 1, True),
    (2, 3, 6, 3, 3, 64, 3, True),
]
INTERPRETED = DEVICE == "cpu"


def case_id(case):
    return "B{}-C{}to{}-T{}-K{}-d{}-g{}-bias{:d}".format(*case)


def backend_cases(backends):
    # (backend, dtype, case): every case on each backend, the small ones on interpreted Triton,
    # which also takes float16 and bfloat16 (the CPU's C++ kernels do not)
    params = []
    for backend in backends:
        interpreted = backend == "triton" and INTERPRETED
        dtypes = [*DTYPES, torch.float16, torch.bfloat16] if interpreted else DTYPES
        for dtype in dtypes:
            for case in INTERPRETED_CASES if interpreted else CASES:
                ident = f"{backend}-{str(dtype).removeprefix('torch.')}-{case_id(case)}"
                params.append(pytest.param(backend, dtype, case, id=ident))
    return params


def conv_params(c_in, c_out, taps, groups, bias, dtype):
    # scaled as nn.Conv1d's initialisation, so that outputs are O(1) whatever the fan-in
    fan_in = c_in // groups * taps
    weight = torch.randn(c_out, c_in // groups, taps, dtype=dtype, device=DEVICE) / fan_in**0.5
    b = 0.1 * torch.randn(c_out, dtype=dtype, device=DEVICE) if bias else None
    return weight, b


def padded_conv1d(x, weight, bias, dilation, groups):
    # nn.Conv1d itself, on an explicitly left-padded copy: an independent check of the reference
    c_out, c_in_per_group, taps = weight.shape
    conv = nn.Conv1d(
        c_in_per_group * groups,
        c_out,
        taps,
        dilation=dilation,
        groups=groups,
        bias=bias is not None,
    ).to(device=x.device, dtype=x.dtype)
    # the module's parameters are the given tensors, so gradients flow back to them
    del conv.weight, conv.bias
    conv.weight, conv.bias = weight, bias
    return conv(F.pad(x, ((taps - 1) * dilation, 0)))


def check_against(backend, x, weight, bias, dilation, groups, cotangent, dtype):
    inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    with pyreversible.use_backend(backend):
        y = ops.causal_conv1d(x, weight, bias, dilation, groups)
    grads = torch.autograd.grad(y, inputs, cotangent)
    for definition in (reference.causal_conv1d, padded_conv1d):
        expected = definition(x, weight, bias, dilation, groups)
        assert y.shape == expected.shape
        assert_close(y, expected, dtype)
        for got, want in zip(grads, torch.autograd.grad(expected, inputs, cotangent), strict=True):
            assert_close(got, want, dtype)


@pytest.mark.parametrize(("backend", "dtype", "case"), backend_cases(CONV_BACKENDS))
def test_matches_reference_and_conv1d(backend, dtype, case):
    batch, c_in, c_out, length, taps, dilation, groups, bias = case
    x = torch.randn(batch, c_in, length, dtype=dtype, device=DEVICE, requires_grad=True)
    weight, b = conv_params(c_in, c_out, taps, groups, bias, dtype)
    weight.requires_grad_()
    if b is not None:
        b.requires_grad_()
    cotangent = torch.randn(batch, c_out, length, dtype=dtype, device=DEVICE)
    check_against(backend, x, weight, b, dilation, groups, cotangent, dtype)


def channels_last(t):
    # the same values with the time steps not contiguous: a (B, T, C) buffer seen as (B, C, T)
    return t.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("layout", [strided, channels_last], ids=["strided", "channels_last"])
@pytest.mark.parametrize(
    "case",
    [(3, 6, 4, 129, 3, 7, 2, True), (3, 5, 5, 63, 2, 2, 5, True), (1, 4, 4, 1000, 2, 64, 1, False)],
    ids=["grouped", "depthwise", "dense"],
)
def test_non_contiguous_inputs(backend, layout, case):
    batch, c_in, c_out, length, taps, dilation, groups, bias = case
    dtype = torch.float64
    x = layout(torch.randn(batch, c_in, length, dtype=dtype, device=DEVICE)).requires_grad_()
    assert not x.is_contiguous()
    weight, b = conv_params(c_in, c_out, taps, groups, bias, dtype)
    weight.requires_grad_()
    # the cotangent non-contiguous as well: dy reaches the backward with its own strides
    cotangent = layout(torch.randn(batch, c_out, length, dtype=dtype, device=DEVICE))
    check_against(backend, x, weight, b, dilation, groups, cotangent, dtype)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("groups", [1, 4])
def test_gradients_of_a_subset(backend, groups):
    # only the weight needs a gradient (x is data, no bias): dx and db are not computed
    x = torch.randn(3, 4, 63, dtype=torch.float64, device=DEVICE)
    weight, _ = conv_params(4, 4, 3, groups, False, torch.float64)
    weight.requires_grad_()
    cotangent = torch.randn(3, 4, 63, dtype=torch.float64, device=DEVICE)
    check_against(backend, x, weight, None, 5, groups, cotangent, torch.float64)


@pytest.mark.skipif("triton" not in CONV_BACKENDS, reason="triton cannot run here")
@pytest.mark.parametrize("groups", [2, 6], ids=["grouped", "depthwise"])
@pytest.mark.parametrize("splits", [3, 4], ids=["even", "one-empty"])
def test_triton_split_reductions(monkeypatch, splits, groups):
    # a GPU splits each tile's weight and bias sums over several programs and adds their partial
    # sums after; forced here on any device: 6 (row, time block) chunks over 3 or 4 splits, the
    # last of 4 with nothing to sum
    triton_kernels = importlib.import_module("pyreversible.kernels.causal_conv1d")
    monkeypatch.setattr(triton_kernels, "_splits", lambda t, tiles, num_chunks: splits)
    x = torch.randn(2, 6, 129, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight, b = conv_params(6, 6, 3, groups, True, torch.float64)
    weight.requires_grad_()
    b.requires_grad_()
    cotangent = torch.randn(2, 6, 129, dtype=torch.float64, device=DEVICE)
    check_against("triton", x, weight, b, 7, groups, cotangent, torch.float64)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_no_grad_matches_reference(backend):
    x = torch.randn(3, 8, 129, device=DEVICE)
    weight, b = conv_params(8, 8, 2, 1, True, torch.float32)
    with torch.no_grad(), pyreversible.use_backend(backend):
        y = ops.causal_conv1d(x, weight, b, 4)
    assert y.grad_fn is None
    assert_close(y, reference.causal_conv1d(x, weight, b, 4))


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 4, 9), (2, 4, 0)], ids=["no-batch", "no-time"])
def test_empty_inputs(backend, shape):
    x = torch.randn(*shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight, b = conv_params(4, 6, 3, 2, True, torch.float64)
    weight.requires_grad_()
    b.requires_grad_()
    with pyreversible.use_backend(backend):
        y = ops.causal_conv1d(x, weight, b, 2, 2)
    assert y.shape == (shape[0], 6, shape[2])
    dx, dw, db = torch.autograd.grad(y.sum(), [x, weight, b])
    assert dx.shape == x.shape
    assert_close(dw, torch.zeros_like(dw))
    assert_close(db, torch.zeros_like(db))


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize(
    "case",
    [(2, 4, 6, 9, 3, 2, 2, True), (2, 3, 3, 7, 2, 3, 3, True), (1, 2, 3, 5, 1, 1, 1, False)],
    ids=["grouped", "depthwise", "pointwise"],
)
def test_gradcheck(backend, case):
    batch, c_in, c_out, length, taps, dilation, groups, bias = case
    x = torch.randn(batch, c_in, length, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight, b = conv_params(c_in, c_out, taps, groups, bias, torch.float64)
    params = [weight.requires_grad_()] + ([b.requires_grad_()] if bias else [])

    def fn(x, weight, *b):
        return ops.causal_conv1d(x, weight, b[0] if b else None, dilation, groups)

    # interpreted Triton checks random directions of the Jacobian (fast mode): the full one
    # takes a kernel launch per input element, each a Python loop over programs
    fast = backend == "triton" and INTERPRETED
    with pyreversible.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=fast)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_opcheck(backend, groups):
    x = torch.randn(3, 6, 17, dtype=torch.float64, device=DEVICE)
    weight, b = conv_params(6, 6, 3, groups, True, torch.float64)
    dy = torch.randn(3, 6, 17, dtype=torch.float64, device=DEVICE)
    # the ops carry no autograd of their own (CausalConv1dFunction in pyreversible.ops does)
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    fwd, bwd = _kernels(backend).causal_conv1d_fwd, _kernels(backend).causal_conv1d_bwd
    torch.library.opcheck(fwd, (x, weight, b, 2, groups), test_utils=utils)
    torch.library.opcheck(fwd, (strided(x), weight, None, 5, groups), test_utils=utils)
    torch.library.opcheck(bwd, (dy, x, weight, 2, groups, [True, True, True]), test_utils=utils)
    torch.library.opcheck(bwd, (dy, x, weight, 3, groups, [False, True, False]), test_utils=utils)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("groups", [1, 2, 4], ids=["dense", "grouped", "depthwise"])
@pytest.mark.parametrize("where", ["weight", "x", "dy"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_values_propagate_as_in_the_reference(backend, groups, where, value):
    # the padding's zeros meet a weight, and taps reach past either end of the sequence: the
    # kernels must make NaN exactly where the reference does, no more and no fewer
    x = torch.randn(2, 4, 20, dtype=torch.float64, device=DEVICE)
    weight, b = conv_params(4, 4, 3, groups, True, torch.float64)
    cotangent = torch.randn(2, 4, 20, dtype=torch.float64, device=DEVICE)
    {"weight": weight, "x": x, "dy": cotangent}[where].view(-1)[5] = value
    results = []
    for run in (backend, "reference"):
        inputs = [t.clone().requires_grad_() for t in (x, weight, b)]
        with pyreversible.use_backend(run):
            y = ops.causal_conv1d(*inputs, 5, groups)
        results.append([y, *torch.autograd.grad(y, inputs, cotangent)])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9, equal_nan=True)


class Stack(nn.Module):
    # a small WaveNet-like stack: dense, depthwise and grouped causal convolutions with tanh
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                CausalConv1d(4, 8, 2, dilation=1),
                CausalConv1d(8, 8, 3, dilation=2, groups=8),
                CausalConv1d(8, 8, 2, dilation=4, groups=2, bias=False),
                CausalConv1d(8, 4, 1),
            ]
        )

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


@pytest.mark.parametrize("backend", ["reference", *CONV_BACKENDS])
def test_compile_stack_fullgraph(backend):
    model = Stack().to(DEVICE)
    x = torch.randn(3, 4, 37, device=DEVICE, requires_grad=True)

    def loss(x):
        return model(x).square().mean()

    inputs = [x, *model.parameters()]
    with pyreversible.use_backend(backend):
        expected = loss(x)
        expected_grads = torch.autograd.grad(expected, inputs)
        got = torch.compile(loss, fullgraph=True)(x)
        got_grads = torch.autograd.grad(got, inputs)
    assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("backend", ["reference", *CONV_BACKENDS])
@pytest.mark.parametrize("bias", [True, False])
def test_module_loads_conv1d_state_dict(backend, bias):
    conv = nn.Conv1d(6, 4, 3, dilation=5, groups=2, bias=bias).to(DEVICE)
    module = CausalConv1d(6, 4, 3, dilation=5, groups=2, bias=bias).to(DEVICE)
    module.load_state_dict(conv.state_dict())
    assert module.receptive_field == 11
    x = torch.randn(2, 6, 40, device=DEVICE)
    with pyreversible.use_backend(backend):
        y = module(x)
    assert_close(y, conv(F.pad(x, (10, 0))))
    # and the other way: nn.Conv1d loads the module's state dict
    conv.load_state_dict(CausalConv1d(6, 4, 3, dilation=5, groups=2, bias=bias).state_dict())


def test_module_rejects_bad_configuration():
    with pytest.raises(ValueError, match="CausalConv1d: dilation must be an int >= 1"):
        CausalConv1d(4, 4, 2, dilation=0)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        CausalConv1d(4, 6, 2, groups=3)


def bad_calls():
    x = torch.randn(2, 4, 10, device=DEVICE)
    w = torch.randn(6, 2, 3, device=DEVICE)
    b = torch.randn(6, device=DEVICE)
    c = ops.causal_conv1d
    return [
        ("dilation 0", lambda: c(x, w, b, 0, 2), ValueError, "dilation must be >= 1, got 0"),
        ("dilation float", lambda: c(x, w, b, 1.5, 2), TypeError, "dilation must be an int"),
        ("dilation bool", lambda: c(x, w, b, True, 2), TypeError, "dilation must be an int"),
        ("groups 0", lambda: c(x, w, b, 1, 0), ValueError, "groups must be >= 1"),
        ("x rank", lambda: c(x[0], w, b, 1, 2), ValueError, r"x must be \(B, C_in, T\)"),
        ("weight rank", lambda: c(x, w[0], b, 1, 2), ValueError, r"weight must be \(C_out"),
        ("channels", lambda: c(x[:, :3], w, b, 1, 1), ValueError, "x has C_in=3 channels"),
        ("groups divide", lambda: c(x, w, b, 1, 3), ValueError, "groups must divide C_in"),
        ("kernel size 0", lambda: c(x, w[..., :0], b, 1, 2), ValueError, "kernel size"),
        ("bias shape", lambda: c(x, w, b[:5], 1, 2), ValueError, r"bias must be \(6,\)"),
        ("weight dtype", lambda: c(x, w.double(), b, 1, 2), TypeError, "weight has dtype"),
        ("bias dtype", lambda: c(x, w, b.double(), 1, 2), TypeError, "bias has dtype"),
        ("x dtype", lambda: c(x.long(), w, b, 1, 2), TypeError, "floating-point"),
        ("device", lambda: c(x, w.to("meta"), b, 1, 2), ValueError, "weight is on meta"),
        ("not a tensor", lambda: c(x.tolist(), w, b, 1, 2), TypeError, "x must be a tensor"),
    ]


@pytest.mark.parametrize("index", range(len(bad_calls())), ids=[c[0] for c in bad_calls()])
def test_bad_input(index):
    _, call, error, message = bad_calls()[index]
    for backend in ["reference", *CONV_BACKENDS]:
        with (
            pyreversible.use_backend(backend),
            pytest.raises(error, match=f"causal_conv1d: .*{message}"),
        ):
            call()


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_kernel_checks_its_arguments(backend):
    # the torch layer's own checks answer before any kernel runs, with the op's name
    x = torch.randn(2, 4, 10, device=DEVICE)
    w = torch.randn(6, 2, 3, device=DEVICE)
    fwd, bwd = _kernels(backend).causal_conv1d_fwd, _kernels(backend).causal_conv1d_bwd
    with pytest.raises(ValueError, match="causal_conv1d_fwd: dilation must be >= 1"):
        fwd(x, w, None, 0, 2)
    with pytest.raises(ValueError, match="causal_conv1d_fwd: x has 4 channels"):
        fwd(x, w, None, 1, 1)
    with pytest.raises(ValueError, match="causal_conv1d_fwd: groups must be >= 1 and divide"):
        fwd(x, w, None, 1, 4)
    with pytest.raises(ValueError, match=r"causal_conv1d_bwd: x must be \(2, 4, 9\)"):
        bwd(torch.randn(2, 6, 9, device=DEVICE), x, w, 1, 2, [True, True, True])


def test_backends_the_op_does_not_have():
    cpu = torch.device("cpu")
    # auto takes only what the op has
    assert _backend.resolve("op", cpu, torch.float32, backends={"cpu": ()}) == "reference"
    if "cpp" in pyreversible.available_backends("cpu"):
        with (
            pyreversible.use_backend("cpp"),
            pytest.raises(pyreversible.BackendUnavailableError, match="op has no cpp kernels"),
        ):
            _backend.resolve("op", cpu, torch.float32, backends={"cuda": ("cpp",)})
    # on CUDA auto takes the CUDA C++ kernels
    if torch.cuda.is_available():
        x = torch.randn(2, 4, 10, device="cuda")
        w = torch.randn(4, 4, 2, device="cuda")
        assert_close(ops.causal_conv1d(x, w, None, 3), reference.causal_conv1d(x, w, None, 3))
