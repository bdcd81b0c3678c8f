"""The run-folder contract: what kind of folder a stage wrote, and the fixed key names of
its ``metrics.json`` (issue 14 item 9). Defined here once; every stage writes through
:func:`update_metrics`, every reader (the report) reads through :func:`read_metrics`.

Every stage folder holds ``metrics.json`` with

- ``"kind"``: one of :data:`KINDS` (the part of an experiment the folder is);
- ``"contract"``: :data:`VERSION`, the version of this contract;
- the kind's fixed keys (below). Accuracies and AUCs are fractions in [0, 1]; a figure not
  measured (yet) is absent or ``null``, never spelled another way.

============  ===========================  =============================================
kind          written by                   fixed keys read by other stages
============  ===========================  =============================================
teacher       train_teacher.py,            ``training`` (train_teacher),
              evaluate_teacher.py          ``val_accuracy``, ``test_accuracy``
                                           (evaluate_teacher; FER+ PublicTest/PrivateTest)
labels        label_faces.py               ``frames``, ``clips``
student       train_student.py             ``student`` (history), ``teacher`` (path, sha256),
                                           ``validation`` (the validation tracks)
eval          evaluate_student.py          ``auc``, ``mean_auc`` ({train, heard, unheard})
external      benchmark_external.py        ``accuracy_mean``, ``accuracy_std``,
                                           ``random_accuracy_mean``
============  ===========================  =============================================

:data:`REQUIRED` lists the keys a folder of each kind must have once its stage finished;
:func:`read_metrics` fails with a message naming the folder, the file and the key when the
file, the kind or a required key is absent, so no reader has to guess.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils import CmeError, read_json, write_json

VERSION = 1
FILE = "metrics.json"
KIND_KEY = "kind"
VERSION_KEY = "contract"

TEACHER, LABELS, STUDENT, EVAL, EXTERNAL = "teacher", "labels", "student", "eval", "external"
KINDS = (TEACHER, LABELS, STUDENT, EVAL, EXTERNAL)

# fixed key names (the only spellings)
TEACHER_VAL_ACCURACY = "val_accuracy"
TEACHER_TEST_ACCURACY = "test_accuracy"
TEACHER_TRAINING = "training"
EVAL_AUC = "auc"
EVAL_MEAN_AUC = "mean_auc"
EXTERNAL_ACCURACY_MEAN = "accuracy_mean"
EXTERNAL_ACCURACY_STD = "accuracy_std"
EXTERNAL_RANDOM_ACCURACY_MEAN = "random_accuracy_mean"

# keys a finished stage's metrics.json must hold (the teacher's accuracies come later, from
# evaluate_teacher.py, so a trained but unevaluated teacher is still a teacher folder)
REQUIRED = {
    TEACHER: (),
    LABELS: ("frames", "clips"),
    STUDENT: (),
    EVAL: (EVAL_AUC, EVAL_MEAN_AUC),
    EXTERNAL: (EXTERNAL_ACCURACY_MEAN, EXTERNAL_ACCURACY_STD, EXTERNAL_RANDOM_ACCURACY_MEAN),
}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise CmeError(f"unknown run-folder kind {kind!r} (one of {', '.join(KINDS)})")
    return kind


def update_metrics(folder: str | os.PathLike, kind: str, **values) -> dict:
    """Merge ``values`` into ``FOLDER/metrics.json`` stamped with ``kind`` and the contract
    version (atomic write); returns the whole file. Refuses a folder that already holds
    another kind (e.g. an evaluation written into the teacher's run folder)."""
    _check_kind(kind)
    path = Path(folder) / FILE
    data = _load(path) if path.exists() else {}
    old = data.get(KIND_KEY)
    if old is not None and old != kind:
        raise CmeError(f"{path}: the folder is a {old!r} folder; refusing to write {kind!r} "
                       f"metrics into it (choose another output folder)")
    data.update(values)
    data[KIND_KEY] = kind
    data[VERSION_KEY] = VERSION
    write_json(path, data)
    return data


def write_metrics(folder: str | os.PathLike, kind: str, values: dict) -> dict:
    """Write ``FOLDER/metrics.json`` afresh (the stage's whole result), stamped with
    ``kind``; returns what was written (``values`` plus the two contract keys)."""
    _check_kind(kind)
    data = {**values, KIND_KEY: kind, VERSION_KEY: VERSION}
    write_json(Path(folder) / FILE, data)
    return data


def _load(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise CmeError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise CmeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def kind_of(folder: str | os.PathLike) -> str | None:
    """The kind a folder's metrics.json declares; None when there is no metrics.json.
    A metrics.json without a (known) kind is an error naming the file."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    data = _load(path)
    if KIND_KEY not in data:
        raise CmeError(f"{path}: no {KIND_KEY!r} field (written before the run-folder "
                       f"contract, tf_cme/metrics/contract.py; re-run the stage that wrote it)")
    kind = data[KIND_KEY]
    if kind not in KINDS:
        raise CmeError(f"{path}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    return kind


def read_metrics(folder: str | os.PathLike, expect: str | None = None) -> dict:
    """``FOLDER/metrics.json``, checked against the contract: the file exists, declares a
    known kind (``expect`` when given), a version this code reads, and the kind's
    :data:`REQUIRED` keys. Every failure is a :class:`CmeError` naming the file."""
    path = Path(folder) / FILE
    if not path.exists():
        raise CmeError(f"{folder}: no {FILE} (the stage that writes this folder has not "
                       f"finished, or this is not a tf-cme run folder)")
    kind = kind_of(folder)
    data = _load(path)
    if expect is not None and kind != _check_kind(expect):
        raise CmeError(f"{path}: kind {kind!r}, expected {expect!r}")
    version = data.get(VERSION_KEY)
    if not isinstance(version, int) or version > VERSION:
        raise CmeError(f"{path}: contract version {version!r}; this code reads up to {VERSION}")
    missing = [k for k in REQUIRED[kind] if k not in data]
    if missing:
        raise CmeError(f"{path}: kind {kind!r} without {', '.join(missing)}")
    return data
