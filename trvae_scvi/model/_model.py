"""The trVAE model: condition transfer with an MMD-regularised first decoder layer."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)

from trvae_scvi.module import TRVAEModule
from trvae_scvi.module._module import ReconLoss
from trvae_scvi.nn import PAPER_KERNEL_WIDTHS, neuron_edit

from ._data_splitting import ConditionBalancedDataSplitter
from ._training_plan import TRVAETrainingPlan
from ._validation import (
    check_can_store,
    check_choice,
    check_counts,
    check_finite,
    check_indices,
    check_known_conditions,
    check_same_genes,
    gene_means,
    has_negative,
    validate_setup,
)

logger = logging.getLogger(__name__)


class TRVAE(RNASeqMixin, VAEMixin, ArchesMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Transfer VAE (trVAE) :cite:p:`Lotfollahi2020`.

    A conditional VAE whose first decoder layer ``y = g1(z, s)`` is made condition-invariant
    by a maximum mean discrepancy (MMD) penalty. Cells encoded with their own condition and
    decoded with another are predictions of how they would look in that condition, also for
    (cell type, condition) pairs never seen in training.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    hidden_sizes
        Encoder widths; the decoder mirrors them, so ``hidden_sizes[-1]`` is the width of the MMD
        layer. The default ``(800, 800, 128)`` is the architecture of the trVAE paper (Table 3).
    n_latent
        Dimension of z. 20, as in the paper's own Kang PBMC runs.
    dropout_rate
        Dropout after every hidden layer. The paper used 0.2; 0 (with no normalisation) scored
        higher on average over the held-out cell types of the first screen (NK and CD4T; the
        README's settings table says where it is).
    normalization
        ``"none"``, ``"batch"`` (the paper's) or ``"layer"``. Batch norm (with dropout
        0.2) lowered the held-out score on NK in the same screen (0.825 vs 0.953) and raised it
        on CD4T (0.966 vs 0.943); the average favoured no normalisation.
    activation
        ``"leaky_relu"`` (slope 0.2, the paper's), ``"relu"``, ``"elu"`` or ``"gelu"``.
    recon_loss
        ``"mse"`` on log-normalised data (the paper's setting), or ``"nb"``/``"zinb"`` on raw
        counts, with observed library size and a per-gene-and-condition dispersion.
    alpha
        Weight of the KL divergence. The reconstruction is a sum over genes, so a small weight
        keeps z informative, as the paper's ``alpha/eta = 1e-7`` did.
    beta
        Weight of the MMD penalty (100, the paper's).
    mmd_on
        ``"y"``: MMD on the first decoder layer (trVAE). ``"z"``: on the latent (MMD-CVAE).
        ``beta=0`` gives a plain CVAE. On the bundled Kang data (7 held-out cell types, 3
        seeds; ``benchmarks/results/kang_holdout.md``) ``"z"`` predicted the means of the DEGs
        better (R² 0.918 vs 0.891) and their change about as well (r 0.930 vs 0.936); the
        trVAE paper found ``"y"`` better with about 8 times more training cells.
    kernel_widths
        Squared bandwidths of the multi-scale RBF kernel (the paper's 19 values by default).
    mse_output_activation
        ``"linear"`` or ``"relu"`` (the paper's). With ReLU, genes that are zero in most cells
        can get stuck at 0 (no gradient); ``"linear"`` cannot, at the price of slightly
        negative values for such genes, and scored higher in the first screen. ``"relu"`` needs
        non-negative data. Only used with ``recon_loss="mse"``.

    Examples
    --------
    >>> import trvae_scvi
    >>> adata = trvae_scvi.datasets.kang2018()
    >>> trvae_scvi.TRVAE.setup_anndata(adata, condition_key="condition")
    >>> model = trvae_scvi.TRVAE(adata)
    >>> model.train(max_epochs=5)  # doctest: +SKIP
    >>> pred = model.predict(
    ...     indices=np.where(adata.obs["condition"] == "control")[0],
    ...     target_condition="stimulated",
    ... )  # doctest: +SKIP

    """

    _module_cls = TRVAEModule
    _data_splitter_cls = ConditionBalancedDataSplitter
    _training_plan_cls = TRVAETrainingPlan

    def __init__(
        self,
        adata: AnnData,
        hidden_sizes: Sequence[int] = (800, 800, 128),
        n_latent: int = 20,
        dropout_rate: float = 0.0,
        normalization: Literal["batch", "layer", "none"] = "none",
        activation: Literal["leaky_relu", "relu", "elu", "gelu"] = "leaky_relu",
        recon_loss: ReconLoss = "mse",
        alpha: float = 1e-3,
        beta: float = 100.0,
        mmd_on: Literal["y", "z"] = "y",
        kernel_widths: Sequence[float] = PAPER_KERNEL_WIDTHS,
        mse_output_activation: Literal["relu", "linear"] = "linear",
    ):
        super().__init__(adata)
        check_choice("recon_loss", recon_loss, ("mse", "nb", "zinb"))
        check_choice("mmd_on", mmd_on, ("y", "z"))
        check_choice("normalization", normalization, ("batch", "layer", "none"))
        check_choice("activation", activation, ("leaky_relu", "relu", "elu", "gelu"))
        check_choice("mse_output_activation", mse_output_activation, ("relu", "linear"))
        if len(hidden_sizes) == 0 or any(int(h) < 1 for h in hidden_sizes):
            raise ValueError(
                f"hidden_sizes={tuple(hidden_sizes)!r} must be a non-empty list of positive "
                "widths, e.g. (800, 800, 128)."
            )
        if n_latent < 1:
            raise ValueError(f"n_latent={n_latent!r} must be a positive integer, e.g. 20.")
        if alpha < 0 or beta < 0:
            raise ValueError(
                f"alpha={alpha!r} and beta={beta!r} must be non-negative (beta=0 is a CVAE)."
            )
        if len(kernel_widths) == 0 or any(w <= 0 for w in kernel_widths):
            raise ValueError(
                f"kernel_widths={tuple(kernel_widths)!r} must be a non-empty list of positive "
                "squared bandwidths."
            )
        matrix, where = self._registered_matrix(self.adata)
        if recon_loss in ("nb", "zinb"):
            check_counts(matrix, where, recon_loss)
        elif mse_output_activation == "relu" and has_negative(matrix):
            raise ValueError(
                f"{where} has negative values, which mse_output_activation='relu' cannot "
                "reconstruct. Pass mse_output_activation='linear' for scaled data."
            )

        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_conditions=self.summary_stats.n_batch,
            hidden_sizes=tuple(int(h) for h in hidden_sizes),
            n_latent=n_latent,
            dropout_rate=dropout_rate,
            normalization=normalization,
            activation=activation,
            recon_loss=recon_loss,
            alpha=alpha,
            beta=beta,
            mmd_on=mmd_on,
            kernel_widths=kernel_widths,
            mse_output_activation=mse_output_activation,
        )
        self.module.init_output_bias(torch.as_tensor(gene_means(matrix), dtype=torch.float32))
        self._model_summary_string = (
            f"trVAE: hidden_sizes={tuple(hidden_sizes)}, n_latent={n_latent}, "
            f"recon_loss={recon_loss}, alpha={alpha}, beta={beta}, mmd_on={mmd_on}, "
            f"conditions={list(self.conditions)}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        condition_key: str | None = None,
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register the expression matrix and the condition column of ``adata``.

        Parameters
        ----------
        adata
            AnnData with cells in rows; dense or scipy sparse matrices (kept sparse).
        condition_key
            Column of ``adata.obs`` with the condition of each cell (at least two values).
        layer
            Layer with the expression to model; ``None`` uses ``adata.X``. Log-normalised values
            for ``recon_loss="mse"``, raw counts for ``"nb"``/``"zinb"``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Notes
        -----
        Like every scvi-tools model, registration adds ``adata.obs["_scvi_batch"]`` (the
        condition codes) and ``adata.uns["_scvi_uuid"]``/``["_scvi_manager_uuid"]``; nothing
        else in ``adata`` is changed.

        Examples
        --------
        >>> import trvae_scvi
        >>> adata = trvae_scvi.datasets.kang2018()
        >>> trvae_scvi.TRVAE.setup_anndata(adata, condition_key="condition")

        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        # A transfer from a saved registry (load, query mapping) has checked all this already.
        if "source_registry" not in kwargs:
            validate_setup(adata, condition_key, layer)
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            # Registered as scvi-tools' batch field so that `transform_batch` and query
            # mapping treat the condition as the covariate to swap or extend.
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, condition_key),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @property
    def conditions(self) -> np.ndarray:
        """Condition categories, in the order of their codes."""
        return np.asarray(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        )

    @property
    def condition_key(self) -> str:
        """The ``adata.obs`` column registered as the condition."""
        return self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).original_key

    def _registered_matrix(self, adata: AnnData) -> tuple:
        """The registered expression matrix of ``adata`` and its name for messages."""
        layer = self.adata_manager.data_registry[REGISTRY_KEYS.X_KEY].attr_key
        if layer is None:
            return adata.X, "adata.X"
        return adata.layers[layer], f"adata.layers[{layer!r}]"

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        condition_balanced: bool = True,
        early_stopping: bool = False,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        """Train with scvi-tools' training plan and runner.

        Parameters
        ----------
        max_epochs
            Number of passes over the training cells. ``None``: 60 up to 20,000 cells, then
            fewer in proportion to keep the number of steps about constant. On the 1,975 Kang
            cells, 150 epochs predicted held-out cell types better in one seed's screen (see the
            README's settings table), at 2.5 times the training time.
        batch_size
            Cells per mini-batch.
        condition_balanced
            Draw training cells so that every condition fills about the same share of each
            mini-batch (default, as in the paper): the MMD can only compare conditions that are
            in the batch. ``False`` uses plain shuffling. See
            :class:`~trvae_scvi.model.ConditionBalancedDataSplitter`.
        early_stopping
            Stop when the validation loss stops improving (see :class:`scvi.train.Trainer`).
        plan_kwargs
            Passed to :class:`scvi.train.TrainingPlan` (e.g. ``lr``, ``weight_decay``). The KL
            warm-up is off by default (the paper has none); set ``n_epochs_kl_warmup`` to use one.
            The default Adam runs as torch's fused kernel (see
            :class:`~trvae_scvi.model.TRVAETrainingPlan`).
        datasplitter_kwargs
            Passed to the data splitter.
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``train_size``,
            ``accelerator``, ``devices``, ``strategy``, ...).

        Examples
        --------
        >>> model.train(max_epochs=100, batch_size=256)  # doctest: +SKIP

        """
        self._check_data(self.adata)
        if max_epochs is None:
            max_epochs = max(1, min(60, round(60 * 20_000 / self.adata.n_obs)))
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs={max_epochs!r} must be a positive integer.")
        if int(batch_size) < 2:
            raise ValueError(
                f"batch_size={batch_size!r} must be at least 2: the MMD compares cells within a "
                "batch."
            )
        plan_kwargs = {"n_epochs_kl_warmup": None, **(plan_kwargs or {})}
        datasplitter_kwargs = {
            "condition_balanced": condition_balanced,
            **(datasplitter_kwargs or {}),
        }
        return super().train(
            max_epochs=int(max_epochs),
            batch_size=int(batch_size),
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **kwargs,
        )

    # ------------------------------------------------------------------ outputs
    def _condition_code(self, condition: str, argument: str) -> int:
        categories = list(self.conditions)
        if condition not in categories:
            raise ValueError(
                f"{argument}={condition!r} is not a condition the model was trained on. "
                f"Known conditions: {categories}."
            )
        return categories.index(condition)

    def _check_data(self, adata: AnnData, rows: np.ndarray | None = None) -> None:
        """Finite values (and counts, for count models) in the registered matrix's ``rows``."""
        matrix, where = self._registered_matrix(adata)
        check_finite(matrix, where, rows)
        if self.module.is_count_model:
            check_counts(matrix, where, self.module.recon_loss, rows)

    def _prepare(
        self, adata: AnnData | None, indices: Sequence[int] | None
    ) -> tuple[AnnData, np.ndarray]:
        """Validate an output method's AnnData and selection."""
        self._check_if_trained(warn=False)
        if adata is not None and adata is not self.adata:
            if not isinstance(adata, AnnData):
                raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
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
    ) -> dict[str, torch.Tensor]:
        """Posterior mean z, MMD-layer output y, log library and the condition used to encode.

        Cells are encoded with their own condition, or all with ``source_code``.
        """
        self.module.eval()
        parts = {"z": [], "y": [], "library": [], "condition": []}
        for tensors in self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size):
            condition = tensors[REGISTRY_KEYS.BATCH_KEY]
            if source_code is not None:
                condition = torch.full_like(condition, source_code)
            inference = self.module.inference(tensors[REGISTRY_KEYS.X_KEY], condition)
            z = inference["qz"].loc
            parts["z"].append(z.cpu())
            parts["y"].append(self.module.mmd_representation(z, condition).cpu())
            parts["library"].append(inference["library"].cpu())
            parts["condition"].append(condition.cpu())
        return {key: torch.cat(value) for key, value in parts.items()}

    @torch.inference_mode()
    def _decode(
        self,
        library: torch.Tensor,
        condition: torch.Tensor | int,
        z: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        batch_size: int | None = None,
        sample: bool = False,
        mse_noise: tuple[torch.Tensor, bool] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode z with ``condition`` (codes, or one code for all), or decode y directly.

        Returns the expected expression in the registered data's space (with ``sample``, a
        draw) and, for count models, the normalised expression (``px.scale``). Count models
        draw from ``px``; ``mse`` draws add noise with ``mse_noise = (per-gene sd, clip at 0)``.
        """
        self.module.eval()
        n_cells = library.shape[0]
        if not torch.is_tensor(condition):
            condition = torch.full((n_cells, 1), int(condition), dtype=torch.long)
        batch_size = batch_size or 1024
        # Filled in place: one copy of the output in memory, not a list of parts plus their
        # concatenation (which tripled the peak memory of large predictions).
        prediction = np.empty((n_cells, self.module.n_input), dtype=np.float32)
        scale = prediction.copy() if self.module.is_count_model else None
        for start in range(0, n_cells, batch_size):
            rows = slice(start, start + batch_size)
            if y is None:
                y_rows = self.module.mmd_representation(z[rows], condition[rows])
            else:
                y_rows = y[rows]
            px = self.module.decode_mmd_representation(y_rows, library[rows], condition[rows])
            if not sample:
                values = px.mean
            elif self.module.is_count_model:
                values = px.sample()
            else:
                sd, clip = mse_noise
                values = px.mean + torch.randn_like(px.mean) * sd.to(px.mean.device)
                values = values.clamp_min(0.0) if clip else values
            prediction[rows] = values.cpu().numpy()
            if scale is not None:
                scale[rows] = px.scale.cpu().numpy()
        return prediction, scale

    @torch.inference_mode()
    def _residual_noise(
        self, target_code: int, batch_size: int | None
    ) -> tuple[torch.Tensor, bool]:
        """Per-gene sd of the reconstruction residuals of the model's cells of one condition.

        Also whether those cells' values are all non-negative (then draws are clipped at 0).
        """
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        rows = np.flatnonzero(codes == target_code)
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
        >>> z = model.get_latent_representation(add_to_adata=True)  # doctest: +SKIP
        >>> adata.obsm["X_trVAE"].shape  # doctest: +SKIP

        """
        adata, indices = self._prepare(adata, indices)
        check_can_store(adata, "obsm", key_added, add_to_adata, overwrite, indices)
        latent = super().get_latent_representation(
            adata=adata, indices=indices, give_mean=give_mean, batch_size=batch_size, **kwargs
        )
        if add_to_adata:
            _store(adata, "obsm", key_added, latent)
        return latent

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

        This is the representation the MMD makes condition-invariant; use it to integrate
        conditions (e.g. a UMAP of cell types without the condition effect).

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
        >>> y = model.get_mmd_representation(add_to_adata=True)  # doctest: +SKIP

        """
        adata, indices = self._prepare(adata, indices)
        check_can_store(adata, "obsm", key_added, add_to_adata, overwrite, indices)
        representation = self._encode(adata, indices, None, batch_size)["y"].numpy()
        if add_to_adata:
            _store(adata, "obsm", key_added, representation)
        return representation

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        target_condition: str | None = None,
        source_condition: str | None = None,
        method: Literal["transfer", "latent_shift", "neuron_edit"] = "transfer",
        reference_indices: Sequence[int] | None = None,
        neuron_edit_layer: Literal["y", "z"] = "y",
        n_percentiles: int = 100,
        sample: bool = False,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predict how cells would look in ``target_condition``.

        ``method`` chooses how, always with this model's encoder and decoder, so that only the
        method differs:

        - ``"transfer"`` (trVAE): encode each cell with its own condition (or
          ``source_condition``), decode with ``target_condition``.
        - ``"latent_shift"`` (scGen-style vector arithmetic): add the difference between the
          mean z of the target and of the source cells of the reference to each cell's z, and
          decode with the source condition.
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
            For the reference-based methods: the cells whose source and target conditions
            define the shift or the map (e.g. the other cell types). ``None``: every cell of
            ``adata`` not in ``indices``.
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
        batch_size
            Cells per mini-batch.

        Returns
        -------
        anndata.AnnData
            The predicted cells, with the same ``var_names``; ``obs`` a copy of the cells'
            ``obs`` with the condition column set to the target; ``X`` the prediction in the
            registered data's space (log-normalised values for ``"mse"``; for ``"nb"``/``"zinb"``
            the expected counts at each cell's observed library size, including the
            zero-inflation of ``"zinb"``, plus ``layers["log_normalized"] =
            log1p(1e4 * px.scale)``); ``uns["trVAE_predict"]`` the method, source, target and
            model settings. ``obs["<condition_key>_source"]`` records the condition each cell
            was encoded with.

        Examples
        --------
        >>> is_nk = adata.obs.cell_type == "NK"  # doctest: +SKIP
        >>> ctrl_nk = np.flatnonzero(is_nk & (adata.obs.condition == "control"))  # doctest: +SKIP
        >>> pred = model.predict(indices=ctrl_nk, target_condition="stimulated")  # doctest: +SKIP
        >>> others = np.flatnonzero(~is_nk)  # doctest: +SKIP
        >>> edited = model.predict(
        ...     indices=ctrl_nk,
        ...     target_condition="stimulated",
        ...     method="neuron_edit",
        ...     reference_indices=others,
        ... )  # doctest: +SKIP

        """
        if target_condition is None:
            raise ValueError(f"target_condition is required; pass one of {list(self.conditions)}.")
        check_choice("method", method, ("transfer", "latent_shift", "neuron_edit"))
        check_choice("neuron_edit_layer", neuron_edit_layer, ("y", "z"))
        adata, indices = self._prepare(adata, indices)
        target_code = self._condition_code(target_condition, "target_condition")
        own = adata.obs[self.condition_key].iloc[indices].astype(str).to_numpy()
        if method != "transfer" and source_condition is None:
            if len(set(own)) != 1:
                raise ValueError(
                    f"method={method!r} needs one source condition, but the selected cells have "
                    f"{sorted(set(own))}. Pass source_condition or select cells of one condition."
                )
            source_condition = own[0]
        source_code = (
            None
            if source_condition is None
            else self._condition_code(source_condition, "source_condition")
        )
        cells = self._encode(adata, indices, source_code, batch_size)
        decode_options = {"batch_size": batch_size, "sample": sample}
        if sample and not self.module.is_count_model:
            decode_options["mse_noise"] = self._residual_noise(target_code, batch_size)
        if method == "transfer":
            prediction, scale = self._decode(
                cells["library"], target_code, z=cells["z"], **decode_options
            )
        else:
            source, target = self._reference_activations(
                adata, indices, reference_indices, source_code, target_code, batch_size
            )
            if method == "latent_shift":
                shift = target["z"].mean(0) - source["z"].mean(0)
                prediction, scale = self._decode(
                    cells["library"], source_code, z=cells["z"] + shift, **decode_options
                )
            else:
                layer = neuron_edit_layer
                edited = torch.as_tensor(
                    neuron_edit(
                        cells[layer].numpy(),
                        source[layer].numpy(),
                        target[layer].numpy(),
                        n_percentiles,
                    )
                )
                decode_input = {"z": edited} if layer == "z" else {"y": edited}
                decode_code = source_code if layer == "z" else target_code
                prediction, scale = self._decode(
                    cells["library"], decode_code, **decode_options, **decode_input
                )
        obs = adata.obs.iloc[indices].copy()
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith("_scvi")])
        obs[f"{self.condition_key}_source"] = pd.Categorical(
            own if source_condition is None else np.full(len(obs), source_condition)
        )
        obs[self.condition_key] = pd.Categorical(
            [target_condition] * len(obs), categories=self.conditions
        )
        predicted = AnnData(X=prediction, obs=obs, var=adata.var.copy())
        if scale is not None:
            predicted.layers["log_normalized"] = np.log1p(scale * 1e4)
        predicted.uns["trVAE_predict"] = {
            "method": method,
            "sample": sample,
            "target_condition": target_condition,
            "source_condition": "own" if source_condition is None else source_condition,
            "condition_key": self.condition_key,
            "model_settings": {
                k: _uns_safe(v) for k, v in self.init_params_["non_kwargs"].items()
            },
        }
        if method == "neuron_edit":
            predicted.uns["trVAE_predict"]["neuron_edit_layer"] = neuron_edit_layer
            predicted.uns["trVAE_predict"]["n_percentiles"] = n_percentiles
        return predicted

    def _reference_activations(
        self,
        adata: AnnData,
        indices: np.ndarray,
        reference_indices: Sequence[int] | None,
        source_code: int,
        target_code: int,
        batch_size: int | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Activations of the reference's source and target cells, each with its condition."""
        if reference_indices is None:
            reference = np.setdiff1d(np.arange(adata.n_obs), indices)
        else:
            reference = check_indices(adata, reference_indices)
        codes = np.asarray(
            self.get_anndata_manager(adata).get_from_registry(REGISTRY_KEYS.BATCH_KEY)
        ).ravel()
        groups = []
        for code, argument in ((source_code, "source"), (target_code, "target")):
            rows = reference[codes[reference] == code]
            if len(rows) < 2:
                raise ValueError(
                    f"reference_indices holds {len(rows)} cells of the {argument} condition "
                    f"{self.conditions[code]!r}; the shift needs at least 2. Pass reference cells "
                    "of both conditions (e.g. the other cell types)."
                )
            self._check_data(adata, rows)
            groups.append(self._encode(adata, rows, None, batch_size))
        return groups[0], groups[1]

    def get_corrected_expression(
        self,
        target_condition: str,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        add_to_adata: bool = False,
        layer_key: str | None = None,
        overwrite: bool = False,
    ) -> np.ndarray:
        """Decode every cell with one condition: expression with condition effects removed.

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
            Array of shape ``(n_cells, n_genes)`` in the registered data's space.

        Examples
        --------
        >>> model.get_corrected_expression("control", add_to_adata=True)  # doctest: +SKIP
        >>> adata.layers["trVAE_corrected_control"]  # doctest: +SKIP

        """
        adata, indices = self._prepare(adata, indices)
        target_code = self._condition_code(target_condition, "target_condition")
        layer_key = layer_key or f"trVAE_corrected_{target_condition}"
        check_can_store(adata, "layers", layer_key, add_to_adata, overwrite, indices)
        cells = self._encode(adata, indices, None, batch_size)
        corrected, _ = self._decode(
            cells["library"], target_code, z=cells["z"], batch_size=batch_size
        )
        if add_to_adata:
            _store(adata, "layers", layer_key, corrected)
        return corrected

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ) -> None:
        """Save the model (and optionally its AnnData) to a folder.

        The model is written to a new folder beside ``dir_path`` and moved into place only when
        complete, so an interrupted save never leaves a half-written model, and a model that was
        at ``dir_path`` stays loadable until the new one is there.

        Parameters
        ----------
        dir_path
            Folder to save to.
        prefix
            Prefix of the file names.
        overwrite
            Replace an existing ``dir_path``; without it an existing folder is an error.
        save_anndata
            Also save the AnnData, so that :meth:`load` needs none.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.

        Examples
        --------
        >>> model.save("trvae_model", save_anndata=True)  # doctest: +SKIP

        """
        dir_path = os.path.abspath(os.fspath(dir_path))
        if os.path.exists(dir_path) and not overwrite:
            raise ValueError(
                f"dir_path={dir_path!r} exists already. Pass overwrite=True to replace it, or "
                "choose another folder."
            )
        parent = os.path.dirname(dir_path)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".trvae-save-", dir=parent)
        try:
            super().save(
                staging, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs
            )
            if os.path.exists(dir_path):
                previous = staging + "-previous"
                os.replace(dir_path, previous)
                os.replace(staging, dir_path)
                shutil.rmtree(previous)
            else:
                os.replace(staging, dir_path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        **kwargs,
    ) -> TRVAE:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder the model was saved to.
        adata
            AnnData with the same genes, in the same order, and only known conditions; ``None``
            loads the AnnData saved with ``save_anndata=True``.
        accelerator, device, prefix, **kwargs
            As in :meth:`scvi.model.base.BaseModelClass.load`.

        Examples
        --------
        >>> model = trvae_scvi.TRVAE.load("trvae_model", adata)  # doctest: +SKIP

        """
        registry, var_names = _read_saved_model(dir_path, prefix)
        if adata is not None:
            check_same_genes(var_names, adata)
            condition_field = registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]
            check_known_conditions(
                adata,
                registry["setup_args"]["condition_key"],
                np.asarray(condition_field["state_registry"]["categorical_mapping"]),
            )
        return super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
        )


def _read_saved_model(dir_path: str, prefix: str | None) -> tuple[dict, np.ndarray]:
    """Registry and genes of a saved TRVAE; clear errors for missing, broken or foreign files."""
    model_file = os.path.join(os.fspath(dir_path), f"{prefix or ''}model.pt")
    if not os.path.isfile(model_file):
        raise FileNotFoundError(
            f"dir_path={os.fspath(dir_path)!r} holds no {os.path.basename(model_file)}; pass the "
            "folder given to `model.save`."
        )
    try:
        saved = torch.load(model_file, map_location="cpu", weights_only=False)
        registry = saved["attr_dict"]["registry_"]
        var_names = np.asarray(saved["var_names"]).astype(str)
    except Exception as error:
        raise ValueError(
            f"{model_file} is not a readable scvi-tools model (truncated or another format: "
            f"{type(error).__name__}: {error}). Save the model again with `model.save`."
        ) from error
    if registry.get("model_name") != "TRVAE":
        raise ValueError(
            f"{model_file} holds a {registry.get('model_name')!r} model, not a TRVAE; load it "
            "with its own class."
        )
    return registry, var_names


def _store(adata: AnnData, attr: str, key: str, value: np.ndarray) -> None:
    getattr(adata, attr)[key] = value
    logger.info("Wrote adata.%s[%r].", attr, key)


def _uns_safe(value):
    """Turn a model setting into something h5ad can store."""
    if isinstance(value, tuple | list):
        return np.asarray(value)
    return value
