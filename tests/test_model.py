import numpy as np
import pytest
import scipy.sparse as sp
import scvi
from helpers import SMALL, dense, make_counts, train_small

from trvae_scvi import TRVAE
from trvae_scvi.metrics import r2_of_means, r2_of_variances, top_degs


def train_like_fixture(train, **settings):
    """A model trained like ``nk_holdout``'s, with other settings."""
    scvi.settings.seed = 0
    model = TRVAE(train, hidden_sizes=(256, 64), n_latent=10, **settings)
    model.train(max_epochs=25, batch_size=128, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def nk_holdout():
    """Kang data without the stimulated NK cells, a model trained on it, and the real NK cells."""
    import trvae_scvi

    adata = trvae_scvi.datasets.kang2018()
    held_out = ((adata.obs.cell_type == "NK") & (adata.obs.condition == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    return adata, train, train_like_fixture(train)


def test_training_lowers_loss(nk_holdout):
    _, _, model = nk_holdout
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    assert np.isfinite(loss).all()
    assert loss[-1] < 0.75 * loss[0]
    assert "mmd_train" in model.history


def test_transfer_moves_control_towards_stimulated(nk_holdout):
    adata, train, model = nk_holdout
    nk = adata[adata.obs.cell_type == "NK"]
    degs = nk.var_names.isin(top_degs(nk, "condition", "stimulated", "control", n_genes=100))
    control = np.flatnonzero(
        ((train.obs.cell_type == "NK") & (train.obs.condition == "control")).to_numpy()
    )
    real = nk[nk.obs.condition == "stimulated"].X
    predicted = model.predict(
        indices=control, target_condition="stimulated", method="transfer", sample=False
    )
    unchanged = train[control].X
    r2_transfer = r2_of_means(dense(predicted.X)[:, degs], real[:, degs])
    r2_identity = r2_of_means(unchanged[:, degs], real[:, degs])
    assert r2_transfer > r2_identity + 0.1
    # The predicted change points the real change's way on most DEGs.
    real_change = np.asarray(real[:, degs].mean(0) - unchanged[:, degs].mean(0)).ravel()
    predicted_change = (
        dense(predicted.X)[:, degs].mean(0) - np.asarray(unchanged[:, degs].mean(0)).ravel()
    )
    assert np.mean(np.sign(real_change) == np.sign(predicted_change)) > 0.7


def test_predict_output(nk_holdout, tmp_path):
    _, train, model = nk_holdout
    indices = np.arange(5)
    predicted = model.predict(
        indices=indices, target_condition="stimulated", method="transfer", sample=False
    )
    assert predicted.shape == (5, train.n_vars)
    assert (predicted.var_names == train.var_names).all()
    assert (predicted.obs_names == train.obs_names[:5]).all()
    assert (predicted.obs["condition"] == "stimulated").all()
    assert list(predicted.obs["condition_source"]) == list(train.obs.condition[:5])
    assert not any(column.startswith("_scvi") for column in predicted.obs.columns)
    info = predicted.uns["trVAE_predict"]
    assert info["target_condition"] == "stimulated"
    assert info["source_condition"] == "own"
    assert info["model_settings"]["beta"] == model.module.beta
    assert np.isfinite(dense(predicted.X)).all()
    predicted.write_h5ad(tmp_path / "predicted.h5ad")  # what users do next must work
    # Explicit source: the same cells encoded as control.
    as_control = model.predict(
        indices=indices,
        target_condition="stimulated",
        source_condition="control",
        method="transfer",
        sample=False,
    )
    assert (as_control.obs["condition_source"] == "control").all()


def test_transform_batch_of_rnaseq_mixin_is_transfer(nk_holdout):
    adata, train, model = nk_holdout
    nk = adata[adata.obs.cell_type == "NK"]
    degs = train.var_names.isin(top_degs(nk, "condition", "stimulated", "control", n_genes=50))
    indices = np.flatnonzero((train.obs.condition == "control").to_numpy())[:40]
    # scvi-tools' RNASeqMixin decodes sampled z; averaged over samples it is the transfer to the
    # condition asked for, and far from the transfer to the other one on the DEGs.
    normalized = model.get_normalized_expression(
        indices=indices, transform_batch="stimulated", n_samples=25, return_numpy=True
    )[:, degs]
    to_stimulated = model.predict(
        indices=indices, target_condition="stimulated", method="transfer", sample=False
    )
    to_control = model.predict(
        indices=indices, target_condition="control", method="transfer", sample=False
    )
    to_stimulated, to_control = dense(to_stimulated.X)[:, degs], dense(to_control.X)[:, degs]
    distance_stimulated = np.abs(normalized - to_stimulated).mean()
    distance_control = np.abs(normalized - to_control).mean()
    assert distance_stimulated < 0.3 * distance_control


def test_representations_and_write_back(nk_holdout):
    _, train, model = nk_holdout
    adata = train.copy()
    z = model.get_latent_representation(adata, add_to_adata=True)
    y = model.get_mmd_representation(adata, add_to_adata=True)
    assert z.shape == (adata.n_obs, 10) and y.shape == (adata.n_obs, 64)
    np.testing.assert_array_equal(adata.obsm["X_trVAE"], z)
    np.testing.assert_array_equal(adata.obsm["X_trVAE_mmd"], y)
    with pytest.raises(ValueError, match=r"adata.obsm\['X_trVAE'\] exists already"):
        model.get_latent_representation(adata, add_to_adata=True)
    model.get_latent_representation(adata, add_to_adata=True, overwrite=True)
    with pytest.raises(ValueError, match="needs every cell"):
        model.get_mmd_representation(adata, indices=[0, 1], add_to_adata=True)

    corrected = model.get_corrected_expression("control", adata, add_to_adata=True)
    assert corrected.shape == adata.shape
    np.testing.assert_array_equal(adata.layers["trVAE_corrected_control"], corrected)
    with pytest.raises(ValueError, match="exists already"):
        model.get_corrected_expression("control", adata, add_to_adata=True)


@pytest.fixture(scope="module")
def nk_cvae(nk_holdout):
    return train_like_fixture(nk_holdout[1], beta=0)


@pytest.fixture(scope="module")
def nk_mmd_on_z(nk_holdout):
    return train_like_fixture(nk_holdout[1], mmd_on="z")


@pytest.mark.parametrize("mmd_on", ["y", "z"])
def test_mmd_layer_mixes_conditions_more_than_cvae(nk_holdout, nk_cvae, nk_mmd_on_z, mmd_on):
    """The layer the MMD acts on is less condition-separated than the same layer of a CVAE."""
    _, train, default_model = nk_holdout
    assert default_model.module.mmd_on == "y"
    model = default_model if mmd_on == "y" else nk_mmd_on_z

    def condition_gap(m):
        y = m.get_latent_representation() if mmd_on == "z" else m.get_mmd_representation()
        stim = (train.obs.condition == "stimulated").to_numpy()
        centroid_distance = np.linalg.norm(y[stim].mean(0) - y[~stim].mean(0))
        return centroid_distance / y.std(0).mean()

    assert condition_gap(model) < condition_gap(nk_cvae)


def test_sparse_and_dense_agree():
    sparse_data = make_counts(sparse=True)
    dense_data = make_counts(sparse=False)
    assert sp.issparse(sparse_data.X) and not sp.issparse(dense_data.X)
    (sparse_model, sparse_loss, _), (dense_model, dense_loss, _) = (
        train_small(adata) for adata in (sparse_data, dense_data)
    )
    # Equal up to float summation order (the gene means that start the decoder); compared on
    # the smooth transfer, as NeuronEdit's percentile steps can amplify such differences.
    np.testing.assert_allclose(sparse_loss, dense_loss, rtol=1e-3)
    sparse_prediction, dense_prediction = (
        dense(model.predict(target_condition="c1", method="transfer", sample=False).X)
        for model in (sparse_model, dense_model)
    )
    np.testing.assert_allclose(sparse_prediction, dense_prediction, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("recon_loss", ["nb", "zinb"])
def test_count_likelihoods(synthetic, recon_loss):
    TRVAE.setup_anndata(synthetic, condition_key="condition", layer="counts")
    model = TRVAE(synthetic, recon_loss=recon_loss, **SMALL)
    model.train(max_epochs=5, enable_progress_bar=False)
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    predicted = model.predict(
        indices=np.arange(10), target_condition="c1", method="transfer", sample=False
    )
    assert (dense(predicted.X) >= 0).all()
    assert "log_normalized" in predicted.layers
    # Expected counts at each cell's own library size (less the zero-inflated share for zinb).
    library = np.asarray(synthetic.layers["counts"][:10].sum(1)).ravel()
    if recon_loss == "nb":
        np.testing.assert_allclose(dense(predicted.X).sum(1), library, rtol=1e-3)
    else:
        assert (dense(predicted.X).sum(1) < library * (1 + 1e-3)).all()


def test_condition_balanced_batches(synthetic):
    # 90% of cells in one condition; balanced batches hold both about equally.
    adata = synthetic.copy()
    adata.obs["condition"] = ["c0" if i % 10 else "c1" for i in range(adata.n_obs)]
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    splitter = model._data_splitter_cls(model.adata_manager, batch_size=64)
    splitter.setup()
    shares = []
    for tensors in splitter.train_dataloader():
        assert tensors["X"].shape[0] == 64
        shares.append(float((tensors["batch"] == 1).float().mean()))
    assert 0.35 < np.mean(shares) < 0.65
    plain = model._data_splitter_cls(model.adata_manager, batch_size=64, condition_balanced=False)
    plain.setup()
    plain_shares = [float((t["batch"] == 1).float().mean()) for t in plain.train_dataloader()]
    assert np.mean(plain_shares) < 0.2


def test_condition_balanced_loader_honours_loader_settings(synthetic, monkeypatch):
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    model = TRVAE(synthetic, **SMALL)

    def loader(**kwargs):
        splitter = model._data_splitter_cls(
            model.adata_manager, train_size=1.0, batch_size=64, **kwargs
        )
        splitter.setup()
        return splitter.train_dataloader()

    assert loader(num_workers=2, persistent_workers=True).num_workers == 2
    assert loader(num_workers=2, persistent_workers=True).persistent_workers
    monkeypatch.setattr(scvi.settings, "dl_num_workers", 1)
    assert loader().num_workers == 1  # scvi-tools' default, as its own loaders take it
    assert len(loader()) == 4  # ceil(200 / 64)
    assert len(loader(drop_last=True)) == 3


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("calibrated", {}),
        ("calibrated", {"calibration_weight": 0.5, "cell_type_key": "cell_type"}),
        ("transfer", {}),
        ("latent_shift", {}),
        ("neuron_edit", {"neuron_edit_layer": "y"}),
        ("neuron_edit", {"neuron_edit_layer": "z", "n_percentiles": 20}),
    ],
)
def test_prediction_methods(nk_holdout, method, options):
    adata, train, model = nk_holdout
    nk = adata[adata.obs.cell_type == "NK"]
    degs = nk.var_names.isin(top_degs(nk, "condition", "stimulated", "control", n_genes=100))
    is_nk = (train.obs.cell_type == "NK").to_numpy()
    control = np.flatnonzero(is_nk & (train.obs.condition == "control").to_numpy())
    predicted = model.predict(
        indices=control,
        target_condition="stimulated",
        method=method,
        reference_indices=np.flatnonzero(~is_nk),
        sample=False,  # the method's own expected values, without the draws' noise
        **options,
    )
    assert predicted.shape == (len(control), adata.n_vars)
    assert np.isfinite(dense(predicted.X)).all()
    assert predicted.uns["trVAE_predict"]["method"] == method
    assert (predicted.obs["condition_source"] == "control").all()
    real = nk[nk.obs.condition == "stimulated"].X
    # Every method moves the control cells towards the stimulated ones on the DEGs.
    unchanged = r2_of_means(train[control].X[:, degs], real[:, degs])
    assert r2_of_means(dense(predicted.X)[:, degs], real[:, degs]) > unchanged


def test_reference_methods_need_both_conditions_and_take_mixed_cells(nk_holdout):
    _, train, model = nk_holdout
    # Cells of both conditions: each condition's cells are predicted from their own source
    # condition, exactly as if predicted alone with the same reference.
    cells, reference = np.arange(100), np.arange(100, train.n_obs)
    own = train.obs.condition.to_numpy()[cells]
    assert len(set(own)) == 2
    for method in ("latent_shift", "neuron_edit", "calibrated"):
        kwargs = {"target_condition": "stimulated", "method": method, "sample": False}
        mixed = model.predict(indices=cells, reference_indices=reference, **kwargs)
        assert mixed.shape == (100, train.n_vars) and np.isfinite(dense(mixed.X)).all()
        for condition in set(own):
            alone = model.predict(
                indices=cells[own == condition], reference_indices=reference, **kwargs
            )
            np.testing.assert_allclose(
                dense(mixed.X)[own == condition], dense(alone.X), rtol=1e-5, atol=1e-6
            )
    control = np.flatnonzero((train.obs.condition == "control").to_numpy())
    with pytest.raises(ValueError, match="holds 0 cells of the target condition"):
        model.predict(
            indices=control[:5],
            target_condition="stimulated",
            method="neuron_edit",
            reference_indices=control[5:],
        )
    with pytest.raises(ValueError, match="method='scgen' is not supported"):
        model.predict(indices=control[:5], target_condition="stimulated", method="scgen")


@pytest.mark.parametrize("method", ["neuron_edit", "calibrated", "transfer"])
def test_sampled_prediction_restores_variance_and_keeps_means(nk_holdout, method, unfloored):
    adata, train, model = nk_holdout
    is_nk = (train.obs.cell_type == "NK").to_numpy()
    control = np.flatnonzero(is_nk & (train.obs.condition == "control").to_numpy())
    real = adata[(adata.obs.cell_type == "NK") & (adata.obs.condition == "stimulated")].X
    kwargs = {"indices": control, "target_condition": "stimulated", "method": method}
    expected = model.predict(sample=False, **kwargs)
    drawn = model.predict(sample=True, **kwargs)
    assert drawn.uns["trVAE_predict"]["sample"]
    assert dense(drawn.X).var(0).mean() > 2 * dense(expected.X).var(0).mean()
    assert r2_of_variances(dense(drawn.X), real) > r2_of_variances(dense(expected.X), real)
    # Each draw is the expected prediction plus the cell's own residual in its own condition:
    # nothing is clipped, so means move only by the mean residual (not at all when calibrated).
    residual = train[control].X.toarray() - dense(
        model.predict(
            indices=control, target_condition="control", method="transfer", sample=False
        ).X
    )
    shift = 0.0 if method == "calibrated" else residual.mean(0)
    np.testing.assert_allclose(
        dense(drawn.X).mean(0), dense(expected.X).mean(0) + shift, atol=1e-4
    )
    # The genes of low real expression, where draws clipped at 0 had doubled the mean before.
    low = np.asarray(real.mean(0)).ravel() < 0.1
    assert abs(dense(drawn.X)[:, low].mean() - dense(expected.X)[:, low].mean()) < 0.005
    np.testing.assert_array_equal(dense(model.predict(sample=True, **kwargs).X), dense(drawn.X))


def test_calibrated_with_weight_zero_is_the_mean_shift(nk_holdout, unfloored):
    adata, train, model = nk_holdout
    is_nk = (train.obs.cell_type == "NK").to_numpy()
    control = np.flatnonzero(is_nk & (train.obs.condition == "control").to_numpy())
    others = ~is_nk
    stimulated = (train.obs.condition == "stimulated").to_numpy()
    mean_shift = (
        train[control].X.mean(0)
        + train[others & stimulated].X.mean(0)
        - train[others & ~stimulated].X.mean(0)
    )
    calibrated = {"method": "calibrated", "sample": False}
    predicted = dense(
        model.predict(
            indices=control, target_condition="stimulated", calibration_weight=0.0, **calibrated
        ).X
    )
    np.testing.assert_allclose(predicted.mean(0), np.asarray(mean_shift).ravel(), atol=1e-4)
    # Weight 1: the transfer's mean change, less the model's mean error on the reference.
    full = dense(model.predict(indices=control, target_condition="stimulated", **calibrated).X)
    expected = {"method": "transfer", "sample": False}
    transfer = model.predict(indices=control, target_condition="stimulated", **expected)
    reconstructed = model.predict(indices=control, target_condition="control", **expected)
    model_change = dense(transfer.X).mean(0) - dense(reconstructed.X).mean(0)
    reference = np.flatnonzero(others & ~stimulated)
    reference_change = (
        dense(model.predict(indices=reference, target_condition="stimulated", **expected).X)
        - dense(model.predict(indices=reference, target_condition="control", **expected).X)
    ).mean(0)
    np.testing.assert_allclose(
        full.mean(0), predicted.mean(0) + model_change - reference_change, atol=1e-4
    )


def test_calibrated_predicts_every_cell_of_mixed_conditions(nk_holdout, unfloored):
    _, train, model = nk_holdout
    predicted = model.predict(target_condition="stimulated", method="calibrated", sample=False)
    assert predicted.shape == train.shape and np.isfinite(dense(predicted.X)).all()
    stimulated = (train.obs.condition == "stimulated").to_numpy()
    # Cells already stimulated keep their own profile's mean; the rest move.
    np.testing.assert_allclose(
        dense(predicted.X)[stimulated].mean(0),
        np.asarray(train[stimulated].X.mean(0)).ravel(),
        atol=1e-4,
    )


def test_sampled_counts_are_integers(synthetic):
    TRVAE.setup_anndata(synthetic, condition_key="condition", layer="counts")
    model = TRVAE(synthetic, recon_loss="nb", **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    for method in ("transfer", "calibrated"):
        drawn = dense(model.predict(target_condition="c1", sample=True, method=method).X)
        np.testing.assert_array_equal(drawn, np.round(drawn))
        assert (drawn >= 0).all()
