"""The benchmarks' one dataset registry: log values in ``X``, counts in ``layers["counts"]``.

The count form's ``X`` is ``log1p(counts / library * TARGET_SUM)`` over the modelled genes, where
count models' ``layers["log_normalized"]`` is scored.
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
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SUM = 1e4
CONTROL, STIMULATED = "control", "stimulated"


@dataclass(frozen=True)
class Dataset:
    """A dataset: its loader (log form), groups by role, condition column(s), reference.

    The reference is the condition the integration benchmark maps the others onto.
    """

    name: str
    load: Callable[[], ad.AnnData]
    tuning_groups: tuple[str, ...] = ()
    reporting_groups: tuple[str, ...] = ()
    condition_key: str | tuple[str, ...] = "condition"
    reference: str = CONTROL


def dense(matrix) -> np.ndarray:
    """A float32 numpy array of a dense or sparse matrix."""
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def _barcodes(names, kind: str) -> np.ndarray:
    names = np.asarray(names).astype(str)
    if kind == "scgen":  # XXXX-1-control
        return np.array([n.rsplit("-", 1)[0].rsplit("-", 1)[0] for n in names])
    if kind == "ifnb":  # XXXX.1
        return np.array([n.split(".")[0] for n in names])
    return np.array([n.split("-")[0] for n in names])  # muscat: XXXX-1


def cell_keys(adata: ad.AnnData, kind: str) -> set[tuple[str, str]]:
    """``(barcode, condition)`` of every cell: how the Kang files' cells are matched."""
    conditions = adata.obs.condition.astype(str)
    return set(zip(_barcodes(adata.obs_names, kind), conditions, strict=True))


def _log_normalise(adata: ad.AnnData) -> ad.AnnData:
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
    sc.pp.log1p(adata)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def kang_seurat_subset(n_top_genes: int = 2000, min_cells: int = 30) -> ad.AnnData:
    """Kang 2018 SeuratData subset without the other Kang files' cells (barcode, condition).

    Cell types with under ``min_cells`` cells in a condition are dropped; ``n_top_genes``
    highly variable genes are kept.
    """
    adata = ad.read_h5ad(SHARED / "kang2018_pbmc_seuratdata_ifnb_subset.h5ad")
    elsewhere = cell_keys(ad.read_h5ad(SHARED / "kang2018_pbmc_scgen_valid.h5ad"), "scgen")
    elsewhere |= cell_keys(ad.read_h5ad(SHARED / "kang2018_pbmc_muscat_example.h5ad"), "muscat")
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
        adata.obs["condition"].astype(str).map({"ctrl": CONTROL, "panobinostat": STIMULATED})
    ).astype("category")
    return _log_normalise(adata)


def muscat() -> ad.AnnData:
    """Muscat's Kang 2018 example, count form, with ``obs["donor"]`` and ``obs["stimulus"]``."""
    path = SHARED / "kang2018_pbmc_muscat_example.h5ad"
    adata = ad.read_h5ad(path)
    sample = adata.obs["sample_id"].astype(str)
    stimulus = adata.obs["condition"].astype(str)
    if not (sample.str.startswith("stim") == (stimulus == STIMULATED)).all():
        raise ValueError(f"{path}: obs['sample_id'] and obs['condition'] disagree")
    adata.obs["donor"] = sample.str.extract(r"(\d+)$", expand=False).astype("category")
    adata.obs["stimulus"] = stimulus.astype("category")
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    return count_form(adata)


def count_form(adata: ad.AnnData) -> ad.AnnData:
    """The count form: ``X = log1p(counts / library size * TARGET_SUM)`` over these genes."""
    adata = adata.copy()
    counts = adata.layers["counts"]
    library = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0)
    adata.X = sp.csr_matrix(sp.diags(TARGET_SUM / library) @ counts).log1p().astype(np.float32)
    return adata


def form_data(dataset: str, form: str) -> tuple[ad.AnnData, dict, str | None]:
    """The dataset in one form, the model settings and the layer that go with it."""
    adata = DATASETS[dataset].load()
    if form == "log":
        return adata, {"recon_loss": "mse"}, None
    return count_form(adata), {"recon_loss": "nb"}, "counts"


_KANG_TYPES = ("B", "CD14+Mono", "CD4T", "CD8T", "Dendritic", "FCGR3A+Mono", "NK")
_SEURAT_TYPES = ("B", "CD14 Mono", "CD16 Mono", "CD4 Memory T", "CD4 Naive T", "CD8 T", "DC")
_MUSCAT_TYPES = ("B cells", "CD14+ Monocytes", "CD4 T cells", "CD8 T cells", "FCGR3A+ Monocytes")
DATASETS = {
    dataset.name: dataset
    for dataset in (
        # The bundled file (the scGen/trVAE validation split): reporting only.
        Dataset("kang", trvae_scvi.datasets.kang2018, reporting_groups=_KANG_TYPES),
        Dataset("kang_seurat", kang_seurat_subset, (*_SEURAT_TYPES, "NK", "T activated")),
        Dataset("glioblastoma", glioblastoma, ("PW030", "PW032"), ("PW034", "PW036", "PW040")),
        # Cross-donor tasks hold out one donor's stimulated cells of one type: "donor/type".
        Dataset(
            "muscat",
            muscat,
            reporting_groups=tuple(f"{d}/{t}" for d in ("101", "107") for t in _MUSCAT_TYPES),
            condition_key=("donor", "stimulus"),
            reference="101_control",
        ),
    )
}
