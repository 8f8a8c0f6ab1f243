"""Scores of predicted against real cells (pure functions on AnnData and arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scanpy as sc
import scipy.sparse as sp
import torch
from anndata import AnnData
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Callable


def mean_expression(matrix: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Per-gene mean of a dense or sparse ``(n_cells, n_genes)`` matrix.

    Parameters
    ----------
    matrix
        ``(n_cells, n_genes)`` matrix, dense or sparse, with at least one cell.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` float64 means.

    Examples
    --------
    >>> mean_expression(np.array([[0.0, 2.0], [2.0, 4.0]]))
    array([1., 3.])

    """
    if matrix.shape[0] == 0:
        raise ValueError("Cannot take the mean of 0 cells; the selection is empty.")
    return np.asarray(matrix.mean(axis=0), dtype=np.float64).ravel()


def r2_of_means(predicted: np.ndarray | sp.spmatrix, real: np.ndarray | sp.spmatrix) -> float:
    """r² of the least-squares line between per-gene means of predicted and real cells.

    This is the score of the trVAE and scGen papers (the squared Pearson correlation of the
    per-gene means).

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes.

    Returns
    -------
    float
        r² in ``[0, 1]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.random((50, 20))
    >>> round(r2_of_means(real, real), 6)
    1.0

    """
    _check_same_genes(predicted, real)
    return linear_r2(mean_expression(predicted), mean_expression(real))


def variance_expression(matrix: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Per-gene variance (population, ``ddof=0``) of a dense or sparse matrix.

    Parameters
    ----------
    matrix
        ``(n_cells, n_genes)`` matrix, dense or sparse, with at least one cell.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` float64 variances, clipped at 0.

    Examples
    --------
    >>> variance_expression(np.array([[0.0, 2.0], [2.0, 2.0]]))
    array([1., 0.])

    """
    mean = mean_expression(matrix)
    mean_of_squares = mean_expression(
        matrix.multiply(matrix) if sp.issparse(matrix) else matrix**2
    )
    return np.maximum(mean_of_squares - mean**2, 0.0)


def linear_r2(predicted: np.ndarray, real: np.ndarray) -> float:
    """r² of the least-squares line between two vectors; 0 when either is constant.

    Parameters
    ----------
    predicted, real
        Vectors of the same length (e.g. per-gene means).

    Returns
    -------
    float
        r² in ``[0, 1]``.

    Examples
    --------
    >>> round(linear_r2(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])), 3)
    0.996

    """
    if np.ptp(predicted) == 0 or np.ptp(real) == 0:
        return 0.0
    # r² is scale-free; rescaling to [0, 1] keeps tiny (subnormal) values from underflowing
    # to a zero variance inside linregress, which would give NaN.
    scaled = [(v - np.min(v)) / np.ptp(v) for v in (real, predicted)]
    return float(stats.linregress(*scaled).rvalue ** 2)


def _check_same_genes(predicted, real) -> None:
    if predicted.shape[1] != real.shape[1]:
        raise ValueError(
            f"predicted has {predicted.shape[1]} genes and real has {real.shape[1]}; score the "
            "same genes."
        )
    if predicted.shape[1] < 2:
        raise ValueError("r² needs at least two genes.")


def r2_of_variances(predicted: np.ndarray | sp.spmatrix, real: np.ndarray | sp.spmatrix) -> float:
    """r² of the least-squares line between per-gene variances of predicted and real cells.

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes.

    Returns
    -------
    float
        r² in ``[0, 1]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.random((50, 20))
    >>> round(r2_of_variances(2 * real, real), 6)
    1.0

    """
    _check_same_genes(predicted, real)
    return linear_r2(variance_expression(predicted), variance_expression(real))


def change_correlation(
    predicted: np.ndarray | sp.spmatrix,
    real: np.ndarray | sp.spmatrix,
    control: np.ndarray | sp.spmatrix,
) -> float:
    """Pearson correlation of the predicted and the real change from control.

    The change is ``mean(predicted) - mean(control)`` against ``mean(real) - mean(control)``,
    per gene. Unlike the R² of means, leaving the control cells unchanged scores 0 here.

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes.
    control
        ``(n_cells, n_genes)`` matrix of the control cells, over the same genes.

    Returns
    -------
    float
        Pearson correlation in ``[-1, 1]``; 0 when either change is the same for every gene.

    Examples
    --------
    >>> control = np.zeros((4, 3))
    >>> real = np.array([[1.0, 2.0, 0.0]] * 4)
    >>> round(change_correlation(real * 0.5, real, control), 6)
    1.0

    """
    _check_same_genes(predicted, real)
    base = mean_expression(control)
    predicted_change = mean_expression(predicted) - base
    real_change = mean_expression(real) - base
    if np.ptp(predicted_change) == 0 or np.ptp(real_change) == 0:
        return 0.0
    return float(stats.pearsonr(predicted_change, real_change).statistic)


def direction_accuracy(
    predicted: np.ndarray | sp.spmatrix,
    real: np.ndarray | sp.spmatrix,
    control: np.ndarray | sp.spmatrix,
) -> float:
    """Fraction of genes whose predicted change from control has the real change's sign.

    A gene counts as right when the sign of ``mean(predicted) - mean(control)`` equals that of
    ``mean(real) - mean(control)`` (a zero change has sign 0).

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes.
    control
        ``(n_cells, n_genes)`` matrix of the control cells, over the same genes.

    Returns
    -------
    float
        Fraction in ``[0, 1]``.

    Examples
    --------
    >>> control = np.zeros((2, 4))
    >>> real = np.array([[1.0, -1.0, 1.0, -1.0]] * 2)
    >>> direction_accuracy(np.array([[1.0, -1.0, -1.0, -1.0]] * 2), real, control)
    0.75

    """
    _check_same_genes(predicted, real)
    base = mean_expression(control)
    predicted_sign = np.sign(mean_expression(predicted) - base)
    real_sign = np.sign(mean_expression(real) - base)
    return float(np.mean(predicted_sign == real_sign))


def bootstrap(
    score: Callable[..., float],
    predicted: np.ndarray | sp.spmatrix,
    real: np.ndarray | sp.spmatrix,
    *args: np.ndarray | sp.spmatrix,
    n_resamples: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and standard deviation of ``score`` over resamples of the cells.

    Cells of ``predicted`` and ``real`` (and of any further matrices in ``args``, e.g. the
    control cells) are drawn with replacement, each set on its own, ``n_resamples`` times.

    Parameters
    ----------
    score
        A function of ``(predicted, real, *args)`` such as :func:`r2_of_means`.
    predicted, real, *args
        Cell-by-gene matrices.
    n_resamples
        Number of resamples.
    seed
        Seed of the resampling.

    Returns
    -------
    tuple[float, float]
        ``(mean, sd)`` of the score over the resamples (``sd`` with ``ddof=0``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.random((40, 10))
    >>> mean, sd = bootstrap(r2_of_means, real, real, n_resamples=10)
    >>> 0 <= mean <= 1 and sd >= 0
    True

    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r} must be at least 1.")
    rng = np.random.default_rng(seed)
    matrices = (predicted, real, *args)
    values = [
        score(*(m[rng.integers(0, m.shape[0], m.shape[0])] for m in matrices))
        for _ in range(n_resamples)
    ]
    return float(np.mean(values)), float(np.std(values))


def energy_distance(
    predicted: np.ndarray | sp.spmatrix,
    real: np.ndarray | sp.spmatrix,
    n_pcs: int = 30,
    max_cells: int = 2000,
    seed: int = 0,
) -> float:
    """Energy distance between predicted and real cells in the PCA space of the real cells.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with Euclidean distances between cells projected on
    the first ``n_pcs`` principal components of the real cells; 0 when the two samples have the
    same distribution. At most ``max_cells`` cells of each set are used (drawn with ``seed``).

    Parameters
    ----------
    predicted, real
        ``(n_cells, n_genes)`` matrices (dense or sparse) over the same genes, at least 2 cells
        each.
    n_pcs
        Number of principal components of the real cells to project on.
    max_cells
        Most cells of each set to use; larger sets are subsampled without replacement.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        The energy distance (not negative up to rounding; 0 for identical distributions).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(200, 5))
    >>> energy_distance(real + 3.0, real, n_pcs=5) > energy_distance(real + 0.1, real, n_pcs=5)
    True

    """
    from scipy.spatial.distance import cdist

    _check_same_genes(predicted, real)
    rng = np.random.default_rng(seed)

    def dense_sample(matrix):
        rows = np.arange(matrix.shape[0])
        if len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        sample = matrix[rows]
        return np.asarray(sample.toarray() if sp.issparse(sample) else sample, dtype=np.float64)

    x, y = dense_sample(predicted), dense_sample(real)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("energy_distance needs at least 2 predicted and 2 real cells.")
    center = y.mean(0)
    _, _, components = np.linalg.svd(y - center, full_matrices=False)
    basis = components[: min(n_pcs, components.shape[0])].T
    x, y = (x - center) @ basis, (y - center) @ basis
    return float(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())


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
    list[str]
        Gene names, largest absolute z-score first.

    Examples
    --------
    >>> nk_cells = adata[adata.obs.cell_type == "NK"]
    >>> degs = top_degs(nk_cells, "condition", "stimulated", "control", n_genes=10)
    >>> len(degs), "ISG15" in degs
    (10, True)

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
    # scanpy's Wilcoxon test runs numba, which can change torch's thread count: restore it.
    threads = torch.get_num_threads()
    try:
        sc.tl.rank_genes_groups(
            subset, groupby, groups=[group], reference=reference, method="wilcoxon", n_genes=None
        )
    finally:
        torch.set_num_threads(threads)
    ranked = sc.get.rank_genes_groups_df(subset, group)
    order = np.argsort(-np.abs(ranked["scores"].to_numpy(dtype=np.float64)), kind="stable")
    return list(ranked["names"].astype(str).to_numpy()[order[:n_genes]])
