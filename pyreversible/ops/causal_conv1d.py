"""Causal dilated 1-D convolution (WaveNet): nn.Conv1d on the left-padded input, unpadded.

y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] * x[b, i, t - (K - 1 - k) * d], x = 0 before t = 0.

Runs on the backend chosen by pyreversible.set_backend (see pyreversible._backend). The op has
C++ CPU kernels (float32, float64), CUDA C++ kernels (float32, float64, float16, bfloat16) and
Triton kernels (native on CUDA, under the interpreter on the CPU).
"""

import torch

from pyreversible import _backend
from pyreversible.reference.causal_conv1d import causal_conv1d as reference_causal_conv1d

# The compiled backends this op has, per device type (the argument `backends` of resolve).
_BACKENDS = {"cpu": ("cpp", "triton"), "cuda": ("cpp", "triton")}

# Kernel namespace of each compiled backend: the same op names live in both.
_NAMESPACE = {"cpp": "pyreversible", "triton": "pyreversible_triton"}


def _kernels(backend):
    if backend == "triton":
        # importing the module registers the pyreversible_triton ops
        import pyreversible.kernels.causal_conv1d  # noqa: F401
    return getattr(torch.ops, _NAMESPACE[backend])


class CausalConv1dFunction(torch.autograd.Function):
    """y = causal_conv1d(x, weight, bias) on compiled kernels; config = (backend, d, groups)."""

    @staticmethod
    def forward(ctx, x, weight, bias, config):
        backend, dilation, groups = config
        ctx.config = config
        ctx.save_for_backward(x, weight)
        return _kernels(backend).causal_conv1d_fwd(x, weight, bias, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        backend, dilation, groups = ctx.config
        x, weight = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        dx, dweight, dbias = _kernels(backend).causal_conv1d_bwd(
            dy, x, weight, dilation, groups, mask
        )
        return dx, dweight, dbias, None


def _check_int(op, name, value, low):
    # a bool is an int to Python, but never a meaningful dilation or group count
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{op}: {name} must be >= {low}, got {value}")
    return value


def check_args(op, x, weight, bias, dilation, groups):
    """Raises ValueError or TypeError naming `op` and the argument for anything the kernels
    would reject; returns (dilation, groups) as ints."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not (isinstance(t, torch.Tensor) or (name == "bias" and t is None)):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (B, C_in, T), got shape {tuple(x.shape)}")
    if weight.dim() != 3:
        raise ValueError(
            f"{op}: weight must be (C_out, C_in / groups, K), got shape {tuple(weight.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: x must be floating-point, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected x's {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device}, x on {x.device}")
    dilation = _check_int(op, "dilation", dilation, 1)
    groups = _check_int(op, "groups", groups, 1)
    out_channels, in_per_group, taps = weight.shape
    if taps < 1:
        raise ValueError(f"{op}: kernel size (weight.shape[2]) must be >= 1, got {taps}")
    if x.shape[1] % groups or out_channels % groups:
        raise ValueError(
            f"{op}: groups must divide C_in and C_out, got groups={groups} for C_in={x.shape[1]}, "
            f"C_out={out_channels}"
        )
    if in_per_group * groups != x.shape[1]:
        raise ValueError(
            f"{op}: x has C_in={x.shape[1]} channels, weight expects {in_per_group} per group x "
            f"{groups} groups = {in_per_group * groups}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{op}: bias must be ({out_channels},), got {tuple(bias.shape)}")
    return dilation, groups


def causal_conv1d(x, weight, bias=None, dilation=1, groups=1):
    """Causal dilated 1-D convolution: y[t] sees x[:t + 1] only, through taps d apart.

    y[b, o, t] = bias[o] + sum_i sum_k W[o, i, k] x[b, i, t - (K - 1 - k) d], x = 0 before t = 0.

    Equals nn.Conv1d of x left-padded by (K - 1) * dilation, without building the padded copy.

    Args:
        x: (B, C_in, T), any strides.
        weight: (C_out, C_in / groups, K), nn.Conv1d's layout.
        bias: (C_out,) or None.
        dilation: int >= 1, time steps between taps.
        groups: int >= 1 dividing C_in and C_out; groups = C_in = C_out is depthwise.

    Returns:
        y: (B, C_out, T).

    Example:
        >>> x = torch.randn(2, 4, 100)
        >>> w = torch.randn(8, 4, 2)
        >>> y = causal_conv1d(x, w, dilation=4)
        >>> y.shape
        torch.Size([2, 8, 100])
        >>> torch.allclose(causal_conv1d(x[..., :50], w, dilation=4), y[..., :50], atol=1e-5)
        True
    """
    op = "causal_conv1d"
    dilation, groups = check_args(op, x, weight, bias, dilation, groups)
    backend = _backend.resolve(op, x.device, x.dtype, backends=_BACKENDS)
    if backend == "reference":
        return reference_causal_conv1d(x, weight, bias, dilation, groups)
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return CausalConv1dFunction.apply(x, weight, bias, (backend, dilation, groups))
    # inference (generation, evaluation): no autograd node, nothing saved
    return _kernels(backend).causal_conv1d_fwd(x, weight, bias, dilation, groups)


def _register_fakes():
    # shapes of the compiled ops' outputs, for torch.compile and FakeTensor tracing
    @torch.library.register_fake("pyreversible::causal_conv1d_fwd")
    def _(x, weight, bias, dilation, groups):
        return x.new_empty(x.shape[0], weight.shape[0], x.shape[2])

    @torch.library.register_fake("pyreversible::causal_conv1d_bwd")
    def _(dy, x, weight, dilation, groups, output_mask):
        dx = x.new_empty(x.shape) if output_mask[0] else None
        dweight = weight.new_empty(weight.shape) if output_mask[1] else None
        dbias = weight.new_empty(weight.shape[0]) if output_mask[2] else None
        return dx, dweight, dbias


if _backend._C is not None:
    _register_fakes()
