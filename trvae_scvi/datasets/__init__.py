"""Example data shipped with the package (no network needed)."""

from ._kang import kang2018
from ._morpho import morpho_digits

__all__ = ["kang2018", "morpho_digits"]
