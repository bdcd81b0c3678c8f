"""Tiny run folders and exports for tests (untrained models: invented data).

Their models carry the demo provenance (``demo-synthetic``, tf_cme.provenance) like every
model made from invented data, so that each output they reach (predict, the exported
signatures, serving clients) carries the demo caveat, as the tests check.

:func:`make_tiny_runs` writes an untrained student and teacher in the ``make demo`` run-folder
layout, a calibration in the sibling ``external/`` folder, and their SavedModel exports, so
that the export, serving and prediction tests need no training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


#: Calibration used by the tiny fixture runs (an RML-like 6-class logistic layer).
TINY_CALIBRATION_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise"]
_TINY_CACHE: dict[str, dict] = {}


def make_tiny_runs(root: str | Path, *, student_width: float = 1 / 16,
                   teacher: str = "resnet50-ferplus", teacher_width: float = 1 / 16,
                   teacher_input_size: int = 32, seed: int = 0) -> dict:
    """Tiny, untrained student and teacher run folders in the make-demo layout, with a
    calibration.json in the sibling ``external/`` folder, both exported to
    ``root/export`` (for tests; the same call in one process returns the cached result).

    Returns paths: ``student_run``, ``teacher_run``, ``export``, ``calibration``,
    ``student_version``, ``teacher_version`` and the Keras ``student`` / ``teacher``.
    """
    root = Path(root)
    key = str(root.resolve())
    if key in _TINY_CACHE and root.exists():
        return _TINY_CACHE[key]
    import keras

    from .. import emotions
    from ..models import build_model
    from ..models import io as model_io
    from ..serving import export as ex
    from ..utils import write_json
    keras.utils.set_random_seed(seed)
    student = build_model("emovoxceleb-student", width=student_width)
    teach = build_model(teacher, width=teacher_width, input_size=teacher_input_size)
    from ..provenance import DEMO
    runs = {}
    for name, model in (("student", student), ("teacher", teach)):
        model.cme_metadata["provenance"] = DEMO        # invented: say so everywhere
        run = root / name
        run.mkdir(parents=True, exist_ok=True)
        write_json(run / "config.json", {"model": model.cme_metadata["name"], "tiny": True})
        model_io.save_model(model, run / "model.keras")
        runs[name] = run
    rng = np.random.default_rng(seed)
    cal = {"dataset": "rml", "classes": TINY_CALIBRATION_CLASSES,
           "weights": rng.normal(size=(emotions.NUM_CLASSES,
                                       len(TINY_CALIBRATION_CLASSES))).round(4).tolist(),
           "bias": rng.normal(size=len(TINY_CALIBRATION_CLASSES)).round(4).tolist()}
    write_json(root / "external" / "calibration.json", cal)
    # export the built models (the same weights as the saved ones; export_run, which
    # loads model.keras, is what scripts/export_model.py runs)
    found = ex.find_calibration(runs["student"])
    s = ex.export_model(student, root / "export", calibration=ex.load_calibration(found),
                        source=str(runs["student"] / "model.keras"))
    t = ex.export_model(teach, root / "export", source=str(runs["teacher"] / "model.keras"))
    out = {"root": root, "student_run": runs["student"], "teacher_run": runs["teacher"],
           "export": root / "export", "calibration": root / "external" / "calibration.json",
           "student_version": s.path, "teacher_version": t.path,
           "student": student, "teacher": teach}
    _TINY_CACHE[key] = out
    return out
