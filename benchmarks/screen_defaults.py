"""Screen candidate defaults of TRVAE on held-out cell types of the bundled Kang data.

For each cell type given, the stimulated cells of that type are held out; each configuration
is trained on the rest (seed 0) and predicts them from the type's control cells. Writes one JSON
line per (cell type, configuration) to ``benchmarks/results/screen_defaults.jsonl`` and a
markdown table to ``benchmarks/results/screen_defaults.md``.

Usage::

    python benchmarks/screen_defaults.py --cell-types NK CD4T --max-epochs 60

The full benchmark of every cell type, seed and method is ``benchmarks`` issue #4's job; this
screen only chose the architecture defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import scvi
import torch

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import hold_out
from trvae_scvi.metrics import r2_of_means, r2_of_variances

CONFIGS = {
    "paper (batch norm, dropout 0.2, ReLU output)": {
        "normalization": "batch",
        "dropout_rate": 0.2,
        "mse_output_activation": "relu",
    },
    "no norm, no dropout, ReLU output": {
        "normalization": "none",
        "dropout_rate": 0.0,
        "mse_output_activation": "relu",
    },
    "no norm, no dropout, linear output (default)": {
        "normalization": "none",
        "dropout_rate": 0.0,
        "mse_output_activation": "linear",
    },
    "same, beta=0 (CVAE)": {
        "normalization": "none",
        "dropout_rate": 0.0,
        "mse_output_activation": "linear",
        "beta": 0.0,
    },
    "same, MMD on z (MMD-CVAE)": {
        "normalization": "none",
        "dropout_rate": 0.0,
        "mse_output_activation": "linear",
        "mmd_on": "z",
    },
}


def main() -> None:
    """Run the screen."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell-types", nargs="+", default=["NK", "CD4T"])
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = trvae_scvi.datasets.kang2018()
    rows = []
    for cell_type in args.cell_types:
        task = hold_out(adata, cell_type)
        degs = task.deg_mask
        baselines = {"control unchanged": task.control, "mean shift": task.mean_shift}
        for name, predicted in baselines.items():
            rows.append(score(cell_type, name, predicted, task.real, degs, seconds=0.0))
        for name, config in CONFIGS.items():
            scvi.settings.seed = 0
            TRVAE.setup_anndata(task.train, condition_key="condition")
            model = TRVAE(task.train, **config)
            start = time.perf_counter()
            model.train(max_epochs=args.max_epochs, enable_progress_bar=False)
            seconds = time.perf_counter() - start
            predicted = model.predict(indices=task.control_indices, target_condition="stimulated")
            rows.append(score(cell_type, name, predicted.X, task.real, degs, seconds))
            print(json.dumps(rows[-1]), flush=True)
    with open(out / "screen_defaults.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    lines = [
        f"Seed 0, {args.max_epochs} epochs, {torch.get_num_threads()} CPU threads. "
        "R² of means on the top-100 DEGs and on all genes; R² of variances on all genes. "
        "Train s is wall time on a shared machine, not a speed benchmark.",
        "",
        "| cell type | method | R² mean top-100 DEGs | R² mean all | R² var all | train s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['cell_type']} | {r['method']} | {r['r2_mean_deg']:.3f} | {r['r2_mean_all']:.3f} "
        f"| {r['r2_var_all']:.3f} | {r['train_seconds']:.0f} |"
        for r in rows
    ]
    (out / "screen_defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def score(cell_type, method, predicted, real, degs, seconds) -> dict:
    """Scores of one prediction."""
    return {
        "cell_type": cell_type,
        "method": method,
        "r2_mean_deg": r2_of_means(predicted[:, degs], real[:, degs]),
        "r2_mean_all": r2_of_means(predicted, real),
        "r2_var_all": r2_of_variances(predicted, real),
        "train_seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
