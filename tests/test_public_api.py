"""Every public member of TRVAE, inherited ones included, works or raises a clear error.

``CASES`` maps each public method to a call with a check, per likelihood; a method whose name
is not here fails ``test_every_public_member_is_covered``, so a new inherited method cannot slip
by unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from helpers import SMALL, make_counts

from trvae_scvi import TRVAE

PROPERTIES = set(
    "adata adata_manager condition_key conditions device get_normalized_function_name history "
    "is_trained registry run_id run_name summary_string test_indices train_indices "
    "validation_indices".split()
)
COUNTS_ONLY = {
    "differential_expression",
    "get_feature_correlation_matrix",
    "get_latent_library_size",
    "get_likelihood_parameters",
    "posterior_predictive_sample",
}
ALWAYS_RAISE = {
    "convert_legacy_save",
    "get_importance_weights",
    "get_marginal_ll",
    "prepare_query_mudata",
    "setup_annbatch",
}


@pytest.fixture(scope="module", params=["mse", "nb", "zinb"])
def trained(request, tmp_path_factory):
    scvi.settings.seed = 0
    adata = make_counts()
    TRVAE.setup_anndata(
        adata, condition_key="condition", layer=None if request.param == "mse" else "counts"
    )
    model = TRVAE(adata, recon_loss=request.param, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    saved = tmp_path_factory.mktemp(request.param) / "model"
    model.save(saved, save_anndata=True)
    return model, saved


def registered_copy(model):
    other = make_counts(seed=2)
    model._validate_anndata(other)
    return other


def _counts(model):
    return model.adata.layers["counts"].toarray()


def _calibrates(model) -> bool:
    scores = model.calibrate_predictor("cell_type", "c1", enable_progress_bar=False)
    model.predictor_calibration_ = None  # the other cases use the fixed defaults
    return sorted(scores.group.unique()) == ["t0", "t1"] and np.isfinite(scores.r2_mean_deg).all()


CASES = {
    "calibrate_predictor": lambda m, d: _calibrates(m),
    "convert_legacy_save": lambda m, d: TRVAE.convert_legacy_save(d, d),
    "data_registry": lambda m, d: m.data_registry("X").shape == m.adata.shape,
    "deregister_manager": lambda m, d: (
        registered_copy(m) is not None
        and m.deregister_manager() is None
        and m.get_anndata_manager(m.adata) is m.adata_manager
    ),
    "differential_abundance": lambda m, d: (
        m.differential_abundance(sample_key="cell_type", overwrite=True) is None
        and m.adata.obsm["da_log_probs"].shape == (m.adata.n_obs, 2)
    ),
    "differential_expression": lambda m, d: (
        m.differential_expression(groupby="condition", silent=True).shape[0] == 2 * m.adata.n_vars
    ),
    "get_aggregated_posterior": lambda m, d: (
        m.get_aggregated_posterior().sample().shape == (SMALL["n_latent"],)
    ),
    "get_anndata_manager": lambda m, d: m.get_anndata_manager(m.adata) is m.adata_manager,
    "get_corrected_expression": lambda m, d: (
        m.get_corrected_expression("c0").shape == m.adata.shape
    ),
    "get_elbo": lambda m, d: np.isfinite(float(m.get_elbo())),
    "get_feature_correlation_matrix": lambda m, d: (
        m.get_feature_correlation_matrix(n_samples=2).shape == (m.adata.n_vars, m.adata.n_vars)
    ),
    "get_from_registry": lambda m, d: np.array_equal(
        m.get_from_registry(m.adata, "batch").ravel(), m.adata.obs.condition.cat.codes
    ),
    "get_importance_weights": lambda m, d: m.get_importance_weights(),
    "get_latent_library_size": lambda m, d: np.allclose(
        m.get_latent_library_size().ravel(), np.maximum(_counts(m).sum(1), 1), rtol=1e-5
    ),
    "get_latent_representation": lambda m, d: (
        m.get_latent_representation().shape == (m.adata.n_obs, SMALL["n_latent"])
    ),
    "get_likelihood_parameters": lambda m, d: (
        m.get_likelihood_parameters()["mean"].shape == m.adata.shape
    ),
    "get_marginal_ll": lambda m, d: m.get_marginal_ll(),
    "get_mmd_representation": lambda m, d: (
        m.get_mmd_representation().shape == (m.adata.n_obs, SMALL["hidden_sizes"][-1])
    ),
    "get_normalized_expression": lambda m, d: np.isfinite(
        m.get_normalized_expression(transform_batch="c1").to_numpy()
    ).all(),
    "get_reconstruction_error": lambda m, d: np.isfinite(
        float(m.get_reconstruction_error()["reconstruction_loss"])
    ),
    "get_setup_arg": lambda m, d: m.get_setup_arg("condition_key") == "condition",
    "get_state_registry": lambda m, d: (
        list(m.get_state_registry("batch").categorical_mapping) == ["c0", "c1"]
    ),
    "get_var_names": lambda m, d: list(m.get_var_names()) == list(m.adata.var_names),
    "load": lambda m, d: TRVAE.load(d).is_trained,
    "load_query_data": lambda m, d: (
        TRVAE.load_query_data(_new_condition(m.adata), str(d)).conditions.tolist()
        == ["c0", "c1", "c_new"]
    ),
    "load_registry": lambda m, d: TRVAE.load_registry(d)["model_name"] == "TRVAE",
    "posterior_predictive_sample": lambda m, d: np.array_equal(
        (draws := m.posterior_predictive_sample().todense()), np.round(draws)
    ),
    "predict": lambda m, d: m.predict(target_condition="c1").shape == m.adata.shape,
    "prepare_query_anndata": lambda m, d: (
        TRVAE.prepare_query_anndata(
            m.adata[:, 5:].copy(), str(d), return_reference_var_names=True
        ).tolist()
        == list(m.adata.var_names)
    ),
    "prepare_query_mudata": lambda m, d: TRVAE.prepare_query_mudata(None, d),
    "register_manager": lambda m, d: TRVAE.register_manager(m.adata_manager) is None,
    "save": lambda m, d: (
        m.save(d.parent / "again", save_anndata=True) is None
        and TRVAE.load(d.parent / "again").is_trained
    ),
    "setup_annbatch": lambda m, d: TRVAE.setup_annbatch(paths=[str(d / "adata.h5ad")]),
    "setup_anndata": lambda m, d: (
        TRVAE.setup_anndata(make_counts(), condition_key="condition") is None
    ),
    "to_device": lambda m, d: m.to_device("cpu") is None and m.device == torch.device("cpu"),
    "train": lambda m, d: (
        m.train(max_epochs=1, enable_progress_bar=False) is None and m.is_trained
    ),
    "transfer_fields": lambda m, d: (
        (other := make_counts(seed=2)) is not None
        and m.transfer_fields(other).adata is other
        and "_scvi_batch" in other.obs
    ),
    "update_setup_method_args": lambda m, d: (
        m.update_setup_method_args({"layer": m.get_setup_arg("layer")}) is None
    ),
    "view_anndata_setup": lambda m, d: m.view_anndata_setup(hide_state_registries=True) is None,
    "view_registry": lambda m, d: m.view_registry(hide_state_registries=True) is None,
    "view_setup_args": lambda m, d: TRVAE.view_setup_args(d) is None,
    "view_setup_method_args": lambda m, d: m.view_setup_method_args() is None,
}


def _new_condition(adata):
    query = adata[:40].copy()
    query.obs["condition"] = "c_new"
    return query


def test_every_public_member_is_covered():
    public = {name for name in dir(TRVAE) if not name.startswith("_")}
    assert public == set(CASES) | PROPERTIES


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_method(trained, name):
    model, saved = trained
    recon_loss = model.module.recon_loss
    if name in ALWAYS_RAISE or (name in COUNTS_ONLY and recon_loss == "mse"):
        with pytest.raises(NotImplementedError, match=r"TRVAE does not support|Use "):
            CASES[name](model, saved)
    else:
        assert CASES[name](model, saved)


def test_properties(trained):
    model, _ = trained
    for name in PROPERTIES:
        getattr(model, name)
