"""Student evaluation on EmoVoxCeleb (the original's ``student_stats.m``, protocol §7.1).

For every track of a labelled emovox record set:

1. the student's logits on the whole utterance, with the front end
   in ``crop="bucket"`` mode: whole-clip normalisation, then the centred crop to the
   largest 100-frame bucket, at most 10 s (protocol §3.2);
2. scores = ``softmax(logits)`` (T = 1);
3. the teacher's label = argmax over emotions of the per-emotion max over all frames;
4. per split (train = set 1, heard = set 3, unheard = set 2) and emotion: ROC and AUC
   (:mod:`tf_cme.metrics.roc`), "not evaluable" without positives or negatives;
5. the mean AUC over present, non-ignored emotions (fear, disgust and contempt by
   default).

The jobs live in their own modules: the student's logits batched by bucket width
(:mod:`.scoring`), the gallery of the clips the teacher is most sure of (:mod:`.gallery`),
the TensorBoard PR curves and projector (:mod:`.tensorboard`), reading the records
(:mod:`.records`); this module runs the whole evaluation (:func:`evaluate`).

Outputs (``OUT/``): ``metrics.json``, ``config.json``, ``predictions.npz`` (keys, set
codes, student logits, per-emotion max teacher logits, teacher labels),
``figures/roc-<emotion>-<split>.png`` and ``figures/roc-grid.png``,
``figures/teacher-labels.png``, ``tensorboard/`` (PR curves per emotion and split, and
an embedding-projector export of the student's fc7 embedding and of its 8 logits, labelled
and coloured by the teacher label by default; a text summary for each emotion with no
positive in a split instead of an empty PR curve),
``gallery/`` (the clips the teacher is most sure of, for :mod:`tf_cme.evaluation.report`).
"""
from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import emotions, provenance
from ..data import schema as schema_lib
from ..metrics import contract, plots
from ..metrics import roc as roc_lib
from ..metrics.classification import softmax
from ..utils import CmeError, as_str, progress, write_bytes_atomic
from .gallery import Gallery
from .records import iterate_clips, open_records
from .scoring import StudentScorer, load_student
from .tensorboard import write_pr_curves, write_projector

#: set code -> split name (protocol §2.2), from the record schema
SET_TO_SPLIT: dict[int, str] = dict(schema_lib.SET_NAMES)


@dataclasses.dataclass
class StudentEvalConfig:
    # Each comment is also the --help text of the option (config.add_field_args).
    batch_size: int = 16                 # crops of equal bucket width per forward pass
    ignore: list[str] = dataclasses.field(
        default_factory=lambda: list(roc_lib.DEFAULT_IGNORE))   # emotions left out of the
                                         # mean AUC ('' for none)
    max_seconds: float = 0.0             # 0: the whole clip (protocol §3.2); else clamp at S s
    pr_thresholds: int = 101             # TensorBoard PR-curve thresholds
    gallery_size: int = 3                # clips per emotion kept for the report's gallery
    gallery_seconds: float = 6.0         # audio kept per gallery clip, centred on the peak frame
    frames_records: str = ""             # record set with the face frames of the same clips, for
                                         # the report's gallery ('': the labelled set's own frames,
                                         # or else its source records named in its manifest)
    per_split_figures: bool = True       # one PNG per emotion and split (besides the grid)
    limit: int = 0                       # evaluate only the first N tracks (0: all)


# ---------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------

def teacher_label(frame_logits: np.ndarray) -> int:
    """protocol §7.1 step 3: argmax over emotions of the per-emotion max over all frames."""
    return int(np.argmax(np.max(frame_logits, axis=0)))


#: skip reasons for tracks whose teacher or student logits are not all finite (issue 12.7)
NONFINITE_TEACHER = "non-finite teacher logits"
NONFINITE_STUDENT = "non-finite student logits"


def evaluate(run: str | os.PathLike, records: str | os.PathLike, out: str | os.PathLike,
             cfg: StudentEvalConfig | None = None, clips: Iterable[dict] | None = None,
             skip_corrupt: bool = False) -> dict:
    """Evaluate the student of ``run`` on the labelled emovox ``records``; write ``out``.

    ``clips`` (optional) replaces the record reader with an iterable of dicts with the
    ``clips_dataset`` fields (``key``, ``waveform``, ``set``, ``logits``, ``frames``,
    ``frame_times``). Returns the metrics dict (also in ``out/metrics.json``). Every shard
    read is checked (CRCs) first: a corrupt one is a CmeError naming it, or with
    ``skip_corrupt`` is left out and listed in ``skipped_corrupt_shards`` (those of the
    gallery's frame records in ``gallery_skipped_corrupt_shards``).
    """
    cfg = cfg or StudentEvalConfig()
    ignore = [emotions.canonical(e) for e in cfg.ignore]
    t0 = time.perf_counter()
    manifest = open_records(records) if clips is None else {}
    from ..data.pipelines import skipped_shards   # TensorFlow: after the records' checks
    skipped_shards_ = skipped_shards(records, None, skip_corrupt) if clips is None else []
    if cfg.frames_records:
        open_records(cfg.frames_records)
    model, model_path = load_student(run)
    origin = provenance.model_info(getattr(model, "cme_metadata", None))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = StudentScorer(model, batch_size=cfg.batch_size,
                           max_samples=int(round(cfg.max_seconds * schema_lib.SAMPLE_RATE)) or None,
                           embedding=True)
    gallery = Gallery(cfg.gallery_size, cfg.gallery_seconds)
    source = clips if clips is not None else iterate_clips(records, skip_corrupt=skip_corrupt)

    info: dict[str, dict] = {}
    skipped: dict[str, int] = {}

    def count(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    def feed():
        total = (sum(int(v.get("examples", 0)) for v in manifest.get("splits", {}).values())
                 if clips is None else (len(clips) if hasattr(clips, "__len__") else None))
        if cfg.limit:
            total = min(total, cfg.limit) if total else cfg.limit
        for i, ex in enumerate(progress(source, total=total or None, desc="student logits",
                                        unit="clip")):
            if cfg.limit and i >= cfg.limit:
                break
            key = as_str(ex["key"])
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
            if not np.all(np.isfinite(logits)):
                # NaN/inf teacher logits have no arg-max: never counted as neutral
                count(NONFINITE_TEACHER)
                continue
            info[key] = {"set": set_code, "teacher_max": np.max(logits, axis=0),
                         "teacher_label": teacher_label(logits)}
            gallery.offer(key, SET_TO_SPLIT[set_code], ex["waveform"], logits,
                          ex.get("frames"), ex.get("frame_times"))
            yield key, ex["waveform"]

    student: dict[str, np.ndarray] = {}
    for key, logits in scorer.score(feed()):
        if not np.all(np.isfinite(logits)):
            count(NONFINITE_STUDENT)   # a broken model or input: no score, counted
            continue
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
    for split in schema_lib.EMOVOX_SPLITS:
        sel = sets == schema_lib.SPLIT_SETS[split]
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
    for split in schema_lib.EMOVOX_SPLITS:
        sel = sets == schema_lib.SPLIT_SETS[split]
        if not sel.any():
            continue
        for c, emo in enumerate(emotions.FERPLUS):
            curves[f"{split}/{emo}"] = (t_label[sel] == c, probs[sel, c])
    no_positives = write_pr_curves(tb, curves, cfg.pr_thresholds)
    embedding = np.stack([scorer.embeddings[k] for k in keys]).astype(np.float32)
    write_projector(tb, {"student_fc7": embedding, "student_logits": s_logits},
                    [[emotions.FERPLUS[int(t)], k, SET_TO_SPLIT[int(s)],
                      emotions.FERPLUS[int(np.argmax(p))]]
                     for k, s, t, p in zip(keys, sets, t_label, probs)],
                    header=["teacher_label", "key", "split", "student_label"])

    # predictions and gallery
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), set=sets, student_logits=s_logits,
             teacher_max_logits=t_max, teacher_label=t_label)
    write_bytes_atomic(out / "predictions.npz", buf.getvalue())
    frames_dir = cfg.frames_records or None
    if frames_dir is None:                  # labelled records drop their frames by default
        src = (manifest.get("source_records") or {}).get("dir")
        frames_dir = src if src and (Path(src) / "manifest.json").exists() else None
    gallery_skipped: list[str] = []
    if frames_dir and gallery.missing_frames():
        gallery_skipped = skipped_shards(frames_dir, None, skip_corrupt)
        gallery.fill_frames(frames_dir, skip_corrupt=skip_corrupt)
    gallery.write(out / "gallery", student)

    metrics = {
        "model": str(model_path),
        # where the weights came from; the demo caveat (tf_cme.provenance)
        "provenance": origin["provenance"], "caveat": origin["caveat"],
        "records": str(records) if clips is None else "<in-memory clips>",
        "ignore": ignore,
        "auc": {split: {e: r.to_json() for e, r in per.items()} for split, per in results.items()},
        "mean_auc": mean_aucs,
        "tracks": tracks,
        "teacher_label_counts": label_counts,
        "skipped": skipped,
        "skipped_corrupt_shards": skipped_shards_,
        "gallery_skipped_corrupt_shards": gallery_skipped,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_scoring": round(seconds_scoring, 2),
        "pr_curves_without_positives": no_positives,
    }
    return contract.write_metrics(out, contract.EVAL, metrics)


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
