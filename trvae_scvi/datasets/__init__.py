"""Example data shipped with the package (no network needed)."""

from ._kang import kang2018

__all__ = ["kang2018"]
