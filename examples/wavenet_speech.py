"""Train a small WaveNet on a speech recording, score held-out audio, and generate speech-like
audio with the fast (cached) generator.

Data. WAV files given by path; by default the spoken channel names that Debian's alsa-utils
installs under /usr/share/sounds/alsa ("front centre", "front left", ..., one voice, 1.3 to
1.5 s each; Noise.wav left out). Each is mixed to mono, resampled to --rate (16 kHz by
default, scipy.signal.resample_poly), scaled to a peak of 0.9 and mu-law encoded into 256
classes (pyreversible.audio). The last file is held out (with a single file, its last
--held-out fraction), so the held-out score is on a word the model never heard.

Model. pyreversible.nn.WaveNet (by default 2 stacks of 8 layers, R=G=32, S=64, kernel 2:
a receptive field of 511 samples, 32 ms at 16 kHz), trained by maximum likelihood (cross
entropy of each sample given the samples before it) with Adam on random segments.

Figures. Held-out negative log-likelihood per sample, nats and bits (log2 of 256 = 8 bits is
the uniform model), scored on the held-out samples with the training audio before them as
context; beside it the same for the classes' marginal distribution on the training split (a
model without memory). Generation: samples/s of model.generate(method="cached") on the
backend pyreversible chooses (--backend to force one), primed with the first receptive field
of held-out audio, written to --out as a 16-bit WAV.

Usage:
    python examples/wavenet_speech.py                         # about a minute on 2 cores
    python examples/wavenet_speech.py a.wav b.wav held_out.wav --steps 2000 --stacks 3
"""

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

import pyreversible
from pyreversible.audio import mu_law_decode, mu_law_encode, read_wav, write_wav
from pyreversible.nn import WaveNet

ALSA_SOUNDS = "/usr/share/sounds/alsa"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "wav", nargs="*", help=f"WAV files, the last held out (default: {ALSA_SOUNDS}/*.wav)"
    )
    parser.add_argument("--rate", type=int, default=16000, help="sample rate to model")
    parser.add_argument("--classes", type=int, default=256, help="mu-law classes")
    parser.add_argument(
        "--held-out", type=float, default=0.2, help="fraction held out of a single file"
    )
    parser.add_argument("--residual", type=int, default=32)
    parser.add_argument("--gate", type=int, default=32)
    parser.add_argument("--skip", type=int, default=64)
    parser.add_argument("--layers", type=int, default=8, help="layers per stack")
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--batch", type=int, default=8, help="segments per step")
    parser.add_argument("--segment", type=int, default=1024, help="samples per segment")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seconds", type=float, default=0.5, help="audio to generate")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--backend", default="auto", help="backend of the ops")
    parser.add_argument("--out", default="wavenet_speech_generated.wav", help="generated WAV")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_classes(path, rate, classes):
    """The recording as mu-law classes (T,) at `rate` samples per second."""
    from scipy.signal import resample_poly

    waveform, source_rate = read_wav(path)
    mono = waveform.mean(dim=0).double().numpy()
    divisor = math.gcd(rate, source_rate)
    mono = torch.from_numpy(resample_poly(mono, rate // divisor, source_rate // divisor))
    mono = 0.9 * mono / mono.abs().max().clamp(min=1e-8)
    return mu_law_encode(mono, classes)


def default_wavs():
    """The spoken samples of alsa-utils, if installed."""
    if not os.path.isdir(ALSA_SOUNDS):
        return []
    names = sorted(n for n in os.listdir(ALSA_SOUNDS) if n.endswith(".wav") and n != "Noise.wav")
    return [os.path.join(ALSA_SOUNDS, n) for n in names]


def held_out_nll(model, audio, split, chunk=8192):
    """Mean -log p(x_t | x_<t) in nats over audio[split:], with the audio before as context."""
    field = model.receptive_field
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(split, audio.numel(), chunk):
            stop = min(audio.numel(), start + chunk)
            context = max(0, start - field)
            x = audio[context:stop].unsqueeze(0)
            logits = model(x)[:, :, start - context :]
            total += F.cross_entropy(logits, x[:, start - context :], reduction="sum").item()
            count += stop - start
    return total / count


def main(argv=None):
    args = parse(argv)
    torch.manual_seed(args.seed)
    pyreversible.set_backend(args.backend)
    paths = args.wav or default_wavs()
    if not paths:
        raise SystemExit(
            f"no WAV files given and none in {ALSA_SOUNDS} (Debian's alsa-utils installs them)"
        )
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"no such WAV file: {', '.join(missing)}")
    recordings = [load_classes(p, args.rate, args.classes) for p in paths]
    audio = torch.cat(recordings)
    if len(recordings) > 1:
        split = audio.numel() - recordings[-1].numel()
    else:
        split = int(audio.numel() * (1 - args.held_out))
    train = audio[:split]
    held = os.path.basename(paths[-1])
    print(
        f"{len(paths)} recording(s), {audio.numel() / args.rate:.2f} s at {args.rate} Hz: "
        f"{split} samples for training, {audio.numel() - split} held out (from {held})"
    )

    model = WaveNet(
        num_classes=args.classes,
        residual_channels=args.residual,
        dilation_channels=args.gate,
        skip_channels=args.skip,
        num_layers=args.layers,
        num_stacks=args.stacks,
    )
    field = model.receptive_field
    segment = min(args.segment + field, train.numel())
    print(f"WaveNet: {len(model.layers)} layers, receptive field {field} samples")

    # each segment carries a receptive field of context before the samples it is scored on
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_time = time.perf_counter()
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, train.numel() - segment + 1, (args.batch,))
        x = torch.stack([train[s : s + segment] for s in starts.tolist()])
        scored = min(field, segment - 1)
        loss = F.cross_entropy(model(x)[:, :, scored:], x[:, scored:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            print(f"step {step:5d}  train NLL {loss.item():.3f} nats/sample")
    train_seconds = time.perf_counter() - start_time

    nll = held_out_nll(model, audio, split)
    counts = torch.bincount(train, minlength=args.classes).double() + 0.5
    marginal = -(counts / counts.sum()).log()[audio[split:]].mean().item()
    print(f"\ntrained {args.steps} steps in {train_seconds:.1f} s")
    print("held-out NLL per sample       nats     bits")
    print(f"WaveNet                     {nll:6.3f}   {nll / math.log(2):6.3f}")
    print(f"marginal (no memory)        {marginal:6.3f}   {marginal / math.log(2):6.3f}")
    uniform = math.log(args.classes)
    print(f"uniform                     {uniform:6.3f}   {uniform / math.log(2):6.3f}")

    # primed with held-out audio, one receptive field of it
    prompt = audio[split : split + field].unsqueeze(0)
    total = prompt.shape[1] + int(args.seconds * args.rate)
    generator = torch.Generator().manual_seed(args.seed)
    start_time = time.perf_counter()
    samples = model.generate(
        total, temperature=args.temperature, generator=generator, prompt=prompt
    )
    elapsed = time.perf_counter() - start_time
    drawn = total - prompt.shape[1]
    # a priming step costs what a drawn one does: the rate counts both
    print(
        f"\ngenerated {drawn} samples ({drawn / args.rate:.2f} s of audio) after {prompt.shape[1]} "
        f"priming steps in {elapsed:.2f} s: {total / elapsed:.0f} samples/s (cached, batch 1, "
        f"{torch.get_num_threads()} threads)"
    )
    write_wav(args.out, mu_law_decode(samples[0]), args.rate)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
