"""Audio helpers: mu-law companding to class indices and back, WAV files in and out.

mu-law (ITU-T G.711's continuous form), mu = num_classes - 1:

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu)              for x in [-1, 1],
    y = floor((f(x) + 1) / 2 * mu + 1/2)                     a class index in [0, mu],
    x' = sign(g) ((1 + mu)^|g| - 1) / mu,  g = 2 y / mu - 1   the decoded amplitude.

Companding spends the classes where speech has most of its samples, near zero: the error of
a round trip is at most (|x| + 1/mu) ((1 + mu)^(1/mu) - 1), about 2.2% of |x| + 0.004 for
256 classes, instead of a uniform 1/mu.

WAV files are read and written with scipy.io.wavfile (`pip install scipy`, or the extra
`pyreversible[audio]`): PCM 8, 16, 24 and 32 bits and float WAVs in, 16-bit PCM out.
"""

import math

import numpy as np
import torch

__all__ = ["mu_law_decode", "mu_law_encode", "read_wav", "write_wav"]


def _check_classes(op, num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{op}: num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes - 1


def mu_law_encode(x, num_classes=256):
    """Class indices of amplitudes by mu-law companding: y = floor((f(x) + 1) mu / 2 + 1/2),
    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), mu = num_classes - 1.

    Args:
        x: float tensor of any shape, amplitudes in [-1, 1] (values outside are clamped).
        num_classes: C >= 2, the classes (256 for 8-bit mu-law).

    Returns:
        int64 tensor of x's shape, in [0, C).

    Example:
        >>> mu_law_encode(torch.tensor([-1.0, 0.0, 0.01, 1.0]))
        tensor([  0, 128, 157, 255])
    """
    op = "mu_law_encode"
    mu = _check_classes(op, num_classes)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{op}: x must be a floating-point tensor of amplitudes, got {got}")
    # float64 for the logarithm, so that float32 inputs land in the same classes everywhere
    x = x.to(torch.float64).clamp(-1.0, 1.0)
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.floor((companded + 1) / 2 * mu + 0.5).long()


def mu_law_decode(y, num_classes=256, dtype=torch.float32):
    """Amplitudes of class indices, inverting the companding: x = sign(g) ((1 + mu)^|g| - 1) /
    mu with g = 2 y / mu - 1, mu = num_classes - 1.

    Args:
        y: integer tensor of any shape, classes in [0, C).
        num_classes: C >= 2.
        dtype: floating dtype of the result.

    Returns:
        tensor of y's shape in [-1, 1].

    Example:
        >>> mu_law_decode(torch.tensor([0, 255]))
        tensor([-1.,  1.])
    """
    op = "mu_law_decode"
    mu = _check_classes(op, num_classes)
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{op}: y must be an integer tensor of class indices, got {got}")
    if y.numel() and (y.min() < 0 or y.max() > mu):
        raise ValueError(
            f"{op}: y holds class indices in [{y.min().item()}, {y.max().item()}], expected "
            f"[0, {num_classes})"
        )
    g = y.to(torch.float64) * (2 / mu) - 1
    x = torch.sign(g) * torch.expm1(g.abs() * math.log1p(mu)) / mu
    return x.to(dtype)


def read_wav(path):
    """A WAV file's samples as floats in [-1, 1] and its sample rate.

    Integer PCM is scaled by its full range (int16 by 1 / 32768; 8-bit PCM is unsigned,
    centred at 128); float WAVs are taken as they are.

    Args:
        path: the file.

    Returns:
        (waveform (channels, T) float32, sample_rate int).
    """
    from scipy.io import wavfile

    sample_rate, data = wavfile.read(path)
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128) / 128
    elif np.issubdtype(data.dtype, np.integer):
        samples = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        samples = data.astype(np.float32)
    waveform = torch.from_numpy(samples)
    # scipy gives (T,) for mono and (T, channels) otherwise
    waveform = waveform.unsqueeze(0) if waveform.dim() == 1 else waveform.t().contiguous()
    return waveform, int(sample_rate)


def write_wav(path, waveform, sample_rate):
    """Writes amplitudes in [-1, 1] (clamped) as a 16-bit PCM WAV file.

    Args:
        path: the file.
        waveform: float tensor (T,) for mono or (channels, T).
        sample_rate: int > 0, samples per second.
    """
    op = "write_wav"
    if not isinstance(waveform, torch.Tensor) or not waveform.dtype.is_floating_point:
        raise TypeError(f"{op}: waveform must be a floating-point tensor (channels, T) or (T,)")
    if waveform.dim() not in (1, 2):
        raise ValueError(f"{op}: waveform must be (T,) or (channels, T), got {waveform.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"{op}: sample_rate must be an int >= 1, got {sample_rate!r}")
    from scipy.io import wavfile

    samples = waveform.detach().to("cpu", torch.float64).clamp(-1.0, 1.0)
    pcm = torch.round(samples * 32767).to(torch.int16).numpy()
    wavfile.write(path, sample_rate, pcm if pcm.ndim == 1 else pcm.T.copy())
