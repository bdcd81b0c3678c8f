"""SGD as MatConvNet applies it, and per-variable learning-rate multipliers.

MatConvNet's ``cnn_train_dag`` (beta25) adds the weight-decay term to the gradient
*before* momentum and applies the learning rate *after* it:
``g' = g + wd * w; v = m * v - g'; w = w + lr * v`` (``lr`` including the
parameter's multiplier). Keras's ``SGD`` folds the rate into the velocity:
``v_k = m * v_k - lr * g'; w = w + v_k``, so ``v_k = lr * v``. The two agree while
``lr`` is constant; when it changes from ``lr0`` to ``lr1`` (the student every
mini-epoch, protocol §6; the teacher's steps, protocol §4.2) Keras's velocity still
carries ``lr0``. :func:`set_learning_rate` changes the rate and rescales the velocity
by ``lr1 / lr0``, which keeps ``v_k = lr * v`` and so MatConvNet's trajectory.

Keras's ``SGD(weight_decay=...)`` is decoupled (it shrinks the weights separately)
and differs too, so we add the L2 term to the gradients ourselves
(:func:`matconvnet_gradients`) and give Keras a plain ``SGD(momentum=0.9)``. A
per-variable learning-rate multiplier ``k`` is exact for SGD with momentum when it
scales ``g'`` (``v_k = lr * k * v`` for any schedule, given the rescaling).
"""
from __future__ import annotations

from typing import Callable, Sequence


def matconvnet_gradients(grads: Sequence, variables: Sequence, weight_decay: float,
                         lr_multiplier: Callable[[object], float] | None = None,
                         decay_filter: Callable[[object], bool] | None = None) -> list:
    """Return ``k(v) * (g + wd * v)`` for each (gradient, variable) pair.

    ``decay_filter(v)`` says whether ``v`` is decayed (default: every trainable
    variable); ``lr_multiplier(v)`` gives its learning-rate multiplier (default 1).
    ``None`` gradients stay ``None``.
    """
    from keras import ops
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            out.append(None)
            continue
        decay = (weight_decay is not None if not isinstance(weight_decay, (int, float))
                 else bool(weight_decay))    # a tensor (scaled decay) is always applied
        if decay and (decay_filter is None or decay_filter(v)):
            g = g + ops.cast(weight_decay, g.dtype) * ops.cast(v, g.dtype)
        k = 1.0 if lr_multiplier is None else lr_multiplier(v)
        if k != 1.0:
            g = g * ops.cast(k, g.dtype)
        out.append(g)
    return out


def sgd(learning_rate, momentum: float = 0.9):
    """The optimizer that pairs with :func:`matconvnet_gradients` (no Nesterov, no decay)."""
    import keras
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=False)


def set_learning_rate(optimizer, lr: float) -> float:
    """Set ``optimizer``'s learning rate to ``lr`` the way MatConvNet changes it.

    Keras's momentum slots hold ``lr_old * v`` (MatConvNet's velocity ``v`` times the
    rate they were accumulated with); they are multiplied by ``lr_new / lr_old``, both
    as the float32 values of the rate variable, so that the next updates continue
    MatConvNet's ``w += lr_new * v``. The old rate is read from the optimizer's own
    variable, which checkpoints save and restore with the slots: a resumed run rescales
    exactly as the uninterrupted one did. Unchanged rate: nothing is touched.
    Works through a ``LossScaleOptimizer``. Returns the ratio applied (1.0 if none).
    """
    import numpy as np
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    var = inner.learning_rate
    if not hasattr(var, "assign"):
        raise TypeError(f"set_learning_rate: the optimizer's learning rate is a "
                        f"{type(var).__name__} (a schedule?), not a variable")
    old = float(np.asarray(var))
    if float(np.float32(lr)) == old:
        return 1.0
    if not inner.built:
        # a checkpoint read into an unbuilt optimizer restores its slots only when they
        # are built, after this rescaling would have had to happen
        raise RuntimeError("set_learning_rate: the optimizer is not built; build it "
                           "(optimizer.build(variables)) before restoring or changing "
                           "its rate")
    if old == 0.0:
        raise ValueError("set_learning_rate: the current learning rate is 0, so the "
                         "velocity (lr * v) cannot be rescaled")
    var.assign(lr)
    ratio = float(np.asarray(var)) / old
    for m in getattr(inner, "momentums", None) or []:
        m.assign(m * np.float32(ratio))
    return ratio
