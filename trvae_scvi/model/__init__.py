"""scvi-tools model of trVAE."""

from ._data_splitting import ConditionBalancedDataSplitter
from ._model import TRVAE

__all__ = ["TRVAE", "ConditionBalancedDataSplitter"]
