"""Suite `conv`, wavenet_layer: one gated WaveNet layer (pyreversible.ops.wavenet_layer).

Cases, float32, at B=4, R=64, G=64, S=256, T=16000, K=2, dilations 1 and 512, without
conditioning: train (forward, then backward of random cotangents of both outputs) and forward
(without autograd).

FLOPs count the multiply-adds of its GEMMs, 2 * B * T * (2G * R * K + (S + R) * G) for the
forward (the convolution, then skip and residual projections), three times that for
training (the backward's da, d[W_s; W_r], dx and dW_conv cost one forward's GEMMs each, in
pairs); the gate's transcendentals are not counted. Bytes count x, x_next and skip once in the
forward; training adds z (2G channels, saved, then read), dx_next, dskip, x again and dx.
"""

import torch

import pyreversible
from bench.harness import COMPILE, Case
from pyreversible import ops

_FLOAT32_BYTES = 4

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


def cases(quick=False):
    """The WaveNet layer's cases (see the module's docstring); `quick` keeps dilation 1 only,
    so that torch.compile, which compiles every case afresh (seconds each), stays short."""
    batch, residual, gate, skip, length, taps = WAVENET
    forward_flops = 2 * batch * length * (2 * gate * residual * taps + (skip + residual) * gate)
    weights = 2 * gate * (residual * taps + 1) + (skip + residual) * (gate + 1)
    step = batch * length * _FLOAT32_BYTES
    out = []
    for dilation in WAVENET_DILATIONS[:1] if quick else WAVENET_DILATIONS:
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
