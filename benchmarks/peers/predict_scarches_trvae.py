"""scArches' PyTorch trVAE (scarches.models.TRVAE) predictions for the held-out benchmarks.

Run with ``benchmarks/peers/.venv-scarches/bin/python``; writes ``OUT/<dataset>/scarches_trvae/``
(see ``_common.py``). It has no predict method: the control cells are encoded with their own
condition (latent mean) and decoded with the stimulated one (the MSE decoder's mean).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import _common
import numpy as np

PEER = "scarches_trvae"
VERSIONS = "scArches scvi-tools torch numpy anndata scanpy jax jaxlib flax"
CONDITIONS = [_common.CONTROL, _common.STIMULATED]
# scArches defaults except recon_loss: the data are log-normalised, so MSE (not 'nb').
MODEL = dict(hidden_layer_sizes=[256, 64], latent_dim=10, dr_rate=0.05, use_mmd=True, mmd_on="z")
MODEL.update(mmd_boundary=None, recon_loss="mse", beta=1.0, use_bn=False, use_ln=True)
# Capped at 100 epochs (the library's 400, early stopping on): one run in 1-2 minutes here.
N_EPOCHS = 100
TRAIN = {"lr": 1e-3, "eps": 0.01}  # TRVAE.train defaults, written out
# trVAETrainer defaults, written out (seed is the run seed, not the default 2020).
EARLY_STOPPING = dict(early_stopping_metric="val_unweighted_loss", mode="min", threshold=0)
EARLY_STOPPING.update(patience=20, reduce_lr=True, lr_patience=13, lr_factor=0.1)
TRAINER = dict(batch_size=128, alpha_epoch_anneal=None, alpha_kl=1.0, use_early_stopping=True)
TRAINER.update(reload_best=True, early_stopping_kwargs=EARLY_STOPPING, train_frac=0.9)
TRAINER.update(use_stratified_sampling=True, weight_decay=0.04, clip_value=0.0, n_workers=0)


def transfer(model, x: np.ndarray, source: str, target: str) -> np.ndarray:
    """Encode ``x`` under ``source`` (latent mean) and decode under ``target`` (decoder mean)."""
    import torch

    net = model.model
    net.eval()
    encode = net.condition_encoder
    with torch.no_grad():
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        n = x_t.shape[0]
        c_source = torch.full((n,), encode[source], dtype=torch.long)
        c_target = torch.full((n,), encode[target], dtype=torch.long)
        # TRVAE.get_latent feeds x unchanged to the encoder for recon_loss='mse' (log1p otherwise).
        z_mean, _ = net.encoder(x_t, c_source)
        recon, _ = net.decoder(z_mean, c_target)  # mse decoder returns (recon_x, y)
    return recon.cpu().numpy().astype(np.float32)


def main() -> None:
    """Train and predict every requested (group, seed)."""
    args = _common.parse_args(__doc__.splitlines()[0])
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import scarches as sca  # prints warnings about optional extras on import

    n_epochs = N_EPOCHS if args.max_epochs is None else args.max_epochs
    train_kwargs = {"n_epochs": n_epochs, **TRAIN, **TRAINER, "monitor": False}
    settings = {
        "package": "scarches.models.TRVAE (PyTorch)",
        "versions": _common.versions(VERSIONS.split()),
        "model": {"condition_key": _common.CONDITION_KEY, "conditions": CONDITIONS, **MODEL},
        "train": {**train_kwargs, "seed": "<run seed>"},
        "predict": (
            "encoder(x_control, condition=control) -> latent mean; decoder(mean, "
            "condition=stimulated) -> recon_x (ReLU output of the MSE decoder); no sampling"
        ),
        "input": "adata.X (log-normalised, CSR); MSE loss so no log1p inside the model",
    }

    def fit_predict(train, cell_type, seed):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its architecture
            model = sca.models.TRVAE(
                adata=train, condition_key=_common.CONDITION_KEY, conditions=CONDITIONS, **MODEL
            )
            model.train(**train_kwargs, seed=seed)
        mask = (train.obs[_common.CELL_TYPE_KEY] == cell_type) & (
            train.obs[_common.CONDITION_KEY] == _common.CONTROL
        )
        control = train[mask.to_numpy()]
        x = control.X.toarray() if hasattr(control.X, "toarray") else control.X
        predicted = transfer(model, x, _common.CONTROL, _common.STIMULATED)
        epochs = len(model.trainer.logs.get("val_loss", []))
        return predicted, control.obs_names, {"epochs_trained": epochs}

    _common.run_all(PEER, args, settings, fit_predict)


if __name__ == "__main__":
    main()
