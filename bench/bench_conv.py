"""Suite `conv`: one causal dilated convolution (pyreversible.ops.causal_conv1d), and one
gated WaveNet layer built on it (pyreversible.ops.wavenet_layer).

Cases, float32, at a WaveNet layer's size (B=8, C_in = C_out = 64, T=16000, one second of
16 kHz audio), kernel sizes 2 and 3, dilations 1 and 512:

- train: forward, then backward of a fixed random cotangent, giving the gradients of x, the
  weight and the bias;
- forward: the forward alone, without autograd (evaluation, or one layer of a naive sampler).

The reference is F.conv1d on the input left-padded by (K - 1) * d (the definition in
pyreversible.reference), so the ratio is against what a PyTorch user writes by hand.

FLOPs count the multiply-adds of the convolution: 2 * B * C_out * (C_in / groups) * K * T
for the forward, three times that for forward and backward (dx and dW each cost one more).
Bytes count x, the weight and y once per pass (the padded copy is the reference's own cost);
training adds the cotangent, dx and the weight's gradient.

The WaveNet layer's cases, float32, at B=4, R=64, G=64, S=256, T=16000, K=2, dilations 1 and
512, without conditioning, train and forward as above (the cotangents of both outputs drawn at
random). FLOPs count the multiply-adds of its GEMMs: 2 * B * T * (2G * R * K + (S + R) * G)
for the forward (the convolution, then skip and residual projections), three times that for
training (the backward's da, d[W_s; W_r], dx and dW_conv cost one forward's GEMMs each, in
pairs); the gate's transcendentals are not counted. Bytes count x, x_next and skip once in the
forward; training adds z (2G channels, saved, then read), dx_next, dskip, x again and dx.
"""

import torch

import pyreversible
from bench.harness import COMPILE, Case
from pyreversible import ops

BATCH, CHANNELS, LENGTH = 8, 64, 16000
# (kernel size, dilation)
CONFIGS = ((2, 1), (2, 512), (3, 1), (3, 512))

_FLOAT32_BYTES = 4


def _tensors(taps, device, requires_grad):
    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, LENGTH, device=device, requires_grad=requires_grad)
    weight = torch.randn(CHANNELS, CHANNELS, taps, device=device) / (CHANNELS * taps) ** 0.5
    bias = torch.zeros(CHANNELS, device=device)
    return x, weight.requires_grad_(requires_grad), bias.requires_grad_(requires_grad)


def _function(variant):
    backend = "reference" if variant == COMPILE else variant
    fn = torch.compile(ops.causal_conv1d) if variant == COMPILE else ops.causal_conv1d
    return backend, fn


def _train_builder(taps, dilation):
    def build(variant, device):
        x, weight, bias = _tensors(taps, device, True)
        cotangent = torch.randn(BATCH, CHANNELS, LENGTH, device=device)
        backend, conv = _function(variant)

        def step():
            with pyreversible.use_backend(backend):
                # gradients are written afresh each step, as after optimizer.zero_grad()
                x.grad = weight.grad = bias.grad = None
                conv(x, weight, bias, dilation).backward(cotangent)

        return step

    return build


def _forward_builder(taps, dilation):
    def build(variant, device):
        x, weight, bias = _tensors(taps, device, False)
        backend, conv = _function(variant)

        def step():
            with torch.no_grad(), pyreversible.use_backend(backend):
                return conv(x, weight, bias, dilation)

        return step

    return build


def cases(quick=False):
    """The suite's cases; `quick` changes nothing here, every case is under a second a call."""
    out = []
    for taps, dilation in CONFIGS:
        params = {
            "dtype": "float32",
            "batch": BATCH,
            "in_channels": CHANNELS,
            "out_channels": CHANNELS,
            "length": LENGTH,
            "kernel_size": taps,
            "dilation": dilation,
            "groups": 1,
        }
        forward_flops = 2 * BATCH * CHANNELS * CHANNELS * taps * LENGTH
        activation = BATCH * CHANNELS * LENGTH
        weights = CHANNELS * CHANNELS * taps + CHANNELS
        out.append(
            Case(
                name=f"train K={taps} d={dilation}",
                params={**params, "pass": "forward+backward"},
                flops=3 * forward_flops,
                # forward: x, W, y; backward: dy, x, W, dx, dW
                bytes=_FLOAT32_BYTES * (5 * activation + 4 * weights),
                build=_train_builder(taps, dilation),
            )
        )
        out.append(
            Case(
                name=f"forward K={taps} d={dilation}",
                params={**params, "pass": "forward"},
                flops=forward_flops,
                bytes=_FLOAT32_BYTES * (2 * activation + weights),
                build=_forward_builder(taps, dilation),
            )
        )
    return out + wavenet_cases()


# The WaveNet layer's sizes (B, R, G, S, T, K) and dilations.
WAVENET = (4, 64, 64, 256, 16000, 2)
WAVENET_DILATIONS = (1, 512)


def _wavenet_tensors(dilation, device, requires_grad):
    batch, residual, gate, skip, length, taps = WAVENET
    torch.manual_seed(0)
    x = torch.randn(batch, residual, length, device=device, requires_grad=requires_grad)
    params = [
        torch.randn(2 * gate, residual, taps, device=device) / (residual * taps) ** 0.5,
        torch.zeros(2 * gate, device=device),
        torch.randn(residual, gate, device=device) / gate**0.5,
        torch.zeros(residual, device=device),
        torch.randn(skip, gate, device=device) / gate**0.5,
        torch.zeros(skip, device=device),
    ]
    return [x, *(p.requires_grad_(requires_grad) for p in params)]


def _wavenet_function(variant):
    backend = "reference" if variant == COMPILE else variant
    fn = torch.compile(ops.wavenet_layer) if variant == COMPILE else ops.wavenet_layer
    return backend, fn


def _wavenet_train_builder(dilation):
    def build(variant, device):
        tensors = _wavenet_tensors(dilation, device, True)
        batch, residual, _, skip, length, _ = WAVENET
        cotangents = [torch.randn(batch, c, length, device=device) for c in (residual, skip)]
        backend, layer = _wavenet_function(variant)

        def step():
            with pyreversible.use_backend(backend):
                # gradients are written afresh each step, as after optimizer.zero_grad()
                for t in tensors:
                    t.grad = None
                torch.autograd.backward(layer(*tensors, dilation), cotangents)

        return step

    return build


def _wavenet_forward_builder(dilation):
    def build(variant, device):
        tensors = _wavenet_tensors(dilation, device, False)
        backend, layer = _wavenet_function(variant)

        def step():
            with torch.no_grad(), pyreversible.use_backend(backend):
                return layer(*tensors, dilation)

        return step

    return build


def wavenet_cases():
    """The WaveNet layer's cases (see the module's docstring)."""
    batch, residual, gate, skip, length, taps = WAVENET
    forward_flops = 2 * batch * length * (2 * gate * residual * taps + (skip + residual) * gate)
    weights = 2 * gate * (residual * taps + 1) + (skip + residual) * (gate + 1)
    step = batch * length * _FLOAT32_BYTES
    out = []
    for dilation in WAVENET_DILATIONS:
        params = {
            "dtype": "float32",
            "batch": batch,
            "residual_channels": residual,
            "gate_channels": gate,
            "skip_channels": skip,
            "length": length,
            "kernel_size": taps,
            "dilation": dilation,
        }
        out.append(
            Case(
                name=f"wavenet train K={taps} d={dilation}",
                params={**params, "op": "wavenet_layer", "pass": "forward+backward"},
                flops=3 * forward_flops,
                # forward: x, x_next, skip, z; backward: dx_next, dskip, z, x, dx
                bytes=step * (5 * residual + 2 * skip + 4 * gate) + _FLOAT32_BYTES * 3 * weights,
                build=_wavenet_train_builder(dilation),
            )
        )
        out.append(
            Case(
                name=f"wavenet forward K={taps} d={dilation}",
                params={**params, "op": "wavenet_layer", "pass": "forward"},
                flops=forward_flops,
                bytes=step * (2 * residual + skip) + _FLOAT32_BYTES * weights,
                build=_wavenet_forward_builder(dilation),
            )
        )
    return out
