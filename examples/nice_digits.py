"""Train NICE on scikit-learn's handwritten digits and compare it with a per-pixel baseline.

Data. sklearn.datasets.load_digits: 1797 images of 8x8 pixels with integer values v in
0..16 (17 levels), bundled with scikit-learn (no download), split into 1437 train and 360
test images with a fixed seed (the same split whatever --seed). The integer images are
dequantised into densities' territory:

    x = (v + u) / 17,   u ~ U(0, 1) per pixel,

fresh noise every epoch for training, one fixed draw (seeded) for evaluation.

Model. pyreversible.nn.NICE (additive couplings with odd-even partitions, a scaling layer,
the standard logistic prior), trained by maximum likelihood with Adam; the scaling layer's
log-scales get a larger learning rate (--scale-lr), as they must grow by several nats. By
default 4 couplings whose networks have 3 hidden layers of 128: on 1437 training images wider
networks overfit sooner (hidden 256 with 4 layers ends some 5 nats/image lower on the test
split after 60 epochs).

Figures. The model gives a density p(x) on [0, 1]^D, D = 64. Every integer image v owns the
cube [v / 17, (v + 1) / 17)^D of volume 17^-D, so its probability is P(v) = integral of p
over the cube >= 17^-D exp(E_u log p(x)) (Jensen), and the held-out log-likelihood of the
discrete data in bits per dimension is

    bits/dim = -(log p(x) - D log 17) / (D ln 2),

averaged over test images (an upper bound on the true bits/dim of P). The script prints
log p(x) in nats per image and this bits/dim, for NICE and for a baseline of independent
per-pixel logistic distributions (location and scale per pixel fitted by maximum likelihood
on the dequantised training images, evaluated on the same dequantised test images). NICE must
beat the baseline: higher log p(x), fewer bits/dim.

With --mnist DIR it reads MNIST's IDX files from DIR (train-images-idx3-ubyte and
t10k-images-idx3-ubyte, optionally gzipped) instead: 784 dimensions, 256 levels, x =
(v + u) / 256 (the paper's (x * 255 + u) / 256 with x = v / 255), and the paper's model:
4 couplings, hidden 1000, 5 hidden layers (20 epochs by default; the paper trained longer).

Usage:
    python examples/nice_digits.py                      # digits, under a minute of training
    python examples/nice_digits.py --hidden 256 --layers 4 --out /tmp/samples.png
    python examples/nice_digits.py --mnist ~/data/mnist --epochs 50
"""

import argparse
import gzip
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import pyreversible
from pyreversible.nn import NICE

# Defaults per dataset: epochs, couplings, hidden width, hidden layers, batch size, Adam lr.
DEFAULTS = {
    "digits": {"epochs": 60, "couplings": 4, "hidden": 128, "layers": 3, "batch": 64, "lr": 1e-3},
    "mnist": {"epochs": 20, "couplings": 4, "hidden": 1000, "layers": 5, "batch": 256, "lr": 1e-3},
}

# Seed of the digits' train/test split, fixed so that every run is scored on the same images.
SPLIT_SEED = 0


def load_digits(seed=SPLIT_SEED, test_fraction=0.2):
    """Train and test images of sklearn's digits: (uint8 (N, 64) arrays, 17 levels, side 8)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    images = sklearn_digits().data.astype(np.uint8)
    train, test = train_test_split(images, test_size=test_fraction, random_state=seed)
    return train, test, 17, 8


def _read_idx_images(path):
    # IDX image file: magic 2051, count, rows, cols (big-endian int32), then uint8 pixels
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">4i", f.read(16))
        if magic != 2051:
            raise ValueError(f"{path}: not an IDX image file (magic {magic}, expected 2051)")
        data = np.frombuffer(f.read(), dtype=np.uint8).copy()
    return data.reshape(count, rows * cols), rows


def load_mnist(directory):
    """Train and test images of MNIST from IDX files in `directory`, 256 levels, side 28."""
    found = {}
    for split, stem in (("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")):
        for name in (stem, stem + ".gz"):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                found[split] = _read_idx_images(path)
                break
        else:
            raise FileNotFoundError(f"{stem}[.gz] not found in {directory}")
    return found["train"][0], found["test"][0], 256, found["train"][1]


def dequantise(v, levels, generator):
    """x = (v + u) / levels with u ~ U(0, 1) per pixel; v: uint8 (N, D) -> float32 (N, D)."""
    u = torch.rand(v.shape, generator=generator)
    return (v.float() + u) / levels


def logistic_log_prob(x, loc, log_scale):
    """log density of independent logistics per feature, summed: (N, D) -> (N,)."""
    z = (x - loc) / log_scale.exp()
    return (-z - log_scale - 2 * F.softplus(-z)).sum(dim=1)


def fit_pixel_logistics(x, steps=200):
    """Location and log-scale per pixel maximising the likelihood of x (N, D); L-BFGS."""
    loc = x.mean(dim=0).clone().requires_grad_(True)
    log_scale = torch.log(x.std(dim=0) * math.sqrt(3) / math.pi + 1e-3).requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [loc, log_scale], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure():
        optimiser.zero_grad()
        loss = -logistic_log_prob(x, loc, log_scale).mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    return loc.detach(), log_scale.detach()


@torch.no_grad()
def mean_log_prob(model, x, batch=1024):
    """Mean log p(x) in nats per image under `model`."""
    model.eval()
    total = sum(model.log_prob(x[i : i + batch]).sum().item() for i in range(0, len(x), batch))
    model.train()
    return total / len(x)


def bits_per_dim(log_prob, dim, levels):
    """Bits/dim of the discrete data from log p(x) in nats of the dequantised data."""
    return -(log_prob - dim * math.log(levels)) / (dim * math.log(2))


def save_grid(samples, side, path, columns=8, zoom=4, pad=2):
    """Write samples (N, side * side) in [0, 1] as a PNG grid of zoomed tiles, ink dark."""
    images = samples.clamp(0, 1).view(-1, side, side).numpy()
    rows = math.ceil(len(images) / columns)
    tile = side * zoom + pad
    grid = np.full((rows * tile + pad, columns * tile + pad), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        pixels = np.kron(255 * (1 - image), np.ones((zoom, zoom))).astype(np.uint8)
        grid[pad + r * tile : (r + 1) * tile, pad + c * tile : (c + 1) * tile] = pixels
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(grid, mode="L").save(path)


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="DIR", help="train on MNIST IDX files from DIR")
    parser.add_argument("--epochs", type=int, help="passes over the training images")
    parser.add_argument("--couplings", type=int, help="additive coupling layers")
    parser.add_argument("--hidden", type=int, help="width of the coupling networks")
    parser.add_argument("--layers", type=int, help="hidden layers per coupling network")
    parser.add_argument("--batch", type=int, help="images per Adam step")
    parser.add_argument("--lr", type=float, help="Adam learning rate of the couplings")
    parser.add_argument(
        "--scale-lr", type=float, default=1e-2, help="Adam learning rate of the scaling layer"
    )
    parser.add_argument("--backend", default="auto", choices=pyreversible._backend.BACKENDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/nice_digits_samples.png", help="sample grid")
    args = parser.parse_args()
    for key, value in DEFAULTS["mnist" if args.mnist else "digits"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main():
    args = _parse()
    torch.manual_seed(args.seed)
    pyreversible.set_backend(args.backend)
    generator = torch.Generator().manual_seed(args.seed)

    if args.mnist:
        train_v, test_v, levels, side = load_mnist(args.mnist)
    else:
        train_v, test_v, levels, side = load_digits()
    train_v, test_v = torch.from_numpy(train_v), torch.from_numpy(test_v)
    dim = train_v.shape[1]
    print(f"{len(train_v)} train and {len(test_v)} test images, D={dim}, {levels} levels")

    # one dequantisation of each split for the baseline fit and for every evaluation
    train_x = dequantise(train_v, levels, generator)
    test_x = dequantise(test_v, levels, generator)

    loc, log_scale = fit_pixel_logistics(train_x)
    baseline = logistic_log_prob(test_x, loc, log_scale).mean().item()

    model = NICE(dim, args.couplings, args.hidden, args.layers, prior="logistic")
    # the log-scales must travel several nats from 0 (blank pixels vary by 1/17 at most), a
    # few thousand steps at the couplings' rate: they get a larger one
    optimiser = torch.optim.Adam(
        [
            {"params": model.couplings.parameters(), "lr": args.lr},
            {"params": model.scaling.parameters(), "lr": args.scale_lr},
        ]
    )
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        # fresh dequantisation noise every epoch: the model sees the density, not 17 spikes
        x = dequantise(train_v, levels, generator)
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), args.batch):
            loss = -model.log_prob(x[order[i : i + args.batch]]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if epoch % max(1, args.epochs // 10) == 0 or epoch == args.epochs:
            test = mean_log_prob(model, test_x)
            print(
                f"epoch {epoch:4d}  train log p(x) {mean_log_prob(model, train_x):8.2f}  "
                f"test log p(x) {test:8.2f} nats  {time.perf_counter() - start:6.1f} s"
            )

    nice = mean_log_prob(model, test_x)
    print(f"\nheld-out, {len(test_v)} images, x = (v + u) / {levels}:")
    print(f"{'model':<28}{'log p(x) nats/image':>22}{'bits/dim (discrete)':>22}")
    for name, value in (("NICE", nice), ("per-pixel logistic baseline", baseline)):
        print(f"{name:<28}{value:>22.2f}{bits_per_dim(value, dim, levels):>22.3f}")
    verdict = "beats" if nice > baseline else "does NOT beat"
    print(f"NICE {verdict} the baseline: {nice - baseline:+.2f} nats/image")

    samples = model.sample(64, generator=generator)
    save_grid(samples, side, args.out)
    print(f"wrote 64 samples to {args.out}")


if __name__ == "__main__":
    main()
