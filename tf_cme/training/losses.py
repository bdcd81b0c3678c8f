"""Distillation losses (protocol §6), per example; the Distiller averages over the global batch.

- ``hot-cross-ent`` (the original's ``SoftmaxCELoss('temperature', 2, 'logitTargets',
  true)``): ``-sum_c softmax(z/T)_c * log softmax(x/T)_c`` with the teacher's aggregated
  logits ``z`` softened by the same T as the student's ``x``; no T^2 factor. Its gradient
  with respect to ``x`` is ``(q - p) / T`` per example.
- ``euclidean``: ``0.5 * ||x - z||^2`` per example, regressing the teacher logits
  (instance weights 1). The original also divides the last layer's initial weights by
  10 for this loss: :func:`configure_student_for_loss` does that.
- ``softmaxlog``: ``-log softmax(x)[argmax z]``, cross-entropy on the teacher's max label.

Every function takes ``(targets [B, 8] teacher logits, logits [B, 8] student)`` and
returns float32 ``[B]``.
"""
from __future__ import annotations

from keras import ops

LOSSES = ("hot-cross-ent", "euclidean", "softmaxlog")
DEFAULT_TEMPERATURE = 2.0


def hot_cross_entropy(targets, logits, temperature: float = DEFAULT_TEMPERATURE):
    t = ops.cast(temperature, "float32")
    p = ops.softmax(ops.cast(targets, "float32") / t, axis=-1)
    logq = ops.log_softmax(ops.cast(logits, "float32") / t, axis=-1)
    return -ops.sum(p * logq, axis=-1)


def euclidean(targets, logits, temperature: float | None = None):
    d = ops.cast(logits, "float32") - ops.cast(targets, "float32")
    return 0.5 * ops.sum(d * d, axis=-1)


def softmaxlog(targets, logits, temperature: float | None = None):
    label = ops.argmax(targets, axis=-1)
    logq = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.take_along_axis(logq, ops.expand_dims(label, -1), axis=-1)[:, 0]


_FUNCS = {"hot-cross-ent": hot_cross_entropy, "euclidean": euclidean,
          "softmaxlog": softmaxlog}


def get(name: str, temperature: float = DEFAULT_TEMPERATURE):
    """The per-example loss ``f(targets, logits) -> [B]`` called ``name``."""
    if name not in _FUNCS:
        raise ValueError(f"unknown distillation loss {name!r}; choose one of {', '.join(LOSSES)}")
    if not temperature or temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    fn = _FUNCS[name]

    def loss(targets, logits):
        return fn(targets, logits, temperature)
    loss.__name__ = name.replace("-", "_")
    return loss


def configure_student_for_loss(model, name: str) -> None:
    """The original's ``configureForRegression``: euclidean divides fc8's weights by 10."""
    if name == "euclidean":
        layer = model.get_layer("prediction")
        w, b = layer.get_weights()
        layer.set_weights([w / 10.0, b])
