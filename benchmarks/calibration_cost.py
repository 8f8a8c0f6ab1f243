"""Time of ``calibrate_predictor`` and a calibrated ``predict``, against training one model.

On the bundled Kang 2018 example (1,975 cells x 6,998 genes) with NK's stimulated cells held
out, every setting at its default: one model trained, then ``calibrate_predictor`` and the
default ``predict`` of NK's control cells. Writes ``calibration_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json

import scvi
import torch

import trvae_scvi
from benchmarks.data import RESULTS, STIMULATED
from benchmarks.results import markdown
from benchmarks.runners import timed
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import hold_out

DEFAULTS = {"seeds": [0], "out": RESULTS}
HELD_OUT = "NK"


def run(args: argparse.Namespace) -> None:
    """Train, calibrate and predict on the example; write the seconds and their ratio."""
    rows = [measure(seed) for seed in args.seeds]
    (args.out / "calibration_cost.json").write_text(json.dumps(rows, indent=1) + "\n")
    header = ["seed", "train s", "calibrate s", "predict s", "(calibrate + predict) / train"]
    lines = [
        "`python -m benchmarks calibration_cost`: the bundled Kang 2018 example (1,975 cells x "
        f"6,998 genes), {HELD_OUT}'s stimulated cells held out, default settings, "
        f"{torch.get_num_threads()} torch threads. Target: at most 6x the training time.",
        "",
        *markdown(header, [[r[k] for k in ("seed", *header[1:-1])] + [r["ratio"]] for r in rows]),
    ]
    (args.out / "calibration_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def measure(seed: int) -> dict:
    """One seed's seconds: training, calibration, and the calibrated default prediction."""
    scvi.settings.seed = seed
    task = hold_out(trvae_scvi.datasets.kang2018(), HELD_OUT)
    TRVAE.setup_anndata(task.train, condition_key="condition")
    model = TRVAE(task.train)
    quiet = {"enable_progress_bar": False}
    train = timed(model.train, **quiet)[1]
    calibrate = timed(
        model.calibrate_predictor, "cell_type", STIMULATED, exclude=[HELD_OUT], **quiet
    )[1]
    predict = timed(
        model.predict,
        indices=task.control_indices,
        target_condition=STIMULATED,
        cell_type_key="cell_type",
    )[1]
    seconds = {"train s": train, "calibrate s": calibrate, "predict s": predict}
    return {
        "seed": seed,
        **{key: round(value, 1) for key, value in seconds.items()},
        "ratio": round((calibrate + predict) / train, 2),
        "shrinkage": model.predictor_calibration_["shrinkage"],
    }
