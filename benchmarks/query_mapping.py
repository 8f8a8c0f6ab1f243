"""Time of mapping a query 10x the reference's size, against training on everything.

Synthetic counts (the time depends on sizes, not on the data): a reference of ``--n-reference``
cells in two conditions, a query of 10 times as many cells in two new conditions. Three runs,
each with the package's defaults (``recon_loss="nb"``) and the same number of epochs:

- the reference trained alone;
- the query mapped onto it with ``TRVAE.load_query_data`` and trained (only the new
  conditions' weights train; the layers without a condition input are not even differentiated);
- a model trained from scratch on reference and query together.

Writes ``query_mapping.md`` and ``query_mapping.json`` under ``--out``. The accuracy of query
mapping is in ``benchmarks/cross_donor.py`` (``trVAE query-mapped``).

Usage::

    python benchmarks/query_mapping.py
    python benchmarks/query_mapping.py --n-reference 200 --max-epochs 2 --out /tmp/q
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch

from trvae_scvi import TRVAE


def synthetic(n_cells: int, conditions: list[str], n_genes: int, seed: int) -> ad.AnnData:
    """Negative-binomial counts with three cell types and a shift per condition."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, (3, n_genes))
    effect = rng.gamma(4.0, 0.25, (len(conditions), n_genes))
    types = rng.integers(0, 3, n_cells)
    condition = rng.integers(0, len(conditions), n_cells)
    mean = base[types] * effect[condition] * 3
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    return ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "condition": pd.Categorical(np.asarray(conditions)[condition]),
                "cell_type": pd.Categorical([f"type{t}" for t in types]),
            },
            index=[f"cell{seed}_{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)]),
    )


def timed(train) -> float:
    """Seconds that ``train()`` takes."""
    start = time.perf_counter()
    train()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Train the reference, map the query, train on everything; write the times."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-reference", type=int, default=2000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = 0
    reference = synthetic(args.n_reference, ["ref_a", "ref_b"], args.n_genes, seed=0)
    query = synthetic(10 * args.n_reference, ["query_a", "query_b"], args.n_genes, seed=1)
    train = {"max_epochs": args.max_epochs, "enable_progress_bar": False}

    TRVAE.setup_anndata(reference, condition_key="condition")
    reference_model = TRVAE(reference, recon_loss="nb")
    seconds = {"reference": timed(lambda: reference_model.train(**train))}
    query_model = TRVAE.load_query_data(query, reference_model)
    seconds["query mapping"] = timed(lambda: query_model.train(**train))
    everything = ad.concat([reference, query])
    TRVAE.setup_anndata(everything, condition_key="condition")
    full_model = TRVAE(everything, recon_loss="nb")
    seconds["everything from scratch"] = timed(lambda: full_model.train(**train))

    ratio = seconds["query mapping"] / seconds["everything from scratch"]
    result = {
        "n_reference": args.n_reference,
        "n_query": query.n_obs,
        "n_genes": args.n_genes,
        "epochs": args.max_epochs,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "query_over_full": ratio,
    }
    (out / "query_mapping.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Query mapping time (`benchmarks/query_mapping.py`): reference {args.n_reference} "
        f"cells, query {query.n_obs} cells (10x, two new conditions), {args.n_genes} genes, "
        f"`recon_loss='nb'`, {args.max_epochs} epochs each, {torch.get_num_threads()} CPU "
        "threads.",
        "",
        "| run | cells | seconds |",
        "|---|---|---|",
        f"| reference alone | {reference.n_obs} | {seconds['reference']:.0f} |",
        f"| query mapped onto it | {query.n_obs} | {seconds['query mapping']:.0f} |",
        f"| everything from scratch | {everything.n_obs} | "
        f"{seconds['everything from scratch']:.0f} |",
        "",
        f"Query mapping took {ratio:.2f} of the time of training on everything.",
    ]
    (out / "query_mapping.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
