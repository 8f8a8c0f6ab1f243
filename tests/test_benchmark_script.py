import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import SMALL, make_counts

from benchmarks import tune_defaults
from benchmarks.__main__ import main
from benchmarks.data import DATASETS, Dataset, dense, form_data
from benchmarks.scoring import scores
from benchmarks.tasks import Task, check_split, tasks
from trvae_scvi.benchmarking import hold_out

ROOT = Path(__file__).parents[1]

METRICS = ("r2_mean_deg", "change_r_deg", "r2_var_all")


def perturbation_counts():
    """Synthetic counts named like the perturbation datasets (control/stimulated, cell_type)."""
    adata = make_counts(n_cells=240, n_genes=40)
    adata.obs["condition"] = adata.obs.condition.map({"c0": "control", "c1": "stimulated"})
    return adata


@pytest.mark.shared_data
def test_holdout_benchmark_runs_end_to_end(tmp_path):
    # A peer's prediction as benchmarks/peers writes it: here the control cells themselves.
    task = hold_out(DATASETS["glioblastoma"].load(), "PW034")
    peer_dir = tmp_path / "peers" / "glioblastoma" / "scgen"
    peer_dir.mkdir(parents=True)
    names = task.train.obs_names[task.control_indices].to_numpy().astype(str)
    np.savez(peer_dir / "PW034_seed0.npz", predicted=task.control, obs_names=names, seconds=1.5)
    (peer_dir / "settings.json").write_text(json.dumps({"versions": {"pertpy": "1.0.3"}}))
    main(
        ["holdout", "--datasets", "glioblastoma", "--groups", "PW034", "--seeds", "0"]
        + ["--max-epochs", "1", "--out", str(tmp_path), "--peers", str(tmp_path / "peers")]
    )
    frame = pd.read_csv(tmp_path / "holdout.csv")
    ours = {
        "trVAE default",
        "trVAE default, expected (sample=False)",
        "trVAE calibrated",
        "trVAE transfer (published)",
        "trVAE transfer, sampled",
        "trVAE latent shift",
        "trVAE calibrated trust (calibrate_predictor)",
        "MMD on z (version 0.3's), default predictor",
        "MMD on z (version 0.3's), transfer",
        "CVAE (beta 0), default predictor",
        "CVAE (beta 0), transfer",
    }
    baselines = {"ceiling (half of real cells)", "control unchanged", "mean shift"}
    assert set(frame[frame.form == "counts"].method) == ours | baselines
    # NeuronEdit alone is the count models' default; on logs the default averages it.
    log_only = {
        "scGen (pertpy)",
        "trVAE NeuronEdit (y), shrunk 0.25",
        "trVAE default, unfloored (as version 0.2)",
        "trVAE default, zeros='matched'",
        "trVAE default, zeros='kept'",
        "trVAE default, zeros='kept_mean'",
    }
    assert set(frame[frame.form == "log"].method) == ours | baselines | log_only
    assert frame["value"].notna().all()
    # The calibrated row carries its inner estimate and the shrinkage it chose.
    calibrated = frame[frame.method == "trVAE calibrated trust (calibrate_predictor)"]
    estimate = {"inner_r2_mean_deg", "inner_change_r_deg", "calibrated_shrinkage"}
    assert estimate <= set(calibrated.metric)
    assert set(frame[frame.method == "trVAE default"].metric).isdisjoint(estimate)
    # Every method has the domain rows; outputs of non-negative data are floored at 0.
    domain = frame[frame.metric == "out_of_domain_fraction"].set_index(["form", "method"])
    assert len(domain) == len(frame.groupby(["form", "method"]))
    assert domain.loc[("log", "trVAE default"), "value"] == 0.0
    assert domain.loc[("log", "mean shift"), "value"] > 0  # the mean shift is not floored
    assert domain.loc[("log", "trVAE default, unfloored (as version 0.2)"), "value"] > 0
    table = (tmp_path / "holdout.md").read_text()
    assert "## glioblastoma, counts" in table and "scGen (pertpy): pertpy 1.0.3" in table
    assert "| zeros (real) | out of domain (real) |" in table
    # The peer's "prediction" is the control cells, so it scores exactly as identity.
    r2 = frame[(frame.metric == "r2_mean_deg") & (frame.form == "log")].set_index("method")
    assert r2.loc["scGen (pertpy)", "value"] == r2.loc["control unchanged", "value"]
    assert "| mean shift | " in table and "R² var all genes of `trVAE default` (draws)" in table
    assert "The inner estimate of `trVAE calibrated trust (calibrate_predictor)`" in table
    assert (tmp_path / "holdout_glioblastoma_log_PW034.png").stat().st_size > 0


def test_scores_take_sparse_predictions_and_count_the_domain():
    adata = perturbation_counts()
    task = hold_out(adata, "t0", n_degs=10)
    predicted = task.control.copy()
    predicted[0, :4] = -1.0
    dense, sparse = (
        scores(predicted, task.real, task, 0),
        scores(sp.csr_matrix(predicted), task.real, task, 0),
    )
    assert dense == sparse
    assert dense["out_of_domain_fraction"] == pytest.approx(4 / predicted.size)
    assert dense["zero_fraction"] == pytest.approx((predicted == 0).mean())
    assert dense["zero_fraction_real"] == pytest.approx((task.real == 0).mean())
    assert dense["out_of_domain_fraction_real"] == 0.0


def test_tuning_scores_for_the_default_candidate_what_predict_returns(monkeypatch):
    """The candidate the rule chose is scored exactly as ``predict()``'s defaults make it."""
    adata = perturbation_counts()
    monkeypatch.setitem(DATASETS, "tiny", Dataset("tiny", lambda: adata.copy(), ("t0",)))
    monkeypatch.setitem(tune_defaults.CONFIGS, "tiny", (SMALL, None))
    monkeypatch.setattr(tune_defaults, "train_config", lambda *a: trained)
    scored = {}

    def capture(predicted, real, task, n_boot):
        scored[len(scored)] = dense(predicted)
        return {}

    monkeypatch.setattr(tune_defaults, "scores", capture)
    task = hold_out(adata, "t0")
    trained = tune_defaults.train(task.train, 3, 1, None, **SMALL)[0]
    rows = tune_defaults.run_one("tiny", "tiny", "t0", 3)
    names = [row["predictor"] for row in rows]
    candidate = scored[names.index(tune_defaults.DEFAULT_CANDIDATE)]
    import scvi

    scvi.settings.seed = 3
    default = trained.predict(
        indices=task.control_indices, target_condition="stimulated", cell_type_key="cell_type"
    )
    np.testing.assert_array_equal(candidate, dense(default.X))


def test_tuning_and_reporting_tasks_are_disjoint():
    for dataset in DATASETS.values():
        for role in ("tuning", "reporting"):
            assert set(tasks(role, [dataset.name])) == {
                Task(dataset.name, g, role) for g in getattr(dataset, f"{role}_groups")
            }
    tuning = {(t.dataset, t.group) for t in tasks("tuning", list(DATASETS))}
    reporting = {(t.dataset, t.group) for t in tasks("reporting", list(DATASETS))}
    assert tuning and reporting and not tuning & reporting
    shared = {"glio": Dataset("glio", lambda: None, ("PW030", "PW034"), ("PW034",))}
    with pytest.raises(ValueError, match="PW034"):
        check_split(shared)
    with pytest.raises(ValueError, match="both tune and report"):
        tasks("tuning", ["glio"], registry=shared)


@pytest.mark.shared_data
def test_no_tuning_cell_is_a_reporting_cell():
    import anndata as ad

    from benchmarks.data import SHARED, _barcodes, cell_keys, kang_seurat_subset

    tuning = kang_seurat_subset()
    keys = set(
        zip(_barcodes(tuning.obs_names, "ifnb"), tuning.obs.condition.astype(str), strict=True)
    )
    for file, kind in (
        ("kang2018_pbmc_scgen_valid.h5ad", "scgen"),
        ("kang2018_pbmc_muscat_example.h5ad", "muscat"),
    ):
        reported = cell_keys(ad.read_h5ad(SHARED / file), kind)
        assert len(reported) > 1000 and not keys & reported


@pytest.mark.shared_data
def test_tuning_runs_and_picks_a_default(tmp_path, monkeypatch):
    tiny = {"hidden_sizes": (32,), "n_latent": 4}
    configs = {"tiny": (tiny, 20), "tiny counts": ({**tiny, "recon_loss": "nb"}, 20)}
    monkeypatch.setattr(tune_defaults, "CONFIGS", configs)
    shift = {"method": "calibrated", "calibration_weight": 0.0}
    predictors = {"transfer": {"method": "transfer"}, "shift": shift}
    monkeypatch.setattr(tune_defaults, "PREDICTORS", predictors)
    monkeypatch.setattr(tune_defaults, "BLENDS", {"half": {"method": ("neuron_edit", "transfer")}})
    main(
        [
            "tune_defaults",
            "--configs",
            *configs,
            "--datasets",
            "glioblastoma",
            "--out",
            str(tmp_path),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "tune_defaults.jsonl").open()]
    count_predictors = ("mean shift", *tune_defaults.COUNT_PREDICTORS)
    assert {(r["config"], r["group"], r["predictor"]) for r in rows} == {
        (config, group, predictor)
        for group in ("PW030", "PW032")
        for config, names in (
            ("tiny", ("mean shift", "transfer", "shift", "half")),
            ("tiny counts", count_predictors),
        )
        for predictor in names
    }
    # Count models are scored on log values: the same mean shift as the log form's.
    by_config = {(r["config"], r["group"], r["predictor"]): r for r in rows}
    for group in ("PW030", "PW032"):
        assert by_config["tiny counts", group, "mean shift"]["r2_mean_deg"] == pytest.approx(
            by_config["tiny", group, "mean shift"]["r2_mean_deg"]
        )
    # The calibrated transfer with weight 0 draws the mean shift itself, floored at 0 as
    # every output of non-negative data.
    adata = form_data("glioblastoma", "log")[0]
    for group in ("PW030", "PW032"):
        task = hold_out(adata, group)
        floored = scores(np.maximum(task.mean_shift, 0), task.real, task, 0)
        assert by_config["tiny", group, "shift"]["r2_mean_deg"] == pytest.approx(
            floored["r2_mean_deg"], abs=1e-4
        )
    table = (tmp_path / "tune_defaults.md").read_text()
    frame = pd.read_json(tmp_path / "tune_defaults.jsonl", lines=True)
    _, best = tune_defaults.summarise(frame[frame.config == "tiny"])
    log_form, count_form = table.split("### Count form")
    assert f"Chosen by the rule: **tiny** with **{best[1]}**." in log_form
    assert "| tiny | half |" in log_form and "tiny counts" not in log_form
    assert "Chosen by the rule: **tiny counts** with **NeuronEdit (y)" in count_form


def test_image_benchmark_runs(tmp_path):
    main(["images", "--max-epochs", "1", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "images.csv")
    assert set(frame.digit.astype(str)) == {"0", "2", "4", "5", "8", "9"}
    assert {"mean pixel shift", "trVAE transfer", "MMD on z transfer"} <= set(frame.method)
    assert frame[frame.method == "image unchanged"].mass_ratio.eq(1.0).all()
    assert "beats every baseline on" in (tmp_path / "images.md").read_text()
    assert (tmp_path / "images.png").stat().st_size > 0


def test_large_data_benchmark_small_version(tmp_path):
    """The 1M-cell scale check, shrunk: X stays sparse, every cell is encoded and predicted."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "large_data", "--n-cells", "3000", "--n-genes"]
        + ["300", "--batch-size", "256", "--predict-chunk", "1000", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
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
    main(
        ["cross_donor", "--seeds", "0", "--cell-types", "B cells", "--donors", "101"]
        + ["--likelihoods", "nb", "--max-epochs", "1", "--out", str(tmp_path)]
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
    assert {"zero_fraction", "zero_fraction_real"} <= set(frame.metric)
    table = (tmp_path / "cross_donor.md").read_text()
    assert "`trVAE default, other donor as reference` beats both shift baselines" in table
    assert "`trVAE default, other donor's same type as reference` beats both" in table
    assert "`trVAE query-mapped` R² mean top-100 DEGs" in table


def test_the_selection_rule_ranks_share_then_score_then_variance():
    """The rule on a made-up grid whose winner is known: beating mean shift on more tasks
    beats a higher score; at equal share and score the variance R² decides; a predictor
    missing a task is not ranked."""
    scores_of = {  # predictor: per task (R² DEG, change r, R² var)
        "mean shift": [(0.50, 0.50, 0.5), (0.50, 0.50, 0.5)],
        "higher score, one win": [(0.99, 0.99, 0.9), (0.40, 0.99, 0.9)],
        "two wins": [(0.60, 0.60, 0.3), (0.70, 0.70, 0.3)],
        "two wins, more variance": [(0.70, 0.70, 0.8), (0.60, 0.60, 0.8)],
        "one task only": [(0.99, 0.99, 0.99)],
    }
    task = {"config": "c", "dataset": "d"}
    rows = [
        {**task, "group": f"g{i}", "predictor": name, **dict(zip(METRICS, scored, strict=True))}
        for name, values in scores_of.items()
        for i, scored in enumerate(values)
    ]
    table, best = tune_defaults.summarise(pd.DataFrame(rows))
    assert best == ("c", "two wins, more variance")
    assert table.loc[("c", "higher score, one win"), "share_beating_mean_shift"] == 0.5
