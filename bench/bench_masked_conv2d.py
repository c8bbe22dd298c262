"""Suite `masked`: one PixelCNN masked convolution (pyreversible.nn.MaskedConv2d).

Cases, float32, B=16, 64 -> 64 channels, 28x28 (PixelCNN on MNIST-sized images), each for a
7x7 type A mask (a model's first layer, here at full width) and a 3x3 type B mask (the layers
after it):

- forward: the layer's output alone, without autograd (sampling);
- train: forward, then backward of a fixed random cotangent, giving the input's and both
  parameters' gradients (the work of one layer in a training step).

The reference is torch's own CPU convolution (F.conv2d) of the masked weight, which does the
masked taps' multiplications too. FLOPs count the kept taps only, the work the op must do:
2 * B * O * I * taps * H * W for the forward, three times that for forward and backward (dx
and dW each cost one more). Bytes count what must cross memory at the least: x and y and the
weight for the forward; for training also the cotangent, dx and the parameter gradients.
"""

import torch

import pyreversible
from bench.harness import COMPILE, Case
from pyreversible.nn import MaskedConv2d

# (batch, channels, height = width, kernel size, mask type)
CONFIGS = (
    (16, 64, 28, 7, "A"),
    (16, 64, 28, 3, "B"),
)

_FLOAT32_BYTES = 4


def _build_layer(channels, k, mask_type, device):
    torch.manual_seed(0)
    return MaskedConv2d(channels, channels, k, mask_type=mask_type).to(device)


def _forward_builder(batch, channels, size, k, mask_type):
    def build(variant, device):
        layer = _build_layer(channels, k, mask_type, device)
        x = torch.randn(batch, channels, size, size, device=device)
        backend = "reference" if variant == COMPILE else variant
        forward = torch.compile(layer) if variant == COMPILE else layer

        def step():
            with torch.no_grad(), pyreversible.use_backend(backend):
                return forward(x)

        return step

    return build


def _train_builder(batch, channels, size, k, mask_type):
    def build(variant, device):
        layer = _build_layer(channels, k, mask_type, device)
        x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
        cotangent = torch.randn(batch, channels, size, size, device=device)
        backend = "reference" if variant == COMPILE else variant
        forward = torch.compile(layer) if variant == COMPILE else layer

        def step():
            with pyreversible.use_backend(backend):
                # gradients are written afresh each step, as after optimizer.zero_grad()
                layer.zero_grad(set_to_none=True)
                x.grad = None
                forward(x).backward(cotangent)

        return step

    return build


def cases(quick=False):
    """The suite's cases; `quick` keeps the 7x7 type A configuration only, so that
    torch.compile, which compiles every case afresh (seconds each), stays short."""
    out = []
    for batch, channels, size, k, mask_type in CONFIGS[:1] if quick else CONFIGS:
        c = k // 2
        taps = c * k + c + (mask_type == "B")
        params = {
            "dtype": "float32",
            "batch": batch,
            "channels": channels,
            "size": size,
            "kernel_size": k,
            "mask_type": mask_type,
            "kept_taps": taps,
        }
        forward_flops = 2 * batch * channels * channels * taps * size * size
        activation = batch * channels * size * size
        weights = channels * channels * k * k + channels
        label = f"{k}x{k} {mask_type} B={batch} C={channels}"
        out.append(
            Case(
                name=f"forward {label}",
                params={**params, "pass": "forward"},
                flops=forward_flops,
                bytes=_FLOAT32_BYTES * (2 * activation + weights),
                build=_forward_builder(batch, channels, size, k, mask_type),
            )
        )
        out.append(
            Case(
                name=f"train {label}",
                params={**params, "pass": "forward+backward"},
                flops=3 * forward_flops,
                # x, y, cotangent, dx; the parameters read and their gradients written
                bytes=_FLOAT32_BYTES * (4 * activation + 2 * weights),
                build=_train_builder(batch, channels, size, k, mask_type),
            )
        )
    return out
