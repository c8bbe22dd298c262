"""The gated residual layer of WaveNet, fused: one pass per tile of time steps.

z = causal_conv1d(x, W_conv, b_conv, d) (+ W_local c_local) (+ W_global c_global), 2G channels;
a = tanh(z[:, :G]) * sigmoid(z[:, G:]);  skip = W_s a + b_s;  x_next = x + W_r a + b_r.

Runs on the backend chosen by pyreversible.set_backend (see pyreversible._backend). The op has
C++ CPU kernels (float32, float64), CUDA C++ kernels (float32, float64, float16, bfloat16) and
Triton kernels (native on CUDA, under the interpreter on the CPU). The backward computes only
the gradients that autograd asks for.
"""

import torch

from pyreversible import _backend
from pyreversible.ops.causal_conv1d import _check_int
from pyreversible.reference.wavenet_layer import wavenet_layer as reference_wavenet_layer

# The compiled backends this op has, per device type (the argument `backends` of resolve).
_BACKENDS = {"cpu": ("cpp", "triton"), "cuda": ("cpp", "triton")}

# Kernel namespace of each compiled backend: the same op names live in both.
_NAMESPACE = {"cpp": "pyreversible", "triton": "pyreversible_triton"}


def _kernels(backend):
    if backend == "triton":
        # importing the module registers the pyreversible_triton ops
        import pyreversible.kernels.wavenet_layer  # noqa: F401
    return getattr(torch.ops, _NAMESPACE[backend])


class WavenetLayerFunction(torch.autograd.Function):
    """(x_next, skip) = wavenet_layer(...) on compiled kernels; config = (backend, dilation). The
    forward saves z (2G channels), from which the backward recomputes the gate."""

    @staticmethod
    def forward(
        ctx,
        x,
        conv_weight,
        conv_bias,
        residual_weight,
        residual_bias,
        skip_weight,
        skip_bias,
        config,
        local_cond,
        local_weight,
        global_cond,
        global_weight,
    ):
        backend, dilation = config
        x_next, skip, gate_input = _kernels(backend).wavenet_layer_fwd(
            x,
            conv_weight,
            conv_bias,
            residual_weight,
            residual_bias,
            skip_weight,
            skip_bias,
            dilation,
            local_cond,
            local_weight,
            global_cond,
            global_weight,
            True,
        )
        ctx.config = config
        ctx.save_for_backward(
            gate_input,
            x,
            conv_weight,
            residual_weight,
            skip_weight,
            local_cond,
            local_weight,
            global_cond,
            global_weight,
        )
        return x_next, skip

    @staticmethod
    def backward(ctx, dx_next, dskip):
        gate_input, x, conv_w, res_w, skip_w, local, local_w, glob, glob_w = ctx.saved_tensors
        # an output that the loss does not use reaches here as None: its gradient is zero
        if dx_next is None:
            dx_next = torch.zeros_like(x)
        if dskip is None:
            dskip = x.new_zeros(x.shape[0], skip_w.shape[0], x.shape[2])
        backend, dilation = ctx.config
        # the tensors' gradients in the forward's order, past the dilation (index 7): those not
        # needed (data, absent biases and conditioning) are not computed and come back as None
        needs = ctx.needs_input_grad
        output_mask = [*needs[:7], *needs[8:]]
        grads = _kernels(backend).wavenet_layer_bwd(
            dx_next,
            dskip,
            gate_input,
            x,
            conv_w,
            res_w,
            skip_w,
            dilation,
            local,
            local_w,
            glob,
            glob_w,
            output_mask,
        )
        dx, dcw, dcb, drw, drb, dsw, dsb, dlocal, dlocal_w, dglob, dglob_w = grads
        return dx, dcw, dcb, drw, drb, dsw, dsb, None, dlocal, dlocal_w, dglob, dglob_w


def _check_tensor(op, name, t, x, optional=False):
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected x's {x.dtype}")
    if t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device}, x on {x.device}")


def _check_shape(op, name, t, expected, what):
    if t is not None and tuple(t.shape) != expected:
        raise ValueError(f"{op}: {name} must be {what} = {expected}, got {tuple(t.shape)}")


def check_args(
    op,
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation,
    local_cond,
    local_weight,
    global_cond,
    global_weight,
):
    """Raises ValueError or TypeError naming `op` and the argument for anything the kernels
    would reject; returns the dilation as an int."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: x must be floating-point, got {x.dtype}")
    for name, t, optional in (
        ("conv_weight", conv_weight, False),
        ("conv_bias", conv_bias, True),
        ("residual_weight", residual_weight, False),
        ("residual_bias", residual_bias, True),
        ("skip_weight", skip_weight, False),
        ("skip_bias", skip_bias, True),
        ("local_cond", local_cond, True),
        ("local_weight", local_weight, True),
        ("global_cond", global_cond, True),
        ("global_weight", global_weight, True),
    ):
        _check_tensor(op, name, t, x, optional)
    dilation = _check_int(op, "dilation", dilation, 1)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (B, R, T), got shape {tuple(x.shape)}")
    batch, residual, length = x.shape
    if conv_weight.dim() != 3:
        raise ValueError(f"{op}: conv_weight must be (2G, R, K), got {tuple(conv_weight.shape)}")
    out_channels, in_channels, taps = conv_weight.shape
    if out_channels % 2:
        raise ValueError(
            f"{op}: conv_weight must have an even number 2G of output channels (the gate's "
            f"tanh and sigmoid halves), got {out_channels}"
        )
    if in_channels != residual:
        raise ValueError(
            f"{op}: conv_weight takes {in_channels} input channels, x has R={residual}"
        )
    if taps < 1:
        raise ValueError(f"{op}: kernel size (conv_weight.shape[2]) must be >= 1, got {taps}")
    gate = out_channels // 2
    _check_shape(op, "conv_bias", conv_bias, (2 * gate,), "(2G,)")
    _check_shape(op, "residual_weight", residual_weight, (residual, gate), "(R, G)")
    _check_shape(op, "residual_bias", residual_bias, (residual,), "(R,)")
    if skip_weight.dim() != 2 or skip_weight.shape[1] != gate:
        raise ValueError(
            f"{op}: skip_weight must be (S, G) with G={gate}, got {tuple(skip_weight.shape)}"
        )
    _check_shape(op, "skip_bias", skip_bias, (skip_weight.shape[0],), "(S,)")
    for kind, cond, weight in (
        ("local", local_cond, local_weight),
        ("global", global_cond, global_weight),
    ):
        if (cond is None) != (weight is None):
            raise ValueError(f"{op}: {kind}_cond and {kind}_weight must be given together")
    if local_cond is not None:
        if local_cond.dim() != 3 or local_cond.shape[0] != batch or local_cond.shape[2] != length:
            raise ValueError(
                f"{op}: local_cond must be (B, C_local, T) with B={batch}, T={length}, got "
                f"{tuple(local_cond.shape)}"
            )
        _check_shape(
            op, "local_weight", local_weight, (2 * gate, local_cond.shape[1]), "(2G, C_local)"
        )
    if global_cond is not None:
        if global_cond.dim() != 2 or global_cond.shape[0] != batch:
            raise ValueError(
                f"{op}: global_cond must be (B, C_global) with B={batch}, got "
                f"{tuple(global_cond.shape)}"
            )
        _check_shape(
            op, "global_weight", global_weight, (2 * gate, global_cond.shape[1]), "(2G, C_global)"
        )
    return dilation


def wavenet_layer(
    x,
    conv_weight,
    conv_bias,
    residual_weight,
    residual_bias,
    skip_weight,
    skip_bias,
    dilation=1,
    local_cond=None,
    local_weight=None,
    global_cond=None,
    global_weight=None,
):
    """One gated residual layer of WaveNet, fused in one pass per tile of time steps.

    z = causal_conv1d(x, W_conv, b_conv, d) + W_local c_local + W_global c_global;
    a = tanh(z[:G]) sigmoid(z[G:]); skip = W_s a + b_s; x_next = x + W_r a + b_r.

    Args:
        x: (B, R, T) residual stream, any strides.
        conv_weight: (2G, R, K), nn.Conv1d's layout; conv_bias: (2G,) or None.
        residual_weight: (R, G), residual_bias: (R,) or None: the 1x1 residual projection.
        skip_weight: (S, G), skip_bias: (S,) or None: the 1x1 skip projection.
        dilation: int >= 1, time steps between taps.
        local_cond: (B, C_local, T) with local_weight: (2G, C_local), or both None.
        global_cond: (B, C_global) with global_weight: (2G, C_global), or both None.

    Returns:
        (x_next (B, R, T), skip (B, S, T)).

    Example:
        >>> x = torch.randn(2, 8, 100)
        >>> conv_w, conv_b = torch.randn(12, 8, 2) / 4, torch.zeros(12)
        >>> res_w, res_b = torch.randn(8, 6) / 3, torch.zeros(8)
        >>> skip_w, skip_b = torch.randn(16, 6) / 3, torch.zeros(16)
        >>> x_next, skip = wavenet_layer(x, conv_w, conv_b, res_w, res_b, skip_w, skip_b, 4)
        >>> x_next.shape, skip.shape
        (torch.Size([2, 8, 100]), torch.Size([2, 16, 100]))
    """
    op = "wavenet_layer"
    args = (x, conv_weight, conv_bias, residual_weight, residual_bias, skip_weight, skip_bias)
    conditioning = (local_cond, local_weight, global_cond, global_weight)
    dilation = check_args(op, *args, dilation, *conditioning)
    backend = _backend.resolve(op, x.device, x.dtype, backends=_BACKENDS)
    if backend == "reference":
        return reference_wavenet_layer(*args, dilation, *conditioning)
    tensors = [t for t in (*args, *conditioning) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return WavenetLayerFunction.apply(*args, (backend, dilation), *conditioning)
    # inference (generation, evaluation): no autograd node, z not saved
    x_next, skip, _ = _kernels(backend).wavenet_layer_fwd(*args, dilation, *conditioning, False)
    return x_next, skip


def _register_fakes():
    # shapes of the compiled ops' outputs, for torch.compile and FakeTensor tracing
    @torch.library.register_fake("pyreversible::wavenet_layer_fwd")
    def _(
        x,
        conv_weight,
        conv_bias,
        residual_weight,
        residual_bias,
        skip_weight,
        skip_bias,
        dilation,
        local_cond,
        local_weight,
        global_cond,
        global_weight,
        save_gate_input,
    ):
        batch, _, length = x.shape
        gate_batch = batch if save_gate_input else 0
        return (
            x.new_empty(x.shape),
            x.new_empty(batch, skip_weight.shape[0], length),
            x.new_empty(gate_batch, conv_weight.shape[0], length),
        )

    @torch.library.register_fake("pyreversible::wavenet_layer_bwd")
    def _(
        dx_next,
        dskip,
        gate_input,
        x,
        conv_weight,
        residual_weight,
        skip_weight,
        dilation,
        local_cond,
        local_weight,
        global_cond,
        global_weight,
        output_mask,
    ):
        shapes = (
            x.shape,
            conv_weight.shape,
            conv_weight.shape[:1],
            residual_weight.shape,
            residual_weight.shape[:1],
            skip_weight.shape,
            skip_weight.shape[:1],
            None if local_cond is None else local_cond.shape,
            None if local_weight is None else local_weight.shape,
            None if global_cond is None else global_cond.shape,
            None if global_weight is None else global_weight.shape,
        )
        return tuple(
            x.new_empty(shape) if wanted and shape is not None else None
            for wanted, shape in zip(output_mask, shapes, strict=True)
        )


if _backend._C is not None:
    _register_fakes()
