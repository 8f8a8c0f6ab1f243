"""Training throughput of trvae-scvi's TRVAE vs scArches' TRVAE, and the CPU's matmul roofline.

Both train the paper's architecture on the same synthetic sparse data at each number of genes
and conditions, each run in its own process (scArches in ``benchmarks/peers/.venv-scarches``).
Cells/s = training cells x epochs / wall time of the library's ``train``; the roofline compares
the FLOPs of a training step with the best matmul FLOP/s torch reaches here.

Writes ``throughput.json`` and ``throughput.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HIDDEN = [800, 800, 128]
N_LATENT = 20
ROOT = Path(__file__).resolve().parents[1]
SCARCHES_PYTHON = ROOT / "benchmarks" / "peers" / ".venv-scarches" / "bin" / "python"
DEFAULTS = {"max_epochs": 2, "out": ROOT / "benchmarks" / "results"}
# scArches' TRVAE with the paper's architecture: MSE, MMD on y, no normalisation or dropout.
SCARCHES = dict(hidden_layer_sizes=HIDDEN, latent_dim=N_LATENT, recon_loss="mse", mmd_on="y")
SCARCHES.update(use_bn=False, use_ln=False, dr_rate=0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings measured, and the tools."""
    parser.add_argument("--genes", nargs="+", type=int, default=[2000, 7000])
    parser.add_argument("--conditions", nargs="+", type=int, default=[2, 50])
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--tools", nargs="+", default=["ours", "scarches"])


def synthetic(n_cells: int, n_genes: int, n_conditions: int):
    """Sparse log-normal-like values with a condition label; the same for every tool."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = sp.random(n_cells, n_genes, density=0.1, format="csr", random_state=0, dtype=np.float32)
    x.data = np.log1p(x.data * 20).astype(np.float32)
    condition = [f"c{c}" for c in rng.integers(0, n_conditions, n_cells)]
    obs = pd.DataFrame({"condition": pd.Categorical(condition)}, index=map(str, range(n_cells)))
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{g}" for g in range(n_genes)]))


def train_ours(adata, epochs: int, batch_size: int) -> tuple[float, float]:
    """Wall time of ``TRVAE.train`` (90% of the cells train) and cells/s of its loader alone."""
    import scvi

    from benchmarks.runners import timed
    from trvae_scvi import TRVAE
    from trvae_scvi.model import ConditionBalancedDataSplitter

    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, hidden_sizes=HIDDEN, n_latent=N_LATENT)
    splitter = ConditionBalancedDataSplitter(model.adata_manager, batch_size=batch_size)
    splitter.setup()  # the training loader alone, as train builds it
    n_loaded, seconds = timed(lambda: sum(len(b["X"]) for b in splitter.train_dataloader()))
    train = {"max_epochs": epochs, "batch_size": batch_size, "enable_progress_bar": False}
    return timed(model.train, **train)[1], n_loaded / seconds


def train_scarches(adata, epochs: int, batch_size: int) -> tuple[float, None]:
    """Wall time of scArches' ``TRVAE.train`` (its default 90% training split)."""
    import scarches

    model = scarches.models.TRVAE(adata, condition_key="condition", **SCARCHES)
    start = time.perf_counter()
    model.train(n_epochs=epochs, batch_size=batch_size, use_early_stopping=False, monitor=False)
    return time.perf_counter() - start, None


def worker(tool: str, n_cells: int, n_genes: int, n_conditions: int, epochs, batch_size) -> dict:
    """One measurement, in this process."""
    import torch

    adata = synthetic(n_cells, n_genes, n_conditions)
    train = train_ours if tool == "ours" else train_scarches
    seconds, loader_cells_per_s = train(adata, epochs, batch_size)
    n_train = int(round(0.9 * n_cells))
    row = {"tool": tool, "genes": n_genes, "conditions": n_conditions}
    row.update(cells_per_s=n_train * epochs / seconds, train_s=seconds)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    row.update(loader_cells_per_s=loader_cells_per_s, peak_rss_gb=rss)
    return {**row, "torch": torch.__version__, "threads": torch.get_num_threads()}


def matmul_flops(n_genes: int, batch_size: int) -> float:
    """Best dense float32 matmul FLOP/s of torch here, over a few shapes."""
    import torch

    h = HIDDEN[0]
    shapes = [(2048, 2048, 2048), (batch_size, n_genes, h), (batch_size, h, n_genes)]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        repeats = 10
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def step_flops_per_cell(n_genes: int, n_conditions: int) -> float:
    """FLOPs per cell of one training step of the paper's architecture (matmuls only)."""
    encoder = [n_genes + n_conditions, *HIDDEN]
    layers = list(zip(encoder[:-1], encoder[1:], strict=True))
    layers += [(HIDDEN[-1], N_LATENT)] * 2  # mean and log-variance of z
    decoder = [N_LATENT + n_conditions, *HIDDEN[::-1], n_genes]
    layers += list(zip(decoder[:-1], decoder[1:], strict=True))
    flops = sum(6 * i * o for i, o in layers)
    return flops - 2 * layers[0][0] * layers[0][1]  # the input needs no gradient


def measure(args: argparse.Namespace, tool: str, n_genes: int, n_conditions: int) -> dict:
    """One measurement in its own process: ours in this Python, scArches in its venv."""
    python = sys.executable if tool == "ours" else str(SCARCHES_PYTHON)
    if tool == "scarches" and not SCARCHES_PYTHON.exists():
        raise SystemExit(f"{SCARCHES_PYTHON} is missing: bash benchmarks/peers/setup.sh")
    sizes = [args.n_cells, n_genes, n_conditions, args.max_epochs, args.batch_size]
    command = [python, "-m", "benchmarks.throughput", tool, *map(str, sizes)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["step_mflop_per_cell"] = step_flops_per_cell(n_genes, n_conditions) / 1e6
    return row


def run(args: argparse.Namespace) -> None:
    """Run every measurement in its own process and write the table."""
    rows = []
    # The CPU's peak: the best over the run's shapes, measured before and after the trainings.
    peaks = [matmul_flops(n_genes, args.batch_size) for n_genes in args.genes]
    for n_genes in args.genes:
        for n_conditions in args.conditions:
            for tool in args.tools:
                rows.append(measure(args, tool, n_genes, n_conditions))
                print(json.dumps(rows[-1]), flush=True)
    peaks += [matmul_flops(n_genes, args.batch_size) for n_genes in args.genes]
    for row in rows:
        row["matmul_gflops"] = max(peaks) / 1e9
        gflops = row["cells_per_s"] * row["step_mflop_per_cell"] / 1e3
        row["roofline_pct"] = 100 * gflops / row["matmul_gflops"]
    out = args.out
    (out / "throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_table(rows, args, out / "throughput.md")


def write_table(rows: list[dict], args, path: Path) -> None:
    """Markdown: cells/s, memory and roofline per setting, and the ratios that matter."""
    from benchmarks.results import markdown

    header = ["genes", "conditions", "tool", "cells/s", "loader alone, cells/s", "peak RSS GB"]
    header += ["MFLOP/cell", "matmul GFLOP/s", "% of roofline"]
    table = [[r["genes"], r["conditions"], r["tool"], *table_cells(r)] for r in rows]
    speed = {(r["tool"], r["genes"], r["conditions"]): r["cells_per_s"] for r in rows}
    ratios = []
    for genes in args.genes:
        for conditions in args.conditions:
            ours = speed.get(("ours", genes, conditions))
            theirs = speed.get(("scarches", genes, conditions))
            base = speed.get(("ours", genes, args.conditions[0]))
            ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
            per_cell = f"{base / ours:.2f}" if ours and base else "-"
            ratios.append([genes, conditions, ratio, per_cell])
    lines = [
        f"`python -m benchmarks throughput`: {args.n_cells:,} synthetic cells, {args.max_epochs} "
        f"epochs, batch {args.batch_size}, encoder {'-'.join(map(str, HIDDEN))}, latent "
        f"{N_LATENT}, MMD on y, MSE; {rows[0]['threads']} CPU threads.",
        "",
        *markdown(header, table),
        "",
        *markdown(
            ["genes", "conditions", "ours / scArches (cells/s)", "ours: time per cell vs fewest"],
            ratios,
        ),
    ]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def table_cells(r: dict) -> list[str]:
    """A measurement's numbers as the table shows them ("-": no loader timing)."""
    loader = f"{r['loader_cells_per_s']:.0f}" if r["loader_cells_per_s"] else "-"
    speed = [f"{r['cells_per_s']:.0f}", loader, f"{r['peak_rss_gb']:.2f}"]
    flops = [f"{r['step_mflop_per_cell']:.1f}", f"{r['matmul_gflops']:.0f}"]
    return [*speed, *flops, f"{r['roofline_pct']:.0f}"]


if __name__ == "__main__":  # a worker: TOOL N_CELLS N_GENES N_CONDITIONS EPOCHS BATCH_SIZE
    tool, *sizes = sys.argv[1:]
    print(json.dumps(worker(tool, *map(int, sizes))))
