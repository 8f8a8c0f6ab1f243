"""scvi-tools' inherited methods that need TRVAE-specific handling: made to work, or refused."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

import numpy as np
import pandas as pd
import rich.pretty  # noqa: F401  (scvi-tools' view_setup_method_args uses it without importing it)
from anndata import AnnData
from scvi.data._constants import _SETUP_ARGS_KEY

from ._outputs import OutputsMixin

logger = logging.getLogger(__name__)


def _unsupported(what: str, instead: str) -> NotImplementedError:
    return NotImplementedError(f"TRVAE does not support {what}. {instead}")


class InheritedMethodsMixin(OutputsMixin):
    """Overrides of scvi-tools' ``RNASeqMixin``, ``VAEMixin``, ``ArchesMixin`` and base methods.

    Count models (``nb``/``zinb``) keep scvi-tools' methods; ``mse`` models model log values
    with a loss rather than a noise distribution, so the methods that need one say what to use
    instead. Three base methods that fail in scvi-tools 1.4 for every model are repaired.
    Every public method of :class:`~trvae_scvi.TRVAE` is listed in ``tests/test_public_api.py``
    with whether it works or raises.
    """

    def _require_counts(self, what: str, instead: str) -> None:
        if not self.module.is_count_model:
            raise _unsupported(f"{what} with recon_loss='mse'", instead)

    def differential_expression(self, *args, **kwargs) -> pd.DataFrame:
        """scvi-tools' differential expression (count models only).

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.base.RNASeqMixin.differential_expression`.

        Returns
        -------
        pandas.DataFrame
            scvi-tools' differential expression table.

        Examples
        --------
        >>> count_model.differential_expression(groupby="condition", silent=True).shape[0] > 0
        True

        """
        self._require_counts(
            "differential_expression",
            "It compares expression frequencies, which log values are not: run "
            "scanpy.tl.rank_genes_groups on model.get_corrected_expression(...) instead.",
        )
        return super().differential_expression(*args, **kwargs)

    def get_feature_correlation_matrix(self, *args, **kwargs) -> pd.DataFrame:
        """scvi-tools' gene-gene correlation of denoised samples (count models only).

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.base.RNASeqMixin.get_feature_correlation_matrix`.

        Returns
        -------
        pandas.DataFrame
            Gene by gene correlation matrix.

        Examples
        --------
        >>> count_model.get_feature_correlation_matrix(n_samples=2).shape[0] == adata.n_vars
        True

        """
        self._require_counts(
            "get_feature_correlation_matrix",
            "Correlate the genes of model.get_corrected_expression(...) or of "
            "model.predict(..., sample=True).X instead.",
        )
        return super().get_feature_correlation_matrix(*args, **kwargs)

    def get_likelihood_parameters(self, *args, **kwargs) -> dict[str, np.ndarray]:
        """Mean, dispersion (and zero-inflation) of each cell's count likelihood.

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.base.RNASeqMixin.get_likelihood_parameters`.

        Returns
        -------
        dict
            ``"mean"``, ``"dispersions"`` and, for ``zinb``, ``"dropout"``.

        Examples
        --------
        >>> sorted(count_model.get_likelihood_parameters())
        ['dispersions', 'mean']

        """
        self._require_counts(
            "get_likelihood_parameters",
            "Its decoded means are model.get_normalized_expression(); the unit-variance "
            "Gaussian of the loss has no other parameter.",
        )
        return super().get_likelihood_parameters(*args, **kwargs)

    def get_latent_library_size(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Library size of each cell: TRVAE uses the observed one (the sum of its counts).

        Parameters
        ----------
        adata
            AnnData registered like the training data; ``None`` uses the model's.
        indices
            Cells to use; ``None`` uses all.
        give_mean
            Ignored: the library size is observed, not inferred.
        batch_size
            Ignored; kept for scvi-tools' signature.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_cells, 1)``: total counts of each cell (at least 1).

        Examples
        --------
        >>> count_model.get_latent_library_size().shape == (adata.n_obs, 1)
        True

        """
        self._require_counts("get_latent_library_size", "Log data have no library size to infer.")
        adata, indices = self._prepare(adata, indices)
        return np.exp(self._encode(adata, indices, None, batch_size)["library"].numpy())

    def get_marginal_ll(self, *args, **kwargs) -> NoReturn:
        """Not available: TRVAE has no importance-sampled marginal likelihood.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Returns
        -------
        None
            Always raises :class:`NotImplementedError`.

        Examples
        --------
        >>> model.get_marginal_ll()
        Traceback (most recent call last):
        NotImplementedError: TRVAE does not support get_marginal_ll. ...

        """
        raise _unsupported(
            "get_marginal_ll",
            "Use model.get_elbo() (a lower bound) or model.get_reconstruction_error().",
        )

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> NoReturn:
        """Not available: TRVAE models were never saved in scvi-tools' legacy format.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Returns
        -------
        None
            Always raises :class:`NotImplementedError`.

        Examples
        --------
        >>> trvae_scvi.TRVAE.convert_legacy_save("old_model", "new_model")
        Traceback (most recent call last):
        NotImplementedError: TRVAE does not support convert_legacy_save. ...

        """
        raise _unsupported(
            "convert_legacy_save", "Every TRVAE save is current: load it with TRVAE.load."
        )

    @classmethod
    def setup_annbatch(cls, *args, **kwargs) -> NoReturn:
        """Not available: scvi-tools' annbatch loader (1.5) does not draw the batches TRVAE needs.

        The MMD compares the conditions inside each mini-batch, so TRVAE trains on
        condition-balanced batches drawn from an AnnData registered with :meth:`setup_anndata`.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Returns
        -------
        None
            Always raises :class:`NotImplementedError`.

        Examples
        --------
        >>> trvae_scvi.TRVAE.setup_annbatch(paths=["cells.h5ad"])
        Traceback (most recent call last):
        NotImplementedError: TRVAE does not support setup_annbatch. ...

        """
        raise _unsupported(
            "setup_annbatch",
            "Its MMD needs condition-balanced mini-batches: register an AnnData with "
            "TRVAE.setup_anndata (a sparse X stays sparse in memory).",
        )

    @staticmethod
    def prepare_query_mudata(*args, **kwargs) -> NoReturn:
        """Not available: TRVAE models AnnData, not MuData.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Returns
        -------
        None
            Always raises :class:`NotImplementedError`.

        Examples
        --------
        >>> trvae_scvi.TRVAE.prepare_query_mudata(None, "model_dir")
        Traceback (most recent call last):
        NotImplementedError: TRVAE does not support prepare_query_mudata. ...

        """
        raise _unsupported(
            "prepare_query_mudata",
            "Use TRVAE.prepare_query_anndata with the RNA AnnData.",
        )

    def get_importance_weights(self, *args, **kwargs) -> NoReturn:
        """Not available: importance weights need a marginal likelihood, which TRVAE has not.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Returns
        -------
        None
            Always raises :class:`NotImplementedError`.

        Examples
        --------
        >>> model.get_normalized_expression(n_samples_overall=10, weights="importance")
        Traceback (most recent call last):
        NotImplementedError: TRVAE does not support get_importance_weights. ...

        """
        raise _unsupported(
            "get_importance_weights",
            "Use get_normalized_expression with weights='uniform' (the default).",
        )

    def differential_abundance(self, *args, overwrite: bool = False, **kwargs) -> None:
        """scvi-tools' differential abundance, refusing to replace ``obsm["da_log_probs"]``.

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.base.VAEMixin.differential_abundance` (e.g. ``sample_key``).
        overwrite
            Replace an existing ``adata.obsm["da_log_probs"]``.

        Returns
        -------
        None
            The log densities are written to ``adata.obsm["da_log_probs"]``.

        Examples
        --------
        >>> model.differential_abundance(sample_key="condition")
        >>> adata.obsm["da_log_probs"].shape[0] == adata.n_obs
        True

        """
        adata = self._validate_anndata(kwargs.get("adata"))
        if "da_log_probs" in adata.obsm and not overwrite:
            raise ValueError(
                'adata.obsm["da_log_probs"] exists already. Pass overwrite=True to replace it.'
            )
        super().differential_abundance(*args, **kwargs)
        logger.info("Wrote adata.obsm['da_log_probs'].")

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the registry of the model's AnnData.

        Parameters
        ----------
        hide_state_registries
            Print only the summary, without each field's state.

        Returns
        -------
        None
            The registry is printed.

        Examples
        --------
        >>> model.view_registry(hide_state_registries=True)
        Anndata setup with scvi-tools version ...

        """
        # scvi-tools 1.4's own version reads an attribute (`_registry`) models do not have.
        self.adata_manager.view_registry(hide_state_registries=hide_state_registries)

    def update_setup_method_args(self, setup_method_args: dict) -> None:
        """Update the setup arguments stored in the model's registry.

        Parameters
        ----------
        setup_method_args
            Keyword arguments of :meth:`setup_anndata` to store.

        Returns
        -------
        None
            ``model.registry_["setup_args"]`` is updated.

        Examples
        --------
        >>> model.update_setup_method_args({"layer": None})
        >>> model.registry_["setup_args"]["layer"] is None
        True

        """
        # scvi-tools 1.4's own version writes to an attribute (`_registry`) models do not have.
        self.registry_[_SETUP_ARGS_KEY].update(setup_method_args)

    def get_normalized_expression(
        self, *args, weights: str | None = None, **kwargs
    ) -> pd.DataFrame | np.ndarray:
        """scvi-tools' decoded expression (``transform_batch`` decodes with another condition).

        For ``mse`` models this is the decoded log expression; for count models the expression
        frequencies times ``library_size``. Only uniform weights over posterior samples.

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.base.RNASeqMixin.get_normalized_expression`.
        weights
            ``None`` or ``"uniform"``; ``"importance"`` needs a marginal likelihood, which
            TRVAE has not.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            As scvi-tools returns it; for training data without negative values floored at 0,
            like every output.

        Examples
        --------
        >>> expression = model.get_normalized_expression(transform_batch="stimulated")
        >>> expression.shape == adata.shape
        True

        """
        if weights == "importance":
            self.get_importance_weights()
        expression = super().get_normalized_expression(*args, weights=weights, **kwargs)
        if isinstance(expression, pd.DataFrame):
            values = self._in_data_domain(expression.to_numpy(copy=True))
            return pd.DataFrame(values, index=expression.index, columns=expression.columns)
        return self._in_data_domain(np.array(expression))
