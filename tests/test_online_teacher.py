"""The online frozen teacher (issue 5): for the same seed, distill_frames_dataset + the
Distiller's frozen teacher give the targets of the offline labels (label_faces.py, then
distill_dataset); fit moves the student only; bad input is a clear CmeError."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_cme.audio.io import write_wav
from tf_cme.demo.files import jpeg
from tf_cme.utils import CmeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _student_records as recs  # noqa: E402

SIZE = 32          # the tiny teacher's input size
CROP = 17760       # 1.11 s crops: at most 6 frame rows each
FOREIGN = "angry,disgust,fear,happy,sad,surprise,neutral"   # FER2013 order, no contempt


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Seven VoxCeleb-layout tracks with face frames (one shorter than the crop, one whose
    frames stop before its audio), built into emovox records of two clips per shard."""
    from tf_cme.data import emovox
    root = tmp_path_factory.mktemp("vox")
    rng = np.random.default_rng(0)
    lines = []
    tracks = [(2.0, 9, 1), (1.0, 5, 1), (3.0, 6, 1), (2.5, 11, 1), (1.5, 7, 1),
              (2.2, 10, 2), (1.8, 8, 2)]
    for t, (seconds, n_frames, code) in enumerate(tracks):
        ident = f"Synth_Person_{t % 3:03d}"
        write_wav(root / "wav" / ident / "vid0001" / f"{t + 1:05d}.wav",
                  rng.normal(0, 2000, int(16000 * seconds)).astype(np.int16), 16000)
        fdir = root / "frames" / ident / "1.6" / "vid0001" / f"{t + 1:05d}"
        fdir.mkdir(parents=True, exist_ok=True)
        for k in range(n_frames):   # smooth random faces: the teacher's logits vary per frame
            small = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
            img = np.kron(small, np.ones((8, 8, 1), np.uint8))
            (fdir / f"{6 * k:05d}.jpg").write_bytes(jpeg(img, quality=95))
        lines.append(f"{code} {ident}/vid0001/{t + 1:05d}.wav {ident}/1.6/vid0001/{t + 1:05d}")
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    emovox.build(root / "rec", emovox.EmovoxBuildConfig(root=str(root), shard_size=2, workers=1))
    return root / "rec"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    path = tmp_path_factory.mktemp("teacher") / "t.keras"
    save_model(build_model("resnet50-ferplus", width=0.0625, input_size=SIZE), path)
    return path


@pytest.fixture(scope="module")
def foreign_file(tmp_path_factory) -> Path:
    """A non-tf-cme Keras face model: grey input in 0..1, 7 FER2013-order outputs."""
    import keras
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu",
                            kernel_initializer=keras.initializers.RandomNormal(seed=1))(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, kernel_initializer=keras.initializers.RandomNormal(seed=2))(x)
    path = tmp_path_factory.mktemp("foreign") / "fer2013.h5"
    keras.Model(inp, x).save(path)
    return path


@pytest.fixture(scope="module")
def labels(tmp_path_factory, records, teacher_file, foreign_file) -> dict:
    """The offline labels of both teachers, as scripts/label_faces.py writes them."""
    from tf_cme.labelling import label_records
    base = tmp_path_factory.mktemp("labels")
    label_records(records, base / "native", teacher_file, batch_size=16)
    label_records(records, base / "foreign", foreign_file, batch_size=16, classes=FOREIGN,
                  colour="grey", scaling="unit")
    return {"native": base / "native", "foreign": base / "foreign"}


@pytest.fixture(scope="module")
def student():
    from tf_cme.models import build_model
    return build_model("emovoxceleb-student", width=1 / 16, dither=False)


def test_frames_per_crop_is_the_most_rows_a_crop_overlaps():
    from tf_cme.data.pipelines import frames_per_crop
    # ceil(25 (crop - 1) / 96000) + 1
    assert frames_per_crop(64384) == 18 and frames_per_crop(CROP) == 6
    assert frames_per_crop(32240) == 10


@pytest.mark.parametrize("which", ["native", "foreign"])
def test_online_targets_equal_offline_labels(records, labels, teacher_file, foreign_file,
                                             student, which):
    from tf_cme.data.pipelines import distill_dataset, distill_frames_dataset
    from tf_cme.labelling import load_teacher
    from tf_cme.training.distiller import Distiller
    teacher = (load_teacher(teacher_file) if which == "native" else
               load_teacher(foreign_file, classes=FOREIGN, colour="grey", scaling="unit"))
    aggs = ("max", "mean")
    dist = {agg: Distiller(student, teacher=teacher, agg=agg) for agg in aggs}
    worst = {agg: 0.0 for agg in aggs}
    spread, unmasked, batches = [], 0.0, 0
    for split, training, seed in (("train", True, 3), ("train", True, 4),
                                  ("unheard", False, 5)):
        on = list(distill_frames_dataset(records, split, batch_size=2, image_size=SIZE,
                                         crop_samples=CROP, seed=seed, training=training))
        for agg in aggs:
            off = list(distill_dataset(labels[which], split, batch_size=2, crop_samples=CROP,
                                       seed=seed, agg=agg, training=training))
            assert len(off) == len(on) > 0
            for (xa, ya), (xb, yb) in zip(off, on):
                np.testing.assert_array_equal(xa.numpy(), xb.numpy())   # same clips and crops
                t = dist[agg].targets(yb).numpy()
                want = ya["logits"].numpy()
                worst[agg] = max(worst[agg], float(np.abs(t - want).max()))
                if agg == "max":
                    spread.append(want)
                    batches += 1
        for _, yb in on:
            assert yb["frames"].shape[1:] == (6, SIZE, SIZE, 3)
            assert yb["frames"].dtype == tf.uint8
            n = yb["frame_mask"].numpy().sum(1)
            assert np.all((n >= 1) & (n <= 6))
            # the mask matters: all K slots (padding included) give other targets
            allk = dist["mean"].targets({"frames": yb["frames"],
                                         "frame_mask": tf.ones_like(yb["frame_mask"])})
            unmasked = max(unmasked, float(np.abs(allk.numpy() - dist["mean"].targets(yb)).max()))
    print(f"parity {which}: max |online - offline| = {worst['max']:.3g} (max), "
          f"{worst['mean']:.3g} (mean) over {batches} batches")
    assert worst["max"] < 1e-4 and worst["mean"] < 1e-4
    assert unmasked > 1e-3
    spread = np.concatenate(spread)
    assert spread.std(axis=0).max() > 1e-3          # the targets differ from clip to clip
    if which == "foreign":
        assert np.all(spread[:, 7] == -30.0)        # contempt: MISSING_LOGIT, by name


def test_fit_trains_the_student_only(records, teacher_file):
    from tf_cme.data.pipelines import distill_frames_dataset
    from tf_cme.models import build_model
    from tf_cme.models.io import load_model
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.optim import sgd
    teacher = load_model(teacher_file)
    t0 = [w.numpy().copy() for w in teacher.weights]
    s = build_model("emovoxceleb-student", width=1 / 16, dither=False)
    s0 = [w.numpy().copy() for w in s.weights]
    d = Distiller(s, teacher=teacher, agg="max")
    d.compile(optimizer=sgd(0.05, momentum=0.9))
    assert not teacher.trainable and not d.teacher.trainable_weights
    ds = distill_frames_dataset(records, "train", batch_size=2, image_size=SIZE,
                                crop_samples=CROP, seed=1, training=True, repeat=True)
    hist = d.fit(ds.take(3), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1]) and hist.history["loss"][-1] > 0
    ev = d.evaluate(distill_frames_dataset(records, "unheard", batch_size=2, image_size=SIZE,
                                           crop_samples=CROP, seed=2, training=False),
                    verbose=0, return_dict=True)
    assert np.isfinite(ev["loss"])
    assert abs(sum(ev[f"share_{n}"] for n in ("neutral", "happiness", "surprise", "sadness",
                                              "anger", "disgust", "fear", "contempt")) - 1) < 1e-5
    for w, before in zip(teacher.weights, t0):       # frozen: BN statistics included
        np.testing.assert_array_equal(w.numpy(), before, err_msg=w.path)
    moved = max(float(np.abs(w.numpy() - b).max()) for w, b in zip(s.weights, s0))
    assert moved > 1e-4
    slots = [v for v in d.optimizer.variables if "momentum" in v.path]
    assert len(slots) == len(s.trainable_variables)       # nothing of the teacher's


def test_train_student_script_online(tmp_path, records, teacher_file):
    """scripts/train_student.py --teacher: the run records the teacher's path and sha256.
    (Under TF_CME_CPU_REPLICAS=2 the same command trains on two mirrored replicas.)"""
    from _proc import run_script_inprocess

    from tf_cme.models.importers import sha256
    out = tmp_path / "run"
    rc = run_script_inprocess(
        "train_student.py", "--records", records, "--teacher", teacher_file, "--out", out,
        "--width", "0.0625", "--mini-epochs", "1", "--batch-size", "4", "--crop-samples", CROP,
        "--epoch-fraction", "1", "--set", "val_fraction=1", "--set", "images=0")
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"] == {"path": str(teacher_file), "sha256": sha256(teacher_file)}
    st = metrics["student"]
    assert st["steps_per_mini_epoch"] == 2 and st["val_steps"] == 1
    assert np.isfinite(st["train"]["loss"]) and np.isfinite(st["val"]["loss"])
    assert json.loads((out / "config.json").read_text())["teacher"] == str(teacher_file)
    assert (out / "model.keras").exists()


def test_bad_input_is_a_clear_error(tmp_path, records, labels, teacher_file, student):
    import keras

    from tf_cme.data.pipelines import distill_frames_dataset
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.student import StudentTrainConfig, check_records, train
    rng = np.random.default_rng(0)
    bare = recs.clip("A/v/3", "train", 0.1 * rng.standard_normal(20000), None)
    # records with neither logits nor frames: named before training
    unl = recs.write(tmp_path / "unl", [bare], labelled=False)
    with pytest.raises(CmeError, match="unl: record A/v/3 has no face frames"):
        distill_frames_dataset(unl, "train", batch_size=2, image_size=SIZE, crop_samples=CROP)
    with pytest.raises(CmeError, match="A/v/3.*no face frames.*and no teacher logits"):
        check_records(unl, ["train"], online=True)
    with pytest.raises(CmeError, match="A/v/3 .train. has no teacher logits and no face frames"):
        check_records(recs.write(tmp_path / "lab", [bare]), ["train"])
    with pytest.raises(CmeError, match="A/v/3.*no face frames"):
        train(StudentTrainConfig(records=str(unl), teacher=str(teacher_file), val_fraction=0),
              tmp_path / "run1")
    # labelled records without their frames cannot feed an online teacher
    with pytest.raises(CmeError, match="without their face frames"):
        distill_frames_dataset(labels["native"], "train", batch_size=2, image_size=SIZE)
    with pytest.raises(CmeError, match="max_frames: 5 is fewer than the 6"):
        distill_frames_dataset(records, "train", batch_size=2, image_size=SIZE,
                               crop_samples=CROP, max_frames=5)
    # records without logits and no teacher: the existing error, before anything is built
    with pytest.raises(CmeError, match="not labelled.*--teacher"):
        train(StudentTrainConfig(records=str(records), val_fraction=0), tmp_path / "run2")
    assert not (tmp_path / "run2" / "checkpoints" / "state.json").exists()
    for bad, msg in (("nope.keras", "teacher: nope.keras: no such teacher model file"),
                     (str(labels["native"] / "manifest.json"), "teacher: .*not a .keras file")):
        with pytest.raises(CmeError, match=msg):
            train(StudentTrainConfig(records=str(records), teacher=bad), tmp_path / "run3")
    # a teacher whose outputs are not 8 FER+ logits
    inp = keras.Input((SIZE, SIZE, 3))
    seven = keras.Model(inp, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(inp)))
    with pytest.raises(CmeError, match="7 outputs cannot be mapped to the 8 FER\\+ classes"):
        Distiller(student, teacher=seven)
    with pytest.raises(CmeError, match="expected a Keras model"):
        Distiller(student, teacher=object())
    with pytest.raises(CmeError, match="agg"):
        Distiller(student, agg="median")
    # batches that do not fit the mode
    d = Distiller(student, teacher=teacher_file)
    with pytest.raises(CmeError, match="no face frames"):
        d.targets({"logits": tf.zeros((2, 8))})
    with pytest.raises(CmeError, match="no teacher logits"):
        Distiller(student).targets({"frames": tf.zeros((2, 6, SIZE, SIZE, 3), tf.uint8)})
