"""Pure-PyTorch definitions of every op, with the same signatures as pyreversible.ops."""

from pyreversible.reference.additive_coupling import (
    PARTITIONS,
    additive_coupling,
    additive_coupling_mlp,
    mlp,
    partition_merge,
    partition_split,
)
from pyreversible.reference.causal_conv1d import causal_conv1d
from pyreversible.reference.wavenet_layer import wavenet_layer

__all__ = [
    "PARTITIONS",
    "additive_coupling",
    "additive_coupling_mlp",
    "causal_conv1d",
    "mlp",
    "partition_merge",
    "partition_split",
    "wavenet_layer",
]
