import itertools

import pytest
import torch

from trvae_scvi.nn import mmd_between_conditions, multiscale_rbf_kernel

WIDTHS = (0.1, 1.0, 10.0, 100.0)


def pairwise_reference(y, condition, n_conditions, widths):
    """The definition: a Python loop over pairs of conditions with >= 2 cells."""
    groups = [y[condition == c] for c in range(n_conditions) if (condition == c).sum() >= 2]
    total = torch.zeros(())
    for a, b in itertools.combinations(groups, 2):
        total = total + (
            multiscale_rbf_kernel(a, a, widths).mean()
            + multiscale_rbf_kernel(b, b, widths).mean()
            - 2 * multiscale_rbf_kernel(a, b, widths).mean()
        )
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
    expected = pairwise_reference(y, condition, n_conditions, WIDTHS)
    got = mmd_between_conditions(y, condition, n_conditions, WIDTHS)
    assert float(got) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


def test_one_condition_batch_is_zero():
    y = torch.randn(16, 3)
    assert mmd_between_conditions(y, torch.zeros(16, dtype=torch.long), 2, WIDTHS) == 0
    # The other condition has one cell: still nothing to compare.
    condition = torch.tensor([0] * 15 + [1])
    assert mmd_between_conditions(y, condition, 2, WIDTHS) == 0


def test_gradient_finite_with_duplicate_cells():
    y = torch.ones(8, 3, requires_grad=True)
    condition = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    value = mmd_between_conditions(y * torch.arange(1, 9.0)[:, None], condition, 2, WIDTHS)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(y.grad).all()
