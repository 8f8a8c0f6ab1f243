"""What predict returns: count outputs, sampling without target cells, the reference cells."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from helpers import SMALL, dense, make_counts

from trvae_scvi import TRVAE
from trvae_scvi.model._domain import expected_zero_fraction


@pytest.fixture(scope="module", params=["nb", "zinb"])
def count_model(request):
    scvi.settings.seed = 0
    adata = make_counts()
    TRVAE.setup_anndata(adata, condition_key="condition", layer="counts")
    model = TRVAE(adata, recon_loss=request.param, **SMALL)
    model.train(max_epochs=3, enable_progress_bar=False)
    return model


@pytest.mark.parametrize("sample", [False, True])
def test_count_outputs_match_a_hand_computation(count_model, sample):
    model = count_model
    counts = model.adata.layers["counts"].toarray()
    cells = np.arange(30)
    library = np.maximum(counts[cells].sum(1, keepdims=True), 1)
    assert model.median_library_size_ == np.median(counts.sum(1))

    scvi.settings.seed = 3
    predicted = model.predict(
        indices=cells, target_condition="c1", sample=sample, method="transfer"
    )
    info = predicted.uns["trVAE_predict"]
    assert info["target_sum"] == model.median_library_size_
    # The log-normalised layer is computed from X itself: the draws when sampling.
    np.testing.assert_allclose(
        dense(predicted.layers["log_normalized"]),
        np.log1p(dense(predicted.X) / library * model.median_library_size_),
        rtol=1e-5,
    )
    if sample:
        np.testing.assert_array_equal(dense(predicted.X), np.round(dense(predicted.X)))
        return
    # Expected counts by hand from the module: mean of the likelihood, zero-inflation included.
    module = model.module.eval()
    with torch.no_grad():
        x = torch.as_tensor(counts[cells])
        own = torch.as_tensor(model.adata.obs.condition.cat.codes.to_numpy()[cells]).long()[
            :, None
        ]
        z = module.inference(x, own)["qz"].loc
        px = module.decode(torch.log(x.sum(1, keepdim=True)), torch.ones_like(own), z=z)
        expected = px.mu * (1 - px.zi_probs) if model.module.recon_loss == "zinb" else px.mu
    np.testing.assert_allclose(dense(predicted.X), expected.numpy(), rtol=1e-4)
    chosen = model.predict(
        indices=cells, target_condition="c1", target_sum=1e4, method="transfer", sample=False
    )
    assert chosen.uns["trVAE_predict"]["target_sum"] == 1e4
    np.testing.assert_allclose(
        dense(chosen.layers["log_normalized"]),
        np.log1p(dense(chosen.X) / library * 1e4),
        rtol=1e-5,
    )


def test_sampling_needs_no_cells_of_the_target_condition(tmp_path):
    scvi.settings.seed = 0
    adata = make_counts()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "model")
    c0 = np.flatnonzero((adata.obs.condition == "c0").to_numpy())

    # A model loaded with a subset that lacks the target condition: draws use the predicted
    # cells' own residuals, so they need no cells of the target condition.
    only_c0 = adata[c0].copy()
    loaded = TRVAE.load(tmp_path / "model", only_c0)
    drawn = loaded.predict(
        indices=np.arange(10), target_condition="c1", sample=True, method="transfer"
    )
    assert np.isfinite(dense(drawn.X)).all()
    with pytest.raises(ValueError, match="holds 0 cells of the target condition"):
        loaded.predict(target_condition="c1", sample=True)  # calibrated needs a reference

    # A query mapped as a new condition.
    query = make_counts(n_cells=60, seed=1)
    query.obs["condition"] = "c_new"
    query_model = TRVAE.load_query_data(query, str(tmp_path / "model"))
    query_model.train(max_epochs=1, enable_progress_bar=False)
    drawn = dense(query_model.predict(target_condition="c0", sample=True, method="transfer").X)
    assert np.isfinite(drawn).all()


@pytest.fixture(scope="module")
def held_out():
    """A model trained without the c1 cells of type t0, and all cells beside it."""
    scvi.settings.seed = 0
    adata = make_counts(n_cells=300)
    held = ((adata.obs.cell_type == "t0") & (adata.obs.condition == "c1")).to_numpy()
    train = adata[~held].copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    model = TRVAE(train, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    return adata, train, model


def test_default_reference_never_uses_a_new_adatas_target_cells(held_out):
    adata, train, model = held_out
    t0_control = lambda a: np.flatnonzero(  # noqa: E731
        ((a.obs.cell_type == "t0") & (a.obs.condition == "c0")).to_numpy()
    )
    kwargs = {"target_condition": "c1", "method": "neuron_edit"}
    from_model = dense(model.predict(indices=t0_control(train), **kwargs).X)
    # The user's full AnnData holds the real c1 cells of t0: they must not become the reference.
    from_full = dense(model.predict(adata, indices=t0_control(adata), **kwargs).X)
    np.testing.assert_allclose(from_full, from_model, rtol=1e-5, atol=1e-6)
    leaking = np.setdiff1d(np.arange(adata.n_obs), t0_control(adata))
    with pytest.raises(ValueError, match=r"holds 'c1' cells of \['t0'\].*would leak"):
        model.predict(
            adata,
            indices=t0_control(adata),
            reference_indices=leaking,
            cell_type_key="cell_type",
            **kwargs,
        )


def test_cell_type_key_keeps_predicted_types_out_of_the_default_reference(held_out):
    adata, _, _ = held_out
    scvi.settings.seed = 0
    full = adata.copy()
    TRVAE.setup_anndata(full, condition_key="condition")
    model = TRVAE(full, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    t0_control = np.flatnonzero((full.obs.cell_type == "t0") & (full.obs.condition == "c0"))
    t1 = np.flatnonzero((full.obs.cell_type == "t1").to_numpy())
    kwargs = {"indices": t0_control, "target_condition": "c1", "method": "latent_shift"}
    by_type = dense(model.predict(cell_type_key="cell_type", **kwargs).X)
    explicit = dense(model.predict(reference_indices=t1, **kwargs).X)
    # One reference type: the balanced shift equals the plain one over its cells.
    np.testing.assert_allclose(by_type, explicit, rtol=1e-5, atol=1e-6)
    without = dense(model.predict(**kwargs).X)  # includes t0's own c1 cells: another answer
    assert not np.allclose(without, explicit, atol=1e-4)


def test_latent_shift_is_balanced_over_cell_types(held_out):
    _, train, model = held_out
    train = train.copy()
    # Three reference types of very different sizes.
    rng = np.random.default_rng(0)
    train.obs["group"] = np.where(
        train.obs.cell_type == "t0", "t0", rng.choice(["a", "b"], train.n_obs, p=[0.9, 0.1])
    )
    control = np.flatnonzero(
        ((train.obs.group == "t0") & (train.obs.condition == "c0")).to_numpy()
    )
    predicted = dense(
        model.predict(
            train,
            indices=control,
            target_condition="c1",
            method="latent_shift",
            reference_indices=np.flatnonzero((train.obs.group != "t0").to_numpy()),
            cell_type_key="group",
            sample=False,
        ).X
    )
    z = torch.as_tensor(model.get_latent_representation(train))
    groups, conditions = train.obs.group.to_numpy(), train.obs.condition.to_numpy()
    shift = torch.stack(
        [
            z[(groups == g) & (conditions == "c1")].mean(0)
            - z[(groups == g) & (conditions == "c0")].mean(0)
            for g in ("a", "b")
        ]
    ).mean(0)
    module = model.module.eval()
    with torch.no_grad():
        source = torch.zeros(len(control), 1, dtype=torch.long)
        x = torch.as_tensor(train.X[control].toarray())
        z_cells = module.inference(x, source)["qz"].loc
        library = torch.zeros(len(control), 1)
        expected = module.decode(library, source, z=z_cells + shift).mean
        # mse predictions keep the decoder's mean error on the predicted cells
        expected += (x - module.decode(library, source, z=z_cells).mean).mean(0)
    np.testing.assert_allclose(predicted, expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["transfer", "neuron_edit", "calibrated"])
def test_mse_draws_keep_the_expected_means(held_out, method, unfloored):
    _, train, model = held_out
    # Cells of both conditions: each source condition keeps its own mean residual.
    cells = np.flatnonzero((train.obs.cell_type == "t1").to_numpy())
    sources = train.obs.condition.to_numpy()[cells]
    assert len(set(sources)) == 2
    options = {"indices": cells, "target_condition": "c1", "method": method}
    if method != "transfer":
        options["reference_conditions"] = ("c0", "c1")
    drawn = dense(model.predict(**options, sample=True).X)
    expected = dense(model.predict(**options, sample=False).X)
    assert not np.allclose(drawn, expected)
    for source in ("c0", "c1"):
        rows = sources == source
        np.testing.assert_allclose(drawn[rows].mean(0), expected[rows].mean(0), atol=1e-5)
    if method == "transfer":
        # The published transfer plus the decoder's mean error on the cells of each source.
        published = model.get_corrected_expression("c1", indices=cells)
        x = train.X[cells].toarray()
        for source in ("c0", "c1"):
            rows = sources == source
            own = model.get_corrected_expression(source, indices=cells[rows])
            np.testing.assert_allclose(
                expected[rows],
                published[rows] + (x[rows] - own).mean(0),
                rtol=1e-4,
                atol=1e-5,
            )


@pytest.mark.parametrize("method", ["neuron_edit", "transfer"])
def test_shrinkage_mixes_the_prediction_with_the_reference_change(held_out, method, unfloored):
    adata, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    for sample in (False, True):
        own = dense(model.predict(**options, method=method, shrinkage=0.0, sample=sample).X)
        shift = dense(
            model.predict(**options, method="calibrated", calibration_weight=0.0, sample=sample).X
        )
        shrunk = model.predict(**options, method=method, shrinkage=0.3, sample=sample)
        assert shrunk.uns["trVAE_predict"]["shrinkage"] == 0.3
        np.testing.assert_allclose(dense(shrunk.X), 0.7 * own + 0.3 * shift, rtol=1e-4, atol=1e-5)
        full = dense(model.predict(**options, method=method, shrinkage=1.0, sample=sample).X)
        np.testing.assert_allclose(full, shift, rtol=1e-4, atol=1e-5)
    # The mean shift's draws are the cells themselves plus the reference's real mean change.
    t1 = train.obs.cell_type == "t1"
    change = train.X[(t1 & (train.obs.condition == "c1")).to_numpy()].mean(0) - train.X[
        (t1 & (train.obs.condition == "c0")).to_numpy()
    ].mean(0)
    np.testing.assert_allclose(
        shift, train.X[control].toarray() + np.asarray(change), rtol=1e-4, atol=1e-4
    )


def test_shrinkage_defaults_to_a_quarter_for_neuron_edit_only(held_out):
    _, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "sample": False}
    assert model.predict(**options).uns["trVAE_predict"]["shrinkage"] == 0.25
    for method in ("transfer", "calibrated", "latent_shift"):
        uns = model.predict(**options, method=method).uns["trVAE_predict"]
        assert uns["shrinkage"] == 0.0
    with pytest.raises(ValueError, match=r"shrinkage=1.5 must lie in \[0, 1\]"):
        model.predict(**options, shrinkage=1.5)


def test_several_methods_average_and_are_the_mse_default(held_out, unfloored):
    _, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    for sample in (False, True):
        parts = [
            dense(model.predict(**options, method=m, shrinkage=0.25, sample=sample).X)
            for m in ("neuron_edit", "calibrated")
        ]
        default = model.predict(**options, sample=sample)
        info = default.uns["trVAE_predict"]
        assert list(info["method"]) == ["neuron_edit", "calibrated"]
        assert info["shrinkage"] == 0.25 and info["calibration_weight"] == 1.0
        # Shrinkage is linear: averaging the shrunk parts is shrinking the average.
        np.testing.assert_allclose(dense(default.X), np.mean(parts, 0), rtol=1e-4, atol=1e-5)
    for bad in ([], ["transfer", "transfer"], ["transfer", "scgen"]):
        with pytest.raises(ValueError, match="method="):
            model.predict(**options, method=bad)


@pytest.mark.parametrize("n_neighbors", [None, 5])
def test_calibrated_decodes_the_reference_in_chunks(held_out, monkeypatch, n_neighbors):
    from trvae_scvi.model import _predictors

    _, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    options.update(method="calibrated", n_neighbors=n_neighbors, sample=False)
    whole = dense(model.predict(**options).X)
    monkeypatch.setattr(_predictors, "REFERENCE_CHUNK", 7)  # not a divisor of the reference
    np.testing.assert_allclose(dense(model.predict(**options).X), whole, rtol=1e-5, atol=1e-6)


def test_shrunk_count_draws_are_counts(count_model):
    adata = count_model.adata
    control = np.flatnonzero((adata.obs.cell_type == "t0") & (adata.obs.condition == "c0"))
    scvi.settings.seed = 0
    drawn = count_model.predict(
        indices=control, target_condition="c1", cell_type_key="cell_type", shrinkage=0.5
    )
    assert np.all(dense(drawn.X) >= 0) and np.array_equal(dense(drawn.X), np.round(dense(drawn.X)))
    assert np.isfinite(dense(drawn.layers["log_normalized"])).all()
    # Count models default to NeuronEdit alone: only it was screened on counts.
    assert drawn.uns["trVAE_predict"]["method"] == "neuron_edit"


def test_default_reference_leaves_out_renamed_predicted_cells(held_out):
    """A new AnnData whose cells are the model's own under other names: the predicted cells
    stay out of the default reference (they moved the prediction by up to 0.09 before)."""
    _, train, model = held_out
    t0_control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    kwargs = {"indices": t0_control, "target_condition": "c1", "method": "neuron_edit"}
    expected = dense(model.predict(sample=False, **kwargs).X)
    renamed = train.copy()
    renamed.obs_names = [f"renamed_{name}" for name in train.obs_names]
    np.testing.assert_allclose(
        dense(model.predict(renamed, sample=False, **kwargs).X), expected, rtol=1e-5, atol=1e-6
    )


@pytest.fixture(scope="module")
def three_conditions():
    scvi.settings.seed = 0
    adata = make_counts(n_cells=300, n_conditions=3)
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    return adata, model


def test_reference_conditions_never_let_the_predicted_types_response_leak(three_conditions):
    """The reference's pair (c1, c2) is not the prediction's (c0, c2) but shares its target:
    t0's real c2 cells must stay out of it, as with the prediction's own pair."""
    adata, model = three_conditions
    t0_control = np.flatnonzero((adata.obs.cell_type == "t0") & (adata.obs.condition == "c0"))
    kwargs = {
        "indices": t0_control,
        "target_condition": "c2",
        "method": "neuron_edit",
        "reference_conditions": ("c1", "c2"),
        "cell_type_key": "cell_type",
        "sample": False,
    }
    by_default = dense(model.predict(**kwargs).X)
    other_types = np.flatnonzero((adata.obs.cell_type == "t1").to_numpy())
    explicit = dense(model.predict(reference_indices=other_types, **kwargs).X)
    np.testing.assert_allclose(by_default, explicit, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"holds 'c2' cells of \['t0'\].*would leak"):
        model.predict(reference_indices=np.arange(adata.n_obs), **kwargs)


def test_a_new_method_is_one_class_and_one_registry_line(held_out, monkeypatch):
    """The interface: a method that decodes each cell's z with its own condition, registered
    by name, gives back the cells themselves (mse: decoded plus each cell's own residual)."""
    from trvae_scvi.model import _predictors

    class Unchanged(_predictors.Predictor):
        def decoding(self, cells):
            return self.source_code, {"z": cells["z"]}

    monkeypatch.setitem(_predictors.PREDICTORS, "unchanged", Unchanged)
    _, train, model = held_out
    control = np.flatnonzero((train.obs.condition == "c0").to_numpy())
    predicted = model.predict(
        indices=control,
        target_condition="c1",
        method="unchanged",
        shrinkage=0.0,
        zeros="floored",
    )
    np.testing.assert_allclose(dense(predicted.X), train.X[control].toarray(), atol=1e-5)
    assert predicted.uns["trVAE_predict"]["method"] == "unchanged"


def test_count_calibrated_matches_its_formula(count_model):
    """Per cell, in log1p(counts / library * target_sum) space: S + (mean X - mean S)
    + (R_t - R_s) + w ((T - S) - mean(T_r - S_r)), then counts at the cell's library."""
    model, weight = count_model, 0.5
    adata, target_sum = model.adata, model.median_library_size_
    counts = adata.layers["counts"].toarray()
    library = np.maximum(counts.sum(1, keepdims=True), 1)
    condition, cell_type = adata.obs.condition.to_numpy(), adata.obs.cell_type.to_numpy()
    cells = np.flatnonzero((condition == "c0") & (cell_type == "t0"))
    reference = np.flatnonzero(cell_type == "t1")
    ref_source, ref_target = (reference[condition[reference] == c] for c in ("c0", "c1"))
    real = np.log1p(counts / library * target_sum)

    def decoded(target, rows):
        expected = model.get_corrected_expression(target, indices=rows)
        return np.log1p(expected / library[rows] * target_sum)

    own, moved = decoded("c0", cells), decoded("c1", cells)
    ref_change = (decoded("c1", ref_source) - decoded("c0", ref_source)).mean(0)
    expected_log = (
        own
        + (real[cells].mean(0) - own.mean(0))
        + (real[ref_target].mean(0) - real[ref_source].mean(0))
        + weight * ((moved - own) - ref_change)
    )
    expected = np.expm1(np.maximum(expected_log, 0)) * library[cells] / target_sum
    predicted = model.predict(
        indices=cells,
        target_condition="c1",
        method="calibrated",
        calibration_weight=weight,
        reference_indices=reference,
        sample=False,
    )
    np.testing.assert_allclose(dense(predicted.X), expected, rtol=1e-4, atol=1e-5)


def test_calibrated_neighbours_weigh_the_nearest_reference_cells(count_model):
    model = count_model
    condition, cell_type = model.adata.obs.condition, model.adata.obs.cell_type
    cells = np.flatnonzero((condition == "c0") & (cell_type == "t0"))
    reference = np.flatnonzero(cell_type == "t1")
    kwargs = {
        "indices": cells,
        "target_condition": "c1",
        "method": "calibrated",
        "reference_indices": reference,
        "sample": False,
    }
    whole = dense(model.predict(**kwargs).X)
    # As many neighbours as reference cells: every reference cell, weighted alike.
    every = dense(model.predict(n_neighbors=len(reference), **kwargs).X)
    np.testing.assert_allclose(every, whole, rtol=1e-5, atol=1e-6)
    assert model.predict(n_neighbors=3, **kwargs).uns["trVAE_predict"]["n_neighbors"] == 3
    assert not np.allclose(dense(model.predict(n_neighbors=3, **kwargs).X), whole, atol=1e-3)


def test_outputs_of_non_negative_data_are_non_negative(held_out, monkeypatch):
    """Non-negative input: without zero matching, every output is floored at 0 and only that
    changes; with it, the output stays non-negative; sparse input gives a CSR matrix."""
    adata, train, model = held_out
    assert model.non_negative_data_
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    matched = model.predict(**options, zeros="matched").X
    assert sp.issparse(matched) and matched.format == "csr" and (matched.data > 0).all()
    floored = model.predict(**options).X
    assert sp.issparse(floored) and floored.format == "csr"
    floored = dense(floored)
    corrected = model.get_corrected_expression("c1", indices=control)
    monkeypatch.setattr(TRVAE, "_in_data_domain", lambda self, values, zeros=None: values)
    raw = dense(model.predict(**options, zeros="floored").X)
    assert (raw < 0).any() and (floored >= 0).all() and (corrected >= 0).all()
    np.testing.assert_array_equal(floored, np.maximum(raw, 0))
    np.testing.assert_array_equal(
        corrected, np.maximum(model.get_corrected_expression("c1", indices=control), 0)
    )


def test_full_shrinkage_with_draws_is_floored_mean_shift(held_out):
    """shrinkage=1 with draws: each control cell plus the other types' mean change, at >= 0;
    with zero matching, the same means per gene and the reference's change in zeros."""
    adata, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {
        "indices": control,
        "target_condition": "c1",
        "cell_type_key": "cell_type",
        "shrinkage": 1.0,
    }
    t1 = (train.obs.cell_type == "t1").to_numpy()
    stimulated = train.X[t1 & (train.obs.condition == "c1").to_numpy()].toarray()
    controls = train.X[t1 & (train.obs.condition == "c0").to_numpy()].toarray()
    change = stimulated.astype(np.float64).mean(0) - controls.astype(np.float64).mean(0)
    expected = np.maximum(train.X[control].toarray() + change, 0)
    floored = dense(model.predict(**options).X)
    np.testing.assert_allclose(floored, expected, atol=1e-6)
    matched = dense(model.predict(**options, zeros="matched").X)
    np.testing.assert_allclose(matched.mean(0), expected.mean(0), rtol=1e-5, atol=1e-6)
    wanted = expected_zero_fraction(train.X[control], controls, stimulated)
    n_zeros = np.minimum(np.rint(wanted * len(control)), len(control) - 1)
    assert ((matched == 0).sum(0) >= n_zeros).all()


def test_draws_of_sparse_log_data_have_the_targets_zeros():
    """Log-normalised data, 70-90% zeros: the draws' zeros per gene follow the control cells'
    own plus the reference's change, their means are those of the floored draws, and dense
    input gives a dense prediction."""
    scvi.settings.seed = 0
    adata = make_counts(n_cells=300)
    thinned = np.random.default_rng(0).binomial(adata.X.toarray().astype(int), 0.05)
    adata.X = sp.csr_matrix(np.log1p(thinned).astype(np.float32))
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    control = np.flatnonzero((adata.obs.cell_type == "t0") & (adata.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    matched = model.predict(**options, zeros="matched").X
    floored = dense(model.predict(**options).X)
    t1 = (adata.obs.cell_type == "t1").to_numpy()
    source, target = (adata.X[t1 & (adata.obs.condition == c).to_numpy()] for c in ("c0", "c1"))
    wanted = expected_zero_fraction(adata.X[control], source, target)
    achieved = 1 - matched.getnnz(axis=0) / len(control)
    step = 1 / len(control) + 1e-9
    # More zeros than wanted only where the floor had already made them.
    already = (floored == 0).mean(0)
    assert np.all((np.abs(achieved - wanted) <= step) | (achieved == already))
    assert (floored == 0).mean() < achieved.mean() - 0.1  # the floor alone leaves too few
    np.testing.assert_allclose(dense(matched).mean(0), floored.mean(0), rtol=1e-5, atol=1e-7)
    # scvi-tools' decoded expression (the reconstructions) too, as an array and as a table;
    # unfloored, 6-7% of these values are below 0.
    assert (model.get_normalized_expression(return_numpy=True) >= 0).all()
    assert (model.get_normalized_expression(transform_batch="c1").to_numpy() >= 0).all()
    dense_input = adata.copy()
    dense_input.X = adata.X.toarray()
    on_dense = model.predict(dense_input, **options, zeros="matched").X
    assert isinstance(on_dense, np.ndarray)
    np.testing.assert_allclose(on_dense, dense(matched), rtol=1e-5, atol=1e-6)


def test_kept_zeros_leave_expressing_cells_alone_and_zero_the_rest(held_out):
    """zeros="kept": values of cells that express a gene are the floored draws'; a cell's zero
    stays 0 unless its gene should have fewer zeros, then only the highest are filled in."""
    _, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    floored = dense(model.predict(**options).X)
    kept = model.predict(**options, zeros="kept")
    assert kept.uns["trVAE_predict"]["zeros"] == "kept" and sp.issparse(kept.X)
    kept = dense(kept.X)
    expressed = train.X[control].toarray() > 0
    np.testing.assert_array_equal(kept[expressed], floored[expressed])
    changed = kept != floored
    assert changed.any() and (kept[changed] == 0).all() and not changed[expressed].any()
    t1 = (train.obs.cell_type == "t1").to_numpy()
    source, target = (train.X[t1 & (train.obs.condition == c).to_numpy()] for c in ("c0", "c1"))
    wanted = expected_zero_fraction(train.X[control], source, target)
    filled = (~expressed & (kept > 0)).sum(0)
    assert (filled <= np.maximum((~expressed).sum(0) - np.rint(wanted * len(control)), 0)).all()
    with pytest.raises(ValueError, match=r"zeros='own' is not supported; choose one of"):
        model.predict(**options, zeros="own")


def test_scaled_data_keep_negative_values(held_out):
    """Data with negative values (scaled) are not floored."""
    _, train, _ = held_out
    scaled = train.copy()
    scaled.X = scaled.X.toarray() - 10.0
    TRVAE.setup_anndata(scaled, condition_key="condition")
    model = TRVAE(scaled, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    assert not model.non_negative_data_
    assert (model.get_corrected_expression("c1") < 0).any()


def test_predicting_in_chunks_of_cells_changes_nothing(held_out, count_model, monkeypatch):
    """Large predictions run a few cells at a time (bounded memory): the same values, for mse
    draws and expected values and for count models' expected counts."""
    from trvae_scvi.model import _prediction

    _, train, model = held_out
    control = np.flatnonzero((train.obs.cell_type == "t0") & (train.obs.condition == "c0"))
    options = {"indices": control, "target_condition": "c1", "cell_type_key": "cell_type"}
    assert len(control) > 20  # several chunks of 7 cells
    cases = [
        (model, {**options, "sample": True}),
        (model, {**options, "sample": False, "method": "calibrated", "n_neighbors": 5}),
        (count_model, {"target_condition": "c1", "sample": False}),
    ]
    whole = [dense(m.predict(**kwargs).X) for m, kwargs in cases]
    monkeypatch.setattr(_prediction, "PREDICT_CHUNK_VALUES", 7 * model.module.n_input)
    for (m, kwargs), expected in zip(cases, whole, strict=True):
        np.testing.assert_allclose(dense(m.predict(**kwargs).X), expected, rtol=1e-5, atol=1e-6)
