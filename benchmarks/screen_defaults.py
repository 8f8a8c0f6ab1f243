"""Screen candidate defaults of TRVAE on every held-out cell type of the bundled Kang data.

For each (cell type, seed, configuration), the stimulated cells of that type are held out, the
configuration is trained on the rest and predicts them from the type's control cells with
``transfer``. Writes one JSON line per run to ``<out>/screen_defaults.jsonl`` (as runs finish,
so an interrupted screen keeps what it did) and a table of means over cell types and seeds to
``<out>/screen_defaults.md``.

Usage::

    python benchmarks/screen_defaults.py                           # all configurations
    python benchmarks/screen_defaults.py --configs default "beta 10" --cell-types NK --seeds 0
    python benchmarks/screen_defaults.py --jobs 12 --accelerator gpu   # 12 processes, one GPU

On 2 CPU cores one run of the default takes 1-2 minutes, so the whole grid (13 configurations x
7 cell types x 2 seeds) is a GPU job: on one H200 with ``--jobs 12``, 84 runs trained in about
8 minutes.

The defaults of ``TRVAE`` were chosen from this screen (see the README); the benchmark of
every method with the chosen defaults is ``benchmarks/kang_holdout.py``.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import scvi
import torch

# The benchmark's own scores, so that screen and benchmark score a prediction the same way
# (this folder is on sys.path when a script in it runs, in spawned workers too).
from kang_holdout import scores

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut, hold_out
from trvae_scvi.metrics import r2_of_variances

# Each configuration: (TRVAE keyword arguments, TRVAE.train keyword arguments); unset ones are
# the current defaults.
CONFIGS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "150 epochs": ({}, {"max_epochs": 150}),
    "300 epochs": ({}, {"max_epochs": 300}),
    "hidden 256-256-128": ({"hidden_sizes": (256, 256, 128)}, {}),
    "hidden 256-256-128, 200 epochs": ({"hidden_sizes": (256, 256, 128)}, {"max_epochs": 200}),
    "hidden 256-64, latent 10": ({"hidden_sizes": (256, 64), "n_latent": 10}, {}),
    "hidden 256-64, latent 10, 150 epochs": (
        {"hidden_sizes": (256, 64), "n_latent": 10},
        {"max_epochs": 150},
    ),
    "hidden 256-64, latent 10, MMD on z": (
        {"hidden_sizes": (256, 64), "n_latent": 10, "mmd_on": "z"},
        {},
    ),
    "beta 10": ({"beta": 10.0}, {}),
    "beta 1000": ({"beta": 1000.0}, {}),
    "alpha 1e-5": ({"alpha": 1e-5}, {}),
    "alpha 0.1": ({"alpha": 0.1}, {}),
    "dropout 0.2": ({"dropout_rate": 0.2}, {}),
    "paper (batch norm, dropout 0.2, ReLU output)": (
        {"normalization": "batch", "dropout_rate": 0.2, "mse_output_activation": "relu"},
        {},
    ),
    "MMD on z (MMD-CVAE)": ({"mmd_on": "z"}, {}),
    "MMD on z, 150 epochs": ({"mmd_on": "z"}, {"max_epochs": 150}),
}
CELL_TYPES = ["B", "CD14+Mono", "CD4T", "CD8T", "Dendritic", "FCGR3A+Mono", "NK"]
METRICS = {
    "r2_mean_deg": "R² mean top-100 DEGs",
    "change_r_deg": "change r top-100",
    "r2_mean_all": "R² mean all",
    "r2_var_all": "R² var all",
    "r2_var_all_sampled": "R² var all, sampled",
}


@functools.cache
def _task(cell_type: str) -> HoldOut:
    # Once per worker process and cell type: the DEGs take a few seconds.
    return hold_out(trvae_scvi.datasets.kang2018(), cell_type)


def run_one(
    cell_type: str, seed: int, config: str, accelerator: str, threads: int, max_epochs: int | None
) -> dict:
    """Train one configuration on one held-out task and score its transfer prediction."""
    torch.set_num_threads(threads)
    model_kwargs, train_kwargs = CONFIGS[config]
    if max_epochs is not None:
        train_kwargs = {**train_kwargs, "max_epochs": max_epochs}
    task = _task(cell_type)
    scvi.settings.seed = seed
    TRVAE.setup_anndata(task.train, condition_key="condition")
    model = TRVAE(task.train, **model_kwargs)
    start = time.perf_counter()
    model.train(accelerator=accelerator, devices=1, enable_progress_bar=False, **train_kwargs)
    seconds = time.perf_counter() - start
    predict = functools.partial(
        model.predict, indices=task.control_indices, target_condition="stimulated"
    )
    predicted, sampled = predict().X, predict(sample=True).X
    return {
        "cell_type": cell_type,
        "seed": seed,
        "config": config,
        **scores(predicted, task.real, task, n_boot=0),
        "r2_var_all_sampled": r2_of_variances(sampled, task.real),
        "train_seconds": round(seconds, 1),
        "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "CPU",
        "jobs_threads": f"{threads} thread(s) per run",
    }


def table(rows: list[dict], baseline: str = "default") -> str:
    """Markdown: per configuration, means over runs and cell types won against ``baseline``."""
    by_config: dict[str, list[dict]] = {}
    for row in rows:
        by_config.setdefault(row["config"], []).append(row)
    cell_types = sorted({row["cell_type"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    devices = sorted({f"{row.get('device', '?')}, {row.get('jobs_threads', '?')}" for row in rows})

    def type_means(config: str, metric: str) -> dict[str, float]:
        runs = by_config.get(config, [])
        return {
            t: float(np.mean([r[metric] for r in runs if r["cell_type"] == t]))
            for t in cell_types
            if any(r["cell_type"] == t for r in runs)
        }

    lines = [
        f"Cell types {', '.join(cell_types)}; seeds {', '.join(map(str, seeds))}. Means over "
        "cell types of the means over seeds; 'wins' counts the cell types where the "
        f"configuration's R² mean top-100 DEGs beats {baseline!r}'s. Transfer prediction. "
        f"Trained on: {'; '.join(devices)} (train s compares configurations of one run only).",
        "",
        "| configuration | runs | " + " | ".join(METRICS.values()) + " | wins | train s |",
        "|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    reference = type_means(baseline, "r2_mean_deg")
    for config in CONFIGS:
        runs = by_config.get(config)
        if not runs:
            continue
        means = [np.mean(list(type_means(config, m).values())) for m in METRICS]
        own = type_means(config, "r2_mean_deg")
        shared = [t for t in own if t in reference]
        wins = f"{sum(own[t] > reference[t] for t in shared)}/{len(shared)}" if shared else "–"
        seconds = np.mean([r["train_seconds"] for r in runs])
        lines.append(
            f"| {config} | {len(runs)} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {wins} | {seconds:.0f} |"
        )
    lines += ["", "R² mean top-100 DEGs per cell type (mean over seeds):", ""]
    lines += ["| configuration | " + " | ".join(cell_types) + " |"]
    lines += ["|---|" + "---|" * len(cell_types)]
    for config in CONFIGS:
        if config in by_config:
            per_type = type_means(config, "r2_mean_deg")
            cells = [f"{per_type[t]:.3f}" if t in per_type else "–" for t in cell_types]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the screen."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell-types", nargs="+", default=CELL_TYPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--max-epochs", type=int, help="override every configuration's (checks)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--table-only", action="store_true", help="rebuild the table only")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "screen_defaults.jsonl"
    if not args.table_only:
        # One thread per process when several run at once: threads of different processes
        # spinning on the same cores slow each other far more than they gain.
        threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
        runs = [
            (cell_type, seed, config, args.accelerator, threads, args.max_epochs)
            for seed in args.seeds
            for config in args.configs
            for cell_type in args.cell_types
        ]
        context = multiprocessing.get_context("spawn")
        jsonl.write_text("")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {pool.submit(run_one, *run): run for run in runs}
            for future in as_completed(futures):
                # A failed run is reported at once; the pool would otherwise finish every other
                # run before the error surfaced.
                if future.exception() is not None:
                    pool.shutdown(cancel_futures=True)
                    raise RuntimeError(f"run {futures[future][:3]} failed") from future.exception()
                line = json.dumps(future.result())
                with open(jsonl, "a") as handle:
                    handle.write(line + "\n")
                print(line, flush=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line]
    text = table(rows)
    (out / "screen_defaults.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
