"""TRVAE.predict: one small function per algorithm around the shared encoding and decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial

from trvae_scvi.nn import neuron_edit

from ._outputs import Cells
from ._validation import check_choice, check_indices

Method = Literal["neuron_edit", "calibrated", "transfer", "latent_shift"]
METHODS = ("calibrated", "transfer", "latent_shift", "neuron_edit")
# Chosen on the tuning tasks of benchmarks/tune_defaults.py (see docs/method.md), per form: the
# average was screened on log data only, so count models keep NeuronEdit alone.
DEFAULT_METHODS = {"mse": ("neuron_edit", "calibrated"), "counts": ("neuron_edit",)}
DEFAULT_CALIBRATION_WEIGHT = 1.0
DEFAULT_NEIGHBORS = None
DEFAULT_NEURON_EDIT_SHRINKAGE = 0.25
REFERENCE_CHUNK = 8192  # reference cells decoded at once by "calibrated"


class PredictionMixin:
    """``predict`` of TRVAE, with the reference cells its methods need."""

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        target_condition: str | Sequence[str] | None = None,
        source_condition: str | Sequence[str] | None = None,
        method: Method | Sequence[Method] | None = None,
        reference_indices: Sequence[int] | None = None,
        cell_type_key: str | None = None,
        reference_conditions: Sequence | None = None,
        calibration_weight: float = DEFAULT_CALIBRATION_WEIGHT,
        n_neighbors: int | None = DEFAULT_NEIGHBORS,
        neuron_edit_layer: Literal["y", "z"] = "y",
        n_percentiles: int = 100,
        shrinkage: float | None = None,
        sample: bool = True,
        target_sum: float | None = None,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predict how cells would look in ``target_condition``.

        ``method`` chooses how, always with this model's encoder and decoder, so that only the
        method differs; several methods average their expected predictions (in the model's log
        space, before any draw):

        - ``"neuron_edit"`` (Amodio et al.): map each unit of the first decoder
          layer ``y`` (``neuron_edit_layer="y"``) or of z with the percentile map from the
          reference's source cells to its target cells (:func:`trvae_scvi.nn.neuron_edit`),
          then decode (an edited z with the source condition).
        - ``"calibrated"``: trVAE's transfer, calibrated on reference cells measured in both
          conditions. The prediction is each cell's profile in its own condition, plus the
          reference's real mean change, plus ``calibration_weight`` times how much the
          model's change for this cell differs from its change for the reference (so the
          model's error on the reference cancels). Weight 0 is the mean-shift baseline
          (denoised); 1 is the transfer with the model's mean error on the reference removed.
        - ``"transfer"`` (trVAE's): encode each cell with its own condition (or
          ``source_condition``), decode with ``target_condition``. The published output,
          without the decoder's error below, is :meth:`get_corrected_expression`.
        - ``"latent_shift"``: vector arithmetic in z, as scGen does in its unconditional VAE:
          add the reference's mean z of the target minus the source condition to each cell's
          z and decode with the source condition. With ``cell_type_key`` the mean is balanced
          over cell types (each type present in both conditions weighs the same, as scGen's
          balancing does); otherwise it is over cells.

        ``"latent_shift"`` and ``neuron_edit_layer="z"`` move z, so they need a z that carries
        the condition: with the default ``mmd_on="z"`` the MMD removes it there and they leave
        the cells nearly unchanged. Use them with ``mmd_on="y"``.

        The defaults were chosen by ``benchmarks/tune_defaults.py`` on tuning tasks only: of
        the candidates whose predictions beat the mean-shift baseline on the most tuning tasks,
        on both R² of the top-100-DEG means and the change correlation, the one with the best
        average of the two (``docs/benchmarks.md``). For ``"mse"`` models that is the average
        of ``"neuron_edit"`` on ``y`` and ``"calibrated"``, shrunk by a quarter toward the
        reference's measured change, with draws; for count models, where only
        ``"neuron_edit"`` was screened, ``"neuron_edit"`` alone with the same shrinkage and
        draws.

        All but ``"transfer"`` need reference cells of the source and target conditions (of
        each source condition, when the cells have several).

        Parameters
        ----------
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to transform, e.g. the control cells of a held-out cell type.
        target_condition
            Condition to predict; with several condition columns, the combined value or the
            tuple of the columns' values (see :meth:`setup_anndata`).
        source_condition
            Condition to encode with, for every cell; ``None`` uses each cell's own.
        method
            ``"neuron_edit"``, ``"calibrated"``, ``"transfer"`` or ``"latent_shift"``, or a
            sequence of them to average. ``None``: ``("neuron_edit", "calibrated")`` for
            ``"mse"`` models, ``"neuron_edit"`` for count models.
        reference_indices
            For the reference-based methods: positions in ``adata`` of the cells whose source
            and target conditions define the shift or the map (e.g. the other cell types).
            ``None``: the model's own training cells, less the predicted cells (by
            ``obs_names``; all of them if that leaves no cell of the source or the target
            condition, as when every cell of a condition is predicted) and, with
            ``cell_type_key``, less every cell of the predicted types. Never the other cells
            of a new ``adata``, which may hold the real target-condition cells of the very
            type being predicted.
        cell_type_key
            Column of ``obs`` (in ``adata`` and the model's AnnData) with each cell's type, or
            any grouping whose response is predicted (patient, study). Keeps the predicted
            types out of the reference (a reference holding target-condition cells of a
            predicted type is refused) and balances ``"latent_shift"`` over types.
        reference_conditions
            ``(source, target)`` conditions of the reference cells, when the measured
            response to learn from is between other conditions than the prediction's: e.g.
            with conditions donor x stimulus, another donor's control and stimulated cells
            (all its cell types, the predicted ones included: they are not the held-out
            cells). ``None``: the prediction's own source and target conditions.
        calibration_weight
            Weight of the model's own cell-specific change in ``"calibrated"``, between 0 and
            1 (see ``docs/method.md`` for how the default was chosen).
        n_neighbors
            ``"calibrated"``: take each cell's reference change (real, and the model's) from
            its ``n_neighbors`` nearest reference cells of each condition in z, instead of
            from the whole reference, so that a cell type unlike most of the reference is
            calibrated on the cells most like it. ``None`` uses the whole reference.
        neuron_edit_layer
            Layer edited by ``"neuron_edit"``: ``"y"`` (MMD layer) or ``"z"``.
        n_percentiles
            Percentiles of the NeuronEdit map.
        shrinkage
            Fraction, between 0 and 1, of each cell's predicted change replaced by the
            reference's measured mean change: the prediction is ``(1 - shrinkage)`` times the
            method's plus ``shrinkage`` times ``"calibrated"`` with ``calibration_weight=0``
            (each cell plus the reference's real mean change), mixed in the model's log space
            before any draw. It guards against a model whose change is wrong for a cell type
            unlike the reference. ``None``: 0.25 when ``method`` includes ``"neuron_edit"``
            (chosen on the tuning tasks), else 0 (``"calibrated"`` has
            ``calibration_weight``; with ``shrinkage > 0``, ``"transfer"`` needs reference
            cells too).
        sample
            ``True`` (the default) gives each cell its own variation instead of its expected
            value, whose per-gene variance is too small. Count models draw (torch's random
            state, set by ``scvi.settings.seed``): from the model's likelihood for one method
            without shrinkage, otherwise from a negative binomial around the expected counts
            with the target condition's dispersion (a ``"zinb"`` model's zero inflation is not
            drawn again). Count draws move the per-gene means of the log-normalised values
            (Jensen's inequality; they still beat expected values on the count form of the
            tuning tasks). ``"mse"`` models draw nothing: they keep the decoder's error on the
            predicted cells, their residual ``x - g(z, s)`` from the reconstruction in the
            condition they were encoded with, and add each cell's own residual
            (deterministic; nothing is clipped), or with ``sample=False`` its per-gene mean
            over the predicted cells of the same source condition, so both have the same means.
        target_sum
            Count models: total counts per cell of ``layers["log_normalized"]``; ``None`` uses
            the median library size of the model's training cells.
        batch_size
            Cells per mini-batch.

        Returns
        -------
        anndata.AnnData
            The predicted cells, with the same ``var_names``; ``obs`` a copy of the cells'
            ``obs`` with the condition column set to the target and
            ``obs["<condition_key>_source"]`` the condition each cell was encoded with; ``X``
            the prediction in the registered data's space (log-normalised values for
            ``"mse"``; for ``"nb"``/``"zinb"`` counts at each cell's observed library size:
            expected counts, zero-inflation included, or draws with ``sample=True``), and for
            count models ``layers["log_normalized"] = log1p(X / library size * target_sum)``;
            ``uns["trVAE_predict"]`` the method, source, target, ``target_sum`` and the
            model's settings.

        Examples
        --------
        >>> is_nk = adata.obs.cell_type == "NK"
        >>> control_nk = np.flatnonzero(is_nk & (adata.obs.condition == "control"))
        >>> predicted = model.predict(
        ...     indices=control_nk, target_condition="stimulated", cell_type_key="cell_type"
        ... )
        >>> predicted.shape == (len(control_nk), adata.n_vars)
        True
        >>> predicted.uns["trVAE_predict"]["method"], predicted.uns["trVAE_predict"]["sample"]
        (['neuron_edit', 'calibrated'], True)
        >>> transfer = model.predict(
        ...     indices=control_nk, target_condition="stimulated", method="transfer", sample=False
        ... )

        """
        if method is None:
            method = DEFAULT_METHODS["counts" if self.module.is_count_model else "mse"]
        methods = tuple(method) if isinstance(method, list | tuple) else (method,)
        settings = _method_settings(
            methods, sample, calibration_weight, n_neighbors, neuron_edit_layer, n_percentiles,
            shrinkage,
        )  # fmt: skip
        shrinkage = settings["shrinkage"]
        adata, indices = self._prepare(adata, indices)
        target_code = self._condition_code(target_condition, "target_condition")
        own = adata.obs[self.condition_key].iloc[indices].astype(str).to_numpy()
        source_code = None if source_condition is None else self._condition_code(source_condition)
        source_condition = None if source_code is None else self.conditions[source_code]
        target_sum = float(target_sum or self.median_library_size_)
        fixed_pair = None
        if reference_conditions is not None:
            fixed_pair = tuple(
                self._condition_code(c, "reference_conditions") for c in reference_conditions
            )
        residual = not self.module.is_count_model
        cells = self._encode(adata, indices, source_code, batch_size, residual)
        codes = (
            self._registered_codes(adata)[indices]
            if source_code is None
            else np.full(len(indices), source_code)
        )
        if residual and not sample:
            cells["residual"] = _mean_per_group(cells["residual"], codes)

        def reference(code: int) -> _Reference:
            """The reference of cells of condition ``code``, encoded once."""
            pair = fixed_pair or (code, target_code)
            groups = self._reference_cells(
                adata, indices, reference_indices, cell_type_key, pair, target_code
            )
            return _Reference(
                adata=groups[0][0],
                rows=(groups[0][1], groups[1][1]),
                codes=pair,
                encoded=tuple(self._encode(*group, None, batch_size) for group in groups),
                types=tuple(self._types(groups, cell_type_key)),
            )

        log = self._log_space(target_sum)

        def decoding(group: Cells, ref: _Reference, code: int, method: str) -> tuple[int, Cells]:
            """The condition and the z or y to decode cells of condition ``code`` with."""
            if method == "transfer":
                return target_code, {"z": group["z"]}
            return self._edit(
                method, group, ref, code, target_code, neuron_edit_layer, n_percentiles
            )

        def expected(
            rows, group, ref, code, method, weight=calibration_weight, neighbors=n_neighbors
        ) -> np.ndarray:
            """``method``'s expected prediction of ``indices[rows]`` in log space.

            ``weight``/``neighbors``: those of ``"calibrated"`` (the shrinkage's target is
            ``"calibrated"`` with weight 0 over the whole reference).
            """
            if method == "calibrated":
                return self._calibrated(
                    adata, indices[rows], group, ref, code, target_code, weight, neighbors,
                    target_sum, batch_size,
                )  # fmt: skip
            decode_code, decode_input = decoding(group, ref, code, method)
            return log(
                self._decode(group["library"], decode_code, batch_size, **decode_input), group
            )

        if methods == ("transfer",) and not shrinkage:  # the one method without reference cells
            prediction = self._decode(
                cells["library"], target_code, batch_size, sample, cells.get("residual"),
                z=cells["z"],
            )  # fmt: skip
        else:
            prediction = np.empty((len(indices), self.module.n_input), dtype=np.float32)
            for code in np.unique(codes):  # each source condition among the cells
                code = int(code)
                rows = np.flatnonzero(codes == code)
                group = {k: v[rows] for k, v in cells.items()}
                ref = reference(code)
                if not shrinkage and len(methods) == 1 and methods[0] != "calibrated":
                    decode_code, decode_input = decoding(group, ref, code, methods[0])
                    prediction[rows] = self._decode(
                        group["library"], decode_code, batch_size, sample, group.get("residual"),
                        **decode_input,
                    )  # fmt: skip
                    continue
                mixed = np.mean([expected(rows, group, ref, code, m) for m in methods], axis=0)
                if shrinkage:
                    shift = expected(rows, group, ref, code, "calibrated", 0.0, None)
                    mixed = (1 - shrinkage) * mixed + shrinkage * shift
                prediction[rows] = self._from_log_space(
                    mixed, group, sample, target_code, target_sum
                )
        return self._prediction_anndata(
            adata, indices, own, prediction, cells["library"], target_condition,
            source_condition, target_sum, **settings,
        )  # fmt: skip

    def _edit(
        self,
        method: str,
        cells: Cells,
        reference: _Reference,
        source_code: int,
        target_code: int,
        neuron_edit_layer: str,
        n_percentiles: int,
    ) -> tuple[int, Cells]:
        """The condition and the edited z or y to decode cells of one source condition with."""
        source, target = reference.encoded
        if method == "latent_shift":
            shift = _latent_shift(source, target, *reference.types)
            return source_code, {"z": cells["z"] + shift}
        edited = neuron_edit(
            cells[neuron_edit_layer].numpy(),
            source[neuron_edit_layer].numpy(),
            target[neuron_edit_layer].numpy(),
            n_percentiles,
        )
        # An edited z is decoded through g1 with the source condition; an edited y is already
        # the target's MMD-layer output.
        code = source_code if neuron_edit_layer == "z" else target_code
        return code, {neuron_edit_layer: torch.as_tensor(edited)}

    def _calibrated(
        self,
        adata: AnnData,
        indices: np.ndarray,
        cells: Cells,
        reference: _Reference,
        source_code: int,
        target_code: int,
        weight: float,
        n_neighbors: int | None,
        target_sum: float,
        batch_size: int | None,
    ) -> np.ndarray:
        """Own-condition profile + real reference change + weighted model correction.

        In the model's log space (the data for ``mse``; ``log1p(counts / library *
        target_sum)`` for count models), per cell:
        ``S + (mean X - mean S) + (R_t - R_s) + w ((T - S) - (T_r - S_r))``, with ``S``/``T``
        the cell decoded with the source/target condition, ``X`` the cells' real values (so
        that the decoder's bias on them cancels), ``R_s``/``R_t`` the real mean source/target
        profiles of the reference and ``T_r - S_r`` the model's mean change for the
        reference's source cells: over all of them, or with ``n_neighbors`` over each cell's
        nearest reference cells in z. For ``mse`` models ``mean X - mean S`` is the mean of the
        cells' residuals, which :meth:`_from_log_space` adds (draws each cell's own:
        ``S + residual = X``), so it is left out here.
        """
        where, (source_rows, target_rows) = reference.adata, reference.rows
        ref_source_code, ref_target_code = reference.codes
        source_ref, target_ref = reference.encoded
        log = self._log_space(target_sum)
        real_source = self._log_values(where, source_rows, target_sum)
        real_target = self._log_values(where, target_rows, target_sum)
        if n_neighbors is None:
            source_weights = np.full((1, len(source_rows)), 1 / len(source_rows))
            target_weights = np.full((1, len(target_rows)), 1 / len(target_rows))
        else:
            source_weights = _neighbor_weights(cells["z"], source_ref["z"], n_neighbors)
            target_weights = _neighbor_weights(cells["z"], target_ref["z"], n_neighbors)

        def decoded(group: Cells, code: int) -> np.ndarray:
            return log(self._decode(group["library"], code, batch_size, z=group["z"]), group)

        own = decoded(cells, source_code)
        correction = np.asarray(target_weights @ real_target) - np.asarray(
            source_weights @ real_source
        )
        if weight:
            model_change = decoded(cells, target_code) - own
            # The reference's model change, weighted, a chunk of reference cells at a time:
            # decoded whole it would be a dense reference x genes matrix.
            if sp.issparse(source_weights):
                source_weights = source_weights.tocsc()
            ref_model_change = 0.0
            for start in range(0, len(source_rows), REFERENCE_CHUNK):
                rows = slice(start, start + REFERENCE_CHUNK)
                chunk = {key: values[rows] for key, values in source_ref.items()}
                change = decoded(chunk, ref_target_code) - decoded(chunk, ref_source_code)
                ref_model_change = ref_model_change + source_weights[:, rows] @ change
            correction = correction + weight * (model_change - ref_model_change)
        if not self.module.is_count_model:
            return own + correction
        real_own = self._log_values(adata, indices, target_sum)
        return own + (np.asarray(real_own.mean(0)).ravel() - own.mean(0)) + correction

    def _from_log_space(
        self,
        expected: np.ndarray,
        cells: Cells,
        sample: bool,
        target_code: int,
        target_sum: float,
    ) -> np.ndarray:
        """Predictions from expected values in the model's log space (see :meth:`_calibrated`).

        ``mse``: plus the cells' residuals. Count models: counts at each cell's library size,
        or negative-binomial draws around them with the target condition's dispersion.
        """
        if not self.module.is_count_model:
            return (expected + cells["residual"].numpy()).astype(np.float32)
        size = np.exp(cells["library"].numpy())
        counts = np.expm1(np.maximum(expected, 0.0)) * size / target_sum
        if not sample:
            return counts.astype(np.float32)
        theta = torch.exp(self.module.px_r[:, target_code].detach().cpu())
        draws = NegativeBinomial(mu=torch.as_tensor(counts), theta=theta).sample()
        return draws.numpy().astype(np.float32)

    def _log_space(self, target_sum: float):
        """Map expected values of cells to the model's log space (identity for ``mse``)."""
        if not self.module.is_count_model:
            return lambda values, cells: values
        return lambda values, cells: np.log1p(
            values / np.exp(cells["library"].numpy()) * target_sum
        )

    def _log_values(self, adata: AnnData, rows: np.ndarray, target_sum: float) -> sp.csr_matrix:
        """Real values of cells in the model's log space, sparse (log1p keeps zeros at 0)."""
        matrix, _ = self._registered_matrix(adata)
        values = matrix[np.sort(rows)][np.argsort(np.argsort(rows))]
        values = (
            values.astype(np.float64) if sp.issparse(values) else np.asarray(values, np.float64)
        )
        values = sp.csr_matrix(values)
        if self.module.is_count_model:
            library = np.maximum(np.asarray(values.sum(axis=1)).ravel(), 1.0)
            values = sp.csr_matrix(sp.diags(target_sum / library) @ values).log1p()
        return values

    def _registered_codes(self, adata: AnnData) -> np.ndarray:
        manager = self.get_anndata_manager(adata)
        return np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()

    @staticmethod
    def _types(
        groups: list[tuple[AnnData, np.ndarray]], cell_type_key: str | None
    ) -> list[np.ndarray | None]:
        if cell_type_key is None:
            return [None for _ in groups]
        return [
            _column(where, cell_type_key).iloc[rows].astype(str).to_numpy()
            for where, rows in groups
        ]

    def _reference_cells(
        self,
        adata: AnnData,
        indices: np.ndarray,
        reference_indices: Sequence[int] | None,
        cell_type_key: str | None,
        pair: tuple[int, int],
        prediction_target: int,
    ) -> list[tuple[AnnData, np.ndarray]]:
        """The reference's source and target cells, as ``(AnnData, positions)`` pairs.

        ``pair`` holds the reference's (source, target) conditions. Whenever it includes the
        prediction's target condition, the reference could hold the predicted types' real
        response: with ``cell_type_key`` the default reference then leaves the predicted types
        out, and given ``reference_indices`` holding their target cells are refused.
        """
        source_code, target_code = pair
        if reference_indices is not None:
            where, reference = adata, check_indices(adata, reference_indices)
            codes = self._registered_codes(where)
        else:
            where = self.adata
            codes = self._registered_codes(where)
            reference = np.flatnonzero(~self._predicted_cells_of_model(adata, indices))
            if min(np.sum(codes[reference] == c) for c in pair) == 0:
                # The predicted cells are all of a condition's cells: nothing is held out,
                # so the reference is every cell of the model.
                reference = np.arange(where.n_obs)
        if cell_type_key is not None and prediction_target in pair:
            predicted = set(_column(adata, cell_type_key).iloc[indices].astype(str))
            types = _column(where, cell_type_key).iloc[reference].astype(str).to_numpy()
            shared = np.isin(types, list(predicted))
            leaked = shared & (codes[reference] == prediction_target)
            if reference_indices is None:
                reference = reference[~shared]
            elif leaked.any():
                raise ValueError(
                    f"reference_indices holds {self.conditions[prediction_target]!r} cells of "
                    f"{sorted(set(types[leaked]))}, the cell types being predicted: their real "
                    "response would leak into the prediction. Pass reference cells of other "
                    "types only, or reference_indices=None."
                )
        groups = []
        for code, role in ((source_code, "source"), (target_code, "target")):
            rows = reference[codes[reference] == code]
            if len(rows) == 0:
                raise ValueError(
                    f"The reference holds 0 cells of the {role} condition "
                    f"{self.conditions[code]!r}; it needs some. Pass an adata that holds "
                    "reference cells of both conditions (e.g. other cell types) with "
                    "reference_indices, or use method='transfer', which needs none."
                )
            if where is adata:
                self._check_data(where, rows)
            groups.append((where, rows))
        return groups

    def _predicted_cells_of_model(self, adata: AnnData, indices: np.ndarray) -> np.ndarray:
        """Which of the model's cells are the predicted ones.

        By name; for a new AnnData also by content (a condition of the predicted cells and the
        same registered values), since its cells may be the model's own under other names.
        """
        model_cells = self.adata
        predicted = model_cells.obs_names.isin(adata.obs_names[indices])
        if adata is model_cells:
            return predicted
        model_matrix, _ = self._registered_matrix(model_cells)
        new_matrix, _ = self._registered_matrix(adata)
        same = _same_rows(model_matrix, new_matrix[np.sort(indices)])
        own_codes = set(self._registered_codes(adata)[indices].tolist())
        return predicted | (same & np.isin(self._registered_codes(model_cells), list(own_codes)))

    def _prediction_anndata(
        self,
        adata: AnnData,
        indices: np.ndarray,
        own: np.ndarray,
        prediction: np.ndarray,
        library: torch.Tensor,
        target_condition: str,
        source_condition: str | None,
        target_sum: float | None,
        **method_settings,
    ) -> AnnData:
        """The prediction as a new AnnData, with obs, var and what was done in ``uns``."""
        obs = adata.obs.iloc[indices].copy()
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith("_scvi")])
        obs[f"{self.condition_key}_source"] = pd.Categorical(
            own if source_condition is None else np.full(len(obs), source_condition)
        )
        target_condition = self.conditions[self._condition_code(target_condition)]
        obs[self.condition_key] = pd.Categorical(
            [target_condition] * len(obs), categories=self.conditions
        )
        columns = self.get_setup_arg("condition_key")
        if not isinstance(columns, str) and len(columns) > 1:  # combined from several columns
            combined = self.adata.obs[[*columns, self.condition_key]].astype(str)
            parts = combined[combined[self.condition_key] == target_condition]
            for column in columns:
                obs[column] = parts[column].iloc[0] if len(parts) else obs[column]
        predicted = AnnData(X=prediction, obs=obs, var=adata.var.copy())
        settings = {
            **method_settings,
            "target_condition": target_condition,
            "source_condition": "own" if source_condition is None else source_condition,
            "condition_key": self.condition_key,
            "model_settings": {
                k: _uns_safe(v) for k, v in self.init_params_["non_kwargs"].items()
            },
        }
        if self.module.is_count_model:
            target_sum = float(target_sum or self.median_library_size_)
            size = torch.exp(library).numpy()
            predicted.layers["log_normalized"] = np.log1p(prediction / size * target_sum)
            settings["target_sum"] = target_sum
        predicted.uns["trVAE_predict"] = settings
        return predicted


@dataclass(frozen=True)
class _Reference:
    """Reference cells of the source and target conditions, encoded once.

    ``rows``, ``encoded`` and ``types`` are (source, target) pairs: the cells' positions in
    ``adata``, their z, y and library, and their cell types (``None`` without a key).
    """

    adata: AnnData
    rows: tuple[np.ndarray, np.ndarray]
    codes: tuple[int, int]
    encoded: tuple[Cells, Cells]
    types: tuple[np.ndarray | None, np.ndarray | None]


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


def _same_rows(matrix, rows) -> np.ndarray:
    """For each row of ``matrix``, whether it equals one of ``rows`` (dense or sparse).

    One pass over ``matrix``: rows are compared by a random projection first, and exactly
    only where a projection matches.
    """
    projection = np.random.default_rng(0).standard_normal(matrix.shape[1])
    fingerprint = np.asarray(matrix @ projection, dtype=np.float64).ravel()
    wanted = np.asarray(rows @ projection, dtype=np.float64).ravel()
    order = np.argsort(wanted)
    position = np.clip(np.searchsorted(wanted[order], fingerprint), 0, len(wanted) - 1)
    near = np.minimum(
        np.abs(fingerprint - wanted[order][position]),
        np.abs(fingerprint - wanted[order][np.maximum(position - 1, 0)]),
    )
    candidates = np.flatnonzero(near <= 1e-6 * (1 + np.abs(fingerprint)))
    wanted_rows = {_row_bytes(rows, i) for i in range(rows.shape[0])}
    same = np.zeros(matrix.shape[0], dtype=bool)
    same[candidates] = [_row_bytes(matrix, i) in wanted_rows for i in candidates]
    return same


def _row_bytes(matrix, row: int) -> bytes:
    values = matrix[row].toarray() if sp.issparse(matrix) else np.asarray(matrix[row])
    return np.asarray(values, dtype=np.float64).ravel().tobytes()


def _mean_per_group(values: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """Each row replaced by the mean of the rows of its group."""
    means = torch.empty_like(values)
    for group in np.unique(groups):
        rows = torch.as_tensor(np.flatnonzero(groups == group))
        means[rows] = values[rows].mean(0)
    return means


def _column(adata: AnnData, key: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise ValueError(
            f"cell_type_key={key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}). Pass the column with each cell's type."
        )
    return adata.obs[key]


def _uns_safe(value):
    """Turn a model setting into something h5ad can store."""
    if isinstance(value, tuple | list):
        return np.asarray(value)
    return value


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


def _method_settings(
    methods: tuple[str, ...],
    sample: bool,
    calibration_weight: float,
    n_neighbors: int | None,
    neuron_edit_layer: str,
    n_percentiles: int,
    shrinkage: float | None,
) -> dict:
    """Check a prediction's settings; return those that ``uns["trVAE_predict"]`` records.

    ``shrinkage=None`` is resolved to the methods' default.
    """
    if not methods or len(set(methods)) < len(methods):
        raise ValueError(
            f"method={list(methods)!r} must name one method, or several different ones to "
            f"average, among {list(METHODS)}."
        )
    for method in methods:
        check_choice("method", method, METHODS)
    check_choice("neuron_edit_layer", neuron_edit_layer, ("y", "z"))
    if not 0 <= calibration_weight <= 1:
        raise ValueError(f"calibration_weight={calibration_weight!r} must lie in [0, 1].")
    if n_neighbors is not None and int(n_neighbors) < 1:
        raise ValueError(f"n_neighbors={n_neighbors!r} must be a positive integer or None.")
    if shrinkage is None:
        shrinkage = DEFAULT_NEURON_EDIT_SHRINKAGE if "neuron_edit" in methods else 0.0
    if isinstance(shrinkage, str | bool) or not 0 <= shrinkage <= 1:
        raise ValueError(
            f"shrinkage={shrinkage!r} must lie in [0, 1] (0: the method's own prediction, "
            "1: each cell plus the reference's mean change), or be None for the default."
        )
    method = methods[0] if len(methods) == 1 else list(methods)
    settings = {"method": method, "sample": sample, "shrinkage": float(shrinkage)}
    if "calibrated" in methods:
        neighbors = "all" if n_neighbors is None else int(n_neighbors)  # h5ad stores no None
        settings.update(calibration_weight=calibration_weight, n_neighbors=neighbors)
    if "neuron_edit" in methods:
        settings.update(neuron_edit_layer=neuron_edit_layer, n_percentiles=n_percentiles)
    return settings
