"""trVAE (transfer VAE) on scvi-tools: predict condition responses of unseen cell types."""

from importlib.metadata import PackageNotFoundError, version

from . import benchmarking, datasets, metrics, model, module, nn, pl
from .model import TRVAE
from .module import TRVAEModule

try:
    __version__ = version("trvae-scvi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "TRVAE",
    "TRVAEModule",
    "benchmarking",
    "datasets",
    "metrics",
    "model",
    "module",
    "nn",
    "pl",
]
