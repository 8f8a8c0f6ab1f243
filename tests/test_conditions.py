"""Conditions made of several obs columns (donor x stimulus)."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
from helpers import SMALL, dense, make_counts

from trvae_scvi import TRVAE


@pytest.fixture
def two_columns():
    adata = make_counts(n_cells=240, n_conditions=2)
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2 == 0, "d1", "d2")
    adata.obs["stimulus"] = adata.obs["condition"].map({"c0": "ctrl", "c1": "stim"}).astype(str)
    return adata


def test_conditions_from_two_columns(two_columns, tmp_path):
    adata = two_columns
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key=["donor", "stimulus"])
    # A new column holds the combinations; the user's columns are unchanged.
    categories = adata.obs["donor_stimulus"].cat.categories
    assert list(categories) == ["d1_ctrl", "d1_stim", "d2_ctrl", "d2_stim"]
    model = TRVAE(adata, **SMALL)
    assert model.condition_key == "donor_stimulus" and len(model.conditions) == 4
    model.train(max_epochs=1, enable_progress_bar=False)
    control = np.flatnonzero((adata.obs.donor_stimulus == "d1_ctrl").to_numpy())
    by_tuple = model.predict(
        indices=control, target_condition=("d1", "stim"), method="transfer", sample=False
    )
    by_name = model.predict(
        indices=control, target_condition="d1_stim", method="transfer", sample=False
    )
    np.testing.assert_array_equal(dense(by_tuple.X), dense(by_name.X))
    # The predicted cells' columns describe the target: combined and component columns alike.
    assert (by_tuple.obs["donor_stimulus"] == "d1_stim").all()
    assert (by_tuple.obs["stimulus"] == "stim").all() and (by_tuple.obs["donor"] == "d1").all()
    with pytest.raises(
        ValueError, match=r"target_condition='d3_stim' is not a condition.*d1_ctrl"
    ):
        model.predict(indices=control, target_condition=("d3", "stim"))
    # Saved and loaded into a fresh AnnData, the combination is rebuilt from the two columns.
    model.save(tmp_path / "model")
    fresh = two_columns.copy()
    del fresh.obs["donor_stimulus"]
    loaded = TRVAE.load(tmp_path / "model", fresh)
    np.testing.assert_allclose(
        dense(
            loaded.predict(
                indices=control, target_condition="d1_stim", method="transfer", sample=False
            ).X
        ),
        dense(by_name.X),
        rtol=1e-5,
    )


def test_bad_condition_columns(two_columns):
    with pytest.raises(ValueError, match=r"\['dose'\] not in adata.obs"):
        TRVAE.setup_anndata(two_columns, condition_key=["donor", "dose"])
    two_columns.obs["donor_stimulus"] = "something else"
    with pytest.raises(ValueError, match="exists with other values"):
        TRVAE.setup_anndata(two_columns, condition_key=["donor", "stimulus"])


def test_calibrated_on_another_donors_response(two_columns):
    adata = two_columns
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key=["donor", "stimulus"])
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    obs = adata.obs
    control = np.flatnonzero(((obs.donor == "d1") & (obs.stimulus == "ctrl")).to_numpy())
    predicted = dense(
        model.predict(
            indices=control,
            target_condition=("d1", "stim"),
            reference_conditions=[("d2", "ctrl"), ("d2", "stim")],
            cell_type_key="cell_type",  # the other donor's cells of every type stay in
            method="calibrated",
            calibration_weight=0.0,
            sample=False,
        ).X
    )
    x = adata.X.toarray()
    other = (obs.donor == "d2").to_numpy()
    response = x[other & (obs.stimulus == "stim").to_numpy()].mean(0) - x[
        other & (obs.stimulus == "ctrl").to_numpy()
    ].mean(0)
    np.testing.assert_allclose(predicted.mean(0), x[control].mean(0) + response, atol=1e-4)
    with pytest.raises(ValueError, match="reference_conditions='d3_stim' is not a condition"):
        model.predict(
            indices=control,
            target_condition=("d1", "stim"),
            reference_conditions=["d2_ctrl", "d3_stim"],
            method="calibrated",
        )


def test_additive_condition_encoding(two_columns, tmp_path):
    adata = two_columns
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key=["donor", "stimulus"])
    model = TRVAE(adata, condition_encoding="additive", **SMALL)
    # d1_ctrl, d1_stim, d2_ctrl, d2_stim: each condition's donor and stimulus codes.
    design = model.module.condition_design.tolist()
    assert design == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # The first layers get 2 + 2 one-hot inputs, not 4 combinations.
    first = model.module.mmd_layer.layers[0].fc_layers[0][0]
    assert first.in_features == SMALL["n_latent"] + 4
    model.train(max_epochs=2, enable_progress_bar=False)
    control = np.flatnonzero((adata.obs.donor_stimulus == "d1_ctrl").to_numpy())
    predicted = dense(
        model.predict(
            indices=control, target_condition=("d1", "stim"), method="transfer", sample=False
        ).X
    )
    assert np.isfinite(predicted).all()
    model.save(tmp_path / "model")
    loaded = TRVAE.load(tmp_path / "model", adata)
    assert loaded.module.condition_design.tolist() == design
    np.testing.assert_allclose(
        dense(
            loaded.predict(
                indices=control, target_condition="d1_stim", method="transfer", sample=False
            ).X
        ),
        predicted,
        rtol=1e-5,
    )
    with pytest.raises(NotImplementedError, match="condition_encoding='additive'"):
        TRVAE.load_query_data(adata[:10].copy(), model)


def test_additive_encoding_needs_splittable_columns(two_columns):
    adata = two_columns
    TRVAE.setup_anndata(adata, condition_key="condition")
    with pytest.raises(ValueError, match="needs conditions from several columns"):
        TRVAE(adata, condition_encoding="additive", **SMALL)
    adata.obs["donor"] = adata.obs["donor"].map({"d1": "d_1", "d2": "d_2"})
    TRVAE.setup_anndata(adata, condition_key=["donor", "stimulus"])
    with pytest.raises(ValueError, match="cannot split the conditions"):
        TRVAE(adata, condition_encoding="additive", **SMALL)
    with pytest.raises(ValueError, match="condition_encoding='sum' is not"):
        TRVAE(adata, condition_encoding="sum", **SMALL)
