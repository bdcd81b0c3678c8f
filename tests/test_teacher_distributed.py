"""Teacher training under tf.distribute (issue 16.3): 2 CPU replicas with synchronised BN
make the same update as one device on the global batch; 2 workers on loopback end with
identical weights. And a kill -9 mid-run, resumed, ends where an uninterrupted run does
(issue 12.4)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import PY, env as _env, run_cluster, wait_all  # noqa: E402


@pytest.fixture(scope="module")
def fer_records(tmp_path_factory) -> Path:
    from tf_cme.data import ferplus
    from tf_cme.demo import corpus as dc
    root = tmp_path_factory.mktemp("fer")
    dc.write_ferplus(root, 120, seed=1)
    ferplus.build(root / "rec", ferplus.FerplusBuildConfig(
        fer_csv=str(root / "ferplus/fer2013.csv"),
        ferplus_csv=str(root / "ferplus/fer2013new.csv"), workers=1))
    return root / "rec"


def _weights(path):
    z = np.load(path)
    return [z[f"w{i}"] for i in range(len(z.files))]


def _train(records, run, out, *extra, mode="replicas", **env):
    return subprocess.Popen([PY, "tests/_teacher_worker.py", mode, str(records), str(run),
                             str(out), *map(str, extra)],
                            cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow      # 2.5 min: a 2-replica ResNet-50 graph on CPU (make test-slow)
def test_two_replicas_same_update_as_one_device(tmp_path, fer_records):
    wait_all([_train(fer_records, tmp_path / "one", tmp_path / "one.npz"),       # side by side
           _train(fer_records, tmp_path / "two", tmp_path / "two.npz", TF_CME_CPU_REPLICAS="2")])
    from tf_cme.models import build_model
    import keras
    keras.utils.set_random_seed(0)
    init = build_model("resnet50-ferplus", width=0.0625, input_size=32,
                       dropout=0.0).get_weights()
    one, two = _weights(tmp_path / "one.npz"), _weights(tmp_path / "two.npz")
    assert len(one) == len(two) == len(init)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(one, init))
    # per variable, relative to its size (BN moving variances reach ~400 here, where
    # float32 resolves 3e-5)
    rel = max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max()))
              for a, b in zip(one, two))
    print(f"\nteacher, 2 replicas vs 1 device after 2 steps: max relative |w diff| {rel:.2e} "
          f"(weights moved up to {moved:.2e})")
    assert moved > 1e-3                          # the update did something
    assert rel < 1e-4                            # global-batch loss, synchronised BN, decay once
    run_cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert run_cfg["batch_size"] == 16


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path, fer_records):
    def start(workers, d):
        return [_train(fer_records, d / "run", d / f"w{i}.npz",
                       TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                             "task": {"type": "worker", "index": i}}))
                for i in range(2)]
    d, _ = run_cluster(start, tmp_path)
    a, b = _weights(d / "w0.npz"), _weights(d / "w1.npz")
    assert len(a) == len(b) > 100
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (d / "run" / "model.keras").exists()


def test_kill_and_resume_matches_uninterrupted(tmp_path, fer_records):
    """Dropout and augmentation on: the checkpoint must carry every random state."""
    full = _train(fer_records, tmp_path / "full", tmp_path / "full.npz", mode="resume")
    p = _train(fer_records, tmp_path / "cut", tmp_path / "never.npz", 1, mode="resume")
    p.communicate(timeout=600)
    wait_all([full])
    assert p.returncode == -9                      # killed as epoch 2 began
    assert not (tmp_path / "never.npz").exists()
    state = json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    wait_all([_train(fer_records, tmp_path / "cut", tmp_path / "resumed.npz", mode="resume")])
    a, b = _weights(tmp_path / "full.npz"), _weights(tmp_path / "resumed.npz")
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    print(f"\nteacher kill -9 after epoch 1 + resume vs uninterrupted: max |w diff| {diff:.2e}")
    assert diff < 1e-5
