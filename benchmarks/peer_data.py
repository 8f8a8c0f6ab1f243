"""Write the peers' input files: each dataset's log form and its reporting groups.

The peers' venvs cannot import ``trvae_scvi``: this writes ``peers/data/<dataset>_log.h5ad``
(``X``: the log values of :mod:`benchmarks.data`, CSR float32; ``obs``: ``cell_type`` and
``condition``, in file order; ``uns["reporting_groups"]``: the peers' default groups).
"""

from __future__ import annotations

import argparse
import os

import anndata as ad
import numpy as np
import scipy.sparse as sp

from benchmarks.data import DATASETS
from benchmarks.runners import PEERS_DIR

DEFAULTS = {"datasets": ["kang", "glioblastoma"], "out": PEERS_DIR.parent / "data"}


def log_form(name: str) -> ad.AnnData:
    """The log form of ``DATASETS[name]``, reduced to what the peers need."""
    adata = DATASETS[name].load()
    obs = adata.obs[["cell_type", "condition"]].copy()
    for key in obs.columns:
        obs[key] = obs[key].astype(str).astype("category")
    x = sp.csr_matrix(adata.X, dtype=np.float32)
    uns = {"reporting_groups": list(DATASETS[name].reporting_groups)}
    return ad.AnnData(X=x, obs=obs, var=adata.var[[]].copy(), uns=uns)


def run(args: argparse.Namespace) -> None:
    """Write ``<out>/<dataset>_log.h5ad`` for every requested dataset."""
    for name in args.datasets:
        adata = log_form(name)
        path = args.out / f"{name}_log.h5ad"
        tmp = path.with_suffix(".tmp.h5ad")
        adata.write_h5ad(tmp)
        os.replace(tmp, path)  # rewritten every time, so it follows benchmarks.data
        counts = adata.obs.groupby(["cell_type", "condition"], observed=True).size()
        print(f"[data] {name}: {adata.n_obs} cells x {adata.n_vars} genes -> {path}", flush=True)
        print(counts.unstack().to_string(), flush=True)
