import pytest
import torch
from scvi import REGISTRY_KEYS

from trvae_scvi.module import TRVAEModule
from trvae_scvi.nn import PAPER_KERNEL_WIDTHS, mmd_between_conditions

SETTINGS = {
    "hidden_sizes": (16, 8),
    "n_latent": 4,
    "dropout_rate": 0.0,
    "normalization": "none",
    "activation": "leaky_relu",
    "recon_loss": "mse",
    "eta": 1.0,
    "loss_reduction": "sum",
    "architecture": "mlp",
    "image_shape": None,
    "beta": 100.0,
    "mmd_on": "y",
    "kernel_widths": PAPER_KERNEL_WIDTHS,
    "mse_output_activation": "linear",
}


def module(**settings):
    return TRVAEModule(n_input=30, n_conditions=3, **{**SETTINGS, **settings})


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
    trvae = module(recon_loss=recon_loss, mmd_on=mmd_on)
    tensors = batch(counts=recon_loss != "mse")
    inference, generative, loss = trvae(tensors)
    assert inference["z"].shape == (12, 4)
    assert generative["y"].shape == (12, 8)  # the MMD layer has the last encoder width
    assert generative["px"].mean.shape == (12, 30)
    assert loss.reconstruction_loss["reconstruction_loss"].shape == (12,)
    assert torch.isfinite(loss.loss)
    # The logged MMD is the penalty on the chosen representation, and it is not zero for an
    # untrained network whose conditions enter the encoder.
    representation = generative["y"] if mmd_on == "y" else inference["z"]
    expected = mmd_between_conditions(
        representation, tensors[REGISTRY_KEYS.BATCH_KEY], 3, PAPER_KERNEL_WIDTHS
    )
    assert torch.allclose(loss.extra_metrics["mmd"], expected)
    assert float(expected) > 1e-6
    loss.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in trvae.parameters() if p.grad is not None)


def test_condition_enters_first_decoder_layer_only():
    trvae = module()
    trvae.eval()
    z = torch.randn(5, 4)
    library = torch.zeros(5, 1)
    condition_0 = torch.zeros(5, 1, dtype=torch.long)
    condition_2 = torch.full((5, 1), 2)
    # From z, the condition changes the MMD layer's output and so the decoded expression.
    y_0 = trvae.generative(z, library, condition_0)["y"]
    y_2 = trvae.generative(z, library, condition_2)["y"]
    assert not torch.allclose(y_0, y_2)
    assert not torch.allclose(
        trvae.decode(library, condition_0, z=z).mean, trvae.decode(library, condition_2, z=z).mean
    )
    # From one y, decoding under two conditions gives the same expression: g2 has no condition.
    assert torch.equal(
        trvae.decode(library, condition_0, y=y_0).mean,
        trvae.decode(library, condition_2, y=y_0).mean,
    )


def test_count_dispersion_is_the_only_condition_effect_after_the_mmd_layer():
    trvae = module(recon_loss="nb")
    trvae.eval()
    with torch.no_grad():
        trvae.px_r[:, 2] = trvae.px_r[:, 0] + 1.0
    y = torch.randn(5, 8)
    library = torch.zeros(5, 1)
    px_0 = trvae.decode(library, torch.zeros(5, 1, dtype=torch.long), y=y)
    px_2 = trvae.decode(library, torch.full((5, 1), 2), y=y)
    assert torch.equal(px_0.mu, px_2.mu)
    assert torch.allclose(px_2.theta, px_0.theta * torch.e)


def test_sampled_latent_broadcasts():
    trvae = module()
    trvae.eval()
    tensors = batch()
    inference = trvae.inference(
        tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.BATCH_KEY], n_samples=3
    )
    generative = trvae.generative(
        inference["z"], inference["library"], tensors[REGISTRY_KEYS.BATCH_KEY]
    )
    assert generative["px"].mean.shape == (3, 12, 30)


def test_kl_weight_comes_from_the_caller():
    trvae = module()
    tensors = batch()
    torch.manual_seed(1)
    inference, generative = trvae.forward(tensors, compute_loss=False)
    small = trvae.loss(tensors, inference, generative, kl_weight=1e-3)
    large = trvae.loss(tensors, inference, generative, kl_weight=1.0)
    kl = small.kl_local["kl_local"].mean()
    assert torch.allclose(large.loss - small.loss, (1.0 - 1e-3) * kl, atol=1e-4)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("recon_loss", "poisson"),
        ("mmd_on", "foo"),
        ("loss_reduction", "max"),
        ("normalization", "group"),
        ("mse_output_activation", "tanh"),
    ],
)
def test_unknown_choice_is_refused_by_the_module_itself(argument, value):
    with pytest.raises(ValueError, match=rf"{argument}='{value}' is not supported; choose"):
        module(**{argument: value})


def test_sample_needs_a_count_likelihood():
    with pytest.raises(NotImplementedError, match="predict\\(..., sample=True\\)"):
        module().sample(batch())
    draws = module(recon_loss="zinb").sample(batch(counts=True), n_samples=2)
    assert draws.shape == (12, 30, 2)
    assert torch.equal(draws, draws.round()) and (draws >= 0).all()
