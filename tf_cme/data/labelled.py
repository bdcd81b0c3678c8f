"""Labelled emovox records: the same clips with per-frame teacher logits.

``scripts/label_faces.py`` runs the teacher over :func:`tf_cme.data.pipelines.frames_dataset`
and calls :func:`write_labelled` with the logits of every clip. The output is an
``emovox`` record set with the same shard names, ``labelled: true`` and the
teacher's metadata in its manifest. Clips without logits are skipped
(``no_logits``); a logits matrix whose row count differs from the clip's frame
rows is an error naming the clip. Resumable shard by shard like every build.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import emotions, provenance
from ..utils import CmeError
from . import records, schema as schema_lib
from .emovox import dominant_label


def _logits_digest(logits: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(logits):
        a = np.ascontiguousarray(np.asarray(logits[k], dtype=np.float32))
        h.update(k.encode() + b"\0" + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def label_shard(item, *, logits: dict, keep_frames: bool = False):
    """Encoder: one source shard -> its records with logits (a list of results)."""
    import tensorflow as tf
    path = item[0]
    out = []
    try:
        raws = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    except tf.errors.OpError as e:
        raise ValueError(f"corrupt shard {path}: {e.message.splitlines()[0]}") from None
    for raw in raws:
        ex = tf.train.Example.FromString(raw)
        feats = ex.features.feature
        key = feats["key"].bytes_list.value[0].decode()
        if key not in logits:
            out.append(records.Skip("no_logits", key, "no teacher logits for this clip"))
            continue
        lg = np.asarray(logits[key], dtype=np.float32)
        if lg.ndim != 2 or lg.shape[1] != emotions.NUM_CLASSES:
            raise ValueError(f"logits of clip {key!r} must be [F, 8], got {lg.shape}")
        n_rows = len(feats["frame_index"].int64_list.value)
        if lg.shape[0] != n_rows:
            raise ValueError(f"clip {key!r} has {n_rows} frame rows but {lg.shape[0]} logit rows")
        if lg.shape[0] == 0:
            out.append(records.Skip("no_logits", key, "the clip has no frames"))
            continue
        if not np.all(np.isfinite(lg)):
            raise ValueError(f"logits of clip {key!r} contain NaN or infinite values")
        if not keep_frames:
            feats["frames"].bytes_list.ClearField("value")
        feats["logits"].ClearField("float_list")
        feats["logits"].float_list.value.extend(lg.reshape(-1).tolist())
        out.append(records.Encoded(ex.SerializeToString(), dominant_label(lg)))
    return out


def write_labelled(src_dir, dst_dir, logits: dict, teacher: dict, *, overwrite: bool = False,
                   skip_corrupt: bool = False, keep_frames: bool = False, part=None) -> dict:
    """Write the clips of ``src_dir`` with ``logits[key]`` ([F, 8], FER+ order, one
    row per frame row of the clip) under ``dst_dir``; return the new manifest.

    The JPEG frames are dropped by default (``keep_frames=False``): distillation and
    evaluation read audio and logits only, and the frames are most of the bytes;
    ``frame_index`` and ``frame_times`` are kept. The source record set still has them.
    ``part`` (:class:`records.Part`): write only that worker's shards (``logits`` need
    only hold their clips) and its part manifest (returned).
    """
    src = records.read_manifest(src_dir, expect_schema=schema_lib.EMOVOX_SCHEMA.name)
    if Path(src_dir).resolve() == Path(dst_dir).resolve():
        raise CmeError(f"write_labelled: source and destination are the same folder ({dst_dir})")
    _, bad = records.shard_files(src_dir, None, src, skip_corrupt=skip_corrupt)
    bad = set(bad)
    tasks = []
    for s in src["shards"]:
        p = str(Path(src_dir) / s["file"])
        if p in bad:
            continue
        split, num = s["file"][:-len(".tfrecord")].rsplit("-", 1)
        tasks.append(records.ShardTask(split, int(num), [(p,)]))
    extra = {k: v for k, v in src.items()
             if k not in ("schema", "schema_version", "splits", "skipped", "sources", "config",
                          "shards")}
    extra.update({"labelled": True, "teacher": dict(teacher), "frames_kept": bool(keep_frames),
                  "class_counts_meaning": "per clip: the emotion holding the largest teacher "
                                          "logit of the track (protocol §7.1)",
                  "source_records": {"dir": str(src_dir), "skipped": src.get("skipped", {}),
                                     "corrupt_shards_skipped": len(bad),
                                     "skipped_corrupt_shards": records.skipped_names(bad)}})
    if teacher.get("provenance") == provenance.DEMO:    # labels from a demo teacher
        extra["synthetic"] = True
    try:
        return records.build(
            dst_dir, schema_lib.EMOVOX_SCHEMA, tasks,
            encode_fn=label_shard,
            options={"keep_frames": bool(keep_frames)}, local_options={"logits": logits},
            key_extra=_logits_digest(logits), config={"src_dir": str(src_dir), "teacher": teacher},
            sources={"records manifest": records.file_sha256(Path(src_dir) / records.MANIFEST)},
            extra=extra, workers=1, overwrite=overwrite, desc="labelled", unit="shard",
            part=part)
    except ValueError as e:
        raise CmeError(f"write_labelled: {e}") from None
