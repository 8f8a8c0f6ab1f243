"""Network pieces: the MMD penalty, the conditional layers and NeuronEdit."""

from ._base_components import ACTIVATIONS, ConditionalMLP
from ._conv import ConditionalImageLayer, ConditionImage, ConvDecoder, ConvEncoder, PixelBias
from ._mmd import PAPER_KERNEL_WIDTHS, mmd_between_conditions, multiscale_rbf_kernel
from ._neuron_edit import neuron_edit

__all__ = [
    "ACTIVATIONS",
    "ConditionalImageLayer",
    "ConditionImage",
    "ConditionalMLP",
    "ConvDecoder",
    "ConvEncoder",
    "PixelBias",
    "PAPER_KERNEL_WIDTHS",
    "mmd_between_conditions",
    "multiscale_rbf_kernel",
    "neuron_edit",
]
