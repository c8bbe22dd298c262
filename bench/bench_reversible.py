"""Suite `reversible`: training a deep stack of reversible blocks, time and memory.

RevNet blocks of width W (two halves of W / 2), F and G each Linear(W/2, W/2)-ReLU-
Linear(W/2, W/2), float32, batch B; 16 and 64 blocks (--quick: W=256, B=128, 4 and 16 blocks).
One call is a training step: forward, backward of a fixed cotangent, every parameter's and the
input's gradient. Variants, all on the same blocks:

- plain: ordinary autograd (ReversibleSequential(memory_efficient=False)), the baseline;
- checkpoint: torch.utils.checkpoint around each block (non-reentrant);
- pyreversible: ReversibleSequential(memory_efficient=True);
- memcnn: memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(F, G), keep_input=False) per
  block, in an nn.Sequential (memcnn's documented use);
- revlib: revlib.ReversibleSequential(F1, G1, F2, G2, ...), its default memory mode.

Memory, per variant: `saved` is the bytes autograd saves in the forward, parameters excepted
(saved_tensors_hooks: what save_for_backward and built-in ops keep, whole storages; a library
that keeps tensors as plain attributes of ctx hides them from it), `peak_rss` the peak
resident memory one training step adds, in a fresh process with glibc's
MALLOC_MMAP_THRESHOLD_=131072 so that freed memory is returned
(bench.harness.peak_rss_of_call), starting without gradients, so it counts the parameters'
gradients the step makes (`grads`, alike for every variant) beside the activations. The
summary divides the growth from the smaller to the larger depth by the blocks added: memory
per extra block, also less the gradients, and its ratio to plain autograd's.

FLOPs count the plain step: 3 x the forward's 4 matmuls per block of 2 * B * (W/2)^2 each; a
reversible step recomputes F and G once more, 4/3 of that, which bounds its time ratio to plain
autograd from below at ~1.33 where the matmuls dominate.

Run one configuration's memory alone: python -m bench.bench_reversible VARIANT DEPTH WIDTH B;
time every variant lightly: python -m bench.bench_reversible time DEPTH WIDTH B ROUNDS
"""

import statistics
import sys
import time

import torch
from torch import nn

from bench.harness import Case, peak_rss_in_subprocess, peak_rss_of_call, saved_bytes_of_call
from pyreversible.nn import ReversibleBlock, ReversibleSequential

VARIANTS = ("plain", "checkpoint", "pyreversible", "memcnn", "revlib")

_FLOAT32_BYTES = 4


def _mlp(half):
    return nn.Sequential(nn.Linear(half, half), nn.ReLU(), nn.Linear(half, half))


def _blocks(depth, width, device):
    torch.manual_seed(0)
    half = width // 2
    return [ReversibleBlock(_mlp(half), _mlp(half)).to(device) for _ in range(depth)]


class _Checkpointed(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return x


def build_model(variant, depth, width, device):
    """The stack of `depth` blocks as `variant` runs it (raises ImportError without the peer)."""
    blocks = _blocks(depth, width, device)
    if variant == "plain":
        return ReversibleSequential(*blocks, memory_efficient=False)
    if variant == "pyreversible":
        return ReversibleSequential(*blocks, memory_efficient=True)
    if variant == "checkpoint":
        return _Checkpointed(blocks)
    if variant == "memcnn":
        import memcnn

        return nn.Sequential(
            *[
                memcnn.InvertibleModuleWrapper(
                    memcnn.AdditiveCoupling(b.f, b.g), keep_input=False, keep_input_inverse=False
                )
                for b in blocks
            ]
        )
    if variant == "revlib":
        import revlib

        return revlib.ReversibleSequential(*[m for b in blocks for m in (b.f, b.g)], split_dim=1)
    raise ValueError(f"bench_reversible: unknown variant {variant!r}")


def build_step(variant, depth, width, batch, device, forward_only=False, model=None):
    model = model or build_model(variant, depth, width, device)
    torch.manual_seed(1)
    x0 = torch.randn(batch, width, device=device)
    cotangent = torch.randn(batch, width, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        # a fresh input each step: memcnn (keep_input=False) frees its input's storage
        x = x0.clone().requires_grad_()
        y = model(x)
        if forward_only:
            return y
        y.backward(cotangent)
        return None

    return step


def _memory_builder(depth, width, batch):
    def memory(variant, device):
        num_params = depth * 4 * (width // 2 + 1) * (width // 2)
        model = build_model(variant, depth, width, device)
        forward = build_step(variant, depth, width, batch, device, True, model)
        saved = saved_bytes_of_call(forward, exclude=list(model.parameters()))
        figures = {
            "grads_MiB": round(num_params * _FLOAT32_BYTES / 2**20, 2),
            "saved_MiB": round(saved / 2**20, 2),
        }
        if device.type == "cpu":
            args = (variant, depth, width, batch)
            # glibc returns freed blocks of at least this size at once; the activations of the
            # full size (2 MiB) are far above 128 KiB, --quick's (64 KiB) need a lower one
            threshold = min(131072, batch * width * _FLOAT32_BYTES // 4)
            rss = peak_rss_in_subprocess("bench.bench_reversible", args, threshold)
            figures["peak_rss_MiB"] = round(rss / 2**20, 1)
        return figures

    return memory


def _train_builder(depth, width, batch):
    def build(variant, device):
        return build_step(variant, depth, width, batch, device)

    return build


def cases(quick=False):
    """16 and 64 blocks of width 1024 at B=1024; --quick: 4 and 16 blocks, W=256, B=128."""
    width, batch, depths = (256, 128, (4, 16)) if quick else (1024, 1024, (16, 64))
    half = width // 2
    out = []
    for depth in depths:
        forward_flops = depth * 4 * 2 * batch * half * half
        params = depth * 4 * (half * half + half)
        out.append(
            Case(
                name=f"train {depth} blocks",
                params={"dtype": "float32", "blocks": depth, "width": width, "batch": batch},
                flops=3 * forward_flops,
                # parameters read twice and their gradients written; x, y, dy, dx
                bytes=_FLOAT32_BYTES * (3 * params + 4 * batch * width),
                build=_train_builder(depth, width, batch),
                variants=VARIANTS,
                baseline="plain",
                memory=_memory_builder(depth, width, batch),
            )
        )
    return out


def summary(results):
    """Memory per extra block of each variant (from the two depths) and its ratio to plain's."""
    if len(results) < 2:
        return ""
    small, large = results[0], results[-1]
    extra = large["params"]["blocks"] - small["params"]["blocks"]
    lines = [f"memory per extra block ({small['case']} -> {large['case']}), vs plain autograd:"]
    per_block = {}
    for variant in VARIANTS:
        a = small["timings"].get(variant, {}).get("memory", {})
        b = large["timings"].get(variant, {}).get("memory", {})
        per_block[variant] = {
            key: (b[key] - a[key]) / extra for key in ("saved_MiB", "peak_rss_MiB") if key in a
        }
        if "peak_rss_MiB" in a:
            # the peak less the parameters' gradients, which every variant makes alike
            per_block[variant]["peak_rss_less_grads_MiB"] = (
                b["peak_rss_MiB"] - b["grads_MiB"] - a["peak_rss_MiB"] + a["grads_MiB"]
            ) / extra
    plain = per_block.get("plain", {})
    for variant, figures in per_block.items():
        cells = []
        for key, value in figures.items():
            ratio = value / plain[key] if plain.get(key) else None
            cells.append(f"{key} {value:.3f}" + (f" ({ratio:.3f}x plain)" if ratio else ""))
        time_ratio = large["timings"].get(variant, {}).get("ratio_vs_reference")
        slower = f"; time at {large['case']}: {1 / time_ratio:.2f}x plain" if time_ratio else ""
        lines.append(f"  {variant:<13} " + ", ".join(cells) + slower)
    return "\n".join(lines)


def time_variants(depth, width, batch, rounds):
    """Median seconds of a training step per variant: one warm-up call each, then `rounds`
    rounds of one call per variant in turn (a lighter run than the suite's, for a busy machine)."""
    device = torch.device("cpu")
    steps = {v: build_step(v, depth, width, batch, device) for v in VARIANTS}
    for step in steps.values():
        step()
    times = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, step in steps.items():
            start = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main(argv):
    if argv[0] == "time":
        depth, width, batch, rounds = map(int, argv[1:5])
        medians = time_variants(depth, width, batch, rounds)
        for v, seconds in medians.items():
            print(f"{v:<13} {seconds:8.3f} s  {seconds / medians['plain']:.2f}x plain")
        return
    variant, depth, width, batch = argv[0], *map(int, argv[1:4])
    torch.set_num_threads(torch.get_num_threads())
    model = build_model(variant, depth, width, torch.device("cpu"))
    step = build_step(variant, depth, width, batch, torch.device("cpu"), model=model)
    # the step's peak from a start without gradients: activations and the gradients it makes
    print(peak_rss_of_call(step, before=lambda: model.zero_grad(set_to_none=True)))


if __name__ == "__main__":
    main(sys.argv[1:])
