"""The prediction methods of :meth:`TRVAE.predict`, one small class each, and their registry.

Every method is fitted on a reference (cells measured in a source and a target condition) and
then maps the cells to predict to expected values in the model's log space
(:meth:`Predictor.transform`). Methods that only change what the decoder decodes also say so
(:meth:`Predictor.decoding`), so that a lone one can be decoded, and drawn, directly. Averaging,
shrinkage and the conversion to the output live in :mod:`._prediction`; adding a method is one
class here and one line in :data:`PREDICTORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from trvae_scvi.nn import neuron_edit

from ._outputs import Cells

REFERENCE_CHUNK = 8192  # reference cells decoded at once by "calibrated"


@dataclass(frozen=True)
class Settings:
    """The checked settings of one ``predict`` call (see its docstring)."""

    methods: tuple[str, ...]
    sample: bool
    shrinkage: float
    calibration_weight: float
    n_neighbors: int | None
    neuron_edit_layer: str
    n_percentiles: int
    zeros: str
    calibration: dict | None = None  # the summary of the calibration that set shrinkage


@dataclass(frozen=True)
class ModelSpace:
    """The model's decoder and log space, as the methods see them.

    The log space is the data's for ``mse`` models and ``log1p(counts / library *
    target_sum)`` for count models.
    """

    decode_loop: Callable[..., np.ndarray]  # TRVAE._decode
    matrix_of: Callable[[AnnData], tuple]  # TRVAE._registered_matrix
    is_count_model: bool
    target_sum: float
    batch_size: int | None

    def decode(
        self, cells: Cells, code: int, *, sample: bool = False, residual: bool = False, **inputs
    ) -> np.ndarray:
        """Decode ``inputs`` (z or y) of ``cells`` with condition ``code``.

        Expected values; count draws with ``sample``; plus ``mse`` cells' residuals with
        ``residual``.
        """
        return self.decode_loop(
            cells["library"],
            code,
            self.batch_size,
            sample=sample,
            residual=cells.get("residual") if residual else None,
            **inputs,
        )

    def log(self, values: np.ndarray, library: torch.Tensor) -> np.ndarray:
        """Values of cells with log library sizes ``library`` in the log space."""
        if not self.is_count_model:
            return values
        return np.log1p(values / np.exp(library.numpy()) * self.target_sum)

    def decoded_log(self, cells: Cells, code: int) -> np.ndarray:
        """``cells``' z decoded with condition ``code``, expected, in the log space."""
        return self.log(self.decode(cells, code, z=cells["z"]), cells["library"])

    def real(self, adata: AnnData, rows: np.ndarray) -> sp.csr_matrix:
        """Real values of cells in the log space, sparse (log1p keeps zeros at 0)."""
        matrix, _ = self.matrix_of(adata)
        values = matrix[np.sort(rows)][np.argsort(np.argsort(rows))]
        values = sp.csr_matrix(
            values.astype(np.float64) if sp.issparse(values) else np.asarray(values, np.float64)
        )
        if self.is_count_model:
            library = np.maximum(np.asarray(values.sum(axis=1)).ravel(), 1.0)
            values = sp.csr_matrix(sp.diags(self.target_sum / library) @ values).log1p()
        return values


@dataclass
class Reference:
    """Reference cells of the source and target conditions, encoded once.

    ``rows``, ``encoded`` and ``types`` are (source, target) pairs: the cells' positions in
    ``adata``, their z, y and library, and their cell types (``None`` without a key).
    ``codes`` are the reference's (source, target) conditions.
    """

    adata: AnnData
    rows: tuple[np.ndarray, np.ndarray]
    codes: tuple[int, int]
    encoded: tuple[Cells, Cells]
    types: tuple[np.ndarray | None, np.ndarray | None]
    _real: tuple[sp.csr_matrix, sp.csr_matrix] | None = field(default=None, repr=False)

    def real(self, space: ModelSpace) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The source and target cells' real values in the log space, read once."""
        if self._real is None:
            self._real = tuple(space.real(self.adata, rows) for rows in self.rows)
        return self._real


class Predictor:
    """A prediction method: ``fit(...)`` on a reference, then ``transform(cells)``."""

    needs_reference = True
    recorded: tuple[str, ...] = ()  # settings written to uns["trVAE_predict"]

    def __init__(self, settings: Settings):
        self.settings = settings

    def fit(
        self, reference: Reference | None, space: ModelSpace, source_code: int, target_code: int
    ) -> Predictor:
        """Learn from ``reference`` how cells of ``source_code`` look in ``target_code``."""
        self.space, self.source_code, self.target_code = space, source_code, target_code
        return self

    def decoding(self, cells: Cells) -> tuple[int, Cells] | None:
        """The condition and the z or y to decode ``cells`` with; ``None`` if not decoded."""
        return None

    def transform(self, cells: Cells) -> np.ndarray:
        """Expected predictions of ``cells`` in the model's log space."""
        code, inputs = self.decoding(cells)
        return self.space.log(self.space.decode(cells, code, **inputs), cells["library"])


class Transfer(Predictor):
    """trVAE's transfer: the cells' z decoded with the target condition."""

    needs_reference = False

    def decoding(self, cells: Cells) -> tuple[int, Cells]:  # noqa: D102
        return self.target_code, {"z": cells["z"]}


class LatentShift(Predictor):
    """scGen's vector arithmetic in z: add the reference's mean change of z, decode."""

    def fit(self, reference, space, source_code, target_code) -> LatentShift:  # noqa: D102
        super().fit(reference, space, source_code, target_code)
        self.shift = _latent_shift(*reference.encoded, *reference.types)
        return self

    def decoding(self, cells: Cells) -> tuple[int, Cells]:  # noqa: D102
        return self.source_code, {"z": cells["z"] + self.shift}


class NeuronEdit(Predictor):
    """Amodio et al.'s percentile map of y (or z) from the reference's source to its target."""

    recorded = ("neuron_edit_layer", "n_percentiles")

    def fit(self, reference, space, source_code, target_code) -> NeuronEdit:  # noqa: D102
        super().fit(reference, space, source_code, target_code)
        layer = self.settings.neuron_edit_layer
        self.source, self.target = (encoded[layer].numpy() for encoded in reference.encoded)
        return self

    def decoding(self, cells: Cells) -> tuple[int, Cells]:  # noqa: D102
        layer = self.settings.neuron_edit_layer
        edited = neuron_edit(
            cells[layer].numpy(), self.source, self.target, self.settings.n_percentiles
        )
        # An edited z is decoded through g1 with the source condition; an edited y is already
        # the target's MMD-layer output.
        code = self.source_code if layer == "z" else self.target_code
        return code, {layer: torch.as_tensor(edited)}


class MeanShift(Predictor):
    """Each cell's own-condition profile plus the reference's real mean change.

    Per cell, in the log space: ``S + (mean X - mean S) + (R_t - R_s)``, with ``S`` the cell
    decoded with its source condition, ``X`` the predicted cells' real values (so that the
    decoder's bias on them cancels) and ``R_s``/``R_t`` the real mean source/target profiles
    of the reference. For ``mse`` models ``mean X - mean S`` is the cells' mean residual,
    which the conversion to the output adds, so it is left out here; count models' cells carry
    ``"decoder_bias"``, ``mean X - mean S`` over all the cells predicted with them. It is the
    shrinkage's target, and ``"calibrated"`` with weight 0.
    """

    def fit(self, reference, space, source_code, target_code) -> MeanShift:  # noqa: D102
        super().fit(reference, space, source_code, target_code)
        self.reference = reference
        self.real_source, self.real_target = reference.real(space)
        return self

    def transform(self, cells: Cells) -> np.ndarray:  # noqa: D102
        own = self.space.decoded_log(cells, self.source_code)
        source_weights, target_weights = self._weights(cells)
        correction = np.asarray(target_weights @ self.real_target) - np.asarray(
            source_weights @ self.real_source
        )
        correction = correction + self._model_correction(cells, own, source_weights)
        if not self.space.is_count_model:
            return own + correction
        return own + cells["decoder_bias"] + correction

    def _weights(self, cells: Cells) -> tuple:
        """How much each reference cell counts for each cell: here all alike."""
        n_source, n_target = (len(rows) for rows in self.reference.rows)
        return np.full((1, n_source), 1 / n_source), np.full((1, n_target), 1 / n_target)

    def _model_correction(self, cells: Cells, own: np.ndarray, source_weights) -> float:
        return 0.0


class Calibrated(MeanShift):
    """trVAE's transfer calibrated on the reference.

    :class:`MeanShift` plus ``weight`` times ``(T - S) - (T_r - S_r)``: the model's change for
    the cell less its change for the reference's source cells (all of them, or each cell's
    ``n_neighbors`` nearest in z, which then also weigh the real reference means).
    """

    recorded = ("calibration_weight", "n_neighbors")

    def _weights(self, cells: Cells) -> tuple:
        if self.settings.n_neighbors is None:
            return super()._weights(cells)
        return tuple(
            _neighbor_weights(cells["z"], encoded["z"], self.settings.n_neighbors)
            for encoded in self.reference.encoded
        )

    def _model_correction(self, cells: Cells, own: np.ndarray, source_weights) -> np.ndarray:
        weight = self.settings.calibration_weight
        if not weight:
            return 0.0
        model_change = self.space.decoded_log(cells, self.target_code) - own
        # The reference's model change, weighted, a chunk of reference cells at a time:
        # decoded whole it would be a dense reference x genes matrix.
        if sp.issparse(source_weights):
            source_weights = source_weights.tocsc()
        source, (ref_source_code, ref_target_code) = (
            self.reference.encoded[0],
            self.reference.codes,
        )
        ref_model_change = 0.0
        for start in range(0, len(self.reference.rows[0]), REFERENCE_CHUNK):
            rows = slice(start, start + REFERENCE_CHUNK)
            chunk = {key: values[rows] for key, values in source.items()}
            change = self.space.decoded_log(chunk, ref_target_code) - self.space.decoded_log(
                chunk, ref_source_code
            )
            ref_model_change = ref_model_change + source_weights[:, rows] @ change
        return weight * (model_change - ref_model_change)


PREDICTORS: dict[str, type[Predictor]] = {
    "calibrated": Calibrated,
    "transfer": Transfer,
    "latent_shift": LatentShift,
    "neuron_edit": NeuronEdit,
}


def _latent_shift(
    source: Cells, target: Cells, source_types: np.ndarray | None, target_types: np.ndarray | None
) -> torch.Tensor:
    """Mean z of the target minus the source cells; over types present in both, if known."""
    if source_types is None:
        return target["z"].mean(0) - source["z"].mean(0)
    shared = sorted(set(source_types) & set(target_types))
    if not shared:
        raise ValueError(
            "No cell type of the reference has cells of both conditions; latent_shift with "
            "cell_type_key needs at least one."
        )
    return torch.stack(
        [
            target["z"][target_types == t].mean(0) - source["z"][source_types == t].mean(0)
            for t in shared
        ]
    ).mean(0)


def _neighbor_weights(query: torch.Tensor, reference: torch.Tensor, k: int) -> sp.csr_matrix:
    """Rows of ``1 / k`` on each query cell's ``k`` nearest reference cells (Euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(int(k), len(reference))
    search = NearestNeighbors(n_neighbors=k).fit(reference.numpy())
    _, nearest = search.kneighbors(query.numpy())
    rows = np.repeat(np.arange(len(query)), k)
    return sp.csr_matrix(
        (np.full(rows.size, 1 / k), (rows, nearest.ravel())), shape=(len(query), len(reference))
    )
