"""Teacher labelling of EmoVoxCeleb face frames (protocol §1, §4.4; ``fetch_emovoxceleb_imdb``).

Runs a face-emotion teacher over every face frame of an emovox record set in large
batches and writes a *labelled* record set (the same clips with per-frame logits, FER+
order) through :func:`tf_cme.data.labelled.write_labelled`.

- Frames: JPEG decoded, centre crop 1/1.6 (undoing the 1.6x VoxCeleb box), resized to
  the teacher's input size (bilinear, antialiased), uint8 RGB; a tf-cme teacher then
  converts to grey (``rgb2gray``, rounded), replicates and subtracts its mean itself.
- Resumable: the logits of each input shard are cached atomically in
  ``<cache>/<shard>.npz`` (keyed by the teacher file's checksum); cached shards are
  skipped on a re-run.
- A frame that does not decode is a counted skip (``undecodable_frames``); its row gets
  :data:`tf_cme.emotions.MISSING_LOGIT` for every class, so it never wins a max-pool
  over frames and its softmax is uniform.
- Any Keras face model can be the teacher: a tf-cme ``.keras`` carries its metadata;
  another ``.keras``/``.h5`` needs ``classes`` (its output class names, mapped into FER+
  order by name: classes it lacks get ``MISSING_LOGIT``; unmappable names are an error
  listing them), ``input_size``, ``colour`` (``grey``/``rgb``) and ``scaling``
  (``raw`` 0..255, ``unit`` 0..1, ``symmetric`` -1..1, ``uint8``: passed unchanged).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from . import emotions
from .metrics import contract
from .utils import CmeError, atomic_path, progress, write_json

SCALINGS = ("raw", "unit", "symmetric", "uint8")
COLOURS = ("grey", "rgb")
SKIP_UNDECODABLE = "undecodable_frames"


@dataclasses.dataclass
class Teacher:
    """A loaded teacher: ``fn(uint8 [B,S,S,3]) -> scores [B, K]`` and how to read them."""
    model: object
    classes: tuple[str, ...]       # output class names (FER+ names after canonical())
    input_size: int
    colour: str
    scaling: str
    native: bool                   # a tf-cme teacher (preprocesses itself)
    info: dict

    def ferplus_logits(self, images):
        """In-graph: uint8 RGB ``[N, S, S, 3]`` -> float32 FER+ logits ``[N, 8]``.

        The model runs in inference mode (``training=False``); a foreign model's input
        is converted first (``colour``, ``scaling``) and its classes are mapped into
        FER+ order by name (classes it lacks get :data:`tf_cme.emotions.MISSING_LOGIT`),
        as :func:`label_records` does. Used by labelling and by the online teacher of
        :class:`tf_cme.training.distiller.Distiller`.
        """
        import tensorflow as tf
        x = images if self.native else _foreign_preprocess(self)(images)
        scores = tf.cast(self.model(x, training=False), tf.float32)
        if tuple(self.classes) == emotions.FERPLUS:
            return scores
        src = {c: i for i, c in enumerate(self.classes)}
        idx = [src.get(name, len(self.classes)) for name in emotions.FERPLUS]
        fill = tf.fill(tf.concat([tf.shape(scores)[:-1], [1]], 0), emotions.MISSING_LOGIT)
        return tf.gather(tf.concat([scores, fill], -1), idx, axis=-1)


def _file_sha256(path: Path) -> str:
    from .models.importers import sha256
    return sha256(path)


def load_teacher(path, *, classes=None, input_size: int | None = None,
                 colour: str | None = None, scaling: str | None = None) -> Teacher:
    """Load a tf-cme teacher (metadata inside) or any Keras face model (options needed)."""
    import keras

    from .models import io as model_io
    path = Path(path)
    if not path.is_file():
        raise CmeError(f"{path}: no such teacher model file")
    md = None
    if path.suffix == ".keras":
        try:
            md = model_io.read_metadata(path)
        except CmeError:
            md = None
    if md is not None and md.get("kind") == "teacher" and classes is None:
        model = model_io.load_model(path)
        size = int(input_size or md.get("input_size", 224))
        return Teacher(model, tuple(md.get("class_names", emotions.FERPLUS)), size, "rgb",
                       "uint8", True, {"name": md.get("name"), "options": md.get("options"),
                                       "metadata": md})
    if classes is None:
        raise CmeError(f"{path}: not a tf-cme teacher; give its class names (--teacher-classes "
                       f"NAME,NAME,...), --input-size, --colour and --scaling")
    names = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes)
             if c.strip()]
    try:
        fer = emotions.resolve_classes(names)
    except ValueError as e:
        raise CmeError(f"--teacher-classes: {e}") from None
    try:
        from .models.registry import _load_all
        _load_all()
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds on bad files
        raise CmeError(f"{path}: cannot load the Keras model ({type(e).__name__}: {e})") from None
    out_dim = model.output_shape[-1]
    if out_dim != len(fer):
        raise CmeError(f"{path}: the model has {out_dim} outputs but {len(fer)} class names "
                       f"were given")
    colour = colour or "grey"
    scaling = scaling or "unit"
    if colour not in COLOURS:
        raise CmeError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    if scaling not in SCALINGS:
        raise CmeError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    shape = model.input_shape
    size = int(input_size or (shape[1] if shape[1] else 0))
    if not size:
        raise CmeError(f"{path}: the model's input size is not fixed; give --input-size")
    return Teacher(model, fer, size, colour, scaling, False,
                   {"name": path.stem, "classes": names, "colour": colour, "scaling": scaling})


def as_teacher(obj) -> Teacher:
    """A :class:`Teacher` from a Teacher, a teacher file (:func:`load_teacher`) or a Keras
    model: a tf-cme teacher (``cme_metadata``: class order, input size) or any model that
    takes uint8 RGB faces, preprocesses itself and outputs the 8 FER+ logits. A model
    whose outputs cannot be read as 8 FER+ logits is a CmeError (a foreign model with
    another taxonomy needs :func:`load_teacher` with its class names)."""
    import os
    if isinstance(obj, Teacher):
        teacher = obj
    elif isinstance(obj, (str, os.PathLike)):
        teacher = load_teacher(obj)
    else:
        md = dict(getattr(obj, "cme_metadata", None) or {})
        name = md.get("name") or getattr(obj, "name", "teacher")
        if not hasattr(obj, "output_shape") or not callable(obj):
            raise CmeError(f"teacher: expected a Keras model, a tf_cme.labelling.Teacher or a "
                           f".keras file, got {type(obj).__name__}")
        if md.get("kind") not in (None, "teacher"):
            raise CmeError(f"teacher {name}: a {md.get('kind')} model, not a face teacher")
        try:
            classes = emotions.resolve_classes(md.get("class_names") or emotions.FERPLUS)
        except ValueError as e:
            raise CmeError(f"teacher {name}: {e}") from None
        size = md.get("input_size") or (obj.input_shape[1] if obj.input_shape else None)
        if not size:
            raise CmeError(f"teacher {name}: its input size is unknown (no tf-cme metadata "
                           f"and no fixed input shape)")
        teacher = Teacher(obj, classes, int(size), "rgb", "uint8", True,
                          {"name": name, "metadata": md})
    out = teacher.model.output_shape[-1]
    if out != len(teacher.classes):
        raise CmeError(f"teacher {teacher.info.get('name')}: {out} outputs cannot be mapped to "
                       f"the {emotions.NUM_CLASSES} FER+ classes (its class names: "
                       f"{', '.join(teacher.classes)}); give a tf-cme teacher or load it with "
                       f"tf_cme.labelling.load_teacher(path, classes=...)")
    return teacher


def _foreign_preprocess(teacher: Teacher):
    """uint8 RGB [B,S,S,3] -> the foreign model's input (TF ops)."""
    import tensorflow as tf
    from .vision.faces import RGB2GRAY
    channels = teacher.model.input_shape[-1] or 3

    def fn(x):
        if teacher.colour == "grey":
            g = tf.round(tf.reduce_sum(tf.cast(x, tf.float32) * tf.constant(RGB2GRAY), -1,
                                       keepdims=True))
            x = tf.repeat(g, channels, axis=-1) if channels != 1 else g
            if teacher.scaling == "uint8":
                x = tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)
        if teacher.scaling == "uint8":
            return x
        x = tf.cast(x, tf.float32)
        if teacher.scaling == "unit":
            return x / 255.0
        if teacher.scaling == "symmetric":
            return x / 127.5 - 1.0
        return x
    return fn


# ---------------------------------------------------------------------------- frames

def _shard_dataset(path: str, image_size: int, crop_fraction: float):
    """(key, frame row, JPEG) for every frame of one emovox shard, and the decoder
    ``(key, row, JPEG) -> (key, row, image uint8 [S,S,3])``."""
    import tensorflow as tf

    from .data import schema as schema_lib
    from .data.pipelines import center_crop_resize
    spec = {k: v for k, v in schema_lib.EMOVOX_SCHEMA.feature_spec().items()
            if k in ("key", "frames")}

    def per_clip(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        frames = tf.sparse.to_dense(ex["frames"]) if isinstance(
            ex["frames"], tf.sparse.SparseTensor) else ex["frames"]
        n = tf.shape(frames, out_type=tf.int64)[0]
        return tf.data.Dataset.from_tensor_slices((tf.fill([n], ex["key"]), tf.range(n),
                                                   frames))

    def decode(key, idx, jpg):
        img = tf.io.decode_jpeg(jpg, channels=3)
        return key, idx, center_crop_resize(img, image_size, crop_fraction)

    ds = tf.data.TFRecordDataset(path).flat_map(per_clip)
    return ds, decode


def _clip_rows(path: str) -> dict[str, int]:
    """Key -> number of frame rows of every clip of one shard (no decoding)."""
    import tensorflow as tf

    from .data import schema as schema_lib
    spec = {k: v for k, v in schema_lib.EMOVOX_SCHEMA.feature_spec().items()
            if k in ("key", "frame_index")}
    out = {}
    for raw in tf.data.TFRecordDataset(path):
        ex = tf.io.parse_single_example(raw, spec)
        fi = ex["frame_index"]
        n = int(fi.dense_shape[0]) if isinstance(fi, tf.sparse.SparseTensor) else int(
            tf.shape(fi)[0])
        out[ex["key"].numpy().decode()] = n
    return out


def _label_shard(teacher: Teacher, path: str, batch_size: int, crop_fraction: float,
                 call, bar) -> tuple[dict, int]:
    """Logits [F, 8] per clip of one shard and the number of undecodable frames."""
    import tensorflow as tf
    rows = _clip_rows(path)
    ds, decode = _shard_dataset(path, teacher.input_size, crop_fraction)
    # decode frames one by one so that a bad JPEG drops only itself; (key, row) travel
    # with each image, so a dropped frame is simply a row with no logits.
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    out = {k: np.full((n, emotions.NUM_CLASSES), np.nan, np.float32) for k, n in rows.items()}
    for keys, idx, images in ds:
        scores = np.asarray(call(images))
        for k, i, s in zip(keys.numpy(), idx.numpy(), scores):
            out[k.decode()][int(i)] = s
        bar.update(len(idx))
    bad = 0
    for k, lg in out.items():
        miss = np.isnan(lg).any(axis=1)
        bad += int(miss.sum())
        lg[miss] = emotions.MISSING_LOGIT
    return out, bad


def label_records(records_dir, out_dir, teacher_path, *, batch_size: int = 128,
                  cache_dir=None, classes=None, input_size=None, colour=None, scaling=None,
                  crop_fraction: float = 1 / 1.6, stats_png=None, overwrite: bool = False,
                  skip_corrupt: bool = False) -> dict:
    """Label every face frame of ``records_dir`` with the teacher and write the labelled
    record set ``out_dir``. Returns a summary (frames, skipped, frames/s, class counts)."""
    import tensorflow as tf

    from .data import records as records_lib
    from .data.labelled import write_labelled
    manifest = records_lib.read_manifest(records_dir, expect_schema="emovox")
    teacher = load_teacher(teacher_path, classes=classes, input_size=input_size,
                           colour=colour, scaling=scaling)
    digest = _file_sha256(Path(teacher_path))
    cache = Path(cache_dir) if cache_dir else Path(str(out_dir).rstrip("/") + ".logits-cache")
    cache = cache / digest[:16]
    cache.mkdir(parents=True, exist_ok=True)
    files, bad_shards = records_lib.shard_files(records_dir, None, manifest,
                                                skip_corrupt=skip_corrupt)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def call(images):
        return teacher.ferplus_logits(images)

    total = sum(int(s.get("frames", 0)) for s in manifest.get("shards", [])) or None
    logits: dict = {}
    undecodable = 0
    frames_done = 0
    t0 = time.time()
    computed_frames = 0
    bar = progress(total=total, desc="labelling", unit="frame")
    for path in files:
        name = Path(path).name
        cpath = cache / (name + ".npz")
        if cpath.exists():
            with np.load(cpath) as z:
                keys = json.loads(bytes(z["keys"]).decode())
                part = {k: z[f"l{i}"] for i, k in enumerate(keys)}
                bad = int(z["undecodable"])
            bar.update(sum(len(v) for v in part.values()))
        else:
            part, bad = _label_shard(teacher, path, batch_size, crop_fraction, call, bar)
            computed_frames += sum(len(v) for v in part.values())
            keys = list(part)
            with atomic_path(cpath) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, keys=np.frombuffer(json.dumps(keys).encode(), np.uint8),
                             undecodable=np.int64(bad),
                             **{f"l{i}": part[k] for i, k in enumerate(keys)})
        logits.update(part)
        undecodable += bad
        frames_done += sum(len(v) for v in part.values())
    bar.close()
    elapsed = time.time() - t0
    info = {**{k: v for k, v in teacher.info.items() if k != "metadata"},
            "file": Path(teacher_path).name, "sha256": digest,
            "input_size": teacher.input_size, "crop_fraction": crop_fraction,
            "classes": list(emotions.FERPLUS), "source_classes": list(teacher.classes),
            "missing_logit": emotions.MISSING_LOGIT}
    new_manifest = write_labelled(records_dir, out_dir, logits, info, overwrite=overwrite,
                                  skip_corrupt=skip_corrupt)
    dominant = np.concatenate([v for v in logits.values() if len(v)]).argmax(-1) \
        if logits and any(len(v) for v in logits.values()) else np.zeros((0,), np.int64)
    counts = {name: int((dominant == i).sum()) for i, name in enumerate(emotions.FERPLUS)}
    summary = {"frames": frames_done, "clips": len(logits), "undecodable_frames": undecodable,
               "corrupt_shards_skipped": len(bad_shards), "seconds": round(elapsed, 2),
               "frames_per_second": round(computed_frames / elapsed, 1) if elapsed and
               computed_frames else None,
               "frames_computed": computed_frames, "dominant_counts": counts,
               "output": str(out_dir), "splits": {k: v.get("examples") for k, v in
                                                  new_manifest.get("splits", {}).items()}}
    if stats_png:
        teacher_stats(counts, stats_png, title=f"{info.get('name') or 'teacher'}: "
                                               f"{frames_done} frames")
    write_json(Path(out_dir) / "labelling.json", summary)
    contract.write_metrics(out_dir, contract.LABELS, summary)   # the run-folder contract
    return summary


def teacher_stats(counts: dict, path, title: str = "") -> Path:
    """protocol §7.2: histogram of the per-frame dominant emotion, FER+ order, log y-axis."""
    from .metrics.plots import plot_histogram
    ordered = {name: int(counts.get(name, 0)) for name in emotions.FERPLUS}
    plot_histogram(ordered, path=path, title=title, ylabel="Number of frames", log=True)
    return Path(path)


def stats_from_records(labelled_dir, path) -> dict:
    """The §7.2 histogram of an existing labelled record set (per-frame dominant emotion)."""
    from .data.pipelines import clips_dataset
    counts = np.zeros(emotions.NUM_CLASSES, np.int64)
    for clip in clips_dataset(labelled_dir):
        lg = clip["logits"].numpy()
        if len(lg):
            counts += np.bincount(lg.argmax(-1), minlength=emotions.NUM_CLASSES)
    c = {name: int(counts[i]) for i, name in enumerate(emotions.FERPLUS)}
    teacher_stats(c, path, title=f"{int(counts.sum())} frames")
    return c
