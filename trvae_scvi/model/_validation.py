"""Checks of user input that fail early, naming the argument, the bad value and the fix."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scvi import REGISTRY_KEYS

logger = logging.getLogger(__name__)

# Joins the values of several condition columns into one condition, e.g. "101_stim".
COMBINED_SEPARATOR = "_"
# Rows read at a time, so that checks never densify (or load, when backed) the whole matrix.
_CHUNK_ROWS = 10_000


def row_chunks(matrix, rows: np.ndarray | None = None) -> Iterator:
    """Yield row blocks (dense or sparse) of an in-memory or backed matrix."""
    rows = np.arange(matrix.shape[0]) if rows is None else np.sort(np.asarray(rows))
    for start in range(0, len(rows), _CHUNK_ROWS):
        block = rows[start : start + _CHUNK_ROWS]
        contiguous = block[-1] - block[0] + 1 == len(block)
        yield matrix[block[0] : block[-1] + 1] if contiguous else matrix[block]


def _stored_values(block) -> np.ndarray:
    return np.asarray(block.data if sp.issparse(block) else block)


@dataclass
class MatrixScan:
    """What one pass over a matrix's rows found (see :func:`scan_matrix`)."""

    finite: bool
    minimum: float
    integer: bool
    gene_sums: np.ndarray
    cell_sums: np.ndarray


def scan_matrix(matrix, rows: np.ndarray | None = None) -> MatrixScan:
    """One pass over the (selected rows of the) matrix, in row blocks, for every check."""
    finite, integer, minimum = True, True, np.inf
    gene_sums = np.zeros(matrix.shape[1])
    cell_sums = []
    for block in row_chunks(matrix, rows):
        values = _stored_values(block)
        finite = finite and bool(np.isfinite(values).all())
        if values.size:
            minimum = min(minimum, float(values.min()))
        integer = integer and bool(np.array_equal(values, np.round(values)))
        gene_sums += np.asarray(block.sum(axis=0, dtype=np.float64)).ravel()
        cell_sums.append(np.asarray(block.sum(axis=1, dtype=np.float64)).ravel())
    return MatrixScan(finite, minimum, integer, gene_sums, np.concatenate(cell_sums))


def check_matrix(scan: MatrixScan, where: str, recon_loss: str | None = None) -> None:
    """Raise on NaN/inf, and on non-counts for the count likelihoods."""
    if not scan.finite:
        raise ValueError(
            f"{where} contains NaN or infinite values. Remove or impute them first (e.g. "
            "keep cells with finite values: "
            "`adata = adata[np.isfinite(np.asarray(adata.X.sum(axis=1))).ravel()]`)."
        )
    if recon_loss in ("nb", "zinb") and (scan.minimum < 0 or not scan.integer):
        raise ValueError(
            f"recon_loss={recon_loss!r} needs non-negative integer counts, but {where} holds "
            "negative or non-integer values. Register raw counts (e.g. "
            "`TRVAE.setup_anndata(adata, condition_key=..., layer='counts')`) or use "
            "recon_loss='mse' for log-normalised data."
        )


def check_choice(argument: str, value, choices: Sequence) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{argument}={value!r} is not supported; choose one of {list(choices)}.")


def check_not_view(adata: AnnData) -> None:
    """Raise on a view: registration writes to ``adata``, which would turn a view into a copy."""
    if adata.is_view:
        raise ValueError(
            f"adata is a view of another AnnData ({adata.n_obs} x {adata.n_vars} cells x genes, "
            "e.g. adata[mask]); registration writes to it. Pass a copy: "
            "`adata = adata[mask].copy()`."
        )


def cell_type_column(adata: AnnData, key: str) -> np.ndarray:
    """Each cell's type (``adata.obs[key]``) as strings; ``key`` names ``cell_type_key``."""
    if key not in adata.obs.columns:
        raise ValueError(
            f"cell_type_key={key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}). Pass the column with each cell's type."
        )
    return adata.obs[key].astype(str).to_numpy()


def combine_condition_columns(adata: AnnData, condition_key) -> str | None:
    """The obs column of the condition; several columns are combined into a new one.

    ``condition_key=["donor", "stimulus"]`` writes ``adata.obs["donor_stimulus"]`` with values
    like ``"101_stim"`` (a column of that name must not exist with other values).
    """
    check_not_view(adata)
    if condition_key is None or isinstance(condition_key, str):
        return condition_key
    keys = [str(key) for key in condition_key]
    missing = [key for key in keys if key not in adata.obs.columns]
    if not keys or missing:
        raise ValueError(
            f"condition_key={condition_key!r}: {missing or 'no column'} not in adata.obs "
            f"(columns: {list(adata.obs.columns)}). Pass one column or a list of columns."
        )
    if len(keys) == 1:
        return keys[0]
    name = COMBINED_SEPARATOR.join(keys)
    values = adata.obs[keys].astype(str).agg(COMBINED_SEPARATOR.join, axis=1)
    if name in adata.obs.columns:
        if not (adata.obs[name].astype(str) == values).all():
            raise ValueError(
                f"condition_key={keys!r} combines into adata.obs[{name!r}], which exists with "
                "other values. Rename or drop that column."
            )
        return name
    adata.obs[name] = values.astype("category")
    logger.info("Wrote adata.obs[%r] (the combined condition).", name)
    return name


def additive_condition_design(categories: Sequence[str], condition_key) -> np.ndarray:
    """Each combined condition's code in each of its columns, for an additive encoding.

    Parameters
    ----------
    categories
        The registered (combined) conditions, e.g. ``["101_control", "101_stimulated"]``.
    condition_key
        The columns given to ``setup_anndata``; at least two.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(categories), n_columns)``; a column's codes follow its sorted values.

    """
    keys = [condition_key] if isinstance(condition_key, str) else list(condition_key or [])
    if len(keys) < 2:
        raise ValueError(
            f"condition_encoding='additive' needs conditions from several columns; the model's "
            f"data was set up with condition_key={condition_key!r}. Pass a list of columns to "
            "setup_anndata, e.g. condition_key=['donor', 'stimulus'], or use "
            "condition_encoding='joint'."
        )
    parts = [str(category).split(COMBINED_SEPARATOR) for category in categories]
    ambiguous = [c for c, p in zip(categories, parts, strict=True) if len(p) != len(keys)]
    if ambiguous:
        raise ValueError(
            f"condition_encoding='additive' cannot split the conditions {ambiguous[:3]} into "
            f"the values of {keys}: a value contains {COMBINED_SEPARATOR!r}. Replace it in "
            "those columns, or use condition_encoding='joint'."
        )
    columns = np.array(parts, dtype=object)
    return np.stack(
        [np.unique(column, return_inverse=True)[1] for column in columns.T], axis=1
    ).astype(np.int64)


def validate_setup(adata: AnnData, condition_key: str | None, layer: str | None) -> None:
    """Checks of :meth:`TRVAE.setup_anndata`."""
    if condition_key is None:
        raise ValueError(
            "condition_key is required: pass the adata.obs column with each cell's condition, "
            "e.g. TRVAE.setup_anndata(adata, condition_key='condition')."
        )
    if condition_key not in adata.obs.columns:
        raise ValueError(
            f"condition_key={condition_key!r} is not a column of adata.obs. Available columns: "
            f"{list(adata.obs.columns)}."
        )
    if layer is not None and layer not in adata.layers:
        raise ValueError(
            f"layer={layer!r} is not in adata.layers (available: {list(adata.layers.keys())}). "
            "Pass one of them, or layer=None for adata.X."
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata has shape {adata.shape}; it needs cells and genes.")
    conditions = adata.obs[condition_key]
    if conditions.isna().any():
        raise ValueError(
            f"condition_key={condition_key!r}: adata.obs[{condition_key!r}] has "
            f"{int(conditions.isna().sum())} missing values. "
            "Give every cell a condition or drop those cells."
        )
    n_conditions = conditions.nunique()
    if n_conditions < 2:
        raise ValueError(
            f"condition_key={condition_key!r}: adata.obs[{condition_key!r}] has {n_conditions} "
            "condition(s) "
            f"({list(conditions.unique())}); trVAE needs at least two to learn a transfer."
        )
    if hasattr(conditions, "cat"):
        empty = [c for c, n in conditions.value_counts(sort=False).items() if n == 0]
        if empty:
            raise ValueError(
                f"condition_key={condition_key!r}: adata.obs[{condition_key!r}] has categories "
                f"without cells: {empty}. The model "
                "cannot learn a condition it never sees; drop them with "
                f"`adata.obs[{condition_key!r}] = "
                f"adata.obs[{condition_key!r}].cat.remove_unused_categories()`."
            )
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError("adata.X is None; pass the layer that holds the expression.")
    check_matrix(scan_matrix(matrix), "adata.X" if layer is None else f"adata.layers[{layer!r}]")


def check_same_genes(saved_var_names: np.ndarray, adata: AnnData) -> None:
    """Raise unless ``adata`` has the model's genes in the model's order."""
    var_names = np.asarray(adata.var_names).astype(str)
    saved_var_names = np.asarray(saved_var_names).astype(str)
    if np.array_equal(saved_var_names, var_names):
        return
    missing = [str(g) for g in np.setdiff1d(saved_var_names, var_names)[:5]]
    extra = [str(g) for g in np.setdiff1d(var_names, saved_var_names)[:5]]
    raise ValueError(
        f"adata has {len(var_names)} genes but the model was trained on "
        f"{len(saved_var_names)} genes (missing: {missing}, extra: {extra}, or a different "
        "order). Subset and order the genes as in the training data: "
        "`adata = adata[:, training_var_names].copy()`."
    )


def check_known_conditions(adata: AnnData, condition_key: str, known: np.ndarray) -> None:
    """Raise if ``adata`` lacks the condition column or has conditions the model never saw."""
    if condition_key not in adata.obs.columns:
        raise ValueError(
            f"adata.obs has no column {condition_key!r}, the condition_key the model was set up "
            f"with. Add it (values among {list(known)})."
        )
    unseen = sorted(set(adata.obs[condition_key].astype(str)) - set(np.asarray(known).astype(str)))
    if unseen:
        raise ValueError(
            f"adata.obs[{condition_key!r}] has conditions {unseen} that the model has not "
            f"seen (known: {list(known)}). Drop those cells, or map them as new conditions with "
            "TRVAE.load_query_data."
        )


def check_indices(
    adata: AnnData, indices: Sequence[int] | None, argument: str = "indices"
) -> np.ndarray:
    """Integer positions of the selected cells; raise on an empty or out-of-range selection.

    ``argument`` is the name of the parameter the selection came from, for the messages.
    """
    if indices is None:
        indices = np.arange(adata.n_obs)
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(
            f"{argument} must be a one-dimensional list of positions or a boolean mask; got an "
            f"array of shape {indices.shape}. Pass e.g. np.flatnonzero(mask)."
        )
    if indices.dtype == bool:
        if indices.shape[0] != adata.n_obs:
            raise ValueError(
                f"{argument} is a boolean mask of length {indices.shape[0]}, but adata has "
                f"{adata.n_obs} cells."
            )
        indices = np.flatnonzero(indices)
    if indices.size == 0:
        raise ValueError(
            f"The selection is empty ({argument} selects no cells, or adata has 0 cells). "
            "Select at least one cell."
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"{argument} must be integer positions or a boolean mask, got dtype {indices.dtype}."
        )
    if indices.min() < 0 or indices.max() >= adata.n_obs:
        raise ValueError(
            f"{argument} must lie in [0, {adata.n_obs}); got min {indices.min()} and max "
            f"{indices.max()}."
        )
    return indices


def check_can_store(
    adata: AnnData,
    attr: str,
    key: str,
    add_to_adata: bool,
    overwrite: bool,
    indices: np.ndarray,
) -> None:
    """Raise if a result cannot be written to ``adata.<attr>[key]``."""
    if not add_to_adata:
        return
    if len(indices) != adata.n_obs:
        raise ValueError(
            f"add_to_adata=True needs every cell of adata, but indices selects {len(indices)} of "
            f"{adata.n_obs}. Drop indices, or use the returned array."
        )
    if key in getattr(adata, attr) and not overwrite:
        raise ValueError(
            f"adata.{attr}[{key!r}] exists already. Pass overwrite=True to replace it, or "
            "another key."
        )


def check_model_settings(
    hidden_sizes: Sequence[int],
    n_latent: int,
    eta: float,
    alpha: float,
    beta: float,
    kernel_widths: Sequence[float],
) -> None:
    """Raise on sizes and weights of :class:`~trvae_scvi.TRVAE` that cannot build a model."""
    if len(hidden_sizes) == 0 or any(int(h) < 1 for h in hidden_sizes):
        raise ValueError(
            f"hidden_sizes={tuple(hidden_sizes)!r} must be a non-empty list of positive "
            "widths, e.g. (800, 800, 128)."
        )
    if n_latent < 1:
        raise ValueError(f"n_latent={n_latent!r} must be a positive integer, e.g. 20.")
    if eta <= 0:
        raise ValueError(f"eta={eta!r} must be positive: it weighs the reconstruction.")
    if alpha < 0 or beta < 0:
        raise ValueError(
            f"alpha={alpha!r} and beta={beta!r} must be non-negative (beta=0 is a CVAE)."
        )
    if len(kernel_widths) == 0 or any(w <= 0 for w in kernel_widths):
        raise ValueError(
            f"kernel_widths={tuple(kernel_widths)!r} must be a non-empty list of positive "
            "squared bandwidths."
        )


def check_against_registry(adata: AnnData, registry: dict, extend_categories: bool) -> None:
    """Genes of a saved model, and (unless new conditions are mapped) its conditions."""
    fields = registry["field_registries"]
    check_same_genes(fields[REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"], adata)
    if not extend_categories:
        check_known_conditions(
            adata,
            fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"]["original_key"],
            np.asarray(fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"]),
        )


def check_image_shape(image_shape, n_vars: int, recon_loss: str) -> tuple[int, int, int]:
    """Raise unless ``image_shape`` describes the rows of ``X`` as images a conv net can take."""
    if recon_loss != "mse":
        raise ValueError(
            f"architecture='conv' models pixel values with recon_loss='mse'; got "
            f"recon_loss={recon_loss!r}, a likelihood for counts. Pass recon_loss='mse'."
        )
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(
            f"architecture='conv' needs image_shape=(channels, height, width); got "
            f"{image_shape!r}."
        )
    channels, height, width = (int(size) for size in image_shape)
    if channels * height * width != n_vars:
        raise ValueError(
            f"image_shape={tuple(image_shape)!r} holds {channels * height * width} values, but "
            f"X has {n_vars} columns per cell. Pass the shape the rows of X were flattened from."
        )
    if height % 4 or width % 4:
        raise ValueError(
            f"image_shape={tuple(image_shape)!r}: height and width must be divisible by 4 (two "
            "stride-2 convolutions); pad or resize the images."
        )
    return channels, height, width
