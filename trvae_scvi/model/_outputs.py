"""Outputs of TRVAE other than predictions, and the steps every output shares."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from ._validation import (
    COMBINED_SEPARATOR,
    check_can_store,
    check_indices,
    check_known_conditions,
    check_matrix,
    check_not_view,
    check_same_genes,
    scan_matrix,
)

logger = logging.getLogger(__name__)

Cells = dict[str, torch.Tensor]


class OutputsMixin:
    """Representations and corrected expression; the one encoding and one decoding loop.

    The base of TRVAE's other mixins: it uses only scvi-tools' ``BaseModelClass`` (the
    registry, the data loader, the checks), ``self.module`` and the attributes below, which
    ``TRVAE.__init__`` sets and ``save`` keeps.
    """

    non_negative_data_: bool  # the training data have no negative value: outputs stay >= 0
    median_library_size_: float  # count models' default target_sum

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        add_to_adata: bool = False,
        key_added: str = "X_trVAE",
        overwrite: bool = False,
        **kwargs,
    ) -> np.ndarray:
        """Latent representation z of each cell, encoded with its own condition.

        Parameters
        ----------
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to use (positions or boolean mask); ``None`` uses all.
        give_mean
            Return the posterior mean instead of a sample.
        batch_size
            Cells per mini-batch.
        add_to_adata
            Also write the result to ``adata.obsm[key_added]`` (needs all cells).
        key_added
            Key of ``adata.obsm`` to write; default ``"X_trVAE"``.
        overwrite
            Replace an existing ``adata.obsm[key_added]``.
        **kwargs
            Passed to :meth:`scvi.model.base.VAEMixin.get_latent_representation`.

        Returns
        -------
        numpy.ndarray
            Array of shape ``(n_cells, n_latent)``.

        Examples
        --------
        >>> z = model.get_latent_representation(add_to_adata=True)
        >>> adata.obsm["X_trVAE"].shape == (adata.n_obs, model.module.n_latent)
        True

        """
        if kwargs.get("dataloader") is not None:  # scvi-tools' own calls bring their loader
            return super().get_latent_representation(
                give_mean=give_mean, batch_size=batch_size, **kwargs
            )
        adata, indices = self._prepare(adata, indices)
        check_can_store(adata, "obsm", key_added, add_to_adata, overwrite, indices)
        latent = super().get_latent_representation(
            adata=adata, indices=indices, give_mean=give_mean, batch_size=batch_size, **kwargs
        )
        if add_to_adata:
            _store(adata, "obsm", key_added, latent)
        return latent

    def get_corrected_expression(
        self,
        target_condition: str | Sequence[str],
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        add_to_adata: bool = False,
        layer_key: str | None = None,
        overwrite: bool = False,
    ) -> np.ndarray:
        """Decode every cell with one condition: expression with condition effects removed.

        For cells of another condition this is trVAE's transfer as published: the expected
        values, without the decoder's error on the cells that :meth:`predict` keeps for
        ``mse`` models. For training data without negative values the output is floored at 0,
        like :meth:`predict`'s.

        Parameters
        ----------
        target_condition
            The condition every cell is decoded with.
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to use; ``None`` uses all.
        batch_size
            Cells per mini-batch.
        add_to_adata
            Also write the result to ``adata.layers[layer_key]`` (needs all cells).
        layer_key
            Layer to write; default ``f"trVAE_corrected_{target_condition}"``.
        overwrite
            Replace an existing layer of that name.

        Returns
        -------
        numpy.ndarray
            Array of shape ``(n_cells, n_genes)`` in the registered data's space (expected
            counts at each cell's library size for count models).

        Examples
        --------
        >>> corrected = model.get_corrected_expression("control", add_to_adata=True)
        >>> adata.layers["trVAE_corrected_control"].shape == adata.shape
        True

        """
        adata, indices = self._prepare(adata, indices)
        target_code = self._condition_code(target_condition, "target_condition")
        layer_key = layer_key or f"trVAE_corrected_{self.conditions[target_code]}"
        check_can_store(adata, "layers", layer_key, add_to_adata, overwrite, indices)
        cells = self._encode(adata, indices, None, batch_size)
        corrected = self._decode(cells["library"], target_code, batch_size, z=cells["z"])
        corrected = self._in_data_domain(corrected)
        if add_to_adata:
            _store(adata, "layers", layer_key, corrected)
        return corrected

    def get_mmd_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        add_to_adata: bool = False,
        key_added: str = "X_trVAE_mmd",
        overwrite: bool = False,
    ) -> np.ndarray:
        """Output ``y = g1(z, s)`` of the first decoder layer, with each cell's own condition.

        The paper's MMD layer: with ``mmd_on="y"`` (the default) the MMD makes it
        condition-invariant, and it is the representation to integrate conditions with (e.g. a
        UMAP of cell types without the condition effect). With ``mmd_on="z"`` the MMD acts on z
        (:meth:`get_latent_representation`) instead, and y carries the condition.

        Parameters
        ----------
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to use; ``None`` uses all.
        batch_size
            Cells per mini-batch.
        add_to_adata
            Also write the result to ``adata.obsm[key_added]`` (needs all cells).
        key_added
            Key of ``adata.obsm`` to write; default ``"X_trVAE_mmd"``.
        overwrite
            Replace an existing ``adata.obsm[key_added]``.

        Returns
        -------
        numpy.ndarray
            Array of shape ``(n_cells, hidden_sizes[-1])``.

        Examples
        --------
        >>> y = model.get_mmd_representation(add_to_adata=True)
        >>> adata.obsm["X_trVAE_mmd"].shape == (adata.n_obs, model.module.mmd_layer.n_output)
        True

        """
        adata, indices = self._prepare(adata, indices)
        check_can_store(adata, "obsm", key_added, add_to_adata, overwrite, indices)
        representation = self._encode(adata, indices, None, batch_size)["y"].numpy()
        if add_to_adata:
            _store(adata, "obsm", key_added, representation)
        return representation

    # ------------------------------------------------------------------ shared steps
    @property
    def conditions(self) -> np.ndarray:
        """Condition categories, in the order of their codes."""
        return np.asarray(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        )

    @property
    def condition_key(self) -> str:
        """The ``adata.obs`` column registered as the condition (combined, for several)."""
        return self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).original_key

    def _registered_matrix(self, adata: AnnData) -> tuple:
        """The registered expression matrix of ``adata`` and its name for messages."""
        layer = self.adata_manager.data_registry[REGISTRY_KEYS.X_KEY].attr_key
        if layer is None:
            return adata.X, "adata.X"
        return adata.layers[layer], f"adata.layers[{layer!r}]"

    def _registered_codes(self, adata: AnnData) -> np.ndarray:
        """Each cell's condition code in ``adata``."""
        manager = self.get_anndata_manager(adata)
        return np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()

    def _in_data_domain(
        self, values: np.ndarray, zeros: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        """``values`` in the training data's domain, in place: the one step every output takes.

        When the training data are non-negative (log-normalised expression, counts), floored
        at 0: a decoder with a linear output, a residual or a change added to a cell can give
        a negative value. ``zeros``, one of :data:`~trvae_scvi.model._domain.ZERO_RULES` bound
        to the cells, then sets values to 0 where the data would have zeros.
        """
        if self.non_negative_data_:
            np.maximum(values, 0.0, out=values)
            if zeros is not None:
                zeros(values)
        return values

    def _condition_code(
        self, condition: str | Sequence[str] | None, argument: str = "source_condition"
    ) -> int:
        categories = list(self.conditions)
        if isinstance(condition, tuple | list):  # the values of several condition columns
            condition = COMBINED_SEPARATOR.join(str(value) for value in condition)
        if condition is None:
            raise ValueError(f"{argument} is required; pass one of {categories}.")
        if condition not in categories:
            raise ValueError(
                f"{argument}={condition!r} is not a condition the model was trained on. "
                f"Pass one of {categories}."
            )
        return categories.index(condition)

    def _check_data(self, adata: AnnData, rows: np.ndarray | None = None) -> None:
        """One scan of the registered matrix's ``rows``: finite values (and counts)."""
        matrix, where = self._registered_matrix(adata)
        check_matrix(scan_matrix(matrix, rows), where, self.module.recon_loss)

    def _prepare(
        self, adata: AnnData | None, indices: Sequence[int] | None
    ) -> tuple[AnnData, np.ndarray]:
        """Validate an output method's AnnData and selection."""
        self._check_if_trained(warn=False)
        if adata is not None and adata is not self.adata:
            if not isinstance(adata, AnnData):
                raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
            # scvi-tools' validation would turn the user's view into a copy in place.
            check_not_view(adata)
            check_same_genes(self.adata.var_names, adata)
            check_known_conditions(adata, self.condition_key, self.conditions)
        adata = self._validate_anndata(adata)
        indices = check_indices(adata, indices)
        self._check_data(adata, indices)
        return adata, indices

    @torch.inference_mode()
    def _encode(
        self,
        adata: AnnData,
        indices: np.ndarray,
        source_code: int | None,
        batch_size: int | None,
        *,
        residual: bool = False,
    ) -> Cells:
        """Posterior mean z, its MMD-layer output y and log library of cells.

        Cells are encoded with their own condition, or all with ``source_code``. With
        ``residual`` (``mse`` models), also each cell's residual ``x - g(z, s)`` from its
        reconstruction with the condition it was encoded with: the decoder's error on it.
        """
        self.module.eval()
        parts = {"z": [], "y": [], "library": [], "residual": []}
        for tensors in self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size):
            x, condition = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.BATCH_KEY]
            if source_code is not None:
                condition = torch.full_like(condition, source_code)
            encoded = self.module.encode(x, condition)
            if residual:
                px = self.module.decode(encoded["library"], condition, y=encoded["y"])
                encoded["residual"] = x.to(px.mean.device) - px.mean
            for key, value in encoded.items():
                parts[key].append(value.cpu())
        return {key: torch.cat(value) for key, value in parts.items() if value}

    @torch.inference_mode()
    def _decode(
        self,
        library: torch.Tensor,
        condition_code: int,
        batch_size: int | None,
        *,
        sample: bool = False,
        residual: torch.Tensor | None = None,
        **decode_input: torch.Tensor,
    ) -> np.ndarray:
        """Decode ``z`` or ``y`` of cells with one condition: the one decoding loop.

        Returns expected values, plus ``residual`` where given (``mse``: each cell's own for
        draws, see :meth:`_encode`), or, with ``sample``, draws of count models from ``px``.
        """
        self.module.eval()
        n_cells = library.shape[0]
        condition = torch.full((n_cells, 1), int(condition_code), dtype=torch.long)
        batch_size = batch_size or 1024
        # Filled in place: one copy of the output in memory, not a list of parts plus their
        # concatenation (which tripled the peak memory of large predictions).
        values = np.empty((n_cells, self.module.n_input), dtype=np.float32)
        for start in range(0, n_cells, batch_size):
            rows = slice(start, start + batch_size)
            px = self.module.decode(
                library[rows], condition[rows], **{k: v[rows] for k, v in decode_input.items()}
            )
            if sample and self.module.is_count_model:
                drawn = px.sample()
            elif residual is not None:
                drawn = px.mean + residual[rows].to(px.mean.device)
            else:
                drawn = px.mean
            values[rows] = drawn.cpu().numpy()
        return values


def _store(adata: AnnData, attr: str, key: str, value: np.ndarray) -> None:
    getattr(adata, attr)[key] = value
    logger.info("Wrote adata.%s[%r].", attr, key)
