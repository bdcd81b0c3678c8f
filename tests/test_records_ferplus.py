"""FER+ cleaning rules (protocol §2.1) on hand-made rows, the ferplus builder, bad input,
resume after a killed build, corrupt shards and the faces pipeline."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tf_cme.demo.files import make_fer_csvs, write_fer_csvs
from tf_cme.data import ferplus, pipelines, records
from tf_cme.utils import CmeError

ROOT = Path(__file__).resolve().parents[1]
# columns: neutral happiness surprise sadness anger disgust fear contempt unknown NF


def _one(votes, variant="cntk"):
    keep, label, cleaned, reason = ferplus.clean_votes(np.array([votes]), variant)
    return bool(keep[0]), int(label[0]), cleaned[0], reason[0]


# ------------------------------------------------------------- CNTK rules
def test_votes_of_one_or_less_are_zeroed():
    keep, label, cleaned, _ = _one([6, 1, 1, 0, 2, 0, 0, 0, 0, 0])
    assert keep and label == 0
    np.testing.assert_array_equal(cleaned, [6, 0, 0, 0, 2, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(ferplus.soft_labels(cleaned[None])[0],
                               [0.75, 0, 0, 0, 0.25, 0, 0, 0])


def test_rule_i_argmax_unknown_or_nf_is_dropped():
    assert _one([2, 0, 0, 0, 0, 0, 0, 0, 8, 0])[3] == ferplus.DROP_UNKNOWN
    assert _one([2, 0, 0, 0, 0, 0, 0, 0, 0, 8])[3] == ferplus.DROP_UNKNOWN
    # unknown tied with an emotion at the maximum: still dropped (any arg-max column)
    assert _one([5, 0, 0, 0, 0, 0, 0, 0, 5, 0])[3] == ferplus.DROP_UNKNOWN
    # unknown below the maximum does not matter
    keep, label, _, _ = _one([6, 0, 0, 0, 0, 0, 0, 0, 4, 0])
    assert keep and label == 0


def test_rule_ii_three_tied_maxima_dropped():
    assert _one([3, 3, 3, 0, 0, 0, 0, 0, 0, 0])[3] == ferplus.DROP_TIES
    # 1-vote columns are zeroed first, so they cannot make a tie
    keep, label, _, _ = _one([4, 4, 1, 1, 0, 0, 0, 0, 0, 0])
    assert keep and label == 0


def test_rule_iii_weak_majority_boundary():
    # ties * m <= 0.5 n  -> dropped; exactly half is dropped
    assert _one([4, 2, 2, 0, 0, 0, 0, 0, 0, 0])[3] == ferplus.DROP_WEAK       # 4 <= 4
    keep, label, _, _ = _one([5, 2, 2, 0, 0, 0, 0, 0, 0, 0])                   # 5 > 4.5
    assert keep and label == 0
    # two-way tie: 2 * 3 = 6 <= 0.5 * 12 -> dropped; 2 * 4 = 8 > 0.5 * 12 -> kept
    assert _one([0, 3, 3, 2, 2, 2, 0, 0, 0, 0])[3] == ferplus.DROP_WEAK
    keep, label, _, _ = _one([0, 4, 4, 2, 2, 0, 0, 0, 0, 0])
    assert keep


def test_two_way_tie_takes_the_first_column():
    keep, label, _, _ = _one([0, 0, 0, 5, 0, 0, 5, 0, 0, 0])
    assert keep and label == 3
    keep, label, _, _ = _one([0, 0, 0, 0, 0, 0, 5, 5, 0, 0])
    assert keep and label == 6


def test_all_votes_outliers_dropped():
    assert not _one([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])[0]


def test_rule_order_counts_each_drop_once():
    # fails (i) and (iii): reported as (i)
    assert _one([3, 0, 0, 0, 0, 0, 0, 0, 3, 3])[3] == ferplus.DROP_UNKNOWN


def test_clean_and_full_variants():
    v = [1, 0, 0, 0, 0, 0, 0, 0, 9, 0]
    assert _one(v, "clean")[3] == ferplus.DROP_UNKNOWN
    keep, label, cleaned, _ = _one(v, "full")
    assert keep and label == 8
    np.testing.assert_array_equal(cleaned, v)           # no outlier removal
    keep, label, cleaned, _ = _one([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], "clean")
    assert keep and label == 0 and cleaned[1] == 1
    with pytest.raises(CmeError, match="variant"):
        ferplus.clean_votes(np.zeros((1, 10)), "bogus")


# ------------------------------------------------------------- builder
def _rows(n, rng):
    fer, new = [], []
    for i in range(n):
        usage = ["Training", "PublicTest", "PrivateTest"][i % 3]
        fer.append([i % 7, " ".join(map(str, rng.integers(0, 256, 2304))), usage])
        new.append([usage, f"fer{i:07d}.png"] + [0] * 10)
    return fer, new


def test_build_counts_skips_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    fer, new = _rows(9, rng)
    votes = [[8, 2, 0, 0, 0, 0, 0, 0, 0, 0],     # train kept neutral
             [0, 6, 0, 0, 0, 0, 0, 4, 0, 0],     # val kept happiness
             [0, 0, 0, 0, 0, 0, 0, 0, 10, 0],    # test dropped (i)
             [3, 3, 3, 1, 0, 0, 0, 0, 0, 0],     # train dropped (ii)
             [4, 2, 2, 2, 0, 0, 0, 0, 0, 0],     # val dropped (iii)
             [0, 0, 0, 5, 0, 0, 5, 0, 0, 0],     # test kept sadness (tie -> first)
             [0, 0, 0, 0, 9, 1, 0, 0, 0, 0],     # train: 2,303 pixels -> bad_pixels
             [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],     # val: all-zero votes
             [0, 0, 0, 0, 0, 0, 0, 10, 0, 0]]    # test kept contempt
    for r, v in zip(new, votes):
        r[2:] = v
    fer[6][1] = " ".join(fer[6][1].split()[:-1])
    a, b = write_fer_csvs(tmp_path / "csv", fer, new)
    m = ferplus.build(tmp_path / "rec", ferplus.FerplusBuildConfig(
        fer_csv=str(a), ferplus_csv=str(b), shard_size=2, workers=1))
    assert m["schema"] == "ferplus" and m["schema_version"] == 1
    assert {s: v["examples"] for s, v in m["splits"].items()} == {"train": 1, "val": 1, "test": 2}
    assert m["skipped"] == {ferplus.DROP_UNKNOWN: 1, ferplus.DROP_TIES: 1, ferplus.DROP_WEAK: 1,
                            ferplus.BAD_PIXELS: 1, ferplus.ZERO_VOTES: 1}
    assert m["splits"]["test"]["class_counts"]["sadness"] == 1
    assert m["splits"]["test"]["class_counts"]["contempt"] == 1
    assert sum(m["splits"]["val"]["class_counts"].values()) == 1
    assert set(m["sources"]) == {"fer2013.csv", "fer2013new.csv"}
    assert m["config"]["variant"] == "cntk" and m["image_encoding"] == "png-canonical"
    assert "row 7" in (tmp_path / "rec" / records.SKIPPED).read_text()
    # the stored faces, labels and votes
    ds = pipelines.faces_dataset(tmp_path / "rec", "test", batch_size=8, training=False)
    (x, y), = list(ds)
    assert x.dtype.name == "uint8" and x.shape == (2, 48, 48, 1)
    want = np.array(fer[5][1].split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(x.numpy()[0, :, :, 0], want)
    np.testing.assert_array_equal(y["label"].numpy(), [3, 7])
    np.testing.assert_allclose(y["votes"].numpy()[0], [0, 0, 0, .5, 0, 0, .5, 0])
    assert y["label"].dtype.name == "int32" and y["votes"].dtype.name == "float32"


def test_mismatched_row_counts_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    fer, new = _rows(4, rng)
    a, b = write_fer_csvs(tmp_path, fer, new[:3])
    with pytest.raises(CmeError, match=r"row counts differ.*4 data rows.*3"):
        ferplus.build(tmp_path / "rec", ferplus.FerplusBuildConfig(fer_csv=str(a),
                                                                   ferplus_csv=str(b)))
    with pytest.raises(CmeError, match="missing column"):
        b.write_text("Usage,neutral\nTraining,3\n" * 1)
        ferplus.plan(a, b)


def _build_cmd(a, b, out, workers=1, shard=30):
    return [sys.executable, str(ROOT / "scripts" / "build_records.py"), "ferplus",
            "--fer-csv", str(a), "--ferplus-csv", str(b), "--out", str(out),
            "--shard-size", str(shard), "--workers", str(workers)]


def test_resume_after_killed_build(tmp_path):
    a, b = make_fer_csvs(tmp_path / "csv", 180, seed=3)
    env = {**os.environ, "TF_CME_TEST_SHARD_DELAY": "0.25", "TF_CME_QUIET": "1"}
    out = tmp_path / "rec"
    p = subprocess.Popen(_build_cmd(a, b, out, shard=20), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.tfrecord"))) < 2:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = sorted(x.name for x in out.glob("*.tfrecord"))
    assert 2 <= len(done_before) < 9 and not (out / "manifest.json").exists()
    stamps = {n: (out / n).stat().st_mtime_ns for n in done_before}
    cfg = ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b), shard_size=20, workers=1)
    ferplus.build(out, cfg)                     # the same build again: resumes
    # complete shards were kept, not rewritten
    assert all((out / n).stat().st_mtime_ns == stamps[n] for n in done_before)
    # same manifest and same shard bytes as an uninterrupted build
    ref = tmp_path / "ref"
    ferplus.build(ref, cfg)
    m1, m2 = records.read_manifest(out), records.read_manifest(ref)
    assert m1 == m2
    assert sum(v["examples"] for v in m1["splits"].values()) == 180
    names = sorted(x.name for x in out.glob("*.tfrecord"))
    assert names == sorted(x.name for x in ref.glob("*.tfrecord")) and len(names) == 9
    assert all((out / n).read_bytes() == (ref / n).read_bytes() for n in names)
    assert not list(out.glob("*.tmp-*")) and not list(out.glob("*.pending*"))
    # a different config on the same folder is refused
    import dataclasses
    with pytest.raises(CmeError, match="another config"):
        ferplus.build(out, dataclasses.replace(cfg, shard_size=50))


def test_corrupt_and_truncated_shards(tmp_path):
    a, b = make_fer_csvs(tmp_path / "csv", 60, seed=4)
    d = tmp_path / "rec"
    ferplus.build(d, ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b),
                                                 shard_size=10, workers=2))   # worker processes
    assert records.verify(d)["examples"] == 60
    shard = d / "train-00000.tfrecord"
    data = shard.read_bytes()
    # corrupt (same size, a flipped byte): found by verify, named
    shard.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(CmeError, match="train-00000.tfrecord"):
        records.verify(d)
    r = records.verify(d, skip_corrupt=True)
    assert r["corrupt"] == [str(shard)] and r["examples"] == 50
    # truncated: found when a pipeline is built, named; --skip-corrupt counts it
    shard.write_bytes(data[:-7])
    with pytest.raises(CmeError, match=r"corrupt shard .*train-00000.tfrecord"):
        pipelines.faces_dataset(d, "train", batch_size=4, training=False)
    ds = pipelines.faces_dataset(d, "train", batch_size=4, training=False, skip_corrupt=True)
    assert pipelines.LAST_SKIPPED_SHARDS == [str(shard)]
    assert sum(int(x.shape[0]) for x, _ in ds) == 10
    from tf_cme.commands import build_records    # scripts/build_records.py is a shim now
    with pytest.raises(CmeError, match="train-00000.tfrecord"):
        build_records.main(["verify", str(d)])
    assert build_records.main(["verify", str(d), "--skip-corrupt"]) == 0
    # the manifest's schema version is checked
    m = json.loads((d / "manifest.json").read_text())
    m["schema_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CmeError, match="version 99"):
        records.read_manifest(d)


def test_faces_pipeline_determinism_and_augmentation(tmp_path):
    a, b = make_fer_csvs(tmp_path / "csv", 90, seed=5)
    d = tmp_path / "rec"
    ferplus.build(d, ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b),
                                                 shard_size=8, workers=1))

    def take(seed, **kw):
        ds = pipelines.faces_dataset(d, "train", batch_size=8, training=True, seed=seed,
                                     repeat=True, **kw)
        return [(x.numpy(), y["label"].numpy()) for x, y in ds.take(6)]

    a1, a2, b1 = take(1), take(1), take(2)   # 6 batches of 8 over 30 examples: 2 epochs
    assert all((p[0] == q[0]).all() and (p[1] == q[1]).all() for p, q in zip(a1, a2))
    assert any((p[1] != q[1]).any() for p, q in zip(a1, b1))
    plain = take(1, augment=False)
    assert all(x.shape == (8, 48, 48, 1) for x, _ in a1)
    # same order with and without augmentation, and augmentation changes pixels
    assert all((p[1] == q[1]).all() for p, q in zip(a1, plain))
    assert any((p[0] != q[0]).any() for p, q in zip(a1, plain))
    # the affine draw itself and the single resampling: tests/test_teacher_resample.py
    # evaluation batches: no shuffle, every example once, partial last batch kept
    ev = list(pipelines.faces_dataset(d, "train", batch_size=8, training=False))
    assert sum(int(x.shape[0]) for x, _ in ev) == 30
    rows = [int(v) for v in np.concatenate([y["label"].numpy() for _, y in ev])]
    assert len(rows) == 30
    resized = next(iter(pipelines.faces_dataset(d, "val", batch_size=4, training=False,
                                                image_size=64)))[0]
    assert resized.shape == (4, 64, 64, 1) and resized.dtype.name == "uint8"


def test_build_script_help_and_errors(tmp_path):
    script = str(ROOT / "scripts" / "build_records.py")
    for kind in ("ferplus", "emovox", "external", "verify"):
        r = subprocess.run([sys.executable, script, kind, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "--" in r.stdout
    r = subprocess.run([sys.executable, script, "ferplus", "--fer-csv", str(tmp_path / "no.csv"),
                        "--ferplus-csv", str(tmp_path / "no2.csv"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no.csv: no such file" in r.stderr


def test_canonical_png_batch_decode_matches_a_png_decoder():
    """The records' PNGs decode with PIL / OpenCV; the batched fast path gives exactly
    the pixels of tf.io.decode_png, and refuses (never mis-decodes) any other PNG."""
    import io

    import cv2
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(3)
    imgs = np.concatenate([rng.integers(0, 256, (3, 48, 48)),                 # noise
                           np.tile(np.arange(48), (2, 48, 1)) * 5], 0).astype(np.uint8)
    ours = [ferplus.png_bytes(a) for a in imgs]
    for a, b in zip(imgs, ours):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(b))), a)
        np.testing.assert_array_equal(tf.io.decode_png(b, channels=1).numpy()[..., 0], a)
    fast = tf.function(lambda x: pipelines.decode_grey_pngs(x, 48, 48, canonical=True))
    np.testing.assert_array_equal(fast(tf.constant(ours)).numpy()[..., 0], imgs)
    assert fast(tf.constant([], tf.string)).shape == (0, 48, 48, 1)
    # another encoder's PNG (adaptive filters): decode_png path right, fast path refuses
    other = [cv2.imencode(".png", a)[1].tobytes() for a in imgs]
    np.testing.assert_array_equal(
        pipelines.decode_grey_pngs(tf.constant(other), 48, 48).numpy()[..., 0], imgs)
    with pytest.raises(tf.errors.OpError):
        fast(tf.constant(other)).numpy()
    # a canonical PNG with a non-zero filter byte (valid zlib, wrong pixels if ignored)
    import struct
    import zlib
    rows = np.zeros((48, 49), np.uint8)
    rows[:, 1:] = imgs[0]
    rows[5, 0] = 1                                   # Sub filter on row 5
    idat = zlib.compress(rows.tobytes(), 1)
    bad = (ferplus.png_header(48, 48) + struct.pack(">I", len(idat)) + b"IDAT" + idat
           + struct.pack(">I", zlib.crc32(b"IDAT" + idat)) + ferplus.PNG_IEND)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a canonical 48x48 grey PNG"):
        fast(tf.constant([ours[1], bad])).numpy()
    # a flipped payload byte: the zlib check fails
    flip = bytearray(ours[0])
    flip[60] ^= 0xFF
    with pytest.raises(tf.errors.OpError):
        fast(tf.constant([bytes(flip)])).numpy()


# ------------------------------------------------------------- join checks (issue 12.5)
def test_join_checks_image_name_and_usage(tmp_path):
    rng = np.random.default_rng(7)
    fer, new = _rows(6, rng)
    for r in new:
        r[2:] = [8, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    new[4][1] = ""                                   # an NF row's empty name is fine
    a, b = write_fer_csvs(tmp_path / "ok", fer, new)
    ferplus.plan(a, b)
    # one votes row deleted, another appended: same count, shifted names
    shifted = new[:2] + new[3:] + [["PrivateTest", "fer0000006.png"] + new[0][2:]]
    shifted = [[f[2]] + list(r[1:]) for f, r in zip(fer, shifted)]   # Usage still agrees
    a, b = write_fer_csvs(tmp_path / "shift", fer, shifted)
    with pytest.raises(CmeError, match=r"fer2013new.csv: data row 3 has Image name "
                                       r"'fer0000003.png', expected 'fer0000002.png'"):
        ferplus.plan(a, b)
    bad = [list(r) for r in new]
    bad[1][0] = "Training"                           # fer2013.csv row 2 is PublicTest
    a, b = write_fer_csvs(tmp_path / "usage", fer, bad)
    with pytest.raises(CmeError, match=r"data row 2 has Usage 'Training'.*'PublicTest'"):
        ferplus.plan(a, b)


@pytest.mark.parametrize("variant", ferplus.VARIANTS)
def test_zero_votes_bad_pixels_bad_emotion_are_counted_skips(tmp_path, variant):
    rng = np.random.default_rng(8)
    fer, new = _rows(7, rng)
    for r in new:
        r[2:] = [8, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    new[0][2:] = [0] * 10                            # all-zero votes
    fer[1][1] += " 7"                                # junk after the 2,304th value
    p = fer[2][1].split()
    p[5] = "12abc"
    fer[2][1] = " ".join(p)
    fer[3][0] = 7                                    # FER2013 code outside 0..6
    fer[4][0] = -1
    a, b = write_fer_csvs(tmp_path / "csv", fer, new)
    m = ferplus.build(tmp_path / "rec", ferplus.FerplusBuildConfig(
        fer_csv=str(a), ferplus_csv=str(b), variant=variant, workers=1))
    assert m["skipped"] == {ferplus.ZERO_VOTES: 1, ferplus.BAD_PIXELS: 2, ferplus.BAD_EMOTION: 2}
    assert sum(v["examples"] for v in m["splits"].values()) == 2
    assert ferplus.parse_pixels(fer[1][1]) is None and ferplus.parse_pixels(fer[2][1]) is None
