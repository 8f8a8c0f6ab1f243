"""TRVAE.predict: check the settings, build the reference, ask the methods, convert once.

The methods themselves are the classes of :mod:`._predictors`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi.distributions import NegativeBinomial

from ._domain import ZERO_RULES, expected_zero_fraction, like_input
from ._outputs import Cells, OutputsMixin
from ._predictors import PREDICTORS, MeanShift, ModelSpace, Predictor, Reference, Settings
from ._validation import cell_type_column, check_choice, check_indices

Method = Literal["neuron_edit", "calibrated", "transfer", "latent_shift"]
Zeros = Literal["floored", "kept", "kept_mean", "matched"]
# Chosen on the tuning tasks of benchmarks/tune_defaults.py (see docs/method.md), per form: the
# average was screened on log data only, so count models keep NeuronEdit alone.
DEFAULT_METHODS = {"mse": ("neuron_edit", "calibrated"), "counts": ("neuron_edit",)}
DEFAULT_CALIBRATION_WEIGHT = 1.0
DEFAULT_NEIGHBORS = None
DEFAULT_NEURON_EDIT_SHRINKAGE = 0.25
PREDICT_CHUNK_VALUES = 2**24  # cells x genes predicted at once


class PredictionMixin(OutputsMixin):
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
        zeros: Zeros = "floored",
        target_sum: float | None = None,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predict how cells would look in ``target_condition``.

        ``method`` chooses how, always with this model's encoder and decoder; several methods
        average their expected predictions in the model's log space, before any draw
        (``docs/settings.md`` says how each default was chosen):

        - ``"neuron_edit"`` (Amodio et al.): map each unit of ``neuron_edit_layer`` with the
          percentile map from the reference's source cells to its target cells
          (:func:`trvae_scvi.nn.neuron_edit`), then decode.
        - ``"calibrated"``: each cell's profile in its own condition, plus the reference's
          real mean change, plus ``calibration_weight`` times how much the model's change for
          this cell differs from its change for the reference.
        - ``"transfer"`` (trVAE's): encode with the cell's own condition (or
          ``source_condition``), decode with ``target_condition``.
        - ``"latent_shift"`` (scGen's vector arithmetic): add the reference's mean z of the
          target minus the source condition (balanced over ``cell_type_key``'s types) to each
          z. It and ``neuron_edit_layer="z"`` need ``mmd_on="y"``: an MMD on z removes the
          condition from z.

        All but ``"transfer"`` need reference cells of the source and target conditions.

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
            A method above, or a sequence of them to average. ``None``: ``("neuron_edit",
            "calibrated")`` for ``"mse"`` models, ``"neuron_edit"`` for count models.
        reference_indices
            Positions in ``adata`` of the reference cells (e.g. the other cell types).
            ``None``: the model's training cells less the predicted ones (recognised by name
            and, in a new ``adata``, by value) and, with ``cell_type_key``, less every cell
            of the predicted types; never the other cells of a new ``adata``, which may hold
            the predicted type's real response.
        cell_type_key
            Column of ``obs`` with each cell's type (or any grouping whose response is
            predicted). Keeps the predicted types out of the default reference, refuses a
            ``reference_indices`` holding their target cells, and balances
            ``"latent_shift"`` over types.
        reference_conditions
            ``(source, target)`` conditions of the reference, when the response to learn from
            is between other conditions than the prediction's (e.g. another donor's control
            and stimulated cells). ``None``: the prediction's own.
        calibration_weight
            ``"calibrated"``: weight of the model's cell-specific change, in [0, 1]; 0 is the
            mean shift (denoised).
        n_neighbors
            ``"calibrated"``: take each cell's reference changes from its ``n_neighbors``
            nearest reference cells of each condition in z; ``None``: the whole reference.
        neuron_edit_layer
            Layer edited by ``"neuron_edit"``: ``"y"`` (the first decoder layer) or ``"z"``.
        n_percentiles
            Percentiles of the NeuronEdit map.
        shrinkage
            Fraction in [0, 1] of each cell's predicted change replaced by the reference's
            measured mean change (mixed in log space, before any draw); 1 is each cell plus
            that change. ``None``: with ``method=None``, the shrinkage
            :meth:`calibrate_predictor` learnt for this target condition, if it was run;
            otherwise 0.25 when ``method`` includes ``"neuron_edit"``, else 0.
        sample
            ``True`` gives each cell its own variation. Count models draw (seeded by
            ``scvi.settings.seed``) from the likelihood for one method without shrinkage,
            otherwise from a negative binomial around the expected counts with the target
            condition's dispersion. ``"mse"`` models add each cell's residual ``x - g(z, s)``
            (the decoder's error on it; deterministic); with ``False``, its per-gene mean over
            the predicted cells of the same source condition, so both have the same means.
        zeros
            Zeros of ``"mse"`` draws with a reference, on non-negative data, beyond the floor
            at 0. Each gene's expected fraction of zeros is the cells' own plus the
            reference's change in it. ``"floored"``: none. ``"kept"``: a cell's zero stays 0,
            except, where the gene should have fewer zeros than the cells' own, for the highest
            predictions of enough of them. ``"kept_mean"``: as ``"kept"``, with the values
            taken from the zeros moved to those filled in, so each gene's mean is kept.
            ``"matched"``: each gene's lowest values set to 0 until it has that fraction, the
            others scaled so its mean is unchanged. The last two inflate per-gene variances;
            ``docs/method.md`` says how the default was chosen.
        target_sum
            Count models: total counts per cell of ``layers["log_normalized"]``; ``None``: the
            median library size of the training cells with counts.
        batch_size
            Cells per mini-batch.

        Returns
        -------
        anndata.AnnData
            The predicted cells with the same ``var_names``; ``obs`` a copy of theirs with the
            condition set to the target and ``obs["<condition_key>_source"]`` the condition
            each was encoded with. ``X``: log-normalised values (``"mse"``) or counts at each
            cell's library size (expected, or draws with ``sample=True``), with for counts
            ``layers["log_normalized"] = log1p(X / library * target_sum)``; a CSR matrix when
            the registered input is sparse. For non-negative training data ``X`` is floored
            at 0 (then ``zeros``). ``uns["trVAE_predict"]``: the settings used, with
            under ``"calibration"`` the calibrated shrinkage's inner scores (the expected
            accuracy), if one was used.

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
        target_code = self._condition_code(target_condition, "target_condition")
        source_code = None if source_condition is None else self._condition_code(source_condition)
        settings = self._resolve_settings(
            method,
            self._calibration_for(target_code, source_code),
            sample=sample,
            calibration_weight=calibration_weight,
            n_neighbors=n_neighbors,
            neuron_edit_layer=neuron_edit_layer,
            n_percentiles=n_percentiles,
            shrinkage=shrinkage,
            zeros=zeros,
            target_sum=target_sum,
        )
        adata, indices = self._prepare(adata, indices)
        pair = None
        if reference_conditions is not None:
            pair = tuple(
                self._condition_code(c, "reference_conditions") for c in reference_conditions
            )
        space = self._model_space(target_sum, batch_size)
        cells = self._encode(
            adata, indices, source_code, batch_size, residual=not space.is_count_model
        )
        codes = self._registered_codes(adata)[indices]
        if source_code is not None:
            codes = np.full(len(indices), source_code)
        if not space.is_count_model and not sample:
            cells["residual"] = _mean_per_group(cells["residual"], codes)
        methods = [PREDICTORS[name] for name in settings.methods]
        needs_reference = settings.shrinkage > 0 or any(m.needs_reference for m in methods)
        prediction = np.empty((len(indices), self.module.n_input), dtype=np.float32)
        for code, rows in _groups(codes, by_condition=needs_reference):
            parts = np.array_split(rows, -(-len(rows) // self._chunk_size()))
            shared = {}
            if space.is_count_model and needs_reference:  # for the mean-shift terms
                shared["decoder_bias"] = _decoder_bias(space, adata, indices, cells, parts, code)
            reference = None
            if needs_reference:
                selection = (adata, indices, reference_indices, cell_type_key)
                reference = self._encoded_reference(
                    *selection, pair or (code, target_code), target_code, batch_size=batch_size
                )
            fitted = [m(settings).fit(reference, space, code, target_code) for m in methods]
            for part in parts:
                chunk = {key: values[part] for key, values in cells.items()} | shared
                values = self._predict_cells(fitted, chunk, reference, space, settings)
                prediction[part] = self._in_data_domain(values)
            zeros = self._zero_rule(adata, indices[rows], reference, space, settings)
            if zeros is not None:  # over all of the group's cells at once
                prediction[rows] = self._in_data_domain(prediction[rows], zeros=zeros)
        return self._prediction_anndata(
            adata, indices, prediction, cells["library"], target_code, source_code, space, settings
        )

    def _resolve_settings(
        self, method: Method | Sequence[Method] | None, calibration: dict | None, **options
    ) -> Settings:
        """The checked settings; the defaults' shrinkage from ``calibration``, if there is one.

        A calibration (:meth:`calibrate_predictor`) chose the shrinkage of the default methods,
        so it applies only when neither ``method`` nor ``shrinkage`` is given.
        """
        if method is not None or options["shrinkage"] is not None:
            calibration = None
        default = DEFAULT_METHODS["counts" if self.module.is_count_model else "mse"]
        if calibration is not None:
            options["shrinkage"] = calibration["shrinkage"]
        settings = _check_settings(default if method is None else method, **options)
        return dataclasses.replace(settings, calibration=_calibration_summary(calibration))

    def _calibration_for(self, target_code: int, source_code: int | None) -> dict | None:
        """The model's calibration, if it was made for this target (and source) condition."""
        found = self.predictor_calibration_
        if found is None or found["target_condition"] != self.conditions[target_code]:
            return None
        if source_code is not None and found["source_condition"] != self.conditions[source_code]:
            return None
        return found

    def _predict_cells(
        self,
        predictors: list[Predictor],
        cells: Cells,
        reference: Reference | None,
        space: ModelSpace,
        settings: Settings,
    ) -> np.ndarray:
        """One source condition's cells: average, shrink, then the one conversion to output."""
        lone = len(predictors) == 1 and not settings.shrinkage
        decoding = predictors[0].decoding(cells) if lone else None
        if decoding is not None:
            # A lone method that only changes what is decoded: decode, and draw, directly.
            code, inputs = decoding
            return space.decode(cells, code, sample=settings.sample, residual=True, **inputs)
        mixed = np.mean([predictor.transform(cells) for predictor in predictors], axis=0)
        if settings.shrinkage:
            source_code, target_code = predictors[0].source_code, predictors[0].target_code
            shift = MeanShift(settings).fit(reference, space, source_code, target_code)
            mixed = (1 - settings.shrinkage) * mixed + settings.shrinkage * shift.transform(cells)
        return self._to_output(mixed, cells, space, settings.sample, predictors[0].target_code)

    @staticmethod
    def _zero_rule(
        adata: AnnData,
        rows: np.ndarray,
        reference: Reference | None,
        space: ModelSpace,
        settings: Settings,
    ) -> Callable[[np.ndarray], np.ndarray] | None:
        """The ``zeros`` rule, bound to the cells ``rows`` of ``adata``; ``None``: floor only.

        Count draws have their own zeros; expected values and predictions without a reference
        are only floored.
        """
        rule = ZERO_RULES[settings.zeros]
        if rule is None or space.is_count_model or reference is None or not settings.sample:
            return None
        own = space.real(adata, rows)
        fraction = expected_zero_fraction(own, *reference.real(space))
        return functools.partial(rule, fraction=fraction, own=own)

    def _to_output(
        self, expected: np.ndarray, cells: Cells, space: ModelSpace, sample: bool, target_code: int
    ) -> np.ndarray:
        """Predictions from expected values in the model's log space.

        ``mse``: plus the cells' residuals. Count models: counts at each cell's library size,
        or negative-binomial draws around them with the target condition's dispersion.
        """
        if not space.is_count_model:
            return (expected + cells["residual"].numpy()).astype(np.float32)
        size = np.exp(cells["library"].numpy())
        counts = np.expm1(np.maximum(expected, 0.0)) * size / space.target_sum
        if not sample:
            return counts.astype(np.float32)
        theta = torch.exp(self.module.px_r[:, target_code].detach().cpu())
        draws = NegativeBinomial(mu=torch.as_tensor(counts), theta=theta).sample()
        return draws.numpy().astype(np.float32)

    def _model_space(self, target_sum: float | None, batch_size: int | None) -> ModelSpace:
        """The decoder and log space the methods work in (``target_sum=None``: the median)."""
        return ModelSpace(
            decode_loop=self._decode,
            matrix_of=self._registered_matrix,
            is_count_model=self.module.is_count_model,
            target_sum=float(self.median_library_size_ if target_sum is None else target_sum),
            batch_size=batch_size,
        )

    def _chunk_size(self) -> int:
        """Cells predicted at once: the methods' dense float64 intermediates stay ~128 MB."""
        return max(1, PREDICT_CHUNK_VALUES // self.module.n_input)

    def _encoded_reference(
        self,
        adata: AnnData,
        indices: np.ndarray,
        reference_indices: Sequence[int] | None,
        cell_type_key: str | None,
        pair: tuple[int, int],
        prediction_target: int,
        *,
        batch_size: int | None,
    ) -> Reference:
        """The reference's source and target cells (see :meth:`_reference_cells`), encoded."""
        groups = self._reference_cells(
            adata, indices, reference_indices, cell_type_key, pair, prediction_target
        )
        return Reference(
            adata=groups[0][0],
            rows=(groups[0][1], groups[1][1]),
            codes=pair,
            encoded=tuple(self._encode(where, rows, None, batch_size) for where, rows in groups),
            types=tuple(self._types(groups, cell_type_key)),
        )

    @staticmethod
    def _types(
        groups: list[tuple[AnnData, np.ndarray]], cell_type_key: str | None
    ) -> list[np.ndarray | None]:
        if cell_type_key is None:
            return [None for _ in groups]
        return [cell_type_column(where, cell_type_key)[rows] for where, rows in groups]

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
            where, reference = adata, check_indices(adata, reference_indices, "reference_indices")
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
            predicted = set(cell_type_column(adata, cell_type_key)[indices])
            types = cell_type_column(where, cell_type_key)[reference]
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
        prediction: np.ndarray,
        library: torch.Tensor,
        target_code: int,
        source_code: int | None,
        space: ModelSpace,
        settings: Settings,
    ) -> AnnData:
        """The prediction as a new AnnData, with obs, var and what was done in ``uns``."""
        obs = adata.obs.iloc[indices].copy()
        own = obs[self.condition_key].astype(str).to_numpy()
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith("_scvi")])
        source = None if source_code is None else self.conditions[source_code]
        obs[f"{self.condition_key}_source"] = pd.Categorical(
            own if source is None else np.full(len(obs), source)
        )
        target = self.conditions[target_code]
        obs[self.condition_key] = pd.Categorical([target] * len(obs), categories=self.conditions)
        columns = self.get_setup_arg("condition_key")
        if not isinstance(columns, str) and len(columns) > 1:  # combined from several columns
            combined = self.adata.obs[[*columns, self.condition_key]].astype(str)
            parts = combined[combined[self.condition_key] == target]
            for column in columns:
                obs[column] = parts[column].iloc[0] if len(parts) else obs[column]
        sparse = sp.issparse(self._registered_matrix(adata)[0])
        predicted = AnnData(X=like_input(prediction, sparse=sparse), obs=obs, var=adata.var.copy())
        record = {
            **_settings_record(settings),
            "target_condition": target,
            "source_condition": "own" if source is None else source,
            "condition_key": self.condition_key,
            "model_settings": {
                k: _uns_safe(v) for k, v in self.init_params_["non_kwargs"].items()
            },
        }
        if space.is_count_model:
            log_values = space.log(prediction, library)
            predicted.layers["log_normalized"] = like_input(log_values, sparse=sparse)
            record["target_sum"] = space.target_sum
        predicted.uns["trVAE_predict"] = record
        return predicted


def _groups(codes: np.ndarray, *, by_condition: bool) -> list[tuple[int | None, np.ndarray]]:
    """The cells' rows per source condition, or all in one group (no reference needed)."""
    if not by_condition:
        return [(None, np.arange(len(codes)))]
    return [(int(code), np.flatnonzero(codes == code)) for code in np.unique(codes)]


def _decoder_bias(
    space: ModelSpace,
    adata: AnnData,
    indices: np.ndarray,
    cells: Cells,
    parts: list[np.ndarray],
    code: int,
) -> np.ndarray:
    """The decoder's bias on the cells: per gene, mean real minus mean decoded log value.

    The cells are ``indices[part]`` for each of ``parts``, decoded with condition ``code``, a
    part at a time.
    """
    real = sum(np.asarray(space.real(adata, indices[part]).sum(0)).ravel() for part in parts)
    decoded = sum(
        space.decoded_log({key: values[part] for key, values in cells.items()}, code).sum(0)
        for part in parts
    )
    return (real - decoded) / sum(len(part) for part in parts)


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


def _uns_safe(value):
    """Turn a model setting into something h5ad can store."""
    if isinstance(value, tuple | list):
        return np.asarray(value)
    return value


def _check_settings(
    method: str | Sequence[str],
    *,
    sample: bool,
    calibration_weight: float,
    n_neighbors: int | None,
    neuron_edit_layer: str,
    n_percentiles: int,
    shrinkage: float | None,
    zeros: str,
    target_sum: float | None,
) -> Settings:
    """Check a prediction's settings; ``shrinkage=None`` becomes the methods' default."""
    methods = tuple(method) if isinstance(method, list | tuple) else (method,)
    if not methods or len(set(methods)) < len(methods):
        raise ValueError(
            f"method={list(methods)!r} must name one method, or several different ones to "
            f"average, among {list(PREDICTORS)}."
        )
    for name in methods:
        check_choice("method", name, tuple(PREDICTORS))
    check_choice("neuron_edit_layer", neuron_edit_layer, ("y", "z"))
    check_choice("zeros", zeros, tuple(ZERO_RULES))
    if target_sum is not None and not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(
            f"target_sum={target_sum!r} must be a positive number, or None for the median "
            "library size of the training cells."
        )
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
    return Settings(
        methods=methods,
        sample=sample,
        shrinkage=float(shrinkage),
        calibration_weight=calibration_weight,
        n_neighbors=None if n_neighbors is None else int(n_neighbors),
        neuron_edit_layer=neuron_edit_layer,
        n_percentiles=n_percentiles,
        zeros=zeros,
    )


def _settings_record(settings: Settings) -> dict:
    """What ``uns["trVAE_predict"]`` records of the settings: each method's own ones."""
    methods = settings.methods
    record = {
        "method": methods[0] if len(methods) == 1 else list(methods),
        "sample": settings.sample,
        "shrinkage": settings.shrinkage,
        "zeros": settings.zeros,
        "calibration": settings.calibration or "none: fixed default (see calibrate_predictor)",
    }
    for name in methods:
        record.update({key: getattr(settings, key) for key in PREDICTORS[name].recorded})
    if "n_neighbors" in record and record["n_neighbors"] is None:
        record["n_neighbors"] = "all"  # h5ad stores no None
    return record


def _calibration_summary(calibration: dict | None) -> dict | None:
    """What ``uns["trVAE_predict"]`` records of a calibration: its choice and inner scores."""
    if calibration is None:
        return None
    keys = ("shrinkage", "expected_r2_mean_deg", "expected_r2_mean_deg_sd")
    keys += ("expected_change_r_deg", "expected_change_r_deg_sd", "cell_type_key")
    groups = [group for fold in calibration["folds"] for group in fold]
    return {**{key: calibration[key] for key in keys}, "groups": groups}
