"""EmoVoxCeleb records: the tree builder, bad inputs, the .mat import (v5, v7.3),
labelled records, and the clip pipelines (crop-to-logits alignment, determinism)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_cme import emotions
from tf_cme.audio.io import write_wav
from tf_cme.demo.files import jpeg, make_voxceleb_tree
from tf_cme.data import emovox, labelled, pipelines, records, schema
from tf_cme.demo import files as mat_fixtures
from tf_cme.utils import CmeError


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vox")
    make_voxceleb_tree(root, 6, seed=0, seconds=(1.5, 2.5), image=32)
    return root


def _keys(d, split=None):
    return [c["key"].numpy().decode() for c in pipelines.clips_dataset(d, split)]


def test_tree_build_counts_and_round_trip(tree, tmp_path):
    d = tmp_path / "rec"
    m = emovox.build(d, emovox.EmovoxBuildConfig(root=str(tree), shard_size=2, workers=2))
    entries = emovox.parse_splits(tree / "splits.txt")
    want = {}
    for code, _, _ in entries:
        want[schema.SET_NAMES[code]] = want.get(schema.SET_NAMES[code], 0) + 1
    assert {s: v["examples"] for s, v in m["splits"].items()} == want == \
        {"train": 4, "unheard": 1, "heard": 1}
    assert m["skipped"] == {} and m["labelled"] is False
    clips = {c["key"].numpy().decode(): c for c in pipelines.clips_dataset(d)}
    assert len(clips) == 6
    code, wav_rel, frames_rel = entries[0]
    ident, video, track = frames_rel.split("/")[0], frames_rel.split("/")[2], frames_rel.split("/")[3]
    c = clips[f"{ident}/{video}/{track}"]
    import wave
    with wave.open(str(tree / "wav" / wav_rel)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    np.testing.assert_array_equal(c["waveform"].numpy(), pcm.astype(np.float32) / 32768)
    assert c["waveform"].dtype == tf.float32 and c["split"].numpy() == b"train"
    assert int(c["set"]) == 1 and c["identity"].numpy().decode() == ident
    files = sorted((tree / "frames" / frames_rel).glob("*.jpg"))
    assert [f.numpy() for f in c["frames"]] == [p.read_bytes() for p in files]
    np.testing.assert_array_equal(c["frame_index"].numpy(), [int(p.stem) for p in files])
    np.testing.assert_allclose(c["frame_times"].numpy(), [int(p.stem) / 25 for p in files])
    assert c["logits"].shape == (0, 8)
    # frames pipeline: row index, 1/1.6 centre crop, resize
    fr = list(pipelines.frames_dataset(d, image_size=16, split="heard"))
    assert all(img.shape == (16, 16, 3) and img.dtype == tf.uint8 for _, _, img in fr)
    assert [int(i) for _, i, _ in fr] == list(range(len(fr)))
    img = tf.io.decode_jpeg(c["frames"][0], channels=3)
    side = round(32 / 1.6)
    o = (32 - side) // 2
    ref = tf.image.resize(img[o:o + side, o:o + side], [16, 16], antialias=True)
    got = pipelines.center_crop_resize(img, 16)
    np.testing.assert_array_equal(got.numpy(), np.clip(np.round(ref.numpy()), 0, 255))


def test_bad_inputs_are_counted(tree, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(tree, root)
    entries = emovox.parse_splits(root / "splits.txt")
    w = [root / "wav" / e[1] for e in entries]
    w[0].unlink()                                                  # missing audio
    w[1].write_bytes(b"RIFF....WAVEjunk" * 4)                      # unreadable audio
    write_wav(w[2], np.zeros(16000, np.int16), 16000)                  # all-zero audio
    shutil.rmtree(root / "frames" / entries[3][2])                 # track without frames
    for p in (root / "frames" / entries[4][2]).glob("*.jpg"):      # empty frames folder
        p.unlink()
    # a 44.1 kHz stereo wav is resampled and down-mixed
    rng = np.random.default_rng(0)
    write_wav(w[5], (rng.normal(size=(44100, 2)) * 1000).astype(np.int16), 44100)
    m = emovox.build(tmp_path / "rec", emovox.EmovoxBuildConfig(root=str(root), workers=1))
    assert m["skipped"] == {"missing_audio": 1, "unreadable_audio": 1, "silent_audio": 1,
                            "no_frames": 2}
    assert sum(v["examples"] for v in m["splits"].values()) == 1
    (c,) = list(pipelines.clips_dataset(tmp_path / "rec"))
    assert c["waveform"].shape == (16000,) and int(c["num_samples"]) == 16000
    text = (tmp_path / "rec" / records.SKIPPED).read_text()
    assert str(w[0]) in text and "all samples are zero" in text
    # malformed split files are errors naming the line
    (root / "splits.txt").write_text("7 a/b/c.wav a/1.6/b/c\n")
    with pytest.raises(CmeError, match=r"splits.txt:1: set code 7"):
        emovox.build(tmp_path / "rec2", emovox.EmovoxBuildConfig(root=str(root)))


def test_whole_track_kept_training_crops_clamped_at_19_9_seconds(tmp_path):
    root = tmp_path / "long"
    rng = np.random.default_rng(1)
    x = (rng.normal(size=20 * 16000) * 999).astype(np.int16)
    write_wav(root / "wav" / "P/v/00001.wav", x, 16000)
    (root / "frames" / "P/1.6/v/00001").mkdir(parents=True)
    (root / "frames" / "P/1.6/v/00001/00000.jpg").write_bytes(jpeg(np.zeros((8, 8, 3), np.uint8)))
    (root / "splits.txt").write_text("2 P/v/00001.wav P/1.6/v/00001\n")
    m = emovox.build(tmp_path / "rec", emovox.EmovoxBuildConfig(root=str(root), workers=1))
    assert m["schema_version"] == 2 and m["audio_max_seconds"] == 0.0
    (c,) = list(pipelines.clips_dataset(tmp_path / "rec", "unheard"))
    assert c["waveform"].shape == (20 * 16000,) and c["key"].numpy() == b"P/v/00001"
    np.testing.assert_array_equal(c["waveform"].numpy(), x / np.float32(32768))
    # training draws its crops from the first 19.9 s only (protocol §3.1)
    audio = tf.constant([x.tobytes()] * 256)
    _, start = pipelines.crop_batch(audio, tf.constant([x.size] * 256), tf.constant([1, 2], tf.int64))
    assert int(tf.reduce_max(start)) <= schema.MAX_SAMPLES - 64384 - 1 < x.size - 64384 - 1


# ------------------------------------------------------ alignment (protocol §2.2, §6)
def _row_ref(n1):
    """idx(t) with t = n / 16000, exact integer form: floor(max(25 n - 16000, 0) / 96000) + 1."""
    return max(25 * n1 - 16000, 0) // 96000 + 1


def test_crop_to_logits_alignment_exact():
    f = 40
    logits = np.zeros((f, 8), np.float32)
    for k in range(f):
        logits[k, k % 8] = k + 1          # row k (0-based) holds value k+1 in column k % 8
    crop, start = 64384, 20000
    # crop covers samples 20001..84384 (1-based): rows idx = 6..22 (1-based)
    assert pipelines.logit_rows(start, crop, f)[0].numpy() == 6 == _row_ref(20001)
    assert pipelines.logit_rows(start, crop, f)[1].numpy() == 22 == _row_ref(84384)
    agg = pipelines.aggregate_logits(tf.constant(logits), start, crop, "max").numpy()
    want = logits[5:22].max(axis=0)
    np.testing.assert_array_equal(agg, want)
    np.testing.assert_array_equal(agg, [17, 18, 19, 20, 21, 22, 15, 16])
    mean = pipelines.aggregate_logits(tf.constant(logits), start, crop, "mean").numpy()
    np.testing.assert_allclose(mean, logits[5:22].mean(axis=0), rtol=1e-6)
    # clamp at F rows; a crop starting after the last row uses the last row
    np.testing.assert_array_equal(
        pipelines.aggregate_logits(tf.constant(logits[:10]), start, crop).numpy(),
        logits[5:10].max(axis=0))
    np.testing.assert_array_equal(
        pipelines.aggregate_logits(tf.constant(logits[:3]), start, crop).numpy(), logits[2])
    # the float64 formula of the original agrees with the integer form everywhere here
    n = np.arange(1, 400000, 37)
    got = pipelines.time_to_row(tf.constant(n)).numpy()
    assert all(g == _row_ref(int(k)) for g, k in zip(got, n))


def test_random_crop_and_batched_aggregation_agree():
    rng = np.random.default_rng(2)
    lengths = [100000, 30000, 64385, 64384, 318400]
    waves = [rng.integers(-30000, 30000, size=n).astype(np.int16) for n in lengths]
    logits = [rng.normal(size=(int(n / 16000 * 25) // 6 + 1, 8)).astype(np.float32)
              for n in lengths]
    seed = tf.constant([5, 9], tf.int64)
    audio = tf.constant([w.tobytes() for w in waves])
    rag = tf.ragged.constant([l.reshape(-1).tolist() for l in logits], dtype=tf.float32)
    wave_b, agg_b, start_b = pipelines.crop_and_aggregate_batch(audio, tf.constant(lengths),
                                                                rag, seed)
    for i, n in enumerate(lengths):
        s = int(start_b[i])
        wd = n - 64384
        assert (0 <= s <= wd - 1) if wd >= 1 else s == 0
        want = np.zeros(64384, np.float32)
        seg = waves[i][s:s + 64384].astype(np.float32) / 32768
        want[:seg.size] = seg
        np.testing.assert_array_equal(wave_b[i].numpy(), want)
        last = min(_row_ref(s + 64384), len(logits[i]))
        first = min(_row_ref(s + 1), last)
        np.testing.assert_array_equal(agg_b[i].numpy(), logits[i][first - 1:last].max(axis=0))
        one = pipelines.crop_and_aggregate(tf.constant(waves[i].astype(np.float32) / 32768),
                                           tf.constant(logits[i]), seed)
        np.testing.assert_array_equal(one[1].numpy(), logits[i][
            min(_row_ref(int(one[2]) + 1), min(_row_ref(int(one[2]) + 64384), len(logits[i]))) - 1:
            min(_row_ref(int(one[2]) + 64384), len(logits[i]))].max(axis=0))


# ------------------------------------------------------------ .mat import
def _imdb(tree, rng):
    tracks = []
    for code, wav_rel, frames_rel in emovox.parse_splits(tree / "splits.txt"):
        files = sorted((tree / "frames" / frames_rel).glob("*.jpg"))
        ident, _, video, track = frames_rel.split("/")
        tracks.append({"name": wav_rel[:-3] + "m4a", "set": code, "video": video,
                       "track": int(track), "sp": 1,
                       "logits": rng.normal(size=(len(files), 8)).astype(np.float32),
                       "frames": [str(p.relative_to(tree / "frames")) for p in files]})
    tracks[1]["logits"] = np.zeros((0, 8), np.float32)   # a wav with no logit rows
    tracks[1]["frames"] = []
    return tracks


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_logits_mat_import(tree, tmp_path, version):
    tracks = _imdb(tree, np.random.default_rng(3))
    mat = mat_fixtures.write_logits_mat(tmp_path / "senet50-ferplus-logits.mat",
                                        mat_fixtures.make_imdb(tracks), version)
    if version == "7.3":
        import h5py
        assert h5py.is_hdf5(str(mat))
    d = tmp_path / "rec"
    m = emovox.build(d, emovox.EmovoxBuildConfig(root=str(tree), logits_mat=str(mat), workers=1))
    assert m["labelled"] is True and m["skipped"] == {"no_logits": 1}
    assert sum(v["examples"] for v in m["splits"].values()) == 5
    clips = {c["key"].numpy().decode(): c for c in pipelines.clips_dataset(d)}
    counts = {n: 0 for n in emotions.FERPLUS}
    for t in tracks:
        if not len(t["logits"]):
            continue
        ident, _, video, track = t["frames"][0].split("/")[:4]
        c = clips[f"{ident}/{video}/{track}"]
        np.testing.assert_array_equal(c["logits"].numpy(), t["logits"])
        assert len(c["frames"]) == len(t["frames"])
        assert int(c["set"]) == t["set"]
        counts[emotions.FERPLUS[int(np.argmax(t["logits"].max(axis=0)))]] += 1
    got = {n: sum(s["class_counts"][n] for s in m["splits"].values()) for n in emotions.FERPLUS}
    assert got == counts


def test_labelled_records_and_distill_dataset(tree, tmp_path):
    src = tmp_path / "src"
    emovox.build(src, emovox.EmovoxBuildConfig(root=str(tree), shard_size=3, workers=1))
    rng = np.random.default_rng(4)
    logits = {}
    for c in pipelines.clips_dataset(src):
        logits[c["key"].numpy().decode()] = rng.normal(size=(len(c["frames"]), 8))
    dropped = sorted(logits)[0]
    del logits[dropped]
    with pytest.raises(CmeError, match="distill|label them"):
        pipelines.distill_dataset(src, "train", batch_size=2)
    dst = tmp_path / "lab"
    m = labelled.write_labelled(src, dst, logits, {"name": "senet50-ferplus", "width": 0.25})
    assert m["frames_kept"] is False
    assert m["labelled"] is True and m["teacher"]["name"] == "senet50-ferplus"
    assert m["skipped"] == {"no_logits": 1}
    assert sorted(s["file"] for s in m["shards"]) == sorted(
        s["file"] for s in records.read_manifest(src)["shards"])
    got = {c["key"].numpy().decode(): c["logits"].numpy() for c in pipelines.clips_dataset(dst)}
    assert sorted(got) == sorted(logits)
    for k in got:
        np.testing.assert_allclose(got[k], logits[k].astype(np.float32))
    # distillation batches: shapes, dtypes, labels = argmax, determinism with a seed
    ds = pipelines.distill_dataset(dst, "train", batch_size=2, crop_samples=16000, seed=7,
                                   repeat=True)
    a = [(x.numpy(), y["logits"].numpy(), y["label"].numpy()) for x, y in ds.take(4)]
    b = [(x.numpy(), y["logits"].numpy(), y["label"].numpy())
         for x, y in pipelines.distill_dataset(dst, "train", batch_size=2, crop_samples=16000,
                                               seed=7, repeat=True).take(4)]
    for (x1, z1, l1), (x2, z2, l2) in zip(a, b):
        assert x1.shape == (2, 16000) and x1.dtype == np.float32 and z1.shape == (2, 8)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(z1, z2)
        np.testing.assert_array_equal(l1, np.argmax(z1, axis=1))
        assert np.abs(x1).max() <= 1.0
    ev = list(pipelines.distill_dataset(dst, None, batch_size=4, training=False,
                                        crop_samples=64384))
    assert sum(x.shape[0] for x, _ in ev) == 5 and ev[0][0].shape[1] == 64384
    # a logits matrix that does not match the clip's frames is an error naming the clip
    bad = dict(logits)
    k = sorted(bad)[0]
    bad[k] = np.zeros((1, 8))
    with pytest.raises(CmeError, match=k):
        labelled.write_labelled(src, tmp_path / "lab2", bad, {"name": "t"})


def test_distribution_sharding(tree, tmp_path):
    d = tmp_path / "rec"
    emovox.build(d, emovox.EmovoxBuildConfig(root=str(tree), shard_size=1, workers=1))
    keys = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                         num_replicas_in_sync=2)
        keys.append(sorted(c["key"].numpy() for c in pipelines.clips_dataset(d, "train",
                                                                          input_context=ctx)))
    assert len(keys[0]) + len(keys[1]) == 4 and not set(keys[0]) & set(keys[1])
