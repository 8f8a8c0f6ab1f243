"""Network pieces: the MMD penalty, the conditional layers and NeuronEdit."""

from ._base_components import ACTIVATIONS, ConditionalMLP
from ._mmd import PAPER_KERNEL_WIDTHS, mmd_between_conditions, multiscale_rbf_kernel
from ._neuron_edit import neuron_edit

__all__ = [
    "ACTIVATIONS",
    "ConditionalMLP",
    "PAPER_KERNEL_WIDTHS",
    "mmd_between_conditions",
    "multiscale_rbf_kernel",
    "neuron_edit",
]
