from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

# Small networks keep the suite fast; the architecture is not what these tests check.
SMALL = {"hidden_sizes": (64, 32), "n_latent": 8}


def make_counts(
    n_cells: int = 200, n_genes: int = 50, n_conditions: int = 2, seed: int = 0, sparse=True
) -> AnnData:
    """Negative-binomial counts with two cell types and a per-condition shift of 10 genes."""
    rng = np.random.default_rng(seed)
    condition = rng.integers(0, n_conditions, n_cells)
    cell_type = rng.integers(0, 2, n_cells)
    base = rng.gamma(2.0, 1.0, (2, n_genes))
    effect = np.ones((n_conditions, n_genes))
    effect[:, :10] = rng.gamma(2.0, 1.5, (n_conditions, 10))
    mean = base[cell_type] * effect[condition] * 5
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    adata = AnnData(
        X=sp.csr_matrix(counts) if sparse else counts,
        obs=pd.DataFrame(
            {
                "condition": pd.Categorical([f"c{c}" for c in condition]),
                "cell_type": pd.Categorical([f"t{t}" for t in cell_type]),
            },
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)]),
    )
    adata.layers["counts"] = adata.X.copy()
    lognorm = np.log1p(counts / counts.sum(1, keepdims=True).clip(1) * 1e4).astype(np.float32)
    adata.X = sp.csr_matrix(lognorm) if sparse else lognorm
    return adata


def train_small(adata: AnnData, seed: int = 0, max_epochs: int = 3, **settings):
    """Set up and train a small TRVAE on ``adata``; return it, its loss curve and a prediction."""
    import scvi

    from trvae_scvi import TRVAE

    scvi.settings.seed = seed
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **{**SMALL, **settings})
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    return model, loss, dense(model.predict(target_condition="c1").X)


def dense(matrix) -> np.ndarray:
    """A prediction's matrix as a dense array (predictions of sparse input are CSR)."""
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
