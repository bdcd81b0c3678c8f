"""Classification metrics: accuracy, confusion matrices, per-class recall, softmax.

NumPy with scikit-learn inside (``confusion_matrix``). A leaf: it imports only
:mod:`tf_cme.emotions`.
"""
from __future__ import annotations

import numpy as np

from .. import emotions


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 (temperature 1)."""
    z = np.asarray(logits, np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def accuracy(y_true, y_pred) -> float:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-d")
    if y_true.size == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` (int64, ``num_classes x num_classes``)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix
    return sk_confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def row_normalise(cm) -> np.ndarray:
    """Rows divided by their sums; rows without examples stay zero (never NaN)."""
    cm = np.asarray(cm, np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def recall_per_class(cm, classes=emotions.FERPLUS) -> dict:
    """``{class: recall}`` from a confusion matrix ``[true, predicted]``; ``None`` for a
    class without examples (never 0 or NaN)."""
    cm = np.asarray(cm)
    out = {}
    for i, name in enumerate(classes):
        n = cm[i].sum()
        out[name] = float(cm[i, i] / n) if n else None
    return out
