"""Test setup shared by every test file.

- Outputs are poisoned: with deterministic algorithms on, torch fills every tensor that
  torch.empty (in Python or at::empty in C++) allocates with NaN, so an output element that a
  kernel never writes fails its comparison.
- Tests run on PYREVERSIBLE_TEST_DEVICE (default cpu). On the CPU, Triton kernels run under
  the interpreter, which must be switched on before triton is imported.
"""

import os

if os.environ.get("PYREVERSIBLE_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import DEVICE  # noqa: E402

import pyreversible  # noqa: E402

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True


@pytest.fixture(autouse=True)
def _seed_and_backend():
    torch.manual_seed(0)
    previous = pyreversible.get_backend()
    yield
    pyreversible.set_backend(previous)


@pytest.fixture
def device():
    return torch.device(DEVICE)
