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
from torch.distributions import kl_divergence

from trvae_scvi.nn import PAPER_KERNEL_WIDTHS, ConditionalMLP, mmd_between_conditions

ReconLoss = Literal["mse", "nb", "zinb"]


class TRVAEModule(BaseModuleClass):
    """Transfer VAE (trVAE) module.

    Encoder ``f(x, s) -> z``; decoder ``g2(g1(z, s))``. The output ``y = g1(z, s)`` of the first
    decoder layer (the *MMD layer*) is pushed towards being condition-invariant by a maximum
    mean discrepancy penalty between the conditions of each mini-batch.

    Loss per mini-batch: ``mean(reconstruction + alpha * kl_weight * KL) + beta * MMD``.

    Parameters
    ----------
    n_input
        Number of genes.
    n_conditions
        Number of condition categories.
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
    alpha
        Weight of the KL divergence.
    beta
        Weight of the MMD penalty.
    mmd_on
        ``"y"`` (first decoder layer, trVAE) or ``"z"`` (latent, MMD-CVAE ablation).
    kernel_widths
        Squared bandwidths of the RBF kernels of the MMD.
    mse_output_activation
        ``"relu"`` (non-negative log data, the paper) or ``"linear"`` (scaled data), for ``"mse"``.

    Examples
    --------
    >>> from scvi import REGISTRY_KEYS
    >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
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
        hidden_sizes: Sequence[int] = (800, 800, 128),
        n_latent: int = 20,
        dropout_rate: float = 0.0,
        normalization: Literal["batch", "layer", "none"] = "none",
        activation: str = "leaky_relu",
        recon_loss: ReconLoss = "mse",
        alpha: float = 1e-3,
        beta: float = 100.0,
        mmd_on: Literal["y", "z"] = "y",
        kernel_widths: Sequence[float] = PAPER_KERNEL_WIDTHS,
        mse_output_activation: Literal["relu", "linear"] = "linear",
    ):
        super().__init__()
        self.n_input = n_input
        self.n_conditions = n_conditions
        self.n_latent = n_latent
        self.recon_loss = recon_loss
        self.alpha = alpha
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

        self.encoder = ConditionalMLP(n_input, hidden_sizes, n_conditions, **layer_kwargs)
        self.z_mean = nn.Linear(hidden_sizes[-1], n_latent)
        self.z_log_var = nn.Linear(hidden_sizes[-1], n_latent)
        # g1: the MMD layer. g2: the remaining decoder layers, without the condition.
        self.mmd_layer = ConditionalMLP(n_latent, hidden_sizes[-1:], n_conditions, **layer_kwargs)
        self.decoder = ConditionalMLP(hidden_sizes[-1], hidden_sizes[-2::-1], 0, **layer_kwargs)
        self.px_output = nn.Linear(self.decoder.n_output, n_input)
        if recon_loss == "zinb":
            self.px_dropout = nn.Linear(self.decoder.n_output, n_input)
        if recon_loss in ("nb", "zinb"):
            # Per-gene-and-condition inverse dispersion (log scale).
            self.px_r = nn.Parameter(torch.randn(n_input, n_conditions))
        elif recon_loss != "mse":
            raise ValueError(
                f"recon_loss={recon_loss!r} is not supported; use 'mse', 'nb' or 'zinb'."
            )

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
        >>> module = TRVAEModule(n_input=3, n_conditions=2, hidden_sizes=(4,), n_latent=2)
        >>> module.init_output_bias(torch.tensor([0.5, 1.0, 0.0]))
        >>> module.px_output.bias.tolist()
        [0.5, 1.0, 0.0]

        """
        if self.recon_loss == "mse":
            self.px_output.bias.copy_(gene_mean)
        else:
            proportion = gene_mean / gene_mean.sum().clamp_min(1e-12)
            self.px_output.bias.copy_(torch.log(proportion.clamp_min(1e-8)))

    @property
    def is_count_model(self) -> bool:
        """Whether the likelihood models raw counts (``nb``/``zinb``)."""
        return self.recon_loss in ("nb", "zinb")

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
    ) -> dict[str, torch.Tensor | torch.distributions.Distribution]:
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
            ``"qz"``: the posterior :class:`~scvi.distributions.Normal`; ``"z"``: a sample,
            shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``; ``"library"``:
            ``log(max(sum of x, 1))`` per cell, shape ``(n_cells, 1)``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> outputs = module.inference(torch.rand(6, 5), condition, n_samples=3)
        >>> outputs["z"].shape, outputs["library"].shape
        (torch.Size([3, 6, 2]), torch.Size([6, 1]))

        """
        library = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
        x_in = torch.log1p(x) if self.is_count_model else x
        hidden = self.encoder(x_in, condition)
        # The clamp keeps exp() finite on extreme inputs; it is never reached in normal training.
        log_var = self.z_log_var(hidden).clamp(-30.0, 30.0)
        qz = Normal(self.z_mean(hidden), torch.exp(0.5 * log_var) + 1e-4)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {"qz": qz, "z": z, "library": library}

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        condition: torch.Tensor,
        transform_batch: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | torch.distributions.Distribution]:
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
            the likelihood (see :meth:`decode_mmd_representation`).

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
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
            y = self.mmd_layer(z.reshape(-1, z.shape[-1]), condition).reshape(*z.shape[:2], -1)
        else:
            y = self.mmd_layer(z, condition)
        return {"y": y, "px": self.decode_mmd_representation(y, library, condition)}

    @auto_move_data
    def decode_mmd_representation(
        self, y: torch.Tensor, library: torch.Tensor, condition: torch.Tensor
    ) -> torch.distributions.Distribution:
        """Likelihood ``px`` from the MMD-layer output ``y``: the decoder part ``g2``.

        The condition only selects the dispersion of the count likelihoods.

        Parameters
        ----------
        y
            MMD-layer output, shape ``(..., n_cells, hidden_sizes[-1])``.
        library
            Log library size of each cell, broadcastable to the output (used by ``"nb"`` and
            ``"zinb"`` only).
        condition
            Integer condition codes of shape ``(n_cells, 1)`` (used by ``"nb"`` and ``"zinb"``
            only).

        Returns
        -------
        torch.distributions.Distribution
            :class:`~scvi.distributions.Normal` with unit scale for ``"mse"``,
            :class:`~scvi.distributions.NegativeBinomial` for ``"nb"`` or
            :class:`~scvi.distributions.ZeroInflatedNegativeBinomial` for ``"zinb"``, over
            ``(..., n_cells, n_input)``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> px = module.decode_mmd_representation(torch.randn(6, 4), torch.zeros(6, 1), condition)
        >>> px.mean.shape
        torch.Size([6, 5])

        """
        hidden = self.decoder(y.reshape(-1, y.shape[-1])).reshape(*y.shape[:-1], -1)
        out = self.px_output(hidden)
        if self.recon_loss == "mse":
            mean = F.relu(out) if self.mse_output_activation == "relu" else out
            px = Normal(mean, torch.ones_like(mean), normal_mu=mean)
        else:
            scale = torch.softmax(out, dim=-1)
            rate = torch.exp(library) * scale
            onehot = F.one_hot(condition.reshape(-1).long(), self.n_conditions).to(out.dtype)
            theta = torch.exp(onehot @ self.px_r.T).reshape(out.shape)
            if self.recon_loss == "nb":
                px = NegativeBinomial(mu=rate, theta=theta, scale=scale)
            else:
                zi_logits = self.px_dropout(hidden)
                px = ZeroInflatedNegativeBinomial(
                    mu=rate, theta=theta, zi_logits=zi_logits, scale=scale
                )
        return px

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | torch.distributions.Distribution],
        generative_outputs: dict[str, torch.Tensor | torch.distributions.Distribution],
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Reconstruction + alpha * KL + beta * MMD, with the MMD logged as ``mmd``.

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
            Factor on ``alpha`` (the KL warm-up of the training plan).

        Returns
        -------
        scvi.module.base.LossOutput
            ``loss`` the scalar ``mean(reconstruction + alpha * kl_weight * KL) + beta * MMD``;
            per-cell ``reconstruction_loss`` (squared error for ``"mse"``, negative
            log-likelihood otherwise) and ``kl_local``; ``extra_metrics["mmd"]``.

        Raises
        ------
        FloatingPointError
            If the loss is not finite.

        Examples
        --------
        >>> from scvi import REGISTRY_KEYS
        >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
        >>> x = torch.rand(6, 5)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> inference_outputs = module.inference(x, condition)
        >>> generative_outputs = module.generative(
        ...     inference_outputs["z"], inference_outputs["library"], condition
        ... )
        >>> tensors = {REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.BATCH_KEY: condition}
        >>> output = module.loss(tensors, inference_outputs, generative_outputs)
        >>> output.loss.shape, bool(output.extra_metrics["mmd"] >= 0)
        (torch.Size([]), True)

        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        px = generative_outputs["px"]
        if self.recon_loss == "mse":
            reconstruction = (x - px.loc).pow(2).sum(-1)
        else:
            reconstruction = -px.log_prob(x).sum(-1)
        qz = inference_outputs["qz"]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(-1)
        representation = generative_outputs["y"] if self.mmd_on == "y" else inference_outputs["z"]
        mmd = mmd_between_conditions(
            representation,
            tensors[REGISTRY_KEYS.BATCH_KEY],
            self.n_conditions,
            self.kernel_widths,
        )
        loss = torch.mean(reconstruction + self.alpha * kl_weight * kl) + self.beta * mmd
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

    @auto_move_data
    def mmd_representation(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Output ``y = g1(z, s)`` of the first decoder layer.

        Parameters
        ----------
        z
            Latent codes, shape ``(n_cells, n_latent)``.
        condition
            Integer condition codes of shape ``(n_cells, 1)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n_cells, hidden_sizes[-1])``.

        Examples
        --------
        >>> module = TRVAEModule(n_input=5, n_conditions=2, hidden_sizes=(8, 4), n_latent=2)
        >>> condition = torch.tensor([[0], [0], [0], [1], [1], [1]])
        >>> module.mmd_representation(torch.randn(6, 2), condition).shape
        torch.Size([6, 4])

        """
        return self.mmd_layer(z, condition)
