"""Every output of a model trained on a GPU (skipped where there is none, as in CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SMALL, make_counts

from trvae_scvi import TRVAE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("recon_loss", ["mse", "nb"])
def test_outputs_after_gpu_training(recon_loss, tmp_path):
    adata = make_counts()
    layer = "counts" if recon_loss == "nb" else None
    TRVAE.setup_anndata(adata, condition_key="condition", layer=layer)
    model = TRVAE(adata, recon_loss=recon_loss, **SMALL)
    model.train(max_epochs=2, accelerator="gpu", devices=1, enable_progress_bar=False)
    assert model.device.type == "cuda"
    control = np.flatnonzero((adata.obs["condition"] == "c0").to_numpy())
    reference = np.flatnonzero((adata.obs["cell_type"] == "t1").to_numpy())
    outputs = {
        "latent": model.get_latent_representation(),
        "mmd": model.get_mmd_representation(),
        "corrected": model.get_corrected_expression(target_condition="c0"),
    }
    for method in ("transfer", "latent_shift", "neuron_edit"):
        for sample in (False, True):
            outputs[f"{method} {sample}"] = model.predict(
                indices=control,
                target_condition="c1",
                method=method,
                reference_indices=None if method == "transfer" else reference,
                sample=sample,
            ).X
    for name, values in outputs.items():
        assert np.isfinite(values).all(), name
    on_gpu = outputs["transfer False"]
    model.save(tmp_path / "model")
    loaded = TRVAE.load(tmp_path / "model", adata, accelerator="cpu")
    assert loaded.device.type == "cpu"
    on_cpu = loaded.predict(indices=control, target_condition="c1").X
    np.testing.assert_allclose(on_cpu, on_gpu, rtol=1e-3, atol=1e-3)
