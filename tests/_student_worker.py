"""Subprocess entry points for the student's distribution and resume tests.

Usage: python tests/_student_worker.py MODE OUT [ARGS]; prints one JSON line.
Modes:
  replicas OUT        one replica vs two logical-CPU replicas, same global batch
  train OUT RUN [KILL_EPOCH]   tiny in-memory distillation into RUN (TF_CONFIG decides the
                      strategy); with KILL_EPOCH the process SIGKILLs itself in the
                      middle of that mini-epoch; writes the final weights to OUT (.npz)
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CME_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

N, L, B = 24, 17760, 8           # 24 clips of 1.11 s (108 frames), global batch 8


def data(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(L) / 16000.0
    x = 0.05 * rng.standard_normal((N, L))
    x += 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400, (N, 1)) * t)
    z = 3 * rng.standard_normal((N, 8))
    return x.astype("float32"), z.astype("float32")


def dataset_fn_factory(kill_epoch=None):
    import tensorflow as tf
    x, z = data()

    def fn(split, seed, training):
        ds = tf.data.Dataset.from_tensor_slices(
            (x, {"logits": z, "label": np.argmax(z, 1).astype("int32")}))
        if training:
            ds = ds.shuffle(N, seed=seed).repeat()
        ds = ds.batch(B, drop_remainder=training)
        if kill_epoch is not None and training and seed == kill_epoch:
            def maybe_kill(i):
                if int(i) == 1:                       # mid-mini-epoch: after one step
                    os.kill(os.getpid(), signal.SIGKILL)
                return i
            ds = ds.enumerate().map(
                lambda i, b: (tf.py_function(maybe_kill, [i], tf.int64), b)).map(
                lambda i, b: b)
        return ds
    return fn


def tiny_config(**kw):
    from tf_cme.training.student import StudentTrainConfig
    base = dict(width=1 / 16, crop_samples=L, batch_size=B, mini_epochs=3,
                epoch_fraction=0.67, lr_start=0.02, lr_end=0.005, dither=True,
                val_fraction=0.34, check_records=False, images=1)
    base.update(kw)
    return StudentTrainConfig(**base)


def weights_of(model) -> dict:
    return {f"{i}:{w.path}": np.asarray(w) for i, w in enumerate(model.weights)}


def replicas(out):
    # float64 after the (float32) front end: in float32 this two-step comparison differs
    # by 4e-6 with oneDNN's kernels and 7e-3 with Eigen's (an AVX2 CPU, where TensorFlow
    # leaves oneDNN off) although both are correct, which would hide a real difference;
    # in float64 one device and two replicas agree to ~3e-8
    import keras
    keras.config.set_floatx("float64")
    import tensorflow as tf
    from tf_cme.training.strategy import split_cpu
    devs = split_cpu(2)
    import keras
    from tf_cme.models import build_model
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.optim import sgd
    x, z = data(1)
    x, z = x[:16], z[:16]
    y = {"logits": z, "label": np.argmax(z, 1).astype("int32")}

    def run(strategy, sync, init=None):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            s = build_model("emovoxceleb-student", width=1 / 16, dither=False,
                            synchronized=sync)
            if init is not None:
                s.set_weights(init)
            d = Distiller(s, weight_decay=5e-4)
            d.compile(optimizer=sgd(0.05, 0.9))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)   # 2 steps of 8
        h = d.fit(ds, epochs=1, verbose=0, shuffle=False)
        return s, {k: float(v[-1]) for k, v in h.history.items()}

    one, logs1 = run(tf.distribute.OneDeviceStrategy(devs[0].name), False)
    init = None
    with tf.distribute.OneDeviceStrategy(devs[0].name).scope():
        keras.utils.set_random_seed(0)
        init = build_model("emovoxceleb-student", width=1 / 16, dither=False).get_weights()
    two_strategy = tf.distribute.MirroredStrategy(
        [d.name for d in devs[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice())
    two, logs2 = run(two_strategy, True, init)
    w1, w2 = one.get_weights(), two.get_weights()
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)]
    moved = [float(np.max(np.abs(a - b))) for a, b in zip(w1, init)]
    print(json.dumps({"replicas": two_strategy.num_replicas_in_sync,
                      "max_abs_diff": max(diffs), "max_moved": max(moved),
                      "loss1": logs1["loss"], "loss2": logs2["loss"],
                      "err1": logs1["top1_error"], "err2": logs2["top1_error"]}))


def train(out, run_dir, kill_epoch=None):
    from tf_cme.training.student import train as train_student
    small = os.environ.get("TF_CME_TINY_RUN") == "1"          # multi-worker test: shorter
    cfg = tiny_config(**(dict(mini_epochs=2, val_fraction=0.0, images=0) if small else {}))
    metrics, student = train_student(cfg, run_dir, dataset_fn=dataset_fn_factory(kill_epoch),
                                     sizes={"train": N, "unheard": N}, return_student=True)
    np.savez(out, **weights_of(student))        # this process's own weights
    print(json.dumps({"ok": True, "mini_epoch": metrics.get("student", {}).get("mini_epoch")}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "replicas":
        replicas(sys.argv[2])
    elif mode == "train":
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        raise SystemExit(f"unknown mode {mode}")
