"""How far to trust the model's cell-type-specific change, learnt from the training cells.

:meth:`TRVAE.calibrate_predictor` runs a group K-fold inside the model's training data: for
each fold, a model with the model's settings is trained without the target-condition cells of
the fold's groups (cell types), and each of those groups is then predicted from its
source-condition cells, exactly as ``predict`` would predict an unseen type, at every shrinkage
of :data:`SHRINKAGES` (1 is each cell plus the reference's measured mean change: mean shift).
The shrinkage with the best inner score is what ``predict`` uses by default afterwards, and the
inner scores at it are the prediction's expected accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from trvae_scvi.metrics import change_correlation, r2_of_means, top_degs

from ._validation import cell_type_column

SHRINKAGES = (0.0, 0.25, 0.5, 0.75, 1.0)
N_DEGS = 100  # genes scored, as in the benchmarks: each group's top DEGs
MIN_CELLS = 10  # cells of each condition a group needs to be scored


def measured_groups(
    types: np.ndarray, conditions: np.ndarray, pair: tuple[str, str], exclude: Sequence[str]
) -> list[str]:
    """Groups with at least :data:`MIN_CELLS` cells in both conditions of ``pair``, sorted."""
    counts = pd.crosstab(types, conditions)
    if not set(pair) <= set(counts.columns):
        return []
    enough = (counts[list(pair)] >= MIN_CELLS).all(axis=1)
    return sorted(set(counts.index[enough]) - set(exclude))


def folds(groups: list[str], n_folds: int) -> list[list[str]]:
    """``groups`` dealt round-robin into ``n_folds`` folds (at most one per group)."""
    n_folds = min(n_folds, len(groups))
    return [groups[start::n_folds] for start in range(n_folds)]


def fold_scores(
    model, held: list[str], cell_type_key: str, pair: tuple[str, str], train_kwargs: dict
) -> list[dict]:
    """Inner scores of one fold's groups, each predicted at every shrinkage.

    The fold's model is ``model``'s settings trained on ``model.adata`` without the target
    cells of ``held``; its reference is the cells of the other groups.
    """
    source, target = pair
    adata = model.adata
    types = cell_type_column(adata, cell_type_key)
    conditions = adata.obs[model.condition_key].astype(str).to_numpy()
    hidden = np.isin(types, held) & (conditions == target)
    inner = adata[~hidden].copy()
    type(model).setup_anndata(
        inner,
        condition_key=model.get_setup_arg("condition_key"),
        layer=model.get_setup_arg("layer"),
    )
    inner_model = type(model)(inner, **model.init_params_["non_kwargs"])
    inner_model.train(**train_kwargs)
    inner_types, inner_conditions = types[~hidden], conditions[~hidden]
    reference = np.flatnonzero(~np.isin(inner_types, held))
    rows = []
    for group in held:
        cells = np.flatnonzero((inner_types == group) & (inner_conditions == source))
        own = np.flatnonzero((types == group) & (conditions == source))
        control = _log_values(model, adata, own)
        real = _log_values(model, adata, np.flatnonzero((types == group) & hidden))
        degs = _top_degs(control, real)
        for shrinkage in SHRINKAGES:
            predicted = inner_model.predict(
                indices=cells,
                target_condition=target,
                reference_indices=reference,
                cell_type_key=cell_type_key,
                shrinkage=shrinkage,
                target_sum=model.median_library_size_,
            )
            values = predicted.layers.get("log_normalized", predicted.X)
            values = _dense(values)[:, degs]
            rows.append(
                {
                    "group": group,
                    "shrinkage": shrinkage,
                    "r2_mean_deg": r2_of_means(values, real[:, degs]),
                    "change_r_deg": change_correlation(values, real[:, degs], control[:, degs]),
                }
            )
    return rows


def choose(scores: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The shrinkage with the best mean score over groups (ties: the larger), and the means.

    The score is the mean of the top-DEG R² of means and the change correlation, the two
    scores a prediction is judged on (``docs/benchmarks.md``).
    """
    scores = scores.assign(score=(scores.r2_mean_deg + scores.change_r_deg) / 2)
    means = scores.groupby("shrinkage")[["score", "r2_mean_deg", "change_r_deg"]].mean()
    best = means.score.round(4).iloc[::-1].idxmax()
    return float(best), means


def record(
    scores: pd.DataFrame, cell_type_key: str, pair: tuple[str, str], groups: list[list[str]]
) -> dict:
    """The calibration as plain data (saved with the model, copied to ``uns``)."""
    shrinkage, _ = choose(scores)
    chosen = scores[scores.shrinkage == shrinkage]
    return {
        "cell_type_key": cell_type_key,
        "source_condition": pair[0],
        "target_condition": pair[1],
        "folds": [list(fold) for fold in groups],
        "shrinkage": shrinkage,
        "expected_r2_mean_deg": float(chosen.r2_mean_deg.mean()),
        "expected_r2_mean_deg_sd": float(chosen.r2_mean_deg.std(ddof=0)),
        "expected_change_r_deg": float(chosen.change_r_deg.mean()),
        "expected_change_r_deg_sd": float(chosen.change_r_deg.std(ddof=0)),
        "scores": {column: scores[column].tolist() for column in scores.columns},
    }


def _log_values(model, adata: AnnData, rows: np.ndarray) -> np.ndarray:
    """Real values of ``rows`` in the model's log space, at its median library size."""
    return _dense(model._model_space(None, None).real(adata, rows))


def _top_degs(control: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Positions of the top DEGs of real target against control cells."""
    conditions = ["control"] * len(control) + ["target"] * len(real)
    obs = pd.DataFrame({"condition": conditions}, index=[str(i) for i in range(len(conditions))])
    cells = AnnData(np.vstack([control, real]).astype(np.float32), obs=obs.astype("category"))
    names = top_degs(cells, "condition", "target", "control", n_genes=min(N_DEGS, cells.n_vars))
    return cells.var_names.get_indexer(names)


def _dense(values) -> np.ndarray:
    return np.asarray(values.toarray() if sp.issparse(values) else values)
