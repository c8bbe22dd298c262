"""WaveNet: an autoregressive model of audio built from fused gated layers, with fast generation."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyreversible import ops
from pyreversible.nn.causal_conv1d import CausalConv1d
from pyreversible.ops.wavenet_step import new_queue, pack_weights, wavenet_generate, wavenet_step
from pyreversible.reference.sampling import inverse_cdf_sample

METHODS = ("cached", "naive")

# Elements of conditioning (steps x B x L x 2G) that one chunk of cached generation holds: 4 MiB
# of float32, so that long conditioned generations stay bounded in memory.
_COND_CHUNK_ELEMENTS = 1 << 20

# Steps per call of wavenet_generate without conditioning (the output is all it holds).
_CHUNK_STEPS = 4096


def _init_1x1(weight, bias):
    # nn.Conv1d's initialisation of a 1x1 convolution: uniform within 1 / sqrt(fan_in)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)


def _int_at_least(op, name, value, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{op}: {name} must be an int >= {least}, got {value!r}")
    return value


class WaveNetLayer(nn.Module):
    """One gated residual layer of WaveNet (pyreversible.ops.wavenet_layer).

    z = conv(h) (+ W_local c) (+ W_speaker onehot(speaker)); a = tanh(z[:G]) sigmoid(z[G:]);
    skip = W_s a + b_s; h_next = h + W_r a + b_r.

    Attributes:
        conv: CausalConv1d(R, 2G, K, dilation), weight (2G, R, K) and bias (2G,).
        residual_weight: (R, G); residual_bias: (R,).
        skip_weight: (S, G); skip_bias: (S,).
        local_weight: (2G, C_local) or None.
        speaker_weight: (2G, num_speakers) or None, the projection of a one-hot speaker.
    """

    def __init__(
        self,
        residual_channels,
        dilation_channels,
        skip_channels,
        kernel_size,
        dilation,
        local_cond_channels=None,
        num_speakers=None,
    ):
        super().__init__()
        residual, gate, skip = residual_channels, dilation_channels, skip_channels
        self.dilation = dilation
        self.conv = CausalConv1d(residual, 2 * gate, kernel_size, dilation=dilation)
        self.residual_weight = nn.Parameter(torch.empty(residual, gate))
        self.residual_bias = nn.Parameter(torch.empty(residual))
        self.skip_weight = nn.Parameter(torch.empty(skip, gate))
        self.skip_bias = nn.Parameter(torch.empty(skip))
        _init_1x1(self.residual_weight, self.residual_bias)
        _init_1x1(self.skip_weight, self.skip_bias)
        self.local_weight = None
        self.speaker_weight = None
        if local_cond_channels is not None:
            self.local_weight = nn.Parameter(torch.empty(2 * gate, local_cond_channels))
            _init_1x1(self.local_weight, None)
        if num_speakers is not None:
            self.speaker_weight = nn.Parameter(torch.empty(2 * gate, num_speakers))
            _init_1x1(self.speaker_weight, None)

    def forward(self, h, local_cond=None, global_cond=None):
        """(h_next (B, R, T), skip (B, S, T)) of h (B, R, T), local_cond (B, C_local, T) and
        global_cond (B, num_speakers) (each None when the layer has no such conditioning)."""
        return ops.wavenet_layer(
            h,
            self.conv.weight,
            self.conv.bias,
            self.residual_weight,
            self.residual_bias,
            self.skip_weight,
            self.skip_bias,
            self.dilation,
            local_cond,
            None if local_cond is None else self.local_weight,
            global_cond,
            None if global_cond is None else self.speaker_weight,
        )


class WaveNet(nn.Module):
    """WaveNet (van den Oord et al., 2016): p(x) = prod_t p(x_t | x_<t) over class indices
    (e.g. mu-law audio), each a softmax over `num_classes`.

    h_0[t] = embedding[x[t - 1]] (zeros at t = 0); layers with dilations 1, 2, ...,
    2^(num_layers - 1), repeated num_stacks times; logits = out(relu(head(relu(sum of skips)))).
    The logits at t depend on x[:, :t] only, so cross_entropy(logits, x) is the training loss.

    Args:
        num_classes: C, classes of each sample (256 for 8-bit mu-law).
        residual_channels: R, the residual stream.
        dilation_channels: G, the gate's channels (the convolutions give 2G).
        skip_channels: S.
        kernel_size: K, taps of each dilated convolution.
        num_layers: layers of one stack (dilations 1 to 2^(num_layers - 1)).
        num_stacks: stacks of layers.
        local_cond_channels: C_local of local conditioning at the output rate, or None.
        num_speakers: speakers of global conditioning (a speaker index per sequence), or None.

    Attributes:
        dilations: the L = num_layers * num_stacks layers' dilations.
        receptive_field: (K - 1) * sum(dilations) + 1, the inputs each logit sees.

    Shapes: x a LongTensor (B, T) of classes; local_cond (B, C_local, T); speaker a
    LongTensor (B,); forward gives logits (B, C, T); generate gives a LongTensor (B, N).

    Example:
        >>> model = WaveNet(num_classes=32, residual_channels=8, dilation_channels=8,
        ...                 skip_channels=16, num_layers=4, num_stacks=1)
        >>> x = torch.randint(0, 32, (2, 100))
        >>> loss = F.cross_entropy(model(x), x)
        >>> samples = model.generate(50, batch_size=2, generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        num_classes=256,
        residual_channels=64,
        dilation_channels=64,
        skip_channels=256,
        kernel_size=2,
        num_layers=10,
        num_stacks=2,
        local_cond_channels=None,
        num_speakers=None,
    ):
        super().__init__()
        op = "WaveNet"
        _int_at_least(op, "num_classes", num_classes, 2)
        for name, value in (
            ("residual_channels", residual_channels),
            ("dilation_channels", dilation_channels),
            ("skip_channels", skip_channels),
            ("kernel_size", kernel_size),
            ("num_layers", num_layers),
            ("num_stacks", num_stacks),
        ):
            _int_at_least(op, name, value, 1)
        if local_cond_channels is not None:
            _int_at_least(op, "local_cond_channels", local_cond_channels, 1)
        if num_speakers is not None:
            _int_at_least(op, "num_speakers", num_speakers, 1)
        self.num_classes = num_classes
        self.residual_channels = residual_channels
        self.dilation_channels = dilation_channels
        self.skip_channels = skip_channels
        self.kernel_size = kernel_size
        self.local_cond_channels = local_cond_channels
        self.num_speakers = num_speakers
        self.dilations = [2**i for i in range(num_layers)] * num_stacks
        self.receptive_field = (kernel_size - 1) * sum(self.dilations) + 1

        self.embedding = nn.Embedding(num_classes, residual_channels)
        self.layers = nn.ModuleList(
            WaveNetLayer(
                residual_channels,
                dilation_channels,
                skip_channels,
                kernel_size,
                dilation,
                local_cond_channels,
                num_speakers,
            )
            for dilation in self.dilations
        )
        self.head_weight = nn.Parameter(torch.empty(skip_channels, skip_channels))
        self.head_bias = nn.Parameter(torch.empty(skip_channels))
        self.out_weight = nn.Parameter(torch.empty(num_classes, skip_channels))
        self.out_bias = nn.Parameter(torch.empty(num_classes))
        _init_1x1(self.head_weight, self.head_bias)
        _init_1x1(self.out_weight, self.out_bias)

    def _check_classes(self, op, name, x, batch=None):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.long:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{op}: {name} must be a LongTensor of class indices, got {got}")
        if x.dim() != 2 or (batch is not None and x.shape[0] != batch):
            expected = f"({batch}, T)" if batch is not None else "(B, T)"
            raise ValueError(f"{op}: {name} must be {expected}, got {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() >= self.num_classes):
            raise ValueError(
                f"{op}: {name} holds class indices in [{x.min().item()}, {x.max().item()}], "
                f"expected [0, {self.num_classes})"
            )

    def _check_conditioning(self, op, batch, length, local_cond, speaker, exact):
        # local_cond covers `length` steps (exactly, or at least when not `exact`)
        param = self.out_weight
        if self.local_cond_channels is None:
            if local_cond is not None:
                raise ValueError(
                    f"{op}: local_cond given, but the model has no local_cond_channels"
                )
        else:
            if not isinstance(local_cond, torch.Tensor):
                raise TypeError(
                    f"{op}: local_cond (B, {self.local_cond_channels}, T) is required: the model "
                    f"has local_cond_channels={self.local_cond_channels}"
                )
            if local_cond.dtype != param.dtype or local_cond.device != param.device:
                raise TypeError(
                    f"{op}: local_cond is {local_cond.dtype} on {local_cond.device}, the model "
                    f"{param.dtype} on {param.device}"
                )
            if (
                local_cond.dim() != 3
                or local_cond.shape[0] != batch
                or local_cond.shape[1] != self.local_cond_channels
            ):
                raise ValueError(
                    f"{op}: local_cond must be ({batch}, {self.local_cond_channels}, T), got "
                    f"{tuple(local_cond.shape)}"
                )
            steps = local_cond.shape[2]
            if exact and steps != length:
                raise ValueError(f"{op}: local_cond covers {steps} time steps, x {length}")
            if steps < length:
                raise ValueError(
                    f"{op}: local_cond covers {steps} time steps, fewer than the {length} "
                    "samples asked for (conditioning too short)"
                )
        if self.num_speakers is None:
            if speaker is not None:
                raise ValueError(f"{op}: speaker given, but the model has no num_speakers")
        else:
            if not isinstance(speaker, torch.Tensor) or speaker.dtype != torch.long:
                raise TypeError(
                    f"{op}: speaker, a LongTensor ({batch},), is required: the model has "
                    f"num_speakers={self.num_speakers}"
                )
            if tuple(speaker.shape) != (batch,) or speaker.device != param.device:
                raise ValueError(
                    f"{op}: speaker must be ({batch},) on {param.device}, got "
                    f"{tuple(speaker.shape)} on {speaker.device}"
                )
            if speaker.min() < 0 or speaker.max() >= self.num_speakers:
                raise ValueError(
                    f"{op}: speaker holds indices in [{speaker.min().item()}, "
                    f"{speaker.max().item()}], expected [0, {self.num_speakers})"
                )

    def _global_cond(self, speaker):
        if speaker is None:
            return None
        return F.one_hot(speaker, self.num_speakers).to(self.out_weight.dtype)

    def forward(self, x, local_cond=None, speaker=None):
        """Logits (B, C, T) of each sample given the samples before it.

        Args:
            x: (B, T) int64 class indices.
            local_cond: (B, C_local, T), required when the model has local_cond_channels.
            speaker: (B,) int64, required when the model has num_speakers.
        """
        op = "WaveNet.forward"
        self._check_classes(op, "x", x)
        batch, length = x.shape
        if length == 0:
            raise ValueError(f"{op}: x must have at least one time step, got {tuple(x.shape)}")
        self._check_conditioning(op, batch, length, local_cond, speaker, exact=True)
        global_cond = self._global_cond(speaker)

        # the input at t is the sample at t - 1, zeros at t = 0: logits at t see x[:, :t]
        h = F.pad(self.embedding(x[:, :-1]).transpose(1, 2), (1, 0))
        skips = 0
        for layer in self.layers:
            h, skip = layer(h, local_cond, global_cond)
            skips = skips + skip
        hidden = F.conv1d(F.relu(skips), self.head_weight.unsqueeze(-1), self.head_bias)
        return F.conv1d(F.relu(hidden), self.out_weight.unsqueeze(-1), self.out_bias)

    def pack_weights(self):
        """The model's weights laid out for pyreversible.ops.wavenet_step (see pack_weights)."""
        layers = self.layers
        return pack_weights(
            self.embedding.weight,
            [layer.conv.weight for layer in layers],
            [layer.conv.bias for layer in layers],
            [layer.residual_weight for layer in layers],
            [layer.residual_bias for layer in layers],
            [layer.skip_weight for layer in layers],
            [layer.skip_bias for layer in layers],
            self.head_weight,
            self.head_bias,
            self.out_weight,
            self.out_bias,
        )

    def new_queue(self, batch):
        """A queue (B, Q, R) of zeros for wavenet_step: every layer's ring buffer at t = 0."""
        param = self.out_weight
        return new_queue(
            batch,
            self.residual_channels,
            self.kernel_size,
            self.dilations,
            dtype=param.dtype,
            device=param.device,
        )

    @torch.no_grad()
    def step_conditioning(self, local_cond, speaker, start, stop):
        """The conditioning of steps start..stop - 1 for wavenet_step / wavenet_generate:
        cond[n, b, l] = W_local,l local_cond[b, :, start + n] + W_speaker,l onehot(speaker[b]),
        (stop - start, B, L, 2G); None when the model has no conditioning."""
        terms = []
        if local_cond is not None:
            weight = torch.cat([layer.local_weight for layer in self.layers])
            window = local_cond[:, :, start:stop]
            terms.append(torch.einsum("oc,bct->tbo", weight, window))
        if speaker is not None:
            # the column of each layer's speaker projection that the one-hot picks
            weight = torch.cat([layer.speaker_weight for layer in self.layers])
            terms.append(weight[:, speaker].t().unsqueeze(0).expand(stop - start, -1, -1))
        if not terms:
            return None
        cond = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        gate2 = 2 * self.dilation_channels
        return cond.reshape(stop - start, -1, len(self.layers), gate2).contiguous()

    @torch.no_grad()
    def generate(
        self,
        num_samples,
        batch_size=1,
        temperature=1.0,
        method="cached",
        generator=None,
        local_cond=None,
        speaker=None,
        prompt=None,
    ):
        """Samples (B, num_samples) drawn one time step at a time.

        x_t = inverse_cdf_sample(logits_t / temperature, u[t]) with logits_t given x[:, :t] and
        u = torch.rand(num_samples, B, generator=generator) drawn up front (float32, on the
        generator's device), so every method and backend draws the same samples up to ties
        within rounding of the CDF. "cached" runs pyreversible.ops.wavenet_generate (each
        layer's past inputs in a queue: O(layers) per sample, on the backend chosen by
        pyreversible.set_backend); "naive" runs forward over the last receptive_field inputs
        for every sample (O(receptive field) per sample).

        Args:
            num_samples: N >= 1, samples per row, the prompt's included.
            batch_size: B.
            temperature: float > 0; below 1 sharpens each softmax, above 1 flattens it.
            method: "cached" or "naive".
            generator: torch.Generator of the uniform numbers, or None for torch's default.
            local_cond: (B, C_local, >= N) at the output rate, when the model has it.
            speaker: (B,) int64, when the model has num_speakers.
            prompt: (B, P) int64 with P <= N, or None: the first P samples, fed to the model
                (teacher forcing) instead of drawn; its uniform numbers go unused.

        Returns:
            (B, N) int64, the prompt followed by N - P drawn samples.
        """
        op = "WaveNet.generate"
        _int_at_least(op, "num_samples", num_samples, 1)
        _int_at_least(op, "batch_size", batch_size, 1)
        if method not in METHODS:
            raise ValueError(f"{op}: method must be one of {METHODS}, got {method!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"{op}: temperature must be a float, got {type(temperature).__name__}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"{op}: temperature must be finite and > 0, got {temperature}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{op}: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        batch = batch_size
        device = self.out_weight.device
        if prompt is not None:
            if isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and prompt.shape[0] != batch:
                raise ValueError(
                    f"{op}: prompt has batch size {prompt.shape[0]}, batch_size is {batch}"
                )
            self._check_classes(op, "prompt", prompt, batch)
            if prompt.shape[1] > num_samples:
                raise ValueError(
                    f"{op}: the prompt has {prompt.shape[1]} samples, more than the "
                    f"num_samples={num_samples} asked for (num_samples counts the prompt)"
                )
            prompt = prompt.to(device)
        self._check_conditioning(op, batch, num_samples, local_cond, speaker, exact=False)
        uniform = torch.rand(
            num_samples,
            batch,
            generator=generator,
            dtype=torch.float32,
            device=generator.device if generator is not None else "cpu",
        ).to(device)

        out = torch.zeros(batch, num_samples, dtype=torch.long, device=device)
        first = 0
        if prompt is not None:
            first = prompt.shape[1]
            out[:, :first] = prompt
        if method == "naive":
            self._generate_naive(out, first, uniform, temperature, local_cond, speaker)
        else:
            self._generate_cached(out, first, uniform, temperature, local_cond, speaker)
        return out

    def _generate_naive(self, out, first, uniform, temperature, local_cond, speaker):
        # logits at t see the inputs at t - receptive_field + 1 .. t, which are the samples
        # t - receptive_field .. t - 1: a window one longer than the receptive field (its
        # first input is zeros instead of the sample before it, which no logit at t sees)
        for t in range(first, out.shape[1]):
            start = max(0, t - self.receptive_field)
            window = out[:, start : t + 1]
            cond = None if local_cond is None else local_cond[:, :, start : t + 1]
            logits = self(window, cond, speaker)[:, :, -1]
            out[:, t] = inverse_cdf_sample(logits, uniform[t], temperature)

    def _generate_cached(self, out, first, uniform, temperature, local_cond, speaker):
        batch, total = out.shape
        weights = self.pack_weights()
        queue = self.new_queue(batch)
        previous = torch.zeros(batch, dtype=torch.long, device=out.device)
        # the prompt primes the queues: each step pushes its layers' inputs, its draw is unused
        for t in range(first):
            cond = self.step_conditioning(local_cond, speaker, t, t + 1)
            wavenet_step(
                previous,
                uniform[t],
                queue,
                t,
                weights,
                self.dilations,
                temperature,
                None if cond is None else cond[0],
            )
            previous = out[:, t].contiguous()

        conditioned = local_cond is not None or speaker is not None
        per_step = batch * len(self.layers) * 2 * self.dilation_channels
        chunk = max(1, _COND_CHUNK_ELEMENTS // per_step) if conditioned else _CHUNK_STEPS
        for start in range(first, total, chunk):
            stop = min(total, start + chunk)
            samples = wavenet_generate(
                previous,
                uniform[start:stop],
                queue,
                start,
                weights,
                self.dilations,
                temperature,
                self.step_conditioning(local_cond, speaker, start, stop),
            )
            out[:, start:stop] = samples.t()
            previous = samples[-1]

    def extra_repr(self):
        return (
            f"num_classes={self.num_classes}, residual_channels={self.residual_channels}, "
            f"dilation_channels={self.dilation_channels}, skip_channels={self.skip_channels}, "
            f"kernel_size={self.kernel_size}, layers={len(self.layers)}, "
            f"receptive_field={self.receptive_field}, "
            f"local_cond_channels={self.local_cond_channels}, num_speakers={self.num_speakers}"
        )
