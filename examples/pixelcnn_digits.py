"""Train PixelCNN on scikit-learn's handwritten digits, scored beside NICE on the same split.

Data. The digits of examples/nice_digits.py, split by its own load_digits (1437 train and 360
test images of 8x8 pixels, integer levels v in 0..16, the same split whatever --seed). PixelCNN
models the integers directly: no dequantisation, no rescaling.

Model. pyreversible.nn.PixelCNN with 17 levels: a type-A masked convolution (--kernel), type-B
3x3 masked convolutions with ReLUs (--layers in all), a softmax over the 17 levels per pixel,
trained by maximum likelihood (cross-entropy) with Adam. The masked convolutions run on the
chosen backend (`auto`: the C++ kernels on the CPU).

Figures. PixelCNN gives a probability P(v) to every integer image v, so its held-out figure is
exact: -log P(v) in nats per image, and bits/dim = -log2 P(v) / 64. NICE instead has a density
p(x) on x = (v + u) / 17 in [0, 1]^64, u ~ U(0, 1); examples/nice_digits.py reports log p(x)
averaged over one draw of u, and bits/dim = -(log p(x) - 64 log 17) / (64 ln 2), an upper
bound on the bits/dim of NICE's own discrete P(v) (Jensen). To put the two on one scale, the
script also gives PixelCNN's log-density on NICE's continuous data: P spread uniformly over
each cell of side 1/17 is the density p(x) = 17^64 P(v), so

    log p(x) = log P(v) + 64 log 17        (nats per image, comparable with NICE's log p(x)),

and then both bits/dim columns measure the same thing, -(log p(x) - 64 log 17) / (64 ln 2),
exactly for PixelCNN and as an upper bound for NICE. Higher log p(x), fewer bits/dim is better.
A baseline of independent per-pixel categorical distributions (level counts on the training
split, plus one) is printed on the same scales.

Usage:
    python examples/pixelcnn_digits.py               # well under a minute on 2 CPU cores
    python examples/pixelcnn_digits.py --epochs 60 --hidden 96 --out /tmp/samples.png
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from nice_digits import load_digits, save_grid

import pyreversible
from pyreversible.nn import PixelCNN


def to_images(v, side):
    """uint8 (N, side * side) levels -> LongTensor (N, 1, side, side)."""
    return torch.from_numpy(v).long().view(-1, 1, side, side)


@torch.no_grad()
def mean_nll(model, images, batch=512):
    """Mean -log P(v) in nats per image."""
    model.eval()
    total = sum(
        -model.log_prob(images[i : i + batch]).sum().item() for i in range(0, len(images), batch)
    )
    model.train()
    return total / len(images)


def pixel_categorical_nll(train, test, levels):
    """Mean -log P(v) of the test images under independent per-pixel categoricals fitted on
    the training images (counts plus one)."""
    flat_train, flat_test = train.flatten(1), test.flatten(1)
    counts = F.one_hot(flat_train, levels).sum(dim=0).double() + 1  # (D, L)
    log_probs = (counts / counts.sum(dim=1, keepdim=True)).log()
    picked = log_probs.gather(1, flat_test.t())  # (D, N)
    return -picked.sum(dim=0).mean().item()


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training images")
    parser.add_argument("--hidden", type=int, default=64, help="channels of the masked convs")
    parser.add_argument("--layers", type=int, default=5, help="masked convolutions in all")
    parser.add_argument("--kernel", type=int, default=5, help="size of the type-A convolution")
    parser.add_argument("--batch", type=int, default=64, help="images per Adam step")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--samples", type=int, default=64, help="images to draw for the PNG")
    parser.add_argument("--backend", default="auto", choices=pyreversible._backend.BACKENDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/pixelcnn_digits_samples.png", help="samples")
    return parser.parse_args()


def main():
    args = _parse()
    torch.manual_seed(args.seed)
    pyreversible.set_backend(args.backend)
    generator = torch.Generator().manual_seed(args.seed)

    train_v, test_v, levels, side = load_digits()
    train, test = to_images(train_v, side), to_images(test_v, side)
    dim = side * side
    print(f"{len(train)} train and {len(test)} test images, D={dim}, {levels} levels")

    model = PixelCNN(1, levels, args.hidden, args.layers, args.kernel)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for i in range(0, len(train), args.batch):
            batch = train[order[i : i + args.batch]]
            loss = -model.log_prob(batch).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        schedule.step()
        if epoch % max(1, args.epochs // 4) == 0 or epoch == args.epochs:
            # the training figure is the mean over the epoch's steps, as the model changed
            print(
                f"epoch {epoch:4d}  train -log P(v) {total / len(train):8.2f}  "
                f"test -log P(v) {mean_nll(model, test):8.2f} nats  "
                f"{time.perf_counter() - start:6.1f} s"
            )

    shift = dim * math.log(levels)
    rows = (
        ("PixelCNN", mean_nll(model, test)),
        ("per-pixel categorical", pixel_categorical_nll(train, test, levels)),
    )
    print(f"\nheld-out, {len(test)} images:")
    print(
        f"{'model':<24}{'-log P(v) nats/image':>22}{'log p(x) nats/image':>22}"
        f"{'bits/dim (discrete)':>22}"
    )
    for name, nll in rows:
        print(f"{name:<24}{nll:>22.2f}{shift - nll:>22.2f}{nll / (dim * math.log(2)):>22.3f}")
    print(f"log p(x) = log P(v) + {dim} log {levels}: the density on x = (v + u) / {levels}")
    print("beside examples/nice_digits.py's log p(x) and bits/dim on the same split")

    samples = model.sample(args.samples, side, side, generator=generator)
    save_grid(samples.view(args.samples, -1).float() / (levels - 1), side, args.out)
    print(f"wrote {args.samples} samples to {args.out}")


if __name__ == "__main__":
    main()
