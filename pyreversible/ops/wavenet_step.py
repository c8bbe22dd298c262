"""Fast WaveNet generation: one step of the whole network per call, with queue caches.

h_0 = embedding[x]; per layer: z = conv taps (newest from h, older from the layer's ring buffer)
(+ cond); a = tanh(z[:G]) sigmoid(z[G:]); skip += W_s a + b_s; h += W_r a + b_r; then logits =
out(relu(head(relu(skip)))) and an inverse-CDF draw. See pyreversible.reference.wavenet_step
for the definition, the packed weight layout and the queue layout.

Runs on the backend chosen by pyreversible.set_backend (see pyreversible._backend). Generation
needs no gradients: these ops have no autograd formula.
"""

import importlib
import math

import torch

from pyreversible import _backend
from pyreversible.reference.wavenet_step import WEIGHTS_PER_LAYER, new_queue, pack_weights

# the module, by its full name: the package pyreversible.reference exports the function
# wavenet_step under the same name, which `from pyreversible.reference import` would get
reference = importlib.import_module("pyreversible.reference.wavenet_step")

__all__ = ["new_queue", "pack_weights", "wavenet_generate", "wavenet_step"]

# The compiled backends this op has, per device type (the argument `backends` of resolve).
_BACKENDS = {}


def check_args(op, x, uniform, queue, position, weights, dilations, temperature, cond, steps):
    """Raises ValueError or TypeError naming `op` and the argument for anything the kernels
    would reject, indices out of range included; `steps` is None for one step (uniform (B,),
    cond (B, L, 2G)) or N (uniform (N, B), cond (N, B, L, 2G))."""
    if not isinstance(weights, (list, tuple)) or not all(
        isinstance(w, torch.Tensor) for w in weights
    ):
        raise TypeError(f"{op}: weights must be the list of tensors from pack_weights")
    if not isinstance(dilations, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dilations
    ):
        raise ValueError(f"{op}: dilations must be a list of ints >= 1, got {dilations!r}")
    layers = len(dilations)
    if len(weights) != 1 + WEIGHTS_PER_LAYER * layers + 4:
        raise ValueError(
            f"{op}: weights has {len(weights)} tensors; {layers} layers take "
            f"{1 + WEIGHTS_PER_LAYER * layers + 4} (see pack_weights)"
        )
    embedding = weights[0]
    dtype, device = embedding.dtype, embedding.device
    if not dtype.is_floating_point:
        raise TypeError(f"{op}: weights must be floating-point, got {dtype}")
    if embedding.dim() != 2:
        raise ValueError(f"{op}: embedding must be (C, R), got {tuple(embedding.shape)}")
    classes, residual = embedding.shape
    if layers == 0:
        raise ValueError(f"{op}: the network needs at least one layer")
    conv = weights[1]
    if conv.dim() != 3 or conv.shape[1] != residual or conv.shape[2] % 2:
        raise ValueError(
            f"{op}: conv weight must be (K, R={residual}, 2G), got {tuple(conv.shape)}"
        )
    taps, gate = conv.shape[0], conv.shape[2] // 2
    skip = weights[1 + 4].shape[-1]
    expected = [(classes, residual)]
    for _ in range(layers):
        expected += [(taps, residual, 2 * gate), (2 * gate,), (gate, residual), (residual,)]
        expected += [(gate, skip), (skip,)]
    expected += [(skip, skip), (skip,), (skip, classes), (classes,)]
    for index, (w, shape) in enumerate(zip(weights, expected, strict=True)):
        if tuple(w.shape) != shape:
            raise ValueError(f"{op}: weights[{index}] must be {shape}, got {tuple(w.shape)}")
        if w.dtype != dtype or w.device != device:
            raise TypeError(
                f"{op}: weights[{index}] is {w.dtype} on {w.device}, weights[0] {dtype} on {device}"
            )
        if not w.is_contiguous():
            raise ValueError(f"{op}: weights[{index}] must be contiguous (use pack_weights)")

    if not isinstance(x, torch.Tensor) or x.dtype != torch.long or x.dim() != 1:
        raise TypeError(f"{op}: x must be a (B,) LongTensor of class indices")
    batch = x.shape[0]
    if batch == 0:
        raise ValueError(f"{op}: the batch is empty")
    if x.device != device:
        raise ValueError(f"{op}: x is on {x.device}, the weights on {device}")
    lead = (batch,) if steps is None else (steps, batch)
    if not isinstance(uniform, torch.Tensor) or uniform.dtype != torch.float32:
        raise TypeError(f"{op}: uniform must be a float32 tensor {lead}")
    if tuple(uniform.shape) != lead or uniform.device != device:
        raise ValueError(
            f"{op}: uniform must be {lead} on {device}, got {tuple(uniform.shape)} on "
            f"{uniform.device}"
        )
    rows = sum(length for _, length in reference.queue_layout(taps, dilations))
    if not isinstance(queue, torch.Tensor):
        raise TypeError(f"{op}: queue must be a tensor (B, Q, R), see new_queue")
    if tuple(queue.shape) != (batch, rows, residual):
        raise ValueError(
            f"{op}: queue must be (B, Q, R) = {(batch, rows, residual)} for this network and "
            f"batch, got {tuple(queue.shape)} (a queue belongs to one batch size)"
        )
    if queue.dtype != dtype or queue.device != device or not queue.is_contiguous():
        raise TypeError(f"{op}: queue must be a contiguous {dtype} tensor on {device}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"{op}: position must be an int >= 0, got {position!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"{op}: temperature must be a float, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"{op}: temperature must be finite and > 0, got {temperature}")
    if cond is not None:
        cond_shape = lead + (layers, 2 * gate)
        if not isinstance(cond, torch.Tensor) or tuple(cond.shape) != cond_shape:
            got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"{op}: cond must be {cond_shape}, got {got}")
        if cond.dtype != dtype or cond.device != device:
            raise TypeError(f"{op}: cond must be {dtype} on {device}, got {cond.dtype}")
    # the embedding lookup of x reads row x: an index outside [0, C) must never reach a kernel
    if position > 0 and (x.min() < 0 or x.max() >= classes):
        raise ValueError(
            f"{op}: x holds class indices in [{x.min().item()}, {x.max().item()}], "
            f"expected [0, {classes})"
        )


def wavenet_step(x, uniform, queue, position, weights, dilations, temperature=1.0, cond=None):
    """One generation step of a whole WaveNet; pushes each layer's input into `queue`.

    sample = inverse_cdf_sample(out(relu(head(relu(sum_l skip_l)))), u), with each layer's
    dilated taps read from its ring buffer in `queue` instead of recomputed.

    Args:
        x: (B,) int64, the sample at position - 1 (ignored at position 0).
        uniform: (B,) float32 in [0, 1), this step's uniform numbers.
        queue: (B, Q, R) from new_queue, contiguous; updated in place.
        position: int t >= 0, the time step being generated.
        weights: the list from pack_weights.
        dilations: L ints >= 1, the layers' dilations.
        temperature: float > 0.
        cond: (B, L, 2G) or None, the conditioning added to each layer's z at this step.

    Returns:
        (sample (B,) int64, logits (B, C)).

    Example:
        >>> C, R, G, S, K, dilations = 16, 8, 8, 12, 2, [1, 2, 4]
        >>> weights = pack_weights(torch.randn(C, R), [torch.randn(2 * G, R, K)] * 3,
        ...     [torch.zeros(2 * G)] * 3, [torch.randn(R, G)] * 3, [torch.zeros(R)] * 3,
        ...     [torch.randn(S, G)] * 3, [torch.zeros(S)] * 3, torch.randn(S, S),
        ...     torch.zeros(S), torch.randn(C, S), torch.zeros(C))
        >>> queue = new_queue(2, R, K, dilations)
        >>> x = torch.zeros(2, dtype=torch.long)
        >>> for t in range(5):
        ...     x, logits = wavenet_step(x, torch.rand(2), queue, t, weights, dilations)
        >>> x.shape, logits.shape
        (torch.Size([2]), torch.Size([2, 16]))
    """
    op = "wavenet_step"
    check_args(op, x, uniform, queue, position, weights, dilations, temperature, cond, None)
    embedding = weights[0]
    backend = _backend.resolve(op, embedding.device, embedding.dtype, backends=_BACKENDS)
    if backend == "reference":
        with torch.no_grad():
            return reference.wavenet_step(
                x, uniform, queue, position, weights, dilations, temperature, cond
            )
    raise AssertionError(f"{op}: backend {backend!r} is listed in _BACKENDS but not dispatched")


def wavenet_generate(x, uniform, queue, position, weights, dilations, temperature=1.0, cond=None):
    """N consecutive wavenet_step calls in one, each feeding its sample to the next.

    Args as wavenet_step, except uniform: (N, B) float32 and cond: (N, B, L, 2G) or None; x is
    the sample at position - 1.

    Returns:
        samples (N, B) int64; the queue ends at position + N.
    """
    op = "wavenet_generate"
    steps = uniform.shape[0] if isinstance(uniform, torch.Tensor) and uniform.dim() == 2 else -1
    check_args(op, x, uniform, queue, position, weights, dilations, temperature, cond, steps)
    embedding = weights[0]
    backend = _backend.resolve(op, embedding.device, embedding.dtype, backends=_BACKENDS)
    if backend == "reference":
        with torch.no_grad():
            return reference.wavenet_generate(
                x, uniform, queue, position, weights, dilations, temperature, cond
            )
    raise AssertionError(f"{op}: backend {backend!r} is listed in _BACKENDS but not dispatched")
