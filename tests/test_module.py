import pytest
import torch
from scvi import REGISTRY_KEYS

from trvae_scvi.module import TRVAEModule


def batch(n_cells=12, n_genes=30, n_conditions=3, counts=False):
    torch.manual_seed(0)
    x = torch.poisson(torch.full((n_cells, n_genes), 3.0))
    return {
        REGISTRY_KEYS.X_KEY: x if counts else torch.log1p(x),
        REGISTRY_KEYS.BATCH_KEY: torch.arange(n_cells).remainder(n_conditions)[:, None],
    }


@pytest.mark.parametrize("recon_loss", ["mse", "nb", "zinb"])
@pytest.mark.parametrize("mmd_on", ["y", "z"])
def test_shapes_and_finite_loss(recon_loss, mmd_on):
    module = TRVAEModule(
        n_input=30,
        n_conditions=3,
        hidden_sizes=(16, 8),
        n_latent=4,
        recon_loss=recon_loss,
        mmd_on=mmd_on,
    )
    tensors = batch(counts=recon_loss != "mse")
    inference, generative, loss = module(tensors)
    assert inference["z"].shape == (12, 4)
    assert generative["y"].shape == (12, 8)  # the MMD layer has the last encoder width
    assert generative["px"].mean.shape == (12, 30)
    assert loss.reconstruction_loss["reconstruction_loss"].shape == (12,)
    assert torch.isfinite(loss.loss)
    assert float(loss.extra_metrics["mmd"].detach()) >= 0
    loss.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_condition_enters_first_decoder_layer_only():
    module = TRVAEModule(n_input=30, n_conditions=3, hidden_sizes=(16, 8), n_latent=4)
    module.eval()
    z = torch.randn(5, 4)
    library = torch.zeros(5, 1)
    condition = torch.zeros(5, 1, dtype=torch.long)
    as_0 = module.generative(z, library, condition)
    as_2 = module.generative(z, library, condition, transform_batch=2)
    assert not torch.allclose(as_0["y"], as_2["y"])
    # The layers after the MMD layer see no condition: same y gives same output.
    hidden = module.decoder(as_2["y"])
    assert torch.allclose(module.px_output(hidden), as_2["px"].loc)


def test_sampled_latent_broadcasts():
    module = TRVAEModule(n_input=30, n_conditions=3, hidden_sizes=(16, 8), n_latent=4)
    module.eval()
    tensors = batch()
    inference = module.inference(
        tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.BATCH_KEY], n_samples=3
    )
    generative = module.generative(
        inference["z"], inference["library"], tensors[REGISTRY_KEYS.BATCH_KEY]
    )
    assert generative["px"].mean.shape == (3, 12, 30)


def test_unknown_recon_loss():
    with pytest.raises(ValueError, match="recon_loss='poisson'"):
        TRVAEModule(n_input=5, n_conditions=2, recon_loss="poisson")
