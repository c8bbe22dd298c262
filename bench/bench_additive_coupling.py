"""Suite `coupling`: one NICE additive coupling layer (pyreversible.nn.AdditiveCoupling).

Cases, float32, odd-even partition, each at NICE's MNIST size (D=784, hidden 1000, 5 hidden
layers, B=256) and narrow (D=64, hidden 128, 3 hidden layers, B=256 and B=4096):

- train: forward, then backward of a fixed random cotangent, giving the input's and every
  parameter's gradient (the work of one layer in a training step of a NICE stack);
- inverse: the inverse map alone, without autograd.

FLOPs count the matmuls of the coupling network m: 2 * B * sum(in * out) for the forward
chain, three times that for forward and backward (dx and dW each cost one more chain).
Bytes count what must cross memory at the least: x, y, the cotangent, dx, the parameters
(read once per pass) and their gradients; hidden activations are left out, since a fused
kernel may keep or recompute them instead.
"""

import torch

import pyreversible
from bench.harness import COMPILE, Case
from pyreversible.nn import AdditiveCoupling

# (label, D, hidden, hidden layers, batch sizes)
CONFIGS = (
    ("mnist", 784, 1000, 5, (256,)),
    ("narrow", 64, 128, 3, (256, 4096)),
)

_FLOAT32_BYTES = 4


def _widths(dim, hidden, num_hidden_layers):
    # odd-even with parity 0: the even features (ceil(D / 2)) condition the odd ones
    dim_a = (dim + 1) // 2
    return [dim_a] + [hidden] * num_hidden_layers + [dim - dim_a]


def _build_layer(dim, hidden, num_hidden_layers, device):
    torch.manual_seed(0)
    layer = AdditiveCoupling(dim, hidden, num_hidden_layers, partition="odd-even", parity=0)
    return layer.to(device)


def _train_builder(dim, hidden, num_hidden_layers, batch):
    def build(variant, device):
        layer = _build_layer(dim, hidden, num_hidden_layers, device)
        x = torch.randn(batch, dim, device=device, requires_grad=True)
        cotangent = torch.randn(batch, dim, device=device)
        backend = "reference" if variant == COMPILE else variant
        forward = torch.compile(layer) if variant == COMPILE else layer

        def step():
            with pyreversible.use_backend(backend):
                # gradients are written afresh each step, as after optimizer.zero_grad()
                layer.zero_grad(set_to_none=True)
                x.grad = None
                forward(x).backward(cotangent)

        return step

    return build


def _inverse_builder(dim, hidden, num_hidden_layers, batch):
    def build(variant, device):
        layer = _build_layer(dim, hidden, num_hidden_layers, device)
        y = torch.randn(batch, dim, device=device)
        backend = "reference" if variant == COMPILE else variant
        inverse = torch.compile(layer.inverse) if variant == COMPILE else layer.inverse

        def step():
            with torch.no_grad(), pyreversible.use_backend(backend):
                return inverse(y)

        return step

    return build


def cases(quick=False):
    """The suite's cases; `quick` changes nothing here, every case is a few seconds at most."""
    out = []
    for label, dim, hidden, layers, batches in CONFIGS:
        widths = _widths(dim, hidden, layers)
        pairs = list(zip(widths[:-1], widths[1:], strict=True))
        macs = sum(i * o for i, o in pairs)
        num_params = sum(i * o + o for i, o in pairs)
        for batch in batches:
            params = {
                "dtype": "float32",
                "batch": batch,
                "dim": dim,
                "hidden": hidden,
                "num_hidden_layers": layers,
                "partition": "odd-even",
            }
            forward_flops = 2 * batch * macs
            # forward: x, y, params; backward: cotangent, x_a, dx, params, parameter grads
            train_bytes = batch * (4 * dim + widths[0]) + 3 * num_params
            out.append(
                Case(
                    name=f"train {label} B={batch}",
                    params={**params, "pass": "forward+backward"},
                    flops=3 * forward_flops,
                    bytes=_FLOAT32_BYTES * train_bytes,
                    build=_train_builder(dim, hidden, layers, batch),
                )
            )
            out.append(
                Case(
                    name=f"inverse {label} B={batch}",
                    params={**params, "pass": "inverse"},
                    flops=forward_flops,
                    bytes=_FLOAT32_BYTES * (2 * batch * dim + num_params),
                    build=_inverse_builder(dim, hidden, layers, batch),
                )
            )
    return out
