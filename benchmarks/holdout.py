"""Held-out perturbation responses on the reporting tasks, with the package's defaults.

Each reporting task (:mod:`benchmarks.tasks`) holds out one group's perturbed cells; every
method predicts them from the group's control cells on the same split and seed: baselines
(noise ceiling, control unchanged, mean shift), trVAE's predictors (with and without
``calibrate_predictor``), the ablations MMD on z and beta 0, and peers whose predictions are
under ``--peers`` (``benchmarks/peers``). Forms: ``log`` (``mse`` on log values), ``counts``
(``nb``, scored on ``layers["log_normalized"]``).

Writes ``holdout.csv`` (one row per dataset, form, group, method, seed and metric),
``holdout.md`` and ``holdout_<dataset>_<form>_<group>.png`` (default prediction, first seed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

import trvae_scvi
from benchmarks.data import RESULTS, STIMULATED, form_data
from benchmarks.results import Rows, markdown, merge_runs, method_tables
from benchmarks.runners import PEERS, PEERS_DIR, baselines, peer_predictions, prediction, pyplot
from benchmarks.runners import train as train_model
from benchmarks.scoring import scores
from benchmarks.tasks import tasks
from trvae_scvi.benchmarking import HoldOut, hold_out

DEFAULTS = dict(datasets=["kang", "glioblastoma"], seeds=[0, 1, 2], max_epochs=None)
DEFAULTS.update(out=RESULTS, n_boot=0, merge=None)
COLUMNS = ["dataset", "form", "group", "method", "seed", "metric", "value", "seconds"]
DEFAULT = "trVAE default"
EXPECTED = f"{DEFAULT}, expected (sample=False)"
CALIBRATED = "trVAE calibrated trust (calibrate_predictor)"
# The inner estimate of the calibrated prediction, stored beside its realised scores.
ESTIMATES = {f"inner_{k}": f"expected_{k}" for k in ("r2_mean_deg", "change_r_deg")}
UNFLOORED = f"{DEFAULT}, unfloored (as version 0.2)"
NEURON_EDIT = {"method": "neuron_edit"}  # alone, shrunk 0.25 (the count models' default)
ABLATIONS = {"MMD on z (version 0.3's)": {"mmd_on": "z"}, "CVAE (beta 0)": {"beta": 0.0}}
INDEX = ["dataset", "form", "group", "method"]
# The default's draws with each other rule for zeros (log form; predict's ``zeros``).
RULES = ("matched", "kept", "kept_mean")
ZERO_RULES = {f"{DEFAULT}, zeros={rule!r}": {"zeros": rule} for rule in RULES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The holdout benchmark's own flags."""
    parser.add_argument("--forms", nargs="+", default=["log", "counts"], choices=["log", "counts"])
    parser.add_argument("--groups", nargs="+", default=None, help="default: all reporting ones")
    parser.add_argument("--peers", type=Path, default=PEERS_DIR, help="peer predictions, if any")
    parser.add_argument("--peers-only", action="store_true", help="score only the peers")
    parser.add_argument("--no-ablations", action="store_true", help="skip MMD on z and beta 0")
    parser.add_argument("--no-calibration", action="store_true", help="skip calibrate_predictor")


def methods(counts: bool) -> dict[str, dict | None]:
    """``predict`` options of each of our methods (``None``: the published transfer)."""
    return {
        DEFAULT: {},
        EXPECTED: {"sample": False},
        **({} if counts else ZERO_RULES),
        **({} if counts else {"trVAE NeuronEdit (y), shrunk 0.25": NEURON_EDIT}),
        "trVAE calibrated": {"method": "calibrated"},
        "trVAE transfer (published)": None,
        "trVAE transfer, sampled": {"method": "transfer"},
        "trVAE latent shift": {"method": "latent_shift", "sample": False},
    }


def run_task(task: HoldOut, settings: dict, layer: str | None, seed: int, args):
    """``(method, predicted, seconds)`` of the baselines and every method of ours."""
    yield from baselines(task, seed)
    counts = layer is not None
    model, seconds = train_model(task.train, seed, args.max_epochs, layer, **settings)
    for name, options in methods(counts).items():
        start = time.perf_counter()
        predicted = prediction(model, task, seed, counts, options)
        yield name, predicted, seconds + time.perf_counter() - start
    if not args.no_calibration:
        yield calibrated(model, task, seed, counts, seconds)
    if not counts:  # the domain's diagnostic: the default before its floor at 0
        model.non_negative_data_ = False
        yield UNFLOORED, prediction(model, task, seed, counts, {}), seconds
        model.non_negative_data_ = True
    for name, extra in {} if args.no_ablations else ABLATIONS.items():
        model, seconds = train_model(task.train, seed, args.max_epochs, layer, **settings, **extra)
        for suffix, options in (("default predictor", {}), ("transfer", None)):
            yield f"{name}, {suffix}", prediction(model, task, seed, counts, options), seconds


def calibrated(model, task: HoldOut, seed: int, counts: bool, seconds: float) -> tuple:
    """The default predictor with the shrinkage learnt on the training cells, and its estimate."""
    start = time.perf_counter()
    group = task.train.obs.cell_type.iloc[task.control_indices[0]]
    model.calibrate_predictor("cell_type", STIMULATED, exclude=[group], enable_progress_bar=False)
    predicted = prediction(model, task, seed, counts, {})
    calibration = model.predictor_calibration_
    estimate = {name: calibration[key] for name, key in ESTIMATES.items()}
    estimate["calibrated_shrinkage"] = calibration["shrinkage"]
    model.predictor_calibration_ = None
    return CALIBRATED, predicted, seconds + time.perf_counter() - start, estimate


def run(args: argparse.Namespace) -> None:
    """Run the reporting benchmark (or only rebuild its table with ``--merge``)."""
    if args.merge:  # a rerun replaces what an earlier file holds of the same run and metric
        frame = merge_runs(args.merge, COLUMNS[:6], args.out / "holdout.csv")
        return write_table(frame, args.out / "holdout.md", args.peers)
    rows = Rows(args.out / "holdout.csv", COLUMNS)
    for dataset, form in itertools.product(args.datasets, args.forms):
        adata, settings, layer = form_data(dataset, form)
        for group in (t.group for t in tasks("reporting", [dataset], args.groups)):
            task = hold_out(adata, group)
            for seed in args.seeds:
                own = [] if args.peers_only else run_task(task, settings, layer, seed, args)
                peers = peer_predictions(task, dataset, group, seed, args.peers)
                peers = peers if form == "log" else []
                for method, predicted, seconds, *estimate in itertools.chain(own, peers):
                    real = task.real
                    if isinstance(predicted, tuple):  # the ceiling: half against half
                        predicted, real = predicted
                    if method == DEFAULT and seed == args.seeds[0]:
                        path = args.out / f"holdout_{dataset}_{form}_{group}.png"
                        plot(predicted, task, f"{dataset} {group} ({form})", path)
                    values = {**scores(predicted, real, task, args.n_boot), **dict(*estimate)}
                    rows.add([dataset, form, group], method, seed, values, seconds)
                print(f"{dataset} {form} {group} seed {seed} done", flush=True)
    write_table(rows.frame(), args.out / "holdout.md", args.peers)


def _seeds(seeds) -> str:
    return ", ".join(map(str, sorted(seeds)))


def write_table(frame: pd.DataFrame, path: Path, peers_dir: Path) -> None:
    """Markdown: per dataset and form, per group and averaged; the targets; timings; peers."""
    lines = [
        "Reporting tasks only: no default was chosen on them (`python -m benchmarks "
        f"tune_defaults` uses other tasks). Seeds {_seeds(frame.seed.unique())}; "
        "means over seeds. 's' is training plus prediction wall time (0 for baselines); zeros "
        "and out of domain (< 0) are shares of the predicted values (of the real ones).",
    ]
    wide = frame.pivot_table(index=INDEX, columns="metric", values="value")
    seconds = frame.groupby(INDEX)["seconds"].mean()
    ran = frame.groupby(["dataset", "form"])["seed"].unique()
    for (dataset, form), part in wide.groupby(level=["dataset", "form"]):
        lines += ["", f"## {dataset}, {form} (seeds {_seeds(ran[dataset, form])})", ""]
        title = f"Average over {dataset} groups ({form}):"
        part = part.droplevel(["dataset", "form"])
        lines += method_tables(part, seconds[dataset, form], "group", title)
    per_method = frame.groupby(["dataset", "form", "method"])["seed"].unique()
    lines += [""] + [
        f"- {dataset} {form}, {method}: seed(s) {_seeds(seeds)} only."
        for (dataset, form, method), seeds in per_method.items()
        if set(seeds) != set(ran[dataset, form])
    ]
    peers = [
        f"- {method}: {', '.join(f'{k} {v}' for k, v in settings['versions'].items())}."
        for peer, method in PEERS.items()
        for settings_path in sorted(peers_dir.glob(f"*/{peer}/settings.json"))[:1]
        if method in set(frame.method)
        for settings in [json.loads(settings_path.read_text())]
    ]
    lines += ["", *targets(frame), "", *timings(frame)]
    if peers:
        lines += ["", "Peers, trained in their own virtual environments:", "", *peers]
    path.write_text("\n".join(lines) + "\n")


def _means(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["r2_mean_deg", "change_r_deg", "r2_var_all"]
    return rows.pivot_table(index=INDEX, columns="metric", values="value")[keys]


def _comparison(frame: pd.DataFrame, subject: str, other: str) -> str | None:
    """Tasks won by ``subject`` over ``other``, on the seeds both ran on each task."""
    keys = ["dataset", "form", "group", "seed"]
    runs = frame[frame.method == subject][keys].merge(frame[frame.method == other][keys])
    if runs.empty:
        return None
    both = frame.merge(runs.drop_duplicates())
    ours = _means(both[both.method == subject]).xs(subject, level="method")
    theirs = _means(both[both.method == other]).xs(other, level="method")
    shared = ours.index.intersection(theirs.index)
    ours, theirs = ours.loc[shared], theirs.loc[shared]
    r2, change = ours.r2_mean_deg > theirs.r2_mean_deg, ours.change_r_deg > theirs.change_r_deg
    averages = "; ".join(
        f"{d} {f}: {ours.xs((d, f)).r2_mean_deg.mean():.3f} vs "
        f"{theirs.xs((d, f)).r2_mean_deg.mean():.3f}, change r "
        f"{ours.xs((d, f)).change_r_deg.mean():.3f} vs {theirs.xs((d, f)).change_r_deg.mean():.3f}"
        for d, f in sorted({(d, f) for d, f, _ in shared})
    )
    n = len(shared)
    return (
        f"| {other} | {int((r2 & change).sum())}/{n} | {int(r2.sum())}/{n} "
        f"| {int(change.sum())}/{n} | {averages} |"
    )


def targets(frame: pd.DataFrame) -> list[str]:
    """The targets of the default and the calibrated predictor, on the seeds both ran."""
    means = _means(frame)
    names = means.index.get_level_values("method")
    if DEFAULT not in names:
        return []
    lines = []
    for subject in (DEFAULT, CALIBRATED) if CALIBRATED in names else (DEFAULT,):
        lines += [
            f"## Targets of `{subject}` (means over the seeds both methods ran)",
            "",
            "| compared with | tasks won on R² mean top-100 and change r | on R² | on change r "
            "| averages (ours vs theirs) per dataset, form |",
            "|---|---|---|---|---|",
        ]
        compared = [
            _comparison(frame, subject, other)
            for other in names.unique()
            if other != subject and not other.startswith("ceiling")
        ]
        lines += [line for line in compared if line is not None] + [""]
    if CALIBRATED in names:
        lines += estimate_lines(frame)
    if EXPECTED in names:
        own, expected = means.xs(DEFAULT, level="method"), means.xs(EXPECTED, level="method")
        baseline = means.xs("mean shift", level="method")
        shared = own.index.intersection(baseline.index)
        won = int((own.loc[shared, "r2_var_all"] >= baseline.loc[shared, "r2_var_all"]).sum())
        gap = (own.loc[shared, "r2_mean_deg"] - expected.loc[shared, "r2_mean_deg"]).abs().max()
        lines += [
            "",
            f"R² var all genes of `{DEFAULT}` (draws) at least mean shift's: {won}/{len(shared)} "
            f"tasks (target: 85%); largest gap between its R² mean top-100 and that of the "
            f"expected prediction (`sample=False`): {gap:.4f} (target: 0.005).",
        ]
    return lines


def estimate_lines(frame: pd.DataFrame) -> list[str]:
    """The calibration's inner estimate against the realised scores, per dataset and form."""
    keys = ["r2_mean_deg", "inner_r2_mean_deg", "change_r_deg", "inner_change_r_deg"]
    rows = frame[(frame.method == CALIBRATED) & frame.metric.isin([*keys, "calibrated_shrinkage"])]
    runs = rows.pivot_table(
        index=["dataset", "form", "group", "seed"], columns="metric", values="value"
    )
    table = [
        [
            f"{dataset} {form}",
            len(part),
            f"{part.calibrated_shrinkage.mean():.2f}",
            *(
                f"{part[f'inner_{k}'].mean():.3f} / {part[k].mean():.3f} / "
                f"{(part[f'inner_{k}'] - part[k]).abs().mean():.3f}"
                for k in ("r2_mean_deg", "change_r_deg")
            ),
        ]
        for (dataset, form), part in runs.groupby(level=["dataset", "form"])
    ]
    header = ["dataset, form", "runs", "mean shrinkage chosen"]
    header += [
        f"{k}: inner estimate / realised / mean absolute error" for k in ("R² DEG", "change r")
    ]
    return [
        f"The inner estimate of `{CALIBRATED}` (target: within 0.03 of the realised R² DEG, "
        "averaged over tasks), per run (task and seed):",
        "",
        *markdown(header, table),
    ]


def timings(frame: pd.DataFrame) -> list[str]:
    """Wall time per seed of the default model (training and its predictions) and ablations."""
    ours = frame[frame.method.str.startswith(("trVAE", *ABLATIONS))]
    per_run = ours.groupby(["dataset", "form", "group", "seed", "method"])["seconds"].first()
    per_run = per_run.unstack()

    def model_seconds(prefix: str) -> pd.Series:  # every row of a model's predictors has it
        return per_run[[m for m in per_run.columns if m.startswith(prefix)]].max(axis=1)

    ablations = sum(model_seconds(name).fillna(0) for name in ABLATIONS)
    minutes = pd.DataFrame({"default": model_seconds("trVAE"), "ablations": ablations}) / 60
    per_form = minutes.groupby(level=["seed", "form"]).sum()
    return [
        "Wall time per seed, every task and form in the tables above: "
        + "; ".join(
            f"seed {seed}: the default model {row.default:.1f} min (training and every "
            f"prediction of it; target 45 min; "
            + ", ".join(f"{form} {m:.1f}" for form, m in per_form.default[seed].items())
            + f"), the two ablations {row.ablations:.1f} min"
            for seed, row in minutes.groupby(level="seed").sum().iterrows()
        )
        + "."
    ]


def plot(predicted, task: HoldOut, title: str, path: Path) -> None:
    """Predicted vs real means (top DEGs) and variances (all genes) of the default predictor."""
    from anndata import AnnData

    plt = pyplot()
    predicted = AnnData(X=predicted, var=task.train.var[[]])
    real = AnnData(X=task.real, var=task.train.var[[]])
    genes = list(predicted.var_names[task.deg_mask])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    trvae_scvi.pl.predicted_vs_real(
        predicted, real, genes=genes, labels=genes[:10], title=f"{title} means", ax=axes[0]
    )
    trvae_scvi.pl.predicted_vs_real(
        predicted, real, statistic="var", title=f"{title} variances", ax=axes[1]
    )
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
