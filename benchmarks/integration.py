"""Condition removal scored with scib-metrics: trVAE's representations against scVI and PCA.

On each dataset with cell types and several conditions, every embedding (trVAE's z, first
decoder layer y with and without NeuronEdit onto the reference condition, PCA of its corrected
expression; scVI; scArches' TRVAE when ``peers/.venv-scarches`` exists; uncorrected PCA) is
scored by scib-metrics' ``Benchmarker`` (label: cell type, batch: condition; raw scores).

Writes ``integration.csv`` (one row per dataset, embedding and metric) and ``integration.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi

from benchmarks.data import DATASETS, RESULTS, TARGET_SUM, Dataset
from benchmarks.results import markdown
from benchmarks.runners import timed, train
from trvae_scvi.nn import neuron_edit

DEFAULTS = {"datasets": ["muscat", "kang"], "seeds": [0], "max_epochs": None, "out": RESULTS}
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
PEERS_DIR = Path(__file__).resolve().parent / "peers"
SCARCHES_PYTHON = PEERS_DIR / ".venv-scarches" / "bin" / "python"
AGGREGATES = ["Bio conservation", "Batch correction", "Total"]
BIO_MARGIN = 0.02
COLUMNS = ["dataset", "seed", "embedding", "metric", "metric_type", "value"]


def edit_to_reference(values: np.ndarray, conditions: np.ndarray, reference: str) -> np.ndarray:
    """Every condition's activations mapped onto the reference condition's with NeuronEdit."""
    target = values[conditions == reference]
    if len(target) == 0:
        raise ValueError(f"no cell of the reference condition {reference!r}")
    edited = values.copy()
    for condition in np.unique(conditions[conditions != reference]):
        rows = conditions == condition
        edited[rows] = neuron_edit(values[rows], values[rows], target)
    return edited


def trvae_embeddings(adata: ad.AnnData, spec: Dataset, seed: int, max_epochs) -> tuple:
    """The embeddings of trVAE by obsm key, its condition column and its training seconds."""
    key = list(spec.condition_key) if isinstance(spec.condition_key, tuple) else spec.condition_key
    model, seconds = train(adata, seed, max_epochs, "counts", key, recon_loss="nb")
    conditions = adata.obs[model.condition_key].astype(str).to_numpy()
    library = np.maximum(np.asarray(adata.layers["counts"].sum(axis=1)).ravel(), 1.0)
    expected = model.get_corrected_expression(spec.reference)
    corrected = np.log1p(expected / library[:, None] * TARGET_SUM).astype(np.float32)
    mmd = model.get_mmd_representation()
    embeddings = {
        "X_trVAE_mmd": mmd,
        "X_trVAE_mmd_neuron_edit": edit_to_reference(mmd, conditions, spec.reference),
        "X_trVAE": model.get_latent_representation(),
        "X_trVAE_corrected_pca": sc.pp.pca(corrected, n_comps=N_COMPS, random_state=seed),
    }
    return embeddings, model.condition_key, seconds


def scvi_embedding(counts: ad.AnnData, batch_key: str, seed: int, max_epochs) -> tuple:
    """The latent representation of scVI (default settings) and its training seconds."""
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(counts, batch_key=batch_key)
    model = scvi.model.SCVI(counts)
    seconds = timed(model.train, max_epochs=max_epochs, enable_progress_bar=False)[1]
    return model.get_latent_representation(), seconds


def scarches_embedding(counts: ad.AnnData, batch_key: str, seed: int, max_epochs) -> tuple:
    """The latent means of scArches' TRVAE (``peers/embed_scarches_trvae.py``), its seconds."""
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "counts.h5ad", Path(folder) / "latent.npz"
        counts.write_h5ad(data)
        command = [str(SCARCHES_PYTHON), str(PEERS_DIR / "embed_scarches_trvae.py")]
        command += ["--input", str(data), "--condition-key", batch_key, "--seed", str(seed)]
        command += ["--out", str(out)]
        command += [] if max_epochs is None else ["--max-epochs", str(max_epochs)]
        subprocess.run(command, check=True)
        result = np.load(out)
        return result["latent"], float(result["seconds"])


def run_dataset(spec: Dataset, seed: int, epochs: int | None) -> tuple[pd.DataFrame, dict]:
    """Every embedding of one dataset scored: ``Benchmarker``'s results and the seconds."""
    adata = spec.load()
    seconds = {}
    embeddings, batch, seconds["trVAE training"] = trvae_embeddings(adata, spec, seed, epochs)

    def counts() -> ad.AnnData:  # each peer gets its own AnnData
        return ad.AnnData(X=adata.layers["counts"].copy(), obs=adata.obs[[batch]].copy())

    embeddings["X_scVI"], seconds["scVI training"] = scvi_embedding(counts(), batch, seed, epochs)
    if SCARCHES_PYTHON.exists():
        embeddings["X_scArches_TRVAE"], seconds["scArches TRVAE training"] = scarches_embedding(
            counts(), batch, seed, epochs
        )
    else:
        print(f"{SCARCHES_PYTHON} missing (bash benchmarks/peers/setup.sh): no scArches row")
    embeddings["X_pca_uncorrected"] = sc.pp.pca(adata.X, n_comps=N_COMPS, random_state=seed)
    for key, value in embeddings.items():
        adata.obsm[key] = np.asarray(value, dtype=np.float32)
    start = time.perf_counter()
    # Imported here: the other benchmarks (and the CLI's help) run without the docs extra.
    from scib_metrics.benchmark import Benchmarker

    # Positional: the batch key, the label key, the embeddings' obsm keys.
    benchmarker = Benchmarker(adata, batch, "cell_type", list(embeddings), progress_bar=False)
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
    return pd.DataFrame(rows, columns=COLUMNS)


def write_table(frame: pd.DataFrame, seconds: dict, path: Path) -> None:
    """Markdown: the scIB table of each dataset, the targets of trVAE's z, the wall times."""
    lines = [
        "Condition removal scored with scib-metrics "
        f"{version('scib-metrics')} (`python -m benchmarks integration`; scvi-tools "
        f"{version('scvi-tools')}): bio conservation with the cell type as label, batch "
        "correction with the condition as batch, raw scores (no min-max scaling); Total = 0.6 "
        'bio conservation + 0.4 batch correction. trVAE: `recon_loss="nb"` on the counts; '
        f"seed {', '.join(map(str, sorted(frame.seed.unique())))}.",
    ]
    for dataset, part in frame.groupby("dataset", sort=False):
        wide = part.pivot_table(index="embedding", columns="metric", values="value", sort=False)
        metrics = [m for m in wide.columns if m not in AGGREGATES] + AGGREGATES
        wide = wide[metrics].sort_values("Total", ascending=False)
        rows = [[name, *(f"{row[m]:.3f}" for m in metrics)] for name, row in wide.iterrows()]
        lines += ["", f"## {dataset}", "", *markdown(["embedding", *metrics], rows)]
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


def run(args: argparse.Namespace) -> None:
    """Run the integration benchmark: every dataset and seed, the table after each."""
    frames, seconds = [], {}
    for name in args.datasets:
        for seed in args.seeds:
            start = time.perf_counter()
            results, seconds[name] = run_dataset(DATASETS[name], seed, args.max_epochs)
            seconds[name]["total"] = time.perf_counter() - start
            frames.append(long_rows(results, name, seed))
            frame = pd.concat(frames, ignore_index=True)
            frame.to_csv(args.out / "integration.csv", index=False)
            write_table(frame, seconds, args.out / "integration.md")
            print(f"{name} seed {seed} done", flush=True)
