"""calibrate_predictor: the inner group K-fold, its choice, and how predict uses it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, dense, make_counts, train_small

from trvae_scvi import TRVAE
from trvae_scvi.model import _calibration


@pytest.fixture(scope="module")
def calibrated():
    adata = make_counts(n_cells=240, seed=3)
    model = train_small(adata, max_epochs=2)[0]
    scores = model.calibrate_predictor("cell_type", "c1", enable_progress_bar=False)
    return model, scores


def test_scores_every_group_at_every_shrinkage(calibrated):
    model, scores = calibrated
    assert sorted(scores.group.unique()) == ["t0", "t1"]
    assert scores.groupby("group").shrinkage.apply(tuple).tolist() == [_calibration.SHRINKAGES] * 2
    assert np.isfinite(scores[["r2_mean_deg", "change_r_deg"]].to_numpy()).all()
    record = model.predictor_calibration_
    best, means = _calibration.choose(scores)
    assert record["shrinkage"] == best
    chosen = scores[scores.shrinkage == best]
    assert record["expected_r2_mean_deg"] == pytest.approx(chosen.r2_mean_deg.mean())
    assert (record["source_condition"], record["target_condition"]) == ("c0", "c1")


def test_predict_uses_the_calibrated_shrinkage_only_for_its_defaults(calibrated):
    model, _ = calibrated
    record = model.predictor_calibration_
    obs = model.adata.obs
    cells = np.flatnonzero((obs.condition == "c0") & (obs.cell_type == "t0"))
    default = model.predict(indices=cells, target_condition="c1", cell_type_key="cell_type")
    used = default.uns["trVAE_predict"]
    assert used["shrinkage"] == record["shrinkage"]
    assert used["calibration"]["expected_r2_mean_deg"] == record["expected_r2_mean_deg"]
    assert used["calibration"]["groups"] == ["t0", "t1"]
    explicit = model.predict(
        indices=cells, target_condition="c1", cell_type_key="cell_type", shrinkage=0.5
    )
    assert explicit.uns["trVAE_predict"]["shrinkage"] == 0.5
    assert explicit.uns["trVAE_predict"]["calibration"].startswith("none")
    other = model.predict(indices=cells, target_condition="c1", method="neuron_edit")
    assert other.uns["trVAE_predict"]["shrinkage"] == 0.25
    # The calibrated default is the same call with that shrinkage passed explicitly.
    same = model.predict(
        indices=cells,
        target_condition="c1",
        cell_type_key="cell_type",
        shrinkage=record["shrinkage"],
    )
    np.testing.assert_array_equal(dense(default.X), dense(same.X))


def test_calibrated_prediction_writes_to_h5ad(calibrated, tmp_path):
    model, _ = calibrated
    obs = model.adata.obs
    cells = np.flatnonzero((obs.condition == "c0") & (obs.cell_type == "t1"))
    predicted = model.predict(indices=cells, target_condition="c1", cell_type_key="cell_type")
    predicted.write_h5ad(tmp_path / "predicted.h5ad")
    written = ad.read_h5ad(tmp_path / "predicted.h5ad").uns["trVAE_predict"]["calibration"]
    assert written["shrinkage"] == model.predictor_calibration_["shrinkage"]
    assert list(written["groups"]) == ["t0", "t1"]


def test_other_target_keeps_the_fixed_default(calibrated):
    model, _ = calibrated
    obs = model.adata.obs
    cells = np.flatnonzero((obs.condition == "c1") & (obs.cell_type == "t0"))
    predicted = model.predict(indices=cells, target_condition="c0", cell_type_key="cell_type")
    assert predicted.uns["trVAE_predict"]["shrinkage"] == 0.25
    assert predicted.uns["trVAE_predict"]["calibration"].startswith("none")


def test_inner_models_never_see_their_groups_target_cells(monkeypatch):
    adata = make_counts(n_cells=240, seed=4)
    model = train_small(adata, max_epochs=1)[0]
    seen = []
    train = TRVAE.train

    def recording(self, **kwargs):
        seen.append(self.adata.obs[["cell_type", "condition"]].astype(str).copy())
        return train(self, **kwargs)

    monkeypatch.setattr(TRVAE, "train", recording)
    model.calibrate_predictor("cell_type", "c1", n_folds=2, enable_progress_bar=False)
    folds = model.predictor_calibration_["folds"]
    assert len(seen) == len(folds) == 2
    for obs, held in zip(seen, folds, strict=True):
        hidden = obs.cell_type.isin(held) & (obs.condition == "c1")
        assert not hidden.any()
        assert (
            len(obs) == (~(adata.obs.cell_type.isin(held) & (adata.obs.condition == "c1"))).sum()
        )


def test_calibration_is_saved_with_the_model(calibrated, tmp_path):
    model, _ = calibrated
    model.save(tmp_path / "model", save_anndata=True)
    loaded = TRVAE.load(tmp_path / "model")
    assert loaded.predictor_calibration_ == model.predictor_calibration_


def test_choose_takes_the_best_mean_and_breaks_ties_toward_mean_shift():
    rows = [
        (group, s, r2, r2)
        for group, values in {
            "a": (0.5, 0.9, 0.9, 0.6, 0.5),
            "b": (0.5, 0.7, 0.7, 0.6, 0.5),
        }.items()
        for s, r2 in zip(_calibration.SHRINKAGES, values, strict=True)
    ]
    scores = pd.DataFrame(rows, columns=["group", "shrinkage", "r2_mean_deg", "change_r_deg"])
    best, means = _calibration.choose(scores)
    assert best == 0.5  # 0.25 and 0.5 tie at 0.8: the larger shrinkage
    assert means.loc[0.5, "score"] == pytest.approx(0.8)


def test_groups_need_both_conditions_and_folds_deal_them():
    types = np.array(["a"] * 20 + ["b"] * 20 + ["c"] * 15 + ["d"] * 30)
    conditions = np.array(["x", "y"] * 10 + ["x", "y"] * 10 + ["x"] * 10 + ["y"] * 5 + ["x"] * 30)
    assert _calibration.measured_groups(types, conditions, ("x", "y"), []) == ["a", "b"]
    assert _calibration.measured_groups(types, conditions, ("x", "y"), ["a"]) == ["b"]
    assert _calibration.folds(["a", "b", "c", "d", "e"], 3) == [["a", "d"], ["b", "e"], ["c"]]
    assert _calibration.folds(["a", "b"], 5) == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell_type_key": "type"}, "cell_type_key='type' is not a column"),
        ({"target_condition": "c9"}, "target_condition='c9' is not a condition"),
        ({"source_condition": "c1"}, "source_condition='c1' equals target_condition"),
        ({"n_folds": 1}, "n_folds=1 must be an integer of at least 2"),
        ({"exclude": ["t0"]}, "calibration needs 2"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    adata = make_counts(n_cells=120, seed=5)
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.is_trained_ = True  # the checks come before any training
    arguments = {"cell_type_key": "cell_type", "target_condition": "c1", **kwargs}
    with pytest.raises(ValueError, match=message):
        model.calibrate_predictor(**arguments)


def test_untrained_model_and_ambiguous_source_are_refused():
    adata = make_counts(n_cells=120, n_conditions=3, seed=6)
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    with pytest.raises(ValueError, match="source_condition=None is ambiguous"):
        model.calibrate_predictor("cell_type", "c1")
    with pytest.raises(ValueError, match="needs a model trained"):
        model.calibrate_predictor("cell_type", "c1", source_condition="c0")
