"""Pure-PyTorch definitions of every op, with the same signatures as pyreversible.ops."""

from pyreversible.reference.additive_coupling import (
    PARTITIONS,
    additive_coupling,
    additive_coupling_mlp,
    mlp,
    partition_merge,
    partition_split,
)

__all__ = [
    "PARTITIONS",
    "additive_coupling",
    "additive_coupling_mlp",
    "mlp",
    "partition_merge",
    "partition_split",
]
