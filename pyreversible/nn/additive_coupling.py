"""AdditiveCoupling: the NICE coupling layer as a drop-in module."""

import math

from torch import nn

from pyreversible import ops
from pyreversible.reference.additive_coupling import PARTITIONS, mlp


class CouplingMLP(nn.Module):
    """The coupling network m of NICE: Linear, then (ReLU, Linear) per hidden layer.

    Its layers are plain nn.Linear modules (`self.layers`), so its state dict is that of the
    MLP written by hand; AdditiveCoupling runs it fused with the coupling.
    """

    def __init__(self, in_features, out_features, hidden=1000, num_hidden_layers=5):
        super().__init__()
        widths = [in_features] + [hidden] * num_hidden_layers + [out_features]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in pairs)

    @property
    def weights(self):
        return [layer.weight for layer in self.layers]

    @property
    def biases(self):
        return [layer.bias for layer in self.layers]

    def parameters_by_kind(self):
        """(weights, biases), each a list in layer order, read in one pass over the layers."""
        weights, biases = [], []
        for layer in self.layers:
            weights.append(layer.weight)
            biases.append(layer.bias)
        return weights, biases

    def forward(self, x_a):
        return mlp(x_a.flatten(1), self.weights, self.biases)


def _part_sizes(dim, partition, parity):
    # numbers of features in the conditioning and the updated part of one sample
    if partition in ("checkerboard", "channel"):
        c, h, w = dim
        if partition == "checkerboard":
            return c * h * w // 2, c * h * w // 2
        first = (c // 2) * h * w
        sizes = (first, c * h * w - first)
    elif partition == "half":
        sizes = (dim // 2, dim - dim // 2)
    else:
        sizes = ((dim + 1) // 2, dim // 2)
    return sizes if parity == 0 else sizes[::-1]


def _check_dim(dim, partition):
    if partition not in PARTITIONS:
        raise ValueError(
            f"AdditiveCoupling: partition must be one of {PARTITIONS}, got {partition!r}"
        )
    if partition in ("checkerboard", "channel"):
        if not (isinstance(dim, tuple | list) and len(dim) == 3 and all(d >= 1 for d in dim)):
            raise ValueError(
                f"AdditiveCoupling: partition {partition!r} needs dim = (C, H, W), got {dim!r}"
            )
        if partition == "checkerboard" and dim[2] % 2:
            raise ValueError(f"AdditiveCoupling: 'checkerboard' needs an even width, got {dim!r}")
        if partition == "channel" and dim[0] < 2:
            raise ValueError(f"AdditiveCoupling: 'channel' needs at least 2 channels, got {dim!r}")
        return tuple(dim)
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(
            f"AdditiveCoupling: partition {partition!r} needs an int dim >= 2, got {dim!r}"
        )
    return dim


class AdditiveCoupling(nn.Module):
    """An additive coupling layer: y_a = x_a, y_b = x_b + m(x_a); log|det J| = 0.

    Args:
        dim: features per sample, an int for partitions 'half' and 'odd-even', or (C, H, W)
            for 'checkerboard' and 'channel'.
        hidden: width of m's hidden layers (when coupling_net is None).
        num_hidden_layers: number of hidden layers of m (when coupling_net is None).
        partition: 'half', 'odd-even', 'checkerboard' or 'channel'.
        parity: 0 or 1, which part conditions the other.
        coupling_net: any module mapping x_a to a tensor shaped like x_b; by default a
            CouplingMLP, which runs fused with the coupling in one kernel.

    Shapes: x and y are (B, dim) or (B, C, H, W).

    Example:
        >>> layer = AdditiveCoupling(784, hidden=1000, num_hidden_layers=5)
        >>> x = torch.randn(16, 784)
        >>> torch.allclose(layer.inverse(layer(x)), x, atol=1e-4)
        True
    """

    def __init__(
        self,
        dim,
        hidden=1000,
        num_hidden_layers=5,
        partition="odd-even",
        parity=0,
        coupling_net=None,
    ):
        super().__init__()
        self.dim = _check_dim(dim, partition)
        if parity not in (0, 1):
            raise ValueError(f"AdditiveCoupling: parity must be 0 or 1, got {parity!r}")
        self.partition = partition
        self.parity = parity
        if coupling_net is None:
            dim_a, dim_b = _part_sizes(self.dim, partition, parity)
            coupling_net = CouplingMLP(dim_a, dim_b, hidden, num_hidden_layers)
        self.coupling_net = coupling_net

    def _couple(self, x, reverse):
        net = self.coupling_net
        if isinstance(net, CouplingMLP):
            weights, biases = net.parameters_by_kind()
            return ops.additive_coupling_mlp(
                x, weights, biases, self.partition, self.parity, reverse
            )
        return ops.additive_coupling(x, net, self.partition, self.parity, reverse)

    def forward(self, x):
        return self._couple(x, reverse=False)

    def inverse(self, y):
        return self._couple(y, reverse=True)

    def extra_repr(self):
        return f"dim={self.dim}, partition={self.partition!r}, parity={self.parity}"


def num_features(dim):
    """Features per sample of a layer of size `dim` (an int or a (C, H, W) tuple)."""
    return dim if isinstance(dim, int) else math.prod(dim)
