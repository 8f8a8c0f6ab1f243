"""Write a small saved TRVAE for the cross-stack load test (``tests/test_save_load.py``).

Run from the repository root with the stack to record, e.g.
``.venv/bin/python tests/data/saved_models/make_saved_model.py``: it writes
``tests/data/saved_models/py<major><minor>-pandas<major>/`` holding ``model.pt`` and
``expected.npz`` (the cells, their conditions and the latent means the saving stack computed).
"""

import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scvi

from trvae_scvi import TRVAE


def main() -> None:
    """Train a tiny model, save it and the latent means it gives."""
    scvi.settings.seed = 0
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(1.0, (60, 20))).astype(np.float32)
    conditions = np.array(["control", "stimulated"] * 30)
    adata = anndata.AnnData(x, obs=pd.DataFrame({"condition": conditions}))
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, hidden_sizes=(16, 8), n_latent=4)
    model.train(max_epochs=2, enable_progress_bar=False)
    stack = f"py{sys.version_info.major}{sys.version_info.minor}-pandas{pd.__version__[0]}"
    out = Path(__file__).parent / stack
    model.save(out, overwrite=True)
    np.savez(
        out / "expected.npz",
        x=x,
        conditions=conditions,
        latent=model.get_latent_representation(),
        versions=np.array([f"scvi-tools {scvi.__version__}, pandas {pd.__version__}"]),
    )


if __name__ == "__main__":
    main()
