"""WaveNet and fast generation: causality, incremental logits against forward, cached against
naive sampling, prompts, conditioning, temperature, queue caches of CausalConv1d, bad input.

Tolerances. Incremental logits (one wavenet_step per time step) and forward logits are the
same sums in different orders: float64 agrees to ~1e-15 relative per layer, float32 to a few
ulps per GEMM compounded over the layers (helpers.TOLERANCES). Samples drawn by the two
methods from the same uniform numbers differ only where a uniform number falls between two
roundings of a CDF entry (a tie within ~1e-7 in float32): one such draw, and every later
draw of that row conditions on another history. Such ties are rare (the chance per draw is
about C times the logits' rounding difference); the tests ask for >= 99% equal positions.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, assert_close

import pyreversible
from pyreversible.nn import CausalConv1d, QueueCache, WaveNet
from pyreversible.ops.wavenet_layer import _BACKENDS as LAYER_KERNELS
from pyreversible.ops.wavenet_step import _BACKENDS as STEP_KERNELS
from pyreversible.ops.wavenet_step import wavenet_step

# backends of WaveNet.forward (the wavenet_layer op)
MODEL_BACKENDS = ["reference", *(b for b in BACKENDS if b in LAYER_KERNELS.get(DEVICE, ()))]

# backends of cached generation (the wavenet_step op): the Triton interpreter takes seconds per
# step, too slow for hundreds of steps here; tests/test_wavenet_step.py compares its step with
# the reference's
STEP_BACKENDS = [
    "reference",
    *(
        b
        for b in BACKENDS
        if b in STEP_KERNELS.get(DEVICE, ()) and not (b == "triton" and DEVICE == "cpu")
    ),
]

CLASSES = 16


def small_model(dtype=torch.float64, kernel_size=2, local=None, speakers=None, stacks=2):
    # receptive field (K - 1) * 2 * (1 + 2 + 4) + 1 = 15 for K = 2, 29 for K = 3
    model = WaveNet(
        num_classes=CLASSES,
        residual_channels=8,
        dilation_channels=6,
        skip_channels=12,
        kernel_size=kernel_size,
        num_layers=3,
        num_stacks=stacks,
        local_cond_channels=local,
        num_speakers=speakers,
    )
    return model.to(DEVICE, dtype)


def generator(seed=0):
    return torch.Generator(DEVICE).manual_seed(seed)


def conditioning(model, batch, length):
    local = speaker = None
    if model.local_cond_channels is not None:
        local = torch.randn(batch, model.local_cond_channels, length, device=DEVICE)
        local = local.to(model.out_weight.dtype)
    if model.num_speakers is not None:
        speaker = torch.randint(0, model.num_speakers, (batch,), device=DEVICE)
    return local, speaker


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_forward_shape_and_causality(backend):
    model = small_model(local=3, speakers=2)
    batch, length = 2, 40
    x = torch.randint(0, CLASSES, (batch, length), device=DEVICE)
    local, speaker = conditioning(model, batch, length)
    with pyreversible.use_backend(backend):
        logits = model(x, local, speaker)
        assert logits.shape == (batch, CLASSES, length)
        for t in (0, 7, 20, length - 1):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 1) % CLASSES
            other = model(changed, local, speaker)
            # the logits at s <= t predict x[:, s] from x[:, :s]: they do not see x[:, t]
            torch.testing.assert_close(
                other[..., : t + 1], logits[..., : t + 1], atol=1e-12, rtol=0
            )
            if t + 1 < length:
                # and the next one does: the test can fail
                assert not torch.allclose(other[..., t + 1], logits[..., t + 1])
        # local conditioning at t enters the logits at t, not before
        changed = local.clone()
        changed[:, :, 20] += 1
        other = model(x, changed, speaker)
        torch.testing.assert_close(other[..., :20], logits[..., :20], atol=0, rtol=0)
        assert not torch.allclose(other[..., 20], logits[..., 20])


def test_receptive_field():
    model = small_model(kernel_size=3)
    field = model.receptive_field
    assert field == 2 * 2 * (1 + 2 + 4) + 1
    length = field + 10
    x = torch.randint(0, CLASSES, (1, length), device=DEVICE)
    logits = model(x)
    changed = x.clone()
    changed[:, 3] = (changed[:, 3] + 1) % CLASSES
    other = model(changed)
    # x[:, 3] reaches the logits at 4 .. 3 + receptive_field, no further
    # (through the longest path alone: a small change, but not none)
    assert not torch.equal(other[..., 3 + field], logits[..., 3 + field])
    torch.testing.assert_close(other[..., 4 + field :], logits[..., 4 + field :], atol=0, rtol=0)


def test_training_loss_has_gradients():
    model = small_model(dtype=torch.float32, local=2, speakers=3)
    x = torch.randint(0, CLASSES, (3, 30), device=DEVICE)
    local, speaker = conditioning(model, 3, 30)
    loss = F.cross_entropy(model(x, local, speaker), x)
    loss.backward()
    # the last layer's residual output feeds nothing (only its skip reaches the head)
    last = f"layers.{len(model.layers) - 1}.residual_"
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert (parameter.grad.abs().sum() > 0) != name.startswith(last), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("batch", [1, 5])
def test_incremental_logits_equal_forward(dtype, kernel_size, batch):
    model = small_model(dtype, kernel_size, local=3, speakers=4)
    length = 2 * model.receptive_field + 3
    x = torch.randint(0, CLASSES, (batch, length), device=DEVICE)
    local, speaker = conditioning(model, batch, length)
    expected = model(x, local, speaker)

    weights, queue = model.pack_weights(), model.new_queue(batch)
    cond = model.step_conditioning(local, speaker, 0, length)
    previous = torch.zeros(batch, dtype=torch.long, device=DEVICE)
    uniform = torch.rand(length, batch, generator=generator(), device=DEVICE)
    for t in range(length):
        _, logits = wavenet_step(
            previous, uniform[t], queue, t, weights, model.dilations, 1.0, cond[t]
        )
        assert_close(logits, expected[:, :, t], dtype)
        previous = x[:, t]


def agreement(a, b):
    return (a == b).double().mean().item()


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_and_naive_draw_the_same_samples(backend, dtype):
    model = small_model(dtype)
    with pyreversible.use_backend(backend):
        cached = model.generate(300, batch_size=2, generator=generator(1))
    naive = model.generate(300, batch_size=2, method="naive", generator=generator(1))
    assert cached.shape == (2, 300) and cached.dtype == torch.long
    assert cached.min() >= 0 and cached.max() < CLASSES
    assert agreement(cached, naive) >= 0.99
    # another generator draws other samples: the comparison can fail
    assert agreement(cached, model.generate(300, batch_size=2, generator=generator(2))) < 0.5


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("setting", ["prompt", "conditioning", "temperature"])
def test_cached_and_naive_agree(batch, setting):
    model = small_model(torch.float32, local=3 if setting == "conditioning" else None, speakers=2)
    samples = 60
    local, speaker = conditioning(model, batch, samples + 5)
    kwargs = {"batch_size": batch, "local_cond": local, "speaker": speaker}
    if setting == "prompt":
        kwargs["prompt"] = torch.randint(0, CLASSES, (batch, 20), device=DEVICE)
    if setting == "temperature":
        kwargs["temperature"] = 0.7
    cached = model.generate(samples, generator=generator(3), **kwargs)
    naive = model.generate(samples, method="naive", generator=generator(3), **kwargs)
    assert agreement(cached, naive) >= 0.99
    if setting == "prompt":
        assert torch.equal(cached[:, :20], kwargs["prompt"])


def test_a_prompt_continues_the_draw_it_came_from():
    model = small_model(torch.float32)
    whole = model.generate(80, batch_size=2, generator=generator(4))
    # the prompt's uniform numbers go unused, the later ones are drawn as before
    resumed = model.generate(80, batch_size=2, generator=generator(4), prompt=whole[:, :33])
    assert torch.equal(resumed, whole)
    everything = model.generate(80, batch_size=2, generator=generator(4), prompt=whole)
    assert torch.equal(everything, whole)


def test_conditioning_changes_the_samples():
    model = small_model(torch.float32, local=3, speakers=2)
    local, _ = conditioning(model, 2, 50)
    speaker = torch.tensor([0, 0], device=DEVICE)
    kwargs = {"batch_size": 2, "local_cond": local}
    base = model.generate(50, generator=generator(5), speaker=speaker, **kwargs)
    other_speaker = model.generate(50, generator=generator(5), speaker=1 - speaker, **kwargs)
    other_local = model.generate(
        50, batch_size=2, generator=generator(5), speaker=speaker, local_cond=-local
    )
    assert agreement(base, other_speaker) < 0.9
    assert agreement(base, other_local) < 0.9


def test_temperature_limits():
    model = small_model(torch.float32)
    # a very low temperature picks the most likely class given the samples so far
    cold = model.generate(40, batch_size=3, temperature=1e-4, generator=generator(6))
    assert torch.equal(cold, model(cold).argmax(dim=1))
    # a very high one is uniform: the inverse CDF of u is floor(u C)
    hot = model.generate(200, batch_size=3, temperature=1e7, generator=generator(6))
    uniform = torch.rand(200, 3, generator=generator(6), device=DEVICE)
    assert agreement(hot, (uniform.t() * CLASSES).floor().long()) >= 0.99


def test_generation_is_seeded():
    model = small_model(torch.float32)
    a = model.generate(30, batch_size=2, generator=generator(7))
    b = model.generate(30, batch_size=2, generator=generator(7))
    assert torch.equal(a, b)


def test_long_conditioned_generation_runs_in_chunks(monkeypatch):
    # chunks of a few steps: the queue, the previous sample and the conditioning carry over
    import pyreversible.nn.wavenet as wavenet_module

    model = small_model(torch.float32, local=2, speakers=2)
    local, speaker = conditioning(model, 2, 45)
    kwargs = {"batch_size": 2, "local_cond": local, "speaker": speaker, "prompt": None}
    whole = model.generate(45, generator=generator(8), **kwargs)
    per_step = 2 * len(model.layers) * 2 * model.dilation_channels
    monkeypatch.setattr(wavenet_module, "_COND_CHUNK_ELEMENTS", 7 * per_step)
    assert torch.equal(model.generate(45, generator=generator(8), **kwargs), whole)


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_stepping_a_stack_of_causal_convolutions_equals_forward(kernel_size, groups):
    convs = [
        CausalConv1d(4, 6, kernel_size, dilation=1, groups=groups),
        CausalConv1d(6, 6, kernel_size, dilation=3, groups=groups, bias=False),
        CausalConv1d(6, 2, kernel_size, dilation=4, groups=groups),
    ]
    convs = [conv.to(DEVICE, torch.float64) for conv in convs]
    x = torch.randn(3, 4, 37, device=DEVICE, dtype=torch.float64)
    h = x
    for conv in convs:
        h = torch.tanh(conv(h))
    caches = [conv.new_cache(3) for conv in convs]
    assert [c.buffer.shape[1] for c in caches] == [(kernel_size - 1) * d for d in (1, 3, 4)]
    steps = []
    for t in range(x.shape[2]):
        h_t = x[:, :, t]
        for conv, cache in zip(convs, caches, strict=True):
            h_t = torch.tanh(conv.step(h_t, cache))
        steps.append(h_t)
    assert_close(torch.stack(steps, dim=2), h)
    assert all(cache.position == x.shape[2] for cache in caches)

    # reset: back to t = 0
    for cache in caches:
        cache.reset()
    h_0 = x[:, :, 0]
    for conv, cache in zip(convs, caches, strict=True):
        h_0 = torch.tanh(conv.step(h_0, cache))
    assert_close(h_0, h[:, :, 0])


def test_causal_conv1d_step_bad_input():
    conv = CausalConv1d(4, 6, 2, dilation=2).to(DEVICE)
    cache = conv.new_cache(2)
    with pytest.raises(ValueError, match="batch size 2"):
        conv.step(torch.randn(3, 4, device=DEVICE), cache)
    with pytest.raises(ValueError, match="C_in=4"):
        conv.step(torch.randn(2, 5, device=DEVICE), cache)
    with pytest.raises(ValueError, match="one layer"):
        conv.step(torch.randn(2, 4, device=DEVICE), CausalConv1d(4, 6, 2, dilation=3).new_cache(2))
    with pytest.raises(TypeError, match="QueueCache"):
        conv.step(torch.randn(2, 4, device=DEVICE), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="float64"):
        conv.step(torch.randn(2, 4, device=DEVICE, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match=r"\(B, C_in\)"):
        conv.step(torch.randn(2, 4, 1, device=DEVICE), cache)
    with pytest.raises(ValueError, match="batch"):
        QueueCache(0, 4, 2)


def test_queue_of_another_batch_size_is_rejected():
    model = small_model()
    weights, queue = model.pack_weights(), model.new_queue(2)
    x = torch.zeros(3, dtype=torch.long, device=DEVICE)
    uniform = torch.rand(3, device=DEVICE)
    with pytest.raises(ValueError, match="one batch size"):
        wavenet_step(x, uniform, queue, 0, weights, model.dilations)


def _bad_generate_calls(model, local):
    ok = torch.zeros(2, 5, dtype=torch.long, device=DEVICE)
    speaker = torch.tensor([0, 1], device=DEVICE)
    base = {"batch_size": 2, "local_cond": local, "speaker": speaker}
    return [
        ({**base, "prompt": ok + CLASSES}, ValueError, "class indices"),
        ({**base, "prompt": ok - 1}, ValueError, "class indices"),
        ({**base, "prompt": ok.float()}, TypeError, "LongTensor"),
        ({**base, "prompt": torch.zeros(2, 11, dtype=torch.long)}, ValueError, "more than"),
        ({**base, "prompt": ok[:1]}, ValueError, "batch size 1"),
        ({**base, "local_cond": local[:, :, :9]}, ValueError, "too short"),
        ({**base, "local_cond": None}, TypeError, "local_cond .* required"),
        ({**base, "local_cond": local[:1]}, ValueError, "local_cond must be"),
        ({**base, "local_cond": local.double()}, TypeError, "local_cond is torch.float64"),
        ({**base, "speaker": speaker + 1}, ValueError, "speaker holds"),
        ({**base, "speaker": None}, TypeError, "speaker.* is required"),
        ({**base, "speaker": speaker[:1]}, ValueError, "speaker must be"),
        ({**base, "method": "fast"}, ValueError, "method"),
        ({**base, "temperature": 0.0}, ValueError, "temperature"),
        ({**base, "temperature": float("nan")}, ValueError, "temperature"),
        ({**base, "generator": 3}, TypeError, "generator"),
        ({**base, "batch_size": 0}, ValueError, "batch_size"),
    ]


@pytest.mark.parametrize("index", range(17))
def test_generate_bad_input(index):
    model = small_model(torch.float32, local=3, speakers=2)
    local = torch.randn(2, 3, 10, device=DEVICE)
    kwargs, error, message = _bad_generate_calls(model, local)[index]
    with pytest.raises(error, match=message):
        model.generate(10, **kwargs)


def test_forward_and_constructor_bad_input():
    model = small_model(torch.float32)
    with pytest.raises(TypeError, match="LongTensor"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="class indices"):
        model(torch.full((2, 5), CLASSES, device=DEVICE))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(2, 5, 1, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="no local_cond_channels"):
        model(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="no num_speakers"):
        model.generate(5, speaker=torch.zeros(1, dtype=torch.long))
    conditioned = small_model(torch.float32, local=3)
    with pytest.raises(ValueError, match="x 5"):
        conditioned(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 3, 6))
    with pytest.raises(ValueError, match="num_samples"):
        model.generate(0)
    with pytest.raises(ValueError, match="num_layers"):
        WaveNet(num_layers=0)
    with pytest.raises(ValueError, match="num_classes"):
        WaveNet(num_classes=1)
