import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from trvae_scvi.metrics import (
    bootstrap,
    change_correlation,
    direction_accuracy,
    energy_distance,
    r2_of_means,
    r2_of_variances,
    top_degs,
    variance_expression,
)


@pytest.fixture
def shifted():
    """Control cells and real/predicted stimulated cells with a known shift on 10 genes."""
    rng = np.random.default_rng(0)
    gene_level = rng.uniform(0.5, 8.0, 40)
    control = rng.gamma(gene_level, 1.0, (300, 40))
    shift = np.zeros(40)
    shift[:10] = [-1.5, -1.2, -1.0, -0.8, 0.8, 1.0, 1.2, 1.5, 1.8, 2.0]
    real = rng.gamma(gene_level, 1.0, (300, 40)) + shift
    return control, real, shift


def test_perfect_prediction_of_the_change(shifted):
    control, real, shift = shifted
    predicted = control + shift
    assert change_correlation(predicted, real, control) > 0.95
    assert direction_accuracy(predicted[:, :10], real[:, :10], control[:, :10]) == 1.0
    assert r2_of_means(predicted, real) > r2_of_means(control, real)


def test_unchanged_control_scores_zero_on_change(shifted):
    control, real, _ = shifted
    assert change_correlation(control, real, control) == 0.0
    # ...while the R² of means still looks good: the reason for the change-based scores.
    assert r2_of_means(control, real) > 0.3


def test_variance_scores_sparse_equals_dense(shifted):
    control, real, _ = shifted
    np.testing.assert_allclose(variance_expression(sp.csr_matrix(real)), real.var(0))
    assert r2_of_variances(sp.csr_matrix(real), real) == pytest.approx(1.0)
    assert r2_of_variances(control * 3.0, control) == pytest.approx(1.0)


def test_bootstrap_spread_shrinks_with_more_cells():
    rng = np.random.default_rng(1)
    small = rng.normal(size=(20, 30)) + np.arange(30)
    large = rng.normal(size=(2000, 30)) + np.arange(30)
    _, sd_small = bootstrap(r2_of_means, small, small[::-1], n_resamples=30)
    _, sd_large = bootstrap(r2_of_means, large, large[::-1], n_resamples=30)
    assert sd_large < sd_small
    mean, _ = bootstrap(change_correlation, large, large, large[:100], n_resamples=5)
    assert mean > 0.5


def test_energy_distance_grows_with_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 20)), rng.normal(size=(300, 20))
    same, small, large = (energy_distance(a + shift, b) for shift in (0.0, 0.3, 1.0))
    assert abs(same) < 0.1 * large
    assert same < small < large


def log_cells(shifted) -> AnnData:
    """The control and real stimulated cells of ``shifted`` as one log-scale AnnData."""
    control, real, _ = shifted
    return AnnData(
        X=np.log1p(np.vstack([control, real])).astype(np.float32),
        obs=pd.DataFrame({"condition": ["ctrl"] * 300 + ["stim"] * 300}),
        var=pd.DataFrame(index=[f"g{i}" for i in range(40)]),
    )


def test_top_degs_finds_the_shifted_genes(shifted):
    adata = log_cells(shifted)
    before = adata.copy()
    degs = top_degs(adata, "condition", "stim", "ctrl", n_genes=8)
    assert set(degs) <= {f"g{i}" for i in range(10)}
    assert "rank_genes_groups" not in adata.uns  # the user's AnnData is left alone
    np.testing.assert_array_equal(adata.X, before.X)
    with pytest.raises(ValueError, match="group='nope' has 0 cells"):
        top_degs(adata, "condition", "nope", "ctrl")


def test_top_degs_keeps_torchs_thread_count(shifted):
    """scanpy's Wilcoxon test runs numba, which changed torch's threads under the caller."""
    import torch

    adata = log_cells(shifted)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        top_degs(adata, "condition", "stim", "ctrl", n_genes=8)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_metrics_reject_mismatched_genes(shifted):
    control, real, _ = shifted
    for score in (r2_of_means, r2_of_variances):
        with pytest.raises(ValueError, match="score the same genes"):
            score(control[:, :5], real)
    with pytest.raises(ValueError, match="score the same genes"):
        change_correlation(control[:, :5], real, control)


def test_r2_of_means_is_the_squared_pearson_correlation_of_gene_means():
    rng = np.random.default_rng(3)
    predicted = rng.gamma(2.0, 1.0, (40, 25))
    real = predicted * rng.uniform(0.5, 1.5, 25) + rng.normal(0, 0.3, (40, 25))
    expected = np.corrcoef(predicted.mean(0), real.mean(0))[0, 1] ** 2
    assert r2_of_means(predicted, real) == pytest.approx(expected, rel=1e-9)
    assert r2_of_means(sp.csr_matrix(predicted), real) == pytest.approx(expected, rel=1e-9)
    # An anti-correlated prediction has the same r² (the papers' score), not a negative one.
    assert r2_of_means(-predicted, real) == pytest.approx(expected, rel=1e-9)


def test_change_correlation_is_the_pearson_correlation_of_the_changes(shifted):
    control, real, _ = shifted
    rng = np.random.default_rng(4)
    predicted = real + rng.normal(0, 0.5, real.shape)
    expected = np.corrcoef(predicted.mean(0) - control.mean(0), real.mean(0) - control.mean(0))
    assert change_correlation(predicted, real, control) == pytest.approx(expected[0, 1])


def test_top_degs_ranks_down_regulated_genes_too(shifted):
    control, _, _ = shifted
    rng = np.random.default_rng(5)
    stimulated = control.copy()[rng.permutation(len(control))]
    stimulated[:, 0] = 0.0  # switched off: only a decrease
    stimulated[:, 1] += 3.0  # an increase beside it
    adata = AnnData(
        np.log1p(np.vstack([control, stimulated])),
        obs=pd.DataFrame({"condition": ["ctrl"] * len(control) + ["stim"] * len(stimulated)}),
    )
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    assert set(top_degs(adata, "condition", "stim", "ctrl", n_genes=2)) == {"g0", "g1"}
