"""Shared helpers of the peer prediction scripts (numpy and anndata only).

The split is ``trvae_scvi.benchmarking.hold_out``'s: for a group T, train on every cell but T's
stimulated cells and predict the stimulated state of T's control cells, in file order. The data
are ``data/<dataset>_log.h5ad``, written by ``python -m benchmarks peer_data``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"  # files written by ``python -m benchmarks peer_data`` (git-ignored)
CELL_TYPE_KEY, CONDITION_KEY = "cell_type", "condition"
CONTROL, STIMULATED = "control", "stimulated"
PROTOCOL = (
    "train = all cells except (cell_type==T & condition=='stimulated'); predict the stimulated "
    "state of (cell_type==T & condition=='control') in file order; seeds set for random, numpy, "
    "torch and scvi.settings.seed"
)


def parse_args(description: str) -> argparse.Namespace:
    """The arguments every peer script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="kang", help="reads data/<dataset>_log.h5ad")
    parser.add_argument("--groups", nargs="+", help="default: the dataset's reporting groups")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=HERE / "predictions")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the epoch cap")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose .npz exists")
    args = parser.parse_args()
    args.data = DATA_DIR / f"{args.dataset}_log.h5ad"
    if not args.data.exists():
        raise SystemExit(
            f"{args.data} is missing; write it with the project's venv: "
            f".venv/bin/python -m benchmarks peer_data --datasets {args.dataset}"
        )
    if args.groups is None:
        import anndata

        args.groups = list(anndata.read_h5ad(args.data, backed="r").uns["reporting_groups"])
    return args


def read_data(path: Path):
    """The data set as AnnData, its keys categorical."""
    import anndata

    adata = anndata.read_h5ad(path)
    for key in (CELL_TYPE_KEY, CONDITION_KEY):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    return adata


def split(adata, cell_type: str):
    """``(train, control_obs_names)`` of the held-out task for ``cell_type`` (the group)."""
    types = adata.obs[CELL_TYPE_KEY].astype(str).to_numpy()
    conditions = adata.obs[CONDITION_KEY].astype(str).to_numpy()
    if cell_type not in set(types):
        raise SystemExit(f"unknown group {cell_type!r}; choose from {sorted(set(types))}")
    held_out = (types == cell_type) & (conditions == STIMULATED)
    train = adata[~held_out].copy()
    control = (types == cell_type) & (conditions == CONTROL)
    return train, adata.obs_names[control].to_numpy().astype(str)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (and scvi-tools where present)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    try:
        import scvi

        scvi.settings.seed = seed
    except ImportError:
        pass


def versions(packages: list[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (absent ones are left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_prediction(path: Path, predicted, obs_names, seconds: float, extra: dict) -> None:
    """Write one run's ``.npz``: float32 predictions, the control cells' names, seconds."""
    predicted = np.asarray(predicted, dtype=np.float32)
    if not np.isfinite(predicted).all():
        raise RuntimeError(f"{path.name}: prediction has non-finite values")
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        predicted=predicted,
        obs_names=np.asarray(obs_names).astype(str),
        seconds=np.float64(seconds),
        **{k: np.asarray(v) for k, v in extra.items()},
    )
    os.replace(tmp, path)


def run_all(peer: str, args: argparse.Namespace, settings: dict, fit_predict) -> None:
    """Run ``fit_predict(train, group, seed) -> (predicted, obs_names, extra)`` on every task.

    Writes ``OUT/<dataset>/<peer>/<group>_seed<S>.npz`` (``seconds``: ``fit_predict``'s wall
    time) and ``OUT/<dataset>/<peer>/settings.json``.
    """
    adata = read_data(args.data)
    out = args.out / args.dataset / peer
    common = {"peer": peer, "dataset": args.dataset, "data": str(args.data), "seeds": args.seeds}
    common.update(data_shape=list(adata.shape), groups=args.groups, protocol=PROTOCOL)
    common["torch_num_threads"] = __import__("torch").get_num_threads()
    settings = {**common, **settings}
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    for cell_type in args.groups:
        for seed in args.seeds:
            path = out / f"{cell_type}_seed{seed}.npz"
            if path.exists() and not args.overwrite:
                print(f"[{peer}] {args.dataset}/{path.name} exists; skipping", flush=True)
                continue
            train, control_names = split(adata, cell_type)
            seed_everything(seed)
            start = time.perf_counter()
            predicted, obs_names, extra = fit_predict(train, cell_type, seed)
            seconds = time.perf_counter() - start
            obs_names = np.asarray(obs_names).astype(str)
            if not np.array_equal(obs_names, control_names):
                raise RuntimeError(f"{peer} {cell_type}: predicted cells are not the controls")
            if predicted.shape != (len(control_names), adata.n_vars):
                raise RuntimeError(f"{peer} {cell_type}: prediction shape {predicted.shape}")
            write_prediction(path, predicted, obs_names, seconds, extra)
            done = f"{args.dataset} {cell_type} seed {seed}: {seconds:.1f} s -> {path}"
            print(f"[{peer}] {done}", flush=True)
