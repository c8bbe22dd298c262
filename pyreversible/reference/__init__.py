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
from pyreversible.reference.masked_conv2d import MASK_TYPES, conv_mask, masked_conv2d
from pyreversible.reference.reversible_block import reversible_block, reversible_block_inverse
from pyreversible.reference.sampling import inverse_cdf_sample
from pyreversible.reference.wavenet_layer import wavenet_layer
from pyreversible.reference.wavenet_step import pack_weights, wavenet_generate, wavenet_step

__all__ = [
    "MASK_TYPES",
    "PARTITIONS",
    "additive_coupling",
    "additive_coupling_mlp",
    "causal_conv1d",
    "conv_mask",
    "inverse_cdf_sample",
    "masked_conv2d",
    "mlp",
    "pack_weights",
    "partition_merge",
    "partition_split",
    "reversible_block",
    "reversible_block_inverse",
    "wavenet_generate",
    "wavenet_layer",
    "wavenet_step",
]
