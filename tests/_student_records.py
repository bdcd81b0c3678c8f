"""Tiny labelled emovox record sets in the real on-disk format, for the student tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tf_cme import emotions
from tf_cme.data import schema as schema_lib

SPLIT_SET = {"train": 1, "unheard": 2, "heard": 3}


def clip(key, split, wave, logits):
    ident, video, track = key.split("/")
    n_rows = 0 if logits is None else int(np.asarray(logits).size // 8)
    idx = np.arange(n_rows) * 6
    return {
        "key": key, "identity": ident, "video": video, "track": track,
        "wav": f"{ident}/{video}/{track}.wav", "set": SPLIT_SET[split], "split": split,
        "audio": schema_lib.pcm16(np.asarray(wave, np.float32)),
        "num_samples": len(wave), "sample_rate": 16000, "source_rate": 16000,
        "frames": [], "frame_index": idx.astype(np.int64),
        "frame_times": (idx / 25.0).astype(np.float32),
        "logits": (np.zeros(0, np.float32) if logits is None
                   else np.asarray(logits, np.float32).ravel()),
    }


def write(dir, clips: list[dict], *, labelled=True, teacher=None) -> Path:
    """Write ``clips`` (from :func:`clip`) as one shard per split plus manifest.json."""
    import tensorflow as tf
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    sch = schema_lib.EMOVOX_SCHEMA
    splits, shards = {}, []
    for split in sorted({c["split"] for c in clips}):
        name = f"{split}-00000.tfrecord"
        rows = [c for c in clips if c["split"] == split]
        with tf.io.TFRecordWriter(str(dir / name)) as w:
            for c in rows:
                w.write(sch.encode(c))
        counts = {n: 0 for n in emotions.FERPLUS}
        for c in rows:
            if c["logits"].size and c["logits"].size % 8 == 0:
                counts[emotions.FERPLUS[int(np.argmax(c["logits"].reshape(-1, 8).max(0)))]] += 1
        splits[split] = {"examples": len(rows), "class_counts": counts, "shards": 1}
        shards.append({"file": name, "split": split, "examples": len(rows),
                       "bytes": (dir / name).stat().st_size})
    manifest = {"schema": sch.name, "schema_version": sch.version, "splits": splits,
                "skipped": {}, "sources": {}, "config": {}, "shards": shards}
    if labelled:
        manifest.update({"labelled": True, "teacher": teacher or {"name": "synthetic"}})
    (dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dir


def synthetic(dir, n_train=24, n_unheard=8, seconds=1.6, seed=0, **kw) -> Path:
    """Clips whose pitch encodes a dominant emotion, with matching per-frame logits."""
    rng = np.random.default_rng(seed)
    clips = []
    for split, n in (("train", n_train), ("unheard", n_unheard)):
        for i in range(n):
            c = int(rng.integers(0, 4))
            length = int(seconds * 16000 * rng.uniform(0.8, 1.2))
            t = np.arange(length) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (150 + 120 * c) * t) + 0.02 * rng.standard_normal(length)
            rows = int(length / 16000 * 25 / 6) + 1
            logits = rng.standard_normal((rows, 8))
            logits[:, c] += 3
            clips.append(clip(f"Synth_{split}_{i:03d}/vid0001/00001", split, wave, logits))
    return write(dir, clips, **kw)
