"""Functional ops: each runs on the backend chosen by pyreversible.set_backend."""

from pyreversible.ops.additive_coupling import additive_coupling, additive_coupling_mlp
from pyreversible.ops.causal_conv1d import causal_conv1d
from pyreversible.ops.masked_conv2d import masked_conv2d
from pyreversible.ops.reversible_block import (
    reversible_block,
    reversible_block_bwd,
    reversible_block_fwd,
    reversible_block_inverse,
)
from pyreversible.ops.wavenet_layer import wavenet_layer
from pyreversible.ops.wavenet_step import wavenet_generate, wavenet_step

__all__ = [
    "additive_coupling",
    "additive_coupling_mlp",
    "causal_conv1d",
    "masked_conv2d",
    "reversible_block",
    "reversible_block_bwd",
    "reversible_block_fwd",
    "reversible_block_inverse",
    "wavenet_generate",
    "wavenet_layer",
    "wavenet_step",
]
