"""Command line: ``trvae-scvi demo``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import scvi

    from trvae_scvi import TRVAE
    from trvae_scvi.datasets import kang2018
    from trvae_scvi.metrics import mean_expression, r2_of_means, top_degs

    if os.path.exists(args.output) and not args.overwrite:
        print(
            f"error: --output {args.output!r} exists already; pass --overwrite to replace it or "
            "choose another folder.",
            file=sys.stderr,
        )
        return 2
    scvi.settings.seed = args.seed
    adata = kang2018()
    cell_type, control, stimulated = args.cell_type, "control", "stimulated"
    if cell_type not in set(adata.obs["cell_type"]):
        print(
            f"error: --cell-type {cell_type!r} is not in the data; choose one of "
            f"{sorted(set(adata.obs['cell_type']))}.",
            file=sys.stderr,
        )
        return 2
    is_type = (adata.obs["cell_type"] == cell_type).to_numpy()
    is_stim = (adata.obs["condition"] == stimulated).to_numpy()
    train = adata[~(is_type & is_stim)].copy()
    print(
        f"Kang 2018 PBMC: {adata.n_obs} cells x {adata.n_vars} genes. Holding out the "
        f"{int((is_type & is_stim).sum())} {stimulated} {cell_type} cells; training on "
        f"{train.n_obs} cells for {args.max_epochs} epochs."
    )
    TRVAE.setup_anndata(train, condition_key="condition")
    model = TRVAE(train)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs)
    print(f"Trained in {time.perf_counter() - start:.0f} s.")

    control_of_type = np.flatnonzero(
        ((train.obs["cell_type"] == cell_type) & (train.obs["condition"] == control)).to_numpy()
    )
    predicted = model.predict(indices=control_of_type, target_condition=stimulated)
    real = adata[is_type & is_stim].X
    control_cells = train[control_of_type].X
    others = train.obs["cell_type"] != cell_type
    shift = mean_expression(train[others & (train.obs["condition"] == stimulated)].X) - (
        mean_expression(train[others & (train.obs["condition"] == control)].X)
    )
    mean_shifted = np.asarray(control_cells.todense()) + shift
    degs = top_degs(adata[is_type], "condition", stimulated, control, n_genes=100)
    deg_mask = adata.var_names.isin(degs)

    rows = [
        ("trVAE transfer", predicted.X),
        ("mean shift", mean_shifted),
        ("control unchanged", control_cells),
    ]
    print(f"\nR² of mean expression, predicted vs real {stimulated} {cell_type} cells")
    print(f"{'method':<20}{'all genes':>12}{'top-100 DEGs':>15}")
    for name, matrix in rows:
        r2_all = r2_of_means(matrix, real)
        r2_deg = r2_of_means(matrix[:, deg_mask], real[:, deg_mask])
        print(f"{name:<20}{r2_all:>12.3f}{r2_deg:>15.3f}")
    model.save(args.output, save_anndata=True, overwrite=args.overwrite)
    print(f"\nModel saved to {args.output}/ (load with trvae_scvi.TRVAE.load({args.output!r})).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trvae-scvi`` command."""
    parser = argparse.ArgumentParser(prog="trvae-scvi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="Train on the bundled Kang 2018 PBMC data with one cell type's stimulated cells "
        "held out, predict them, and print R² against the mean-shift baseline.",
    )
    demo.add_argument("--cell-type", default="NK", help="cell type to hold out (default NK)")
    demo.add_argument("--max-epochs", type=int, default=60, help="training epochs (default 60)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--output", default="trvae_demo_model", help="folder to save the model to")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
