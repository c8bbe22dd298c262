"""Property-based fuzzing of the torch-facing ops against their references (hypothesis).

Each example draws shapes (odd, size 1, sometimes empty), a layout per tensor (contiguous,
every other element of a larger buffer, transposed, or broadcast with stride 0), a dtype and
argument values; a third or more of them carry a fault on purpose, an argument the op's contract
refuses (a wrong dtype, rank, channel count, dilation, mask type, partition, parity, a network
that does not fit, an even masked kernel, a parameter on another device). The tensors are on
the CPU, the only device here; the device fault puts one on the meta device. Then:
- with a fault, the op must raise ValueError or TypeError, whatever the reference does (the
  reference is laxer in places: F.conv1d takes an unbatched (C, T) input, and conv_mask any
  mask type);
- without one, the reference is run first: where it raises, the op must raise ValueError or
  TypeError; where it succeeds, the op must succeed and match it, outputs and every gradient.
Never another error, never a crash. Empty tensors are valid input: an empty batch or sequence
gives empty outputs (where F.conv1d raises on an empty sequence, the op may return them), except
for masked_conv2d, whose contract refuses them.

Profiles (PYREVERSIBLE_FUZZ): `ci` (default) is bounded and derandomized, so CI runs the same
examples every time; `long` draws 2000 fresh examples per op for a manual run:

    PYREVERSIBLE_FUZZ=long python -m pytest -q tests/test_fuzz.py
"""

import os

import pytest
import torch
from helpers import BACKENDS, TOLERANCES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyreversible
from pyreversible import ops, reference

_PROFILES = {
    "ci": {"max_examples": 30, "derandomize": True},
    "long": {"max_examples": 2000},
}
_PROFILE = os.environ.get("PYREVERSIBLE_FUZZ", "ci")
if _PROFILE not in _PROFILES:
    raise ValueError(f"PYREVERSIBLE_FUZZ must be one of {sorted(_PROFILES)}, got {_PROFILE!r}")
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    **_PROFILES[_PROFILE],
)
# The Triton kernels run under the interpreter here, about a second per call even at these
# sizes: a few examples of the ops that have Triton kernels, with the same properties.
TRITON_FUZZ = settings(FUZZ, max_examples=min(4, _PROFILES[_PROFILE]["max_examples"]))

LAYOUTS = ("contiguous", "strided", "transposed", "broadcast")


def _layout(t, layout):
    """t with the same values in another memory layout."""
    if layout == "strided" and t.dim() > 0:
        buffer = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        view = buffer[..., ::2]
        view.copy_(t)
        return view
    if layout == "transposed" and t.dim() > 1:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "broadcast" and t.dim() > 0 and t.shape[0] > 0:
        # every batch row the first one's values, stride 0 along dim 0
        return t[:1].expand(t.shape)
    return t


@st.composite
def tensors(draw, shape, dtype, layout=True):
    """A seeded random tensor of `shape` in a drawn layout."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    else:
        t = torch.randint(-3, 4, shape, generator=g).to(dtype)
    return _layout(t, draw(st.sampled_from(LAYOUTS))) if layout else t


def _outcome(fn, args, differentiable):
    """(outputs, gradients) of fn(*args), or the exception it raised."""
    args = [a.detach().requires_grad_(True) if _grad(a, differentiable) else a for a in args]
    try:
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        g = torch.Generator().manual_seed(1)
        cotangents = [
            torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs
        ]
        grads = torch.autograd.grad(outs, leaves, cotangents, allow_unused=True) if leaves else ()
        return [o.detach() for o in outs], list(grads)
    except Exception as error:  # noqa: BLE001 - every error is classified below
        return error


def _grad(a, differentiable):
    return differentiable and isinstance(a, torch.Tensor) and a.dtype.is_floating_point


def check(op, ref, args, backend, fault=None, empty=False):
    """The fuzzing property: see the module docstring. `empty`: an input tensor is empty."""
    differentiable = all(
        not isinstance(a, torch.Tensor) or a.dtype in (torch.float32, torch.float64) for a in args
    )
    expected = _outcome(ref, args, differentiable)
    with pyreversible.use_backend(backend):
        got = _outcome(op, args, differentiable)
    if empty and isinstance(expected, Exception) and not isinstance(got, Exception):
        assert all(o.numel() == 0 for o in got[0]), f"{backend}: values out of empty inputs"
        return
    if isinstance(expected, Exception) or fault:
        assert isinstance(got, (ValueError, TypeError)), (
            f"{backend}: fault {fault!r}"
            if fault
            else f"{backend}: the reference raised {expected!r}"
        ) + f", the op gave {got!r}"
        return
    assert not isinstance(got, Exception), f"{backend}: the op raised {got!r}, the reference not"
    (ref_outs, ref_grads), (outs, grads) = expected, got
    for actual, wanted in zip(outs + grads, ref_outs + ref_grads, strict=True):
        if wanted is None:
            assert actual is None or not actual.any()
            continue
        atol, rtol = TOLERANCES[wanted.dtype]
        torch.testing.assert_close(actual, wanted, atol=atol, rtol=rtol)


DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def causal_conv1d_args(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    batch, length = draw(st.integers(0, 3)), draw(st.integers(0, 17))
    taps, dilation = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 3, 7, 20]))
    dtype = draw(DTYPES)
    faults = ["dtype", "int", "rank", "channels", "dilation", "device"]
    fault = draw(st.sampled_from([None] * 10 + faults))
    x = draw(tensors((batch, c_in, length), torch.float16 if fault == "dtype" else dtype))
    if fault == "int":
        x = x.to(torch.int64)
    if fault == "rank":
        x = x.flatten(0, 1)
    weight_in = c_in // groups + (fault == "channels")
    weight = draw(tensors((c_out, weight_in, taps), dtype))
    bias = draw(st.none() | tensors((c_out,), dtype, layout=False))
    dilation = 0 if fault == "dilation" else dilation
    weight = weight.to("meta") if fault == "device" else weight
    return [x, weight, bias, dilation, groups], fault


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_causal_conv1d(backend):
    @(TRITON_FUZZ if backend == "triton" else FUZZ)
    @given(causal_conv1d_args())
    def run(drawn):
        args, fault = drawn
        empty = args[0].numel() == 0
        check(ops.causal_conv1d, reference.causal_conv1d, args, backend, fault, empty)

    run()


@st.composite
def masked_conv2d_args(draw):
    batch, c_in, c_out = draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k, dtype = draw(st.sampled_from([1, 3, 5, 7])), draw(DTYPES)
    faults = ["dtype", "mask", "channels", "square", "even", "device"]
    fault = draw(st.sampled_from([None] * 10 + faults))
    if batch == 0:
        fault = "empty"
    k += fault == "even"
    x = draw(tensors((batch, c_in, height, width), torch.int32 if fault == "dtype" else dtype))
    shape = (c_out, c_in + (fault == "channels"), k, k + 2 * (fault == "square"))
    weight = draw(tensors(shape, dtype))
    bias = draw(st.none() | tensors((c_out,), dtype, layout=False))
    mask_type = "C" if fault == "mask" else draw(st.sampled_from(["A", "B"]))
    weight = weight.to("meta") if fault == "device" else weight
    return [x, weight, bias, mask_type], fault


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_masked_conv2d(backend):
    @(TRITON_FUZZ if backend == "triton" else FUZZ)
    @given(masked_conv2d_args())
    def run(drawn):
        args, fault = drawn
        check(ops.masked_conv2d, reference.masked_conv2d, args, backend, fault)

    run()


@st.composite
def wavenet_layer_args(draw):
    batch, r, g = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s, length, taps = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 3))
    dilation, dtype = draw(st.sampled_from([1, 2, 5])), draw(DTYPES)
    local, glob = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    faults = ["odd_gate", "cond_length", "dtype", "dilation", "device"]
    fault = draw(st.sampled_from([None] * 10 + faults))
    two_g = 2 * g + (fault == "odd_gate")
    x = draw(tensors((batch, r, length), dtype))
    w = draw(tensors((two_g, r, taps), torch.float16 if fault == "dtype" else dtype))
    args = [x, w, draw(tensors((two_g,), dtype, layout=False))]
    args += [draw(tensors((r, g), dtype)), draw(tensors((r,), dtype, layout=False))]
    args += [draw(tensors((s, g), dtype)), draw(tensors((s,), dtype, layout=False))]
    args += [0 if fault == "dilation" else dilation]
    if local:
        local_length = length + (fault == "cond_length")
        args += [draw(tensors((batch, local, local_length), dtype))]
        args += [draw(tensors((two_g, local), dtype))]
    else:
        args += [None, None]
    if glob:
        args += [draw(tensors((batch, glob), dtype)), draw(tensors((two_g, glob), dtype))]
    else:
        args += [None, None]
    if fault == "cond_length" and not local:
        fault = None
    if fault == "device":
        args[5] = args[5].to("meta")  # skip_weight
    return args, fault


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_wavenet_layer(backend):
    @(TRITON_FUZZ if backend == "triton" else FUZZ)
    @given(wavenet_layer_args())
    def run(drawn):
        args, fault = drawn
        check(ops.wavenet_layer, reference.wavenet_layer, args, backend, fault)

    run()


@st.composite
def coupling_args(draw, mlp):
    partition = draw(st.sampled_from(["half", "odd-even", "checkerboard", "channel", "diagonal"]))
    parity, dtype = draw(st.sampled_from([0, 0, 1, 1, 2])), draw(DTYPES)
    batch = draw(st.integers(1, 3))
    if partition in ("checkerboard", "channel"):
        channels, height = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        shape = (batch, channels, height, 2 * draw(st.integers(1, 2)))
    else:
        shape = (batch, draw(st.integers(1, 7)))
    x = draw(tensors(shape, dtype))
    part_b = _part_b_shape(x, partition, parity)
    dim_b = part_b.numel() if part_b is not None else x[0].numel() - x[0].numel() // 2
    dim_a = max(x[0].numel() - dim_b, 1)
    widths = [dim_a, *(draw(st.lists(st.integers(1, 5), max_size=2)) if mlp else []), dim_b]
    misfit = draw(st.sampled_from([0] * 6 + [1]))  # a network that does not fit part b
    widths[-1] += misfit
    weights = [draw(tensors((widths[i + 1], widths[i]), dtype)) for i in range(len(widths) - 1)]
    biases = [draw(tensors((w,), dtype, layout=False)) for w in widths[1:]]
    # a parameter of the fused MLP on another device (the other form's network is the user's)
    wrong_device = mlp and draw(st.sampled_from([False] * 12 + [True]))
    if wrong_device:
        biases[-1] = biases[-1].to("meta")
    faults = [part_b is None and "partition", parity == 2 and "parity", misfit and "misfit"]
    faults += [wrong_device and "device"]
    fault = next((f for f in faults if f), None)
    return (x, weights, biases, partition, parity, draw(st.booleans())), fault


def _part_b_shape(x, partition, parity):
    """The shape of one row of the updated part, None where the partition does not apply."""
    try:
        return reference.partition_split(x, partition, parity)[1][0].shape
    except (ValueError, TypeError):
        return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_additive_coupling_mlp(backend):
    @(TRITON_FUZZ if backend == "triton" else FUZZ)
    @given(coupling_args(mlp=True))
    def run(drawn):
        (x, weights, biases, partition, parity, reverse), fault = drawn
        layers = len(weights)

        def call(fn):
            # flat tensor arguments, so that every weight and bias is differentiated
            return lambda x, *p: fn(x, p[:layers], p[layers:], partition, parity, reverse)

        flat = [x, *weights, *biases]
        op, ref = call(ops.additive_coupling_mlp), call(reference.additive_coupling_mlp)
        check(op, ref, flat, backend, fault)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_additive_coupling(backend):
    @(TRITON_FUZZ if backend == "triton" else FUZZ)
    @given(coupling_args(mlp=False))
    def run(drawn):
        (x, (weight,), (bias,), partition, parity, reverse), fault = drawn
        part_b = _part_b_shape(x, partition, parity)

        def call(fn):
            def coupling(x, weight, bias):
                # a linear coupling network of the flattened conditioning part, shaped like b
                def net(x_a):
                    shift = torch.nn.functional.linear(x_a.flatten(1), weight, bias)
                    fits = part_b is not None and shift.shape[1] == part_b.numel()
                    return shift.view(x_a.shape[0], *part_b) if fits else shift

                return fn(x, net, partition, parity, reverse)

            return coupling

        op, ref = call(ops.additive_coupling), call(reference.additive_coupling)
        check(op, ref, [x, weight, bias], backend, fault)

    run()
