"""Multi-process training through scvi-tools/Lightning: 2 CPU processes, gloo backend."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from trvae_scvi import TRVAE


def test_ddp_two_cpu_processes(tmp_path):
    script = Path(__file__).parent / "ddp_train.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(rank["world_size"] == 2 for rank in ranks)
    # 360 training cells, batches of 32: 12 balanced batches per epoch, split between processes.
    assert [len(rank["minority_share"]) for rank in ranks] == [18, 18]
    # The data are 15% condition c1; balanced batches hold about half of each.
    for rank in ranks:
        assert 0.4 < np.mean(rank["minority_share"]) < 0.6

    model = TRVAE.load(tmp_path / "model")
    mmd = model.history["mmd_train"]["mmd_train"].to_numpy(dtype=float)
    assert len(mmd) == 3 and np.isfinite(mmd).all()
    predicted = model.predict(target_condition="c1")
    assert np.isfinite(predicted.X.toarray()).all()
