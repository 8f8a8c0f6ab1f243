"""Write the peers' input files: a dataset's log form, read the way ``benchmarks/holdout.py`` does.

Run with the PROJECT's venv (``.venv/bin/python``): the peers' venvs cannot import
``trvae_scvi``, so ``perturbation_data`` (in ``benchmarks/``) is run here once and its log form
saved where the peer scripts read it, ``benchmarks/peers/data/<dataset>_log.h5ad`` (git-ignored):
``X`` = the log-normalised values (CSR float32), ``obs`` = ``cell_type`` and ``condition`` only,
the cells in file order with their names. The bundled Kang file needs no such step (the peers
read it as it is).

Usage::

    .venv/bin/python benchmarks/peers/write_data.py                  # glioblastoma
    .venv/bin/python benchmarks/peers/write_data.py --out /tmp/data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from perturbation_data import DATASETS  # noqa: E402

WRITTEN = ["glioblastoma"]  # kang: the peers read the bundled file directly


def log_form(name: str) -> ad.AnnData:
    """The log form of ``perturbation_data.DATASETS[name]``, reduced to what the peers need."""
    adata = DATASETS[name].load()
    obs = adata.obs[["cell_type", "condition"]].copy()
    for key in obs.columns:
        obs[key] = obs[key].astype(str).astype("category")
    return ad.AnnData(
        X=sp.csr_matrix(adata.X, dtype=np.float32), obs=obs, var=adata.var[[]].copy()
    )


def main() -> None:
    """Write ``<out>/<dataset>_log.h5ad`` for every requested dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=WRITTEN, default=WRITTEN)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        adata = log_form(name)
        path = args.out / f"{name}_log.h5ad"
        tmp = path.with_suffix(".tmp.h5ad")
        adata.write_h5ad(tmp)
        os.replace(tmp, path)  # rewritten every time, so it follows perturbation_data
        counts = adata.obs.groupby(["cell_type", "condition"], observed=True).size()
        print(f"[data] {name}: {adata.n_obs} cells x {adata.n_vars} genes -> {path}", flush=True)
        print(counts.unstack().to_string(), flush=True)


if __name__ == "__main__":
    main()
