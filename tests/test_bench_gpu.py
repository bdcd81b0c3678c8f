"""The GPU benchmark group (tf_cme/benchmarks/gpu.py) on a CPU: it runs on Keras's JAX
backend with TensorFlow unimportable (as on a GPU host without TensorFlow), its training
step is the TensorFlow Distiller's step, and its rows carry the extra peers and the device.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from _proc import PY, ROOT, env

# A child on the JAX backend with TensorFlow blocked: two stateless steps of the student's
# layers after its front end (the Spectrogram, computed once here) from weights w0, in
# float64, written with the spectrogram, the targets and w1.
_JAX_STEP = r"""
import sys
sys.modules["tensorflow"] = None
import numpy as np, keras
assert keras.backend.backend() == "jax"
keras.config.set_floatx("float64")
from tf_cme.benchmarks.gpu import jax_train_step
from tf_cme.models import build_model
from tf_cme.training import losses
from tf_cme.training.distiller import _decayed
out, weight_decay = sys.argv[1], float(sys.argv[2])
keras.utils.set_random_seed(0)
m = build_model("emovoxceleb-student", width=0.125, dither=False)
front = m.get_layer("spectrogram")
body = keras.Model(front.output, m.output)
rng = np.random.default_rng(5)
x = (0.1 * rng.standard_normal((3, 24160))).astype("float32")
s = np.asarray(front(x)).astype("float64")
z = rng.standard_normal((3, 8))
w0 = [np.asarray(v) for v in body.weights]
# float64 throughout, except the float32 prediction layer (kept so for mixed precision)
assert {v.path for v in body.weights if np.asarray(v).dtype != np.float64} == {
    "prediction/kernel", "prediction/bias"}
step, state, write_back = jax_train_step(body, losses.get("hot-cross-ent", 2.0), weight_decay,
                                         learning_rate=0.01, decayed=_decayed)
loss, state = step(state, s, z)
loss, state = step(state, s, z)          # a second step: momentum carried
write_back(state)
np.savez(out, s=s, z=z, loss=float(loss), n=len(w0),
         **{f"w0_{i}": a for i, a in enumerate(w0)},
         **{f"w1_{i}": np.asarray(v) for i, v in enumerate(body.weights)})
"""


def _jax_env():
    return env(KERAS_BACKEND="jax", JAX_ENABLE_X64="1", PYTHONPATH=str(ROOT))


def _distiller_disagreement(d, weight_decay):
    """Two Distiller steps on TensorFlow from the child's w0, spectrogram and targets, in
    float64; the worst per-variable |w_jax - w_tf| relative to the variable's change."""
    import keras
    import tensorflow as tf

    from tf_cme.models import build_model
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.optim import sgd
    # floatx and the global dtype policy (another test in this process may have set one,
    # which then outranks floatx), both restored after
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        m = build_model("emovoxceleb-student", width=0.125, dither=False)
        body = keras.Model(m.get_layer("spectrogram").output, m.output)
        assert len(body.weights) == int(d["n"])
        body.set_weights([d[f"w0_{i}"] for i in range(int(d["n"]))])
        dist = Distiller(body, weight_decay=weight_decay)
        dist.compile(optimizer=sgd(0.01, 0.9))
        ds = tf.data.Dataset.from_tensors((tf.constant(d["s"]), {"logits": tf.constant(d["z"])}))
        dist.fit(ds.repeat(2), verbose=0, shuffle=False)
        worst = (0.0, None)
        for i, v in enumerate(body.weights):
            w0, w_jax, w_tf = d[f"w0_{i}"], d[f"w1_{i}"], np.asarray(v)
            assert w_tf.dtype == np.float64 or v.path.startswith("prediction/"), v.path
            change = float(np.max(np.abs(w_tf - w0)))
            # the conv biases before a BN have no gradient (BN cancels them; they stay
            # within 1e-16 of 0): judge every variable against a change of at least 1e-4
            assert change > 0 or v.path.endswith("/bias"), v.path      # the rest moved
            worst = max(worst, (float(np.max(np.abs(w_jax - w_tf))) / max(change, 1e-4),
                                v.path))
        return worst
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def test_jax_step_is_the_distillers_step(tmp_path):
    """Two SGD steps of the JAX benchmark step == two Distiller steps on TensorFlow, from
    the same weights and input (trainable weights, BN statistics, momentum, weight decay).

    Both run in float64 on the same spectrogram: in float32 this two-step, batch-of-3
    problem is so ill-conditioned that two correct float32 implementations differ by up
    to ~2e-3 of a variable's change depending on the CPU's kernels (measured: 2e-4 on an
    AVX-512 host, 1.6e-3 on an AVX2 one; a 1e-6 perturbation of the waveform moves the
    result by 5%), which would hide a real difference. In float64 they agree to ~5e-5
    (the loss is taken in float32 on both sides); the weight decay is 0.05 so that a
    missing or doubled decay shows (it moves the weights by ~0.3 of their change)."""
    import keras
    out = tmp_path / "jax.npz"
    r = subprocess.run([PY, "-c", _JAX_STEP, str(out), "0.05"], env=_jax_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    d = np.load(out)
    same = _distiller_disagreement(d, weight_decay=0.05)
    assert same[0] < 1e-3, same
    other = _distiller_disagreement(d, weight_decay=0.0)
    assert other[0] > 0.05, other                # the check sees a step without the decay
    assert keras.backend.backend() == "tensorflow"
    assert keras.config.floatx() == "float32"


def test_gpu_bench_script_runs_without_tensorflow(tmp_path):
    """scripts/gpu_bench.sh (QUICK=1, three stages) with TensorFlow unimportable: rows
    for the selected stages with the device in each row, the Markdown table, gpu.txt."""
    fake = tmp_path / "no-tf" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no TensorFlow on this host')\n")
    out = tmp_path / "out"
    stages = "gpu-frontend,gpu-student-train-b64,gpu-teacher-resnet50-infer"
    r = subprocess.run(["bash", "scripts/gpu_bench.sh", str(out)], cwd=ROOT,
                       env=env(PYTHON=PY, QUICK="1", REPEATS="1", ONLY=stages, BUDGET_S="380",
                               PYTHONPATH=str(fake.parent)),
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = json.loads((out / "bench-gpu.json").read_text())
    assert [row["stage"] for row in rows] == stages.split(",")
    for row in rows:
        assert row["ours"] > 0 and row["peer"] > 0
        assert row["env"]["keras_backend"] == "jax" and row["env"]["tensorflow"] is None
        assert row["env"]["jax_device"].startswith("cpu") and row["env"]["policy"]
    err = float(rows[0]["note"].split("= ")[1].split(" ")[0])
    assert err < 1e-2, rows[0]["note"]   # the front end on JAX matches the float32 reference
    lines = (out / "bench-gpu.md").read_text().splitlines()
    assert lines[0].startswith("| stage | unit | ours |")
    assert sum(line.startswith("| gpu-") for line in lines) == 3
    assert all(line.count(" | ") == 6 for line in lines if line.startswith("| gpu-"))
    assert any("jax_device cpu" in line for line in lines)
    assert "keras 3.15.1 jax" in (out / "gpu.txt").read_text()


def test_markdown_lists_extra_peers(tmp_path):
    from tf_cme.benchmarks.harness import format_table, markdown_table
    row = {"stage": "gpu-x", "unit": "clips/s", "ours": 1000.0, "peer": 500.0,
           "peer_name": "PyTorch eager", "ratio": 2.0, "ours_per_core": 1000.0,
           "peer_per_core": 500.0, "note": "batch 64",
           "extra": {"PyTorch torch.compile": {"rate": 800.0, "ratio": 1.25, "all": [800.0]}},
           "env": {"jax": "0.5", "tensorflow": None}}
    md = markdown_table([row]).splitlines()
    assert md[2] == "| gpu-x | clips/s | 1,000 | PyTorch eager | 500 | 2.00 | batch 64 |"
    assert md[3] == "| gpu-x | clips/s | 〃 | PyTorch torch.compile | 800 | 1.25 |  |"
    assert md[-1] == "Measured on: jax 0.5."
    table = format_table([row]).splitlines()
    assert len(table) == 4 and "torch.compile" in table[3] and "1.25" in table[3]


def test_gpu_stages_refuse_the_tensorflow_backend(tmp_path):
    from tf_cme.benchmarks import gpu
    from tf_cme.benchmarks.harness import Context
    with pytest.raises(RuntimeError, match="--backend jax --only gpu"):
        gpu.frontend_stage(Context(workdir=tmp_path, quick=True))


def test_bench_checks_markdown_and_backend_args(tmp_path):
    r = subprocess.run([PY, "scripts/bench.py", "--markdown", str(tmp_path / "none.json")],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "none.json: no such file (--markdown)" in r.stderr
    r = subprocess.run([PY, "scripts/bench.py", "--backend", "torch", "--list"], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr
