"""Labelling emovox face frames with a teacher: logits per frame, counted skips, resume,
foreign teachers mapped into FER+ order by name, the §7.2 histogram."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tf_cme import emotions
from tf_cme.audio.io import write_wav
from tf_cme.demo.files import jpeg
from tf_cme.utils import CmeError

SIZE = 32


@pytest.fixture(scope="module")
def emovox_records(tmp_path_factory) -> Path:
    """Three tracks in the VoxCeleb layout (one with a corrupt JPEG), built into records."""
    return _build_records(tmp_path_factory.mktemp("vox"), 0)


def _build_records(root, seed) -> Path:
    from tf_cme.data import emovox
    rng = np.random.default_rng(seed)
    lines = []
    for t, (ident, n_frames, code) in enumerate([("Synth_Person_001", 5, 1),
                                                 ("Synth_Person_002", 3, 2),
                                                 ("Synth_Person_001", 4, 3)]):
        write_wav(root / "wav" / ident / "vid0001" / f"{t + 1:05d}.wav",
                  rng.normal(0, 2000, 16000 * 2).astype(np.int16), 16000)
        fdir = root / "frames" / ident / "1.6" / "vid0001" / f"{t + 1:05d}"
        fdir.mkdir(parents=True, exist_ok=True)
        for k in range(n_frames):
            img = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            data = jpeg(img, quality=95)
            if t == 0 and k == 2:
                data = b"\xff\xd8 this is not a jpeg"
            (fdir / f"{6 * k:05d}.jpg").write_bytes(data)
        lines.append(f"{code} {ident}/vid0001/{t + 1:05d}.wav {ident}/1.6/vid0001/{t + 1:05d}")
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    emovox.build(root / "rec", emovox.EmovoxBuildConfig(root=str(root), shard_size=2,
                                                       workers=1))
    return root / "rec"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    path = tmp_path_factory.mktemp("teacher") / "t.keras"
    save_model(build_model("resnet50-ferplus", width=0.0625, input_size=SIZE), path)
    return path


def _expected(model, records, crop=1 / 1.6):
    """Logits of every decodable frame through the records pipeline, one batch."""
    from tf_cme.data.pipelines import frames_dataset
    keys, rows, imgs = [], [], []
    for key, idx, img in frames_dataset(records, image_size=SIZE,
                                        crop_fraction=crop).ignore_errors():
        keys.append(key.numpy().decode())
        rows.append(int(idx))
        imgs.append(img.numpy())
    out = np.asarray(model(np.stack(imgs), training=False))
    want = {}
    for k, i, o in zip(keys, rows, out):
        want.setdefault(k, {})[i] = o
    return want


def test_label_resume_and_stats(tmp_path, emovox_records, teacher_file):
    from tf_cme.data.pipelines import clips_dataset
    from tf_cme.labelling import label_records
    from tf_cme.models.io import load_model
    out = tmp_path / "labels"
    s = label_records(emovox_records, out, teacher_file, batch_size=4,
                      stats_png=tmp_path / "stats.png")
    assert s["frames"] == 12 and s["clips"] == 3 and s["undecodable_frames"] == 1
    assert s["frames_computed"] == 12
    assert sum(s["dominant_counts"].values()) == 12
    assert (tmp_path / "stats.png").stat().st_size > 1000
    want = _expected(load_model(teacher_file), emovox_records)
    clips = {c["key"].numpy().decode(): c["logits"].numpy() for c in clips_dataset(out)}
    assert set(clips) == set(want)
    for key, lg in clips.items():
        assert lg.shape[1] == 8
        for i, row in enumerate(lg):
            if i in want[key]:
                np.testing.assert_allclose(row, want[key][i], rtol=1e-4, atol=1e-4)
            else:   # the undecodable frame: documented missing logits
                assert key.endswith("/00001") and i == 2
                assert np.all(row == emotions.MISSING_LOGIT)
    man = json.loads((out / "manifest.json").read_text())
    assert man["labelled"] is True and man["teacher"]["name"] == "resnet50-ferplus"
    # resume: every shard is cached, nothing recomputed, same result
    s2 = label_records(emovox_records, tmp_path / "labels2", teacher_file, batch_size=4,
                       cache_dir=str(out) + ".logits-cache")
    assert s2["frames_computed"] == 0 and s2["frames"] == 12
    clips2 = {c["key"].numpy().decode(): c["logits"].numpy()
              for c in clips_dataset(tmp_path / "labels2")}
    for k in clips:
        np.testing.assert_array_equal(clips[k], clips2[k])


def test_foreign_teacher_mapped_by_name(tmp_path, emovox_records):
    import keras

    from tf_cme.data.pipelines import clips_dataset
    from tf_cme.labelling import label_records
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    x = keras.layers.Dense(7, kernel_initializer="ones",
                           bias_initializer=keras.initializers.Constant(
                               np.arange(7, dtype=np.float32)))(x)
    path = tmp_path / "fer2013.h5"
    keras.Model(inp, x).save(path)
    classes = "angry,disgust,fear,happy,sad,surprise,neutral"   # FER2013 order
    with pytest.raises(CmeError, match="'smug'"):
        label_records(emovox_records, tmp_path / "bad", path, classes=classes + ",smug")
    s = label_records(emovox_records, tmp_path / "lab", path, classes=classes,
                      colour="grey", scaling="unit", batch_size=8)
    assert s["clips"] == 3
    lg = next(iter(clips_dataset(tmp_path / "lab")))["logits"].numpy()
    # contempt is missing from FER2013: documented very low logit; the rest by name
    assert np.all(lg[:, 7] == emotions.MISSING_LOGIT)
    ok = lg[:, 0] != emotions.MISSING_LOGIT
    mean_grey = lg[ok, 4]                                           # anger = bias 0
    np.testing.assert_allclose(lg[ok, 0] - mean_grey, 6.0, atol=1e-4)   # neutral, bias 6
    np.testing.assert_allclose(lg[ok, 1] - mean_grey, 3.0, atol=1e-4)   # happiness, bias 3
    assert np.all((mean_grey >= 0) & (mean_grey <= 1.0001))             # unit scaling


def test_stale_cache_is_recomputed(tmp_path, emovox_records, teacher_file):
    """issue 12.1: re-running into the same --out with another crop fraction, or with
    other records under the same shard names, recomputes instead of reusing old logits."""
    from tf_cme.data.pipelines import clips_dataset
    from tf_cme.labelling import label_records
    from tf_cme.models.io import load_model
    out = tmp_path / "labels"
    s = label_records(emovox_records, out, teacher_file, batch_size=4)
    assert s["frames_computed"] == 12
    s = label_records(emovox_records, out, teacher_file, batch_size=4, overwrite=True,
                      crop_fraction=1.0)
    assert s["frames_computed"] == 12 and s["shards_from_cache"] == 0
    want = _expected(load_model(teacher_file), emovox_records, crop=1.0)
    for c in clips_dataset(out):
        key = c["key"].numpy().decode()
        for i, row in want[key].items():
            np.testing.assert_allclose(c["logits"].numpy()[i], row, rtol=1e-4, atol=1e-4)
    s = label_records(emovox_records, out, teacher_file, batch_size=4, overwrite=True)
    assert s["frames_computed"] == 0      # 1/1.6 again: its own entries, under its own key
    # other records (other frames) with the same shard file names: recomputed
    other = _build_records(tmp_path / "vox2", 1)
    assert sorted(p.name for p in other.glob("*.tfrecord*")) == \
        sorted(p.name for p in emovox_records.glob("*.tfrecord*"))
    s = label_records(other, out, teacher_file, batch_size=4, overwrite=True)
    assert s["frames_computed"] == 12 and s["shards_from_cache"] == 0
