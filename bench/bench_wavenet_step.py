"""Suite `generation`, wavenet_step: sampling a WaveNet, in samples/s.

Networks (float32, kernel 2, 256 classes, dilations 1 .. 512 per stack): the issue's (2 stacks
of 10 layers, R=64, G=64, S=256) and a larger one (3 stacks, R=128, G=128, S=512). Each at
batch 1 on one thread and at batch 16 on every thread torch has (or --threads).

Variants:
- naive: WaveNet.generate(method="naive"), forward over the last receptive field for every
  sample (the wavenet_layer op on the backend `auto` picks), primed with a prompt one
  receptive field long so that every timed sample sees a full window;
- reference: method="cached" on the reference wavenet_step (Python, one op per matrix);
- cpp, triton: method="cached" on the fused step of that backend, where wavenet_step has it
  and it runs natively here (n/a otherwise; the Triton interpreter is never timed);
- wavenet_vocoder: the incremental_forward of the wavenet_vocoder package (PyPI, installed
  with --no-deps), the same network (weight normalisation removed by its
  make_generation_fast_, no dropout); at batch 1 it
  draws one-hot samples as in its own generator (numpy's choice), at batch 16 it feeds its
  softmax back without sampling (its sampler takes batch 1 only), the same network work.

FLOPs per sample count the multiply-adds one cached step must do, 2 x (per layer
2G x R x K + (R + S) x G, then S x S + S x C for the head); the embedding lookup, the gate's
transcendentals and the softmax are not counted. The floor is the peak over that figure.
"""

import importlib.util
import warnings

import torch

import pyreversible
from bench.harness import Case, NotAvailable
from pyreversible.nn import WaveNet
from pyreversible.ops.wavenet_step import _BACKENDS as STEP_KERNELS

_FLOAT32_BYTES = 4

# name -> (classes, R, G, S, K, layers per stack, stacks)
NETWORKS = {
    "issue": (256, 64, 64, 256, 2, 10, 2),
    "large": (256, 128, 128, 512, 2, 10, 3),
}

# (batch, threads): threads None is every thread torch has
SETTINGS = ((1, 1), (16, None))

PEER = "wavenet_vocoder"


def flops_per_sample(classes, residual, gate, skip, taps, layers, stacks):
    """FLOPs of one cached step for one batch row (see the module's docstring)."""
    per_layer = 2 * gate * residual * taps + (residual + skip) * gate
    return 2 * (layers * stacks * per_layer + skip * skip + skip * classes)


def weight_bytes(classes, residual, gate, skip, taps, layers, stacks):
    """Bytes of float32 weights one step reads (the embedding row aside)."""
    per_layer = 2 * gate * (residual * taps + 1) + (residual + skip) * (gate + 1)
    head = skip * (skip + 1) + classes * (skip + 1)
    return _FLOAT32_BYTES * (layers * stacks * per_layer + head)


def _steps(variant, batch, quick):
    # samples (time steps) per call: enough for a stable figure, few where a step is slow
    if variant == "naive":
        return 1 if batch > 1 or quick else 4
    if variant == PEER:
        return 16 if quick else 64
    if variant == "reference":
        return 32 if quick else 128
    return 512 if quick else 2048


def _model(network, device):
    classes, residual, gate, skip, taps, layers, stacks = network
    torch.manual_seed(0)
    model = WaveNet(classes, residual, gate, skip, taps, layers, stacks)
    return model.to(device).eval()


def _peer_model(network, device):
    if importlib.util.find_spec(PEER) is None:
        raise NotAvailable(f"{PEER} is not installed: pip install --no-deps {PEER}")
    from wavenet_vocoder import WaveNet as PeerWaveNet

    classes, residual, gate, skip, taps, layers, stacks = network
    torch.manual_seed(0)
    # it builds its convolutions with torch.nn.utils.weight_norm, which warns of deprecation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = PeerWaveNet(
            out_channels=classes,
            layers=layers * stacks,
            stacks=stacks,
            residual_channels=residual,
            gate_channels=2 * gate,
            skip_out_channels=skip,
            kernel_size=taps,
            dropout=0.0,
            weight_normalization=False,
            legacy=False,
        )
    # its own synthesis does this first: the 1x1 and dilated convolutions are weight-normed
    # whatever weight_normalization says, and the norm would be recomputed at every step
    model.make_generation_fast_()
    return model.to(device).eval()


def _builder(network, batch, quick):
    def build(variant, device):
        steps = _steps(variant, batch, quick)
        if variant == PEER:
            model = _peer_model(network, device)
            classes = network[0]
            if batch == 1:

                def peer():
                    with torch.no_grad():
                        return model.incremental_forward(T=steps)

                return peer

            # one-hot first inputs for the batch: its only way to a batch above 1
            first = torch.zeros(batch, 1, classes, device=device)
            first[:, :, classes // 2] = 1

            def peer_batch():
                with torch.no_grad():
                    return model.incremental_forward(test_inputs=first, T=steps, quantize=False)

            return peer_batch

        model = _model(network, device)
        generator = torch.Generator(device).manual_seed(0)
        if variant == "naive":
            field = model.receptive_field
            prompt = torch.randint(0, network[0], (batch, field), device=device)

            def naive():
                return model.generate(
                    field + steps, batch, method="naive", generator=generator, prompt=prompt
                )

            return naive

        if variant != "reference":
            if variant not in STEP_KERNELS.get(device.type, ()):
                raise NotAvailable(f"wavenet_step has no {variant} kernels on {device.type}")
            if variant == "triton" and device.type != "cuda":
                raise NotAvailable("Triton runs on the CPU only interpreted, which is not timed")
            if variant not in pyreversible.available_backends(device):
                raise NotAvailable(f"backend {variant} is not available here")

        def cached():
            with pyreversible.use_backend(variant):
                return model.generate(steps, batch, generator=generator)

        return cached

    return build


def cases(quick=False):
    """The generation cases (see the module's docstring)."""
    variants = ["naive", "reference", "cpp", "triton", PEER]
    out = []
    for name, network in NETWORKS.items():
        classes, residual, gate, skip, taps, layers, stacks = network
        for batch, threads in SETTINGS:
            params = {
                "dtype": "float32",
                "network": name,
                "classes": classes,
                "residual_channels": residual,
                "dilation_channels": gate,
                "skip_channels": skip,
                "kernel_size": taps,
                "layers_per_stack": layers,
                "stacks": stacks,
                "batch": batch,
                "threads": threads or "all",
                "op": "wavenet_step",
            }
            threads_label = "1 thread" if threads == 1 else "all threads"
            out.append(
                Case(
                    name=f"{name} B={batch} {threads_label}",
                    params=params,
                    flops=flops_per_sample(*network),
                    # the weights once per step, shared by the batch's rows
                    bytes=weight_bytes(*network) / batch,
                    build=_builder(network, batch, quick),
                    variants=variants,
                    samples={v: _steps(v, batch, quick) * batch for v in variants},
                    threads=threads,
                    warmup=1,
                )
            )
    return out
