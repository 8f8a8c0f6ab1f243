"""scvi-tools model of trVAE."""

from ._data_splitting import ConditionBalancedDataSplitter
from ._model import TRVAE
from ._training_plan import TRVAETrainingPlan

__all__ = ["TRVAE", "ConditionBalancedDataSplitter", "TRVAETrainingPlan"]
