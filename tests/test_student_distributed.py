"""The Distiller under tf.distribute: 2 CPU replicas == 1 device; 2 workers agree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import PY, env as _env, run_cluster  # noqa: E402


def test_two_replicas_same_update_as_one_device(tmp_path):
    p = subprocess.run([PY, "tests/_student_worker.py", "replicas", str(tmp_path)], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    assert r["max_moved"] > 1e-2                  # the weights did move (2 steps, momentum)
    # synchronised BN + global-batch loss, in float64 (_student_worker.replicas says why)
    assert r["max_abs_diff"] < 1e-6, r
    assert abs(r["loss1"] - r["loss2"]) < 1e-5 and r["err1"] == r["err2"]


def test_two_workers_end_with_identical_weights(tmp_path):
    def start(workers, d):
        return [subprocess.Popen(
            [PY, "tests/_student_worker.py", "train", str(d / f"w{i}.npz"), str(d / "run")],
            cwd=ROOT, env=_env(TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": i}}),
                               TF_CME_TINY_RUN="1"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    d, _ = run_cluster(start, tmp_path)
    run = d / "run"
    a, b = np.load(d / "w0.npz"), np.load(d / "w1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 44
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the chief wrote the run folder; the other worker left no scratch behind
    assert (run / "model.keras").exists()
    assert json.loads((run / "checkpoints" / "state.json").read_text())["mini_epoch"] == 2
    assert not (run / ".scratch").exists()
    init = np.load(d / "w0.npz")  # trained: the BN statistics moved off their init
    assert any(np.any(init[k] != 0) for k in init.files if "moving_mean" in k)
