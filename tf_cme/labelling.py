"""Teacher labelling of EmoVoxCeleb face frames (protocol §1, §4.4; ``fetch_emovoxceleb_imdb``).

Runs a face-emotion teacher over every face frame of an emovox record set in large
batches and writes a *labelled* record set (the same clips with per-frame logits, FER+
order) through :func:`tf_cme.data.labelled.write_labelled`.

- Frames: JPEG decoded, centre crop 1/1.6 (undoing the 1.6x VoxCeleb box), resized to
  the teacher's input size (bilinear, antialiased), uint8 RGB; a tf-cme teacher then
  converts to grey (``rgb2gray``, rounded), replicates and subtracts its mean itself.
- Resumable: the logits of each input shard are cached atomically in
  ``<cache>/<shard>.<key>.npz``, keyed by everything that determines them
  (:func:`cache_key`: teacher and input shard checksums, crop fraction, input size,
  colour, scaling, class map, preprocessing version); a re-run reuses only entries with
  the same key and recomputes the rest (issue 12.1).
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

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from . import emotions, provenance
from .metrics import contract
from .utils import atomic_path, progress, write_json

SKIP_UNDECODABLE = "undecodable_frames"

# The teacher wrapper lives in tf_cme.models.teacher; these names stay for old imports.
from .models.teacher import COLOURS, SCALINGS, Teacher, as_teacher, load_teacher  # noqa: F401


def _file_sha256(path: Path) -> str:
    from .utils import file_sha256
    return file_sha256(path)


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


def cache_key(teacher_sha256: str, shard_path, teacher: Teacher, crop_fraction: float) -> str:
    """The sha256 that keys one shard's cached logits: everything that determines them
    (issue 12.1): the teacher file's checksum, the input shard's checksum, the crop
    fraction, the teacher's input size, colour, scaling and class map, and
    :data:`tf_cme.models.teacher.PREPROCESSING_VERSION`. A cache entry under another key
    is never read (it is recomputed)."""
    import hashlib

    from .data.records import file_sha256
    from .models.teacher import PREPROCESSING_VERSION
    desc = {"teacher_sha256": teacher_sha256, "shard_sha256": file_sha256(shard_path),
            "crop_fraction": float(crop_fraction), "input_size": int(teacher.input_size),
            "colour": teacher.colour, "scaling": teacher.scaling, "native": teacher.native,
            "source_classes": list(teacher.classes), "classes": list(emotions.FERPLUS),
            "missing_logit": emotions.MISSING_LOGIT,
            "preprocessing_version": PREPROCESSING_VERSION}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def _read_cached(cpath: Path, key: str):
    """``(logits per clip, undecodable)`` from a cache file written under ``key``, or None
    (absent, unreadable or written under another key: then it is recomputed)."""
    if not cpath.exists():
        return None
    try:
        with np.load(cpath) as z:
            if "cache_key" not in z.files or bytes(z["cache_key"]).decode() != key:
                return None
            keys = json.loads(bytes(z["keys"]).decode())
            return {k: z[f"l{i}"] for i, k in enumerate(keys)}, int(z["undecodable"])
    except (OSError, ValueError, KeyError):
        return None


def label_records(records_dir, out_dir, teacher_path, *, batch_size: int = 128,
                  cache_dir=None, classes=None, input_size=None, colour=None, scaling=None,
                  crop_fraction: float = 1 / 1.6, stats_png=None, overwrite: bool = False,
                  skip_corrupt: bool = False, part=None) -> dict:
    """Label every face frame of ``records_dir`` with the teacher and write the labelled
    record set ``out_dir``. Returns a summary (frames, skipped, frames/s, class counts).

    ``part`` (:class:`tf_cme.data.records.Part`): label only the source shards whose
    position among the (good) source shards is ``part.index`` modulo ``part.count``, write
    their labelled shards, ``manifest.part-I-of-N.json`` and ``labelling.part-I-of-N.json``;
    the last worker to finish (or :func:`merge_labelled`) writes manifest.json,
    labelling.json and metrics.json."""
    import tensorflow as tf

    from .data import records as records_lib
    from .data.labelled import write_labelled
    from .data.pipelines import naming_corrupt_shards
    from .training.strategy import inference_strategy, split_batch_call
    manifest = records_lib.read_manifest(records_dir, expect_schema="emovox")
    # several GPUs (or TF_CME_CPU_REPLICAS logical CPUs): each takes a share of every batch
    strategy = inference_strategy()
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        teacher = load_teacher(teacher_path, classes=classes, input_size=input_size,
                               colour=colour, scaling=scaling)
    infer = (teacher.ferplus_logits if strategy is None else
             split_batch_call(strategy, teacher.ferplus_logits))
    devices = (list(strategy.extended.worker_devices) if strategy is not None else
               [tf.config.list_logical_devices("GPU")[0].name]
               if tf.config.list_logical_devices("GPU") else ["CPU"])
    digest = _file_sha256(Path(teacher_path))
    cache = Path(cache_dir) if cache_dir else Path(str(out_dir).rstrip("/") + ".logits-cache")
    cache.mkdir(parents=True, exist_ok=True)
    files, bad_shards = records_lib.shard_files(records_dir, None, manifest,
                                                skip_corrupt=skip_corrupt)
    if part is not None:     # the positions write_labelled's task list gives these shards
        files = part.select(files)
        # this worker's summary of an earlier run is stale until this run writes its own
        (Path(out_dir) / f"labelling.{part.tag}.json").unlink(missing_ok=True)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def call(images):
        return infer(images)

    total = sum(int(s.get("frames", 0)) for s in manifest.get("shards", [])) or None
    logits: dict = {}
    undecodable = 0
    frames_done = 0
    t0 = time.time()
    computed_frames = 0
    cached_shards = 0
    bar = progress(total=total, desc="labelling", unit="frame")
    for path in files:
        name = Path(path).name
        key = cache_key(digest, path, teacher, crop_fraction)
        cpath = cache / f"{name}.{key[:16]}.npz"
        shard_logits = _read_cached(cpath, key)
        if shard_logits is not None:
            shard_logits, bad = shard_logits
            bar.update(sum(len(v) for v in shard_logits.values()))
            cached_shards += 1
        else:
            with naming_corrupt_shards(records_dir, None, records_lib.skipped_names(bad_shards)):
                shard_logits, bad = _label_shard(teacher, path, batch_size, crop_fraction, call, bar)
            computed_frames += sum(len(v) for v in shard_logits.values())
            keys = list(shard_logits)
            with atomic_path(cpath) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, keys=np.frombuffer(json.dumps(keys).encode(), np.uint8),
                         cache_key=np.frombuffer(key.encode(), np.uint8),
                         undecodable=np.int64(bad),
                         **{f"l{i}": shard_logits[k] for i, k in enumerate(keys)})
        logits.update(shard_logits)
        undecodable += bad
        frames_done += sum(len(v) for v in shard_logits.values())
    bar.close()
    elapsed = time.time() - t0
    info = {**{k: v for k, v in teacher.info.items() if k != "metadata"},
            "file": Path(teacher_path).name, "sha256": digest,
            "input_size": teacher.input_size, "crop_fraction": crop_fraction,
            "classes": list(emotions.FERPLUS), "source_classes": list(teacher.classes),
            "missing_logit": emotions.MISSING_LOGIT,
            # a demo teacher's labels make the records synthetic (tf_cme.provenance)
            "provenance": provenance.model_info(teacher.info.get("metadata"))["provenance"]}
    new_manifest = write_labelled(records_dir, out_dir, logits, info, overwrite=overwrite,
                                  skip_corrupt=skip_corrupt, part=part)
    dominant = np.concatenate([v for v in logits.values() if len(v)]).argmax(-1) \
        if logits and any(len(v) for v in logits.values()) else np.zeros((0,), np.int64)
    counts = {name: int((dominant == i).sum()) for i, name in enumerate(emotions.FERPLUS)}
    summary = {"frames": frames_done, "clips": len(logits), "undecodable_frames": undecodable,
               "corrupt_shards_skipped": len(bad_shards),
               "skipped_corrupt_shards": records_lib.skipped_names(bad_shards),
               "seconds": round(elapsed, 2),
               "frames_per_second": round(computed_frames / elapsed, 1) if elapsed and
               computed_frames else None,
               "frames_computed": computed_frames, "shards_from_cache": cached_shards,
               "devices": devices,
               "dominant_counts": counts,
               "output": str(out_dir), "splits": {k: v.get("examples") for k, v in
                                                  new_manifest.get("splits", {}).items()}}
    if part is not None:
        summary["part"] = {"index": part.index, "count": part.count}
        write_json(Path(out_dir) / f"labelling.{part.tag}.json", summary)
        # the last worker to finish merges; a worker writes its labelling part after its
        # part manifest, so a worker between the two is not taken for finished
        if records_lib.parts_complete(out_dir, part) and all(
                (Path(out_dir) / f"labelling.{records_lib.Part(i, part.count).tag}.json").exists()
                for i in range(part.count)):
            summary["merged"] = merge_labelled(out_dir, stats_png)
        return summary
    if stats_png:
        teacher_stats(counts, stats_png, title=f"{info.get('name') or 'teacher'}: "
                                               f"{frames_done} frames")
    write_json(Path(out_dir) / "labelling.json", summary)
    contract.write_metrics(out_dir, contract.LABELS, summary)   # the run-folder contract
    return summary


#: labelling.json fields a merge adds up over the parts (the rest: the same in every part)
_SUMMED = ("frames", "clips", "undecodable_frames", "frames_computed", "shards_from_cache",
           "seconds")


def merge_labelled(out_dir, stats_png=None) -> dict:
    """Join the parts of a labelling split with ``part``: the record set's manifest
    (:func:`tf_cme.data.records.merge`, which checks the parts) and ``labelling.json`` /
    ``metrics.json`` (counts added up; ``seconds`` is the parts' total, ``frames_per_second``
    the frames computed per second of it, ``devices`` every part's in part order). Returns the merged summary."""
    from .data import records as records_lib
    from .utils import CmeError, read_json
    out = Path(out_dir)
    m = records_lib.merge(out)
    n = next(iter(records_lib._part_files(out).values()))[1]
    parts = []
    for i in range(n):
        f = out / f"labelling.{records_lib.Part(i, n).tag}.json"
        if not f.exists():
            raise CmeError(f"{out}: missing {f.name} (manifest.part-{i}-of-{n}.json is "
                           f"there: was it written by label_faces.py?); re-run label_faces.py "
                           f"--num-workers {n} --worker-index {i}, then merge again")
        parts.append(read_json(f))
    summary = {k: v for k, v in parts[0].items() if k not in ("part", "merged")}
    for k in _SUMMED:
        summary[k] = sum(p.get(k) or 0 for p in parts)
    summary["seconds"] = round(summary["seconds"], 2)
    summary["frames_per_second"] = (round(summary["frames_computed"] / summary["seconds"], 1)
                                    if summary["seconds"] and summary["frames_computed"]
                                    else None)
    summary["dominant_counts"] = {name: sum(int(p["dominant_counts"].get(name, 0))
                                            for p in parts) for name in emotions.FERPLUS}
    summary["devices"] = [d for p in parts for d in p.get("devices", [])]   # every part's
    summary["output"] = str(out_dir)
    summary["splits"] = {k: v.get("examples") for k, v in m.get("splits", {}).items()}
    if stats_png:
        teacher_stats(summary["dominant_counts"], stats_png,
                      title=f"{(m.get('teacher') or {}).get('name') or 'teacher'}: "
                            f"{summary['frames']} frames")
    write_json(out / "labelling.json", summary)
    contract.write_metrics(out, contract.LABELS, summary)
    return summary


def teacher_stats(counts: dict, path, title: str = "") -> Path:
    """protocol §7.2: histogram of the per-frame dominant emotion, FER+ order, log y-axis."""
    from .metrics.plots import plot_histogram
    ordered = {name: int(counts.get(name, 0)) for name in emotions.FERPLUS}
    plot_histogram(ordered, path=path, title=title, ylabel="Number of frames", log=True)
    return Path(path)


def stats_from_records(labelled_dir, path, skip_corrupt: bool = False) -> dict:
    """The §7.2 histogram of an existing labelled record set (per-frame dominant emotion)."""
    from .data.pipelines import clips_dataset
    counts = np.zeros(emotions.NUM_CLASSES, np.int64)
    for clip in clips_dataset(labelled_dir, skip_corrupt=skip_corrupt):
        lg = clip["logits"].numpy()
        if len(lg):
            counts += np.bincount(lg.argmax(-1), minlength=emotions.NUM_CLASSES)
    c = {name: int(counts[i]) for i, name in enumerate(emotions.FERPLUS)}
    teacher_stats(c, path, title=f"{int(counts.sum())} frames")
    return c
