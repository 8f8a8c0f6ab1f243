"""Condition removal scored with scib-metrics: trVAE's representations against scVI and PCA.

For each multi-condition dataset with cell types, embeddings of all cells are scored with
scib-metrics' ``Benchmarker`` (bio conservation with the cell type as label, batch correction
with the condition as batch; raw scores, ``min_max_scale=False``):

- ``muscat``: muscat's Kang 2018 example (``shared/data/kang2018_pbmc_muscat_example.h5ad``),
  4 conditions donor x stimulus (``obs["donor_stimulus"]``), 5 cell types;
- ``kang``: the bundled Kang file (``trvae_scvi.datasets.kang2018()``), control vs stimulated,
  7 cell types.

Embeddings:

- trVAE (``recon_loss="nb"`` on the counts, otherwise the package's defaults): its latent z
  ``get_latent_representation()`` (where the default ``mmd_on="z"`` applies the MMD), its
  first decoder layer ``get_mmd_representation()`` (the paper's MMD layer, which carries the
  condition when the MMD is on z), and the 50-PC PCA of
  ``get_corrected_expression(reference)`` in log space (``log1p(corrected / library * 1e4)``);
- trVAE's first decoder layer with NeuronEdit: each condition's activations mapped onto those
  of the reference condition with ``trvae_scvi.nn.neuron_edit`` (source: that condition's cells,
  target: the reference's), the edited activations used as the embedding;
- scVI (``scvi.model.SCVI`` on the counts, ``batch_key`` the condition, default settings);
- scArches' TRVAE (its latent means; ``recon_loss="nb"`` on the counts, otherwise the settings
  of ``peers/predict_scarches_trvae.py``), run by ``peers/embed_scarches_trvae.py`` in
  ``peers/.venv-scarches`` when that venv exists (``bash benchmarks/peers/setup.sh``);
- uncorrected: the 50-PC PCA of the log values.

The reference condition is ``101_control`` for muscat and ``control`` for kang.

Writes ``integration.csv`` (one row per dataset, embedding and metric) and ``integration.md``
(the scIB table per dataset, whether the total of trVAE's z, where the MMD acts, is at least
scVI's and its bio conservation at least scVI's - 0.02, and the wall times) under ``--out``.

Usage::

    python benchmarks/integration.py                           # both datasets, seed 0
    python benchmarks/integration.py --datasets kang --seed 1
    python benchmarks/integration.py --max-epochs 2 --out /tmp/int   # a quick check of the script
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
from cross_donor import load_muscat
from perturbation_data import TARGET_SUM
from scib_metrics.benchmark import Benchmarker

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.nn import neuron_edit

N_COMPS = 50
MMD = "trVAE z (the MMD's layer)"  # the default mmd_on="z"
SCVI = "scVI latent"
EMBEDDINGS = {  # obsm key: name in the tables
    "X_trVAE": MMD,
    "X_trVAE_mmd": "trVAE first decoder layer y",
    "X_trVAE_mmd_neuron_edit": "trVAE y + NeuronEdit",
    "X_trVAE_corrected_pca": "trVAE corrected expression, PCA",
    "X_scVI": SCVI,
    "X_scArches_TRVAE": "scArches TRVAE latent",
    "X_pca_uncorrected": "uncorrected PCA",
}
PEERS_DIR = Path(__file__).parent / "peers"
SCARCHES_PYTHON = PEERS_DIR / ".venv-scarches" / "bin" / "python"
AGGREGATES = ["Bio conservation", "Batch correction", "Total"]
BIO_MARGIN = 0.02


@dataclass(frozen=True)
class Spec:
    """A dataset: how to load it, its condition columns and its reference condition."""

    name: str
    load: Callable[[], ad.AnnData]
    condition_key: str | list[str]
    reference: str


DATASETS = {
    "muscat": Spec("muscat", load_muscat, ["donor", "stimulus"], "101_control"),
    "kang": Spec("kang", trvae_scvi.datasets.kang2018, "condition", "control"),
}


def log_of_counts(expected: np.ndarray, library: np.ndarray) -> np.ndarray:
    """``log1p(expected / library * TARGET_SUM)`` per cell.

    Parameters
    ----------
    expected
        Expected counts, shape ``(n_cells, n_genes)``.
    library
        Observed library size of each cell.

    Returns
    -------
    numpy.ndarray
        Log-normalised values.

    """
    return np.log1p(expected / np.maximum(library, 1.0)[:, None] * TARGET_SUM).astype(np.float32)


def edit_to_reference(values: np.ndarray, conditions: np.ndarray, reference: str) -> np.ndarray:
    """Map every condition's activations onto the reference condition's with NeuronEdit.

    Parameters
    ----------
    values
        Activations of all cells, shape ``(n_cells, n_neurons)``.
    conditions
        Condition of each cell.
    reference
        The condition everything is mapped to; its cells are left as they are.

    Returns
    -------
    numpy.ndarray
        Edited activations.

    """
    target = values[conditions == reference]
    if len(target) == 0:
        raise ValueError(f"no cell of the reference condition {reference!r}")
    edited = values.copy()
    for condition in np.unique(conditions):
        if condition != reference:
            rows = conditions == condition
            edited[rows] = neuron_edit(values[rows], values[rows], target)
    return edited


def trvae_embeddings(
    adata: ad.AnnData, spec: Spec, seed: int, max_epochs: int | None
) -> tuple[dict[str, np.ndarray], str, float]:
    """Train trVAE on the counts and return its embeddings.

    Parameters
    ----------
    adata
        Counts in ``layers["counts"]``; registered here (adds the combined condition column).
    spec
        The dataset.
    seed
        ``scvi.settings.seed``.
    max_epochs
        Training epochs; ``None`` uses the model's default.

    Returns
    -------
    tuple
        Embeddings by obsm key, the condition column and the training seconds.

    """
    scvi.settings.seed = seed
    TRVAE.setup_anndata(adata, condition_key=spec.condition_key, layer="counts")
    model = TRVAE(adata, recon_loss="nb")
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    seconds = time.perf_counter() - start
    conditions = adata.obs[model.condition_key].astype(str).to_numpy()
    library = np.asarray(adata.layers["counts"].sum(axis=1)).ravel()
    corrected = log_of_counts(model.get_corrected_expression(spec.reference), library)
    mmd = model.get_mmd_representation()
    embeddings = {
        "X_trVAE_mmd": mmd,
        "X_trVAE_mmd_neuron_edit": edit_to_reference(mmd, conditions, spec.reference),
        "X_trVAE": model.get_latent_representation(),
        "X_trVAE_corrected_pca": sc.pp.pca(corrected, n_comps=N_COMPS, random_state=seed),
    }
    return embeddings, model.condition_key, seconds


def scvi_embedding(
    adata: ad.AnnData, batch_key: str, seed: int, max_epochs: int | None
) -> tuple[np.ndarray, float]:
    """The latent representation of scVI, trained on the counts with its default settings.

    Parameters
    ----------
    adata
        Counts in ``layers["counts"]``; not modified (scVI gets its own AnnData).
    batch_key
        The condition column.
    seed
        ``scvi.settings.seed``.
    max_epochs
        Training epochs; ``None`` uses scVI's default.

    Returns
    -------
    tuple
        The latent representation and the training seconds.

    """
    counts = ad.AnnData(X=adata.layers["counts"].copy(), obs=adata.obs[[batch_key]].copy())
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(counts, batch_key=batch_key)
    model = scvi.model.SCVI(counts)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    seconds = time.perf_counter() - start
    return model.get_latent_representation(), seconds


def scarches_embedding(
    adata: ad.AnnData, batch_key: str, seed: int, max_epochs: int | None
) -> tuple[np.ndarray, float]:
    """The latent means of scArches' TRVAE on the counts (``peers/embed_scarches_trvae.py``).

    Parameters
    ----------
    adata
        Counts in ``layers["counts"]``; not modified.
    batch_key
        The condition column.
    seed
        The run's seed.
    max_epochs
        Training epochs; ``None`` uses the peer script's cap (with early stopping).

    Returns
    -------
    tuple
        The latent representation and the training seconds.

    """
    counts = ad.AnnData(X=adata.layers["counts"].copy(), obs=adata.obs[[batch_key]].copy())
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "counts.h5ad", Path(folder) / "latent.npz"
        counts.write_h5ad(data)
        command = [str(SCARCHES_PYTHON), str(PEERS_DIR / "embed_scarches_trvae.py")]
        command += ["--input", str(data), "--condition-key", batch_key, "--seed", str(seed)]
        command += ["--out", str(out)] + (
            [] if max_epochs is None else ["--max-epochs", str(max_epochs)]
        )
        subprocess.run(command, check=True)
        result = np.load(out)
        return result["latent"], float(result["seconds"])


def run_dataset(spec: Spec, seed: int, max_epochs: int | None) -> tuple[pd.DataFrame, dict]:
    """Compute every embedding of one dataset and score them.

    Parameters
    ----------
    spec
        The dataset.
    seed
        Seed of the models and of the PCAs.
    max_epochs
        Training epochs of trVAE and scVI; ``None`` uses each model's default.

    Returns
    -------
    tuple
        The results of ``Benchmarker.get_results(min_max_scale=False)`` (one row per obsm key,
        plus the ``Metric Type`` row) and the wall times in seconds.

    """
    adata = spec.load()
    if "counts" not in adata.layers:
        raise ValueError(f"{spec.name}: needs counts in layers['counts']")
    seconds = {}
    embeddings, batch_key, seconds["trVAE training"] = trvae_embeddings(
        adata, spec, seed, max_epochs
    )
    embeddings["X_scVI"], seconds["scVI training"] = scvi_embedding(
        adata, batch_key, seed, max_epochs
    )
    if SCARCHES_PYTHON.exists():
        embeddings["X_scArches_TRVAE"], seconds["scArches TRVAE training"] = scarches_embedding(
            adata, batch_key, seed, max_epochs
        )
    else:
        print(f"{SCARCHES_PYTHON} missing (bash benchmarks/peers/setup.sh): no scArches row")
    embeddings["X_pca_uncorrected"] = sc.pp.pca(adata.X, n_comps=N_COMPS, random_state=seed)
    for key, value in embeddings.items():
        adata.obsm[key] = np.asarray(value, dtype=np.float32)
    start = time.perf_counter()
    benchmarker = Benchmarker(
        adata,
        batch_key=batch_key,
        label_key="cell_type",
        embedding_obsm_keys=list(embeddings),
        n_jobs=1,
        progress_bar=False,
    )
    benchmarker.benchmark()
    seconds["scib-metrics"] = time.perf_counter() - start
    return benchmarker.get_results(min_max_scale=False), seconds


def long_rows(results: pd.DataFrame, dataset: str, seed: int) -> pd.DataFrame:
    """The Benchmarker's table as rows of dataset, embedding, metric, type and value."""
    types = results.loc["Metric Type"]
    values = results.drop(index="Metric Type")
    rows = [
        [dataset, seed, EMBEDDINGS.get(key, key), metric, types[metric], float(value)]
        for key, row in values.iterrows()
        for metric, value in row.items()
    ]
    return pd.DataFrame(
        rows, columns=["dataset", "seed", "embedding", "metric", "metric_type", "value"]
    )


def write_table(frame: pd.DataFrame, seconds: dict, path: Path) -> None:
    """Markdown: the scIB table of each dataset and the check of trVAE's MMD layer.

    Parameters
    ----------
    frame
        Rows of ``integration.csv``.
    seconds
        Wall times by dataset.
    path
        Where to write.

    """
    lines = [
        "Condition removal scored with scib-metrics "
        f"{version('scib-metrics')} (`benchmarks/integration.py`; scvi-tools "
        f"{version('scvi-tools')}): bio conservation with the cell type as label, batch "
        "correction with the condition as batch, raw scores (no min-max scaling); Total = 0.6 "
        'bio conservation + 0.4 batch correction. trVAE: `recon_loss="nb"` on the counts; '
        f"seed {', '.join(map(str, sorted(frame.seed.unique())))}.",
    ]
    for dataset, part in frame.groupby("dataset", sort=False):
        wide = part.pivot_table(index="embedding", columns="metric", values="value", sort=False)
        metrics = [m for m in wide.columns if m not in AGGREGATES] + AGGREGATES
        wide = wide[metrics].sort_values("Total", ascending=False)
        lines += [
            "",
            f"## {dataset}",
            "",
            "| embedding | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for embedding, row in wide.iterrows():
            values = " | ".join(f"{row[m]:.3f}" for m in metrics)
            lines.append(f"| {embedding} | {values} |")
        if MMD in wide.index and SCVI in wide.index:
            ours, theirs = wide.loc[MMD], wide.loc[SCVI]
            total_ok = ours["Total"] >= theirs["Total"]
            bio_ok = ours["Bio conservation"] >= theirs["Bio conservation"] - BIO_MARGIN
            lines += [
                "",
                f"- {MMD} total {ours['Total']:.3f} vs {SCVI} {theirs['Total']:.3f}: "
                f"{'at least scVI' if total_ok else 'below scVI'} (target: at least).",
                f"- {MMD} bio conservation {ours['Bio conservation']:.3f} vs {SCVI} "
                f"{theirs['Bio conservation']:.3f} - {BIO_MARGIN}: "
                f"{'met' if bio_ok else 'not met'}.",
                f"- Both targets: **{'met' if total_ok and bio_ok else 'not met'}**.",
            ]
        times = ", ".join(f"{name} {s:.0f} s" for name, s in seconds[dataset].items())
        lines += ["", f"Wall time: {times}."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the integration benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="trVAE and scVI (default: each model's)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, seconds = [], {}
    for name in args.datasets:
        start = time.perf_counter()
        results, seconds[name] = run_dataset(DATASETS[name], args.seed, args.max_epochs)
        seconds[name]["total"] = time.perf_counter() - start
        frames.append(long_rows(results, name, args.seed))
        frame = pd.concat(frames, ignore_index=True)
        frame.to_csv(out / "integration.csv", index=False)
        write_table(frame, seconds, out / "integration.md")
        print(f"{name} done", flush=True)
    print((out / "integration.md").read_text())


if __name__ == "__main__":
    main()
