"""Cross-donor transfer: one donor's stimulated cells of a cell type, from its controls.

On muscat's Kang example (conditions donor x stimulus), each reporting task holds out donor D's
stimulated cells of type T; trVAE (``nb`` and ``zinb``, joint and additive condition encodings,
and a query mapped onto the other donor's reference) is trained on the counts of all other
cells and predicts them from D's control cells of T; baselines: control unchanged, the mean
shift within D, the other donor's response. Scored on ``log1p(counts / library * 1e4)``.

Writes ``cross_donor.csv`` (one row per donor, cell type, likelihood, method, seed and metric)
and ``cross_donor.md``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import anndata as ad
import numpy as np
import pandas as pd
import torch

from benchmarks.data import CONTROL, DATASETS, RESULTS, STIMULATED, dense
from benchmarks.results import Rows, markdown, merge_runs, method_tables
from benchmarks.runners import predict, train
from benchmarks.scoring import scores
from benchmarks.tasks import tasks
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut
from trvae_scvi.metrics import mean_expression, top_degs

DEFAULTS = {"seeds": [0, 1, 2], "max_epochs": None, "out": RESULTS, "n_boot": 0, "merge": None}
DEFAULT = "trVAE default"
CROSS_DONOR = "trVAE default, other donor as reference"
SAME_TYPE = "trVAE default, other donor's same type as reference"
TRANSFER = "trVAE transfer (published)"
QUERY = "trVAE query-mapped"
ADDITIVE_METHODS = ("trVAE default, additive conditions", "trVAE transfer, additive conditions")
ADDITIVE_METHODS += ("trVAE calibrated on the other donor's same type, additive",)
OURS = (DEFAULT, CROSS_DONOR, SAME_TYPE, TRANSFER, QUERY, *ADDITIVE_METHODS)
UNCHANGED = "control unchanged"
DONOR_SHIFT = "mean shift (donor)"
OTHER_DONOR = "other donor's response"
SHIFT_BASELINES = (DONOR_SHIFT, OTHER_DONOR)
COLUMNS = ["donor", "cell_type", "likelihood", "method", "seed", "metric", "value", "seconds"]
CONDITIONS = ["donor", "stimulus"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cross-donor benchmark's own flags."""
    parser.add_argument("--likelihoods", nargs="+", default=["nb", "zinb"], choices=["nb", "zinb"])
    donors, types = zip(*(g.split("/") for g in DATASETS["muscat"].reporting_groups), strict=True)
    for flag, values in (("--donors", donors), ("--cell-types", types)):
        values = list(dict.fromkeys(values))
        parser.add_argument(flag, nargs="+", default=values, choices=values)
    encodings = ["joint", "additive"]
    parser.add_argument("--encodings", nargs="+", default=encodings, choices=encodings)


def make_task(
    adata: ad.AnnData, donor: str, cell_type: str, n_degs: int = 100
) -> tuple[HoldOut, dict[str, np.ndarray]]:
    """One donor's stimulated cells of one cell type held out, and the baselines by name.

    The task's ``mean_shift`` is the within-donor mean shift and ``reference_indices`` the
    donor's other cell types.
    """
    donors = adata.obs["donor"].astype(str).to_numpy()
    types = adata.obs["cell_type"].astype(str).to_numpy()
    stimulated = adata.obs["stimulus"].astype(str).to_numpy() == STIMULATED
    group = (donors == donor) & (types == cell_type)
    held_out = group & stimulated
    if held_out.sum() < 2:
        raise ValueError(f"donor {donor}, {cell_type!r}: {int(held_out.sum())} stimulated cells")
    degs = top_degs(adata[group], "stimulus", STIMULATED, CONTROL, n_genes=n_degs)
    train_cells = adata[~held_out].copy()
    own_donor, own_type = donors[~held_out] == donor, types[~held_out] == cell_type
    stimulated = stimulated[~held_out]
    control_indices = np.flatnonzero(own_donor & own_type & ~stimulated)

    def shift(rows: np.ndarray) -> np.ndarray:  # mean stimulated - control of training rows
        x = train_cells.X
        return mean_expression(x[rows & stimulated]) - mean_expression(x[rows & ~stimulated])

    control = dense(train_cells.X[control_indices])
    task = HoldOut(
        train=train_cells,
        control_indices=control_indices,
        reference_indices=np.flatnonzero(own_donor & ~own_type),
        control=control,
        real=dense(adata.X[held_out]),
        mean_shift=(control + shift(own_donor & ~own_type)).astype(np.float32),
        deg_mask=np.asarray(adata.var_names.isin(degs)),
    )
    other_donor = (control + shift(~own_donor & own_type)).astype(np.float32)
    return task, {UNCHANGED: control, DONOR_SHIFT: task.mean_shift, OTHER_DONOR: other_donor}


def methods(task: HoldOut, other: str, cell_type: str, encoding: str) -> dict[str, dict]:
    """``predict`` options of each method of a model with ``encoding``."""
    other_donor = {"reference_conditions": [(other, CONTROL), (other, STIMULATED)]}
    obs = task.train.obs
    same = (obs["donor"].astype(str) == other) & (obs["cell_type"].astype(str) == cell_type)
    same_type = {**other_donor, "reference_indices": np.flatnonzero(same)}
    if encoding == "additive":
        options = ({}, {"method": "transfer"}, {**same_type, "method": "calibrated"})
        return dict(zip(ADDITIVE_METHODS, options, strict=True))
    transfer = {"method": "transfer"}
    return {DEFAULT: {}, CROSS_DONOR: other_donor, SAME_TYPE: same_type, TRANSFER: transfer}


def run_models(task: HoldOut, key: list[str], seed: int, args):
    """Train trVAE on one task (donor, cell type, likelihood); yield its methods' predictions."""
    donor, cell_type, likelihood = key
    other = next(d for d in task.train.obs["donor"].astype(str).unique() if d != donor)
    target = (donor, STIMULATED)
    for encoding in args.encodings:
        settings = {"recon_loss": likelihood, "condition_encoding": encoding}
        model, trained = train(task.train, seed, args.max_epochs, "counts", CONDITIONS, **settings)
        # No reseed before a prediction: its draws follow the training's and the previous
        # predictions', as when the results were made.
        for method, options in methods(task, other, cell_type, encoding).items():
            start = time.perf_counter()
            predicted = predict(model, task.control_indices, None, True, target, **options)
            yield method, predicted, trained + time.perf_counter() - start
        if likelihood == "nb" and encoding == "joint":
            yield QUERY, *query_mapped(task, other, target, seed, args.max_epochs)


def query_mapped(task: HoldOut, other: str, target: tuple, seed: int, max_epochs) -> tuple:
    """The donor's cells mapped onto the other donor's reference: prediction, seconds (query)."""
    from_other = (task.train.obs["donor"].astype(str) == other).to_numpy()
    cells = task.train[from_other].copy()
    reference = train(cells, seed, max_epochs, "counts", CONDITIONS, recon_loss="nb")[0]
    control = np.searchsorted(np.flatnonzero(~from_other), task.control_indices)
    start = time.perf_counter()
    query = TRVAE.load_query_data(task.train[~from_other].copy(), reference)
    query.train(max_epochs=max_epochs, enable_progress_bar=False)
    return predict(query, control, None, True, target), time.perf_counter() - start


def run(args: argparse.Namespace) -> None:
    """Run the cross-donor benchmark (or only rebuild its table with ``--merge``)."""
    start, out = time.perf_counter(), args.out
    if args.merge:  # runs of parts, one table; a later file's rows replace an earlier one's
        frame = merge_runs(args.merge, COLUMNS[:6], out / "cross_donor.csv")
        return write_table(frame, out / "cross_donor.md", None)
    adata = DATASETS["muscat"].load()
    rows = Rows(out / "cross_donor.csv", COLUMNS)
    for donor, cell_type in (t.group.split("/") for t in tasks("reporting", ["muscat"])):
        if donor not in args.donors or cell_type not in args.cell_types:
            continue
        task, baselines = make_task(adata, donor, cell_type)
        fixed = {m: scores(p, task.real, task, args.n_boot) for m, p in baselines.items()}
        for likelihood, seed in itertools.product(args.likelihoods, args.seeds):
            key = [donor, cell_type, likelihood]
            for method, values in fixed.items():
                rows.add(key, method, seed, values, 0.0)
            for method, predicted, seconds in run_models(task, key, seed, args):
                values = scores(predicted, task.real, task, args.n_boot)
                rows.add(key, method, seed, values, seconds)
            print(f"donor {donor} {cell_type} {likelihood} seed {seed} done", flush=True)
    write_table(rows.frame(), out / "cross_donor.md", time.perf_counter() - start)


def write_table(frame: pd.DataFrame, path, wall_seconds: float | None) -> None:
    """Markdown: per likelihood, per cell type and averaged; the targets; the wall time."""
    seeds = ", ".join(map(str, sorted(frame.seed.unique())))
    donors = ", ".join(sorted(frame.donor.astype(str).unique()))
    lines = [
        "Cross-donor transfer on muscat's Kang 2018 example (`python -m benchmarks cross_donor`): "
        "donor D's stimulated cells of one cell type held out, predicted from D's control cells "
        "of that type; conditions are donor x stimulus. "
        f"Donors {donors}; seeds {seeds}; values are means over seeds and donors. "
        "'s' is training plus prediction wall time (0 for baselines). Scored on "
        "log1p(counts / library * 1e4); top-100 DEGs of the type's real stimulated vs control "
        "cells in the held-out donor. Zeros and out of domain (< 0) are shares of the predicted "
        "values (of the real ones).",
    ]
    index = ["likelihood", "cell_type", "method"]
    wide = frame.pivot_table(index=index, columns="metric", values="value")
    seconds = frame.groupby(index)["seconds"].mean()
    for likelihood, part in wide.groupby(level="likelihood"):
        part = part.droplevel("likelihood")
        n_types = part.index.get_level_values("cell_type").nunique()
        title = f"Average over the {n_types} cell types ({likelihood}):"
        lines += ["", f"## recon_loss={likelihood!r}", ""]
        lines += method_tables(part, seconds[likelihood], "cell type", title)
        lines += ["", *per_donor(frame[frame.likelihood == likelihood])]
    lines += ["", *targets(wide), "", *timings(frame, wall_seconds)]
    path.write_text("\n".join(lines) + "\n")


def per_donor(frame: pd.DataFrame) -> list[str]:
    """R² of the DEG means and change r per donor (means over seeds)."""
    frame = frame.assign(donor=frame.donor.astype(str))  # read back from a CSV as numbers
    wide = frame[frame.metric.isin(["r2_mean_deg", "change_r_deg"])].pivot_table(
        index=["cell_type", "method"], columns=["metric", "donor"], values="value"
    )
    donors = sorted(frame.donor.unique())

    def cell(row, d: str) -> str:
        r2, change = (row.get((metric, d), np.nan) for metric in ("r2_mean_deg", "change_r_deg"))
        return f"{r2:.3f} / {change:.3f}"

    rows = [[*key, *(cell(row, d) for d in donors)] for key, row in wide.iterrows()]
    header = ["cell type", "method", *(f"donor {d}" for d in donors)]
    return ["Per donor (R² mean top-100 DEGs / change r top-100):", "", *markdown(header, rows)]


def _wins(part: pd.DataFrame, likelihood: str, lines: list[str]) -> dict:
    """Per (ours, baseline): the cell types won on both scores; a table row per pair."""
    names = part.index.get_level_values("method")
    wins = {}
    for ours, other in itertools.product(OURS, (UNCHANGED, *SHIFT_BASELINES)):
        if ours in names and other in names:
            own, theirs = part.xs(ours, level="method"), part.xs(other, level="method")
            r2 = own.r2_mean_deg > theirs.r2_mean_deg
            change = own.change_r_deg > theirs.change_r_deg
            wins[ours, other], n = r2 & change, len(own)
            lines.append(
                f"| {likelihood} | {ours} | {other} | {int((r2 & change).sum())}/{n} "
                f"| {int(r2.sum())}/{n} | {int(change.sum())}/{n} |"
            )
    return wins


def targets(wide: pd.DataFrame) -> list[str]:
    """Cell types won by our methods over each baseline, and the target of the default."""
    lines = [
        "## Targets (means over seeds and donors, per cell type)",
        "",
        "Target: `trVAE default` beats both the within-donor mean shift and the other donor's "
        "response on both R² mean top-100 DEGs and change r top-100 in at least 4 of 5 cell "
        "types, for each likelihood.",
        "",
        "| likelihood | ours | compared with | types won on both | on R² | on change r |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for likelihood, part in wide.groupby(level="likelihood"):
        part = part.droplevel("likelihood")
        wins = _wins(part, likelihood, lines)
        for ours in (DEFAULT, CROSS_DONOR, SAME_TYPE, *ADDITIVE_METHODS):
            if all((ours, other) in wins for other in SHIFT_BASELINES):
                both = wins[ours, DONOR_SHIFT] & wins[ours, OTHER_DONOR]
                won, n = int(both.sum()), len(both)
                needed = int(np.ceil(0.8 * n))
                verdicts.append(
                    f"- **{likelihood}**: `{ours}` beats both shift baselines on both scores in "
                    f"{won}/{n} cell types ({', '.join(both.index[both]) or 'none'}); target "
                    f"{needed}/{n}: **{'met' if won >= needed else 'not met'}**."
                )
        names = part.index.get_level_values("method")
        if QUERY in names and DEFAULT in names:
            mapped = part.xs(QUERY, level="method").r2_mean_deg
            full = part.xs(DEFAULT, level="method").r2_mean_deg
            verdicts.append(
                f"- **{likelihood}**: `{QUERY}` R² mean top-100 DEGs {mapped.mean():.3f} against "
                f"{full.mean():.3f} for the model trained on everything (difference "
                f"{mapped.mean() - full.mean():+.3f}, largest per cell type "
                f"{(mapped - full).abs().max():.3f}; target: within 0.02)."
            )
    return [*lines, "", *verdicts]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def timings(frame: pd.DataFrame, wall_seconds: float | None) -> list[str]:
    """Wall time of the models (the largest of their methods') and of the whole run."""
    ours = frame[frame.method.isin(OURS) & (frame.method != QUERY)]
    model = np.where(ours.method.isin(ADDITIVE_METHODS), "additive", "joint")
    keys = ["likelihood", "seed", "donor", "cell_type"]
    per_model = ours.assign(model=model).groupby([*keys, "model"])["seconds"].max()
    per_seed = per_model.groupby(level=["likelihood", "seed", "model"]).sum()
    lines = [
        "## Wall time",
        "",
        "Training plus predictions, per likelihood, seed and condition encoding (all tasks of "
        "the run): "
        + ", ".join(f"{lk} seed {s} {m}: {_duration(t)}" for (lk, s, m), t in per_seed.items())
        + ".",
    ]
    if wall_seconds is not None:  # a run, not a merge of runs made with other thread counts
        lines += [
            "",
            "Wall time of the whole run (from loading the data, imports excluded): "
            f"{_duration(wall_seconds)}; {torch.get_num_threads()} torch CPU threads.",
        ]
    return lines
