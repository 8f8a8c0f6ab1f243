"""Scores of predicted against real cells (pure functions on AnnData and arrays)."""

from __future__ import annotations

import numpy as np
import scanpy as sc
from anndata import AnnData
from scipy import stats


def mean_expression(matrix) -> np.ndarray:
    """Per-gene mean of a dense or sparse ``(n_cells, n_genes)`` matrix.

    Examples
    --------
    >>> mean_expression(np.array([[0.0, 2.0], [2.0, 4.0]]))
    array([1., 3.])

    """
    if matrix.shape[0] == 0:
        raise ValueError("Cannot take the mean of 0 cells; the selection is empty.")
    return np.asarray(matrix.mean(axis=0), dtype=np.float64).ravel()


def r2_of_means(predicted, real) -> float:
    """r² of the least-squares line between per-gene means of predicted and real cells.

    This is the score of the trVAE and scGen papers (the squared Pearson correlation of the
    per-gene means).

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes.

    Returns
    -------
    r² in ``[0, 1]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.random((50, 20))
    >>> round(r2_of_means(real, real), 6)
    1.0

    """
    if predicted.shape[1] != real.shape[1]:
        raise ValueError(
            f"predicted has {predicted.shape[1]} genes and real has {real.shape[1]}; score the "
            "same genes."
        )
    if predicted.shape[1] < 2:
        raise ValueError("r² needs at least two genes.")
    predicted_mean, real_mean = mean_expression(predicted), mean_expression(real)
    if np.ptp(predicted_mean) == 0 or np.ptp(real_mean) == 0:
        return 0.0
    return float(stats.linregress(real_mean, predicted_mean).rvalue ** 2)


def top_degs(
    adata: AnnData,
    groupby: str,
    group: str,
    reference: str,
    n_genes: int = 100,
    layer: str | None = None,
) -> list[str]:
    """Top differentially expressed genes between two groups of real cells.

    Genes are ranked with scanpy's :func:`~scanpy.tl.rank_genes_groups` (Wilcoxon, ``group``
    against ``reference``) and the ``n_genes`` with the largest absolute z-score are kept, so
    up- and down-regulated genes both count. ``adata`` is not modified.

    Parameters
    ----------
    adata
        Real cells, log-normalised expression in ``X`` or ``layer``.
    groupby
        ``adata.obs`` column with the groups (e.g. the condition).
    group, reference
        The perturbed and the control group.
    n_genes
        How many genes to return.
    layer
        Layer to test instead of ``X``.

    Returns
    -------
    Gene names, most significant first.

    Examples
    --------
    >>> degs = top_degs(nk_cells, "condition", "stimulated", "control")  # doctest: +SKIP

    """
    for value, argument in ((group, "group"), (reference, "reference")):
        n_cells = int((adata.obs[groupby] == value).sum())
        if n_cells < 2:
            raise ValueError(
                f"{argument}={value!r} has {n_cells} cells in adata.obs[{groupby!r}]; the test "
                "needs at least 2."
            )
    mask = adata.obs[groupby].isin([group, reference]).to_numpy()
    subset = AnnData(
        X=(adata.X if layer is None else adata.layers[layer])[mask],
        obs=adata.obs.loc[mask, [groupby]].astype(str).astype("category"),
        var=adata.var[[]],
    )
    sc.tl.rank_genes_groups(
        subset, groupby, groups=[group], reference=reference, method="wilcoxon", n_genes=None
    )
    result = subset.uns["rank_genes_groups"]
    names = np.asarray(result["names"][group]).astype(str)
    scores = np.asarray(result["scores"][group], dtype=np.float64)
    order = np.argsort(-np.abs(scores), kind="stable")
    return list(names[order[:n_genes]])
