"""The examples run end to end (briefly: their figures come from full runs, in the README)."""

import math
import os
import subprocess
import sys

import torch

from pyreversible.audio import read_wav, write_wav

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


def test_wavenet_speech_runs(tmp_path):
    # a synthetic voiced sound (harmonics of a gliding pitch under a syllable-like envelope,
    # plus noise), so the test never depends on a recording being installed
    rate = 16000
    t = torch.arange(rate // 2, dtype=torch.float64) / rate
    pitch = 2 * math.pi * torch.cumsum(120 + 40 * t, dim=0) / rate
    voice = sum(torch.sin(k * pitch) / k for k in range(1, 6))
    envelope = torch.sin(math.pi * t / t[-1]).clamp(min=0) ** 2
    generator = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(t.shape, generator=generator, dtype=torch.float64)
    wav, out = tmp_path / "voice.wav", tmp_path / "generated.wav"
    write_wav(str(wav), (0.3 * voice * envelope + noise).float(), rate)
    command = [sys.executable, "examples/wavenet_speech.py", str(wav), "--rate", "8000"]
    command += ["--residual", "8", "--gate", "8", "--skip", "16", "--layers", "4"]
    command += ["--stacks", "1", "--steps", "3", "--batch", "2", "--segment", "64"]
    command += ["--seconds", "0.01", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "held-out NLL per sample" in result.stdout and "samples/s" in result.stdout
    generated, generated_rate = read_wav(str(out))
    # the prompt (one receptive field, 16 samples) and 0.01 s at 8 kHz
    assert generated_rate == 8000 and generated.shape == (1, 16 + 80)
