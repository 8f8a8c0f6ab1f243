"""Plots in the scanpy style: each returns its axes, or shows or saves the figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from anndata import AnnData

from trvae_scvi.metrics import linear_r2, mean_expression, variance_expression

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from trvae_scvi.model import TRVAE


def _finish(ax, show: bool | None, save: str | None):
    import matplotlib.pyplot as plt

    if save:
        ax.figure.savefig(save, bbox_inches="tight", dpi=150)
    if show:
        plt.show()
        return None
    return ax


def predicted_vs_real(
    predicted: AnnData,
    real: AnnData,
    statistic: Literal["mean", "var"] = "mean",
    genes: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    layer: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | None = None,
) -> Axes | None:
    """Scatter of per-gene mean (or variance) of real against predicted cells, R² in the title.

    Like scGen's ``reg_mean_plot``/``reg_var_plot``: one dot per gene, the least-squares line,
    and the r² of that line over ``genes`` (all genes by default) in the title.

    Parameters
    ----------
    predicted, real
        AnnData of predicted and real cells over the same genes (e.g. from
        :meth:`trvae_scvi.TRVAE.predict`).
    statistic
        ``"mean"`` or ``"var"``.
    genes
        Genes to plot and score (e.g. the top DEGs); ``None`` for all.
    labels
        Genes to name on the plot (e.g. the top 10 DEGs).
    layer
        Layer of both objects to use instead of ``X``.
    title
        Text before the R² in the title.
    ax
        Matplotlib axes to draw on; a new figure if ``None``.
    show
        Show the figure (and return ``None``).
    save
        Path to save the figure to.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes, or ``None`` if ``show``.

    Examples
    --------
    >>> is_nk = adata.obs.cell_type == "NK"
    >>> control = np.flatnonzero(is_nk & (adata.obs.condition == "control"))
    >>> predicted = model.predict(indices=control, target_condition="stimulated")
    >>> real = adata[is_nk & (adata.obs.condition == "stimulated")]
    >>> ax = trvae_scvi.pl.predicted_vs_real(predicted, real)
    >>> ax.get_title().startswith("R²")
    True

    """
    import matplotlib.pyplot as plt

    if statistic not in ("mean", "var"):
        raise ValueError(f"statistic={statistic!r} is not supported; choose 'mean' or 'var'.")
    if list(predicted.var_names) != list(real.var_names):
        raise ValueError(
            "predicted and real must have the same genes in the same order; subset one to the "
            "other's var_names."
        )
    gene_mask = np.ones(real.n_vars, bool) if genes is None else real.var_names.isin(genes)
    if gene_mask.sum() < 2:
        raise ValueError(f"genes selects {int(gene_mask.sum())} of the genes; select at least 2.")
    summarise = mean_expression if statistic == "mean" else variance_expression
    x = summarise(real.X if layer is None else real.layers[layer])[gene_mask]
    y = summarise(predicted.X if layer is None else predicted.layers[layer])[gene_mask]
    r2 = linear_r2(y, x)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x, y, s=8, alpha=0.6, color="tab:blue", edgecolors="none")
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        line = np.linspace(x.min(), x.max(), 2)
        ax.plot(line, slope * line + intercept, color="tab:red", lw=1)
    names = np.asarray(real.var_names[gene_mask])
    for gene in labels or []:
        hit = np.flatnonzero(names == gene)
        if hit.size:
            ax.annotate(gene, (x[hit[0]], y[hit[0]]), fontsize=7)
    ax.set_xlabel(f"{statistic} of real cells")
    ax.set_ylabel(f"{statistic} of predicted cells")
    ax.set_title(f"{title + ': ' if title else ''}R² = {r2:.3f} ({int(gene_mask.sum())} genes)")
    return _finish(ax, show, save)


def training_curves(
    model: TRVAE,
    ax: Sequence[Axes] | np.ndarray | None = None,
    show: bool | None = None,
    save: str | None = None,
) -> Sequence[Axes] | np.ndarray | None:
    """Reconstruction, KL and MMD per epoch (training, and validation where logged).

    Parameters
    ----------
    model
        A trained :class:`trvae_scvi.TRVAE`.
    ax
        Three matplotlib axes; new ones if ``None``.
    show, save
        As in :func:`predicted_vs_real`.

    Returns
    -------
    Sequence of matplotlib.axes.Axes, numpy.ndarray of them, or None
        The three axes (``ax``, or a new array of them), or ``None`` if ``show``.

    Examples
    --------
    >>> axes = trvae_scvi.pl.training_curves(model)
    >>> len(axes)
    3

    """
    import matplotlib.pyplot as plt

    history = getattr(model, "history", None)
    if not history:
        raise ValueError("model has no training history; train it first (model.train()).")
    if ax is None:
        _, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    for axis, (name, key) in zip(
        ax,
        [("reconstruction", "reconstruction_loss"), ("KL", "kl_local"), ("MMD", "mmd")],
        strict=True,
    ):
        for split in ("train", "validation"):
            column = f"{key}_{split}"
            if column in history:
                values = history[column][column].to_numpy(dtype=float)
                axis.plot(np.arange(1, len(values) + 1), values, label=split)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend(frameon=False)
    _finish(ax[0], False, save)
    if show:
        plt.show()
        return None
    return ax
