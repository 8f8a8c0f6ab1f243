from __future__ import annotations

from importlib.resources import as_file, files

import anndata as ad


def kang2018() -> ad.AnnData:
    """Kang et al. (2018) PBMCs, control vs IFN-beta, scGen/trVAE validation split.

    1,975 cells × 6,998 highly variable genes; ``X`` holds log-normalised values,
    ``layers["counts"]`` integer UMI counts; ``obs["condition"]`` is ``control`` or
    ``stimulated`` and ``obs["cell_type"]`` one of 7 PBMC types. Provenance:
    ``trvae_scvi/datasets/data/README.md``.

    Returns
    -------
    anndata.AnnData
        A new AnnData read from the file shipped with the package.

    Examples
    --------
    >>> import trvae_scvi
    >>> adata = trvae_scvi.datasets.kang2018()
    >>> adata.shape
    (1975, 6998)

    """
    resource = files("trvae_scvi.datasets") / "data" / "kang2018_pbmc_scgen_valid.h5ad"
    with as_file(resource) as path:
        return ad.read_h5ad(path)
