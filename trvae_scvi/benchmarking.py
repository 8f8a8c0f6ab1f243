"""Out-of-distribution tasks: a cell type's perturbed cells hidden from training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from trvae_scvi.metrics import mean_expression, top_degs


@dataclass
class HoldOut:
    """One held-out task (see :func:`hold_out`).

    Attributes
    ----------
    train
        Copy of the cells without the held-out ones: what a model is trained on.
    control_indices
        Positions in ``train`` of the held-out type's control cells: what is predicted from.
    reference_indices
        Positions in ``train`` of the other cell types' cells.
    control
        Dense expression of those control cells.
    real
        Dense expression of the held-out perturbed cells: what predictions are scored against.
    mean_shift
        The trivial baseline: ``control`` plus the mean perturbed minus control difference of
        the other cell types.
    deg_mask
        The top DEGs of the held-out type (real perturbed vs control cells), as a gene mask.

    Examples
    --------
    >>> import anndata as ad
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(rng.poisson(1.0, (40, 5)).astype(np.float32))
    >>> adata.obs["cell_type"] = ["A"] * 20 + ["B"] * 20
    >>> adata.obs["condition"] = (["control"] * 10 + ["stimulated"] * 10) * 2
    >>> task = hold_out(adata, "A", n_degs=2)
    >>> task.train.n_obs, len(task.control_indices), len(task.reference_indices)
    (30, 10, 20)
    >>> task.real.shape, task.mean_shift.shape, int(task.deg_mask.sum())
    ((10, 5), (10, 5), 2)

    """

    train: AnnData
    control_indices: np.ndarray
    reference_indices: np.ndarray
    control: np.ndarray
    real: np.ndarray
    mean_shift: np.ndarray
    deg_mask: np.ndarray


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def hold_out(
    adata: AnnData,
    cell_type: str,
    cell_type_key: str = "cell_type",
    condition_key: str = "condition",
    control: str = "control",
    perturbed: str = "stimulated",
    n_degs: int = 100,
) -> HoldOut:
    """Hide one cell type's perturbed cells, as in the trVAE paper's out-of-sample tests.

    Parameters
    ----------
    adata
        All cells, log-normalised expression in ``X``.
    cell_type
        The cell type whose ``perturbed`` cells are held out.
    cell_type_key, condition_key
        ``adata.obs`` columns.
    control, perturbed
        The two conditions.
    n_degs
        Number of top DEGs (:func:`trvae_scvi.metrics.top_degs`) in ``deg_mask``.

    Returns
    -------
    HoldOut
        The task: training cells, the held-out cells and the mean-shift baseline.

    Examples
    --------
    >>> import trvae_scvi
    >>> task = hold_out(trvae_scvi.datasets.kang2018(), "NK")
    >>> task.real.shape, int(task.deg_mask.sum())
    ((87, 6998), 100)

    """
    for key in (cell_type_key, condition_key):
        if key not in adata.obs.columns:
            raise ValueError(f"adata.obs has no column {key!r}; pass the right *_key argument.")
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    if cell_type not in set(types):
        raise ValueError(
            f"cell_type={cell_type!r} is not in adata.obs[{cell_type_key!r}]; choose one of "
            f"{sorted(set(types))}."
        )
    held_out = (types == cell_type) & (conditions == perturbed)
    if held_out.sum() < 2:
        raise ValueError(f"{cell_type!r} has {int(held_out.sum())} {perturbed!r} cells; need 2.")
    train = adata[~held_out].copy()
    train_types, train_conditions = types[~held_out], conditions[~held_out]
    control_indices = np.flatnonzero((train_types == cell_type) & (train_conditions == control))
    reference_indices = np.flatnonzero(train_types != cell_type)
    if len(control_indices) == 0:
        raise ValueError(f"{cell_type!r} has no {control!r} cells to predict from.")
    reference_perturbed = reference_indices[train_conditions[reference_indices] == perturbed]
    reference_control = reference_indices[train_conditions[reference_indices] == control]
    shift = mean_expression(train.X[reference_perturbed]) - mean_expression(
        train.X[reference_control]
    )
    control_cells = _dense(train.X[control_indices])
    degs = top_degs(adata[types == cell_type], condition_key, perturbed, control, n_genes=n_degs)
    return HoldOut(
        train=train,
        control_indices=control_indices,
        reference_indices=reference_indices,
        control=control_cells,
        real=_dense(adata.X[held_out]),
        mean_shift=(control_cells + shift).astype(np.float32),
        deg_mask=np.asarray(adata.var_names.isin(degs)),
    )
