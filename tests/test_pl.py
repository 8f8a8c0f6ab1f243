import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from helpers import train_small

import trvae_scvi


def cells(values):
    return AnnData(
        X=np.asarray(values, dtype=np.float32),
        var=pd.DataFrame(index=[f"g{i}" for i in range(values.shape[1])]),
    )


def test_predicted_vs_real_reports_r2_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, 1.0, (100, 30))
    ax = trvae_scvi.pl.predicted_vs_real(
        cells(real * 2), cells(real), labels=["g0", "g1"], title="NK", save=tmp_path / "m.png"
    )
    assert ax.get_title() == "NK: R² = 1.000 (30 genes)"
    assert [t.get_text() for t in ax.texts] == ["g0", "g1"]
    assert (tmp_path / "m.png").stat().st_size > 0
    ax = trvae_scvi.pl.predicted_vs_real(
        cells(real), cells(real), statistic="var", genes=["g0", "g1", "g2"]
    )
    assert ax.get_title() == "R² = 1.000 (3 genes)"
    with pytest.raises(ValueError, match="same genes"):
        trvae_scvi.pl.predicted_vs_real(cells(real[:, :5]), cells(real))
    with pytest.raises(ValueError, match="statistic='median'"):
        trvae_scvi.pl.predicted_vs_real(cells(real), cells(real), statistic="median")


def test_training_curves(synthetic, tmp_path):
    model = train_small(synthetic)[0]
    axes = trvae_scvi.pl.training_curves(model, save=tmp_path / "curves.png")
    assert [a.get_title() for a in axes] == ["reconstruction", "KL", "MMD"]
    assert len(axes[2].lines) >= 1 and len(axes[2].lines[0].get_xdata()) == 3
    assert (tmp_path / "curves.png").stat().st_size > 0
