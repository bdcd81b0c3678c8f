"""Per-emotion ROC curves and AUCs (protocol §7.1).

NumPy with scikit-learn inside (``roc_curve``, ``roc_auc_score``). Conventions:

* Binary labels may be given as bools, 0/1 or the ``vl_roc`` convention -1/+1:
  an example is *positive* when its label is > 0.
* Ties are handled exactly as ``sklearn.metrics.roc_auc_score`` does: examples
  with equal scores form one step of the ROC curve (a diagonal segment), so the
  AUC equals the Mann-Whitney statistic ``P(s+ > s-) + 0.5 P(s+ == s-)``.
  (MatConvNet's ``vl_roc`` may differ slightly on ties; protocol §7.1.)
* A split in which an emotion has no positive (or no negative) example has no
  ROC curve: :func:`binary_roc` returns a :class:`RocResult` with ``auc=None``
  and a ``reason``, reported as "not evaluable"; it is never AUC 0.5 or NaN and
  never enters :func:`mean_auc`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import emotions

#: Emotions left out of the mean AUC by default (too rare; protocol §7.1, §8).
DEFAULT_IGNORE: tuple[str, ...] = ("fear", "disgust", "contempt")


class NotEvaluable(ValueError):
    """A binary problem without positive or without negative examples."""


def _binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d, got shapes {labels.shape} and "
                         f"{scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.shape[0]}) and scores ({scores.shape[0]}) "
                         f"differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(scores)))} non-finite values")
    if labels.dtype == bool:
        pos = labels
    else:
        lab = labels.astype(np.float64)
        if not np.all(np.isfinite(lab)):
            raise ValueError("labels contain non-finite values")
        pos = lab > 0
    return pos, scores


def _counts(pos: np.ndarray) -> tuple[int, int]:
    p = int(pos.sum())
    return p, int(pos.size - p)


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, one point per distinct score.

    Thresholds decrease; the curve starts at (0, 0) with threshold +inf. Tied
    scores make one point (a diagonal step), as ``sklearn.metrics.roc_curve``
    with ``drop_intermediate=False``. Raises :class:`NotEvaluable` if there is
    no positive or no negative example.
    """
    pos, scores = _binary(labels, scores)
    p, n = _counts(pos)
    if p == 0 or n == 0:
        raise NotEvaluable("no positive example" if p == 0 else "no negative example")
    from sklearn.metrics import roc_curve as sk_roc_curve
    fpr, tpr, thresholds = sk_roc_curve(pos, scores, drop_intermediate=False)
    return fpr, tpr, thresholds


def auc_from_curve(fpr, tpr) -> float:
    """Trapezoidal area under a ROC curve (fpr increasing)."""
    fpr = np.asarray(fpr, np.float64)
    tpr = np.asarray(tpr, np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_auc(labels, scores) -> float:
    """AUC with ties counted half (= ``sklearn.metrics.roc_auc_score``).

    Raises :class:`NotEvaluable` without positive or negative examples.
    """
    pos, scores = _binary(labels, scores)
    p, n = _counts(pos)
    if p == 0 or n == 0:
        raise NotEvaluable("no positive example" if p == 0 else "no negative example")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(pos, scores))


@dataclasses.dataclass(frozen=True)
class RocResult:
    """ROC of one emotion on one split; ``auc is None`` when not evaluable."""
    emotion: str
    split: str
    positives: int
    negatives: int
    auc: float | None
    fpr: np.ndarray | None = None
    tpr: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    reason: str | None = None

    @property
    def evaluable(self) -> bool:
        return self.auc is not None

    def to_json(self) -> dict:
        return {"auc": self.auc, "evaluable": self.evaluable, "positives": self.positives,
                "negatives": self.negatives, "reason": self.reason}

    def describe(self) -> str:
        if self.evaluable:
            return f"{self.auc:.3f}"
        return f"not evaluable ({self.reason})"


def binary_roc(labels, scores, *, emotion: str = "", split: str = "") -> RocResult:
    """:func:`roc_curve` and AUC as a :class:`RocResult` (never raises NotEvaluable)."""
    pos, s = _binary(labels, scores)
    p, n = _counts(pos)
    if p == 0 or n == 0:
        if p == 0 and n == 0:
            reason = "no examples"
        elif p == 0:
            reason = "no positive example"
        else:
            reason = "no negative example"
        return RocResult(emotion, split, p, n, None, reason=reason)
    fpr, tpr, thr = roc_curve(pos, s)
    return RocResult(emotion, split, p, n, auc_from_curve(fpr, tpr), fpr, tpr, thr)


def per_emotion_roc(teacher_labels, scores, *, split: str = "",
                    classes: Sequence[str] = emotions.FERPLUS) -> dict[str, RocResult]:
    """One-vs-rest ROC for each class (protocol §7.1 step 4).

    ``teacher_labels``: int ``[N]`` class indices; ``scores``: ``[N, C]`` (the
    student's softmax probabilities). Returns ``{class name: RocResult}``.
    """
    teacher_labels = np.asarray(teacher_labels)
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(f"scores must have shape [N, {len(classes)}], got {scores.shape}")
    if teacher_labels.shape != (scores.shape[0],):
        raise ValueError(f"teacher_labels must have shape [{scores.shape[0]}], "
                         f"got {teacher_labels.shape}")
    out = {}
    for c, name in enumerate(classes):
        out[name] = binary_roc(teacher_labels == c, scores[:, c], emotion=name, split=split)
    return out


def mean_auc(results: Mapping[str, RocResult] | Iterable[RocResult],
             ignore: Iterable[str] = DEFAULT_IGNORE) -> float | None:
    """Mean AUC over the emotions that occur (and can be evaluated) and are not ignored.

    Protocol §7.1 step 5: emotions with no positive example in the split do not
    count; neither do the ignored ones. ``None`` when nothing is left.
    """
    ignored = {emotions.canonical(e) for e in ignore}
    items = results.values() if isinstance(results, Mapping) else results
    aucs = [r.auc for r in items
            if r.evaluable and r.positives > 0 and emotions.canonical(r.emotion) not in ignored]
    return float(np.mean(aucs)) if aucs else None
