"""scvi-tools module of trVAE."""

from ._module import TRVAEModule

__all__ = ["TRVAEModule"]
