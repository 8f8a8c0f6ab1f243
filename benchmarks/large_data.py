"""Scale check: 1,000,000 cells x 2,000 genes, sparse, trained and predicted in bounded memory.

A child process writes a synthetic sparse h5ad in chunks (negative-binomial counts, about 92%
zeros, log-normalised CSR); this process reads it, trains one epoch, encodes every cell and
predicts every cell in chunks, recording the wall time and the peak RSS after each step.

Writes ``large_data.json`` and ``large_data.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"out": ROOT / "benchmarks" / "results"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data's size and the batch sizes."""
    parser.add_argument("--n-cells", type=int, default=1_000_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--n-conditions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--predict-chunk", type=int, default=25_000)
    # NeuronEdit alone, as when the table was made (the default before the average).
    parser.add_argument("--method", default="neuron_edit", help="predict's; 'default': None")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generate(path: Path, n_cells: int, n_genes: int, n_conditions: int, chunk: int) -> None:
    """Write the synthetic h5ad chunk by chunk."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(0)
    n_types = 8
    # Per-type gene probabilities (a few high, most low) and a per-condition response of 100
    # genes; 200-2,000 UMIs per cell leave about 92% zeros, as in droplet data.
    gene_weights = rng.gamma(0.03, 1.0, (n_conditions, n_types, n_genes))
    gene_weights[:, :, 100:] = gene_weights[0, :, 100:]
    cumulative = np.cumsum(gene_weights / gene_weights.sum(-1, keepdims=True), axis=-1)
    cell_type = rng.integers(0, n_types, n_cells)
    condition = rng.integers(0, n_conditions, n_cells)
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    obs["condition"] = pd.Categorical([f"condition{c}" for c in condition])
    obs["cell_type"] = pd.Categorical([f"type{t}" for t in cell_type])
    var = pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)])
    with h5py.File(path, "w") as handle:
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", var)
        for start in range(0, n_cells, chunk):
            rows = slice(start, min(start + chunk, n_cells))
            # Draw each cell's UMIs gene by gene from its (condition, type) distribution: the
            # cost is proportional to the non-zeros, not to cells x genes.
            n_rows = rows.stop - rows.start
            umis = rng.integers(200, 2000, n_rows)
            row = np.repeat(np.arange(n_rows), umis)
            group = (condition[rows] * n_types + cell_type[rows])[row]
            genes = np.empty(len(row), dtype=np.int64)
            for code in np.unique(group):
                members = group == code
                genes[members] = np.searchsorted(
                    cumulative.reshape(-1, n_genes)[code], rng.random(members.sum())
                )
            genes = np.minimum(genes, n_genes - 1)
            counts = sp.csr_matrix(
                (np.ones(len(row), np.float32), (row, genes)), shape=(n_rows, n_genes)
            )
            counts.sum_duplicates()
            library = np.asarray(counts.sum(1)).ravel()
            block = counts.multiply(1e4 / library[:, None]).tocsr().astype(np.float32)
            block.data = np.log1p(block.data)
            if start == 0:
                write_elem(handle, "X", block)
            else:
                sparse_dataset(handle["X"]).append(block)


def run_model(path: Path, batch_size: int, predict_chunk: int, method: str) -> dict:
    """One epoch, the latent space of every cell and a chunked prediction of every cell."""
    import anndata as ad
    import scvi

    from trvae_scvi import TRVAE

    start = time.perf_counter()
    adata = ad.read_h5ad(path)
    result = {"read_s": time.perf_counter() - start, "rss_after_read_gb": peak_rss_gb()}
    result["x_type"] = type(adata.X).__name__
    result["x_density"] = adata.X.nnz / (adata.n_obs * adata.n_vars)
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    start = time.perf_counter()
    model.train(max_epochs=1, batch_size=batch_size, train_size=1.0, enable_progress_bar=False)
    result["epoch_s"], result["rss_after_train_gb"] = time.perf_counter() - start, peak_rss_gb()
    start = time.perf_counter()
    result["latent_shape"] = list(model.get_latent_representation(batch_size=4096).shape)
    result["latent_s"], result["rss_after_latent_gb"] = time.perf_counter() - start, peak_rss_gb()
    start = time.perf_counter()
    target = str(adata.obs["condition"].cat.categories[0])
    options = {"method": None if method == "default" else method, "batch_size": 4096}
    total = np.zeros(adata.n_vars)
    for first in range(0, adata.n_obs, predict_chunk):
        indices = np.arange(first, min(first + predict_chunk, adata.n_obs))
        predicted = model.predict(indices=indices, target_condition=target, **options)
        total += np.asarray(predicted.X.sum(0), dtype=np.float64).ravel()  # dense or CSR
        del predicted  # before the next chunk's is made
    seconds = time.perf_counter() - start
    result["predict_s"], result["rss_after_predict_gb"] = seconds, peak_rss_gb()
    result["predicted_mean_finite"] = bool(np.isfinite(total / adata.n_obs).all())
    return result


def run(args: argparse.Namespace) -> None:
    """Generate the data in a child process, then run the model in this one."""
    from benchmarks.results import markdown

    out = args.out
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.h5ad"
        start = time.perf_counter()
        sizes = [args.n_cells, args.n_genes, args.n_conditions]
        command = [sys.executable, "-m", "benchmarks.large_data", str(path), *map(str, sizes)]
        child = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        keys = ("n_cells", "n_genes", "n_conditions", "batch_size")
        result = {key: getattr(args, key) for key in keys}
        result["generate_s"] = time.perf_counter() - start
        result.update(json.loads(child.stdout.strip().splitlines()[-1]))  # the child's peak RSS
        result["file_gb"] = path.stat().st_size / 2**30
        result.update(run_model(path, args.batch_size, args.predict_chunk, args.method))
    (out / "large_data.json").write_text(json.dumps(result, indent=2) + "\n")
    predict = f"predict (method {args.method}), all cells in chunks of {args.predict_chunk:,}"
    steps = [
        ("write the h5ad in chunks (child process)", "generate_s", "rss_generate_gb"),
        ("read it", "read_s", "rss_after_read_gb"),
        ("one training epoch", "epoch_s", "rss_after_train_gb"),
        ("get_latent_representation, all cells", "latent_s", "rss_after_latent_gb"),
        (predict, "predict_s", "rss_after_predict_gb"),
    ]
    lines = [
        f"`python -m benchmarks large_data --n-cells {args.n_cells} --predict-chunk "
        f"{args.predict_chunk} --method {args.method}`: {args.n_cells:,} cells x "
        f"{args.n_genes:,} genes, {args.n_conditions} conditions, X density "
        f"{result['x_density']:.3f} ({result['x_type']} in memory), default TRVAE, batch "
        f"{args.batch_size}, CPU threads of this machine.",
        "",
        *markdown(
            ["step", "wall s", "peak RSS so far, GB"],
            [[name, f"{result[s]:.0f}", f"{result[gb]:.2f}"] for name, s, gb in steps],
        ),
        "",
    ]
    (out / "large_data.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":  # the child: PATH N_CELLS N_GENES N_CONDITIONS
    path, *sizes = sys.argv[1:]
    generate(Path(path), *map(int, sizes), chunk=20_000)
    print(json.dumps({"rss_generate_gb": peak_rss_gb()}))
