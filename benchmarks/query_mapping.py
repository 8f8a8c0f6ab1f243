"""Time of mapping a query 10x the reference's size, against training on everything.

On synthetic counts, with the package's defaults (``recon_loss="nb"``) and the same epochs: a
reference of ``--n-reference`` cells in two conditions trained alone, a query of 10 times as
many cells in two new conditions mapped onto it (``TRVAE.load_query_data``), and a model of
both trained from scratch. Writes ``query_mapping.md`` and ``query_mapping.json``.
"""

from __future__ import annotations

import argparse
import json

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch

from benchmarks.data import RESULTS
from benchmarks.results import markdown
from benchmarks.runners import timed
from trvae_scvi import TRVAE

DEFAULTS = {"max_epochs": 20, "out": RESULTS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes of the synthetic reference (the query is 10 times as many cells)."""
    parser.add_argument("--n-reference", type=int, default=2000)
    parser.add_argument("--n-genes", type=int, default=2000)


def synthetic(n_cells: int, conditions: list[str], n_genes: int, seed: int) -> ad.AnnData:
    """Negative-binomial counts with three cell types and a shift per condition."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, (3, n_genes))
    effect = rng.gamma(4.0, 0.25, (len(conditions), n_genes))
    types = rng.integers(0, 3, n_cells)
    condition = rng.integers(0, len(conditions), n_cells)
    mean = base[types] * effect[condition] * 3
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    obs = pd.DataFrame(index=[f"cell{seed}_{i}" for i in range(n_cells)])
    obs["condition"] = pd.Categorical(np.asarray(conditions)[condition])
    obs["cell_type"] = pd.Categorical([f"type{t}" for t in types])
    var = pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def run(args: argparse.Namespace) -> None:
    """Train the reference, map the query, train on everything; write the times."""
    scvi.settings.seed = 0
    reference = synthetic(args.n_reference, ["ref_a", "ref_b"], args.n_genes, seed=0)
    query = synthetic(10 * args.n_reference, ["query_a", "query_b"], args.n_genes, seed=1)
    train = {"max_epochs": args.max_epochs, "enable_progress_bar": False}
    TRVAE.setup_anndata(reference, condition_key="condition")
    reference_model = TRVAE(reference, recon_loss="nb")
    seconds = {"reference": timed(reference_model.train, **train)[1]}
    query_model = TRVAE.load_query_data(query, reference_model)
    seconds["query mapping"] = timed(query_model.train, **train)[1]
    everything = ad.concat([reference, query])
    TRVAE.setup_anndata(everything, condition_key="condition")
    full_model = TRVAE(everything, recon_loss="nb")
    seconds["everything from scratch"] = timed(full_model.train, **train)[1]
    ratio = seconds["query mapping"] / seconds["everything from scratch"]
    shape = {"n_reference": args.n_reference, "n_query": query.n_obs, "n_genes": args.n_genes}
    setup = {"epochs": args.max_epochs, "threads": torch.get_num_threads(), "seconds": seconds}
    result = {**shape, **setup, "query_over_full": ratio}
    (args.out / "query_mapping.json").write_text(json.dumps(result, indent=2) + "\n")
    names = ["reference alone", "query mapped onto it", "everything from scratch"]
    sizes = [reference.n_obs, query.n_obs, everything.n_obs]
    rows = zip(names, sizes, (f"{s:.0f}" for s in seconds.values()), strict=True)
    lines = [
        f"Query mapping time (`python -m benchmarks query_mapping`): reference {args.n_reference} "
        f"cells, query {query.n_obs} cells (10x, two new conditions), {args.n_genes} genes, "
        f"`recon_loss='nb'`, {args.max_epochs} epochs each, {torch.get_num_threads()} CPU "
        "threads.",
        "",
        *markdown(["run", "cells", "seconds"], rows),
        "",
        f"Query mapping took {ratio:.2f} of the time of training on everything.",
    ]
    (args.out / "query_mapping.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
