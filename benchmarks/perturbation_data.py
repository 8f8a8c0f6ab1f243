"""The perturbation datasets of the benchmarks, split once into tuning and reporting tasks.

A *task* holds out one group's perturbed cells (a cell type, or a patient where there are no
cell types) and asks for them from that group's control cells. Tasks are split, before any
model is scored, into

- **tuning tasks**, the only ones ``benchmarks/tune_defaults.py`` scores to choose defaults:
  the Kang SeuratData subset (``kang2018_pbmc_seuratdata_ifnb_subset.h5ad``) without every cell
  that is also in the bundled file or the muscat file, and glioblastoma patients PW030 and
  PW032;
- **reporting tasks**, scored once with the chosen defaults by ``benchmarks/report.py``: the
  bundled Kang file (the scGen/trVAE validation split, 7 cell types) and glioblastoma patients
  PW034, PW036 and PW040.

In a reporting task on the glioblastoma data, the tuning patients' cells are training cells
like any other: no reported cell was scored by a choice.

Every dataset comes in two forms: log-normalised values in ``X`` (for ``recon_loss="mse"``)
and integer counts in ``layers["counts"]`` (for ``"nb"``). The count form's ``X`` is
``log1p(counts / library size * TARGET_SUM)`` over the modelled genes, the space in which count
models' ``layers["log_normalized"]`` is scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

import trvae_scvi

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET_SUM = 1e4


@dataclass(frozen=True)
class Dataset:
    """A dataset and the groups whose perturbed cells its tasks hold out."""

    name: str
    load: Callable[[], ad.AnnData]
    tuning_groups: tuple[str, ...]
    reporting_groups: tuple[str, ...]


def _barcodes(names, kind: str) -> np.ndarray:
    names = np.asarray(names).astype(str)
    if kind == "scgen":  # XXXX-1-control
        return np.array([n.rsplit("-", 1)[0].rsplit("-", 1)[0] for n in names])
    if kind == "ifnb":  # XXXX.1
        return np.array([n.split(".")[0] for n in names])
    return np.array([n.split("-")[0] for n in names])  # muscat: XXXX-1


def _log_normalise(adata: ad.AnnData) -> ad.AnnData:
    """Keep the counts in ``layers["counts"]``, put log-normalised values in ``X``."""
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
    sc.pp.log1p(adata)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def kang_seurat_subset(n_top_genes: int = 2000, min_cells: int = 30) -> ad.AnnData:
    """Kang 2018 SeuratData subset without the cells of the other two Kang files.

    Cells are matched on (barcode, condition), as ``shared/data/README.md`` says; cell types
    with fewer than ``min_cells`` cells in either condition are dropped; ``n_top_genes``
    highly variable genes (scanpy's default flavour on the log values) are kept.
    """
    adata = ad.read_h5ad(SHARED / "kang2018_pbmc_seuratdata_ifnb_subset.h5ad")
    elsewhere = set()
    for file, kind in (
        ("kang2018_pbmc_scgen_valid.h5ad", "scgen"),
        ("kang2018_pbmc_muscat_example.h5ad", "muscat"),
    ):
        other = ad.read_h5ad(SHARED / file)
        elsewhere |= set(
            zip(_barcodes(other.obs_names, kind), other.obs.condition.astype(str), strict=True)
        )
    keys = zip(_barcodes(adata.obs_names, "ifnb"), adata.obs.condition.astype(str), strict=True)
    adata = adata[[key not in elsewhere for key in keys]].copy()
    sizes = adata.obs.groupby(["cell_type", "condition"], observed=True).size().unstack()
    kept = sizes.index[(sizes >= min_cells).all(axis=1)]
    adata = adata[adata.obs.cell_type.isin(kept)].copy()
    adata.obs["cell_type"] = adata.obs.cell_type.astype(str).astype("category")
    adata = _log_normalise(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes)
    return adata[:, adata.var.highly_variable].copy()


def glioblastoma() -> ad.AnnData:
    """Zhao 2021 glioblastoma slices, DMSO vs panobinostat; the patient is the held-out unit."""
    adata = ad.read_h5ad(SHARED / "zhao2021_glioblastoma_panobinostat.h5ad")
    adata.obs["cell_type"] = adata.obs["patient_id"].astype(str).astype("category")
    adata.obs["condition"] = (
        adata.obs["condition"].astype(str).map({"ctrl": "control", "panobinostat": "stimulated"})
    ).astype("category")
    return _log_normalise(adata)


def kang_bundled() -> ad.AnnData:
    """The bundled Kang file: its published log values in ``X``, counts in ``layers``."""
    return trvae_scvi.datasets.kang2018()


def count_form(adata: ad.AnnData) -> ad.AnnData:
    """The count form: ``X = log1p(counts / library size * TARGET_SUM)`` over these genes."""
    adata = adata.copy()
    counts = adata.layers["counts"]
    library = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0)
    adata.X = sp.csr_matrix(sp.diags(TARGET_SUM / library) @ counts).log1p().astype(np.float32)
    return adata


DATASETS = {
    "kang": Dataset(
        "kang",
        kang_bundled,
        (),
        ("B", "CD14+Mono", "CD4T", "CD8T", "Dendritic", "FCGR3A+Mono", "NK"),
    ),
    "kang_seurat": Dataset(
        "kang_seurat",
        kang_seurat_subset,
        (
            "B",
            "CD14 Mono",
            "CD16 Mono",
            "CD4 Memory T",
            "CD4 Naive T",
            "CD8 T",
            "DC",
            "NK",
            "T activated",
        ),
        (),
    ),  # fmt: skip
    "glioblastoma": Dataset(
        "glioblastoma", glioblastoma, ("PW030", "PW032"), ("PW034", "PW036", "PW040")
    ),
}
