"""The one set of method runners: train trVAE, predict with it, baselines, peers from disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scvi
from anndata import AnnData

from benchmarks.data import STIMULATED, TARGET_SUM
from trvae_scvi import TRVAE
from trvae_scvi.benchmarking import HoldOut

PEERS = {"scgen": "scGen (pertpy)", "scarches_trvae": "scArches TRVAE", "cpa": "CPA (cpa-tools)"}
PEERS_DIR = Path(__file__).resolve().parent / "peers" / "predictions"
CEILING = "ceiling (half of real cells)"


def train(
    adata: AnnData, seed: int, max_epochs, layer=None, condition_key="condition", **settings
) -> tuple[TRVAE, float]:
    """A TRVAE with ``settings`` trained on ``adata`` (registered here), and its seconds."""
    scvi.settings.seed = seed
    TRVAE.setup_anndata(adata, condition_key=condition_key, layer=layer)
    model = TRVAE(adata, **settings)
    return model, timed(model.train, max_epochs=max_epochs, enable_progress_bar=False)[1]


def predict(model: TRVAE, indices, seed: int | None, counts: bool, target=STIMULATED, **options):
    """``predict``'s log values (count models: ``log_normalized``); ``seed=None``: no reseed."""
    if seed is not None:
        scvi.settings.seed = seed
    if counts:
        options["target_sum"] = TARGET_SUM
    result = model.predict(
        indices=indices, target_condition=target, cell_type_key="cell_type", **options
    )
    return result.layers["log_normalized"] if counts else result.X


def published(model: TRVAE, task: HoldOut, seed: int, counts: bool):
    """The published transfer: the control cells decoded with the stimulated condition."""
    if counts:  # predict's expected transfer is exactly that, in log space
        return predict(model, task.control_indices, seed, True, method="transfer", sample=False)
    scvi.settings.seed = seed
    return model.get_corrected_expression(STIMULATED, indices=task.control_indices)


def prediction(model: TRVAE, task: HoldOut, seed: int, counts: bool, options: dict | None):
    """``predict`` with ``options`` on the task's control cells; ``None``: :func:`published`."""
    if options is None:
        return published(model, task, seed, counts)
    return predict(model, task.control_indices, seed, counts, **options)


def timed(function, *args, **kwargs) -> tuple[object, float]:
    """``function(*args, **kwargs)`` and its wall seconds."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def pyplot():
    """Pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def baselines(task: HoldOut, seed: int) -> Iterator[tuple[str, object, float]]:
    """``(method, predicted, 0.0)`` of the ceiling (a half against the other), identity, shift."""
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(task.real))[: len(task.real) // 2]
    other = np.setdiff1d(np.arange(len(task.real)), half)
    yield CEILING, (task.real[half], task.real[other]), 0.0
    yield "control unchanged", task.control, 0.0
    yield "mean shift", task.mean_shift, 0.0


def peer_predictions(
    task: HoldOut, dataset: str, group: str, seed: int, peers_dir: Path
) -> Iterator[tuple[str, np.ndarray, float]]:
    """``(method, predicted, seconds)`` of each peer prediction on disk (``benchmarks/peers``)."""
    control_names = task.train.obs_names[task.control_indices].to_numpy().astype(str)
    for peer, method in PEERS.items():
        path = peers_dir / dataset / peer / f"{group}_seed{seed}.npz"
        if not path.exists():
            continue
        with np.load(path) as stored:
            if not np.array_equal(stored["obs_names"].astype(str), control_names):
                raise ValueError(f"{path}: its cells are not {group}'s control cells")
            yield method, stored["predicted"], float(stored["seconds"])
