"""Helpers for the tests: devices, backends, tolerances and non-contiguous inputs."""

import os

import torch

import pyreversible

DEVICE = os.environ.get("PYREVERSIBLE_TEST_DEVICE", "cpu")

# The compiled backends that can run on the test device (Triton under the interpreter on
# the CPU); every op is compared with `reference` on each.
BACKENDS = [b for b in pyreversible.available_backends(DEVICE) if b != "reference"]

DTYPES = [torch.float32, torch.float64]
if DEVICE == "cuda":
    DTYPES += [torch.float16, torch.bfloat16]

# Tolerances (atol, rtol) per dtype, for outputs of O(1) magnitude computed through chains of
# up to a few thousand multiply-adds:
# - float64: rounding of sums of ~1e3 terms, ~1e3 * 1.1e-16 relative, with margin;
# - float32: the kernels and torch sum in different orders (blocked GEMMs), so each differs
#   from the exact result by up to ~sqrt(K) * 6e-8 relative per layer, compounded over layers;
# - float16 / bfloat16: the reference itself rounds every layer to 11 or 8 bits while the
#   kernels accumulate in float32, so the comparison is against the reference's own error.
TOLERANCES = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-4, 2e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (1e-1, 5e-2),
}


def assert_close(actual, expected, dtype=None):
    atol, rtol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def strided(t):
    """A copy of t with the same values that is not contiguous: every other element of a
    buffer twice as long in the last dimension, the way slices of a larger tensor are."""
    buffer = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    view = buffer[..., ::2]
    view.copy_(t)
    return view
