"""Record building and input pipeline benchmarks (group ``records``).

Stages, each against a plain NumPy / PIL / soundfile loop doing the same decoding
on the same data in one process:

- ``build-ferplus`` (rows/s): CSV join, pixel parsing, vote cleaning, PNG encoding,
  writing; peer: csv + NumPy + PIL, pickled to one file.
- ``build-emovox`` (clips/s): wav decoding to int16 PCM, JPEG frame collection,
  writing; peer: soundfile + file reads, pickled to one file.
- ``pipeline-faces`` (examples/s): reading FER+ shards, parsing, PNG decoding,
  batching; peer: TFRecord framing in Python, protobuf parsing, PIL decoding,
  NumPy batching.
- ``pipeline-clips`` (examples/s): reading labelled emovox shards, PCM decoding,
  random 4.024 s crop and max-over-frames logit aggregation, batching; peer: the
  same in NumPy.

The data comes from the fixture writers of :mod:`tf_cme.demo.files`.
"""
from __future__ import annotations

import csv
import io
import pickle
import shutil
from pathlib import Path

import numpy as np

from ..demo.files import make_fer_csvs, make_voxceleb_tree
from .harness import Pair, stage

# ------------------------------------------------------------- peers
def _peer_ferplus(fer_csv, new_csv, out):
    """Plain loop: csv + NumPy + PIL, the same cleaning and PNG encoding, pickled."""
    from PIL import Image
    with open(fer_csv, newline="") as f:
        r1 = list(csv.reader(f))[1:]
    with open(new_csv, newline="") as f:
        r2 = list(csv.reader(f))[1:]
    kept = []
    for (emo, pix, usage), row2 in zip(r1, r2):
        v = np.array([float(x) for x in row2[2:12]])
        v[v <= 1] = 0
        m, n = v.max(), v.sum()
        at = v == m
        if at[8:].any() or at.sum() >= 3 or at.sum() * m <= 0.5 * n:
            continue
        img = np.array(pix.split(), dtype=np.uint8).reshape(48, 48)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        kept.append((buf.getvalue(), int(np.argmax(v)), v, usage))
    with open(out, "wb") as f:
        pickle.dump(kept, f)
    return len(r1)


def _peer_emovox(root, out):
    import soundfile as sf
    root = Path(root)
    clips = []
    for line in (root / "splits.txt").read_text().splitlines():
        s, w, fr = line.split()
        x, rate = sf.read(str(root / "wav" / w), dtype="int16")
        files = sorted((root / "frames" / fr).glob("*.jpg"))
        clips.append((w, int(s), x.tobytes(), [p.read_bytes() for p in files]))
    with open(out, "wb") as f:
        pickle.dump(clips, f)
    return len(clips)


def _read_records(path):
    import struct
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        (n,) = struct.unpack_from("<Q", data, off)
        yield data[off + 12:off + 12 + n]
        off += 16 + n


def _peer_faces(files, batch):
    import tensorflow as tf
    from PIL import Image
    Example = tf.train.Example
    n, imgs, labels = 0, [], []
    for p in files:
        for raw in _read_records(p):
            ex = Example.FromString(raw).features.feature
            img = np.asarray(Image.open(io.BytesIO(ex["image"].bytes_list.value[0])))
            imgs.append(img[..., None])
            labels.append(ex["label"].int64_list.value[0])
            if len(imgs) == batch:
                np.stack(imgs), np.asarray(labels, np.int32)
                n += len(imgs)
                imgs, labels = [], []
    if imgs:
        np.stack(imgs)
        n += len(imgs)
    return n


def _peer_clips(files, batch, crop, seed=0):
    import tensorflow as tf
    Example = tf.train.Example
    rng = np.random.default_rng(seed)
    n, waves, aggs = 0, [], []
    for p in files:
        for raw in _read_records(p):
            ex = Example.FromString(raw).features.feature
            x = np.frombuffer(ex["audio"].bytes_list.value[0], "<i2").astype(np.float32) / 32768
            lg = np.asarray(ex["logits"].float_list.value, np.float32).reshape(-1, 8)
            wd = x.size - crop
            s = int(rng.integers(0, wd)) if wd >= 1 else 0
            piece = np.zeros(crop, np.float32)
            seg = x[s:s + crop]
            piece[:seg.size] = seg
            row = lambda k: int(np.floor(max(25 * k / 16000 - 1, 0) / 6)) + 1  # noqa: E731
            last = min(row(s + crop), lg.shape[0])
            first = min(row(s + 1), last)
            aggs.append(lg[first - 1:last].max(axis=0))
            waves.append(piece)
            if len(waves) == batch:
                np.stack(waves), np.stack(aggs)
                n += len(waves)
                waves, aggs = [], []
    if waves:
        n += len(waves)
    return n


# ------------------------------------------------------------- stages
def _fer_data(ctx):
    if "fer" not in ctx.cache:
        n = 1500 if ctx.quick else 9000
        a, b = make_fer_csvs(ctx.path("fer", "csv"), n, seed=0)
        ctx.cache["fer"] = (a, b, n)
    return ctx.cache["fer"]


def _fer_records(ctx):
    if "fer_records" not in ctx.cache:
        from ..data import ferplus
        a, b, _ = _fer_data(ctx)
        out = ctx.path("fer", "records")
        ferplus.build(out, ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b),
                                                      shard_size=1024), overwrite=True)
        ctx.cache["fer_records"] = out
    return ctx.cache["fer_records"]


def _tree(ctx):
    if "tree" not in ctx.cache:
        root = ctx.path("vox", "tree")
        make_voxceleb_tree(root, 12 if ctx.quick else 120, seed=0, seconds=(4.0, 8.0), image=96)
        ctx.cache["tree"] = root
    return ctx.cache["tree"]


def _labelled(ctx):
    if "labelled" not in ctx.cache:
        from ..data import emovox, labelled, records
        src = ctx.path("vox", "records")
        emovox.build(src, emovox.EmovoxBuildConfig(root=str(_tree(ctx)), shard_size=8),
                     overwrite=True)
        rng = np.random.default_rng(0)
        logits = {}
        import tensorflow as tf
        for p in records.shard_files(src)[0]:
            for raw in tf.data.TFRecordDataset(p):
                ex = tf.train.Example.FromString(raw.numpy()).features.feature
                k = ex["key"].bytes_list.value[0].decode()
                logits[k] = rng.normal(size=(len(ex["frame_index"].int64_list.value), 8))
        dst = ctx.path("vox", "labelled")
        labelled.write_labelled(src, dst, logits, {"name": "random"}, overwrite=True)
        ctx.cache["labelled"] = dst
    return ctx.cache["labelled"]


@stage("build-ferplus", group="records", unit="rows/s")
def bench_build_ferplus(ctx) -> Pair:
    from ..data import ferplus
    a, b, n = _fer_data(ctx)
    out = ctx.path("fer", "bench-out")
    cfg = ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b), shard_size=1024)

    def ours():
        shutil.rmtree(out, ignore_errors=True)
        ferplus.build(out, cfg)
        return n

    return Pair(ours, lambda: _peer_ferplus(a, b, ctx.path("fer", "peer.pkl")),
                "csv+numpy+PIL loop")


@stage("build-emovox", group="records", unit="clips/s")
def bench_build_emovox(ctx) -> Pair:
    from ..data import emovox
    root = _tree(ctx)
    n = len((root / "splits.txt").read_text().splitlines())
    out = ctx.path("vox", "bench-out")
    cfg = emovox.EmovoxBuildConfig(root=str(root), shard_size=8)

    def ours():
        shutil.rmtree(out, ignore_errors=True)
        emovox.build(out, cfg)
        return n

    return Pair(ours, lambda: _peer_emovox(root, ctx.path("vox", "peer.pkl")),
                "soundfile+file-read loop")


@stage("pipeline-faces", group="records", unit="examples/s")
def bench_pipeline_faces(ctx) -> Pair:
    from ..data import pipelines, records
    d = _fer_records(ctx)
    files = records.shard_files(d, "train")[0]
    n = records.read_manifest(d)["splits"]["train"]["examples"]

    # several passes through one iterator, as training reads it (start-up amortised)
    reps = 1 if ctx.quick else 4
    ds = pipelines.faces_dataset(d, "train", batch_size=256, training=False, repeat=True)
    n_batches = -(-n * reps // 256)

    def ours():
        k = 0
        for x, _ in ds.take(n_batches):
            k += int(x.shape[0])
        return k

    def peer():
        return sum(_peer_faces(files, 256) for _ in range(reps))

    return Pair(ours, peer, "python-tfrecord+protobuf+PIL loop")


@stage("pipeline-clips", group="records", unit="examples/s")
def bench_pipeline_clips(ctx) -> Pair:
    from ..data import pipelines, records
    d = _labelled(ctx)
    files = records.shard_files(d)[0]
    # 24 passes (about 2,900 crops) read through one iterator, as training reads a
    # long stream: the iterator's start-up (opening shards, filling the prefetch
    # buffer) is then a small part of the time, as it is in a real run.
    reps = 4 if ctx.quick else 24

    n_clips = sum(v["examples"] for v in records.read_manifest(d)["splits"].values())
    n_batches = n_clips * reps // 16
    # one iterator over `reps` passes (new crops each pass), as training reads it
    ds = pipelines.distill_dataset(d, None, batch_size=16, training=False, repeat=True)

    def ours():
        k = 0
        for x, _ in ds.take(n_batches):
            k += int(x.shape[0])
        return k

    def peer():
        k = 0
        for i in range(reps):
            k += _peer_clips(files, 16, pipelines.CROP_SAMPLES, seed=i)
        return k

    return Pair(ours, peer, "python-tfrecord+protobuf+numpy loop")
