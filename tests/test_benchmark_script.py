import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "kang_holdout.py"


def test_kang_holdout_benchmark_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("kang_holdout", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    benchmark.main(
        ["--cell-types", "NK", "--seeds", "0", "--max-epochs", "1", "--n-boot", "2"]
        + ["--out", str(tmp_path)]
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
    }
    assert {"r2_mean_deg", "r2_var_all", "change_r_deg", "energy_distance"} <= set(frame["metric"])
    assert frame["value"].notna().all()
    ceiling = frame[(frame.method.str.startswith("ceiling")) & (frame.metric == "r2_mean_deg")]
    assert ceiling["value"].iloc[0] > 0.9
    assert "Average over cell types" in (tmp_path / "kang_holdout.md").read_text()
    assert (tmp_path / "kang_holdout_NK.png").stat().st_size > 0
