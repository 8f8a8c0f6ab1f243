"""Choose TRVAE's defaults on the tuning tasks only (:mod:`benchmarks.tasks`).

Per task and configuration one model is trained and every candidate predictor is scored; pairs
are ranked by ``RANKING`` (the selection rule, ``docs/benchmarks.md``), count configurations
separately. Averages and shrinkages are scored as one ``predict`` call, as ``predict`` makes them.

Writes one JSON line per (configuration, task, predictor) to ``tune_defaults.jsonl`` as runs
finish (a rerun skips what is there) and the summary to ``tune_defaults.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import torch
from scvi.model._utils import get_max_epochs_heuristic

from benchmarks.data import RESULTS, form_data
from benchmarks.results import markdown
from benchmarks.runners import prediction, train
from benchmarks.scoring import scores
from benchmarks.tasks import tasks
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut, hold_out

# max_epochs None: each configuration's own (its steps, or the 60-epoch rule)
DEFAULTS = {"datasets": ["kang_seurat", "glioblastoma"], "seeds": [0], "max_epochs": None}
DEFAULTS["out"] = RESULTS / "tuning"
Z = {"mmd_on": "z"}
PAPER_LOSS = {"loss_reduction": "mean", "eta": 100.0, "alpha": 1e-5, "beta": 100.0}
# name: (TRVAE keyword arguments, optimiser steps; None: the 60-epoch rule)
CONFIGS: dict[str, tuple[dict, int | None]] = {
    "current": ({}, None),
    "steps 4000": ({}, 4000),
    "paper loss": (PAPER_LOSS, None),
    "MMD on z": ({"mmd_on": "z"}, None),
    "beta 0 (CVAE)": ({"beta": 0.0}, None),
    "paper loss, beta 10": ({**PAPER_LOSS, "beta": 10.0}, None),
    "paper loss, beta 1000": ({**PAPER_LOSS, "beta": 1000.0}, None),
    "paper loss, MMD on z": ({**PAPER_LOSS, "mmd_on": "z"}, None),
    "hidden 256-256-128, steps 4000": ({"hidden_sizes": (256, 256, 128)}, 4000),
    # The paper's regularisation and scArches' TRVAE's.
    "MMD on z, batch norm, dropout 0.2": (
        {**Z, "normalization": "batch", "dropout_rate": 0.2},
        None,
    ),
    "MMD on z, layer norm, dropout 0.05": (
        {**Z, "normalization": "layer", "dropout_rate": 0.05},
        None,
    ),
    "MMD on z, ReLU output": ({"mmd_on": "z", "mse_output_activation": "relu"}, None),
    # Count models' draws are not mean-preserving in log space: this chooses their ``sample``.
    "counts (nb)": ({"recon_loss": "nb"}, None),
}
# The selection rule; R² of the variances breaks ties (expected values vs draws).
RANKING = ["share_beating_mean_shift", "mean_score", "mean_r2_var"]
SHIFT = {"method": "calibrated", "calibration_weight": 0.0}  # the model's mean shift
# ``predict`` options of each candidate; None: the published transfer.
PREDICTORS: dict[str, dict | None] = {
    "transfer (published)": None,
    "transfer": {"method": "transfer", "sample": False},
    "transfer, sampled": {"method": "transfer", "sample": True},
    **{
        f"calibrated w={w}, neighbours {k or 'all'}": {
            "method": "calibrated",
            "calibration_weight": w,
            "n_neighbors": k,
            "sample": False,
        }
        for w in (0.0, 0.5, 1.0)
        for k in (None, 30, 100)
    },
    "calibrated w=1.0, neighbours all, sampled": {"method": "calibrated", "sample": True},
    # Unshrunk, as when these were scored (shrinkage has defaulted to 0.25 since).
    "NeuronEdit (y)": {"method": "neuron_edit", "shrinkage": 0.0, "sample": False},
    "NeuronEdit (y), sampled": {"method": "neuron_edit", "shrinkage": 0.0, "sample": True},
    "latent shift": {"method": "latent_shift", "sample": False},
    "calibrated w=0.0, neighbours all, sampled": {**SHIFT, "sample": True},
}
# Averages of the model's predictors (the second round).
AVERAGES: dict[str, tuple[str, ...]] = {
    "NeuronEdit (y)": ("neuron_edit",),
    "NeuronEdit (y) and transfer": ("neuron_edit", "transfer"),
    "NeuronEdit (y) and calibrated": ("neuron_edit", "calibrated"),
    "NeuronEdit (y), transfer and calibrated": ("neuron_edit", "transfer", "calibrated"),
}
# Each average shrunk s toward the reference's measured change, expected and drawn.
BLENDS: dict[str, dict] = {
    f"{name}{drawn}{f', shrunk {s} to mean shift' if s else ''}": dict(
        method=methods, shrinkage=s, sample=bool(drawn)
    )
    for name, methods in AVERAGES.items()
    for s in ((0.25, 0.5, 0.75) if len(methods) == 1 else (0.0, 0.25))
    for drawn in ("", ", sampled")
}
# Count configurations score ``predict``'s shrinkage with and without draws.
COUNT_PREDICTORS: dict[str, dict] = {
    f"NeuronEdit (y){drawn}, shrunk 0.25 to mean shift": dict(
        method="neuron_edit", shrinkage=0.25, sample=bool(drawn)
    )
    for drawn in ("", ", sampled")
}
# The candidate the rule chose, which ``predict()`` does by default for ``mse`` models.
DEFAULT_CANDIDATE = "NeuronEdit (y) and calibrated, sampled, shrunk 0.25 to mean shift"
# The last step into the data's domain, screened on the default: its draws floored at 0 only,
# against floored and then each gene's zeros matched, or the cells' own zeros kept.
for rule in ("matched", "kept", "kept_mean"):
    BLENDS[f"{DEFAULT_CANDIDATE}, zeros {rule}"] = {**BLENDS[DEFAULT_CANDIDATE], "zeros": rule}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The tuning grid's own flags."""
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jobs", type=int, default=1, help="processes (1 thread each if >1)")
    parser.add_argument("--keep-models", type=Path, help="save models here (and reuse them)")
    parser.add_argument("--candidates", nargs="+", help="score only these (default: all)")


def is_count_config(config: str) -> bool:
    """Whether a configuration models counts (trained and scored on the count form)."""
    return CONFIGS[config][0].get("recon_loss", "mse") != "mse"


def candidates(config: str, only: list[str] | None = None) -> dict[str, dict | None]:
    """The ``predict`` options of the candidates a configuration is scored with (``only``)."""
    every = COUNT_PREDICTORS if is_count_config(config) else {**PREDICTORS, **BLENDS}
    return {name: every[name] for name in only or every if name in every}


def train_config(
    task: HoldOut, config: str, seed: int, layer: str | None, max_epochs: int | None = None
) -> TRVAE:
    """A model of one configuration, trained on the task's training cells."""
    settings, steps = CONFIGS[config]
    if max_epochs is not None:
        epochs = max_epochs
    elif steps is None:
        epochs = get_max_epochs_heuristic(task.train.n_obs, epochs_cap=60)
    else:
        per_epoch = math.ceil(0.9 * task.train.n_obs / 128)  # default split and batch size
        epochs = math.ceil(steps / per_epoch)
    return train(task.train, seed, epochs, layer, **settings)[0]


def trained(
    task: HoldOut, config: str, seed: int, layer, saved: Path | None, max_epochs: int | None
) -> tuple:
    """The configuration's model and its training seconds, loaded from ``saved`` if there."""
    if saved is not None and (saved / "seconds.json").exists():
        seconds = json.loads((saved / "seconds.json").read_text())["train_seconds"]
        return TRVAE.load(saved, task.train), seconds
    start = time.perf_counter()
    model = train_config(task, config, seed, layer, max_epochs)
    seconds = time.perf_counter() - start
    if saved is not None:  # to score other predictors later without training again
        model.save(saved, overwrite=True)
        (saved / "seconds.json").write_text(json.dumps({"train_seconds": seconds}))
    return model, seconds


def run_one(
    config: str,
    dataset: str,
    group: str,
    seed: int,
    keep_models: Path | None = None,
    scored: frozenset = frozenset(),
    max_epochs: int | None = None,
    only: tuple[str, ...] | None = None,
) -> list[dict]:
    """Train (or load) one configuration's model of one task; score what is not in ``scored``."""
    counts = is_count_config(config)
    task = hold_out(form_data(dataset, "counts" if counts else "log")[0], group)
    layer = "counts" if counts else None
    saved = None if keep_models is None else keep_models / config / f"{dataset}_{group}_{seed}"
    model, seconds = trained(task, config, seed, layer, saved, max_epochs)
    key = {"config": config, "dataset": dataset, "group": group, "seed": seed}
    shift = {"mean shift": None} if "mean shift" not in scored else {}
    chosen = {**shift, **{k: v for k, v in candidates(config, only).items() if k not in scored}}

    key["train_seconds"] = round(seconds, 1)
    return [  # predicted and scored one at a time
        {**key, "predictor": name, **scores(predicted, task.real, task, 0)}
        for name, predicted in _predictions(model, task, seed, counts, chosen)
    ]


def _predictions(model: TRVAE, task: HoldOut, seed: int, counts: bool, chosen: dict):
    """``(name, predicted)`` of each chosen candidate, one at a time (mean shift: the task's)."""
    for name, options in chosen.items():
        if name == "mean shift":
            yield name, task.mean_shift
        else:
            yield name, prediction(model, task, seed, counts, options)


def summarise(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, str] | None]:
    """Per (configuration, predictor): the selection rule's numbers, and the winner."""
    task = ["config", "dataset", "group"]
    if "zero_fraction" not in frame:  # rows scored before the zeros were
        frame = frame.assign(zero_fraction=float("nan"))
    baseline = frame[frame.predictor == "mean shift"].set_index(task)
    joined = frame.join(baseline[["r2_mean_deg", "change_r_deg"]], on=task, rsuffix="_ms")
    joined["beats_mean_shift"] = (joined.r2_mean_deg > joined.r2_mean_deg_ms) & (
        joined.change_r_deg > joined.change_r_deg_ms
    )
    joined["score"] = (joined.r2_mean_deg + joined.change_r_deg) / 2
    by_dataset = joined.groupby(["config", "predictor", "dataset"]).agg(
        score=("score", "mean"),
        r2_mean_deg=("r2_mean_deg", "mean"),
        change_r_deg=("change_r_deg", "mean"),
        r2_var_all=("r2_var_all", "mean"),
        zeros=("zero_fraction", "mean"),
        tasks=("group", "nunique"),
    )
    table = by_dataset.unstack("dataset")
    table.columns = [f"{metric} {dataset}" for metric, dataset in table.columns]
    pairs = ["config", "predictor"]
    table["share_beating_mean_shift"] = joined.groupby(pairs)["beats_mean_shift"].mean()
    # Rounded: expected values and draws with the same means differ only by float noise.
    table["mean_score"] = by_dataset["score"].groupby(pairs).mean().round(4)
    table["mean_r2_var"] = by_dataset["r2_var_all"].groupby(pairs).mean()
    n_tasks = frame.groupby(["dataset"]).group.nunique().sum()
    complete = by_dataset["tasks"].groupby(pairs).sum() == n_tasks
    ranked = table[complete & (table.index.get_level_values("predictor") != "mean shift")]
    ranked = ranked.sort_values(RANKING, ascending=False)
    return table, ranked.index[0] if len(ranked) else None


def write_summary(frame: pd.DataFrame, path: Path) -> None:
    """The summary tables, best first, with training times and the chosen pair, per form."""
    lines = [
        "Tuning tasks only (`python -m benchmarks tune_defaults`); seeds "
        f"{', '.join(map(str, sorted(frame.seed.unique())))}. 'beats mean shift (both)' is the "
        "share of tasks where the predictor beats mean shift on R² of the top-100-DEG means "
        "and on the change correlation; 'score' is the mean over datasets of their average; "
        "'zeros' is the share of predicted values that are 0.",
    ]
    counts = frame.config.map(is_count_config)
    for title, part in (("Log form (`mse`)", frame[~counts]), ("Count form", frame[counts])):
        if len(part):
            lines += ["", f"### {title}", "", *summary_lines(part)]
    path.write_text("\n".join(lines) + "\n")


def summary_lines(frame: pd.DataFrame) -> list[str]:
    """One form's table, best first, with training times and the pair the rule chooses."""
    table, best = summarise(frame)
    datasets = sorted(frame.dataset.unique())
    keys = ("r2_mean_deg", "change_r_deg", "r2_var_all", "zeros")
    header = ["configuration", "predictor", "beats mean shift (both)", "score"] + [
        f"{d} {name}" for d in datasets for name in ("R² DEG", "change r", "R² var", "zeros")
    ]
    rows = [
        [config, predictor, f"{row.share_beating_mean_shift:.2f}", f"{row.mean_score:.3f}"]
        + [f"{row[f'{key} {d}']:.3f}" for d in datasets for key in keys]
        for (config, predictor), row in table.sort_values(RANKING, ascending=False).iterrows()
    ]
    seconds = frame.groupby(["config"]).train_seconds.mean()
    lines = [*markdown(header, rows), "", "Mean training time per task (s): "]
    lines += [f"- {config}: {value:.0f}" for config, value in seconds.items()]
    if best is not None:
        lines += ["", f"Chosen by the rule: **{best[0]}** with **{best[1]}**."]
    return lines


def run(args: argparse.Namespace) -> None:
    """Run the tuning grid (resumable) and write its summary."""
    rows_path = args.out / "tune_defaults.jsonl"
    scored: dict[tuple, set] = {}  # (config, dataset, group, seed) -> predictors scored
    for line in rows_path.read_text().splitlines() if rows_path.exists() else []:
        row = json.loads(line)
        key = (row["config"], row["dataset"], row["group"], row["seed"])
        scored.setdefault(key, set()).add(row["predictor"])
    runs = [
        (config, task.dataset, task.group, seed)
        for config in args.configs
        for task in tasks("tuning", args.datasets)
        for seed in args.seeds
        if not {"mean shift", *candidates(config, args.candidates)}
        <= scored.get((config, task.dataset, task.group, seed), set())
    ]
    options = {
        key: (args.keep_models, frozenset(scored.get(key, ())), args.max_epochs, args.candidates)
        for key in runs
    }
    if args.jobs == 1:
        done = ((key, run_one(*key, *options[key])) for key in runs)
    else:
        torch.set_num_threads(1)  # the workers inherit it: one thread per process
        pool = ProcessPoolExecutor(max_workers=args.jobs)
        futures = {pool.submit(run_one, *key, *options[key]): key for key in runs}
        done = ((futures[future], future.result()) for future in as_completed(futures))
    for key, rows in done:
        with open(rows_path, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        print("done:", *key, flush=True)
    write_summary(pd.read_json(rows_path, lines=True), args.out / "tune_defaults.md")
    print((args.out / "tune_defaults.md").read_text())
