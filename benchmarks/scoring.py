"""The metrics every prediction of a held-out task is scored with, dense or sparse."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from benchmarks.data import dense
from trvae_scvi.benchmarking import HoldOut
from trvae_scvi.metrics import (
    bootstrap,
    change_correlation,
    direction_accuracy,
    energy_distance,
    r2_of_means,
    r2_of_variances,
)
from trvae_scvi.model._domain import zero_fraction

KEYS = ["r2_mean_deg", "r2_var_all", "change_r_deg", "direction_deg", "energy_distance"]
HEADER = (
    "R² mean top-100 DEGs, R² var all genes, change r top-100, direction top-100, "
    "energy distance, zeros (real), out of domain (real)"
).split(", ")


def domain_scores(predicted: np.ndarray, real: np.ndarray, non_negative: bool) -> dict:
    """Shares of exact zeros and of values < 0 (out of domain if the data are non-negative)."""
    return {
        "zero_fraction": float(zero_fraction(predicted).mean()),
        "zero_fraction_real": float(zero_fraction(real).mean()),
        "out_of_domain_fraction": float((predicted < 0).mean()) if non_negative else 0.0,
        "out_of_domain_fraction_real": float((real < 0).mean()) if non_negative else 0.0,
    }


def scores(predicted, real: np.ndarray, task: HoldOut, n_boot: int) -> dict:
    """All metrics of one prediction (a dense array or a sparse matrix)."""
    predicted = dense(predicted)
    degs, control = task.deg_mask, task.control
    result = {
        "r2_mean_deg": r2_of_means(predicted[:, degs], real[:, degs]),
        "r2_mean_all": r2_of_means(predicted, real),
        "r2_var_deg": r2_of_variances(predicted[:, degs], real[:, degs]),
        "r2_var_all": r2_of_variances(predicted, real),
        "change_r_deg": change_correlation(predicted[:, degs], real[:, degs], control[:, degs]),
        "change_r_all": change_correlation(predicted, real, control),
        "direction_deg": direction_accuracy(predicted[:, degs], real[:, degs], control[:, degs]),
        "energy_distance": energy_distance(predicted, real),
    }
    if n_boot > 0:
        mean, sd = bootstrap(r2_of_means, predicted[:, degs], real[:, degs], n_resamples=n_boot)
        result["r2_mean_deg_boot_mean"], result["r2_mean_deg_boot_sd"] = mean, sd
    x = task.train.X
    minimum = x.min() if sp.issparse(x) else np.min(x)
    return {**result, **domain_scores(predicted, real, bool(minimum >= 0))}


def row_cells(row, keys: list[str] = KEYS) -> list[str]:
    """A method's markdown cells: ``keys``, zeros (real) and out of domain (real)."""
    cells = [f"{row[k]:.3f}" for k in keys]
    for metric in ("zero_fraction", "out_of_domain_fraction"):
        cells.append(f"{row.get(metric, np.nan):.3f} ({row.get(f'{metric}_real', np.nan):.3f})")
    return cells
