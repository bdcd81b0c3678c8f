"""The student's logits for clips of any length, as the original evaluation computes them
(protocol §3.2), batched by bucket width.

The front end runs per clip (its output depends on the whole clip), then the rest of the
network runs on batches of crops of equal bucket width, so the numbers are those of a
per-clip evaluation while the convolutions are batched. Clips shorter than the smallest
bucket (100 frames, 1.015 s) are skipped and counted (the original dropped into the
debugger).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..data.schema import MAX_SAMPLES
from ..utils import CmeError


class StudentScorer:
    """Student logits for clips of any length, batched by bucket width.

    ``model``: the student as trained (any front-end mode); it runs as
    :func:`tf_cme.models.student.serving_student` makes it (bucket crop, no dither).
    Feed ``(id, waveform)`` pairs to :meth:`score`; results come back as
    ``(id, logits[8])`` in batch order (not input order).
    """

    def __init__(self, model, batch_size: int = 16, max_samples: int | None = MAX_SAMPLES,
                 embedding: bool = False):
        import tensorflow as tf
        from ..models import student
        self.batch_size = max(1, int(batch_size))
        self.max_samples = int(max_samples) if max_samples else None   # None: whole clips
        self.min_samples = student.MIN_SERVING_SAMPLES
        self.model = student.serving_student(model, embedding=embedding)
        #: with ``embedding=True``: id -> the clip's embedding (fc7), filled as it scores
        self.embeddings: dict[Any, np.ndarray] = {}
        self._spec, self._body = self._split(self.model)
        if self._spec is not None:
            spec, body = self._spec, self._body
            self._front_fn = tf.function(
                lambda x: spec(x, training=False),
                input_signature=[tf.TensorSpec([1, None], tf.float32)])
            self._body_fn = tf.function(lambda s: body(s, training=False),
                                        reduce_retracing=True)
        else:                                       # no separable front end: per clip
            m = self.model
            self._whole_fn = tf.function(
                lambda x: m(x, training=False),
                input_signature=[tf.TensorSpec([1, None], tf.float32)])
        self.skipped: dict[str, int] = {}

    @staticmethod
    def _split(model):
        """(front-end layer, body model) when the first layer after the input is the
        Spectrogram; (None, None) otherwise."""
        import keras
        specs = [layer for layer in model.layers if type(layer).__name__ == "Spectrogram"]
        if len(specs) != 1:
            return None, None
        spec = specs[0]
        try:
            if spec.input is not model.inputs[0] and spec.input is not model.input:
                return None, None
            body = keras.Model(spec.output, model.outputs if len(model.outputs) > 1
                               else model.outputs[0])
        except Exception:                           # pragma: no cover - unusual graphs
            return None, None
        return spec, body

    def _skip(self, reason: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _prepare(self, waveform) -> np.ndarray | None:
        x = np.asarray(waveform, np.float32).reshape(-1)[: self.max_samples]
        if x.size < self.min_samples:
            self._skip(f"shorter than the smallest bucket ({self.min_samples} samples)")
            return None
        if not np.all(np.isfinite(x)):
            self._skip("non-finite audio")
            return None
        return x

    def score(self, clips: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        if self._spec is None:
            for cid, wav in clips:
                x = self._prepare(wav)
                if x is None:
                    continue
                out = self._whole_fn(x[None, :])
                yield from self._emit([cid], out)
            return
        pending: dict[int, tuple[list, list]] = {}
        for cid, wav in clips:
            x = self._prepare(wav)
            if x is None:
                continue
            spec = np.asarray(self._front_fn(x[None, :]))       # [1, 512, w, 1]
            w = spec.shape[2]
            ids, specs = pending.setdefault(w, ([], []))
            ids.append(cid)
            specs.append(spec)
            if len(ids) >= self.batch_size:
                yield from self._run(ids, specs)
                del pending[w]
        for w in sorted(pending):
            ids, specs = pending[w]
            yield from self._run(ids, specs)

    def _run(self, ids, specs):
        yield from self._emit(ids, self._body_fn(np.concatenate(specs, axis=0)))

    def _emit(self, ids, out):
        if isinstance(out, (list, tuple)):                 # (logits, embedding)
            out, emb = out
            emb = np.asarray(emb, np.float32).reshape(len(ids), -1)    # [B, 1, 1, D] -> [B, D]
            for i, cid in enumerate(ids):
                self.embeddings[cid] = emb[i]
        out = np.asarray(out).astype(np.float32)
        for i, cid in enumerate(ids):
            yield cid, out[i]


def load_student(run: str | os.PathLike):
    """The student of a run folder (``RUN/model.keras``, or a ``.keras`` file)."""
    from ..models import io as model_io
    path = Path(run)
    model_path = path if path.suffix == ".keras" else path / "model.keras"
    if path.suffix != ".keras" and not path.is_dir():
        raise CmeError(f"{path}: no such run folder")
    if not model_path.exists():
        ckpts = path / "checkpoints"
        n = len(list(ckpts.glob("*"))) if ckpts.is_dir() else 0
        raise CmeError(f"{path}: no model.keras: the run has not finished training, or this "
                       f"is not a student run folder (checkpoints: {n} files)")
    model = model_io.load_model(model_path)
    md = getattr(model, "cme_metadata", {}) or {}
    if md.get("kind") not in (None, "student"):
        raise CmeError(f"{model_path}: a {md.get('kind')} model ({md.get('name')}), "
                       f"not a student")
    return model, model_path


