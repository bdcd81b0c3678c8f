"""The one emotion taxonomy of tf-cme.

Every tensor of 8 scores in this project is in FER+ order (protocol §2.1):
``neutral, happiness, surprise, sadness, anger, disgust, fear, contempt``.
This module is the only place that spells that order out. Other taxonomies
(FER2013's 7 codes, RML / eNTERFACE's 6 classes, AFEW's 7) are listed here in
their own order and mapped into FER+ order *by name*, never by position.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: The 8 FER+ emotions in FER+ order (the teacher's and the student's outputs).
FERPLUS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness",
    "anger", "disgust", "fear", "contempt",
)
NUM_CLASSES = len(FERPLUS)

#: fer2013new.csv has two more vote columns after the 8 emotions.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = FERPLUS + ("unknown", "NF")

#: FER2013 (``fer2013.csv``) emotion codes 0..6, in the dataset's own order.
FER2013: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)

#: RML and eNTERFACE'05: 6 acted classes, in the order of the original readers
#: (``labels`` 1..6 = Angry, Disgust, Fear, Happy, Sad, Surprise).
RML: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
ENTERFACE: tuple[str, ...] = RML

#: AFEW (EmotiW 2016): 7 classes, in the reader's order.
AFEW: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
)

TAXONOMIES: dict[str, tuple[str, ...]] = {
    "ferplus": FERPLUS,
    "fer2013": FER2013,
    "rml": RML,
    "enterface": ENTERFACE,
    "afew": AFEW,
}

#: Spellings seen in datasets, manifests and third-party models, mapped to FER+ names.
ALIASES: dict[str, str] = {
    "neutral": "neutral", "neu": "neutral", "calm": "neutral",
    "happiness": "happiness", "happy": "happiness", "hap": "happiness", "joy": "happiness",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "sadness": "sadness", "sad": "sadness",
    "anger": "anger", "angry": "anger", "ang": "anger",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "fea": "fear",
    "contempt": "contempt", "con": "contempt",
}

#: Value given to FER+ classes a source taxonomy does not have, when mapping
#: *logits*: low enough that softmax gives them ~0 probability (exp(-30) ≈ 1e-13),
#: but finite so that downstream max/mean/softmax never produce NaN.
MISSING_LOGIT = -30.0
#: Value given to missing classes when mapping *probabilities* or votes.
MISSING_PROB = 0.0


def canonical(name: str) -> str:
    """FER+ name of an emotion label in any known spelling; ValueError if unknown."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in ALIASES:
        return ALIASES[key]
    raise ValueError(
        f"unknown emotion name {name!r}; known names: {', '.join(sorted(ALIASES))}")


def index(name: str) -> int:
    """Index of an emotion (any known spelling) in FER+ order."""
    return FERPLUS.index(canonical(name))


def resolve_classes(classes: str | Sequence[str]) -> tuple[str, ...]:
    """A taxonomy name (``"rml"``) or a list of class names, as FER+ names.

    Raises ValueError listing every name that cannot be mapped.
    """
    if isinstance(classes, str):
        key = classes.strip().lower()
        if key in TAXONOMIES:
            return TAXONOMIES[key]
        classes = [c for c in classes.split(",")]
    bad, out = [], []
    for c in classes:
        try:
            out.append(canonical(c))
        except ValueError:
            bad.append(c)
    if bad:
        raise ValueError(
            f"cannot map class names to FER+ emotions: {', '.join(map(repr, bad))}; "
            f"known names: {', '.join(sorted(ALIASES))}")
    if len(set(out)) != len(out):
        raise ValueError(f"class names map to duplicate FER+ emotions: {list(classes)}")
    return tuple(out)


def to_ferplus(scores, classes: str | Sequence[str], fill: float = MISSING_LOGIT) -> np.ndarray:
    """Re-order scores ``[..., len(classes)]`` into FER+ order ``[..., 8]`` by name.

    ``classes`` is a taxonomy name from :data:`TAXONOMIES` or a list of class names.
    FER+ classes the source lacks get ``fill``: :data:`MISSING_LOGIT` (default) for
    logits, :data:`MISSING_PROB` for probabilities or votes.
    """
    names = resolve_classes(classes)
    scores = np.asarray(scores)
    if scores.shape[-1] != len(names):
        raise ValueError(
            f"scores have {scores.shape[-1]} classes but the taxonomy has {len(names)}: {names}")
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float32
    out = np.full(scores.shape[:-1] + (NUM_CLASSES,), fill, dtype=dtype)
    for j, name in enumerate(names):
        out[..., FERPLUS.index(name)] = scores[..., j]
    return out


def label_to_ferplus(label: int, classes: str | Sequence[str]) -> int:
    """FER+ index of class ``label`` of a source taxonomy."""
    return FERPLUS.index(resolve_classes(classes)[label])


def ferplus_indices(classes: str | Sequence[str]) -> list[int]:
    """For each class of a source taxonomy, its FER+ index."""
    return [FERPLUS.index(n) for n in resolve_classes(classes)]


def names(indices: Iterable[int]) -> list[str]:
    return [FERPLUS[i] for i in indices]
