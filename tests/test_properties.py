"""Property-based tests of the MMD penalty and the metrics."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trvae_scvi.metrics import r2_of_means
from trvae_scvi.nn import mmd_between_conditions, multiscale_rbf_kernel

WIDTHS = (0.1, 1.0, 10.0)


@st.composite
def batches(draw):
    """A batch of representations with codes among up to 50 conditions (some absent)."""
    n_conditions = draw(st.integers(1, 50))
    n_cells = draw(st.integers(1, 80))
    dim = draw(st.integers(1, 6))
    values = draw(arrays(np.float32, (n_cells, dim), elements=st.floats(-100, 100, width=32)))
    codes = draw(arrays(np.int64, n_cells, elements=st.integers(0, n_conditions - 1)))
    return torch.from_numpy(values), torch.from_numpy(codes), n_conditions


@settings(max_examples=60, deadline=None)
@given(batches())
def test_mmd_finite_and_non_negative(batch):
    y, codes, n_conditions = batch
    value = mmd_between_conditions(y, codes, n_conditions, WIDTHS)
    assert torch.isfinite(value)
    # Non-negative before the final clamp too: the biased estimate is a squared norm.
    kernel = multiscale_rbf_kernel(y.double(), y.double(), WIDTHS)
    onehot = torch.nn.functional.one_hot(codes.long(), n_conditions).double()
    counts = onehot.sum(0)
    keep = counts >= 2
    means = (onehot.T @ kernel @ onehot)[keep][:, keep] / torch.outer(counts[keep], counts[keep])
    unclamped = int(keep.sum()) * means.diagonal().sum() - means.sum()
    assert float(unclamped) > -1e-9
    assert float(value) == pytest.approx(max(float(unclamped), 0.0), rel=1e-3, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(batches(), st.randoms(use_true_random=False))
def test_mmd_invariant_to_cell_order(batch, random):
    y, codes, n_conditions = batch
    # float64: the invariance is exact, but in float32 the rounding of squared distances
    # between values near 100 alone moves the sum by up to ~1e-3 with the order.
    y = y.double()
    order = list(range(len(codes)))
    random.shuffle(order)
    order = torch.tensor(order)
    a = mmd_between_conditions(y, codes, n_conditions, WIDTHS)
    b = mmd_between_conditions(y[order], codes[order], n_conditions, WIDTHS)
    assert torch.isclose(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(batches(), st.randoms(use_true_random=False))
def test_mmd_invariant_to_relabelling_conditions(batch, random):
    """Symmetric in the conditions: any permutation of their labels gives the same value."""
    y, codes, n_conditions = batch
    y = y.double()  # as above: float32 rounding is not what is tested
    relabel = list(range(n_conditions))
    random.shuffle(relabel)
    relabelled = torch.tensor(relabel)[codes]
    a = mmd_between_conditions(y, codes, n_conditions, WIDTHS)
    b = mmd_between_conditions(y, relabelled, n_conditions, WIDTHS)
    assert torch.isclose(a, b, rtol=1e-4, atol=1e-4)


def gene_matrices():
    return st.integers(2, 30).flatmap(
        lambda n_genes: st.tuples(
            arrays(np.float64, (5, n_genes), elements=st.floats(0, 10)),
            arrays(np.float64, (7, n_genes), elements=st.floats(0, 10)),
        )
    )


@settings(max_examples=80, deadline=None)
@given(gene_matrices())
def test_r2_of_means_bounded_and_symmetric(matrices):
    predicted, real = matrices
    value = r2_of_means(predicted, real)
    assert 0.0 <= value <= 1.0 + 1e-9
    assert np.isclose(value, r2_of_means(real, predicted))


@settings(max_examples=40, deadline=None)
@given(gene_matrices(), st.randoms(use_true_random=False))
def test_r2_of_means_invariant_to_cell_order(matrices, random):
    predicted, real = matrices
    order = list(range(predicted.shape[0]))
    random.shuffle(order)
    assert np.isclose(r2_of_means(predicted[order], real), r2_of_means(predicted, real))
