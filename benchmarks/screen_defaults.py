"""Screen candidate defaults of TRVAE on every held-out cell type of the bundled Kang data.

Each configuration is a set of ``TRVAE`` / ``train`` arguments that differs from the current
defaults. For every (cell type, seed) the type's stimulated cells are held out, the
configuration is trained on the rest and ``predict(method="transfer")`` scores it with the
benchmark's metrics (``kang_holdout.scores``). One JSON line per (configuration, cell type,
seed) is appended to ``screen_defaults.jsonl`` (rows already there are skipped, so an
interrupted screen resumes), and ``screen_defaults.md`` tabulates the means.

Usage::

    python benchmarks/screen_defaults.py                          # every configuration
    python benchmarks/screen_defaults.py --configs default "hidden 256-256-128" --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import scvi
import torch
from kang_holdout import scores

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import hold_out

# Model arguments (first dict) and train arguments (second) of each candidate.
CONFIGS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "paper (batch norm, dropout 0.2, ReLU output)": (
        {"normalization": "batch", "dropout_rate": 0.2, "mse_output_activation": "relu"},
        {},
    ),
    "hidden 256-256-128": ({"hidden_sizes": (256, 256, 128)}, {}),
    "hidden 256-256-128, beta 10": ({"hidden_sizes": (256, 256, 128), "beta": 10.0}, {}),
    "hidden 256-256-128, beta 1000": ({"hidden_sizes": (256, 256, 128), "beta": 1000.0}, {}),
    "hidden 256-256-128, latent 10": ({"hidden_sizes": (256, 256, 128), "n_latent": 10}, {}),
    "hidden 256-256-128, 120 epochs": ({"hidden_sizes": (256, 256, 128)}, {"max_epochs": 120}),
    "hidden 256-256-128, batch 512, 120 epochs": (
        {"hidden_sizes": (256, 256, 128)},
        {"batch_size": 512, "max_epochs": 120},
    ),
}
KEYS = ["r2_mean_deg", "change_r_deg", "r2_var_all", "seconds"]


def main() -> None:
    """Run the screen."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--cell-types", nargs="+", default=None, help="default: all 7")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "screen_defaults.jsonl"
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done.add((row["config"], row["cell_type"], row["seed"]))
    adata = trvae_scvi.datasets.kang2018()
    cell_types = args.cell_types or sorted(adata.obs["cell_type"].astype(str).unique())
    for cell_type in cell_types:
        task = hold_out(adata, cell_type)
        for seed in args.seeds:
            for name in args.configs:
                if (name, cell_type, seed) in done:
                    continue
                model_kwargs, train_kwargs = CONFIGS[name]
                scvi.settings.seed = seed
                TRVAE.setup_anndata(task.train, condition_key="condition")
                model = TRVAE(task.train, **model_kwargs)
                start = time.perf_counter()
                model.train(enable_progress_bar=False, **train_kwargs)
                predicted = model.predict(
                    indices=task.control_indices, target_condition="stimulated"
                )
                seconds = time.perf_counter() - start
                row = {"config": name, "cell_type": cell_type, "seed": seed, "seconds": seconds}
                row.update(scores(predicted.X, task.real, task, n_boot=0))
                with open(path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    write_table(pd.read_json(path, lines=True), out / "screen_defaults.md")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Means over seeds and cell types per configuration, and R² of means per cell type."""
    per_type = frame.pivot_table(
        index="config", columns="cell_type", values="r2_mean_deg", aggfunc="mean"
    )
    means = frame.groupby("config")[KEYS].mean()
    n_runs = frame.groupby("config").size()
    lines = [
        f"TRVAE transfer, {torch.get_num_threads()} CPU threads; means over cell types and "
        "seeds (runs = cell types x seeds). s: training plus prediction wall time of one run.",
        "",
        "| configuration | runs | R² mean top-100 DEGs | change r top-100 | R² var all | s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in means.sort_values("r2_mean_deg", ascending=False).iterrows():
        lines.append(
            f"| {name} | {n_runs[name]} | {row['r2_mean_deg']:.3f} | {row['change_r_deg']:.3f} "
            f"| {row['r2_var_all']:.3f} | {row['seconds']:.0f} |"
        )
    lines += [
        "",
        "R² of means on the top-100 DEGs per held-out cell type:",
        "",
        "| configuration | " + " | ".join(per_type.columns) + " |",
        "|---|" + "---|" * len(per_type.columns),
    ]
    for name, row in per_type.iterrows():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
