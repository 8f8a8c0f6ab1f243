from __future__ import annotations

import matplotlib
import pytest
import scvi
from anndata import AnnData
from helpers import make_counts, train_small

import trvae_scvi

matplotlib.use("Agg")  # no display in CI; plots are only saved


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture(scope="session")
def kang_file() -> AnnData:
    return trvae_scvi.datasets.kang2018()


@pytest.fixture
def kang(kang_file) -> AnnData:
    return kang_file.copy()


@pytest.fixture
def synthetic() -> AnnData:
    return make_counts()


@pytest.fixture
def model(synthetic):
    """A small TRVAE trained for one epoch on ``synthetic`` (registered on it)."""
    return train_small(synthetic, max_epochs=1)[0]
