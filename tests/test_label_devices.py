"""label_faces on several devices of one host (issue 16.2): a MirroredStrategy over the
teacher's inference, each replica taking a share of every batch, gives the logits of one
device. On CPU: 2 logical devices (TF_CME_CPU_REPLICAS=2, which must be set before
TensorFlow starts, hence the subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

_LABEL = r"""
import json, sys
from tf_cme.labelling import label_records
s = label_records(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=5)
print("SUMMARY " + json.dumps({"devices": s["devices"], "frames": s["frames"]}))
"""


def _label(records, out, teacher, replicas):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CME_CPU_REPLICAS", None)
    if replicas > 1:
        env["TF_CME_CPU_REPLICAS"] = str(replicas)
    p = subprocess.run([sys.executable, "-c", _LABEL, str(records), str(out), str(teacher)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("SUMMARY "))
    return json.loads(line[len("SUMMARY "):])


def _logits(out):
    got = {}
    for f in sorted(Path(str(out) + ".logits-cache").glob("*.npz")):
        z = np.load(f)
        keys = json.loads(bytes(z["keys"]).decode())
        got.update({k: z[f"l{i}"] for i, k in enumerate(keys)})
    return got


def test_two_devices_label_like_one(tmp_path):
    from test_teacher_label import SIZE, _build_records
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    records = _build_records(tmp_path / "vox", 3)
    teacher = tmp_path / "t.keras"
    save_model(build_model("resnet50-ferplus", width=0.0625, input_size=SIZE), teacher)
    one = _label(records, tmp_path / "one", teacher, 1)
    two = _label(records, tmp_path / "two", teacher, 2)
    assert len(two["devices"]) == 2 and len(one["devices"]) == 1
    assert one["frames"] == two["frames"] == 12
    a, b = _logits(tmp_path / "one"), _logits(tmp_path / "two")
    assert set(a) == set(b) and len(a) == 3
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print(f"\nmax |logit(2 devices) - logit(1 device)| = {diff:.2e}")
    assert diff <= 1e-5
    # batches of 5 over 2 replicas: uneven shares (3 + 2) and a last batch of 2 (1 + 1)
    for k in a:
        assert a[k].shape == b[k].shape
