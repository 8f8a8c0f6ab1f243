import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "kang_holdout.py"


def test_kang_holdout_benchmark_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("kang_holdout", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    # A peer's prediction as run.sh writes it: here the control cells themselves.
    import trvae_scvi
    from trvae_scvi.benchmarking import hold_out

    task = hold_out(trvae_scvi.datasets.kang2018(), "NK")
    peer_dir = tmp_path / "peers" / "scgen"
    peer_dir.mkdir(parents=True)
    names = task.train.obs_names[task.control_indices].to_numpy().astype(str)
    np.savez(peer_dir / "NK_seed0.npz", predicted=task.control, obs_names=names, seconds=1.5)
    (peer_dir / "settings.json").write_text(json.dumps({"versions": {"pertpy": "1.0.3"}}))
    benchmark.main(
        ["--cell-types", "NK", "--seeds", "0", "--max-epochs", "1", "--n-boot", "2"]
        + ["--out", str(tmp_path), "--peers", str(tmp_path / "peers")]
    )
    frame = pd.read_csv(tmp_path / "kang_holdout.csv")
    assert set(frame["method"]) == {
        "ceiling (half of real cells)",
        "control unchanged",
        "mean shift",
        "trVAE transfer",
        "trVAE transfer, sampled",
        "trVAE latent shift",
        "trVAE NeuronEdit (y)",
        "trVAE NeuronEdit (z)",
        "CVAE transfer",
        "MMD-CVAE transfer",
        "scGen (pertpy)",
    }
    assert {"r2_mean_deg", "r2_var_all", "change_r_deg", "energy_distance"} <= set(frame["metric"])
    assert frame["value"].notna().all()
    ceiling = frame[(frame.method.str.startswith("ceiling")) & (frame.metric == "r2_mean_deg")]
    assert ceiling["value"].iloc[0] > 0.9
    table = (tmp_path / "kang_holdout.md").read_text()
    assert "Average over cell types" in table and "scGen (pertpy): pertpy 1.0.3" in table
    # The peer's "prediction" is the control cells, so it scores exactly as identity.
    r2 = frame[frame.metric == "r2_mean_deg"].set_index("method")["value"]
    assert r2["scGen (pertpy)"] == r2["control unchanged"]
    assert (tmp_path / "kang_holdout_NK.png").stat().st_size > 0
    # Goals: the peer's rows count as identity's, since its prediction is identity's.
    goals = {line.split(" | ")[0]: line.split(" | ")[1:] for line in table.splitlines()}
    assert goals["| scGen (pertpy)"] == goals["| control unchanged"]
    assert f"trVAE transfer: {r2['trVAE transfer']:.3f} (goal: 0.95)" in table


def test_screen_defaults_runs_and_tabulates(tmp_path):
    script = SCRIPT.parent / "screen_defaults.py"
    command = [sys.executable, str(script), "--cell-types", "NK", "--seeds", "0"]
    command += ["--configs", "default", "beta 10", "--max-epochs", "1", "--jobs", "2"]
    subprocess.run(command + ["--out", str(tmp_path)], check=True, capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "screen_defaults.jsonl").open()]
    assert sorted(row["config"] for row in rows) == ["beta 10", "default"]
    assert all(np.isfinite(row["r2_mean_deg"]) and row["device"] == "CPU" for row in rows)
    table = (tmp_path / "screen_defaults.md").read_text()
    assert "| default | 1 | " in table and "| beta 10 | 1 | " in table


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
