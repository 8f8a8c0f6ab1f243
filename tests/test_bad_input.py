import numpy as np
import pytest
from helpers import SMALL

from trvae_scvi import TRVAE


def test_missing_condition_key(synthetic):
    with pytest.raises(ValueError, match="condition_key is required"):
        TRVAE.setup_anndata(synthetic)


def test_misspelled_condition_key(synthetic):
    with pytest.raises(ValueError, match=r"condition_key='conditon' is not a column.*'condition'"):
        TRVAE.setup_anndata(synthetic, condition_key="conditon")


def test_missing_layer(synthetic):
    with pytest.raises(ValueError, match=r"layer='count' is not in adata.layers.*'counts'"):
        TRVAE.setup_anndata(synthetic, condition_key="condition", layer="count")


def test_single_condition(synthetic):
    synthetic.obs["condition"] = "c0"
    with pytest.raises(ValueError, match=r"has 1 condition\(s\) \(\['c0'\]\).*at least two"):
        TRVAE.setup_anndata(synthetic, condition_key="condition")


def test_nan_values(synthetic):
    synthetic.X = synthetic.X.toarray()
    synthetic.X[3, 4] = np.nan
    with pytest.raises(ValueError, match="adata.X contains NaN or infinite values"):
        TRVAE.setup_anndata(synthetic, condition_key="condition")


@pytest.mark.parametrize("recon_loss", ["nb", "zinb"])
def test_count_likelihood_on_log_data(synthetic, recon_loss):
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    with pytest.raises(ValueError, match=rf"recon_loss='{recon_loss}' needs non-negative integer"):
        TRVAE(synthetic, recon_loss=recon_loss, **SMALL)


def test_relu_output_on_scaled_data(synthetic):
    synthetic.X = synthetic.X.toarray() - 1.0
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    with pytest.raises(ValueError, match="mse_output_activation='linear'"):
        TRVAE(synthetic, mse_output_activation="relu", **SMALL)


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("recon_loss", "poisson", "recon_loss='poisson' is not supported"),
        ("mmd_on", "x", "mmd_on='x' is not supported"),
        ("hidden_sizes", (), "hidden_sizes=.* must be a non-empty list"),
        ("beta", -1.0, "must be non-negative"),
        ("kernel_widths", (1.0, 0.0), "kernel_widths=.* positive"),
    ],
)
def test_bad_model_arguments(synthetic, argument, value, message):
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    with pytest.raises(ValueError, match=message):
        TRVAE(synthetic, **{**SMALL, argument: value})


def test_unseen_target_condition(model):
    with pytest.raises(
        ValueError, match=r"target_condition='IFN' is not a condition.*\['c0', 'c1'\]"
    ):
        model.predict(target_condition="IFN")
    with pytest.raises(ValueError, match=r"source_condition='x' is not a condition"):
        model.predict(target_condition="c0", source_condition="x")
    with pytest.raises(ValueError, match="target_condition is required"):
        model.predict()
    with pytest.raises(ValueError, match="target_condition='IFN'"):
        model.get_corrected_expression("IFN")


def test_empty_selection(model):
    with pytest.raises(ValueError, match="selection is empty"):
        model.predict(indices=[], target_condition="c1")
    with pytest.raises(ValueError, match="selection is empty"):
        model.get_latent_representation(indices=np.zeros(model.adata.n_obs, dtype=bool))


def test_bad_train_arguments(model):
    with pytest.raises(ValueError, match="batch_size=1 must be at least 2"):
        model.train(max_epochs=1, batch_size=1)
    with pytest.raises(ValueError, match="max_epochs=0"):
        model.train(max_epochs=0)


def test_zero_cell_anndata(synthetic):
    with pytest.raises(ValueError, match=r"adata has shape \(0, 50\); it needs cells"):
        TRVAE.setup_anndata(synthetic[:0].copy(), condition_key="condition")


def test_nan_added_after_setup_is_caught_at_train(synthetic):
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    model = TRVAE(synthetic, **SMALL)
    synthetic.X.data[0] = np.nan
    with pytest.raises(ValueError, match="adata.X contains NaN or infinite values"):
        model.train(max_epochs=1)
