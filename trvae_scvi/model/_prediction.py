"""TRVAE.predict: one small function per algorithm around the shared encoding and decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from trvae_scvi.nn import neuron_edit

from ._outputs import Cells
from ._validation import check_choice, check_indices

METHODS = ("transfer", "latent_shift", "neuron_edit")


class PredictionMixin:
    """``predict`` of TRVAE, with the reference cells and noise its methods need."""

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        target_condition: str | None = None,
        source_condition: str | None = None,
        method: Literal["transfer", "latent_shift", "neuron_edit"] = "transfer",
        reference_indices: Sequence[int] | None = None,
        cell_type_key: str | None = None,
        neuron_edit_layer: Literal["y", "z"] = "y",
        n_percentiles: int = 100,
        sample: bool = False,
        target_sum: float | None = None,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predict how cells would look in ``target_condition``.

        ``method`` chooses how, always with this model's encoder and decoder, so that only the
        method differs:

        - ``"transfer"`` (trVAE): encode each cell with its own condition (or
          ``source_condition``), decode with ``target_condition``.
        - ``"latent_shift"``: vector arithmetic in z, as scGen does in its unconditional VAE:
          add the reference's mean z of the target minus the source condition to each cell's
          z and decode with the source condition. With ``cell_type_key`` the mean is balanced
          over cell types (each type present in both conditions weighs the same, as scGen's
          balancing does); otherwise it is over cells.
        - ``"neuron_edit"`` (Amodio et al.): map each neuron of the MMD layer (``"y"``) or of z
          with the percentile map from the reference's source cells to its target cells
          (:func:`trvae_scvi.nn.neuron_edit`), then decode (z: with the source condition).

        The two reference-based methods need one source condition (``source_condition``, or
        the one condition of all selected cells) and reference cells of both conditions.

        Parameters
        ----------
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to transform, e.g. the control cells of a held-out cell type.
        target_condition
            Condition to predict.
        source_condition
            Condition to encode with, for every cell; ``None`` uses each cell's own.
        method
            ``"transfer"``, ``"latent_shift"`` or ``"neuron_edit"``.
        reference_indices
            For the reference-based methods: positions in ``adata`` of the cells whose source
            and target conditions define the shift or the map (e.g. the other cell types).
            ``None``: the model's own training cells, less the predicted cells (by
            ``obs_names``) and, with ``cell_type_key``, less every cell of the predicted
            types. Never the other cells of a new ``adata``, which may hold the real
            target-condition cells of the very type being predicted.
        cell_type_key
            Column of ``obs`` (in ``adata`` and the model's AnnData) with each cell's type, or
            any grouping whose response is predicted (patient, study). Keeps the predicted
            types out of the reference (a reference holding target-condition cells of a
            predicted type is refused) and balances ``"latent_shift"`` over types.
        neuron_edit_layer
            Layer edited by ``"neuron_edit"``: ``"y"`` (MMD layer) or ``"z"``.
        n_percentiles
            Percentiles of the NeuronEdit map.
        sample
            Draw each cell's prediction instead of returning its expected value. Decoded means
            shrink the per-gene variance; draws restore it. ``"nb"``/``"zinb"`` draw from the
            likelihood; ``"mse"`` adds Gaussian noise with each gene's residual sd over the
            model's own cells of ``target_condition`` (reconstructed with their condition),
            clipped at 0 when those cells' values are non-negative. Uses torch's random state
            (set by ``scvi.settings.seed``).
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
        >>> predicted = model.predict(indices=control_nk, target_condition="stimulated")
        >>> predicted.shape == (len(control_nk), adata.n_vars)
        True
        >>> edited = model.predict(
        ...     indices=control_nk,
        ...     target_condition="stimulated",
        ...     method="neuron_edit",
        ...     cell_type_key="cell_type",
        ... )
        >>> edited.uns["trVAE_predict"]["method"]
        'neuron_edit'

        """
        check_choice("method", method, METHODS)
        check_choice("neuron_edit_layer", neuron_edit_layer, ("y", "z"))
        adata, indices = self._prepare(adata, indices)
        target_code = self._condition_code(target_condition, "target_condition")
        own = adata.obs[self.condition_key].iloc[indices].astype(str).to_numpy()
        if method != "transfer" and source_condition is None:
            source_condition = _one_condition(own, method)
        source_code = None if source_condition is None else self._condition_code(source_condition)
        cells = self._encode(adata, indices, source_code, batch_size)
        if method == "transfer":
            decode_code, decode_input = target_code, {"z": cells["z"]}
        else:
            reference = self._reference_cells(
                adata, indices, reference_indices, cell_type_key, source_code, target_code
            )
            source, target = (self._encode(*group, None, batch_size) for group in reference)
            if method == "latent_shift":
                shift = _latent_shift(source, target, *self._types(reference, cell_type_key))
                decode_code, decode_input = source_code, {"z": cells["z"] + shift}
            else:
                decode_code, decode_input = _neuron_edit(
                    cells, source, target, neuron_edit_layer, n_percentiles, source_code,
                    target_code,
                )  # fmt: skip
        mse_noise = (
            self._residual_noise(target_code, batch_size)
            if sample and not self.module.is_count_model
            else None
        )
        prediction = self._decode(
            cells["library"], decode_code, batch_size, sample, mse_noise, **decode_input
        )
        return self._prediction_anndata(
            adata, indices, own, prediction, cells["library"], target_condition,
            source_condition, target_sum,
            method=method, sample=sample,
            **({"neuron_edit_layer": neuron_edit_layer, "n_percentiles": n_percentiles}
               if method == "neuron_edit" else {}),
        )  # fmt: skip

    @torch.inference_mode()
    def _residual_noise(
        self, target_code: int, batch_size: int | None
    ) -> tuple[torch.Tensor, bool]:
        """Per-gene sd of the reconstruction residuals of the model's cells of one condition.

        Also whether those cells' values are all non-negative (then draws are clipped at 0).
        """
        codes = self._registered_codes(self.adata)
        rows = np.flatnonzero(codes == target_code)
        if len(rows) < 2:
            raise ValueError(
                f"sample=True with recon_loss='mse' draws noise with the per-gene residual sd of "
                f"the model's cells of target_condition={self.conditions[target_code]!r}, but "
                f"the model's AnnData holds {len(rows)} of them (e.g. a condition mapped with "
                "load_query_data, or a model loaded with a subset). Load the model with an "
                "AnnData that holds such cells, or predict with sample=False."
            )
        total = torch.zeros(self.summary_stats.n_vars, dtype=torch.float64)
        total_squares = torch.zeros_like(total)
        minimum = np.inf
        self.module.eval()
        for tensors in self._make_data_loader(self.adata, indices=rows, batch_size=batch_size):
            x, condition = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.BATCH_KEY]
            inference = self.module.inference(x, condition)
            px = self.module.generative(inference["qz"].loc, inference["library"], condition)["px"]
            residual = (x - px.mean.cpu()).double()
            total += residual.sum(0)
            total_squares += residual.pow(2).sum(0)
            minimum = min(minimum, float(x.min()))
        mean = total / len(rows)
        sd = (total_squares / len(rows) - mean.pow(2)).clamp_min(0.0).sqrt()
        return sd.float(), minimum >= 0

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
        source_code: int,
        target_code: int,
    ) -> list[tuple[AnnData, np.ndarray]]:
        """The reference's source and target cells, as ``(AnnData, positions)`` pairs."""
        if reference_indices is not None:
            where, reference = adata, check_indices(adata, reference_indices)
        else:
            where = self.adata
            predicted = adata.obs_names[indices]
            reference = np.flatnonzero(~where.obs_names.isin(predicted))
        codes = self._registered_codes(where)
        if cell_type_key is not None:
            predicted = set(_column(adata, cell_type_key).iloc[indices].astype(str))
            types = _column(where, cell_type_key).iloc[reference].astype(str).to_numpy()
            shared = np.isin(types, list(predicted))
            if reference_indices is None:
                reference = reference[~shared]
            elif (shared & (codes[reference] == target_code)).any():
                leaked = sorted(set(types[shared & (codes[reference] == target_code)]))
                raise ValueError(
                    f"reference_indices holds {self.conditions[target_code]!r} cells of "
                    f"{leaked}, the cell types being predicted: their real response would leak "
                    "into the prediction. Pass reference cells of other types only, or "
                    "reference_indices=None."
                )
        groups = []
        for code, role in ((source_code, "source"), (target_code, "target")):
            rows = reference[codes[reference] == code]
            if len(rows) < 2:
                raise ValueError(
                    f"The reference holds {len(rows)} cells of the {role} condition "
                    f"{self.conditions[code]!r}; it needs at least 2. Pass reference_indices with "
                    "cells of both conditions (e.g. the other cell types)."
                )
            if where is adata:
                self._check_data(where, rows)
            groups.append((where, rows))
        return groups

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
        obs[self.condition_key] = pd.Categorical(
            [target_condition] * len(obs), categories=self.conditions
        )
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


def _one_condition(own: np.ndarray, method: str) -> str:
    if len(set(own)) != 1:
        raise ValueError(
            f"method={method!r} needs one source condition, but the selected cells have "
            f"{sorted(set(own))}. Pass source_condition or select cells of one condition."
        )
    return own[0]


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


def _neuron_edit(
    cells: Cells,
    source: Cells,
    target: Cells,
    layer: str,
    n_percentiles: int,
    source_code: int,
    target_code: int,
) -> tuple[int, Cells]:
    edited = neuron_edit(
        cells[layer].numpy(), source[layer].numpy(), target[layer].numpy(), n_percentiles
    )
    # An edited z is decoded through g1 with the source condition; an edited y is already the
    # target's MMD-layer output.
    return (source_code if layer == "z" else target_code), {layer: torch.as_tensor(edited)}


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
