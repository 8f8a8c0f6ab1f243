"""The convolutional architecture and the morpho digits."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from helpers import dense

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.nn import mmd_between_conditions


@pytest.fixture(scope="module")
def digits():
    data = trvae_scvi.datasets.morpho_digits(image_size=16)
    # A few images of each digit keep the tests fast.
    return data[np.isin(data.obs.image_id, np.arange(150))].copy()


@pytest.fixture(scope="module")
def conv_model(digits):
    scvi.settings.seed = 0
    train = digits.copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    model = TRVAE(train, architecture="conv", image_shape=(1, 16, 16), hidden_sizes=(8, 32))
    model.train(max_epochs=2, enable_progress_bar=False)
    return model


def test_morpho_digits_are_exact_and_deterministic():
    digits = trvae_scvi.datasets.morpho_digits()
    again = trvae_scvi.datasets.morpho_digits()
    np.testing.assert_array_equal(digits.X, again.X)
    assert digits.X.min() >= 0 and digits.X.max() <= 1
    by = digits.obs.groupby(["condition", "image_id"], observed=True).size()
    assert (by == 1).all() and len(by) == 3 * 1797
    normal = digits[digits.obs.condition == "normal"].X
    thin = digits[digits.obs.condition == "thin"].X
    thick = digits[digits.obs.condition == "thick"].X
    assert (thin <= normal + 1e-7).all() and (thick >= normal - 1e-7).all()
    with pytest.raises(ValueError, match="image_size=30 must be a multiple of 4"):
        trvae_scvi.datasets.morpho_digits(image_size=30)


def test_conv_shapes_and_outputs(conv_model, digits):
    model = conv_model
    module = model.module
    assert module.architecture == "conv"
    y = model.get_mmd_representation()
    assert y.shape == (digits.n_obs, 32)
    zeros = (model.adata.obs.condition == "normal") & (model.adata.obs.digit == "0")
    predicted = model.predict(
        indices=np.flatnonzero(zeros.to_numpy()), target_condition="thick", cell_type_key="digit"
    )
    assert predicted.shape == (int(zeros.sum()), 256)
    assert np.isfinite(dense(predicted.X)).all()


def test_conv_mmd_is_on_the_first_decoder_layer(conv_model):
    module = conv_model.module
    module.eval()
    tensors = next(iter(conv_model._make_data_loader(conv_model.adata, batch_size=64)))
    inference, generative, loss = module(tensors)
    expected = mmd_between_conditions(
        generative["y"], tensors["batch"], module.n_conditions, module.kernel_widths
    )
    assert torch.allclose(loss.extra_metrics["mmd"], expected)
    # y is the output of the layer that takes z and the condition channel ...
    z, condition = inference["z"], tensors["batch"]
    assert torch.equal(generative["y"], module.mmd_layer(z, condition))
    # ... and after it no condition enters: one y decodes the same under every condition.
    library = torch.zeros(len(z), 1)
    a = module.decode(library, torch.zeros_like(condition), y=generative["y"]).mean
    b = module.decode(library, torch.full_like(condition, 2), y=generative["y"]).mean
    assert torch.equal(a, b)


def test_conv_save_and_load(conv_model, tmp_path):
    conv_model.save(tmp_path / "conv")
    loaded = TRVAE.load(tmp_path / "conv", conv_model.adata.copy())
    assert loaded.module.architecture == "conv"
    kwargs = {"indices": np.arange(10), "target_condition": "thin", "method": "transfer"}
    np.testing.assert_allclose(
        dense(loaded.predict(**kwargs).X),
        dense(conv_model.predict(**kwargs).X),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(NotImplementedError, match="architecture='conv'"):
        query = conv_model.adata[:20].copy()
        query.obs["condition"] = "bold"
        TRVAE.load_query_data(query, conv_model)


def test_bad_image_settings(digits):
    adata = digits.copy()
    TRVAE.setup_anndata(adata, condition_key="condition")
    with pytest.raises(ValueError, match=r"image_shape=\(1, 28, 28\) holds 784 values.*256"):
        TRVAE(adata, architecture="conv", image_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="height and width must be divisible by 4"):
        TRVAE(adata, architecture="conv", image_shape=(1, 2, 128))
    with pytest.raises(ValueError, match="needs image_shape"):
        TRVAE(adata, architecture="conv")
    with pytest.raises(ValueError, match="recon_loss='nb', a likelihood for counts"):
        TRVAE(adata, architecture="conv", image_shape=(1, 16, 16), recon_loss="nb")
    with pytest.raises(ValueError, match="only used with architecture='conv'"):
        TRVAE(adata, image_shape=(1, 16, 16))
