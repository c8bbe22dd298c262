"""Backend choice: which implementation of an op runs.

`reference` is pure PyTorch and runs everywhere. `cpp` is the compiled extension
(pyreversible._C: C++ on the CPU, CUDA C++ on the GPU). `triton` is the Triton kernels: native
on a GPU, on the CPU only under TRITON_INTERPRET=1 (for tests, not speed). `auto` takes, per op
and device, the fastest backend that is available here.
"""

import contextlib
import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "cpp", "triton")

# What `auto` prefers, per device type, fastest first. The CPU order is measured
# (python -m bench); the CUDA order puts the hand-written kernels first until a GPU run says
# otherwise.
_AUTO_ORDER = {"cpu": ("cpp", "reference"), "cuda": ("cpp", "triton", "reference")}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name and cannot run here; the message says how to get it."""


def _load_extension():
    try:
        from pyreversible import _C
    except ImportError as e:
        return None, e
    return _C, None


_C, _C_ERROR = _load_extension()


def _check_name(name):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_state = {"backend": _check_name(os.environ.get("PYREVERSIBLE_BACKEND", "auto"))}
_logged = set()


def set_backend(name):
    """Choose the backend of every op: one of 'auto', 'reference', 'cpp', 'triton'."""
    _state["backend"] = _check_name(name)


def get_backend():
    """The backend chosen by set_backend, use_backend or PYREVERSIBLE_BACKEND."""
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name):
    """Within the block, every op runs on `name`; the previous choice comes back after it.

    Example:
        >>> with pyreversible.use_backend("reference"):
        ...     y = layer(x)
    """
    previous = _state["backend"]
    _state["backend"] = _check_name(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def _triton_interpreted():
    return os.environ.get("TRITON_INTERPRET") == "1"


def _reason(name, device_type):
    if name == "reference":
        return None
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available here (torch.cuda.is_available() is False)"
    if name == "cpp":
        if _C is None:
            return (
                f"the compiled extension pyreversible._C did not load ({_C_ERROR}); rebuild it "
                "with `pip install --no-build-isolation -e .` from the repository root"
            )
        if device_type == "cuda" and not _C.with_cuda:
            return (
                "pyreversible._C was built without CUDA; reinstall with a CUDA build of torch and "
                "a CUDA toolkit (nvcc) on PATH, or PYREVERSIBLE_BUILD_CUDA=1"
            )
        return None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed; `pip install 'triton>=3.6'`"
        if device_type == "cpu" and not _triton_interpreted():
            return (
                "triton runs on the CPU only under its interpreter; set TRITON_INTERPRET=1 "
                "before importing pyreversible (tests only: it is slow)"
            )
        return None
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


# Worked out once, at import, so that choosing a backend inside a compiled graph is a lookup.
_REASONS = {(b, d): _reason(b, d) for b in BACKENDS[1:] for d in ("cpu", "cuda")}


def unavailable_reason(name, device_type):
    """Why `name` cannot run on `device_type`, with the fix, or None when it can."""
    key = (name, device_type)
    if name == "reference":
        return None
    if key not in _REASONS:
        _check_name(name)
        return f"pyreversible has no kernels for device type {device_type!r}"
    return _REASONS[key]


def available_backends(device="cpu"):
    """The backends that can run on `device` here, e.g. ['reference', 'cpp']."""
    device_type = torch.device(device).type
    return [b for b in BACKENDS[1:] if unavailable_reason(b, device_type) is None]


_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# The dtypes each compiled backend's kernels take, per device type; `reference` takes any.
_DTYPES = {
    ("cpp", "cpu"): (torch.float32, torch.float64),
    ("cpp", "cuda"): _FLOATS,
    ("triton", "cpu"): _FLOATS,
    ("triton", "cuda"): _FLOATS,
}


def resolve(op, device, dtype):
    """The concrete backend ('reference', 'cpp' or 'triton') that runs `op` on `device`.

    A backend chosen by name that cannot run raises BackendUnavailableError, or TypeError when
    its kernels do not take `dtype`; `auto` skips those and logs its choice once per op, device
    type and dtype.
    """
    name = _state["backend"]
    device_type = device.type
    if name != "auto":
        reason = unavailable_reason(name, device_type)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {name!r} cannot run: {reason}")
        dtypes = _DTYPES.get((name, device_type))
        if dtypes is not None and dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(
                f"{op}: backend {name!r} on {device_type} takes {names}, got {dtype}; "
                "use backend 'reference' or 'auto' for this dtype"
            )
        return name
    order = _AUTO_ORDER.get(device_type, ("reference",))
    chosen = next(
        b
        for b in order
        if unavailable_reason(b, device_type) is None
        and dtype in _DTYPES.get((b, device_type), (dtype,))
    )
    key = (op, device_type, dtype)
    if key not in _logged and not torch.compiler.is_compiling():
        _logged.add(key)
        logger.info("%s on %s (%s) uses backend %r (auto)", op, device_type, dtype, chosen)
    return chosen
