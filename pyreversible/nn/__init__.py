"""Drop-in modules built on pyreversible.ops."""

from pyreversible.nn.additive_coupling import AdditiveCoupling, CouplingMLP
from pyreversible.nn.causal_conv1d import CausalConv1d, QueueCache
from pyreversible.nn.masked_conv2d import MaskedConv2d
from pyreversible.nn.nice import NICE
from pyreversible.nn.pixelcnn import PixelCNN
from pyreversible.nn.reversible import ReversibleBlock, ReversibleSequential
from pyreversible.nn.scaling import Scaling
from pyreversible.nn.wavenet import WaveNet

__all__ = [
    "NICE",
    "AdditiveCoupling",
    "CausalConv1d",
    "CouplingMLP",
    "MaskedConv2d",
    "PixelCNN",
    "QueueCache",
    "ReversibleBlock",
    "ReversibleSequential",
    "Scaling",
    "WaveNet",
]
