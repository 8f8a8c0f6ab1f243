"""Network pieces: the MMD penalty and the conditional fully connected layers."""

from ._base_components import ACTIVATIONS, ConditionalMLP
from ._mmd import PAPER_KERNEL_WIDTHS, mmd_between_conditions, multiscale_rbf_kernel

__all__ = [
    "ACTIVATIONS",
    "ConditionalMLP",
    "PAPER_KERNEL_WIDTHS",
    "mmd_between_conditions",
    "multiscale_rbf_kernel",
]
