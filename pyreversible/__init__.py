"""pyreversible: fused kernels for reversible and autoregressive generative models."""

from pyreversible import audio, nn, ops, reference
from pyreversible._backend import (
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "audio",
    "available_backends",
    "get_backend",
    "nn",
    "ops",
    "reference",
    "set_backend",
    "use_backend",
]
