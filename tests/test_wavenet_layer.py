"""The fused WaveNet layer: every backend against the reference and against the layer written
out from other reference ops, outputs and every gradient."""

import functools

import pytest
import torch
from helpers import BACKENDS, DEVICE, DTYPES, TOLERANCES, assert_close, strided

import pyreversible
from pyreversible import ops, reference
from pyreversible.ops.wavenet_layer import _BACKENDS, _kernels

# the compiled backends this op has on the test device, of those that can run here
LAYER_BACKENDS = [b for b in BACKENDS if b in _BACKENDS.get(DEVICE, ())]

# Under the Triton interpreter every operation of every program runs in Python (about a second
# a call here whatever the size): interpreted Triton takes fewer cases.
INTERPRETED = DEVICE == "cpu"

# (B, R, G, S, T, K, dilation, C_local, C_global): together they cover K 1, 2, 3, dilations
# 1, 2, 7, 100, 512 (some reaching back further than the whole sequence), T 1, 63, 129, 1000,
# batch 1 and 3, and no, local, global and both conditionings (C = 0 for none). T 1000 with
# dilation 100 and K 3 splits the C++ backward's batch row into chunks whose taps reach
# several tiles past their end.
CASES = [
    (1, 3, 2, 5, 1, 1, 1, 0, 0),
    (3, 4, 3, 6, 63, 2, 1, 3, 0),
    (1, 5, 4, 7, 129, 3, 2, 0, 2),
    (3, 6, 5, 4, 129, 2, 7, 2, 3),
    (3, 4, 4, 8, 63, 3, 512, 0, 0),
    (1, 8, 6, 3, 129, 2, 512, 4, 1),
    (3, 3, 2, 5, 63, 1, 7, 1, 0),
    (3, 16, 16, 32, 129, 2, 2, 0, 0),
    (1, 8, 8, 8, 1000, 3, 100, 2, 1),
]
CASE_IDS = ["B{}-R{}-G{}-S{}-T{}-K{}-d{}-local{}-global{}".format(*c) for c in CASES]

# (dtype, case) on interpreted Triton: every dtype, no, local, global and both conditionings,
# K 1, 2, 3, dilations past the sequence, and channels over several blocks (R 40 and S 70 exceed
# one block of the input loop, G 20 pads the gate to 32)
INTERPRETED_CASES = [
    (torch.float32, (1, 3, 2, 5, 1, 1, 1, 0, 0)),
    (torch.float64, (3, 6, 5, 4, 129, 2, 7, 2, 3)),
    (torch.float32, (1, 40, 20, 70, 63, 3, 2, 0, 35)),
    (torch.float64, (3, 4, 4, 8, 63, 3, 512, 0, 0)),
    (torch.float16, (3, 4, 3, 6, 63, 2, 1, 3, 0)),
    (torch.bfloat16, (1, 5, 4, 7, 129, 3, 2, 0, 2)),
]


def backend_cases(backends):
    # (backend, dtype, case): every case on each backend, the cases above on interpreted Triton
    params = []
    for backend in backends:
        if backend == "triton" and INTERPRETED:
            combos = INTERPRETED_CASES
        else:
            combos = [(dtype, case) for dtype in DTYPES for case in CASES]
        for dtype, case in combos:
            ident = "{}-{}-B{}-R{}-G{}-S{}-T{}-K{}-d{}-local{}-global{}".format(
                backend, str(dtype).removeprefix("torch."), *case
            )
            params.append(pytest.param(backend, dtype, case, id=ident))
    return params


def per_backend(variants, interpreted):
    # (backend, variant) for every backend, with fewer variants on interpreted Triton
    return [
        (backend, variant)
        for backend in LAYER_BACKENDS
        for variant in (interpreted if backend == "triton" and INTERPRETED else variants)
    ]


# the layer's tensors in the order of its signature, past x and before the dilation
PARAMS = (
    "conv_weight",
    "conv_bias",
    "residual_weight",
    "residual_bias",
    "skip_weight",
    "skip_bias",
)


def layer_inputs(case, dtype, requires_grad=True, layout=None):
    """x, the six parameters and the four conditioning tensors (None where the case has none),
    scaled as PyTorch's initialisation so that z and the outputs are O(1)."""
    batch, residual, gate, skip, length, taps, _, local, glob = case

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, dtype=dtype, device=DEVICE)

    x = randn(batch, residual, length)
    if layout is not None:
        x = layout(x)
    fan_in = residual * taps + local + glob
    tensors = [
        x,
        randn(2 * gate, residual, taps, scale=fan_in**-0.5),
        randn(2 * gate, scale=0.1),
        randn(residual, gate, scale=gate**-0.5),
        randn(residual, scale=0.1),
        randn(skip, gate, scale=gate**-0.5),
        randn(skip, scale=0.1),
    ]
    conditioning = [None] * 4
    if local:
        local_cond = randn(batch, local, length)
        conditioning[:2] = layout(local_cond) if layout else local_cond, randn(2 * gate, local)
        conditioning[1] *= fan_in**-0.5
    if glob:
        conditioning[2:] = randn(batch, glob), randn(2 * gate, glob, scale=fan_in**-0.5)
    tensors += conditioning
    if requires_grad:
        for t in tensors:
            if t is not None:
                t.requires_grad_()
    return tensors


def call(fn, tensors, dilation):
    return fn(*tensors[:7], dilation, *tensors[7:])


def composed(x, conv_w, conv_b, res_w, res_b, skip_w, skip_b, dilation, lc, lw, gc, gw):
    # the layer written out from the causal convolution's reference and elementwise ops: an
    # independent check of the reference's conditioning, gate and projections
    z = reference.causal_conv1d(x, conv_w, conv_b, dilation)
    if lc is not None:
        z = z + (lw.unsqueeze(0) @ lc)
    if gc is not None:
        z = z + (gw @ gc.unsqueeze(-1))
    gate = conv_w.shape[0] // 2
    a = torch.tanh(z[:, :gate]) * torch.sigmoid(z[:, gate:])
    skip = skip_w.unsqueeze(0) @ a
    if skip_b is not None:
        skip = skip + skip_b[:, None]
    x_next = x + res_w.unsqueeze(0) @ a
    if res_b is not None:
        x_next = x_next + res_b[:, None]
    return x_next, skip


def check_against(backend, tensors, dilation, cotangents, dtype, used=(0, 1)):
    inputs = [t for t in tensors if t is not None and t.requires_grad]
    with pyreversible.use_backend(backend):
        outputs = call(ops.wavenet_layer, tensors, dilation)
    # with one output used, the other's projection gets a gradient of zeros: the reference
    # leaves it out of its graph, so its gradient is materialised as zeros too
    grad = functools.partial(torch.autograd.grad, allow_unused=True, materialize_grads=True)
    got = grad([outputs[i] for i in used], inputs, [cotangents[i] for i in used])
    for definition in (reference.wavenet_layer, composed):
        expected = call(definition, tensors, dilation)
        for out, want in zip(outputs, expected, strict=True):
            assert out.shape == want.shape
            assert_close(out, want, dtype)
        want_grads = grad([expected[i] for i in used], inputs, [cotangents[i] for i in used])
        for g, w in zip(got, want_grads, strict=True):
            assert_close(g, w, dtype)


def cotangents_for(case, dtype, layout=None):
    batch, residual, _, skip, length = case[:5]
    out = [torch.randn(batch, c, length, dtype=dtype, device=DEVICE) for c in (residual, skip)]
    return [layout(t) for t in out] if layout else out


@pytest.mark.parametrize(("backend", "dtype", "case"), backend_cases(LAYER_BACKENDS))
def test_matches_reference_and_composition(backend, dtype, case):
    tensors = layer_inputs(case, dtype)
    check_against(backend, tensors, case[6], cotangents_for(case, dtype), dtype)


@pytest.mark.skipif("cpp" not in LAYER_BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_cpp_any_thread_count(threads):
    # the C++ backward cuts each batch row into chunks by the thread count (with dz recomputed
    # over the taps' reach past each chunk's end): 1, 2 and 5 threads cut the rows of B=3,
    # T=1000 into 1, 2 and 4 chunks, and dilation 100 with K=3 reaches 1 or 2 tiles past each
    case = (3, 8, 8, 8, 1000, 3, 100, 2, 1)
    tensors = layer_inputs(case, torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_against("cpp", tensors, case[6], cotangents_for(case, torch.float64), torch.float64)
    finally:
        torch.set_num_threads(before)


def channels_last(t):
    # the same values with the time steps not contiguous: a (B, T, C) buffer seen as (B, C, T)
    return t.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
@pytest.mark.parametrize("layout", [strided, channels_last], ids=["strided", "channels_last"])
def test_non_contiguous_inputs(backend, layout):
    case = (3, 6, 5, 4, 129, 2, 7, 2, 3)
    tensors = layer_inputs(case, torch.float64, layout=layout)
    assert not tensors[0].is_contiguous() and not tensors[7].is_contiguous()
    # global_cond a column slice and the cotangents non-contiguous as well
    tensors[9] = strided(tensors[9].detach()).requires_grad_()
    cotangents = cotangents_for(case, torch.float64, layout)
    check_against(backend, tensors, case[6], cotangents, torch.float64)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
@pytest.mark.parametrize("used", [(0,), (1,)], ids=["x_next-only", "skip-only"])
def test_one_output_used(backend, used):
    # the other output's gradient reaches the backward as None
    case = (3, 4, 3, 6, 63, 2, 1, 3, 2)
    tensors = layer_inputs(case, torch.float64)
    check_against(backend, tensors, 1, cotangents_for(case, torch.float64), torch.float64, used)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
def test_without_biases_and_gradients_of_a_subset(backend):
    # no biases, x as data: only the weights need gradients
    case = (3, 4, 3, 6, 63, 3, 2, 0, 0)
    tensors = layer_inputs(case, torch.float64)
    tensors[0] = tensors[0].detach()
    for i in (2, 4, 6):
        tensors[i] = None
    check_against(backend, tensors, 2, cotangents_for(case, torch.float64), torch.float64)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
def test_no_grad_matches_reference(backend):
    case = (3, 8, 4, 16, 129, 2, 4, 3, 2)
    tensors = layer_inputs(case, torch.float32, requires_grad=False)
    with torch.no_grad(), pyreversible.use_backend(backend):
        x_next, skip = call(ops.wavenet_layer, tensors, 4)
    assert x_next.grad_fn is None
    for got, want in zip((x_next, skip), call(reference.wavenet_layer, tensors, 4), strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 4, 9), (2, 4, 0)], ids=["no-batch", "no-time"])
def test_empty_inputs(backend, shape):
    batch, _, length = shape
    case = (batch, 4, 3, 5, length, 2, 2, 2, 1)
    tensors = layer_inputs(case, torch.float64)
    with pyreversible.use_backend(backend):
        x_next, skip = call(ops.wavenet_layer, tensors, 2)
    assert x_next.shape == (batch, 4, length) and skip.shape == (batch, 5, length)
    inputs = [t for t in tensors if t is not None]
    grads = torch.autograd.grad(x_next.sum() + skip.sum(), inputs)
    for t, g in zip(inputs, grads, strict=True):
        assert g.shape == t.shape
        # the parameters' gradients are sums over no element
        if t.dim() < 3 and t.shape[0] != batch:
            assert_close(g, torch.zeros_like(g))


# interpreted Triton takes the conditioned variant only, which has every input of the plain one
@pytest.mark.parametrize(("backend", "conditioned"), per_backend([False, True], [True]))
def test_gradcheck(backend, conditioned):
    case = (2, 3, 2, 3, 9, 2, 3, 2 if conditioned else 0, 2 if conditioned else 0)
    tensors = layer_inputs(case, torch.float64)
    positions = [i for i, t in enumerate(tensors) if t is not None]

    def fn(*inputs):
        full = list(tensors)
        for i, t in zip(positions, inputs, strict=True):
            full[i] = t
        return call(ops.wavenet_layer, full, 3)

    # interpreted Triton checks random directions of the Jacobian (fast mode): the full one
    # takes a kernel launch per input element
    fast = backend == "triton" and INTERPRETED
    with pyreversible.use_backend(backend):
        assert torch.autograd.gradcheck(fn, [tensors[i] for i in positions], fast_mode=fast)


@pytest.mark.parametrize(("backend", "conditioned"), per_backend([False, True], [True]))
def test_opcheck(backend, conditioned):
    case = (3, 4, 3, 5, 17, 3, 2, 2 if conditioned else 0, 3 if conditioned else 0)
    t = [None if v is None else v.detach() for v in layer_inputs(case, torch.float64)]
    x, cw, cb, rw, rb, sw, sb, lc, lw, gc, gw = t
    # the ops carry no autograd of their own (WavenetLayerFunction in pyreversible.ops does)
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    fwd = _kernels(backend).wavenet_layer_fwd
    bwd = _kernels(backend).wavenet_layer_bwd
    torch.library.opcheck(
        fwd, (x, cw, cb, rw, rb, sw, sb, 2, lc, lw, gc, gw, True), test_utils=utils
    )
    torch.library.opcheck(
        fwd, (strided(x), cw, None, rw, None, sw, None, 2, lc, lw, gc, gw, False), test_utils=utils
    )
    _, _, z = fwd(x, cw, cb, rw, rb, sw, sb, 2, lc, lw, gc, gw, True)
    dx_next, dskip = (
        torch.randn_like(v) for v in fwd(x, cw, cb, rw, rb, sw, sb, 2, lc, lw, gc, gw, False)[:2]
    )
    args = (dx_next, dskip, z, x, cw, rw, sw, 2, lc, lw, gc, gw)
    torch.library.opcheck(bwd, (*args, [True] * 11), test_utils=utils)
    subset = [False, True, False, False, True, True, False, True, False, False, True]
    torch.library.opcheck(bwd, (*args, subset), test_utils=utils)


# output masks of the backward: nothing, each gradient alone, and a few groups that share work
# (the projections' biases need no gate; dW_s alone needs a but not dz; the conditioning's
# gradients need dz but not the convolution's backward)
MASKS = [
    [False] * 11,
    *[[i == j for j in range(11)] for i in range(11)],
    [False, False, False, False, True, False, True, False, False, False, False],
    [True, True, True, False, False, False, False, False, False, False, False],
    [False, False, False, False, False, False, False, True, True, True, True],
]


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
def test_backward_computes_only_the_gradients_asked_for(backend):
    # every gradient asked for equals the one computed with all of them asked for; the others
    # are not computed and come back as None
    case = (2, 4, 3, 5, 17, 2, 3, 2, 3)
    t = [v.detach() for v in layer_inputs(case, torch.float64)]
    x, cw, cb, rw, rb, sw, sb, lc, lw, gc, gw = t
    fwd = torch.ops.pyreversible.wavenet_layer_fwd
    bwd = torch.ops.pyreversible.wavenet_layer_bwd
    _, _, z = fwd(x, cw, cb, rw, rb, sw, sb, 3, lc, lw, gc, gw, True)
    dx_next, dskip = cotangents_for(case, torch.float64)
    args = (dx_next, dskip, z, x, cw, rw, sw, 3, lc, lw, gc, gw)
    full = bwd(*args, [True] * 11)
    assert all(g is not None for g in full)
    for mask in MASKS:
        got = bwd(*args, mask)
        for wanted, g, want in zip(mask, got, full, strict=True):
            if wanted:
                assert_close(g, want)
            else:
                assert g is None


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
@pytest.mark.parametrize(
    ("wanted", "used"),
    [((5,), (1,)), ((4, 6), (0, 1)), ((7, 8, 9, 10), (0, 1))],
    ids=["dW_s", "biases", "cond"],
)
def test_gradients_of_a_subset(backend, wanted, used):
    # only the tensors at `wanted` (indices into layer_inputs) require grad: autograd gets
    # exactly those, equal to the reference's (skip_weight reaches the skip output only)
    case = (3, 4, 3, 6, 63, 2, 1, 3, 2)
    tensors = layer_inputs(case, torch.float64, requires_grad=False)
    for i in wanted:
        tensors[i].requires_grad_()
    cotangents = cotangents_for(case, torch.float64)
    check_against(backend, tensors, 1, cotangents, torch.float64, used)


@pytest.mark.parametrize("backend", ["reference", *LAYER_BACKENDS])
def test_compile_fullgraph(backend):
    case = (3, 4, 3, 6, 37, 2, 2, 2, 2)
    tensors = layer_inputs(case, torch.float32)
    inputs = [t for t in tensors if t is not None]

    def loss(*tensors):
        x_next, skip = call(ops.wavenet_layer, tensors, 2)
        return x_next.square().mean() + skip.relu().mean()

    with pyreversible.use_backend(backend):
        expected = loss(*tensors)
        expected_grads = torch.autograd.grad(expected, inputs)
        got = torch.compile(loss, fullgraph=True)(*tensors)
        got_grads = torch.autograd.grad(got, inputs)
    assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert_close(g, e)


def bad_calls():
    t = layer_inputs((2, 4, 3, 5, 10, 2, 1, 2, 3), torch.float32, requires_grad=False)
    x, cw, cb, rw, rb, sw, sb, lc, lw, gc, gw = t

    def c(**changes):
        args = dict(zip(("x", *PARAMS), t[:7], strict=True))
        args.update(dilation=1, local_cond=lc, local_weight=lw, global_cond=gc, global_weight=gw)
        args.update(changes)
        return lambda: ops.wavenet_layer(**args)

    return [
        ("dilation 0", c(dilation=0), ValueError, "dilation must be >= 1, got 0"),
        ("dilation float", c(dilation=1.5), TypeError, "dilation must be an int"),
        ("x rank", c(x=x[0]), ValueError, r"x must be \(B, R, T\)"),
        ("conv rank", c(conv_weight=cw[0]), ValueError, r"conv_weight must be \(2G, R, K\)"),
        ("odd 2G", c(conv_weight=cw[:5], conv_bias=cb[:5]), ValueError, "even number 2G"),
        ("channels", c(x=x[:, :3]), ValueError, "conv_weight takes 4 input channels, x has R=3"),
        ("conv bias", c(conv_bias=cb[:4]), ValueError, r"conv_bias must be \(2G,\)"),
        ("residual", c(residual_weight=rw[:3]), ValueError, r"residual_weight must be \(R, G\)"),
        ("residual bias", c(residual_bias=rb[:3]), ValueError, r"residual_bias must be \(R,\)"),
        ("skip", c(skip_weight=sw[:, :2]), ValueError, r"skip_weight must be \(S, G\)"),
        ("skip bias", c(skip_bias=sb[:4]), ValueError, r"skip_bias must be \(S,\)"),
        ("local length", c(local_cond=lc[..., :9]), ValueError, r"local_cond must be \(B, C_local"),
        ("local batch", c(local_cond=lc[:1]), ValueError, r"local_cond must be \(B, C_local"),
        ("local weight", c(local_weight=lw[:, :1]), ValueError, r"local_weight must be \(2G"),
        ("local alone", c(local_weight=None), ValueError, "local_cond and local_weight"),
        ("global batch", c(global_cond=gc[:1]), ValueError, r"global_cond must be \(B, C_global"),
        ("global weight", c(global_weight=gw.t()), ValueError, r"global_weight must be \(2G"),
        ("global alone", c(global_cond=None), ValueError, "global_cond and global_weight"),
        ("weight dtype", c(conv_weight=cw.double()), TypeError, "conv_weight has dtype"),
        ("cond dtype", c(local_cond=lc.double()), TypeError, "local_cond has dtype"),
        ("x dtype", c(x=x.long()), TypeError, "floating-point"),
        ("device", c(skip_weight=sw.to("meta")), ValueError, "skip_weight is on meta"),
        ("not a tensor", c(residual_weight=rw.tolist()), TypeError, "residual_weight must be a"),
    ]


@pytest.mark.parametrize("index", range(len(bad_calls())), ids=[c[0] for c in bad_calls()])
def test_bad_input(index):
    _, call_it, error, message = bad_calls()[index]
    for backend in ["reference", *LAYER_BACKENDS]:
        with (
            pyreversible.use_backend(backend),
            pytest.raises(error, match=f"wavenet_layer: .*{message}"),
        ):
            call_it()


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
def test_kernel_checks_its_arguments(backend):
    # the torch layer's own checks answer before any kernel runs, with the op's name
    x, cw, cb, rw, rb, sw, sb, lc, lw, gc, gw = layer_inputs(
        (2, 4, 3, 5, 10, 2, 1, 2, 3), torch.float32, requires_grad=False
    )
    fwd = _kernels(backend).wavenet_layer_fwd
    with pytest.raises(ValueError, match="wavenet_layer_fwd: dilation must be >= 1"):
        fwd(x, cw, cb, rw, rb, sw, sb, 0, lc, lw, gc, gw, False)
    with pytest.raises(ValueError, match="wavenet_layer_fwd: local_cond must be"):
        fwd(x, cw, cb, rw, rb, sw, sb, 1, lc[:1], lw, gc, gw, False)
    with pytest.raises(ValueError, match="wavenet_layer_fwd: local_cond and local_weight"):
        fwd(x, cw, cb, rw, rb, sw, sb, 1, lc, None, gc, gw, False)
    with pytest.raises(TypeError, match="wavenet_layer_fwd: conv_weight has dtype"):
        fwd(x, cw.double(), cb, rw, rb, sw, sb, 1, lc, lw, gc, gw, False)


# interpreted Triton in float64 only: its float32 arithmetic is numpy's, as float64's
@pytest.mark.parametrize(("backend", "dtype"), per_backend(DTYPES, [torch.float64]))
@pytest.mark.parametrize("where", ["x", "conv_weight", "dskip"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_values_propagate_as_in_the_reference(backend, dtype, where, value):
    # an infinite z saturates the gate (tanh and sigmoid of +-inf), a NaN passes through it:
    # the kernels must make NaN and infinity exactly where the reference does
    case = (2, 4, 3, 5, 20, 2, 3, 0, 0)
    tensors = layer_inputs(case, dtype, requires_grad=False)
    cotangents = cotangents_for(case, dtype)
    target = {"x": tensors[0], "conv_weight": tensors[1], "dskip": cotangents[1]}[where]
    target.view(-1)[5] = value
    results = []
    for run in (backend, "reference"):
        inputs = [t.clone().requires_grad_() for t in tensors[:7]]
        with pyreversible.use_backend(run):
            outputs = ops.wavenet_layer(*inputs, 3)
        results.append([*outputs, *torch.autograd.grad(outputs, inputs, cotangents)])
    atol, rtol = TOLERANCES[dtype]
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, equal_nan=True)


@pytest.mark.skipif("triton" not in LAYER_BACKENDS, reason="triton cannot run here")
def test_triton_says_when_the_gate_is_too_wide():
    # one program holds the whole gate: past 256 channels the Triton kernels refuse, by name
    tensors = layer_inputs((1, 2, 257, 3, 4, 1, 1, 0, 0), torch.float32, requires_grad=False)
    with (
        pyreversible.use_backend("triton"),
        pytest.raises(NotImplementedError, match="wavenet_layer: 257 gate channels on triton"),
    ):
        call(ops.wavenet_layer, tensors, 1)
