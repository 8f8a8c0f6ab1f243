from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import scvi
from anndata import AnnData
from helpers import make_counts, train_small

import trvae_scvi

matplotlib.use("Agg")  # no display in CI; plots are only saved

# The real datasets the benchmarks use, beside a clone of the repository (not shipped).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared_data: reads the real datasets in ../shared/data beside the clone"
    )


def pytest_collection_modifyitems(config, items):
    """Skip the tests that read ``../shared/data`` where it is absent, with the reason.

    ``TRVAE_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``, whose machine has the data) turns
    the skip into an error, so that CI never passes without running them.
    """
    if SHARED_DATA.is_dir():
        return
    if os.environ.get("TRVAE_REQUIRE_SHARED_DATA") == "1":
        raise pytest.UsageError(
            f"TRVAE_REQUIRE_SHARED_DATA=1 but {SHARED_DATA} does not exist: the tests marked "
            "shared_data would be skipped. Put shared/ beside the clone, or unset the variable."
        )
    skip = pytest.mark.skip(reason=f"needs the real datasets in {SHARED_DATA}, absent here")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture
def unfloored(monkeypatch):
    """Outputs before the step that keeps them in the data's domain (no flooring at 0).

    For tests of the linear algebra of the methods (means, mixes, residuals), which the
    floor would blur; ``tests/test_predict.py`` tests the floor itself.
    """
    monkeypatch.setattr(
        trvae_scvi.TRVAE, "_in_data_domain", lambda self, values, zero_fraction=None: values
    )


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
