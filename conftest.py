"""Doctest namespace: the objects the docstring examples of the package use."""

from __future__ import annotations

import logging

import matplotlib
import numpy as np
import pytest
import scvi
import torch

import trvae_scvi

matplotlib.use("Agg")  # no display in CI

SMALL = {"hidden_sizes": (64, 32), "n_latent": 8}
# TRVAEModule's settings (all required) for the module's examples: a tiny MLP.
MODULE = dict(hidden_sizes=(8, 4), n_latent=2, dropout_rate=0.0, normalization="none")
MODULE.update(activation="leaky_relu", recon_loss="mse", eta=1.0, loss_reduction="sum")
MODULE.update(architecture="mlp", image_shape=None, beta=100.0, mmd_on="y")
MODULE.update(kernel_widths=trvae_scvi.nn.PAPER_KERNEL_WIDTHS, mse_output_activation="linear")


@pytest.fixture(scope="session")
def _doctest_models():
    """Small models trained briefly on the bundled Kang data: one on log values, one on counts."""
    models = {}
    for name, layer, recon_loss in (("model", None, "mse"), ("count_model", "counts", "nb")):
        scvi.settings.seed = 0
        adata = trvae_scvi.datasets.kang2018()
        trvae_scvi.TRVAE.setup_anndata(adata, condition_key="condition", layer=layer)
        models[name] = trvae_scvi.TRVAE(adata, recon_loss=recon_loss, **SMALL)
        models[name].train(max_epochs=2, enable_progress_bar=False)
    return models


@pytest.fixture(autouse=True)
def _doctest_namespace(request, doctest_namespace, tmp_path):
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    models = request.getfixturevalue("_doctest_models")
    adata = models["model"].adata
    keys = {attr: set(getattr(adata, attr).keys()) for attr in ("obsm", "layers")}
    doctest_namespace.update(
        np=np,
        torch=torch,
        trvae_scvi=trvae_scvi,
        adata=adata,
        tmp_path=tmp_path,
        settings=dict(MODULE),
        **models,
    )
    scvi.settings.seed = 0
    verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.WARNING  # scvi-tools' info lines would be doctest output
    yield
    scvi.settings.verbosity = verbosity
    for model in models.values():  # a calibration would change the next examples' defaults
        model.predictor_calibration_ = None
    # Examples that write results back must not leave them for the next example.
    for attr, before in keys.items():
        for key in set(getattr(adata, attr).keys()) - before:
            del getattr(adata, attr)[key]
