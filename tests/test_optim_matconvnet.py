"""SGD with momentum as MatConvNet applies it (protocol §4.2, §6): the learning rate
multiplies the velocity at update time, so a rate change takes effect at once.

The reference is an independent float64 NumPy simulation of ``cnn_train_dag``'s update,
``v = m * v - (g + wd * w); w = w + lr * k * v``, on a small quadratic problem whose
gradient depends on the weights (so any difference in the trajectory shows)."""
from __future__ import annotations

import numpy as np
import pytest

import keras
import tensorflow as tf

from tf_cme.training.optim import matconvnet_gradients, set_learning_rate, sgd

MOMENTUM, WD = 0.9, 5e-3
SCHEDULE = [0.1] * 4 + [0.02] * 4 + [0.004] * 4 + [0.02] * 3      # steps down, then up
MULT = {"a": 1.0, "b": 0.1}                                     # per-variable rate multiplier
DECAYED = {"a"}


def _problem():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 6))
    h = q @ q.T / 6 + 0.5 * np.eye(6)                           # SPD Hessian
    c = rng.standard_normal(6)
    w0 = {"a": rng.standard_normal(4), "b": rng.standard_normal(2)}
    return h, c, w0


def _grads(h, c, w):
    full = h @ np.concatenate([w["a"], w["b"]]) - c
    return {"a": full[:4], "b": full[4:]}


def _matconvnet(schedule):
    """float64 MatConvNet: v = m v - (g + wd w); w = w + lr k v."""
    h, c, w = _problem()
    w = {n: x.copy() for n, x in w.items()}
    v = {n: np.zeros_like(x) for n, x in w.items()}
    for lr in schedule:
        g = _grads(h, c, w)
        for n in w:
            d = g[n] + (WD * w[n] if n in DECAYED else 0.0)
            v[n] = MOMENTUM * v[n] - d
            w[n] = w[n] + lr * MULT[n] * v[n]
    return np.concatenate([w["a"], w["b"]])


def _keras(schedule, change_rate=set_learning_rate, stop_after=None, resume_from=None,
           tmp_path=None):
    h, c, w0 = _problem()
    var = {n: keras.Variable(x.astype(np.float32), name=n) for n, x in w0.items()}
    opt = sgd(schedule[0], MOMENTUM)
    opt.build(list(var.values()))
    ckpt = tf.train.Checkpoint(optimizer=opt, **var)
    start = 0
    if resume_from is not None:
        ckpt.read(resume_from).assert_existing_objects_matched()
        start = stop_after
    for step, lr in enumerate(schedule):
        if step < start:
            continue
        if stop_after is not None and resume_from is None and step == stop_after:
            return ckpt.write(str(tmp_path / "ckpt"))
        change_rate(opt, lr)
        w = {n: np.asarray(x, np.float64) for n, x in var.items()}
        g = _grads(h, c, w)
        vs = list(var.values())
        grads = matconvnet_gradients([tf.constant(g[n], tf.float32) for n in var], vs, WD,
                                     lr_multiplier=lambda v: MULT[v.name],
                                     decay_filter=lambda v: v.name in DECAYED)
        opt.apply_gradients(zip(grads, vs))
    return np.concatenate([np.asarray(var["a"]), np.asarray(var["b"])]).astype(np.float64)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_rate_changes_follow_matconvnet():
    want = _matconvnet(SCHEDULE)
    got = _keras(SCHEDULE)
    assert _rel(got, want) <= 1e-6
    # assigning the rate alone (Keras's convention) is off by far more
    plain = _keras(SCHEDULE, change_rate=lambda opt, lr: opt.learning_rate.assign(lr))
    assert _rel(plain, want) > 1e-2
    # a constant rate: the two conventions agree, and nothing is rescaled
    assert _rel(_keras([0.05] * 6), _matconvnet([0.05] * 6)) <= 1e-6


def test_resumed_run_rescales_as_the_uninterrupted_one(tmp_path):
    """The old rate comes from the optimizer's variable, which the checkpoint restores
    with the slots: resuming just before a rate change gives the same weights, bit for bit."""
    whole = _keras(SCHEDULE)
    path = _keras(SCHEDULE, stop_after=4, tmp_path=tmp_path)       # before 0.1 -> 0.02
    resumed = _keras(SCHEDULE, stop_after=4, resume_from=path)
    np.testing.assert_array_equal(resumed, whole)


def test_ratio_loss_scale_and_errors():
    v = keras.Variable(np.ones(3, np.float32))
    opt = sgd(0.1, MOMENTUM)
    opt.build([v])
    opt.apply_gradients([(tf.ones(3), v)])                       # velocity -0.1
    assert set_learning_rate(opt, 0.1) == 1.0
    ratio = set_learning_rate(opt, 0.025)
    assert ratio == pytest.approx(0.25, rel=1e-6)
    np.testing.assert_allclose(np.asarray(opt.momentums[0]), -0.025, rtol=1e-6)
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(0.025)
    # through Keras's mixed-precision wrapper: the inner optimizer's slots
    wrapped = keras.optimizers.LossScaleOptimizer(sgd(0.1, MOMENTUM))
    wrapped.build([v])
    wrapped.inner_optimizer.momentums[0].assign(np.full(3, -0.1, np.float32))
    set_learning_rate(wrapped, 0.05)
    np.testing.assert_allclose(np.asarray(wrapped.inner_optimizer.momentums[0]), -0.05,
                               rtol=1e-6)
    # an unbuilt optimizer would get its restored slots after the rescaling: refused
    with pytest.raises(RuntimeError, match="not built"):
        set_learning_rate(sgd(0.1, MOMENTUM), 0.01)
    assert set_learning_rate(sgd(0.1, MOMENTUM), 0.1) == 1.0       # no change: fine
    zero = sgd(0.0, MOMENTUM)
    zero.build([v])
    with pytest.raises(ValueError, match="rate is 0"):
        set_learning_rate(zero, 0.01)
