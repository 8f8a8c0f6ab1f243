"""Small network pieces of the trVAE module."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
from scvi.nn import FCLayers
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module] | partial] = {
    "leaky_relu": partial(nn.LeakyReLU, negative_slope=0.2),
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


class ConditionalMLP(nn.Module):
    """Fully connected layers of any widths, with the condition's one-hots in the first layer.

    Each layer is a one-layer :class:`scvi.nn.FCLayers` (linear, normalisation, activation,
    dropout). Only the first one receives the condition, so scvi-tools' query mapping
    (:class:`~scvi.model.base.ArchesMixin`) can extend and train just its condition columns.

    Parameters
    ----------
    n_input
        Input width.
    layer_sizes
        Output width of each layer; empty gives the identity.
    n_conditions
        Number of condition categories injected into the first layer as one one-hot; ``0``
        for none; or one number per condition column, each column's one-hot injected side
        by side (an additive encoding of combined conditions).
    dropout_rate
        Dropout after each layer.
    normalization
        ``"batch"``, ``"layer"`` or ``"none"``.
    activation
        A key of :data:`ACTIVATIONS`.

    Examples
    --------
    >>> import torch
    >>> layer = dict(dropout_rate=0.0, normalization="none", activation="leaky_relu")
    >>> mlp = ConditionalMLP(10, [8, 4], n_conditions=2, **layer)
    >>> mlp(torch.randn(3, 10), torch.tensor([[0], [1], [1]])).shape
    torch.Size([3, 4])
    >>> additive = ConditionalMLP(10, [4], n_conditions=[2, 3], **layer)  # two columns
    >>> additive(torch.randn(3, 10), torch.tensor([[0, 2], [1, 0], [1, 1]])).shape
    torch.Size([3, 4])

    """

    def __init__(
        self,
        n_input: int,
        layer_sizes: Sequence[int],
        n_conditions: int | Sequence[int] = 0,
        *,
        dropout_rate: float,
        normalization: Literal["batch", "layer", "none"],
        activation: str,
    ):
        super().__init__()
        sizes = [n_input, *layer_sizes]
        n_cat_list = [n_conditions] if isinstance(n_conditions, int) else list(n_conditions)
        n_cat_list = [n for n in n_cat_list if n > 0]
        self.layers = nn.ModuleList(
            FCLayers(
                n_in=n_in,
                n_out=n_out,
                n_cat_list=n_cat_list if i == 0 and n_cat_list else None,
                n_layers=1,
                dropout_rate=dropout_rate,
                use_batch_norm=normalization == "batch",
                use_layer_norm=normalization == "layer",
                activation_fn=ACTIVATIONS[activation],
            )
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        self.n_output = sizes[-1]
        self.has_condition = bool(n_cat_list)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layers; ``condition`` (codes, one column per one-hot) enters the first one.

        Parameters
        ----------
        x
            Input of shape ``(n, n_input)``.
        condition
            Integer condition codes of shape ``(n, 1)``, or ``(n, n_columns)`` for one number
            per column in ``n_conditions``; used only when the MLP has a condition.

        Returns
        -------
        torch.Tensor
            Output of shape ``(n, n_output)`` (``x`` itself when there are no layers).

        Examples
        --------
        >>> import torch
        >>> layer = dict(dropout_rate=0.0, normalization="none", activation="leaky_relu")
        >>> mlp = ConditionalMLP(6, [4], n_conditions=3, **layer)
        >>> mlp.forward(torch.randn(5, 6), torch.tensor([[0], [1], [2], [0], [1]])).shape
        torch.Size([5, 4])

        """
        for i, layer in enumerate(self.layers):
            if i == 0 and self.has_condition:
                x = layer(x, *condition.split(1, dim=-1))
            else:
                x = layer(x)
        return x
