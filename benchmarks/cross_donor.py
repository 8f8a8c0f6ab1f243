"""Cross-donor transfer: one donor's stimulated cells of a cell type, predicted from its controls.

Data: muscat's Kang 2018 example (``shared/data/kang2018_pbmc_muscat_example.h5ad``): donors
101 and 107, each control and IFN-beta stimulated, 5 cell types, raw counts. The condition is
the donor x stimulus combination (4 conditions, ``condition_key=["donor", "stimulus"]``).

Each task holds out donor D's stimulated cells of cell type T. trVAE is trained on the counts
of all other cells (``recon_loss="nb"`` and ``"zinb"``, otherwise the package's defaults) and
predicts the held-out cells from D's control cells of T, with target condition
``(D, "stimulated")``:

- ``trVAE default``: ``predict()`` as it comes (NeuronEdit on the first decoder layer,
  shrinkage 0.25, with draws; its reference is D's other cell types);
- ``trVAE default, other donor as reference``: ``predict(reference_conditions=[(D', control),
  (D', stimulated)])``, the response measured in the other donor D' as the reference (its
  cells of every type), otherwise the defaults;
- ``trVAE default, other donor's same type as reference``: the same with the other donor's
  cells of type T only (``reference_indices``): the model maps T's measured response in D'
  onto D's control cells of T;
- ``trVAE transfer (published)``: ``method="transfer"``;
- ``trVAE default, additive conditions``, ``trVAE transfer, additive conditions`` and
  ``trVAE calibrated on the other donor's same type, additive``: a model with
  ``condition_encoding="additive"`` (donor and stimulus one-hots side by side, so the
  stimulus's weights are shared by the donors), otherwise the defaults, predicting with
  ``predict()``, ``method="transfer"``, and ``method="calibrated"`` with the other donor's
  cells of type T as reference (T's measured response there plus the model's difference
  between the two donors' responses);
- ``trVAE query-mapped`` (``nb`` only): a reference trained on the other donor's cells alone,
  this donor's training cells mapped onto it with ``TRVAE.load_query_data`` (its two
  conditions are new) and trained as a query, then ``predict()`` as it comes; to compare with
  ``trVAE default``, the model trained on everything.

Baselines, in the log space: control unchanged; mean shift within the donor (D's other cell
types' mean stimulated - control difference added to the control cells); the other donor's
response (T's mean stimulated - control difference in the other donor, added to the control
cells).

Everything is scored with ``holdout.scores`` on ``log1p(counts / library * 1e4)``
(``perturbation_data.count_form``; the predictions' ``layers["log_normalized"]``), the top-100
DEGs being those of T's real stimulated vs control cells in donor D.

Writes ``cross_donor.csv`` (one row per donor, cell type, likelihood, method, seed and metric)
and ``cross_donor.md`` (means over seeds and donors per cell type, averages, the targets and the
wall time) under ``--out``.

Usage::

    python benchmarks/cross_donor.py               # 2 donors x 5 types x nb, zinb x seeds 0 1 2
    python benchmarks/cross_donor.py --likelihoods nb --seeds 0       # a part of it
    python benchmarks/cross_donor.py --encodings additive              # additive models only
    python benchmarks/cross_donor.py --merge a.csv b.csv               # one table; b.csv wins
    # a quick check of the script (2 epochs, one task, 3 seeds, both likelihoods):
    python benchmarks/cross_donor.py --donors 101 --cell-types "B cells" --max-epochs 2 --out /tmp
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch
from holdout import KEYS, merge_runs, scores
from perturbation_data import SHARED, TARGET_SUM, count_form

from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut
from trvae_scvi.metrics import mean_expression, top_degs

MUSCAT = SHARED / "kang2018_pbmc_muscat_example.h5ad"
CONTROL, STIMULATED = "control", "stimulated"
DEFAULT = "trVAE default"
CROSS_DONOR = "trVAE default, other donor as reference"
SAME_TYPE = "trVAE default, other donor's same type as reference"
TRANSFER = "trVAE transfer (published)"
QUERY = "trVAE query-mapped"
ADDITIVE = "trVAE default, additive conditions"
ADDITIVE_TRANSFER = "trVAE transfer, additive conditions"
ADDITIVE_CALIBRATED = "trVAE calibrated on the other donor's same type, additive"
ADDITIVE_METHODS = (ADDITIVE, ADDITIVE_TRANSFER, ADDITIVE_CALIBRATED)
OURS = (DEFAULT, CROSS_DONOR, SAME_TYPE, TRANSFER, QUERY, *ADDITIVE_METHODS)
UNCHANGED = "control unchanged"
DONOR_SHIFT = "mean shift (donor)"
OTHER_DONOR = "other donor's response"
SHIFT_BASELINES = (DONOR_SHIFT, OTHER_DONOR)
COLUMNS = ["donor", "cell_type", "likelihood", "method", "seed", "metric", "value", "seconds"]


def load_muscat(path: Path = MUSCAT) -> ad.AnnData:
    """Muscat's example with ``donor`` and ``stimulus`` columns, counts and log values.

    Parameters
    ----------
    path
        The muscat ``.h5ad`` file (raw counts in ``X``).

    Returns
    -------
    anndata.AnnData
        Counts in ``layers["counts"]``, ``log1p(counts / library * 1e4)`` in ``X``;
        ``obs["donor"]`` ("101", "107") and ``obs["stimulus"]`` ("control", "stimulated").

    """
    adata = ad.read_h5ad(path)
    sample = adata.obs["sample_id"].astype(str)
    stimulus = adata.obs["condition"].astype(str)
    if not (sample.str.startswith("stim") == (stimulus == STIMULATED)).all():
        raise ValueError(f"{path}: obs['sample_id'] and obs['condition'] disagree")
    adata.obs["donor"] = sample.str.extract(r"(\d+)$", expand=False).astype("category")
    adata.obs["stimulus"] = stimulus.astype("category")
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    return count_form(adata)


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def make_task(
    adata: ad.AnnData, donor: str, cell_type: str, n_degs: int = 100
) -> tuple[HoldOut, dict[str, np.ndarray]]:
    """Hold out one donor's stimulated cells of one cell type.

    Parameters
    ----------
    adata
        From :func:`load_muscat`.
    donor, cell_type
        The held-out donor and cell type.
    n_degs
        Top DEGs (real stimulated vs control cells of the type in the donor) in ``deg_mask``.

    Returns
    -------
    tuple
        The task (``mean_shift`` is the within-donor mean shift, ``reference_indices`` the
        donor's other cell types in ``train``) and the baselines' predictions by name.

    """
    donors = adata.obs["donor"].astype(str).to_numpy()
    types = adata.obs["cell_type"].astype(str).to_numpy()
    stimulated = adata.obs["stimulus"].astype(str).to_numpy() == STIMULATED
    group = (donors == donor) & (types == cell_type)
    held_out = group & stimulated
    if held_out.sum() < 2:
        raise ValueError(f"donor {donor}, {cell_type!r}: {int(held_out.sum())} stimulated cells")
    degs = top_degs(adata[group], "stimulus", STIMULATED, CONTROL, n_genes=n_degs)
    train = adata[~held_out].copy()
    own_donor, own_type = donors[~held_out] == donor, types[~held_out] == cell_type
    stimulated = stimulated[~held_out]
    control_indices = np.flatnonzero(own_donor & own_type & ~stimulated)

    def shift(rows: np.ndarray) -> np.ndarray:
        """Mean stimulated minus mean control log values of the training cells ``rows``."""
        return mean_expression(train.X[rows & stimulated]) - mean_expression(
            train.X[rows & ~stimulated]
        )

    control = _dense(train.X[control_indices])
    task = HoldOut(
        train=train,
        control_indices=control_indices,
        reference_indices=np.flatnonzero(own_donor & ~own_type),
        control=control,
        real=_dense(adata.X[held_out]),
        mean_shift=(control + shift(own_donor & ~own_type)).astype(np.float32),
        deg_mask=np.asarray(adata.var_names.isin(degs)),
    )
    baselines = {
        UNCHANGED: control,
        DONOR_SHIFT: task.mean_shift,
        OTHER_DONOR: (control + shift(~own_donor & own_type)).astype(np.float32),
    }
    return task, baselines


def run_models(
    task: HoldOut,
    donor: str,
    cell_type: str,
    likelihood: str,
    seed: int,
    max_epochs: int | None,
    encoding: str = "joint",
):
    """Train trVAE on one task and yield ``(method, predicted log values, seconds)``.

    Parameters
    ----------
    task
        From :func:`make_task`.
    donor
        The held-out donor, whose stimulated condition is predicted.
    cell_type
        The held-out cell type.
    likelihood
        ``recon_loss`` of the model (``"nb"`` or ``"zinb"``).
    seed
        ``scvi.settings.seed`` for training and prediction.
    max_epochs
        Training epochs; ``None`` uses the model's default.
    encoding
        ``condition_encoding`` of the model: ``"joint"`` (the default, with the query-mapped
        model for ``nb``) or ``"additive"``.

    """
    scvi.settings.seed = seed
    TRVAE.setup_anndata(task.train, condition_key=["donor", "stimulus"], layer="counts")
    model = TRVAE(task.train, recon_loss=likelihood, condition_encoding=encoding)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    trained = time.perf_counter() - start
    other = next(d for d in task.train.obs["donor"].astype(str).unique() if d != donor)
    other_donor = {"reference_conditions": [(other, CONTROL), (other, STIMULATED)]}
    same_type = {
        **other_donor,
        "reference_indices": np.flatnonzero(
            (task.train.obs["donor"].astype(str) == other)
            & (task.train.obs["cell_type"].astype(str) == cell_type)
        ),
    }
    methods = {
        DEFAULT: {},
        # The response measured in the other donor, all its cell types (the held-out type's
        # there included), instead of this donor's other types; otherwise the defaults.
        CROSS_DONOR: other_donor,
        SAME_TYPE: same_type,
        TRANSFER: {"method": "transfer"},
    }
    if encoding == "additive":
        methods = {
            ADDITIVE: {},
            ADDITIVE_TRANSFER: {"method": "transfer"},
            ADDITIVE_CALIBRATED: {**same_type, "method": "calibrated"},
        }
    for method, options in methods.items():
        start = time.perf_counter()
        predicted = model.predict(
            indices=task.control_indices,
            target_condition=(donor, STIMULATED),
            cell_type_key="cell_type",
            target_sum=TARGET_SUM,
            **options,
        )
        yield method, predicted.layers["log_normalized"], trained + time.perf_counter() - start
    if likelihood == "nb" and encoding == "joint":
        yield QUERY, *query_mapped(task, donor, other, seed, max_epochs)


def query_mapped(task: HoldOut, donor: str, other: str, seed: int, max_epochs: int | None):
    """A reference trained on the other donor, this donor's cells mapped onto it as a query.

    Returns the default prediction of the held-out cells (log space) and the seconds of the
    query mapping (the reference's training not counted).
    """
    train = task.train
    from_other = (train.obs["donor"].astype(str) == other).to_numpy()
    reference = train[from_other].copy()
    scvi.settings.seed = seed
    TRVAE.setup_anndata(reference, condition_key=["donor", "stimulus"], layer="counts")
    reference_model = TRVAE(reference, recon_loss="nb")
    reference_model.train(max_epochs=max_epochs, enable_progress_bar=False)
    query = train[~from_other].copy()
    positions = np.flatnonzero(~from_other)
    control = np.searchsorted(positions, task.control_indices)
    start = time.perf_counter()
    query_model = TRVAE.load_query_data(query, reference_model)
    query_model.train(max_epochs=max_epochs, enable_progress_bar=False)
    predicted = query_model.predict(
        indices=control,
        target_condition=(donor, STIMULATED),
        cell_type_key="cell_type",
        target_sum=TARGET_SUM,
    )
    return predicted.layers["log_normalized"], time.perf_counter() - start


def write_table(frame: pd.DataFrame, path: Path, wall_seconds: float | None) -> None:
    """Markdown: per likelihood, per cell type and averaged; the targets; the wall time.

    Parameters
    ----------
    frame
        Rows with the columns of ``cross_donor.csv``.
    path
        Where to write.
    wall_seconds
        Wall time of the run, if known.

    """
    seeds = ", ".join(map(str, sorted(frame.seed.unique())))
    donors = ", ".join(sorted(frame.donor.astype(str).unique()))
    lines = [
        "Cross-donor transfer on muscat's Kang 2018 example (`benchmarks/cross_donor.py`): "
        "donor D's stimulated cells of one cell type held out, predicted from D's control cells "
        "of that type; conditions are donor x stimulus. "
        f"Donors {donors}; seeds {seeds}; values are means over seeds and donors. "
        "'s' is training plus prediction wall time (0 for baselines). Scored on "
        "log1p(counts / library * 1e4); top-100 DEGs of the type's real stimulated vs control "
        "cells in the held-out donor.",
    ]
    header = (
        "| cell type | method | R² mean top-100 DEGs | R² var all genes | change r top-100 "
        "| direction top-100 | energy distance | s |\n|---|---|---|---|---|---|---|---|"
    )
    wide = frame.pivot_table(
        index=["likelihood", "cell_type", "method"], columns="metric", values="value"
    )
    seconds = frame.groupby(["likelihood", "cell_type", "method"])["seconds"].mean()
    for likelihood, part in wide.groupby(level="likelihood"):
        part = part.droplevel("likelihood")
        lines += ["", f"## recon_loss={likelihood!r}", "", header]
        for (cell_type, method), row in part.iterrows():
            values = " | ".join(f"{row[k]:.3f}" for k in KEYS)
            s = seconds[likelihood, cell_type, method]
            lines.append(f"| {cell_type} | {method} | {values} | {s:.0f} |")
        average = part.groupby(level="method").mean()
        n_types = part.index.get_level_values("cell_type").nunique()
        lines += ["", f"Average over the {n_types} cell types ({likelihood}):", "", header]
        for method, row in average.iterrows():
            values = " | ".join(f"{row[k]:.3f}" for k in KEYS)
            lines.append(f"| all | {method} | {values} | |")
        lines += ["", *per_donor(frame[frame.likelihood == likelihood])]
    lines += ["", *targets(wide), "", *timings(frame, wall_seconds)]
    path.write_text("\n".join(lines) + "\n")


def per_donor(frame: pd.DataFrame) -> list[str]:
    """R² of the DEG means and change r per donor (means over seeds)."""
    frame = frame.assign(donor=frame.donor.astype(str))  # read back from a CSV as numbers
    wide = frame[frame.metric.isin(["r2_mean_deg", "change_r_deg"])].pivot_table(
        index=["cell_type", "method"], columns=["metric", "donor"], values="value"
    )
    donors = sorted(frame.donor.astype(str).unique())
    lines = [
        "Per donor (R² mean top-100 DEGs / change r top-100):",
        "",
        "| cell type | method | " + " | ".join(f"donor {d}" for d in donors) + " |",
        "|---|---|" + "---|" * len(donors),
    ]
    for (cell_type, method), row in wide.iterrows():
        cells = [
            f"{row.get(('r2_mean_deg', d), np.nan):.3f} / "
            f"{row.get(('change_r_deg', d), np.nan):.3f}"
            for d in donors
        ]
        lines.append(f"| {cell_type} | {method} | " + " | ".join(cells) + " |")
    return lines


def targets(wide: pd.DataFrame) -> list[str]:
    """Cell types won by our methods over each baseline, and the target of the default.

    Parameters
    ----------
    wide
        Means over seeds and donors, indexed by likelihood, cell type and method.

    Returns
    -------
    list[str]
        Markdown lines.

    """
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
        methods = part.index.get_level_values("method")
        wins = {}
        for ours, other in itertools.product(OURS, (UNCHANGED, *SHIFT_BASELINES)):
            if ours not in methods or other not in methods:
                continue
            own, theirs = part.xs(ours, level="method"), part.xs(other, level="method")
            r2 = own.r2_mean_deg > theirs.r2_mean_deg
            change = own.change_r_deg > theirs.change_r_deg
            wins[ours, other] = r2 & change
            n = len(own)
            lines.append(
                f"| {likelihood} | {ours} | {other} | {int((r2 & change).sum())}/{n} "
                f"| {int(r2.sum())}/{n} | {int(change.sum())}/{n} |"
            )
        for ours in (DEFAULT, CROSS_DONOR, SAME_TYPE, *ADDITIVE_METHODS):
            if not all((ours, other) in wins for other in SHIFT_BASELINES):
                continue
            both = wins[ours, DONOR_SHIFT] & wins[ours, OTHER_DONOR]
            won, n = int(both.sum()), len(both)
            needed = int(np.ceil(0.8 * n))
            verdict = "met" if won >= needed else "not met"
            names = ", ".join(both.index[both]) or "none"
            verdicts.append(
                f"- **{likelihood}**: `{ours}` beats both shift baselines on both scores in "
                f"{won}/{n} cell types ({names}); target {needed}/{n}: **{verdict}**."
            )
        if QUERY in methods and DEFAULT in methods:
            mapped = part.xs(QUERY, level="method").r2_mean_deg
            full = part.xs(DEFAULT, level="method").r2_mean_deg
            gap = mapped.mean() - full.mean()
            verdicts.append(
                f"- **{likelihood}**: `{QUERY}` R² mean top-100 DEGs {mapped.mean():.3f} against "
                f"{full.mean():.3f} for the model trained on everything (difference {gap:+.3f}, "
                f"largest per cell type {(mapped - full).abs().max():.3f}; target: within 0.02)."
            )
    return [*lines, "", *verdicts]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def timings(frame: pd.DataFrame, wall_seconds: float | None) -> list[str]:
    """Wall time of the models per likelihood and seed, and of the whole run.

    A method's seconds are its model's training plus its prediction, so each model's time is
    the largest of its methods'; the query mapping (timed without its reference) is left out.
    """
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


def main(argv: list[str] | None = None) -> None:
    """Run the cross-donor benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--likelihoods", nargs="+", default=["nb", "zinb"], choices=["nb", "zinb"])
    parser.add_argument("--cell-types", nargs="+", default=None, help="default: all 5")
    parser.add_argument("--donors", nargs="+", default=None, help="default: both")
    parser.add_argument(
        "--encodings", nargs="+", default=["joint", "additive"], choices=["joint", "additive"]
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's")
    parser.add_argument("--n-boot", type=int, default=0, help="bootstrap resamples")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--merge", nargs="+", metavar="CSV", help="only rebuild the table")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:  # runs of parts, one table; a later file's rows replace an earlier one's
        frame = merge_runs(args.merge, COLUMNS[:6])
        frame.to_csv(out / "cross_donor.csv", index=False)
        write_table(frame, out / "cross_donor.md", None)
        print((out / "cross_donor.md").read_text())
        return
    adata = load_muscat()
    donors = args.donors or sorted(adata.obs["donor"].astype(str).unique())
    cell_types = args.cell_types or sorted(adata.obs["cell_type"].astype(str).unique())
    for name, chosen, known in (
        ("donor", donors, adata.obs["donor"]),
        ("cell type", cell_types, adata.obs["cell_type"]),
    ):
        unknown = set(chosen) - set(known.astype(str))
        if unknown:
            raise SystemExit(f"unknown {name}(s) {sorted(unknown)}; known: {sorted(set(known))}")
    rows = []
    with open(out / "cross_donor.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for donor, cell_type in itertools.product(donors, cell_types):
            task, baselines = make_task(adata, donor, cell_type)
            baseline_scores = {
                method: scores(predicted, task.real, task, args.n_boot)
                for method, predicted in baselines.items()
            }
            for likelihood, seed in itertools.product(args.likelihoods, args.seeds):
                results = [(m, s, 0.0) for m, s in baseline_scores.items()]
                for encoding in args.encodings:
                    for method, predicted, seconds in run_models(
                        task, donor, cell_type, likelihood, seed, args.max_epochs, encoding
                    ):
                        results.append(
                            (method, scores(predicted, task.real, task, args.n_boot), seconds)
                        )
                for method, values, seconds in results:
                    for metric, value in values.items():
                        row = [donor, cell_type, likelihood, method, seed, metric, float(value)]
                        writer.writerow([*row, round(seconds, 2)])
                        rows.append([*row, round(seconds, 2)])
                handle.flush()
                print(f"donor {donor} {cell_type} {likelihood} seed {seed} done", flush=True)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_table(frame, out / "cross_donor.md", time.perf_counter() - start)
    print((out / "cross_donor.md").read_text())


if __name__ == "__main__":
    main()
