"""The examples run end to end (briefly: their figures come from full runs, in the README)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_nice_digits_runs(tmp_path):
    out = tmp_path / "samples.png"
    command = [sys.executable, "examples/nice_digits.py", "--epochs", "2", "--hidden", "32"]
    result = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "per-pixel logistic baseline" in result.stdout
    assert out.stat().st_size > 0


def test_pixelcnn_digits_runs(tmp_path):
    out = tmp_path / "samples.png"
    command = [sys.executable, "examples/pixelcnn_digits.py", "--epochs", "1", "--hidden", "8"]
    command += ["--layers", "2", "--batch", "256", "--samples", "4", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "per-pixel categorical" in result.stdout
    assert out.stat().st_size > 0
