import numpy as np
import pytest

from trvae_scvi.nn import neuron_edit


@pytest.fixture
def source():
    return np.random.default_rng(0).normal(0.0, 1.0, (2000, 3))


def test_affine_change_is_recovered(source):
    target = 2.0 * source - 1.0
    new = np.random.default_rng(1).normal(0.0, 1.0, (50, 3))
    np.testing.assert_allclose(neuron_edit(new, source, target), 2.0 * new - 1.0, atol=1e-8)


def test_edited_source_has_target_percentiles(source):
    target = np.random.default_rng(2).exponential(1.0, (1500, 3))
    edited = neuron_edit(source, source, target, n_percentiles=50)
    q = np.linspace(5, 95, 7)
    np.testing.assert_allclose(
        np.percentile(edited, q, axis=0), np.percentile(target, q, axis=0), atol=0.1
    )


def test_same_source_and_target_is_identity(source):
    np.testing.assert_allclose(neuron_edit(source, source, source), source, atol=1e-8)


def test_values_outside_the_source_range_extrapolate(source):
    far = np.full((1, 3), 100.0)
    np.testing.assert_allclose(neuron_edit(far, source, source + 5.0), far + 5.0)


def test_tied_source_percentiles_shift():
    source = np.zeros((10, 1))
    target = np.full((10, 1), 2.0)
    assert neuron_edit(np.zeros((1, 1)), source, target)[0, 0] == pytest.approx(2.0)


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="n_percentiles=1"):
        neuron_edit(source, source, source, n_percentiles=1)
    with pytest.raises(ValueError, match="same neurons"):
        neuron_edit(source[:, :2], source, source)
    with pytest.raises(ValueError, match="at least one source and one target"):
        neuron_edit(source, source[:0], source)
