"""Masked convolution (PixelCNN): every backend against the reference and nn.Conv2d, outputs
and every gradient, causality, compile, the module and bad input."""

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, DTYPES, assert_close, strided
from torch import nn

import pyreversible
from pyreversible import _backend, ops, reference
from pyreversible.nn import MaskedConv2d
from pyreversible.ops.masked_conv2d import _BACKENDS, _kernels

# the compiled backends that implement this op on the test device
OP_BACKENDS = [b for b in BACKENDS if b in _BACKENDS.get(DEVICE, ())]

# Under the Triton interpreter every operation of every program runs in Python: a call costs
# about a second per few taps whatever the size, so interpreted Triton takes fewer cases.
INTERPRETED = DEVICE == "cpu"

# (batch, in channels, out channels, height, width, bias): sizes 1, 3, 7, 28 and channels
# 1, 3, 16, each with and without a bias somewhere
CASES = [
    (1, 1, 1, 1, 1, True),
    (3, 3, 16, 3, 7, False),
    (1, 16, 3, 28, 3, True),
    (3, 3, 3, 7, 28, True),
    (1, 16, 16, 28, 28, False),
]
CASE_IDS = [f"B{b}-I{i}-O{o}-{h}x{w}-bias{int(bias)}" for b, i, o, h, w, bias in CASES]

# (dtype, mask type, K, case) on interpreted Triton: every dtype, both masks, K 1, 3, 5 (type A
# with K 1 keeps no tap: y is the bias), and tiles of several channel blocks (40 and 70 exceed
# one block of each)
INTERPRETED_CASES = [
    (torch.float32, "A", 3, (3, 3, 16, 3, 7, False)),
    (torch.float64, "B", 5, (1, 16, 3, 9, 6, True)),
    (torch.float64, "A", 1, (3, 3, 3, 7, 5, True)),
    (torch.float16, "B", 3, (2, 3, 5, 6, 7, True)),
    (torch.bfloat16, "A", 5, (1, 3, 4, 5, 5, True)),
    (torch.float32, "B", 3, (1, 40, 70, 4, 5, True)),
]


def backend_cases(backends):
    # (backend, dtype, mask type, K, case): every combination on the CPU's C++ kernels and on
    # a GPU, the cases above on interpreted Triton
    params = []
    for backend in backends:
        if backend == "triton" and INTERPRETED:
            combos = INTERPRETED_CASES
        else:
            combos = [
                (dtype, mask_type, k, case)
                for dtype in DTYPES
                for mask_type in "AB"
                for k in (1, 3, 5, 7)
                for case in CASES
            ]
        for dtype, mask_type, k, case in combos:
            b, i, o, h, w, bias = case
            ident = (
                f"{backend}-{str(dtype).removeprefix('torch.')}-{mask_type}-K{k}-"
                f"B{b}-I{i}-O{o}-{h}x{w}-bias{int(bias)}"
            )
            params.append(pytest.param(backend, dtype, mask_type, k, case, id=ident))
    return params


def slow_under_interpreter(backend):
    # whether `backend` runs interpreted here, where a test takes its smallest variant
    return backend == "triton" and INTERPRETED


def make_args(case, k, dtype, requires_grad=True):
    batch, cin, cout, h, w, has_bias = case
    x = torch.randn(batch, cin, h, w, dtype=dtype, device=DEVICE)
    # weights scaled by the fan-in, so that outputs are O(1) whatever the size
    weight = torch.randn(cout, cin, k, k, dtype=dtype, device=DEVICE) / (cin * k * k) ** 0.5
    bias = torch.randn(cout, dtype=dtype, device=DEVICE) if has_bias else None
    args = [x, weight, bias]
    if requires_grad:
        for t in args:
            if t is not None:
                t.requires_grad_()
    return args


def grads(y, inputs, cotangent):
    return torch.autograd.grad(y, [t for t in inputs if t is not None], cotangent)


def conv_masked(x, weight, bias, mask_type):
    # nn.Conv2d holding the masked weight: the definition written independently of the reference
    k = weight.shape[-1]
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], k, padding=k // 2, bias=bias is not None)
    conv = conv.to(device=DEVICE, dtype=weight.dtype)
    mask = reference.conv_mask(k, mask_type, device=DEVICE, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight * mask)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv, mask


@pytest.mark.parametrize(
    ("backend", "dtype", "mask_type", "k", "case"), backend_cases(["reference", *OP_BACKENDS])
)
def test_matches_reference_and_conv2d(backend, dtype, mask_type, k, case):
    x, weight, bias = args = make_args(case, k, dtype)
    cotangent = torch.randn(case[0], case[2], case[3], case[4], dtype=dtype, device=DEVICE)

    with pyreversible.use_backend(backend):
        y = ops.masked_conv2d(x, weight, bias, mask_type)
    expected = reference.masked_conv2d(x, weight, bias, mask_type)
    got_grads = grads(y, args, cotangent)
    assert y.shape == expected.shape
    assert_close(y, expected)
    for got, want in zip(got_grads, grads(expected, args, cotangent), strict=True):
        assert_close(got, want)

    # against nn.Conv2d with the masked weight; its weight gradient is a full convolution's,
    # equal to ours at the kept taps, and ours is exactly zero at the masked ones
    conv, mask = conv_masked(x, weight, bias, mask_type)
    xc = x.detach().requires_grad_()
    y_conv = conv(xc)
    assert_close(y, y_conv, dtype)
    conv_grads = grads(y_conv, [xc, conv.weight, conv.bias], cotangent)
    assert_close(got_grads[0], conv_grads[0], dtype)
    assert_close(got_grads[1], conv_grads[1] * mask, dtype)
    assert (got_grads[1][..., mask == 0] == 0).all()
    if bias is not None:
        assert_close(got_grads[2], conv_grads[2], dtype)


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("layout", ["strided", "channels_last", "transposed"])
def test_non_contiguous_inputs(backend, layout):
    x, weight, bias = make_args((3, 5, 4, 7, 9, True), 5, torch.float64, requires_grad=False)
    cotangent = torch.randn(3, 4, 7, 9, dtype=torch.float64, device=DEVICE)
    if layout == "strided":
        xs, ws, cs = strided(x), strided(weight), strided(cotangent)
    elif layout == "channels_last":
        xs = x.to(memory_format=torch.channels_last)
        ws = weight.to(memory_format=torch.channels_last)
        cs = cotangent.to(memory_format=torch.channels_last)
    else:
        # H and W swapped in memory: every stride of the last two dimensions is not 1
        xs = x.transpose(2, 3).contiguous().transpose(2, 3)
        ws = weight.transpose(2, 3).contiguous().transpose(2, 3)
        cs = cotangent.transpose(2, 3).contiguous().transpose(2, 3)
    assert not xs.is_contiguous() and not ws.is_contiguous() and not cs.is_contiguous()
    xs.requires_grad_()
    ws.requires_grad_()
    x.requires_grad_()
    weight.requires_grad_()

    with pyreversible.use_backend(backend):
        y = ops.masked_conv2d(xs, ws, bias, "A")
        got = torch.autograd.grad(y, [xs, ws], cs)
    expected = reference.masked_conv2d(x, weight, bias, "A")
    assert_close(y, expected)
    for g, e in zip(got, torch.autograd.grad(expected, [x, weight], cotangent), strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_broadcast_cotangent_and_no_input_grad(backend):
    # y.sum() hands the backward a stride-0 dy; x without grad skips dx
    x, weight, bias = make_args((2, 3, 4, 5, 6, True), 3, torch.float64)
    x.requires_grad_(False)
    with pyreversible.use_backend(backend):
        y = ops.masked_conv2d(x, weight, bias, "B")
        got = torch.autograd.grad(y.sum(), [weight, bias])
    expected = reference.masked_conv2d(x, weight, bias, "B")
    for g, e in zip(got, torch.autograd.grad(expected.sum(), [weight, bias]), strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_inference_has_no_autograd_node(backend):
    x, weight, bias = make_args((2, 3, 4, 5, 6, True), 3, torch.float32)
    with torch.no_grad(), pyreversible.use_backend(backend):
        y = ops.masked_conv2d(x, weight, bias, "A")
    assert y.grad_fn is None
    assert_close(y, reference.masked_conv2d(x, weight, bias, "A").detach())


def per_backend(variants, interpreted):
    # (backend, *variant) for every backend, with fewer variants on interpreted Triton
    return [
        (backend, *variant)
        for backend in OP_BACKENDS
        for variant in (interpreted if slow_under_interpreter(backend) else variants)
    ]


@pytest.mark.parametrize(
    ("backend", "mask_type", "k"),
    per_backend([("A", 3), ("B", 3), ("A", 5), ("B", 1)], [("A", 3), ("B", 1)]),
)
def test_gradcheck(backend, mask_type, k):
    x, weight, bias = make_args((2, 2, 3, 4, 5, True), k, torch.float64)
    # interpreted Triton checks random directions of the Jacobian (fast mode): the full
    # Jacobian takes a kernel launch per input element
    fast = slow_under_interpreter(backend)
    with pyreversible.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda x, w, b: ops.masked_conv2d(x, w, b, mask_type), (x, weight, bias), fast_mode=fast
        )


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_opcheck(backend):
    x, weight, bias = make_args((2, 3, 4, 5, 6, True), 3, torch.float32, requires_grad=False)
    dy = torch.randn(2, 4, 5, 6, device=DEVICE)
    namespace = _kernels(backend)
    # the ops carry no autograd of their own (MaskedConv2dFunction does)
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(namespace.masked_conv2d_fwd, (x, weight, bias, "A"), test_utils=utils)
    torch.library.opcheck(namespace.masked_conv2d_fwd, (x, weight, None, "B"), test_utils=utils)
    for need_dx in (True, False):
        torch.library.opcheck(
            namespace.masked_conv2d_bwd, (dy, x, weight, "B", need_dx), test_utils=utils
        )


@pytest.mark.parametrize("backend", ["reference", *OP_BACKENDS])
def test_compile_stack_fullgraph(backend):
    model = nn.Sequential(
        MaskedConv2d(3, 8, 5, mask_type="A"),
        nn.ReLU(),
        MaskedConv2d(8, 8, 3, mask_type="B"),
        nn.ReLU(),
        MaskedConv2d(8, 3, 1, mask_type="B", bias=False),
    ).to(DEVICE)
    x = torch.randn(2, 3, 9, 7, device=DEVICE)

    def loss(x):
        return model(x).square().mean()

    with pyreversible.use_backend("reference"):
        expected = loss(x)
        expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    with pyreversible.use_backend(backend):
        got = torch.compile(loss, fullgraph=True)(x)
        got_grads = torch.autograd.grad(got, list(model.parameters()))
    assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("backend", ["reference", *OP_BACKENDS])
@pytest.mark.parametrize("bias", [True, False])
def test_loads_conv2d_state_dict(backend, bias):
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=bias).to(DEVICE)
    layer = MaskedConv2d(3, 5, (3, 3), mask_type="B", bias=bias).to(DEVICE)
    layer.load_state_dict(conv.state_dict())
    assert layer.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(2, 3, 6, 5, device=DEVICE)
    mask = reference.conv_mask(3, "B", device=DEVICE)
    with pyreversible.use_backend(backend):
        y = layer(x)
    assert_close(y, F.conv2d(x, conv.weight * mask, conv.bias, padding=1))


@pytest.mark.parametrize(
    ("backend", "mask_type", "k"),
    [(b, m, k) for b in ["reference"] for m in "AB" for k in (3, 5)]
    + per_backend([(m, k) for m in "AB" for k in (3, 5)], [("A", 3), ("B", 5)]),
)
def test_causality(backend, mask_type, k):
    """Perturbing input pixel q (every channel) changes no output at a pixel p <= q in raster
    order for type A, and none at p < q for type B; it does change the output at the next pixel
    (A) or at q itself (B), so the mask does not drop kept taps either."""
    height, width = 5, 6
    x, weight, bias = make_args((1, 2, 3, height, width, True), k, torch.float64, False)
    raster = torch.arange(height * width, device=DEVICE).view(height, width)
    # the unaffected outputs are computed from identical operands: exactly equal in the kernels;
    # torch's convolution may transform its inputs (Winograd), so the reference gets rounding
    atol = 0.0 if backend != "reference" else 1e-12
    with pyreversible.use_backend(backend):
        y = ops.masked_conv2d(x, weight, bias, mask_type)
        for qh, qw in [(0, 0), (2, 3), (4, 4), (1, 5)]:
            x2 = x.clone()
            x2[:, :, qh, qw] += 1.0
            change = (ops.masked_conv2d(x2, weight, bias, mask_type) - y).abs().amax(dim=(0, 1))
            q = qh * width + qw
            before = raster <= q if mask_type == "A" else raster < q
            assert change[before].max().item() <= atol if before.any() else True
            first = (qh, qw + 1) if mask_type == "A" else (qh, qw)
            if first[1] < width:
                assert change[first] > 1e-6


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda x, w, b: (x, w[..., :4, :4], None, "A"), ValueError, "kernel_size must be odd"),
        (lambda x, w, b: (x, w[..., :3, :], b, "A"), ValueError, "square kernel"),
        (lambda x, w, b: (x, w, b, "C"), ValueError, "mask_type must be 'A' or 'B'"),
        (lambda x, w, b: (x, w, b, 1), TypeError, "mask_type must be a str"),
        (lambda x, w, b: (x[0], w, b, "A"), ValueError, r"x must be \(B, C, H, W\)"),
        (lambda x, w, b: (x, w[0], b, "A"), ValueError, r"weight must be \(O, I, K, K\)"),
        (lambda x, w, b: (x[:, :2], w, b, "B"), ValueError, "3 input channels, x has 2"),
        (lambda x, w, b: (x, w.double(), b, "B"), TypeError, "expected x's torch.float32"),
        (lambda x, w, b: (x.long(), w, b, "B"), TypeError, "x must be floating-point"),
        (lambda x, w, b: (x, w.to("meta"), b, "B"), ValueError, "weight is on meta"),
        (lambda x, w, b: (x, w, b[:3], "B"), ValueError, r"bias must be \(4,\)"),
        (lambda x, w, b: (x[:0], w, b, "B"), ValueError, "must not be empty"),
        (lambda x, w, b: (x.numpy(), w, b, "B"), TypeError, "x must be a tensor"),
    ],
)
def test_bad_input(make, error, message):
    x = torch.randn(2, 3, 5, 5)
    weight = torch.randn(4, 3, 5, 5)
    bias = torch.randn(4)
    for backend in ["reference", *OP_BACKENDS]:
        with (
            pyreversible.use_backend(backend),
            pytest.raises(error, match=f"masked_conv2d: .*{message}"),
        ):
            ops.masked_conv2d(*make(x, weight, bias))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 4}, "odd int"),
        ({"kernel_size": (3, 5)}, "must be square"),
        ({"kernel_size": 3, "mask_type": "C"}, "mask_type must be 'A' or 'B'"),
    ],
)
def test_module_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskedConv2d(3, 4, **kwargs)


def test_backend_choice():
    x, weight, bias = make_args((1, 2, 2, 3, 3, True), 3, torch.float32, False)
    # interpreted Triton is for tests: auto never takes it on the CPU
    cpu = torch.device("cpu")
    assert _backend.resolve("masked_conv2d", cpu, torch.float32, _BACKENDS) != "triton"
    if "cpp" not in OP_BACKENDS:
        return
    xb, wb = x.bfloat16(), weight.bfloat16()
    if DEVICE == "cpu":
        # the C++ CPU kernels take float32 and float64 only (the CUDA ones take bfloat16 too)
        with (
            pyreversible.use_backend("cpp"),
            pytest.raises(TypeError, match="takes float32, float64"),
        ):
            ops.masked_conv2d(xb, wb)
    # auto takes the reference on the CPU, the CUDA kernels on a GPU
    assert_close(ops.masked_conv2d(xb, wb), reference.masked_conv2d(xb, wb), torch.bfloat16)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_kernel_checks_its_arguments(backend):
    x, weight, bias = make_args((1, 2, 2, 3, 3, True), 3, torch.float32, False)
    namespace = _kernels(backend)
    with pytest.raises(ValueError, match="masked_conv2d_fwd: .*odd size"):
        namespace.masked_conv2d_fwd(x, weight[..., :2, :2], bias, "A")
    with pytest.raises(ValueError, match="masked_conv2d_fwd: mask_type"):
        namespace.masked_conv2d_fwd(x, weight, bias, "C")
    with pytest.raises(ValueError, match="masked_conv2d_fwd: bias"):
        namespace.masked_conv2d_fwd(x, weight, bias[:1], "A")
    with pytest.raises(ValueError, match="masked_conv2d_bwd: dy"):
        namespace.masked_conv2d_bwd(x[:, :1], x, weight, "A", True)
