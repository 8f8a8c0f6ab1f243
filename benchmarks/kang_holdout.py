"""Out-of-distribution benchmark on the bundled Kang 2018 PBMC data (trVAE paper protocol).

Each cell type's stimulated cells are held out in turn; models are trained on the rest and
predict them from that type's control cells. Every method runs on the same split and seed:

- baselines: control unchanged, mean shift (control + mean stimulated - control difference of
  the other types), and the noise ceiling (one random half of the real stimulated cells scored
  against the other half);
- trVAE (default settings): ``transfer``, ``transfer`` with ``sample=True``, ``latent_shift``,
  ``neuron_edit`` on the MMD layer and on z;
- ablations, same settings otherwise: CVAE (``beta=0``) and MMD-CVAE (``mmd_on="z"``), transfer;
- peers, when their predictions are in ``--peers`` (``bash benchmarks/peers/run.sh`` trains them
  in their own virtual environments on the same splits and seeds): pertpy's scGen and scArches'
  TRVAE. Their scores are computed here, with the same code as ours.

Writes ``kang_holdout.csv`` (one row per cell type, method, seed and metric), ``kang_holdout.md``
(means over seeds) and ``kang_holdout_<cell type>.png`` (predicted vs real means and variances of
trVAE transfer, seed of the first run) under ``--out``.

The wall time of our own methods (training and prediction, all cell types and seeds) is written
at the end of the table.

Usage::

    bash benchmarks/peers/run.sh                            # peers, once (own venvs)
    python benchmarks/kang_holdout.py                       # 7 cell types x seeds 0 1 2
    python benchmarks/kang_holdout.py --cell-types NK --seeds 0
    python benchmarks/kang_holdout.py --peers-only --seeds 0 --out /tmp/peers   # peers alone
    python benchmarks/kang_holdout.py --merge a.csv b.csv      # one table from several runs
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

import trvae_scvi
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut, hold_out
from trvae_scvi.metrics import (
    bootstrap,
    change_correlation,
    direction_accuracy,
    energy_distance,
    r2_of_means,
    r2_of_variances,
)

PUBLISHED = (
    "Published (trVAE paper, Kang NK held out, trained on the larger scGen training split): "
    "R² of means / variances: trVAE 0.975 / 0.685, scGen 0.907 / 0.557, CVAE 0.705 / 0.320, "
    "MMD-CVAE 0.866 / 0.489."
)
ABLATIONS = {"CVAE transfer": {"beta": 0.0}, "MMD-CVAE transfer": {"mmd_on": "z"}}
PEERS = {"scgen": "scGen (pertpy)", "scarches_trvae": "scArches TRVAE"}
PEERS_DIR = Path(__file__).parent / "peers" / "predictions"


def scores(predicted: np.ndarray, real: np.ndarray, task: HoldOut, n_boot: int) -> dict:
    """All metrics of one prediction."""
    degs, control = task.deg_mask, task.control
    result = {
        "r2_mean_deg": r2_of_means(predicted[:, degs], real[:, degs]),
        "r2_mean_all": r2_of_means(predicted, real),
        "r2_var_deg": r2_of_variances(predicted[:, degs], real[:, degs]),
        "r2_var_all": r2_of_variances(predicted, real),
        "change_r_deg": change_correlation(predicted[:, degs], real[:, degs], control[:, degs]),
        "change_r_all": change_correlation(predicted, real, control),
        "direction_deg": direction_accuracy(predicted[:, degs], real[:, degs], control[:, degs]),
        "energy_distance": energy_distance(predicted, real),
    }
    if n_boot > 0:
        mean, sd = bootstrap(r2_of_means, predicted[:, degs], real[:, degs], n_resamples=n_boot)
        result["r2_mean_deg_boot_mean"], result["r2_mean_deg_boot_sd"] = mean, sd
    return result


def run_task(task: HoldOut, seed: int, max_epochs: int | None):
    """Yield ``(method, predicted, seconds, real)`` for every method on one task and seed."""
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(task.real))[: len(task.real) // 2]
    other = np.setdiff1d(np.arange(len(task.real)), half)
    yield "ceiling (half of real cells)", task.real[half], 0.0, task.real[other]
    yield "control unchanged", task.control, 0.0, task.real
    yield "mean shift", task.mean_shift, 0.0, task.real

    def trained(**settings):
        scvi.settings.seed = seed
        TRVAE.setup_anndata(task.train, condition_key="condition")
        model = TRVAE(task.train, **settings)
        start = time.perf_counter()
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
        return model, time.perf_counter() - start

    model, train_seconds = trained()
    methods = {
        "trVAE transfer": {},
        "trVAE transfer, sampled": {"sample": True},
        "trVAE latent shift": {"method": "latent_shift"},
        "trVAE NeuronEdit (y)": {"method": "neuron_edit", "neuron_edit_layer": "y"},
        "trVAE NeuronEdit (z)": {"method": "neuron_edit", "neuron_edit_layer": "z"},
    }
    for name, options in methods.items():
        scvi.settings.seed = seed
        start = time.perf_counter()
        predicted = model.predict(
            indices=task.control_indices,
            target_condition="stimulated",
            reference_indices=task.reference_indices,
            **options,
        )
        yield name, predicted.X, train_seconds + time.perf_counter() - start, task.real
    for name, settings in ABLATIONS.items():
        ablation, seconds = trained(**settings)
        predicted = ablation.predict(indices=task.control_indices, target_condition="stimulated")
        yield name, predicted.X, seconds, task.real


def peer_predictions(task: HoldOut, cell_type: str, seed: int, peers_dir: Path):
    """Yield ``(method, predicted, seconds, real)`` for each peer prediction on disk."""
    control_names = task.train.obs_names[task.control_indices].to_numpy().astype(str)
    for peer, method in PEERS.items():
        path = peers_dir / peer / f"{cell_type}_seed{seed}.npz"
        if not path.exists():
            continue
        with np.load(path) as stored:
            if not np.array_equal(stored["obs_names"].astype(str), control_names):
                raise ValueError(f"{path}: its cells are not {cell_type}'s control cells")
            yield method, stored["predicted"], float(stored["seconds"]), task.real


def peer_settings(peers_dir: Path, methods) -> list[str]:
    """One line per scored peer with its package versions, from its ``settings.json``."""
    lines = []
    for peer, method in PEERS.items():
        path = peers_dir / peer / "settings.json"
        if path.exists() and method in set(methods):
            settings = json.loads(path.read_text())
            versions = ", ".join(f"{k} {v}" for k, v in settings.get("versions", {}).items())
            lines.append(f"- {method}: {versions}; settings in `{path.name}` of `{peer}/`.")
    return lines


def write_table(frame: pd.DataFrame, path: Path, args) -> None:
    """Markdown table of means over seeds, per cell type and averaged over cell types."""
    keys = ["r2_mean_deg", "r2_var_all", "change_r_deg", "direction_deg", "energy_distance"]
    wide = frame.pivot_table(
        index=["cell_type", "method"], columns="metric", values="value", aggfunc="mean"
    )
    seconds = frame.groupby(["cell_type", "method"])["seconds"].mean()
    header = (
        "| cell type | method | R² mean top-100 DEGs | R² var all genes | change r top-100 "
        "| direction top-100 | energy distance | s |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"Kang 2018 PBMC (bundled validation split), seeds "
        f"{', '.join(map(str, sorted(frame['seed'].unique())))}, max_epochs "
        f"{args.max_epochs or 'default'}. Means over seeds. 's' is training plus prediction "
        "wall time of the method (0 for baselines).",
        "",
        header,
    ]
    for (cell_type, method), row in wide.iterrows():
        values = " | ".join(f"{row[k]:.3f}" for k in keys)
        lines.append(f"| {cell_type} | {method} | {values} | {seconds[cell_type, method]:.0f} |")
    all_seeds = set(frame["seed"])
    fewer = {
        method: sorted(seeds)
        for method, seeds in frame.groupby("method")["seed"].unique().items()
        if set(seeds) != all_seeds
    }
    if fewer:
        lines.append("")
    lines += [
        f"- {method}: seed(s) {', '.join(map(str, seeds))} only."
        for method, seeds in fewer.items()
    ]
    average = wide.groupby(level="method").mean()
    lines += ["", "Average over cell types:", "", header]
    for method, row in average.iterrows():
        values = " | ".join(f"{row[k]:.3f}" for k in keys)
        lines.append(f"| all | {method} | {values} | |")
    threads = torch.get_num_threads()
    # Each trVAE method's seconds are the shared training plus its own prediction.
    per_run = frame.groupby(["cell_type", "seed", "method"])["seconds"].first().unstack()
    trvae = [m for m in per_run.columns if m.startswith("trVAE")]
    own = per_run[trvae].max(axis=1) + per_run.reindex(columns=list(ABLATIONS)).sum(axis=1)
    lines += (
        []
        if own.isna().all()
        else [
            "",
            f"Wall time of our own models (3 trainings per cell type and seed, with their "
            f"predictions): {own.sum() / 60:.1f} min for {frame['seed'].nunique()} seed(s) x "
            f"{frame['cell_type'].nunique()} cell types, "
            + ("as measured by the runs merged." if args.merge else f"{threads} CPU threads."),
        ]
    )
    lines += ["", *targets(wide)]
    peers = peer_settings(Path(args.peers), frame["method"])
    if peers:
        lines += ["", "Peers, trained in their own virtual environments:", "", *peers]
    lines += ["", PUBLISHED, ""]
    path.write_text("\n".join(lines))


def targets(wide: pd.DataFrame, method: str = "trVAE transfer") -> list[str]:
    """The benchmark's goals for ``method``, counted per cell type on the means over seeds."""
    if method not in wide.index.get_level_values("method"):
        return []
    own = wide.xs(method, level="method")
    lines = [
        f"Goals for {method} (per cell type, means over seeds):",
        "",
        "| compared with | cell types won on R² mean top-100 | on change r top-100 |",
        "|---|---|---|",
    ]
    for other in wide.index.get_level_values("method").unique():
        if other == method or other.startswith("ceiling"):
            continue
        theirs = wide.xs(other, level="method")
        shared = own.index.intersection(theirs.index)
        won = {
            key: int((own.loc[shared, key] > theirs.loc[shared, key]).sum())
            for key in ("r2_mean_deg", "change_r_deg")
        }
        n = len(shared)
        lines.append(f"| {other} | {won['r2_mean_deg']}/{n} | {won['change_r_deg']}/{n} |")
    average = own["r2_mean_deg"].mean()
    lines += ["", f"Average R² mean top-100 DEGs of {method}: {average:.3f} (goal: 0.95)."]
    sampled = f"{method}, sampled"
    if sampled in wide.index.get_level_values("method"):
        variances = wide.xs(sampled, level="method")["r2_var_all"]
        baseline = wide.xs("mean shift", level="method")["r2_var_all"]
        shared = variances.index.intersection(baseline.index)
        lines.append(
            f"R² var all genes of {sampled} at least mean shift's: "
            f"{int((variances[shared] >= baseline[shared]).sum())}/{len(shared)} cell types "
            "(goal: all)."
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell-types", nargs="+", default=None, help="default: all 7")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the model's")
    parser.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples")
    parser.add_argument("--peers", default=str(PEERS_DIR), help="peer predictions, if any")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--peers-only", action="store_true", help="score only the peers")
    parser.add_argument(
        "--merge", nargs="+", metavar="CSV", help="only rebuild the table from these CSVs"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        frame = pd.concat([pd.read_csv(path) for path in args.merge], ignore_index=True)
        frame.to_csv(out / "kang_holdout.csv", index=False)
        write_table(frame, out / "kang_holdout.md", args)
        return
    adata = trvae_scvi.datasets.kang2018()
    cell_types = args.cell_types or sorted(adata.obs["cell_type"].astype(str).unique())
    rows = []
    csv_path = out / "kang_holdout.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell_type", "method", "seed", "metric", "value", "seconds"])
        for cell_type in cell_types:
            task = hold_out(adata, cell_type)
            for seed in args.seeds:
                own = [] if args.peers_only else run_task(task, seed, args.max_epochs)
                peers = peer_predictions(task, cell_type, seed, Path(args.peers))
                for method, predicted, seconds, real in itertools.chain(own, peers):
                    if method == "trVAE transfer" and seed == args.seeds[0]:
                        plot(predicted, task, cell_type, out / f"kang_holdout_{cell_type}.png")
                    for metric, value in scores(predicted, real, task, args.n_boot).items():
                        row = [cell_type, method, seed, metric, float(value), round(seconds, 2)]
                        writer.writerow(row)
                        rows.append(row)
                    handle.flush()
                    print(f"{cell_type} seed {seed}: {method} done", flush=True)
    frame = pd.DataFrame(
        rows, columns=["cell_type", "method", "seed", "metric", "value", "seconds"]
    )
    write_table(frame, out / "kang_holdout.md", args)
    print((out / "kang_holdout.md").read_text())


def plot(predicted: np.ndarray, task: HoldOut, cell_type: str, path: Path) -> None:
    """Predicted vs real means (top DEGs) and variances (all genes) of trVAE transfer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from anndata import AnnData

    predicted = AnnData(X=predicted, var=task.train.var[[]])
    real = AnnData(X=task.real, var=task.train.var[[]])
    genes = list(predicted.var_names[task.deg_mask])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    trvae_scvi.pl.predicted_vs_real(
        predicted, real, genes=genes, labels=genes[:10], title=f"{cell_type} means", ax=axes[0]
    )
    trvae_scvi.pl.predicted_vs_real(
        predicted, real, statistic="var", title=f"{cell_type} variances", ax=axes[1]
    )
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
