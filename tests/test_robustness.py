import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from helpers import SMALL, dense, make_counts
from scvi import REGISTRY_KEYS

from trvae_scvi import TRVAE


def test_condition_category_without_cells(synthetic):
    synthetic.obs["condition"] = synthetic.obs["condition"].cat.add_categories(["unused"])
    with pytest.raises(ValueError, match=r"categories without cells: \['unused'\]"):
        TRVAE.setup_anndata(synthetic, condition_key="condition")


def test_new_adata_with_nan_at_predict(model, synthetic):
    other = synthetic.copy()
    other.X = other.X.toarray()
    other.X[5, 0] = np.inf
    with pytest.raises(ValueError, match="adata.X contains NaN or infinite values"):
        model.predict(other, target_condition="c1")
    # Cells without NaN can still be predicted.
    assert model.predict(other, indices=[0, 1], target_condition="c1").shape == (2, 50)


def test_new_adata_with_other_genes_or_conditions_at_predict(model, synthetic):
    with pytest.raises(ValueError, match="adata has 40 genes but the model was trained on 50"):
        model.predict(synthetic[:, :40].copy(), target_condition="c1")
    other = synthetic.copy()
    other.obs["condition"] = pd.Categorical(["c9"] * other.n_obs)
    with pytest.raises(ValueError, match=r"conditions \['c9'\] that the model has not seen"):
        model.get_latent_representation(other)


def test_count_model_rejects_non_counts_at_predict(synthetic):
    TRVAE.setup_anndata(synthetic, condition_key="condition", layer="counts")
    model = TRVAE(synthetic, recon_loss="nb", **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    other = synthetic.copy()
    other.layers["counts"] = other.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="recon_loss='nb' needs non-negative integer counts"):
        model.predict(other, target_condition="c0")


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_float16_and_integer_matrices(dtype):
    adata = make_counts(sparse=False)
    adata.X = adata.layers["counts"].astype(dtype)
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    assert np.isfinite(dense(model.predict(target_condition="c1").X)).all()


def test_backed_anndata(tmp_path):
    import anndata as ad

    make_counts(sparse=True).write_h5ad(tmp_path / "cells.h5ad")
    adata = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    assert np.isfinite(model.get_latent_representation()).all()
    assert np.isfinite(dense(model.predict(indices=[3, 1, 2], target_condition="c1").X)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_nan_on_extreme_data(seed):
    """Values up to 1e4, all-zero genes, a condition with one cell, beta 1e3, tiny batches."""
    rng = np.random.default_rng(seed)
    adata = make_counts(n_cells=120, n_genes=30, n_conditions=3, seed=seed, sparse=False)
    x = rng.exponential(1.0, (120, 30)).astype(np.float32) * 10 ** rng.uniform(-2, 4, 30)
    x[:, :5] = 0.0
    adata.X = x.clip(max=1e4).astype(np.float32)
    adata.obs["condition"] = pd.Categorical(["c0"] * 60 + ["c1"] * 59 + ["c2"])
    scvi.settings.seed = seed
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, beta=1e3, **SMALL)
    model.train(max_epochs=3, batch_size=8, enable_progress_bar=False)
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    assert np.isfinite(loss).all()
    assert all(torch.isfinite(p).all() for p in model.module.parameters())
    assert np.isfinite(dense(model.predict(target_condition="c2").X)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_no_nan_on_kang_with_large_beta_and_small_batches(kang, seed):
    scvi.settings.seed = seed
    cells = np.random.default_rng(seed).choice(kang.n_obs, 300, replace=False)
    kang = kang[np.sort(cells)].copy()
    TRVAE.setup_anndata(kang, condition_key="condition")
    model = TRVAE(kang, beta=1e4, **SMALL)
    model.train(max_epochs=1, batch_size=4, enable_progress_bar=False)
    assert np.isfinite(model.history["train_loss"]["train_loss"].to_numpy(dtype=float)).all()
    assert all(torch.isfinite(p).all() for p in model.module.parameters())


def test_non_finite_loss_stops_training(model):
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.ones(4, 50),
        REGISTRY_KEYS.BATCH_KEY: torch.tensor([[0], [0], [1], [1]]),
    }
    inference, generative, _ = model.module(tensors)
    tensors[REGISTRY_KEYS.X_KEY] = torch.full((4, 50), float("inf"))
    with pytest.raises(FloatingPointError, match="loss is not finite.*lower the learning rate"):
        model.module.loss(tensors, inference, generative)
