"""SGD as MatConvNet applies it, and per-variable learning-rate multipliers.

MatConvNet's ``cnn_train_dag`` adds the weight-decay term to the gradient
*before* momentum: ``g' = g + wd * w; v = m * v - lr * g'; w = w + v``.
Keras's ``SGD(weight_decay=...)`` is decoupled (it shrinks the weights
separately) and differs, so we add the L2 term to the gradients ourselves and
give Keras a plain ``SGD(momentum=0.9)``. A per-variable learning-rate
multiplier ``k`` is exact for SGD with momentum when it scales ``g'``.
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
