"""The trVAE module: a conditional VAE with an MMD penalty on the first decoder layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, Normal, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Distribution, kl_divergence

from trvae_scvi.nn import (
    ACTIVATIONS,
    ConditionalImageLayer,
    ConditionalMLP,
    ConvDecoder,
    ConvEncoder,
    PixelBias,
    mmd_between_conditions,
)

ReconLoss = Literal["mse", "nb", "zinb"]


def check_module_choices(**settings: str) -> None:
    """Raise for a setting of :class:`TRVAEModule` that is not one of its choices.

    :class:`~trvae_scvi.TRVAE` calls it before scanning the data, the module when built.
    """
    choices = {
        "normalization": ("batch", "layer", "none"),
        "activation": tuple(ACTIVATIONS),
        "recon_loss": ("mse", "nb", "zinb"),
        "loss_reduction": ("sum", "mean"),
        "mmd_on": ("y", "z"),
        "mse_output_activation": ("relu", "linear"),
        "architecture": ("mlp", "conv"),
    }
    for name, value in settings.items():
        if value not in choices[name]:
            raise ValueError(
                f"{name}={value!r} is not supported; choose one of {list(choices[name])}."
            )


class TRVAEModule(BaseModuleClass):
    """Transfer VAE (trVAE) module.

    Encoder ``f(x, s) -> z``; decoder ``g2(g1(z, s))``. The output ``y = g1(z, s)`` of the first
    decoder layer (the *MMD layer*) is pushed towards being condition-invariant by a maximum
    mean discrepancy penalty between the conditions of each mini-batch.

    Loss per mini-batch: ``mean(eta * reconstruction + kl_weight * KL) + beta * MMD``, where
    ``kl_weight`` is the training plan's (:class:`~trvae_scvi.TRVAE` sets it to ``alpha``), and
    the reconstruction and KL of each cell are sums or means over genes and latent dimensions
    (``loss_reduction``).

    The hyperparameters have no defaults here: :class:`~trvae_scvi.TRVAE` declares them (with
    their documentation) and passes them through.

    Parameters
    ----------
    n_input
        Number of genes.
    n_conditions
        Number of condition categories.
    condition_design
        ``None``: each condition enters the encoder and the MMD layer as one one-hot vector.
        Otherwise an ``(n_conditions, n_columns)`` table of each condition's code in each of
        the columns it combines (e.g. donor, stimulus): the columns' one-hot vectors enter
        side by side, so a condition's effect is the sum of its columns' (additive encoding).
    hidden_sizes
        Encoder widths; the decoder mirrors them, so ``hidden_sizes[-1]`` is the width of the MMD
        layer.
    n_latent
        Dimension of z.
    dropout_rate
        Dropout after every hidden layer.
    normalization
        ``"batch"``, ``"layer"`` or ``"none"``.
    activation
        Hidden activation, a key of :data:`trvae_scvi.nn.ACTIVATIONS`.
    recon_loss
        ``"mse"`` for log-normalised data, ``"nb"`` or ``"zinb"`` for counts.
    eta
        Weight of the reconstruction term.
    loss_reduction
        ``"sum"``: reconstruction summed over genes and KL over latent dimensions;
        ``"mean"``: both averaged, with half the squared error for ``"mse"`` (the trVAE
        paper's Keras loss, whose balance does not change with the number of genes).
    beta
        Weight of the MMD penalty.
    mmd_on
        ``"y"`` (first decoder layer, trVAE) or ``"z"`` (latent, MMD-CVAE ablation).
    kernel_widths
        Squared bandwidths of the RBF kernels of the MMD.
    mse_output_activation
        ``"relu"`` (non-negative log data, the paper) or ``"linear"`` (scaled data), for ``"mse"``.
    architecture
        ``"mlp"`` (fully connected, for cells) or ``"conv"`` (images, the paper's Table 1: the
        condition enters as an extra image channel; ``hidden_sizes = (filters, width)``).
    image_shape
        ``(channels, height, width)`` of the images, for ``"conv"``.

    Examples
    --------
    >>> from scvi import REGISTRY_KEYS
    >>> from trvae_scvi.nn import PAPER_KERNEL_WIDTHS
    >>> settings = dict(
    ...     hidden_sizes=(8, 4), n_latent=2, dropout_rate=0.0, normalization="none",
    ...     activation="leaky_relu", recon_loss="mse", eta=1.0, loss_reduction="sum",
    ...     beta=100.0, mmd_on="y", architecture="mlp", image_shape=None,
    ...     kernel_widths=PAPER_KERNEL_WIDTHS, mse_output_activation="linear",
    ... )
    >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
    >>> x = torch.rand(6, 5)
    >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
    >>> tensors = {REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.BATCH_KEY: condition}
    >>> inference_outputs, generative_outputs, losses = module(tensors)
    >>> generative_outputs["y"].shape, losses.loss.shape
    (torch.Size([6, 4]), torch.Size([]))

    """

    def __init__(
        self,
        n_input: int,
        n_conditions: int,
        condition_design: Sequence[Sequence[int]] | None = None,
        *,
        hidden_sizes: Sequence[int],
        n_latent: int,
        dropout_rate: float,
        normalization: Literal["batch", "layer", "none"],
        activation: str,
        recon_loss: ReconLoss,
        eta: float,
        loss_reduction: Literal["sum", "mean"],
        beta: float,
        mmd_on: Literal["y", "z"],
        kernel_widths: Sequence[float],
        mse_output_activation: Literal["relu", "linear"],
        architecture: Literal["mlp", "conv"],
        image_shape: tuple[int, int, int] | None,
    ):
        super().__init__()
        check_module_choices(
            normalization=normalization,
            activation=activation,
            recon_loss=recon_loss,
            loss_reduction=loss_reduction,
            mmd_on=mmd_on,
            mse_output_activation=mse_output_activation,
            architecture=architecture,
        )
        self.n_input = n_input
        self.n_conditions = n_conditions
        self.n_latent = n_latent
        self.recon_loss = recon_loss
        self.eta = eta
        self.loss_reduction = loss_reduction
        self.beta = beta
        self.mmd_on = mmd_on
        self.kernel_widths = tuple(float(w) for w in kernel_widths)
        self.mse_output_activation = mse_output_activation
        self.latent_distribution = "normal"
        layer_kwargs = {
            "dropout_rate": dropout_rate,
            "normalization": normalization,
            "activation": activation,
        }
        hidden_sizes = list(hidden_sizes)
        condition_inputs = n_conditions
        if condition_design is not None:
            design = torch.as_tensor(condition_design, dtype=torch.long)
            if architecture == "conv" or design.dim() != 2 or len(design) != n_conditions:
                raise ValueError(
                    "condition_design must be an (n_conditions, n_columns) table of codes, for "
                    f"architecture='mlp'; got shape {tuple(design.shape)} with "
                    f"n_conditions={n_conditions}, architecture={architecture!r}."
                )
            # Not saved with the weights: the model rebuilds it from its registry.
            self.register_buffer("condition_design", design, persistent=False)
            condition_inputs = [int(n) for n in design.max(0).values + 1]
        else:
            self.condition_design = None

        self.architecture = architecture
        width = hidden_sizes[-1]
        # Built in this order (encoder, z, MMD layer, decoder) so that a seed gives the same
        # initial weights as before the convolutional architecture existed.
        if architecture == "conv":
            self.encoder = ConvEncoder(image_shape, n_conditions, width, hidden_sizes[0])
        else:
            self.encoder = ConditionalMLP(n_input, hidden_sizes, condition_inputs, **layer_kwargs)
        self.z_mean = nn.Linear(width, n_latent)
        self.z_log_var = nn.Linear(width, n_latent)
        if architecture == "conv":
            self.mmd_layer = ConditionalImageLayer(n_latent, image_shape, n_conditions, width)
            self.decoder = ConvDecoder(width, image_shape, hidden_sizes[0])
            self.px_output = PixelBias(n_input)
        else:
            # g1: the MMD layer. g2: the remaining decoder layers, without the condition.
            self.mmd_layer = ConditionalMLP(n_latent, [width], condition_inputs, **layer_kwargs)
            self.decoder = ConditionalMLP(width, hidden_sizes[-2::-1], 0, **layer_kwargs)
            self.px_output = nn.Linear(self.decoder.n_output, n_input)
        if recon_loss == "zinb":
            self.px_dropout = nn.Linear(self.decoder.n_output, n_input)
        if self.is_count_model:
            # Per-gene-and-condition inverse dispersion (log scale).
            self.px_r = nn.Parameter(torch.randn(n_input, n_conditions))

    @torch.no_grad()
    def init_output_bias(self, gene_mean: torch.Tensor) -> None:
        """Start the decoder at the average expression profile.

        With sparse log data most genes sit near zero; starting the output at each gene's mean
        (instead of 0) saves many epochs and keeps a ReLU output from dying on those genes.
        For ``"mse"`` the output bias is set to ``gene_mean``; for the count likelihoods (whose
        output goes through a softmax) to the log of each gene's share of the total.

        Parameters
        ----------
        gene_mean
            Mean expression of each gene, shape ``(n_input,)``, in the modelled data's space.

        Returns
        -------
        None
            The bias of the output layer is changed in place.

        Examples
        --------
        >>> module = TRVAEModule(n_input=3, n_conditions=2, **settings)
        >>> module.init_output_bias(torch.tensor([0.5, 1.0, 0.0]))
        >>> module.px_output.bias.tolist()
        [0.5, 1.0, 0.0]

        """
        if self.recon_loss == "mse":
            self.px_output.bias.copy_(gene_mean)
        else:
            proportion = gene_mean / gene_mean.sum().clamp_min(1e-12)
            self.px_output.bias.copy_(torch.log(proportion.clamp_min(1e-8)))

    def _condition_inputs(self, condition: torch.Tensor) -> torch.Tensor:
        """The conditional layers' input: the codes, or their columns' (``condition_design``)."""
        if self.condition_design is None:
            return condition
        return self.condition_design[condition.reshape(-1).long()]

    @property
    def is_count_model(self) -> bool:
        """Whether the likelihood models raw counts (``nb``/``zinb``)."""
        return self.recon_loss in ("nb", "zinb")

    @property
    def gene_likelihood(self) -> str:
        """The likelihood's name, under the attribute scvi-tools' ``RNASeqMixin`` reads."""
        return self.recon_loss

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "condition": tensors[REGISTRY_KEYS.BATCH_KEY]}

    def _get_generative_input(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "condition": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    @auto_move_data
    def inference(
        self, x: torch.Tensor, condition: torch.Tensor, n_samples: int = 1
    ) -> dict[str, torch.Tensor | Distribution]:
        """Encode ``x`` with its condition: ``q(z | x, s)``, a sample of z, and the log library.

        Parameters
        ----------
        x
            Expression of shape ``(n_cells, n_input)``; for ``"nb"``/``"zinb"`` raw counts,
            which are encoded as ``log1p(x)``.
        condition
            Integer condition codes of shape ``(n_cells, 1)``.
        n_samples
            Number of samples of z; more than 1 adds a leading sample dimension.

        Returns
        -------
        dict
            ``"qz"``: the posterior :class:`torch.distributions.Normal`; ``"z"``: a sample,
            shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``; ``"library"``:
            ``log(max(sum of x, 1))`` per cell, shape ``(n_cells, 1)``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> outputs = module.inference(torch.rand(6, 5), condition, n_samples=3)
        >>> outputs["z"].shape, outputs["library"].shape
        (torch.Size([3, 6, 2]), torch.Size([6, 1]))

        """
        library = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
        x_in = torch.log1p(x) if self.is_count_model else x
        hidden = self.encoder(x_in, self._condition_inputs(condition))
        # The clamp keeps exp() finite on extreme inputs; it is never reached in normal training.
        log_var = self.z_log_var(hidden).clamp(-30.0, 30.0)
        # torch's Normal, as scvi-tools' VAE uses for q(z): its importance weighting rebuilds it.
        qz = torch.distributions.Normal(self.z_mean(hidden), torch.exp(0.5 * log_var) + 1e-4)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {"qz": qz, "z": z, "library": library}

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        condition: torch.Tensor,
        transform_batch: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Decode z with a condition; ``transform_batch`` replaces every cell's condition.

        Parameters
        ----------
        z
            Latent codes, shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``.
        library
            Log library size of each cell, shape ``(n_cells, 1)`` (used by the count
            likelihoods).
        condition
            Integer condition codes of shape ``(n_cells, 1)``.
        transform_batch
            Condition code to decode every cell with instead of its own; ``None`` keeps
            ``condition``.

        Returns
        -------
        dict
            ``"y"``: the MMD-layer output, shape ``(..., n_cells, hidden_sizes[-1])``; ``"px"``:
            the likelihood (see :meth:`decode`).

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> outputs = module.generative(torch.randn(6, 2), torch.zeros(6, 1), condition)
        >>> outputs["y"].shape, outputs["px"].mean.shape
        (torch.Size([6, 4]), torch.Size([6, 5]))

        """
        if transform_batch is not None:
            condition = torch.full_like(condition, int(transform_batch))
        if z.dim() == 3:  # (n_samples, n_cells, n_latent): broadcast per-cell inputs
            condition = condition.expand(z.shape[0], *condition.shape).reshape(-1, 1)
            library = library.expand(z.shape[0], *library.shape)
            y = self.mmd_layer(z.reshape(-1, z.shape[-1]), self._condition_inputs(condition))
            y = y.reshape(*z.shape[:2], -1)
        else:
            y = self.mmd_layer(z, self._condition_inputs(condition))
        return {"y": y, "px": self.decode(library, condition, y=y)}

    @auto_move_data
    def encode(self, x: torch.Tensor, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic representations of cells: posterior mean z, its MMD-layer output y.

        Parameters
        ----------
        x
            Expression of shape ``(n_cells, n_input)``.
        condition
            Integer condition codes to encode with, shape ``(n_cells, 1)``; y uses the same.

        Returns
        -------
        dict
            ``"z"`` (posterior mean), ``"y"`` (``g1(z, condition)``) and ``"library"``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> encoded = module.encode(torch.rand(6, 5), condition)
        >>> encoded["z"].shape, encoded["y"].shape
        (torch.Size([6, 2]), torch.Size([6, 4]))

        """
        inference = self.inference(x, condition)
        z = inference["qz"].loc
        y = self.mmd_layer(z, self._condition_inputs(condition))
        return {"z": z, "y": y, "library": inference["library"]}

    @auto_move_data
    def decode(
        self,
        library: torch.Tensor,
        condition: torch.Tensor,
        z: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> Distribution:
        """Likelihood ``px`` of cells decoded from z with ``condition``, or from y directly.

        From z the decoder runs ``g2(g1(z, condition))``; from y (an MMD-layer output) only
        ``g2``, where the condition merely selects the dispersion of the count likelihoods.

        Parameters
        ----------
        library
            Log library size of each cell, broadcastable to the output (used by ``"nb"`` and
            ``"zinb"`` only).
        condition
            Integer condition codes of shape ``(n_cells, 1)``.
        z
            Latent codes, shape ``(n_cells, n_latent)``; give either ``z`` or ``y``.
        y
            MMD-layer outputs, shape ``(..., n_cells, hidden_sizes[-1])``.

        Returns
        -------
        torch.distributions.Distribution
            :class:`~scvi.distributions.Normal` with unit scale for ``"mse"``,
            :class:`~scvi.distributions.NegativeBinomial` for ``"nb"`` or
            :class:`~scvi.distributions.ZeroInflatedNegativeBinomial` for ``"zinb"``, over
            ``(..., n_cells, n_input)``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> module.decode(torch.zeros(6, 1), condition, z=torch.randn(6, 2)).mean.shape
        torch.Size([6, 5])

        """
        if (z is None) == (y is None):
            raise ValueError("Pass exactly one of z and y to decode.")
        if y is None:
            y = self.mmd_layer(z, self._condition_inputs(condition))
        hidden = self.decoder(y.reshape(-1, y.shape[-1])).reshape(*y.shape[:-1], -1)
        out = self.px_output(hidden)
        if self.recon_loss == "mse":
            mean = F.relu(out) if self.mse_output_activation == "relu" else out
            return Normal(mean, torch.ones_like(mean), normal_mu=mean)
        scale = torch.softmax(out, dim=-1)
        rate = torch.exp(library) * scale
        onehot = F.one_hot(condition.reshape(-1).long(), self.n_conditions).to(out.dtype)
        theta = torch.exp(onehot @ self.px_r.T).reshape(out.shape)
        if self.recon_loss == "nb":
            return NegativeBinomial(mu=rate, theta=theta, scale=scale)
        return ZeroInflatedNegativeBinomial(
            mu=rate, theta=theta, zi_logits=self.px_dropout(hidden), scale=scale
        )

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | Distribution],
        generative_outputs: dict[str, torch.Tensor | Distribution],
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """The loss ``eta * reconstruction + kl_weight * KL + beta * MMD``; the MMD is logged.

        Parameters
        ----------
        tensors
            The mini-batch: expression under ``REGISTRY_KEYS.X_KEY`` and condition codes under
            ``REGISTRY_KEYS.BATCH_KEY``.
        inference_outputs
            Output of :meth:`inference` (``"qz"``, ``"z"``).
        generative_outputs
            Output of :meth:`generative` (``"px"``, ``"y"``).
        kl_weight
            Weight of the KL divergence: the training plan's, which :class:`~trvae_scvi.TRVAE`
            sets to ``alpha``; 1 (the ELBO) outside training.

        Returns
        -------
        scvi.module.base.LossOutput
            ``loss`` the scalar ``mean(eta * reconstruction + kl_weight * KL) + beta * MMD``;
            per-cell ``reconstruction_loss`` (squared error for ``"mse"``, negative
            log-likelihood otherwise, summed or averaged over genes) and ``kl_local``;
            ``extra_metrics["mmd"]``.

        Raises
        ------
        FloatingPointError
            If the loss is not finite.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, **settings)
        >>> x = torch.rand(6, 5)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> inference_outputs = module.inference(x, condition)
        >>> generative_outputs = module.generative(
        ...     inference_outputs["z"], inference_outputs["library"], condition
        ... )
        >>> tensors = {REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.BATCH_KEY: condition}
        >>> output = module.loss(tensors, inference_outputs, generative_outputs, kl_weight=1e-3)
        >>> sorted(output.extra_metrics)
        ['mmd']

        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        px = generative_outputs["px"]
        if self.recon_loss == "mse":
            per_gene = (x - px.loc).pow(2)
            per_gene = 0.5 * per_gene if self.loss_reduction == "mean" else per_gene
        else:
            per_gene = -px.log_prob(x)
        qz = inference_outputs["qz"]
        prior = torch.distributions.Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
        per_dimension = kl_divergence(qz, prior)
        if self.loss_reduction == "mean":
            reconstruction, kl = per_gene.mean(-1), per_dimension.mean(-1)
        else:
            reconstruction, kl = per_gene.sum(-1), per_dimension.sum(-1)
        representation = generative_outputs["y"] if self.mmd_on == "y" else inference_outputs["z"]
        mmd = mmd_between_conditions(
            representation,
            tensors[REGISTRY_KEYS.BATCH_KEY],
            self.n_conditions,
            self.kernel_widths,
        )
        loss = torch.mean(self.eta * reconstruction + kl_weight * kl) + self.beta * mmd
        if not torch.isfinite(loss):
            # Stop before the optimizer writes NaN into the weights.
            raise FloatingPointError(
                "The trVAE loss is not finite (reconstruction "
                f"{reconstruction.mean().item():.4g}, KL {kl.mean().item():.4g}, MMD "
                f"{mmd.item():.4g}). Check the input scale (log-normalise raw values for "
                "recon_loss='mse'), or lower the learning rate (plan_kwargs={'lr': ...}) or beta."
            )
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local=kl,
            extra_metrics={"mmd": mmd},
        )

    @torch.inference_mode()
    def sample(
        self,
        tensors: dict[str, torch.Tensor],
        n_samples: int = 1,
        generative_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """Draws from the posterior predictive of a count model (scvi-tools' ``sample``).

        Parameters
        ----------
        tensors
            A mini-batch, as in :meth:`loss`.
        n_samples
            Number of draws per cell.
        generative_kwargs
            Passed to :meth:`generative` (e.g. ``transform_batch``).

        Returns
        -------
        torch.Tensor
            Counts on the CPU, shape ``(n_cells, n_input)``, or
            ``(n_cells, n_input, n_samples)`` for ``n_samples > 1``.

        Raises
        ------
        NotImplementedError
            For ``recon_loss="mse"``, whose unit-variance Gaussian is a loss, not a model of
            the data's noise.

        Examples
        --------
        >>> counts = TRVAEModule(n_input=5, n_conditions=2, **{**settings, "recon_loss": "nb"})
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> tensors = {REGISTRY_KEYS.X_KEY: torch.ones(6, 5), REGISTRY_KEYS.BATCH_KEY: condition}
        >>> counts.sample(tensors, n_samples=3).shape
        torch.Size([6, 5, 3])

        """
        if not self.is_count_model:
            raise NotImplementedError(
                "Posterior predictive samples need a count likelihood; this model has "
                "recon_loss='mse'. Use TRVAE.predict(..., sample=True) for draws of predicted "
                "cells in the data's log space."
            )
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        draws = generative_outputs["px"].sample().cpu()
        # scvi-tools' convention: (n_samples, n_cells, n_genes) -> (n_cells, n_genes, n_samples)
        return draws.permute(1, 2, 0) if n_samples > 1 else draws
