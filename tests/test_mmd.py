import itertools

import pytest
import torch

from trvae_scvi.nn import PAPER_KERNEL_WIDTHS, mmd_between_conditions, multiscale_rbf_kernel

WIDTHS = (0.1, 1.0, 10.0, 100.0)


def definition(y, condition, n_conditions, widths):
    """The definition, independent of the package: float64, direct differences, a loop over
    pairs of conditions with >= 2 cells, each pair's biased MMD^2 from its three kernel means."""
    y = y.double()

    def kernel_mean(a, b):
        sq = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return sum(torch.exp(-sq / (2 * w)) for w in widths).mean() / len(widths)

    groups = [y[condition == c] for c in range(n_conditions) if (condition == c).sum() >= 2]
    total = 0.0
    for a, b in itertools.combinations(groups, 2):
        total += float(kernel_mean(a, a) + kernel_mean(b, b) - 2 * kernel_mean(a, b))
    return total


def test_zero_for_identical_samples():
    y = torch.randn(20, 5)
    both = torch.cat([y, y])
    condition = torch.tensor([0] * 20 + [1] * 20)
    assert mmd_between_conditions(both, condition, 2, WIDTHS) == pytest.approx(0.0, abs=1e-5)


def test_grows_with_shift():
    torch.manual_seed(0)
    a, b = torch.randn(50, 5), torch.randn(50, 5)
    condition = torch.tensor([0] * 50 + [1] * 50)
    values = [
        float(mmd_between_conditions(torch.cat([a, b + shift]), condition, 2, WIDTHS))
        for shift in (0.0, 0.5, 1.0, 2.0)
    ]
    assert values == sorted(values)
    assert values[-1] > 10 * values[0]


def test_symmetric_in_conditions():
    torch.manual_seed(1)
    y = torch.randn(30, 4)
    condition = torch.randint(0, 2, (30,))
    forward = mmd_between_conditions(y, condition, 2, WIDTHS)
    swapped = mmd_between_conditions(y, 1 - condition, 2, WIDTHS)
    assert forward == pytest.approx(float(swapped), rel=1e-5)


@pytest.mark.parametrize("n_conditions", [3, 4, 7])
def test_equals_pairwise_definition(n_conditions):
    torch.manual_seed(n_conditions)
    y = torch.randn(60, 6) * 3
    condition = torch.randint(0, n_conditions, (60,))
    # The last condition gets a single cell, which both must skip.
    condition[condition == n_conditions - 1] = 0
    condition[0] = n_conditions - 1
    expected = definition(y, condition, n_conditions, WIDTHS)
    got = mmd_between_conditions(y, condition, n_conditions, WIDTHS)
    assert float(got) == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_float32_matches_the_definition_with_the_paper_widths(scale):
    """The smallest bandwidths (1e-6) see rounding errors of squared distances: a cell's
    kernel with itself must stay 1 (the expanded form alone gave MMDs 10-16% low here)."""
    torch.manual_seed(0)
    y = torch.randn(128, 128) * scale + 5 * scale
    condition = torch.randint(0, 2, (128,))
    expected = definition(y, condition, 2, PAPER_KERNEL_WIDTHS)
    got = float(mmd_between_conditions(y, condition, 2, PAPER_KERNEL_WIDTHS))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(multiscale_rbf_kernel(y, y, PAPER_KERNEL_WIDTHS).diagonal().min()) == 1.0


def test_one_condition_batch_is_zero():
    y = torch.randn(16, 3)
    assert mmd_between_conditions(y, torch.zeros(16, dtype=torch.long), 2, WIDTHS) == 0
    # The other condition has one cell: still nothing to compare.
    condition = torch.tensor([0] * 15 + [1])
    assert mmd_between_conditions(y, condition, 2, WIDTHS) == 0


def test_gradient_finite_with_duplicate_cells():
    # Cells 0 and 1 are the same cell, within a condition; cells 3 and 4 are the same cell in
    # the two conditions: zero distances off the diagonal, where a square root has no gradient.
    base = torch.tensor([[1.0, 2, 3], [1, 2, 3], [0, 1, 0], [2, 2, 2], [2, 2, 2], [5, 0, 1]])
    y = base.clone().requires_grad_(True)
    condition = torch.tensor([0, 0, 0, 0, 1, 1])
    value = mmd_between_conditions(y, condition, 2, PAPER_KERNEL_WIDTHS)
    value.backward()
    assert float(value) == pytest.approx(definition(base, condition, 2, PAPER_KERNEL_WIDTHS))
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
