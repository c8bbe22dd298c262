"""pyreversible.audio: mu-law round trips within the stated bound, WAV files in and out."""

import math

import numpy as np
import pytest
import torch

from pyreversible.audio import mu_law_decode, mu_law_encode, read_wav, write_wav


@pytest.mark.parametrize("num_classes", [2, 17, 256, 65536])
def test_decode_then_encode_is_the_identity(num_classes):
    classes = torch.arange(num_classes)
    assert torch.equal(mu_law_encode(mu_law_decode(classes, num_classes), num_classes), classes)
    decoded = mu_law_decode(classes, num_classes, dtype=torch.float64)
    # the levels are odd-symmetric and increasing from -1 to 1
    ends = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(decoded[[0, -1]], ends, atol=1e-12, rtol=0)
    assert torch.all(decoded[1:] > decoded[:-1])
    torch.testing.assert_close(decoded, -decoded.flip(0), atol=1e-14, rtol=0)


@pytest.mark.parametrize("num_classes", [256, 1024])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_then_decode_within_half_a_level(num_classes, dtype):
    mu = num_classes - 1
    x = torch.cat([torch.linspace(-1, 1, 20001), torch.randn(1000) * 0.05]).to(dtype)
    x = x.clamp(-1, 1)
    y = mu_law_encode(x, num_classes)
    assert y.dtype == torch.long and y.min() >= 0 and y.max() <= mu
    back = mu_law_decode(y, num_classes, dtype=torch.float64)
    # half a level in the companded domain is 1 / mu; through the expansion that is a
    # relative step (1 + mu)^(1 / mu) - 1 of (|x| + 1 / mu)
    bound = (x.double().abs() + 1 / mu) * ((1 + mu) ** (1 / mu) - 1) + 1e-7
    assert torch.all((back - x.double()).abs() <= bound)
    # and the bound is tight: some amplitudes sit half a level away
    assert ((back - x.double()).abs() / bound).max() > 0.9


def test_encode_clamps_and_keeps_shape():
    x = torch.tensor([[-3.0, -1.0, 0.0], [1.0, 2.0, float(math.pi)]])
    y = mu_law_encode(x)
    assert y.shape == x.shape
    assert y.tolist() == [[0, 0, 128], [255, 255, 255]]


def test_wav_round_trip(tmp_path):
    path = str(tmp_path / "tone.wav")
    t = torch.arange(8000) / 8000
    stereo = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t), 0.25 * torch.cos(t * 9)])
    write_wav(path, stereo, 8000)
    read, rate = read_wav(path)
    assert rate == 8000 and read.shape == stereo.shape and read.dtype == torch.float32
    # 16-bit PCM: within one level (2 / 65536)
    torch.testing.assert_close(read, stereo, atol=2 / 32768, rtol=0)
    write_wav(path, stereo[0], 8000)
    mono, _ = read_wav(path)
    assert mono.shape == (1, 8000)


def test_read_wav_scales_integer_pcm(tmp_path):
    from scipy.io import wavfile

    path = str(tmp_path / "pcm.wav")
    wavfile.write(path, 100, np.array([-32768, 0, 16384], dtype=np.int16))
    assert read_wav(path)[0].tolist() == [[-1.0, 0.0, 0.5]]
    wavfile.write(path, 100, np.array([0, 128, 192], dtype=np.uint8))
    assert read_wav(path)[0].tolist() == [[-1.0, 0.0, 0.5]]


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="mu_law_encode: x"):
        mu_law_encode(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        mu_law_encode(torch.zeros(3), num_classes=1)
    with pytest.raises(ValueError, match=r"expected \[0, 256\)"):
        mu_law_decode(torch.tensor([256]))
    with pytest.raises(TypeError, match="mu_law_decode: y"):
        mu_law_decode(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="sample_rate"):
        write_wav(str(tmp_path / "x.wav"), torch.zeros(10), 0)
    with pytest.raises(ValueError, match="waveform"):
        write_wav(str(tmp_path / "x.wav"), torch.zeros(1, 2, 10), 100)
