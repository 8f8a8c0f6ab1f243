"""scArches' PyTorch trVAE (scarches.models.TRVAE): latent space of counts, for the scIB table.

Run with ``benchmarks/peers/.venv-scarches/bin/python`` (``python -m benchmarks integration``
calls it): trains on the raw counts in ``X`` of ``--input`` with ``recon_loss="nb"``, otherwise
``predict_scarches_trvae.py``'s settings, and writes the latent means and seconds to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from pathlib import Path

import _common
import numpy as np
from predict_scarches_trvae import MODEL, N_EPOCHS, TRAIN, TRAINER


def main() -> None:
    """Train on the counts and write the latent means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--condition-key", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the epoch cap")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import anndata
        import scarches as sca  # prints warnings about optional extras on import

    adata, key = anndata.read_h5ad(args.input), args.condition_key
    conditions = sorted(adata.obs[key].astype(str).unique())
    adata.obs[key] = adata.obs[key].astype(str)
    # The prediction script's model, on counts with scArches' own default likelihood ("nb").
    model_settings = {"condition_key": key, "conditions": conditions, **MODEL, "recon_loss": "nb"}
    _common.seed_everything(args.seed)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its architecture
        model = sca.models.TRVAE(adata=adata, **model_settings)
        n_epochs = args.max_epochs or N_EPOCHS
        model.train(n_epochs=n_epochs, **TRAIN, **TRAINER, seed=args.seed, monitor=False)
    seconds = time.perf_counter() - start
    # Dense rows: its get_latent indexes a sparse X with a torch tensor, which scipy refuses.
    dense = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    latent = model.get_latent(dense, adata.obs[key].to_numpy(), mean=True)
    latent = np.asarray(latent, dtype=np.float32)
    if not np.isfinite(latent).all():
        raise RuntimeError("scArches' TRVAE latent has non-finite values")
    epochs = len(model.trainer.logs.get("val_loss", []))
    np.savez_compressed(args.out, latent=latent, seconds=seconds, epochs_trained=epochs)
    print(f"[scarches_trvae] {adata.n_obs} cells, {epochs} epochs, {seconds:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
