"""Masked 2-D convolution (PixelCNN), the building block of autoregressive image models.

The compiled kernels visit only the kept taps of the mask (a little over half of the K * K),
instead of multiplying a full convolution's weight by a mask of zeros. Runs on the backend
chosen by pyreversible.set_backend (see pyreversible._backend): `reference` anywhere, `cpp` on
the CPU (float32, float64) and on CUDA (float32, float64, float16, bfloat16), `triton` on CUDA
(and on the CPU under the interpreter, for tests).
"""

import torch

from pyreversible import _backend
from pyreversible.reference.masked_conv2d import MASK_TYPES
from pyreversible.reference.masked_conv2d import masked_conv2d as reference_masked_conv2d

# The compiled backends this op has, per device type (the argument `backends` of resolve).
_BACKENDS = {"cpu": ("cpp", "triton"), "cuda": ("cpp", "triton")}

# Kernel namespace of each compiled backend: the same op names live in both.
_NAMESPACE = {"cpp": "pyreversible", "triton": "pyreversible_triton"}


def _kernels(backend):
    if backend == "triton":
        # importing the module registers the pyreversible_triton ops
        import pyreversible.kernels.masked_conv2d  # noqa: F401
    return getattr(torch.ops, _NAMESPACE[backend])


class MaskedConv2dFunction(torch.autograd.Function):
    """y = the masked convolution of x on compiled kernels; config = (backend, mask_type). The
    backward returns zeros at the masked taps of dW."""

    @staticmethod
    def forward(ctx, x, weight, bias, config):
        backend, mask_type = config
        ctx.config = config
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return _kernels(backend).masked_conv2d_fwd(x, weight, bias, mask_type)

    @staticmethod
    def backward(ctx, dy):
        backend, mask_type = ctx.config
        x, weight = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        dx, dweight, dbias = _kernels(backend).masked_conv2d_bwd(dy, x, weight, mask_type, need_dx)
        return dx if need_dx else None, dweight, dbias if ctx.has_bias else None, None


def check_args(op, x, weight, bias, mask_type):
    """Raises ValueError or TypeError, naming `op` and the argument, for arguments that no
    backend takes."""
    if not isinstance(mask_type, str):
        raise TypeError(f"{op}: mask_type must be a str, 'A' or 'B', got {type(mask_type)}")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"{op}: mask_type must be 'A' or 'B', got {mask_type!r}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating-point, got {t.dtype}")
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected x's {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device}, x on {x.device}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be (O, I, K, K), got shape {tuple(weight.shape)}")
    k = weight.shape[-1]
    if weight.shape[-2] != k:
        raise ValueError(f"{op}: weight must have a square kernel, got {tuple(weight.shape[-2:])}")
    if k % 2 == 0:
        raise ValueError(f"{op}: kernel_size must be odd (a centre tap), got {k}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"{op}: weight has {weight.shape[1]} input channels, x has {x.shape[1]} channels"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if x.numel() == 0 or weight.numel() == 0:
        raise ValueError(
            f"{op}: x {tuple(x.shape)} and weight {tuple(weight.shape)} must not be empty"
        )


def masked_conv2d(x, weight, bias=None, mask_type="B"):
    """Masked 2-D convolution (PixelCNN), stride 1, "same" output size.

    y[b, o, h, w] = bias[o] + sum_i sum_{(ky, kx) kept} W[o, i, ky, kx]
    x[b, i, h + ky - c, w + kx - c], with c = K // 2 and x zero outside the image. Type 'A'
    keeps the taps above the centre row and, on the centre row, those left of the centre;
    type 'B' keeps the centre as well. So y at pixel p depends on x at pixels before p in
    raster order (A), or before p and at p (B): A for a model's first layer, B after it.

    Args:
        x: (B, I, H, W).
        weight: (O, I, K, K), K odd, in nn.Conv2d's layout; its masked entries are ignored,
            and get zero gradient.
        bias: (O,) or None.
        mask_type: 'A' or 'B'.

    Returns:
        y: (B, O, H, W).

    Example:
        >>> x = torch.randn(2, 3, 28, 28)
        >>> w = torch.randn(16, 3, 7, 7)
        >>> masked_conv2d(x, w, mask_type="A").shape
        torch.Size([2, 16, 28, 28])
    """
    op = "masked_conv2d"
    check_args(op, x, weight, bias, mask_type)
    backend = _backend.resolve(op, x.device, x.dtype, backends=_BACKENDS)
    if backend == "reference":
        return reference_masked_conv2d(x, weight, bias, mask_type)
    params = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in params):
        return MaskedConv2dFunction.apply(x, weight, bias, (backend, mask_type))
    # inference (sampling): no autograd node, nothing saved
    return _kernels(backend).masked_conv2d_fwd(x, weight, bias, mask_type)


def _register_fakes():
    # shapes of the compiled ops' outputs, for torch.compile and FakeTensor tracing
    @torch.library.register_fake("pyreversible::masked_conv2d_fwd")
    def _(x, weight, bias, mask_type):
        return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])

    @torch.library.register_fake("pyreversible::masked_conv2d_bwd")
    def _(dy, x, weight, mask_type, need_dx):
        dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
        return dx, weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


if _backend._C is not None:
    _register_fakes()
