"""PixelCNN: shapes, likelihood, causality in raster order, seeded sampling, bad input."""

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, assert_close

import pyreversible
from pyreversible.nn import PixelCNN
from pyreversible.ops.masked_conv2d import _BACKENDS

MODEL_BACKENDS = ["reference", *(b for b in BACKENDS if b in _BACKENDS.get(DEVICE, ()))]


def small_model(in_channels=1):
    model = PixelCNN(in_channels, num_levels=5, hidden_channels=8, num_layers=3, kernel_size=5)
    return model.to(DEVICE).double()


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_shapes_and_log_prob(backend):
    model = small_model(in_channels=2)
    x = torch.randint(0, 5, (3, 2, 6, 7), device=DEVICE)
    with pyreversible.use_backend(backend):
        logits = model(x)
        log_prob = model.log_prob(x)
    assert logits.shape == (3, 5, 2, 6, 7)
    expected = -F.cross_entropy(logits, x, reduction="none").sum(dim=(1, 2, 3))
    assert_close(log_prob, expected)
    with pyreversible.use_backend("reference"):
        assert_close(logits, model(x))


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_no_logit_depends_on_its_own_or_a_later_pixel(backend):
    model = small_model(in_channels=2)
    height, width = 5, 6
    x = torch.randint(0, 5, (1, 2, height, width), device=DEVICE)
    with pyreversible.use_backend(backend):
        logits = model(x)
        for p in (0, 7, 13, height * width - 1):
            i, j = divmod(p, width)
            changed = x.clone()
            changed[:, :, i, j] = (changed[:, :, i, j] + 1 + torch.arange(2, device=DEVICE)) % 5
            other = model(changed)
            # pixels at or before p in raster order see nothing of pixel p
            flat, flat_other = logits.flatten(3), other.flatten(3)
            torch.testing.assert_close(
                flat_other[..., : p + 1], flat[..., : p + 1], atol=1e-12, rtol=0
            )
            if p + 1 < height * width:
                # and the next pixel does see it: the test can fail
                assert not torch.allclose(flat_other[..., p + 1], flat[..., p + 1])


def test_sample_is_seeded_and_in_range():
    model = small_model()
    a = model.sample(3, 4, 5, generator=torch.Generator(DEVICE).manual_seed(1))
    b = model.sample(3, 4, 5, generator=torch.Generator(DEVICE).manual_seed(1))
    assert a.shape == (3, 1, 4, 5) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < 5
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_sample_follows_the_model():
    # with every logit but one level's pushed down, the sampler must draw that level
    model = small_model()
    with torch.no_grad():
        last = model.net[-1]
        last.weight.zero_()
        last.bias.fill_(-30.0)
        last.bias[3] = 30.0
    x = model.sample(2, 3, 3, generator=torch.Generator(DEVICE).manual_seed(0))
    assert (x == 3).all()


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(2, 1, 4, 4), TypeError, "LongTensor"),
        (torch.zeros(2, 4, 4, dtype=torch.long), ValueError, r"\(B, 1, H, W\)"),
        (torch.zeros(2, 2, 4, 4, dtype=torch.long), ValueError, r"\(B, 1, H, W\)"),
        (torch.full((2, 1, 4, 4), 5), ValueError, r"levels must lie in \[0, 5\)"),
        (torch.full((2, 1, 4, 4), -1), ValueError, r"levels must lie in \[0, 5\)"),
    ],
)
def test_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        small_model().log_prob(x.to(DEVICE))


def test_bad_construction():
    with pytest.raises(ValueError, match="num_levels must be an int >= 2"):
        PixelCNN(num_levels=1)
    with pytest.raises(ValueError, match="kernel_size"):
        PixelCNN(kernel_size=4)
