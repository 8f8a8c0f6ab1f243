from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, dense, make_counts

from trvae_scvi import TRVAE

FIRST_LAYER = "encoder.layers.0.fc_layers.Layer 0.0.weight"


@pytest.fixture
def trained(synthetic):
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    model = TRVAE(synthetic, **SMALL)
    model.train(max_epochs=3, enable_progress_bar=False)
    return synthetic, model


def test_round_trip_gives_same_predictions(trained, tmp_path):
    adata, model = trained
    expected = dense(model.predict(target_condition="c1").X)
    model.save(tmp_path / "model", save_anndata=True)
    with_adata = TRVAE.load(tmp_path / "model", adata=adata.copy())
    np.testing.assert_array_equal(dense(with_adata.predict(target_condition="c1").X), expected)
    from_saved = TRVAE.load(tmp_path / "model")
    np.testing.assert_array_equal(dense(from_saved.predict(target_condition="c1").X), expected)
    assert from_saved.module.beta == model.module.beta


def test_save_does_not_overwrite(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model")
    with pytest.raises(ValueError, match="overwrite"):
        model.save(tmp_path / "model")
    model.save(tmp_path / "model", overwrite=True)


def test_load_with_other_genes_fails(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "model")
    fewer = adata[:, 1:].copy()
    with pytest.raises(
        ValueError, match="adata has 49 genes but the model was trained on 50 genes"
    ):
        TRVAE.load(tmp_path / "model", adata=fewer)
    reordered = adata[:, ::-1].copy()
    with pytest.raises(ValueError, match="different order"):
        TRVAE.load(tmp_path / "model", adata=reordered)


def test_load_with_unseen_condition_fails(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "model")
    other = adata.copy()
    other.obs["condition"] = other.obs["condition"].cat.rename_categories({"c1": "new"})
    with pytest.raises(ValueError, match=r"conditions \['new'\] that the model has not seen"):
        TRVAE.load(tmp_path / "model", adata=other)


def test_load_from_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no model.pt"):
        TRVAE.load(tmp_path / "nothing")


def test_query_mapping_trains_only_new_condition_columns(trained, tmp_path):
    """scvi-tools' ArchesMixin maps a new condition onto a trained reference."""
    adata, model = trained
    query = make_counts(n_cells=60, seed=1)
    query.obs["condition"] = "c_new"
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    query_model = TRVAE.load_query_data(query, model)
    new_column = query_model.module.state_dict()[FIRST_LAYER][:, -1].clone()
    query_model.train(max_epochs=2, enable_progress_bar=False)  # the default plan
    after = query_model.module.state_dict()
    assert after[FIRST_LAYER].shape[1] == before[FIRST_LAYER].shape[1] + 1
    # Gene and old-condition columns are frozen; the new condition's column is trained.
    np.testing.assert_array_equal(after[FIRST_LAYER][:, :-1], before[FIRST_LAYER])
    assert not torch.equal(after[FIRST_LAYER][:, -1], new_column)
    np.testing.assert_array_equal(
        after["decoder.layers.0.fc_layers.Layer 0.0.weight"],
        before["decoder.layers.0.fc_layers.Layer 0.0.weight"],
    )
    predicted = query_model.predict(target_condition="c0", method="transfer", sample=False)
    assert predicted.shape == query.shape and np.isfinite(dense(predicted.X)).all()


def test_interrupted_save_keeps_previous_model(trained, tmp_path, monkeypatch):
    from scvi.model.base import BaseModelClass

    adata, model = trained
    model.save(tmp_path / "model")
    expected = dense(model.predict(target_condition="c1").X)

    def crash(self, dir_path, **kwargs):
        (Path(dir_path) / "model.pt").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(BaseModelClass, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "model", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind
    reloaded = TRVAE.load(tmp_path / "model", adata=adata.copy())
    np.testing.assert_array_equal(dense(reloaded.predict(target_condition="c1").X), expected)


def test_load_truncated_file(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model")
    path = tmp_path / "model" / "model.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable scvi-tools model"):
        TRVAE.load(tmp_path / "model")


def test_load_foreign_model(synthetic, tmp_path):
    import scvi

    adata = synthetic.copy()
    adata.X = adata.layers["counts"]
    scvi.model.SCVI.setup_anndata(adata)
    scvi.model.SCVI(adata, n_hidden=8, n_latent=2).save(tmp_path / "scvi_model")
    with pytest.raises(ValueError, match="holds a 'SCVI' model, not a TRVAE"):
        TRVAE.load(tmp_path / "scvi_model", adata=adata)


class _RunsCode:
    def __init__(self, call, marker):
        self.call, self.marker = call, marker

    def __reduce__(self):
        if self.call == "os.system":
            import os

            return (os.system, (f"touch {self.marker}",))
        # A public function of a library whose other functions a saved model does use.
        import pandas as pd

        return (pd.read_pickle, (str(self.marker),))


@pytest.mark.parametrize("call", ["os.system", "pandas.read_pickle"])
def test_load_refuses_a_file_that_would_run_code(trained, tmp_path, call):
    _, model = trained
    model.save(tmp_path / "model")
    path = tmp_path / "model" / "model.pt"
    saved = torch.load(path, weights_only=False)
    marker = tmp_path / "code_ran"
    saved["attr_dict"]["history_"] = _RunsCode(call, marker)
    torch.save(saved, path)
    with pytest.raises(ValueError, match="could run code, so it was not loaded"):
        TRVAE.load(tmp_path / "model")
    assert not marker.exists()


def test_query_mapping_trains_the_new_conditions_dispersion(tmp_path):
    import scvi

    scvi.settings.seed = 0
    adata = make_counts()
    TRVAE.setup_anndata(adata, condition_key="condition", layer="counts")
    model = TRVAE(adata, recon_loss="nb", **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    reference_px_r = model.module.px_r.detach().clone()
    query = make_counts(n_cells=80, seed=1)
    query.obs["condition"] = "c_new"
    query_model = TRVAE.load_query_data(query, model)
    start = query_model.module.px_r.detach().clone()
    # It starts at the reference conditions' mean dispersion, not at a random value.
    np.testing.assert_allclose(start[:, 2], reference_px_r.mean(1), rtol=1e-6)
    query_model.train(max_epochs=3, enable_progress_bar=False)
    after = query_model.module.px_r.detach()
    np.testing.assert_array_equal(after[:, :2], reference_px_r)  # old conditions frozen
    assert not torch.equal(after[:, 2], start[:, 2])  # the new one trained
    frozen = {k: v for k, v in model.module.state_dict().items() if k != "px_r"}
    for key, value in query_model.module.state_dict().items():
        if key in frozen and value.shape == frozen[key].shape:
            np.testing.assert_array_equal(value, frozen[key], err_msg=key)


SAVED_MODELS = Path(__file__).parent / "data" / "saved_models"


@pytest.mark.parametrize(
    "stack",
    # Saved by tests/data/saved_models/make_saved_model.py on each stack CI runs, and by
    # version 0.2 (history as pandas tables) on Python 3.11 with pandas 2.
    ["py311-pandas2", "py312-pandas3", "v0.2-py311-pandas2"],
)
def test_model_saved_on_another_stack_loads(stack):
    import anndata
    import pandas as pd

    expected = np.load(SAVED_MODELS / stack / "expected.npz")
    adata = anndata.AnnData(
        expected["x"], obs=pd.DataFrame({"condition": expected["conditions"].astype(str)})
    )
    model = TRVAE.load(SAVED_MODELS / stack, adata=adata)
    np.testing.assert_allclose(
        model.get_latent_representation(), expected["latent"], rtol=1e-5, atol=1e-6
    )
    assert isinstance(model.history["train_loss"], pd.DataFrame)
    assert model.history["train_loss"].index.name == "epoch"


def test_saved_history_needs_no_pandas_and_round_trips(trained, tmp_path):
    import pandas as pd

    _, model = trained
    model.save(tmp_path / "model")
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=False)
    assert all(isinstance(entry, dict) for entry in saved["attr_dict"]["history_"].values())
    loaded = TRVAE.load(tmp_path / "model", adata=model.adata.copy())
    assert loaded.history.keys() == model.history.keys()
    for key, frame in model.history.items():
        pd.testing.assert_frame_equal(loaded.history[key], frame, check_dtype=False)
    # The model in memory keeps its tables.
    assert all(isinstance(frame, pd.DataFrame) for frame in model.history.values())
