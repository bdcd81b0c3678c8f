"""Student evaluation on EmoVoxCeleb (the original's ``student_stats.m``, SPEC §7.1).

For every track of a labelled emovox record set:

1. the student's logits on the whole utterance (clamped to 19.9 s), with the front end
   in ``crop="bucket"`` mode: whole-clip normalisation, then the centred crop to the
   largest 100-frame bucket, at most 10 s (SPEC §3.2);
2. scores = ``softmax(logits)`` (T = 1);
3. the teacher's label = argmax over emotions of the per-emotion max over all frames;
4. per split (train = set 1, heard = set 3, unheard = set 2) and emotion: ROC and AUC
   (:mod:`tf_cme.evaluation.roc`), "not evaluable" without positives or negatives;
5. the mean AUC over present, non-ignored emotions (fear, disgust and contempt by
   default).

Batching: the front end runs per clip (its output depends on the whole clip), then the
rest of the network runs on batches of crops of equal bucket width, so the numbers are
those of a per-clip evaluation while the convolutions are batched. Clips shorter than
the smallest bucket (100 frames, 1.015 s) are skipped and counted (the original
dropped into the debugger).

Outputs (``OUT/``): ``metrics.json``, ``config.json``, ``predictions.npz`` (keys, set
codes, student logits, per-emotion max teacher logits, teacher labels),
``figures/roc-<emotion>-<split>.png`` and ``figures/roc-grid.png``,
``figures/teacher-labels.png``, ``tensorboard/`` (PR curves per emotion and split, and
an embedding-projector export of the 8-d student outputs coloured by teacher label),
``gallery/`` (the clips the teacher is most sure of, for :mod:`tf_cme.evaluation.report`).
"""
from __future__ import annotations

import dataclasses
import heapq
import io
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import emotions
from ..audio.io import write_wav
from ..data import schema as schema_lib
from ..utils import CmeError, progress, write_bytes_atomic, write_json
from ..metrics import plots
from ..metrics import roc as roc_lib
from ..metrics.classification import softmax

#: SPEC §3.1: "no clip is longer than this" (19.9 s at 16 kHz).
MAX_SAMPLES = 318_400
SAMPLE_RATE = 16_000
#: set code -> split name (SPEC §2.2), from the record schema
SET_TO_SPLIT: dict[int, str] = dict(schema_lib.SET_NAMES)


@dataclasses.dataclass
class StudentEvalConfig:
    batch_size: int = 16                 # crops of equal bucket width per forward pass
    ignore: list[str] = dataclasses.field(
        default_factory=lambda: list(roc_lib.DEFAULT_IGNORE))   # left out of the mean AUC
    max_seconds: float = 19.9            # clips are clamped to this before the front end
    pr_thresholds: int = 101             # TensorBoard PR-curve thresholds
    gallery_size: int = 3                # clips per emotion kept for the report's gallery
    gallery_seconds: float = 6.0         # audio kept per gallery clip, centred on the peak frame
    frames_records: str = ""             # record set holding the face frames for the gallery
                                         # (default: the labelled set's own frames, or else its
                                         # source records named in its manifest)
    per_split_figures: bool = True       # one PNG per emotion and split (besides the grid)
    limit: int = 0                       # evaluate only the first N tracks (0: all)


# ---------------------------------------------------------------------------------
# Student logits, batched by bucket width
# ---------------------------------------------------------------------------------

class StudentScorer:
    """Student logits for clips of any length, batched by bucket width.

    ``model``: the student as trained (any front-end mode); it is re-wired with
    ``tf_cme.models.student.with_frontend(model, crop="bucket", dither=False)``.
    Feed ``(id, waveform)`` pairs to :meth:`score`; results come back as
    ``(id, logits[8])`` in batch order (not input order).
    """

    def __init__(self, model, batch_size: int = 16, max_samples: int = MAX_SAMPLES):
        import tensorflow as tf
        from ..audio import frontend
        from ..models import student
        self.batch_size = max(1, int(batch_size))
        self.max_samples = int(max_samples)
        self.min_samples = frontend.samples_for_frames(frontend.MIN_BUCKET_FRAMES)
        self._frontend_mod = frontend
        self.model = student.with_frontend(model, crop="bucket", dither=False)
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
            body = keras.Model(spec.output, model.outputs[0])
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
                yield cid, np.asarray(self._whole_fn(x[None, :]))[0].astype(np.float32)
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
        out = np.asarray(self._body_fn(np.concatenate(specs, axis=0))).astype(np.float32)
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


# ---------------------------------------------------------------------------------
# Gallery: the clips the teacher is most sure of (the original's sample_audio.m)
# ---------------------------------------------------------------------------------

class _Gallery:
    """Per emotion, the ``k`` tracks with the highest teacher probability in any frame."""

    def __init__(self, k: int, seconds: float):
        self.k = k
        self.seconds = seconds
        self.heaps: list[list] = [[] for _ in emotions.FERPLUS]
        self._n = 0

    def offer(self, key: str, split: str, waveform, frame_logits, frames, frame_times):
        if self.k <= 0 or frame_logits.shape[0] == 0:
            return
        probs = softmax(frame_logits)                  # [F, 8]
        for c in range(len(emotions.FERPLUS)):
            f = int(np.argmax(probs[:, c]))
            conf = float(probs[f, c])
            heap = self.heaps[c]
            if len(heap) >= self.k and conf <= heap[0][0]:
                continue
            self._n += 1
            # frames, frame_times and logits rows are aligned (one row per face frame)
            aligned = frame_times is not None and len(frame_times) == frame_logits.shape[0]
            t = float(frame_times[f]) if aligned else 0.0
            half = int(self.seconds * SAMPLE_RATE / 2)
            centre = int(t * SAMPLE_RATE)
            wav = np.asarray(waveform, np.float32)
            lo = max(0, min(centre - half, wav.size - 2 * half))
            seg = wav[lo: lo + 2 * half]
            jpeg = (bytes(frames[f]) if frames is not None
                    and len(frames) == frame_logits.shape[0] else b"")
            item = (conf, self._n, {"key": key, "split": split, "emotion": emotions.FERPLUS[c],
                                    "confidence": conf, "frame_index": f, "time_s": t,
                                    "teacher_probs": probs[f].tolist(),
                                    "segment_start_s": lo / SAMPLE_RATE,
                                    "_wav": seg.copy(), "_jpeg": jpeg})
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def missing_frames(self) -> set[str]:
        return {item["key"] for heap in self.heaps for _, _, item in heap if not item["_jpeg"]}

    def fill_frames(self, records: str | os.PathLike) -> int:
        """Take the peak face frames of the kept clips from another record set of the same
        clips (labelled records are written without their JPEG frames by default)."""
        wanted = self.missing_frames()
        found = 0
        for ex in iterate_clips(records):
            key = _as_str(ex["key"])
            if key not in wanted:
                continue
            frames = ex.get("frames")
            for heap in self.heaps:
                for _, _, item in heap:
                    if item["key"] == key and frames is not None and \
                            len(frames) > item["frame_index"]:
                        item["_jpeg"] = bytes(frames[item["frame_index"]])
            wanted.discard(key)
            found += 1
            if not wanted:
                break
        return found

    def write(self, out: Path, student_logits: dict[str, np.ndarray]) -> list[dict]:
        entries = []
        for c, heap in enumerate(self.heaps):
            for rank, (_, _, item) in enumerate(sorted(heap, key=lambda t: -t[0])):
                stem = f"{emotions.FERPLUS[c]}-{rank + 1}"
                entry = {k: v for k, v in item.items() if not k.startswith("_")}
                entry["rank"] = rank + 1
                if item["_jpeg"]:
                    write_bytes_atomic(out / f"{stem}.jpg", item["_jpeg"])
                    entry["frame"] = f"{stem}.jpg"
                if item["_wav"].size:
                    write_wav(out / f"{stem}.wav", item["_wav"], SAMPLE_RATE)
                    entry["audio"] = f"{stem}.wav"
                logits = student_logits.get(item["key"])
                entry["student_probs"] = (softmax(logits).tolist()
                                          if logits is not None else None)
                entries.append(entry)
        write_json(out / "gallery.json", {"classes": list(emotions.FERPLUS),
                                          "entries": entries})
        return entries


# ---------------------------------------------------------------------------------
# TensorBoard: PR curves and the embedding projector
# ---------------------------------------------------------------------------------

def pr_curve_data(labels, probs, num_thresholds: int = 101) -> np.ndarray:
    """The pr_curves plugin's ``[6, T]`` tensor (TP, FP, TN, FN, precision, recall),
    computed as ``tensorboard.plugins.pr_curve.summary.pb`` does."""
    labels = np.asarray(labels, bool)
    probs = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    buckets = np.floor(probs * (num_thresholds - 1)).astype(np.int64)
    tp_b = np.bincount(buckets[labels], minlength=num_thresholds).astype(np.float64)
    fp_b = np.bincount(buckets[~labels], minlength=num_thresholds).astype(np.float64)
    tp = np.cumsum(tp_b[::-1])[::-1]
    fp = np.cumsum(fp_b[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)


def write_pr_curves(logdir: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                    num_thresholds: int = 101, step: int = 0) -> None:
    """One PR-curve summary per tag (``{tag: (binary labels, probabilities)}``), in the
    TensorBoard pr_curves plugin format (``tf.summary.write`` with the plugin's metadata;
    the plugin's own ``op``/``raw_data_op`` are TF1 graph ops)."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import metadata as pr_metadata
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for tag, (labels, probs) in curves.items():
            md = pr_metadata.create_summary_metadata(
                display_name=tag, description=f"student PR curve: {tag}",
                num_thresholds=num_thresholds)
            tf.summary.write(f"{tag}/pr_curves", pr_curve_data(labels, probs, num_thresholds),
                             step=step, metadata=md.SerializeToString())
    writer.flush()
    writer.close()


def write_projector(logdir: Path, vectors: np.ndarray, metadata_rows: list[list[str]],
                    header: list[str], name: str = "student_logits") -> None:
    """Embedding-projector export: ``<name>.tsv`` vectors, ``<name>_metadata.tsv`` (with a
    header row), and ``projector_config.pbtxt`` in ``logdir``."""
    from tensorboard.plugins import projector
    logdir.mkdir(parents=True, exist_ok=True)
    vec_text = "\n".join("\t".join(f"{v:.6g}" for v in row) for row in vectors) + "\n"
    write_bytes_atomic(logdir / f"{name}.tsv", vec_text.encode())
    clean = [[str(c).replace("\t", " ").replace("\n", " ") for c in row] for row in metadata_rows]
    md_text = "\n".join("\t".join(r) for r in [header] + clean) + "\n"
    write_bytes_atomic(logdir / f"{name}_metadata.tsv", md_text.encode())
    config = projector.ProjectorConfig()
    emb = config.embeddings.add()
    emb.tensor_name = name
    emb.tensor_path = f"{name}.tsv"
    emb.metadata_path = f"{name}_metadata.tsv"
    emb.tensor_shape.extend([int(vectors.shape[0]), int(vectors.shape[1])])
    projector.visualize_embeddings(str(logdir), config)


# ---------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------

def teacher_label(frame_logits: np.ndarray) -> int:
    """SPEC §7.1 step 3: argmax over emotions of the per-emotion max over all frames."""
    return int(np.argmax(np.max(frame_logits, axis=0)))


def _as_str(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _as_str(v.item())
    return str(v)


def open_records(records: str | os.PathLike, schema: str = "emovox") -> dict:
    """The manifest of a record set, with clear errors for a missing folder or another schema."""
    from ..data import records as records_lib
    if not Path(records).is_dir():
        raise CmeError(f"{records}: no such record folder")
    return records_lib.read_manifest(records, expect_schema=schema)


def iterate_clips(records: str | os.PathLike) -> Iterator[dict]:
    """Emovox clips as NumPy dicts (``clips_dataset`` of the records pipeline)."""
    from ..data import pipelines
    yield from pipelines.clips_dataset(str(records)).as_numpy_iterator()


def evaluate(run: str | os.PathLike, records: str | os.PathLike, out: str | os.PathLike,
             cfg: StudentEvalConfig | None = None, clips: Iterable[dict] | None = None) -> dict:
    """Evaluate the student of ``run`` on the labelled emovox ``records``; write ``out``.

    ``clips`` (optional) replaces the record reader with an iterable of dicts with the
    ``clips_dataset`` fields (``key``, ``waveform``, ``set``, ``logits``, ``frames``,
    ``frame_times``). Returns the metrics dict (also in ``out/metrics.json``).
    """
    cfg = cfg or StudentEvalConfig()
    ignore = [emotions.canonical(e) for e in cfg.ignore]
    t0 = time.perf_counter()
    manifest = open_records(records) if clips is None else {}
    if cfg.frames_records:
        open_records(cfg.frames_records)
    model, model_path = load_student(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = StudentScorer(model, batch_size=cfg.batch_size,
                           max_samples=int(round(cfg.max_seconds * SAMPLE_RATE)))
    gallery = _Gallery(cfg.gallery_size, cfg.gallery_seconds)
    source = clips if clips is not None else iterate_clips(records)

    info: dict[str, dict] = {}
    skipped: dict[str, int] = {}

    def count(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    def feed():
        for i, ex in enumerate(progress(source, desc="student logits", unit="clip")):
            if cfg.limit and i >= cfg.limit:
                break
            key = _as_str(ex["key"])
            set_code = int(ex["set"])
            if set_code not in SET_TO_SPLIT:
                count(f"unknown set code {set_code}")
                continue
            logits = np.asarray(ex.get("logits", np.zeros((0, 8))), np.float32)
            if logits.ndim != 2 or logits.shape[0] == 0:
                count("no teacher logits (unlabelled track)")
                continue
            if logits.shape[1] != emotions.NUM_CLASSES:
                raise CmeError(f"{records}: track {key}: teacher logits have "
                               f"{logits.shape[1]} classes, expected {emotions.NUM_CLASSES}")
            if key in info:
                count("duplicate key")
                continue
            info[key] = {"set": set_code, "teacher_max": np.max(logits, axis=0),
                         "teacher_label": teacher_label(logits)}
            gallery.offer(key, SET_TO_SPLIT[set_code], ex["waveform"], logits,
                          ex.get("frames"), ex.get("frame_times"))
            yield key, ex["waveform"]

    student: dict[str, np.ndarray] = {}
    for key, logits in scorer.score(feed()):
        student[key] = logits
    for reason, n in scorer.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + n
    keys = [k for k in info if k in student]
    if not keys:
        raise CmeError(f"{records}: no track could be evaluated (skipped: {skipped or 'none'}); "
                       f"are these the labelled records (label_faces.py output)?")
    seconds_scoring = time.perf_counter() - t0

    sets = np.array([info[k]["set"] for k in keys], np.int32)
    s_logits = np.stack([student[k] for k in keys]).astype(np.float32)
    t_max = np.stack([info[k]["teacher_max"] for k in keys]).astype(np.float32)
    t_label = np.array([info[k]["teacher_label"] for k in keys], np.int32)
    probs = softmax(s_logits)

    results: dict[str, dict[str, roc_lib.RocResult]] = {}
    mean_aucs: dict[str, float | None] = {}
    tracks: dict[str, int] = {}
    label_counts: dict[str, dict[str, int]] = {}
    for split, code in schema_lib.SPLIT_SETS.items():
        sel = sets == code
        tracks[split] = int(sel.sum())
        label_counts[split] = {e: int(np.sum(t_label[sel] == c))
                               for c, e in enumerate(emotions.FERPLUS)}
        results[split] = roc_lib.per_emotion_roc(t_label[sel], probs[sel], split=split)
        mean_aucs[split] = roc_lib.mean_auc(results[split], ignore)

    # figures
    figs = out / "figures"
    panels = ({(split, emo): figs / f"roc-{emo}-{split}.png"
               for split in schema_lib.EMOVOX_SPLITS for emo in emotions.FERPLUS}
              if cfg.per_split_figures else None)
    plots.plot_roc_grid(results, figs / "roc-grid.png", emotions_order=list(emotions.FERPLUS),
                        splits=list(schema_lib.EMOVOX_SPLITS), panel_paths=panels,
                        title="student ROC per emotion and split (tracks: " + ", ".join(
                            f"{s} {tracks[s]}" for s in schema_lib.EMOVOX_SPLITS) + ")")
    plots.plot_histogram({e: int(np.sum(t_label == c)) for c, e in enumerate(emotions.FERPLUS)},
                         figs / "teacher-labels.png", title="teacher labels (all tracks)",
                         ylabel="tracks", log=True)

    # TensorBoard
    tb = out / "tensorboard"
    curves = {}
    for split, code in schema_lib.SPLIT_SETS.items():
        sel = sets == code
        if not sel.any():
            continue
        for c, emo in enumerate(emotions.FERPLUS):
            curves[f"{split}/{emo}"] = (t_label[sel] == c, probs[sel, c])
    write_pr_curves(tb, curves, cfg.pr_thresholds)
    write_projector(tb, s_logits, [[k, SET_TO_SPLIT[int(s)], emotions.FERPLUS[int(t)],
                                    emotions.FERPLUS[int(np.argmax(p))]]
                                   for k, s, t, p in zip(keys, sets, t_label, probs)],
                    header=["key", "split", "teacher_label", "student_label"])

    # predictions and gallery
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), set=sets, student_logits=s_logits,
             teacher_max_logits=t_max, teacher_label=t_label)
    write_bytes_atomic(out / "predictions.npz", buf.getvalue())
    frames_dir = cfg.frames_records or None
    if frames_dir is None:                  # labelled records drop their frames by default
        src = (manifest.get("source_records") or {}).get("dir")
        frames_dir = src if src and (Path(src) / "manifest.json").exists() else None
    if frames_dir and gallery.missing_frames():
        gallery.fill_frames(frames_dir)
    gallery.write(out / "gallery", student)

    metrics = {
        "model": str(model_path),
        "records": str(records) if clips is None else "<in-memory clips>",
        "ignore": ignore,
        "auc": {split: {e: r.to_json() for e, r in per.items()} for split, per in results.items()},
        "mean_auc": mean_aucs,
        "tracks": tracks,
        "teacher_label_counts": label_counts,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_scoring": round(seconds_scoring, 2),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def format_table(metrics: dict) -> str:
    """The AUC table (emotion x split) as fixed-width text."""
    splits = list(schema_lib.EMOVOX_SPLITS)
    lines = [f"{'emotion':<10} " + " ".join(f"{s:>16}" for s in splits)]
    for emo in emotions.FERPLUS:
        row = []
        for s in splits:
            r = metrics["auc"].get(s, {}).get(emo)
            if r is None or not r["evaluable"]:
                row.append(f"{'n/e':>16}")
            else:
                row.append(f"{r['auc']:>9.3f} ({r['positives']:>4})")
        mark = " (ignored)" if emo in metrics.get("ignore", []) else ""
        lines.append(f"{emo:<10} " + " ".join(row) + mark)
    lines.append(f"{'mean':<10} " + " ".join(
        f"{metrics['mean_auc'][s]:>16.3f}" if metrics["mean_auc"].get(s) is not None
        else f"{'n/e':>16}" for s in splits))
    lines.append("n/e = not evaluable (no positive or no negative example); "
                 "(n) = tracks with that teacher label")
    return "\n".join(lines)
