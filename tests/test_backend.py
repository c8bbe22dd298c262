"""Backend choice: set_backend, use_backend, PYREVERSIBLE_BACKEND, available_backends."""

import os
import subprocess
import sys

import pytest
import torch

import pyreversible
from pyreversible import _backend


def test_available_backends_always_has_reference():
    assert "reference" in pyreversible.available_backends()
    assert set(pyreversible.available_backends()) <= {"reference", "cpp", "triton"}


def test_set_and_use_backend():
    pyreversible.set_backend("reference")
    assert pyreversible.get_backend() == "reference"
    with pyreversible.use_backend("auto"):
        assert pyreversible.get_backend() == "auto"
    assert pyreversible.get_backend() == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        pyreversible.set_backend("fortran")


def test_use_backend_restores_after_an_error():
    with pytest.raises(KeyError), pyreversible.use_backend("reference"):
        raise KeyError
    assert pyreversible.get_backend() == "auto"


def test_named_backend_that_cannot_run_says_how_to_fix_it():
    if torch.cuda.is_available():
        pytest.skip("asks for CUDA kernels where there is no GPU; a CPU machine checks this")
    for name in ("cpp", "triton"):
        with (
            pyreversible.use_backend(name),
            pytest.raises(
                pyreversible.BackendUnavailableError, match=f"backend '{name}' cannot run: no CUDA"
            ),
        ):
            _backend.resolve("additive_coupling", torch.device("cuda"), torch.float32)
    assert pyreversible.available_backends("cuda") == ["reference"]


def test_triton_on_cpu_needs_the_interpreter():
    reason = _backend._reason("triton", "cpu")
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert reason is None or "not installed" in reason
    else:
        assert "TRITON_INTERPRET=1" in reason


def test_auto_logs_its_choice_once(caplog):
    _backend._logged.clear()
    with caplog.at_level("INFO", logger="pyreversible._backend"):
        for _ in range(3):
            _backend.resolve("additive_coupling", torch.device("cpu"), torch.float32)
    assert len([r for r in caplog.records if "additive_coupling" in r.message]) == 1


def test_environment_variable_chooses_the_backend():
    code = "import pyreversible; print(pyreversible.get_backend())"
    env = dict(os.environ, PYREVERSIBLE_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "reference", out.stderr
    env["PYREVERSIBLE_BACKEND"] = "nonsense"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "backend must be one of" in out.stderr
