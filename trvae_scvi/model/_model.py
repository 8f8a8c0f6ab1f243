"""The trVAE model: condition transfer with an MMD-regularised first decoder layer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)
from scvi.utils._docstrings import devices_dsp

from trvae_scvi.module import TRVAEModule
from trvae_scvi.module._module import ReconLoss, check_module_choices
from trvae_scvi.nn import PAPER_KERNEL_WIDTHS

from . import _calibration
from ._data_splitting import ConditionBalancedDataSplitter
from ._inherited import InheritedMethodsMixin
from ._prediction import PredictionMixin
from ._saved import SaveLoadMixin
from ._training_plan import TRVAETrainingPlan
from ._validation import (
    additive_condition_design,
    cell_type_column,
    check_against_registry,
    check_choice,
    check_image_shape,
    check_matrix,
    check_model_settings,
    combine_condition_columns,
    scan_matrix,
    validate_setup,
)

logger = logging.getLogger(__name__)


class TRVAE(
    PredictionMixin,
    InheritedMethodsMixin,
    SaveLoadMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Transfer VAE (trVAE) :cite:p:`Lotfollahi2020`.

    A conditional VAE made condition-invariant by a maximum mean discrepancy (MMD) penalty:
    on the first decoder layer ``y = g1(z, s)`` (``mmd_on="y"``, the paper's and the default),
    or on the latent space z with ``mmd_on="z"``. Cells encoded with their own condition and
    decoded with another are predictions of how they would look in that condition, also for
    (cell type, condition) pairs never seen in training.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    hidden_sizes
        Encoder widths; the decoder mirrors them, so ``hidden_sizes[-1]`` is the width of the MMD
        layer. ``None``: ``(800, 800, 128)``, the architecture of the trVAE paper (Table 3);
        for ``architecture="conv"``, ``(filters, width)`` of the convolutions and of the
        fully connected layers, ``None`` giving ``(32, 128)``.
    n_latent
        Dimension of z. 20, as in the paper's own Kang PBMC runs.
    dropout_rate
        Dropout after every hidden layer. The paper used 0.2; 0 with no normalisation beat
        the paper's batch norm with dropout 0.2 and scArches' layer norm with dropout 0.05 on
        the tuning tasks of ``benchmarks/tune_defaults.py`` (README, settings table).
    normalization
        ``"none"``, ``"batch"`` (the paper's) or ``"layer"``; see ``dropout_rate``.
    activation
        ``"leaky_relu"`` (slope 0.2, the paper's), ``"relu"``, ``"elu"`` or ``"gelu"``.
    recon_loss
        ``"mse"`` on log-normalised data (the paper's setting), or ``"nb"``/``"zinb"`` on raw
        counts, with observed library size and a per-gene-and-condition dispersion.
    eta
        Weight of the reconstruction (the paper's η).
    loss_reduction
        ``"sum"``: each cell's reconstruction summed over genes, its KL over latent
        dimensions; ``"mean"``: both averaged, with half the squared error for ``"mse"``, as
        in the paper's code, so that the balance of the terms does not change with the
        number of genes.
    alpha
        Weight of the KL divergence: the training plan's ``max_kl_weight``, which
        :meth:`train` sets to it.
    beta
        Weight of the MMD penalty (100, the paper's).
    mmd_on
        ``"y"`` (the default): MMD on the first decoder layer, where the trVAE paper puts it
        and what makes this model trVAE. ``"z"``: on the latent space, the default of version
        0.3 (chosen then on the tuning tasks by one task of 11); both are compared in the
        benchmarks (``docs/results.md``).
        ``beta=0`` gives a plain CVAE.
    kernel_widths
        Squared bandwidths of the multi-scale RBF kernel (the paper's 19 values by default).
    mse_output_activation
        ``"linear"`` or ``"relu"`` (the paper's). With ReLU, genes that are zero in most cells
        can get stuck at 0 (no gradient); ``"linear"`` cannot, at the price of slightly
        negative values for such genes, and scored higher on the tuning tasks of
        ``benchmarks/tune_defaults.py``. ``"relu"`` needs non-negative data. Only used with
        ``recon_loss="mse"``.
    architecture
        ``"mlp"``: fully connected layers, for cells. ``"conv"``: convolutions, for images
        stored as the rows of ``X`` (the paper's Morpho-MNIST network, Table 1, made smaller:
        the condition enters as an extra image channel in the encoder and in the MMD layer).
    image_shape
        ``(channels, height, width)`` of the images, for ``architecture="conv"``; its product
        must be the number of columns of ``X``, height and width divisible by 4.
    condition_encoding
        How conditions from several columns (``setup_anndata(condition_key=["donor",
        "stimulus"])``) enter the encoder and the MMD layer. ``"joint"``: one one-hot over
        their combinations, each combination learned on its own cells. ``"additive"``: each
        column's one-hot side by side, so that the first layers add a donor's effect to a
        stimulus's; a stimulus's response learned in one donor then carries over to another
        donor's cells (``benchmarks/cross_donor.py`` compares both). Not with
        :meth:`load_query_data` or ``architecture="conv"``.

    Examples
    --------
    >>> adata = trvae_scvi.datasets.kang2018()
    >>> trvae_scvi.TRVAE.setup_anndata(adata, condition_key="condition")
    >>> model = trvae_scvi.TRVAE(adata, hidden_sizes=(64, 32), n_latent=8)
    >>> model.train(max_epochs=1, enable_progress_bar=False)
    >>> control = np.flatnonzero(adata.obs["condition"] == "control")
    >>> model.predict(indices=control, target_condition="stimulated").shape == (
    ...     len(control), adata.n_vars
    ... )
    True

    """

    _module_cls = TRVAEModule
    _data_splitter_cls = ConditionBalancedDataSplitter
    _training_plan_cls = TRVAETrainingPlan

    def __init__(
        self,
        adata: AnnData,
        hidden_sizes: Sequence[int] | None = None,
        n_latent: int = 20,
        dropout_rate: float = 0.0,
        normalization: Literal["batch", "layer", "none"] = "none",
        activation: Literal["leaky_relu", "relu", "elu", "gelu"] = "leaky_relu",
        recon_loss: ReconLoss = "mse",
        eta: float = 1.0,
        loss_reduction: Literal["sum", "mean"] = "sum",
        alpha: float = 1e-3,
        beta: float = 100.0,
        mmd_on: Literal["y", "z"] = "y",
        kernel_widths: Sequence[float] = PAPER_KERNEL_WIDTHS,
        mse_output_activation: Literal["relu", "linear"] = "linear",
        architecture: Literal["mlp", "conv"] = "mlp",
        image_shape: Sequence[int] | None = None,
        condition_encoding: Literal["joint", "additive"] = "joint",
    ):
        super().__init__(adata)
        check_module_choices(
            recon_loss=recon_loss,
            loss_reduction=loss_reduction,
            mmd_on=mmd_on,
            normalization=normalization,
            activation=activation,
            mse_output_activation=mse_output_activation,
            architecture=architecture,
        )
        check_choice("condition_encoding", condition_encoding, ("joint", "additive"))
        if hidden_sizes is None:
            hidden_sizes = (32, 128) if architecture == "conv" else (800, 800, 128)
        if architecture == "conv":
            image_shape = check_image_shape(image_shape, self.summary_stats.n_vars, recon_loss)
        elif image_shape is not None:
            raise ValueError(
                f"image_shape={image_shape!r} is only used with architecture='conv'; pass "
                "architecture='conv' for images, or drop image_shape."
            )
        check_model_settings(hidden_sizes, n_latent, eta, alpha, beta, kernel_widths)
        matrix, where = self._registered_matrix(self.adata)
        scan = scan_matrix(matrix)
        check_matrix(scan, where, recon_loss)
        if recon_loss == "mse" and mse_output_activation == "relu" and scan.minimum < 0:
            raise ValueError(
                f"{where} has negative values, which mse_output_activation='relu' cannot "
                "reconstruct. Pass mse_output_activation='linear' for scaled data."
            )
        self.alpha = alpha
        # Count models scale their log-normalised outputs to this total (see `predict`).
        # Over cells with any count: a median of 0 (most cells empty) would scale all to 0.
        libraries = scan.cell_sums[scan.cell_sums > 0]
        self.median_library_size_ = float(np.median(libraries)) if len(libraries) else 1.0
        # The data's domain, which every output keeps to (saved with the model).
        self.non_negative_data_ = bool(scan.minimum >= 0)
        # Set by load_query_data: only the new conditions' weights train.
        self.mapped_query_ = False
        # Set by calibrate_predictor: the shrinkage predict uses and its inner scores.
        self.predictor_calibration_ = None
        design = None
        if condition_encoding == "additive":
            if architecture != "mlp":
                raise ValueError(
                    "condition_encoding='additive' works with architecture='mlp'; pass "
                    "condition_encoding='joint' for images."
                )
            setup_args = self.adata_manager.registry["setup_args"]
            design = additive_condition_design(self.conditions, setup_args["condition_key"])
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_conditions=self.summary_stats.n_batch,
            condition_design=design,
            hidden_sizes=tuple(int(h) for h in hidden_sizes),
            n_latent=n_latent,
            dropout_rate=dropout_rate,
            normalization=normalization,
            activation=activation,
            recon_loss=recon_loss,
            eta=eta,
            loss_reduction=loss_reduction,
            beta=beta,
            mmd_on=mmd_on,
            kernel_widths=kernel_widths,
            mse_output_activation=mse_output_activation,
            architecture=architecture,
            image_shape=image_shape,
        )
        gene_means = torch.as_tensor(scan.gene_sums / matrix.shape[0], dtype=torch.float32)
        self.module.init_output_bias(gene_means)
        self._model_summary_string = (
            f"trVAE: hidden_sizes={tuple(hidden_sizes)}, n_latent={n_latent}, "
            f"recon_loss={recon_loss}, alpha={alpha}, beta={beta}, mmd_on={mmd_on}, "
            f"conditions={list(self.conditions)} ({condition_encoding})"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        condition_key: str | Sequence[str] | None = None,
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register the expression matrix and the condition column of ``adata``.

        Parameters
        ----------
        adata
            AnnData with cells in rows; dense or scipy sparse matrices (kept sparse).
        condition_key
            Column of ``adata.obs`` with the condition of each cell (at least two values), or
            several columns (e.g. ``["donor", "stimulus"]``): their combinations are the
            conditions, in a new column ``adata.obs["donor_stimulus"]`` with values such as
            ``"101_stim"``. A target condition is then that value or the tuple
            ``("101", "stim")``.
        layer
            Layer with the expression to model; ``None`` uses ``adata.X``. Log-normalised values
            for ``recon_loss="mse"``, raw counts for ``"nb"``/``"zinb"``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Returns
        -------
        None
            ``adata`` is registered; see Notes for what that adds to it.

        Notes
        -----
        Like every scvi-tools model, registration adds ``adata.obs["_scvi_batch"]`` (the
        condition codes) and ``adata.uns["_scvi_uuid"]``/``["_scvi_manager_uuid"]``; with
        several condition columns, also their combination (see ``condition_key``). Nothing
        else in ``adata`` is changed.

        Examples
        --------
        >>> adata = trvae_scvi.datasets.kang2018()
        >>> trvae_scvi.TRVAE.setup_anndata(adata, condition_key="condition")

        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        condition_column = combine_condition_columns(adata, condition_key)
        if "source_registry" in kwargs:  # load or query mapping: check against the saved model
            check_against_registry(
                adata, kwargs["source_registry"], kwargs.get("extend_categories", False)
            )
        else:
            validate_setup(adata, condition_column, layer)
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            # Registered as scvi-tools' batch field so that `transform_batch` and query
            # mapping treat the condition as the covariate to swap or extend.
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, condition_column),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @devices_dsp.dedent
    def train(  # noqa: D417 (accelerator, devices: scvi-tools' shared docs)
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        batch_size: int = 128,
        early_stopping: bool = False,
        condition_balanced: bool = True,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with scvi-tools' training plan and runner.

        Parameters
        ----------
        max_epochs
            Number of passes over the training cells. ``None``: 60 up to 20,000 cells, then
            fewer in proportion (:func:`scvi.model.get_max_epochs_heuristic` with a cap of 60).
        %(param_accelerator)s
        %(param_devices)s
        train_size
            Share of cells to train on (scvi-tools' default when ``None``); the rest validate.
        validation_size
            Share of cells to validate on; ``None`` uses ``1 - train_size``.
        shuffle_set_split
            Shuffle cells before splitting them into training and validation sets.
        load_sparse_tensor
            Load sparse mini-batches as sparse tensors (faster on GPUs).
        batch_size
            Cells per mini-batch (at least 2: the MMD compares cells within a batch).
        early_stopping
            Stop when the validation loss stops improving (see :class:`scvi.train.Trainer`).
        condition_balanced
            Draw training cells so that every condition fills about the same share of each
            mini-batch (default, as in the paper): the MMD can only compare conditions that are
            in the batch. ``False`` uses plain shuffling. See
            :class:`~trvae_scvi.model.ConditionBalancedDataSplitter`.
        datasplitter_kwargs
            Passed to the data splitter (e.g. ``num_workers``, ``drop_last``).
        plan_kwargs
            Passed to :class:`~trvae_scvi.model.TRVAETrainingPlan` (e.g. ``lr``,
            ``weight_decay``). Its KL weight is the model's ``alpha``, with no warm-up (the
            paper has none); set ``n_epochs_kl_warmup`` to use one. A model made by
            :meth:`load_query_data` defaults to ``weight_decay=0``, which keeps its frozen
            weights exactly as they were.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``strategy``, ``enable_progress_bar``).

        Returns
        -------
        None
            The model is trained in place; ``model.history`` holds the loss curves.

        Examples
        --------
        >>> model.train(max_epochs=1, batch_size=256, enable_progress_bar=False)
        >>> "mmd_train" in model.history
        True

        """
        self._check_data(self.adata)
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs, epochs_cap=60)
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs={max_epochs!r} must be a positive integer.")
        if int(batch_size) < 2:
            raise ValueError(
                f"batch_size={batch_size!r} must be at least 2: the MMD compares cells within a "
                "batch."
            )
        plan_kwargs = dict(plan_kwargs or {})
        if "max_kl_weight" in plan_kwargs:
            raise ValueError(
                "plan_kwargs['max_kl_weight'] is the model's alpha; set it with "
                "TRVAE(adata, alpha=...) instead."
            )
        if self.mapped_query_:
            # Weight decay would move the weights query mapping froze (zero gradients).
            plan_kwargs.setdefault("weight_decay", 0.0)
        plan_kwargs = {"n_epochs_kl_warmup": None, **plan_kwargs, "max_kl_weight": self.alpha}
        return super().train(
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            load_sparse_tensor=load_sparse_tensor,
            batch_size=int(batch_size),
            early_stopping=early_stopping,
            datasplitter_kwargs={
                "condition_balanced": condition_balanced,
                **(datasplitter_kwargs or {}),
            },
            plan_kwargs=plan_kwargs,
            **trainer_kwargs,
        )

    def calibrate_predictor(
        self,
        cell_type_key: str,
        target_condition: str | Sequence[str],
        source_condition: str | Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        n_folds: int = 3,
        **train_kwargs,
    ) -> pd.DataFrame:
        """Learn from the training cells how far :meth:`predict` should trust this model.

        A group K-fold over the cell types measured in both conditions: for each of
        ``n_folds`` folds a model with this model's settings is trained without the
        ``target_condition`` cells of the fold's types, and each of those types is predicted
        from its ``source_condition`` cells, as :meth:`predict` predicts an unseen type, at
        every shrinkage toward the reference's measured mean change (0, 0.25, 0.5, 0.75, 1;
        1 is mean shift). The shrinkage with the best mean inner score (the mean of the
        top-100-DEG R² of means and the change correlation; ties go to the larger) becomes
        :meth:`predict`'s default for this pair of conditions (with ``method=None`` and
        ``shrinkage=None``), and the inner scores at it, per type, are the prediction's
        expected accuracy, written to ``uns["trVAE_predict"]["calibration"]``. Costs about
        ``n_folds`` trainings.

        Parameters
        ----------
        cell_type_key
            Column of ``obs`` with each cell's type: the groups held out in turn.
        target_condition
            Condition to be predicted.
        source_condition
            Condition predicted from; ``None``: the other condition, when there are two.
        exclude
            Types never held out, e.g. those to be predicted (types without
            ``target_condition`` cells are never held out).
        n_folds
            Folds of types (at most one type per fold): models trained.
        **train_kwargs
            Passed to :meth:`train` of each inner model. ``max_epochs`` defaults to the epochs
            this model trained for.

        Returns
        -------
        pandas.DataFrame
            Inner scores per held-out type and shrinkage (``group``, ``shrinkage``,
            ``r2_mean_deg``, ``change_r_deg``). The calibration is kept in
            ``model.predictor_calibration_`` and saved with the model.

        Examples
        --------
        >>> scores = model.calibrate_predictor(
        ...     "cell_type", "stimulated", exclude=["NK"], enable_progress_bar=False
        ... )
        >>> model.predictor_calibration_["shrinkage"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        True

        """
        pair = self._calibration_pair(target_condition, source_condition)
        if not self.is_trained_ or self.mapped_query_:
            raise ValueError(
                "calibrate_predictor needs a model trained with train() on its own data (not "
                "one made by load_query_data): it trains models with the same settings."
            )
        if int(n_folds) < 2:
            raise ValueError(f"n_folds={n_folds!r} must be an integer of at least 2.")
        types = cell_type_column(self.adata, cell_type_key)
        conditions = self.adata.obs[self.condition_key].astype(str).to_numpy()
        groups = _calibration.measured_groups(types, conditions, pair, list(exclude or ()))
        if len(groups) < 2:
            raise ValueError(
                f"cell_type_key={cell_type_key!r} has {len(groups)} type(s) with at least "
                f"{_calibration.MIN_CELLS} cells of both {list(pair)} outside exclude; "
                "calibration needs 2. Without it predict uses its fixed default shrinkage."
            )
        train_kwargs.setdefault("max_epochs", len(self.history["train_loss"]))
        folds = _calibration.folds(groups, int(n_folds))
        scores = pd.DataFrame(
            [
                row
                for held in folds
                for row in _calibration.fold_scores(self, held, cell_type_key, pair, train_kwargs)
            ]
        )
        self.predictor_calibration_ = _calibration.record(scores, cell_type_key, pair, folds)
        logger.info(
            "predict will shrink %s to %s predictions by %s (inner top-DEG R² %.3f).",
            *pair,
            self.predictor_calibration_["shrinkage"],
            self.predictor_calibration_["expected_r2_mean_deg"],
        )
        return scores

    def _calibration_pair(self, target_condition, source_condition) -> tuple[str, str]:
        """The (source, target) condition names of a calibration."""
        target = self.conditions[self._condition_code(target_condition, "target_condition")]
        if source_condition is not None:
            source = self.conditions[self._condition_code(source_condition, "source_condition")]
        elif len(self.conditions) == 2:
            source = next(c for c in self.conditions if c != target)
        else:
            raise ValueError(
                f"source_condition=None is ambiguous with {len(self.conditions)} conditions "
                f"({list(self.conditions)}); pass the condition to predict from."
            )
        if source == target:
            raise ValueError(
                f"source_condition={source!r} equals target_condition; pass two conditions."
            )
        return str(source), str(target)
