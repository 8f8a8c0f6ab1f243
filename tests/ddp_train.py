"""Train a small TRVAE with 2 CPU processes (DDP, gloo); run by ``test_ddp.py``.

Usage: ``python ddp_train.py OUT_DIR``. Each process writes the share of the minority condition
in each of its training batches to ``OUT_DIR/rank<r>.json``; rank 0 saves the model to
``OUT_DIR/model``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    """Train on imbalanced synthetic data with ``strategy="ddp"`` on 2 CPU processes."""
    import lightning.pytorch as pl
    import scvi
    from helpers import SMALL, make_counts
    from scvi import REGISTRY_KEYS

    from trvae_scvi import TRVAE

    class RecordBatches(pl.Callback):
        def __init__(self):
            self.minority_share = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            codes = batch[REGISTRY_KEYS.BATCH_KEY].reshape(-1).cpu().numpy()
            self.minority_share.append(float((codes == 1).mean()))

        def on_train_end(self, trainer, pl_module):
            result = {"world_size": trainer.world_size, "minority_share": self.minority_share}
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))

    adata = make_counts(n_cells=400, n_genes=30)
    # 85% / 15%: without condition balancing most batches would hold few condition-1 cells.
    codes = np.where(np.arange(adata.n_obs) % 20 < 17, "c0", "c1")
    adata.obs["condition"] = codes
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **SMALL)
    model.train(
        max_epochs=3,
        batch_size=32,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        enable_progress_bar=False,
        callbacks=[RecordBatches()],
    )
    if model.trainer.global_rank == 0:
        model.save(out / "model", save_anndata=True, overwrite=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(Path(sys.argv[1]))
