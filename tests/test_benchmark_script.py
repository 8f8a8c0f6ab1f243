import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load(name: str):
    """A benchmark script as a module (its folder on sys.path, as when it runs)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.shared_data
def test_holdout_benchmark_runs_end_to_end(tmp_path):
    benchmark = load("holdout")
    from perturbation_data import DATASETS

    from trvae_scvi.benchmarking import hold_out

    # A peer's prediction as benchmarks/peers writes it: here the control cells themselves.
    task = hold_out(DATASETS["glioblastoma"].load(), "PW034")
    peer_dir = tmp_path / "peers" / "glioblastoma" / "scgen"
    peer_dir.mkdir(parents=True)
    names = task.train.obs_names[task.control_indices].to_numpy().astype(str)
    np.savez(peer_dir / "PW034_seed0.npz", predicted=task.control, obs_names=names, seconds=1.5)
    (peer_dir / "settings.json").write_text(json.dumps({"versions": {"pertpy": "1.0.3"}}))
    benchmark.main(
        ["--datasets", "glioblastoma", "--groups", "PW034", "--seeds", "0", "--max-epochs", "1"]
        + ["--out", str(tmp_path), "--peers", str(tmp_path / "peers")]
    )
    frame = pd.read_csv(tmp_path / "holdout.csv")
    ours = {
        "trVAE default", "trVAE default, expected (sample=False)", "trVAE calibrated",
        "trVAE transfer (published)", "trVAE transfer, sampled",
        "trVAE latent shift", "MMD on y (the paper's), NeuronEdit predictor",
        "MMD on y (the paper's), transfer", "CVAE (beta 0), NeuronEdit predictor",
        "CVAE (beta 0), transfer",
    }  # fmt: skip
    baselines = {"ceiling (half of real cells)", "control unchanged", "mean shift"}
    assert set(frame[frame.form == "counts"].method) == ours | baselines
    # NeuronEdit alone is the count models' default; on logs the default averages it.
    log_only = {"scGen (pertpy)", "trVAE NeuronEdit (y), shrunk 0.25"}
    assert set(frame[frame.form == "log"].method) == ours | baselines | log_only
    assert frame["value"].notna().all()
    table = (tmp_path / "holdout.md").read_text()
    assert "## glioblastoma, counts" in table and "scGen (pertpy): pertpy 1.0.3" in table
    # The peer's "prediction" is the control cells, so it scores exactly as identity.
    r2 = frame[(frame.metric == "r2_mean_deg") & (frame.form == "log")].set_index("method")
    assert r2.loc["scGen (pertpy)", "value"] == r2.loc["control unchanged", "value"]
    assert "| mean shift | " in table and "R² var all genes of `trVAE default` (draws)" in table
    assert (tmp_path / "holdout_glioblastoma_log_PW034.png").stat().st_size > 0


@pytest.mark.shared_data
def test_tuning_runs_and_picks_a_default(tmp_path, monkeypatch):
    tuning = load("tune_defaults")
    tiny = {"hidden_sizes": (32,), "n_latent": 4}
    configs = {"tiny": (tiny, 20), "tiny counts": ({**tiny, "recon_loss": "nb"}, 20)}
    monkeypatch.setattr(tuning, "CONFIGS", configs)
    shift = {"method": "calibrated", "calibration_weight": 0.0}
    monkeypatch.setattr(tuning, "PREDICTORS", {"transfer": {"method": "transfer"}, "shift": shift})
    monkeypatch.setattr(tuning, "BLENDS", {"half": {"transfer": 0.5, "shift": 0.5}})
    tuning.main(["--configs", *configs, "--datasets", "glioblastoma", "--out", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "tune_defaults.jsonl").open()]
    count_predictors = ("mean shift", *tuning.COUNT_PREDICTORS)
    assert {(r["config"], r["group"], r["predictor"]) for r in rows} == {
        (config, group, predictor)
        for group in ("PW030", "PW032")
        for config, predictors in (
            ("tiny", ("mean shift", "transfer", "shift", "half")),
            ("tiny counts", count_predictors),
        )
        for predictor in predictors
    }
    # Count models are scored on log values: the same mean shift as the log form's.
    by_config = {(r["config"], r["group"], r["predictor"]): r for r in rows}
    for group in ("PW030", "PW032"):
        assert by_config["tiny counts", group, "mean shift"]["r2_mean_deg"] == pytest.approx(
            by_config["tiny", group, "mean shift"]["r2_mean_deg"]
        )
    rows = [r for r in rows if r["config"] == "tiny"]
    # The calibrated transfer with weight 0 draws the mean shift itself, floored at 0 as
    # every output of non-negative data.
    from holdout import form_data, scores  # imported by tune_defaults above

    from trvae_scvi.benchmarking import hold_out

    by_name = {(r["group"], r["predictor"]): r for r in rows}
    adata = form_data("glioblastoma", "log")[0]
    for group in ("PW030", "PW032"):
        task = hold_out(adata, group)
        floored = scores(np.maximum(task.mean_shift, 0), task.real, task, 0)
        assert by_name[group, "shift"]["r2_mean_deg"] == pytest.approx(
            floored["r2_mean_deg"], abs=1e-4
        )
    table = (tmp_path / "tune_defaults.md").read_text()
    frame = pd.read_json(tmp_path / "tune_defaults.jsonl", lines=True)
    _, best = tuning.summarise(frame[frame.config == "tiny"])
    assert best[1] in {"transfer", "shift", "half"}
    log_form, count_form = table.split("### Count form")
    assert f"Chosen by the rule: **tiny** with **{best[1]}**." in log_form
    assert "| tiny | half |" in log_form and "tiny counts" not in log_form
    assert "Chosen by the rule: **tiny counts** with **NeuronEdit (y)" in count_form


def test_image_benchmark_runs(tmp_path):
    load("images").main(["--max-epochs", "1", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "images.csv")
    assert set(frame.digit.astype(str)) == {"0", "2", "4", "5", "8", "9"}
    assert {"mean pixel shift", "trVAE transfer", "MMD on z transfer"} <= set(frame.method)
    assert frame[frame.method == "image unchanged"].mass_ratio.eq(1.0).all()
    assert "beats every baseline on" in (tmp_path / "images.md").read_text()
    assert (tmp_path / "images.png").stat().st_size > 0


def test_large_data_benchmark_small_version(tmp_path):
    """The 1M-cell scale check, shrunk: X stays sparse, every cell is encoded and predicted."""
    script = Path(__file__).parents[1] / "benchmarks" / "large_data.py"
    done = subprocess.run(
        [sys.executable, str(script), "--n-cells", "3000", "--n-genes", "300"]
        + ["--batch-size", "256", "--predict-chunk", "1000", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "large_data.json").read_text())
    assert result["x_type"] == "csr_matrix"
    assert 0.02 < result["x_density"] < 0.3
    assert result["latent_shape"] == [3000, 20]
    assert result["predicted_mean_finite"]
    assert "one training epoch" in (tmp_path / "large_data.md").read_text()


@pytest.mark.shared_data
def test_cross_donor_benchmark_runs(tmp_path):
    load("cross_donor").main(
        ["--seeds", "0", "--cell-types", "B cells", "--donors", "101", "--likelihoods", "nb"]
        + ["--max-epochs", "1", "--out", str(tmp_path)]
    )
    frame = pd.read_csv(tmp_path / "cross_donor.csv")
    assert {
        "trVAE default",
        "trVAE default, other donor as reference",
        "trVAE default, other donor's same type as reference",
        "trVAE transfer (published)",
        "trVAE query-mapped",
        "mean shift (donor)",
        "other donor's response",
    } <= set(frame.method)
    table = (tmp_path / "cross_donor.md").read_text()
    assert "`trVAE default, other donor as reference` beats both shift baselines" in table
    assert "`trVAE default, other donor's same type as reference` beats both" in table
    assert "`trVAE query-mapped` R² mean top-100 DEGs" in table
