"""FER+ evaluation of a teacher (protocol §4.3, ``teacher/benchmark_ferplus_models.m``).

Accuracy = 1 - top-1 error of the argmax of the logits against the majority-vote hard
label, on the cleaned val (PublicTest) and test (PrivateTest) splits; the network in
test mode (dropout off, BN running moments), no flip, no augmentation. Also the recall
of each class and the confusion matrix (a PNG per split in ``RUN/figures/``).
"""
from __future__ import annotations

import os

import numpy as np

from .. import emotions, provenance
from ..runs import Run
from ..metrics import contract
from ..metrics.classification import confusion_matrix, recall_per_class
from ..training.teacher import make_predict_fn, predict_split
from ..utils import CmeError


def evaluate(model_path: str | os.PathLike, records: str | os.PathLike,
             out_dir: str | os.PathLike, splits=("val", "test"), batch_size: int = 256,
             skip_corrupt: bool = False) -> dict:
    """Evaluate ``model_path`` on ``splits`` of the FER+ record set ``records``; writes
    ``metrics.json`` (``<split>_accuracy``, ``<split>_recall``, ``<split>_confusion``,
    ``<split>_examples``, ``skipped_corrupt_shards``: the corrupt shards left out with
    ``skip_corrupt``, else each is a CmeError naming it) and
    ``figures/confusion-<split>.png`` into ``out_dir``."""
    from ..data.pipelines import skipped_shards
    from ..data import records as records_lib
    from ..models.io import load_model
    from ..metrics.plots import plot_confusion

    manifest = records_lib.read_manifest(records, expect_schema="ferplus")
    missing = [s for s in splits if s not in manifest["splits"]]
    if missing:
        raise CmeError(f"{records}: no split(s) {', '.join(missing)} "
                       f"(has {', '.join(manifest['splits'])})")
    skipped = skipped_shards(records, list(splits), skip_corrupt)
    model = load_model(model_path)
    md = getattr(model, "cme_metadata", {})
    classes = md.get("class_names", list(emotions.FERPLUS))
    if list(classes) != list(emotions.FERPLUS):
        raise CmeError(f"{model_path}: model classes {classes} are not the FER+ classes")
    run = Run.create(out_dir)
    info = provenance.model_info(md)
    out: dict = {"model": str(model_path), "records": str(records),
                 "provenance": info["provenance"], "caveat": info["caveat"],
                 "skipped_corrupt_shards": skipped}
    predict_fn = make_predict_fn(model)
    for split in splits:
        logits, labels, _ = predict_split(model, records, split, batch_size=batch_size,
                                          predict_fn=predict_fn, skip_corrupt=skip_corrupt)
        preds = logits.argmax(-1) if len(logits) else np.zeros((0,), np.int64)
        cm = confusion_matrix(labels, preds, emotions.NUM_CLASSES)
        acc = float((preds == labels).mean()) if len(labels) else None
        out[f"{split}_accuracy"] = acc
        out[f"{split}_examples"] = int(len(labels))
        out[f"{split}_recall"] = recall_per_class(cm)
        out[f"{split}_confusion"] = cm.tolist()
        rows = cm.sum(1, keepdims=True)
        plot_confusion(np.divide(cm, np.maximum(rows, 1)), list(emotions.FERPLUS),
                       path=run.figures / f"confusion-{split}.png",
                       title=f"FER+ {split}: accuracy {acc:.3f}" if acc is not None
                       else f"FER+ {split}")
    contract.update_metrics(run.path, contract.TEACHER, **out)
    return out
