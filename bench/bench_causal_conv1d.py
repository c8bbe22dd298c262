"""Suite `conv`, causal_conv1d: one causal dilated convolution (pyreversible.ops.causal_conv1d).

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
    """The suite's cases; `quick` keeps the first configuration only (K=2, d=1), so that
    torch.compile, which compiles every case afresh (seconds each), stays short."""
    out = []
    for taps, dilation in CONFIGS[:1] if quick else CONFIGS:
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
    return out
