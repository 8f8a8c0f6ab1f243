"""scGen (pertpy.tools.Scgen) predictions for the held-out benchmarks (Kang, glioblastoma).

Run with ``benchmarks/peers/.venv-scgen/bin/python``; writes ``OUT/<dataset>/scgen/`` (see
``_common.py``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import _common
import numpy as np

PEER = "scgen"
# pertpy's Scgen defaults (n_hidden=800, n_latent=100, n_layers=2, dropout_rate=0.2), written out.
MODEL = {"n_hidden": 800, "n_latent": 100, "n_layers": 2, "dropout_rate": 0.2}
# Training as in pertpy's scGen perturbation-prediction tutorial.
TRAIN = {
    "max_epochs": 100,
    "batch_size": 32,
    "early_stopping": True,
    "early_stopping_patience": 25,
}
VERSIONS = (
    "pertpy scvi-tools jax jaxlib flax optax numpy anndata scanpy torch lightning statsmodels"
)


@contextlib.contextmanager
def seeded_default_rng(seed: int):
    """Seed ``np.random.default_rng()`` while the block runs (pertpy's predict calls it)."""
    original = np.random.default_rng
    sequence = np.random.SeedSequence(seed)

    def default_rng(seed=None, *args, **kwargs):
        return original(sequence.spawn(1)[0] if seed is None else seed, *args, **kwargs)

    np.random.default_rng = default_rng
    try:
        yield
    finally:
        np.random.default_rng = original


def main() -> None:
    """Train and predict every requested (group, seed)."""
    args = _common.parse_args(__doc__.splitlines()[0])
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    import pertpy as pt

    train_kwargs = {**TRAIN, "max_epochs": args.max_epochs or TRAIN["max_epochs"]}
    scgen_module = pt.tl.Scgen.__init__.__globals__["JaxSCGENVAE"]
    names = "log_variational latent_distribution use_batch_norm use_layer_norm kl_weight"
    module_defaults = {name: getattr(scgen_module, name) for name in names.split()}
    settings = {
        "package": "pertpy.tools.Scgen (JAX scGen on scvi-tools' JaxTrainingMixin)",
        "versions": _common.versions(VERSIONS.split()),
        "setup_anndata": {"batch_key": _common.CONDITION_KEY, "labels_key": _common.CELL_TYPE_KEY},
        "model": MODEL,
        "module_defaults": module_defaults,
        "train": {
            **train_kwargs,
            "train_size": "library default (0.9)",
            "plan": "library defaults (Adam, lr=1e-3, weight_decay=1e-6, eps=0.01)",
            "early_stopping_monitor": "library default (elbo_validation)",
        },
        "predict": {
            "ctrl_key": _common.CONTROL,
            "stim_key": _common.STIMULATED,
            "celltype_to_predict": "<held-out group>",
            "restrict_arithmetic_to": "all (library default)",
            "note": "np.random.default_rng() (unseeded inside pertpy) is seeded from the run seed",
        },
        "input": "adata.X (log-normalised); output is the decoder mean, same scale",
    }

    def fit_predict(train, cell_type, seed):
        pt.tl.Scgen.setup_anndata(
            train, batch_key=_common.CONDITION_KEY, labels_key=_common.CELL_TYPE_KEY
        )
        model = pt.tl.Scgen(train, **MODEL)
        model.train(**train_kwargs, enable_progress_bar=False)
        with seeded_default_rng(seed):
            pred, _delta = model.predict(
                ctrl_key=_common.CONTROL,
                stim_key=_common.STIMULATED,
                celltype_to_predict=cell_type,
            )
        history = model.history.get("elbo_validation")
        epochs = int(len(history)) if history is not None else -1
        return np.asarray(pred.X, dtype=np.float32), pred.obs_names, {"epochs_trained": epochs}

    _common.run_all(PEER, args, settings, fit_predict)


if __name__ == "__main__":
    main()
