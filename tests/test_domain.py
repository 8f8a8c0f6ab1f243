"""The step that keeps outputs in the data's domain: floor at 0 and each gene's zeros."""

import numpy as np
import pytest
import scipy.sparse as sp

from trvae_scvi.model._domain import (
    expected_zero_fraction,
    keep_own_zeros,
    like_input,
    match_zero_fraction,
    zero_fraction,
)


def test_zero_fraction_counts_exact_zeros_dense_and_sparse():
    values = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 1e-30], [0.0, 1.0, 0.0]])
    expected = [0.75, 0.25, 0.75]
    np.testing.assert_allclose(zero_fraction(values), expected)
    stored_zero = sp.csr_matrix(values)
    stored_zero.data[0] = 0.0  # an explicit zero in the sparse structure is still a zero
    np.testing.assert_allclose(zero_fraction(stored_zero), [0.75, 0.5, 0.75])


def test_expected_zero_fraction_moves_the_own_fraction_as_the_reference_moved():
    own = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # 0.5, 0.25 zeros
    source = np.array([[0.0, 1.0], [1.0, 1.0]])  # 0.5, 0
    target = np.array([[1.0, 0.0], [1.0, 0.0]])  # 0, 1
    # Gene 0: 0.5 - 0.5 = 0; gene 1: 0.25 + 1 = 1.25, clipped to 1.
    np.testing.assert_allclose(expected_zero_fraction(own, source, target), [0.0, 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_matching_zeros_reaches_the_fraction_and_keeps_each_genes_mean(seed):
    rng = np.random.default_rng(seed)
    values = np.maximum(rng.normal(0.3, 1.0, (200, 30)), 0).astype(np.float32)
    fraction = rng.uniform(0, 1, 30)
    before = values.copy()
    match_zero_fraction(values, fraction)
    wanted = np.minimum(np.rint(fraction * 200), 199) / 200
    achieved = zero_fraction(values)
    # At least the wanted zeros; more only where the floor had already made them.
    assert np.all(achieved >= wanted - 1e-12)
    assert np.all((achieved <= wanted + 1e-12) | (achieved == zero_fraction(before)))
    np.testing.assert_allclose(values.mean(0), before.mean(0), rtol=1e-5)
    assert (values >= 0).all()
    # The zeros are the lowest values: every value kept was above every value zeroed.
    for gene in range(30):
        zeroed = (values[:, gene] == 0) & (before[:, gene] > 0)
        if zeroed.any():
            assert before[zeroed, gene].max() <= before[values[:, gene] > 0, gene].min()


def test_matching_zeros_keeps_a_genes_largest_value():
    values = np.array([[0.1, 0.0], [0.2, 0.0], [0.4, 0.0]], dtype=np.float32)
    match_zero_fraction(values, np.array([1.0, 1.0]))
    np.testing.assert_allclose(values[:, 0], [0.0, 0.0, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(values[:, 1], 0.0)


def test_like_input_is_csr_only_for_sparse_input():
    values = np.array([[0.0, 1.5], [0.0, 0.0]], dtype=np.float32)
    sparse = like_input(values, sparse=True)
    assert sp.issparse(sparse) and sparse.format == "csr" and sparse.nnz == 1
    assert like_input(values, sparse=False) is values


def test_matching_zeros_by_blocks_of_genes_is_the_same(monkeypatch):
    from trvae_scvi.model import _domain

    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(0.3, 1.0, (50, 40)), 0).astype(np.float32)
    fraction = rng.uniform(0, 1, 40)
    whole = match_zero_fraction(values.copy(), fraction)
    monkeypatch.setattr(_domain, "GENE_BLOCK", 7)
    np.testing.assert_array_equal(match_zero_fraction(values.copy(), fraction), whole)


def test_like_input_converts_by_blocks_of_rows_to_the_same_matrix():
    values = np.maximum(np.random.default_rng(0).normal(0, 1, (3000, 2000)), 0).astype(np.float32)
    sparse = like_input(values, sparse=True)  # 2**22 // 2000 = 2097 rows a block: 2 blocks
    assert sparse.format == "csr" and sparse.dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), values)


def test_keeping_own_zeros_fills_in_only_the_highest_needed():
    own = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])  # 3 and 3 zeros
    values = np.array([[0.3, 0.5], [0.1, 1.2], [0.2, 0.4], [2.1, 0.9]], dtype=np.float32)
    before = values.copy()
    # Gene 0 should have 1 zero of 4: 2 of its 3 own zeros filled in, the highest ones.
    # Gene 1 should have 3 or more: all its own zeros stay 0.
    keep_own_zeros(values, np.array([0.25, 0.9]), sp.csr_matrix(own))
    np.testing.assert_array_equal(values[:, 0], before[:, 0] * [1, 0, 1, 1])
    np.testing.assert_array_equal(values[:, 1], before[:, 1] * [0, 1, 0, 0])
    # Expressing cells are never changed, whatever the fraction.
    np.testing.assert_array_equal(values[own > 0], before[own > 0])


@pytest.mark.parametrize("seed", range(3))
def test_keeping_own_zeros_reaches_the_fraction_where_it_can(seed):
    rng = np.random.default_rng(seed)
    own = sp.random(300, 40, density=0.3, random_state=seed, format="csr")
    values = np.maximum(rng.normal(0.3, 1.0, (300, 40)), 0).astype(np.float32)
    fraction = rng.uniform(0, 1, 40)
    floor_zeros = zero_fraction(values)
    keep_own_zeros(values, fraction, own)
    own_zeros = zero_fraction(own)
    # Fewer zeros than the cells' own are reached (to the floor's ties at 0); more are not made.
    reached = np.abs(zero_fraction(values) - np.maximum(fraction, 0)) <= 1 / 300 + 1e-9
    floor_made_more = zero_fraction(values) > fraction
    assert np.all(np.where(fraction < own_zeros, reached | floor_made_more, True))
    kept_all = zero_fraction(values) >= own_zeros - 1e-12
    assert np.all(np.where(fraction >= own_zeros, kept_all, True))
    # A value of 0 (the floor's) stays 0.
    assert (zero_fraction(values) >= floor_zeros).all()


def test_keeping_own_zeros_by_blocks_of_genes_is_the_same(monkeypatch):
    from trvae_scvi.model import _domain

    rng = np.random.default_rng(1)
    own = sp.random(60, 40, density=0.4, random_state=1, format="csr")
    values = np.maximum(rng.normal(0.3, 1.0, (60, 40)), 0).astype(np.float32)
    fraction = rng.uniform(0, 1, 40)
    whole = keep_own_zeros(values.copy(), fraction, own)
    monkeypatch.setattr(_domain, "GENE_BLOCK", 7)
    np.testing.assert_array_equal(keep_own_zeros(values.copy(), fraction, own), whole)


def test_keeping_own_zeros_with_the_mean_moves_the_taken_values_to_the_filled_ones():
    own = sp.csr_matrix(np.array([[0.0], [0.0], [0.0], [2.0]]))
    values = np.array([[0.3], [0.1], [0.2], [2.1]], dtype=np.float32)
    # One zero wanted of 4: two of the three non-expressing cells are filled in (0.3 and 0.2),
    # and take the 0.6 the three held, scaled alike; the expressing cell is unchanged.
    keep_own_zeros(values, np.array([0.25]), own, keep_mean=True)
    np.testing.assert_allclose(values[:, 0], [0.36, 0.0, 0.24, 2.1], rtol=1e-6)
