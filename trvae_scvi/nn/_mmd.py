"""Maximum mean discrepancy between the conditions of a mini-batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The 19 squared bandwidths of the original trVAE/scArches multi-scale RBF kernel.
PAPER_KERNEL_WIDTHS: tuple[float, ...] = (
    1e-6,
    1e-5,
    1e-4,
    1e-3,
    1e-2,
    1e-1,
    1.0,
    5.0,
    10.0,
    15.0,
    20.0,
    25.0,
    30.0,
    35.0,
    100.0,
    1e3,
    1e4,
    1e5,
    1e6,
)


def multiscale_rbf_kernel(
    x: torch.Tensor, y: torch.Tensor, kernel_widths: Sequence[float]
) -> torch.Tensor:
    """Mean of RBF kernels at several widths.

    ``k(a, b) = mean_i exp(-||a - b||^2 / (2 w_i))``, where ``w_i`` are the ``kernel_widths``
    (squared bandwidths).

    Parameters
    ----------
    x
        Tensor of shape ``(n, d)``.
    y
        Tensor of shape ``(m, d)``.
    kernel_widths
        Squared bandwidths ``w_i`` of the RBF kernels; all must be positive.

    Returns
    -------
    torch.Tensor
        Kernel matrix of shape ``(n, m)`` with values in ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> k = multiscale_rbf_kernel(torch.zeros(2, 3), torch.zeros(1, 3), [1.0, 10.0])
    >>> k.shape
    torch.Size([2, 1])

    """
    sq_dist = _squared_distances(x, y)
    gammas = 0.5 / torch.as_tensor(kernel_widths, dtype=x.dtype, device=x.device)
    return torch.exp(-sq_dist.unsqueeze(-1) * gammas).mean(-1)


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||^2`` through one matrix product, accurate where it matters.

    Direct differences would hold an ``(n, m, d)`` tensor, far slower than one product. The
    expanded ``|x|^2 + |y|^2 - 2 x.y`` loses digits to cancellation, which the smallest
    bandwidths (1e-6) turn into kernel values far below 1 for a cell and itself. So the points
    are centred first (distances do not change; the norms, and so the cancellation, shrink)
    and a cell's distance to itself is exactly 0 when ``x`` is ``y``.
    """
    same = x is y
    center = x.detach().mean(0, keepdim=True)
    x = x - center
    y = x if same else y - center
    sq_dist = (
        x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(0) - 2.0 * x @ y.T
    ).clamp_min(0.0)
    if same:
        sq_dist = sq_dist - torch.diag_embed(sq_dist.diagonal())
    return sq_dist


def mmd_between_conditions(
    representation: torch.Tensor,
    condition: torch.Tensor,
    n_conditions: int,
    kernel_widths: Sequence[float] = PAPER_KERNEL_WIDTHS,
) -> torch.Tensor:
    """Sum over all pairs of conditions in a batch of the squared MMD between them.

    All pairs come from one kernel matrix of the batch: the block sums of every pair of
    conditions are ``onehot.T @ K @ onehot``, so the cost does not grow with a Python loop
    over pairs. Conditions with fewer than two cells in the batch are skipped; with fewer
    than two such conditions the result is zero. The biased (V-statistic) estimate is used,
    which is non-negative and exactly zero for two identical samples.

    Parameters
    ----------
    representation
        Tensor of shape ``(n_cells, d)``: the cells' MMD-layer (or latent) activations.
    condition
        Integer condition code of each cell, shape ``(n_cells,)`` or ``(n_cells, 1)``.
    n_conditions
        Number of condition categories.
    kernel_widths
        Squared bandwidths of the RBF kernels (see :func:`multiscale_rbf_kernel`).

    Returns
    -------
    torch.Tensor
        Scalar tensor, ``sum_{a<b} MMD^2(cells of a, cells of b)``.

    Examples
    --------
    >>> import torch
    >>> y = torch.randn(8, 4)
    >>> c = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> float(mmd_between_conditions(y, c, 2)) >= 0
    True

    """
    condition = condition.reshape(-1).long()
    onehot = F.one_hot(condition, n_conditions).to(representation.dtype)
    counts = onehot.sum(0)
    present = counts >= 2
    n_present = present.sum()
    if n_present < 2:
        return representation.new_zeros(())
    onehot = onehot[:, present]
    counts = counts[present]
    kernel = multiscale_rbf_kernel(representation, representation, kernel_widths)
    block_means = (onehot.T @ kernel @ onehot) / (counts[:, None] * counts[None, :])
    # sum_{a<b} (M_aa + M_bb - 2 M_ab) = V * trace(M) - sum(M) for V present conditions.
    total = n_present * block_means.diagonal().sum() - block_means.sum()
    return total.clamp_min(0.0)
