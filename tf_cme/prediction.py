"""Emotion scores for audio and video files (``scripts/predict.py``).

For each input file: the audio (wav, flac, ogg, mp3 at any rate, mono or stereo, or
the audio track of an mp4 / avi / mov) is read with :func:`tf_cme.audio.io.load_audio`
(16 kHz mono float32) and scored by the speech student, either an exported SavedModel
(its ``serving_default`` signature) or a Keras ``.keras`` student (run with the
serving front end: ``crop="bucket"``, dither off, as the export does).

- A file no longer than ``window`` seconds is scored whole (as the original evaluation
  does: spectrogram statistics over the whole clip, centred 100-frame bucket).
- A clip shorter than the student's minimum (100 frames, 16,240 samples, 1.015 s) is
  not scored: ``status: "error"``, ``message`` ``short: D s is below the student's
  minimum of 1.015 s ...``. The exported signatures refuse the same clips (``audio too
  short``), so predict.py, TF Serving and evaluation (a counted skip) make one decision
  for one file (protocol §3.2). A ``.tflite`` student has one fixed window: clips
  between 1.015 s and that window are zero-padded to it, with a ``short:`` warning.
- Every result has ``warnings`` (a list; in CSV a ``;``-joined column):
  ``truncated: header says N samples, file holds M`` (a WAV cut short: what it holds
  is scored), ``clipped: K samples beyond ±1`` (a float WAV; scored clipped to ±1, the
  range of the 16-bit audio the student was trained and is served on), ``short: ...``
  (a ``.tflite`` student's padding).
- A longer file gets a ``timeline``: windows of ``window`` seconds every ``hop``
  seconds (the last one aligned with the end of the file), each scored on its own; the
  file's ``probabilities`` are the mean over its non-silent windows.
- A file (or window) whose level stays under ``silence_dbfs`` (its peak,
  :func:`tf_cme.audio.io.audio_dbfs`, is lower) is ``status: "silent"``, with no
  emotion: silence is not an error.
- A file that cannot be scored (unreadable, no audio track, zero length, NaN samples)
  is ``status: "error"`` with a ``message``; the other files are still processed.

With ``faces=True`` and a teacher (exported or ``.keras``), video files also get a
``faces`` entry: every 6th frame at 25 fps (as VoxCeleb's face tracks), the largest
face found by :func:`tf_cme.vision.faces.detect_faces`, cropped with the VoxCeleb 1.6x
convention and centre-cropped back to the face (protocol §4.4), scored by the teacher; per
frame a timeline entry, and the mean probabilities over the frames with a face.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import emotions, provenance
from .audio.constants import SAMPLE_RATE, TRAIN_CROP_SECONDS
from .utils import CmeError

DEFAULT_MODEL = "runs/demo/export/emovoxceleb-student"

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclasses.dataclass
class PredictConfig:
    # Each comment is also the --help text of the option (config.add_field_args).
    model: str = DEFAULT_MODEL        # student: exported SavedModel (a version folder, or a model
                                      # folder = its newest version), a .keras file, a run folder,
                                      # or a .tflite file from export_model.py --tflite (its fixed
                                      # window; needs ai-edge-litert)
    window: float = TRAIN_CROP_SECONDS  # seconds: files longer than this get a timeline of
                                        # windows this long (4.024 s = 400 frames, the training crop)
    hop: float = 2.0                  # seconds between timeline windows
    silence_dbfs: float = -60.0       # files (and windows) whose peak level is under this are
                                      # "silent"
    batch_size: int = 16              # windows or face frames per model call
    faces: bool = False               # also score the faces of video files with --teacher
    teacher: str | None = None        # teacher for --faces: exported SavedModel, .keras file or
                                      # run folder
    face_method: Literal["haar", "mtcnn"] = "haar"   # face detector for --faces
    face_fps: float = 25.0            # video frames: resampled to this rate ...
    face_stride: int = 6              # ... and every 6th taken (VoxCeleb frames)
    enlarge: float = 1.6              # VoxCeleb face-box enlargement
    embedding: bool = False           # also output each file's embedding (the student's fc7 after
                                      # its ReLU; the mean over the non-silent windows of a long
                                      # file); JSON only


# --------------------------------------------------------------------------- predictors

def _softmax(z: np.ndarray) -> np.ndarray:
    from .metrics.classification import softmax
    return softmax(z).astype(np.float32)


def _resolve_model_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir() and (p / "model.keras").exists() and not (p / "saved_model.pb").exists():
        return p / "model.keras"                     # a run folder
    return p


def require_model_path(path: str | os.PathLike) -> Path:
    """The model file or folder ``path`` names (a run folder: its model.keras), or a
    CmeError; checked without importing TensorFlow."""
    p = _resolve_model_path(path)
    if not p.exists():
        hint = (" (the default exists only in a checkout after `make demo`; run "
                "scripts/export_model.py or pass --model)" if str(path) == DEFAULT_MODEL else "")
        raise CmeError(f"{path}: no such model{hint}")
    return p


class Predictor:
    """A student or teacher, exported or Keras, as ``batch -> {"logits", "probabilities"}``."""

    def __init__(self, fn, kind: str, name: str, source: str, min_samples: int = 0,
                 input_size: int | None = None, fixed_samples: int | None = None,
                 metadata: dict | None = None):
        self._fn, self.kind, self.name, self.source = fn, kind, name, source
        self.min_samples, self.input_size = min_samples, input_size
        self.fixed_samples = fixed_samples    # a .tflite student: its one window length
        self.metadata = metadata or {}        # the model's tf-cme metadata ({}: none known)

    @property
    def info(self) -> dict:
        """``{"name", "source", "provenance", "caveat"}`` (tf_cme.provenance): the
        ``model`` field of every result."""
        return {**provenance.model_info(self.metadata, self.source), "name": self.name}

    @property
    def has_embedding(self) -> bool:
        """Whether calls return ``embedding`` too (students from .keras or SavedModel)."""
        return getattr(self, "_embedding", False)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logits", "probabilities"}`` [B, 8] and, when :attr:`has_embedding`,
        ``embedding`` [B, D]."""
        out = self._fn(batch)
        emb = None
        if isinstance(out, tuple):
            out, emb = out
        logits = np.asarray(out, np.float32)
        res = {"logits": logits, "probabilities": _softmax(logits)}
        if emb is not None:
            res["embedding"] = np.asarray(emb, np.float32).reshape(len(logits), -1)
        return res

    @classmethod
    def load(cls, path: str | os.PathLike, expect: str) -> "Predictor":
        """Load ``path`` (SavedModel version or model folder, ``.keras`` file or run
        folder); ``expect`` is "student" or "teacher"."""
        p = require_model_path(path)
        if p.suffix == ".tflite":                # LiteRT only: no TensorFlow
            return cls._load_tflite(p, expect)
        import tensorflow as tf
        from .serving import export as ex
        if p.is_file():
            from .models import io as model_io
            model = model_io.load_model(p)
            md = model.cme_metadata
            kind, name = md.get("kind"), md.get("name", p.stem)
            if kind != expect:
                raise CmeError(f"{p}: a {kind} model, but a {expect} is needed here")
            if kind == "student":
                from .models.student import serving_student
                model = serving_student(model, embedding=True)
                spec = tf.TensorSpec([None, None], tf.float32)
                size = None

                def call(b):
                    logits, emb = fn(tf.constant(b))
                    return logits.numpy(), emb.numpy()
            else:
                spec = tf.TensorSpec([None, None, None, None], tf.uint8)
                size = model_io.input_size(model)

                def call(b):
                    return fn(tf.constant(b)).numpy()
            fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            pred = cls(call, kind, name, str(p),
                       ex.MIN_SAMPLES if kind == "student" else 0, size, metadata=md)
            pred._embedding = kind == "student"
            return pred
        version_dir = ex.resolve_saved_model(p)
        md = ex.read_export_metadata(version_dir)
        kind = md.get("kind")
        if kind is not None and kind != expect:
            raise CmeError(f"{version_dir}: an exported {kind}, but a {expect} is needed here")
        loaded = tf.saved_model.load(str(version_dir))
        sig = loaded.signatures["serving_default"]
        key = next(iter(sig.structured_input_signature[1]))
        dtype = sig.structured_input_signature[1][key].dtype

        with_emb = expect == "student" and "embedding" in sig.structured_outputs

        def fn(b):
            out = sig(**{key: tf.constant(b, dtype=dtype)})
            if with_emb:
                return out["logits"].numpy(), out["embedding"].numpy()
            return out["logits"].numpy()
        pred = cls(fn, expect, md.get("name", version_dir.parent.name), str(version_dir),
                   int(md.get("min_samples", ex.MIN_SAMPLES)) if expect == "student" else 0,
                   (md.get("model_metadata") or {}).get("input_size"),
                   metadata=md.get("model_metadata") or {})
        pred._embedding = with_emb
        return pred


    @classmethod
    def _load_tflite(cls, p: Path, expect: str) -> "Predictor":
        """A .tflite file from export_model.py --tflite, run in LiteRT (batch 1 inside);
        its tf-cme metadata (provenance, caveat) from the file's metadata table ({} for a
        file exported before tf-cme embedded it: provenance "unknown")."""
        from .serving.tflite import Interpreter, read_tflite_metadata
        md = read_tflite_metadata(p)
        it = Interpreter(model_path=str(p))
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        shape, dtype = tuple(int(v) for v in inp["shape"]), inp["dtype"]
        kind = ("student" if len(shape) == 2 and dtype == np.float32 else
                "teacher" if len(shape) == 4 and dtype == np.uint8 else None)
        if kind is None:
            raise CmeError(f"{p}: input {shape} {np.dtype(dtype).name} is neither a tf-cme "
                           f"student (float32 [1, samples]) nor a teacher (uint8 [1, h, w, 3])")
        if md.get("kind") not in (None, kind):
            raise CmeError(f"{p}: its metadata says {md['kind']}, but its input {shape} "
                           f"{np.dtype(dtype).name} is a {kind}'s")
        if kind != expect:
            raise CmeError(f"{p}: a {kind} model, but a {expect} is needed here")
        model_md = md.get("model_metadata") or {}

        def fn(b):
            rows = []
            for x in np.asarray(b, dtype):
                it.set_tensor(inp["index"], x[None])
                it.invoke()
                rows.append(np.array(it.get_tensor(out["index"]))[0])
            return np.stack(rows)
        if kind == "student":
            return cls(fn, kind, p.stem, str(p), shape[1], None, fixed_samples=shape[1],
                       metadata=model_md)
        return cls(fn, kind, p.stem, str(p), 0, shape[1], metadata=model_md)


# --------------------------------------------------------------------------- scoring

def _scores(probs: np.ndarray) -> dict:
    probs = np.asarray(probs, np.float64)
    return {"label": emotions.FERPLUS[int(np.argmax(probs))],
            "probabilities": {n: round(float(v), 6) for n, v in zip(emotions.FERPLUS, probs)}}


def _batched(predictor: Predictor, items: list[np.ndarray], batch_size: int,
             key: str = "probabilities") -> np.ndarray:
    out = []
    for i in range(0, len(items), batch_size):
        out.append(predictor(np.stack(items[i:i + batch_size]))[key])
    return np.concatenate(out) if out else np.zeros((0, emotions.NUM_CLASSES), np.float32)


def _embedding_field(emb: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(emb, np.float64).reshape(-1)]


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Window starts covering ``n`` samples: every ``hop``, the last one ending at ``n``."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def score_audio(x: np.ndarray, predictor: Predictor, cfg: PredictConfig,
                warnings: list[str] | None = None) -> dict:
    """Score one 16 kHz mono waveform: status, label, probabilities, timeline, and
    ``warnings`` (the given list, to which a .tflite student's padding is added).
    ``CmeError`` for empty, non-finite or too short audio (module docstring)."""
    from .audio.io import audio_dbfs
    x = np.asarray(x, np.float32).reshape(-1)
    if x.size == 0:
        raise CmeError("zero-length audio: no samples")
    if not np.isfinite(x).all():
        raise CmeError(f"audio has {int((~np.isfinite(x)).sum())} non-finite samples (NaN/Inf)")
    result: dict[str, Any] = {"duration_s": round(x.size / SAMPLE_RATE, 3)}
    lvl = audio_dbfs(x)
    level = float(lvl.peak_dbfs)
    result["peak_dbfs"] = round(level, 2)
    result["rms_dbfs"] = round(float(lvl.rms_dbfs), 2)
    if warnings is None:
        warnings = []
    result["warnings"] = warnings
    # the exported signatures' minimum (100 frames, 1.015 s, protocol §3.2): one decision
    from .audio.constants import MIN_SERVING_SAMPLES
    refuse_below = MIN_SERVING_SAMPLES if predictor.fixed_samples else predictor.min_samples
    if x.size < refuse_below:
        raise CmeError(f"short: {x.size / SAMPLE_RATE:.3f} s ({x.size} samples) is below the "
                       f"student's minimum of {refuse_below / SAMPLE_RATE:.3f} s "
                       f"({refuse_below} samples, 100 spectrogram frames): not scored (the "
                       f"exported model's signatures refuse it too; protocol §3.2)")
    win = max(int(round(cfg.window * SAMPLE_RATE)), predictor.min_samples, 1)
    if predictor.fixed_samples:                      # a .tflite student: its own window
        win = predictor.fixed_samples
    hop = max(int(round(cfg.hop * SAMPLE_RATE)), 1)
    if level < cfg.silence_dbfs:
        result.update(status="silent", label=None, probabilities=None,
                      message=f"peak level {_fmt_db(level)} dBFS stays under "
                              f"{cfg.silence_dbfs:g} dBFS")
        return result
    messages = []
    if x.size <= win:
        clip = x
        if clip.size < predictor.min_samples:       # only a .tflite student's window
            messages.append(f"clip of {clip.size / SAMPLE_RATE:.3f} s zero-padded to the "
                            f"TFLite student's fixed window "
                            f"{predictor.min_samples / SAMPLE_RATE:.3f} s")
            warnings.append(f"short: {clip.size / SAMPLE_RATE:.3f} s is below the TFLite "
                            f"student's fixed window of "
                            f"{predictor.min_samples / SAMPLE_RATE:.3f} s (padded)")
            clip = np.pad(clip, (0, predictor.min_samples - clip.size))
        out = predictor(clip[None])
        result.update(status="ok", message="; ".join(messages), **_scores(out["probabilities"][0]))
        if cfg.embedding:
            result["embedding"] = _embedding_field(out["embedding"][0])
        return result
    starts = window_starts(x.size, win, hop)
    segments, timeline, live = [], [], []
    for s in starts:
        seg = x[s:s + win]
        entry = {"start_s": round(s / SAMPLE_RATE, 3), "end_s": round((s + win) / SAMPLE_RATE, 3)}
        seg_level = float(audio_dbfs(seg).peak_dbfs)
        if seg_level < cfg.silence_dbfs:
            entry.update(status="silent", label=None, probabilities=None)
        else:
            entry["status"] = "ok"
            live.append(len(timeline))
            segments.append(seg)
        timeline.append(entry)
    if not live:
        result.update(status="silent", label=None, probabilities=None, timeline=timeline,
                      message=f"every window is under {cfg.silence_dbfs:g} dBFS")
        return result
    if cfg.embedding:
        outs = [predictor(np.stack(segments[i:i + cfg.batch_size]))
                for i in range(0, len(segments), cfg.batch_size)]
        probs = np.concatenate([o["probabilities"] for o in outs])
        result["embedding"] = _embedding_field(
            np.concatenate([o["embedding"] for o in outs]).mean(axis=0))
    else:
        probs = _batched(predictor, segments, cfg.batch_size)
    for i, p in zip(live, probs):
        timeline[i].update(_scores(p))
    messages.append(f"{len(starts)} windows of {win / SAMPLE_RATE:g} s every "
                    f"{hop / SAMPLE_RATE:g} s; probabilities are the mean of the "
                    f"{len(live)} non-silent windows")
    result.update(status="ok", message="; ".join(messages), timeline=timeline,
                  **_scores(probs.mean(axis=0)))
    return result


def _fmt_db(v: float) -> str:
    return "-inf" if not math.isfinite(v) else f"{v:.1f}"


def score_faces(path: Path, teacher: Predictor, cfg: PredictConfig) -> dict:
    """Teacher scores for the largest face of every sampled frame of a video."""
    from .vision import faces as faces_lib
    from .vision import video as video_lib
    clip = video_lib.read_video(path, fps=cfg.face_fps, stride=cfg.face_stride, audio=False)
    size = int(teacher.input_size or 224)
    crops, timeline, n_frames = [], [], 0
    for frame_index, time_s, rgb in clip.frames:
        n_frames += 1
        boxes = faces_lib.detect_faces(rgb, method=cfg.face_method)
        if not boxes:
            continue
        box = boxes[0]                          # the largest face
        crop = faces_lib.crop_face(rgb, box, enlarge=cfg.enlarge,
                                   size=int(round(size * cfg.enlarge)))
        crop = faces_lib.center_crop_fraction(crop, 1.0 / cfg.enlarge)
        crops.append(_resize_uint8(crop, size))
        timeline.append({"frame": int(frame_index), "time_s": round(float(time_s), 3)})
    result: dict[str, Any] = {"frames": n_frames, "faces": len(crops)}
    if not crops:
        result.update(status="no_faces", label=None, probabilities=None, timeline=[],
                      message=f"no face found in {n_frames} sampled frames")
        return result
    probs = _batched(teacher, crops, cfg.batch_size)
    for entry, p in zip(timeline, probs):
        entry.update(_scores(p))
    result.update(status="ok", message=f"mean over {len(crops)} frames with a face",
                  timeline=timeline, **_scores(probs.mean(axis=0)))
    return result


def _resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[0] == size and img.shape[1] == size:
        return img.astype(np.uint8)
    from PIL import Image
    return np.asarray(Image.fromarray(img.astype(np.uint8)).resize((size, size),
                                                                   Image.BILINEAR))


# --------------------------------------------------------------------------- files

def predict_file(path: str | os.PathLike, predictor: Predictor, cfg: PredictConfig,
                 teacher: Predictor | None = None) -> dict:
    """One file's result dict; never raises for bad input (``status: error``)."""
    from .audio.io import load_audio
    path = Path(path)
    warnings: list[str] = []
    result: dict[str, Any] = {"file": str(path), "status": "error", "message": "",
                              "warnings": warnings, "label": None, "probabilities": None,
                              # the model: where its weights came from, the demo caveat
                              # (None when no file could be read: the model was not loaded)
                              "model": predictor.info if predictor is not None else None}
    try:
        if not path.exists():
            raise CmeError(f"{path}: no such file")
        audio = load_audio(path, target_rate=SAMPLE_RATE, mono=True)
        x, rate = audio
        if rate != SAMPLE_RATE:
            raise CmeError(f"{path}: audio came back at {rate} Hz, not {SAMPLE_RATE}")
        warnings.extend(audio_warnings(audio))
        if audio.clipped:
            x = np.clip(x, -1.0, 1.0)
        result.update(score_audio(x, predictor, cfg, warnings))
    except CmeError as e:
        msg = str(e)
        result["message"] = msg if str(path) in msg else f"{path}: {msg}"
    except Exception as e:     # noqa: BLE001 - one bad file must not stop the others
        result["message"] = f"{path}: {type(e).__name__}: {_first_line(e)}"
    if cfg.faces and teacher is not None:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            result["faces"] = {"status": "skipped", "message": "not a video file"}
        else:
            try:
                result["faces"] = score_faces(path, teacher, cfg)
            except CmeError as e:
                result["faces"] = {"status": "error", "message": str(e)}
            except Exception as e:  # noqa: BLE001
                result["faces"] = {"status": "error",
                                   "message": f"{path}: {type(e).__name__}: {_first_line(e)}"}
            result["faces"]["model"] = teacher.info
            if result["faces"].get("status") == "error" and result["status"] != "error":
                result["status"] = "error"
                result["message"] = "; ".join(
                    m for m in (result["message"], "faces: " + result["faces"]["message"]) if m)
    return result


def audio_warnings(audio) -> list[str]:
    """The notes of a :class:`tf_cme.audio.io.Audio` as predict.py's ``warnings``."""
    out = []
    t = audio.truncation
    if t is not None:
        out.append(f"truncated: {t} ({t.declared / t.rate:.3f} s promised, "
                   f"{t.held / t.rate:.3f} s present: the part present is scored)")
    if audio.clipped:
        out.append(f"clipped: {audio.clipped} samples beyond ±1 (scored clipped to ±1)")
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


def predict_files(files, cfg: PredictConfig) -> list[dict]:
    """Results for every file, in order (loads the model(s) once)."""
    from .utils import progress
    files = list(files)
    require_model_path(cfg.model)              # before TensorFlow's start-up
    if cfg.faces:
        if not cfg.teacher:
            raise CmeError("--faces needs a teacher (--teacher: exported SavedModel, "
                           ".keras or run folder)")
        require_model_path(cfg.teacher)
    if not any(Path(f).exists() for f in files):   # nothing to score: no model to load
        return [predict_file(f, None, cfg) for f in files]
    predictor = Predictor.load(cfg.model, "student")
    if cfg.embedding and not predictor.has_embedding:
        raise CmeError(f"{cfg.model}: this model gives no embedding (a .tflite student has "
                       f"only logits); use the SavedModel or .keras student")
    teacher = Predictor.load(cfg.teacher, "teacher") if cfg.faces else None
    return [predict_file(f, predictor, cfg, teacher)
            for f in progress(files, desc="predict", unit="file")]


def predict(paths, model: str | os.PathLike = DEFAULT_MODEL, *, embedding: bool = False,
            **options) -> list[dict]:
    """Emotions heard in audio or video files: what ``tf-cme predict`` prints.

    ``paths``: one path or a list. ``model``: an exported SavedModel (model or version
    folder), a ``.keras`` file, a student run folder or a ``.tflite`` student.
    ``embedding=True`` adds each file's ``embedding`` (the student's fc7 after its ReLU;
    the mean over the non-silent windows for long files). ``options``: any other
    :class:`PredictConfig` field (``window``, ``hop``, ``silence_dbfs``, ``batch_size``,
    ``faces``, ``teacher``, ...).

    Returns one dict per file, in order: ``file``, ``status`` ("ok", "silent", "error"),
    ``message``, ``warnings``, ``label``, ``probabilities`` (FER+ name -> probability),
    ``timeline`` (files longer than a window), ``model`` (name, source, provenance and,
    for demo models, the caveat), and with ``faces=True`` a ``faces`` entry for videos.
    A bad file is a result with ``status: "error"``, never an exception; a missing or
    wrong model raises :class:`tf_cme.utils.CmeError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    names = {f.name for f in dataclasses.fields(PredictConfig)} - {"model", "embedding"}
    unknown = sorted(set(options) - names)
    if unknown:
        raise CmeError(f"predict: unknown option(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(names))}")
    cfg = PredictConfig(model=str(model), embedding=embedding, **options)
    return predict_files([str(p) for p in paths], cfg)


# --------------------------------------------------------------------------- output

CSV_FIELDS = ["file", "segment", "start_s", "end_s", "status", "message", "warnings",
              "label", *emotions.FERPLUS]


def to_csv(results: list[dict]) -> str:
    """One row per file (``segment`` = file), per timeline window (``window``) and per
    face frame (``face``); ``warnings`` (file rows) is the result's list joined with
    ``"; "``; the 8 probability columns are in FER+ order."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def row(file, segment, entry, start=None, end=None, message="", warnings=()):
        r = {"file": file, "segment": segment, "start_s": "" if start is None else start,
             "end_s": "" if end is None else end, "status": entry.get("status", "ok"),
             "message": message, "warnings": "; ".join(warnings),
             "label": entry.get("label") or ""}
        probs = entry.get("probabilities") or {}
        r.update({n: probs.get(n, "") for n in emotions.FERPLUS})
        w.writerow(r)

    for res in results:
        row(res["file"], "file", res, message=res.get("message", ""),
            warnings=res.get("warnings") or ())
        for t in res.get("timeline") or []:
            row(res["file"], "window", t, t["start_s"], t["end_s"])
        faces = res.get("faces") or {}
        for t in faces.get("timeline") or []:
            row(res["file"], "face", t, t["time_s"], t["time_s"])
    return buf.getvalue()
