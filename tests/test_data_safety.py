import hashlib

import numpy as np
import scipy.sparse as sp
from helpers import SMALL, train_small

from trvae_scvi import TRVAE


def fingerprint(adata) -> dict:
    """Hashes of X, every layer and obs."""

    def digest(matrix):
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        return hashlib.sha256(np.ascontiguousarray(dense).tobytes()).hexdigest()

    return {
        "X": digest(adata.X),
        **{f"layer {k}": digest(v) for k, v in adata.layers.items()},
        "obs": hashlib.sha256(adata.obs.to_csv().encode()).hexdigest(),
    }


def test_user_data_unchanged_apart_from_documented_keys(synthetic):
    before = fingerprint(synthetic)
    obs_columns = list(synthetic.obs.columns)
    TRVAE.setup_anndata(synthetic, condition_key="condition")
    model = TRVAE(synthetic, **SMALL)
    model.train(max_epochs=2, enable_progress_bar=False)
    model.predict(target_condition="c1")
    model.get_latent_representation()
    model.get_mmd_representation()
    model.get_corrected_expression("c0")
    after = fingerprint(synthetic)
    # scvi-tools' registration adds its private `_scvi_batch` code column to obs.
    extra = [c for c in synthetic.obs.columns if c not in obs_columns]
    assert extra == ["_scvi_batch"]
    assert {k: v for k, v in after.items() if k != "obs"} == {
        k: v for k, v in before.items() if k != "obs"
    }
    synthetic.obs = synthetic.obs[obs_columns]
    assert fingerprint(synthetic)["obs"] == before["obs"]


def test_same_seed_same_numbers(synthetic):
    results = [train_small(synthetic.copy(), seed=3)[1:] for _ in range(2)]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
