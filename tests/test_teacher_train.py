"""Teacher FER+ training (per-variable LR multipliers, resume), evaluation, labelling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tf_cme import emotions
from tf_cme.utils import CmeError

WIDTH, SIZE = 0.0625, 32


@pytest.fixture(scope="module")
def fer_records(tmp_path_factory) -> Path:
    """A small FER+ record set built from demo-generator CSVs (real formats)."""
    from tf_cme.data import ferplus
    from tf_cme.demo import corpus as dc
    root = tmp_path_factory.mktemp("fer")
    dc.write_ferplus(root, 160, seed=0)
    ferplus.build(root / "rec", ferplus.FerplusBuildConfig(
        fer_csv=str(root / "ferplus/fer2013.csv"), ferplus_csv=str(root / "ferplus/fer2013new.csv"),
        workers=1))
    return root / "rec"


def test_losses():
    from tf_cme.training.teacher import per_example_loss
    logits = np.array([[2.0, 0.0, -1.0, 0, 0, 0, 0, 0]], np.float32)
    logq = logits - np.log(np.exp(logits).sum())
    hard = float(np.asarray(per_example_loss("softmaxlog", logits, np.array([2]), None))[0])
    assert hard == pytest.approx(-logq[0, 2], rel=1e-5)
    votes = np.array([[6, 4, 0, 0, 0, 0, 0, 0]], np.float32)
    soft = float(np.asarray(per_example_loss("distributions", logits, None, votes))[0])
    assert soft == pytest.approx(-(0.6 * logq[0, 0] + 0.4 * logq[0, 1]), rel=1e-5)


def _checkpoint(run):
    """(state.json, {weight path: value}) of the run's last checkpoint (tf.train.Checkpoint
    of the model and the optimizer, read into a fresh model of the run's config)."""
    import tensorflow as tf
    from tf_cme import config as config_lib
    from tf_cme.training.teacher import TeacherTrainConfig, build_teacher
    state = json.loads((run / "checkpoints/state.json").read_text())
    cfg = config_lib.from_dict(TeacherTrainConfig, json.loads((run / "config.json").read_text()))
    model = build_teacher(cfg)
    tf.train.Checkpoint(model=model).read(str(run / "checkpoints" / state["prefix"])) \
        .expect_partial().assert_existing_objects_matched()
    return state, {w.path: np.asarray(w) for w in model.weights}


def test_train_resume_evaluate(tmp_path, fer_records):
    from tf_cme.evaluation.teacher_eval import evaluate
    from tf_cme.models.io import load_model
    from tf_cme.training.teacher import TeacherTrainConfig, train
    cfg = TeacherTrainConfig(records=str(fer_records), arch="resnet50-ferplus", width=WIDTH,
                             input_size=SIZE, batch_size=16, learning_rates=[0.01, 0.001],
                             epochs_per_rate=[1, 1], steps_per_epoch=2, backbone_lr_mult=0.0,
                             sample_images=2)
    run = tmp_path / "run"
    m1 = train(cfg, run, max_epochs=1)          # "interrupted" after one epoch
    assert m1["epochs_done"] == 1 and (run / "model.keras").exists()
    assert list((run / "tensorboard").iterdir())
    state1, w1 = _checkpoint(run)
    assert state1["epoch"] == 1 and state1["history"][0]["lr"] == 0.01
    m2 = train(cfg, run)                        # resumes at epoch 2 (lr 0.001)
    assert m2["epochs_done"] == 2 and len(m2["history"]) == 2
    assert m2["history"][1]["lr"] == 0.001
    state2, w2 = _checkpoint(run)
    assert state2["epoch"] == 2
    # backbone multiplier 0: the trunk's trainable weights did not move in epoch 2, the
    # classifier's (multiplier 1) did; BN moving statistics (not trained by SGD) did
    for name in ("conv1_7x7_s2/kernel", "conv3_1_3x3/kernel", "conv5_3_1x1_increase_bn/gamma"):
        np.testing.assert_array_equal(w1[name], w2[name])
    assert not np.allclose(w1["classifier/kernel"], w2["classifier/kernel"])
    assert not np.allclose(w1["conv1_7x7_s2_bn/moving_mean"], w2["conv1_7x7_s2_bn/moving_mean"])
    best = load_model(run / "model.keras")
    from tf_cme.data.records import manifest_digest
    assert best.cme_metadata["provenance"] == f"trained:{manifest_digest(fer_records)}"
    assert best.cme_metadata["synthetic"] is False     # CSVs outside the demo corpus
    assert best.cme_metadata["training"]["epoch"] == json.loads(
        (run / "metrics.json").read_text())["training"]["best_epoch"]
    # evaluation
    met = evaluate(run / "model.keras", fer_records, run)
    man = json.loads((fer_records / "manifest.json").read_text())
    assert met["val_examples"] == man["splits"]["val"]["examples"]
    assert 0.0 <= met["val_accuracy"] <= 1.0 and 0.0 <= met["test_accuracy"] <= 1.0
    assert met["provenance"].startswith("trained:") and met["caveat"] is None
    cm = np.array(met["val_confusion"])
    assert cm.sum() == met["val_examples"]
    assert met["val_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert set(met["val_recall"]) == set(emotions.FERPLUS)
    assert (run / "figures/confusion-val.png").stat().st_size > 1000
    saved = json.loads((run / "metrics.json").read_text())
    assert "training" in saved and saved["test_accuracy"] == met["test_accuracy"]


def test_bad_config(tmp_path, fer_records):
    from tf_cme.training.teacher import TeacherTrainConfig, train
    with pytest.raises(CmeError, match="learning_rates"):
        train(TeacherTrainConfig(records=str(fer_records), learning_rates=[0.1],
                                 epochs_per_rate=[1, 2]), tmp_path / "r")
    with pytest.raises(CmeError, match="teacher loss"):
        train(TeacherTrainConfig(records=str(fer_records), loss="hinge"), tmp_path / "r")


def _tiny(fer_records, **kw):
    from tf_cme.training.teacher import TeacherTrainConfig
    base = dict(records=str(fer_records), arch="senet50-ferplus", width=WIDTH, input_size=SIZE,
                batch_size=16, learning_rates=[0.01], epochs_per_rate=[1], steps_per_epoch=1,
                sample_images=0)
    base.update(kw)
    return TeacherTrainConfig(**base)


def test_seeded_runs_identical_and_resume_refuses_changed_options(tmp_path, fer_records):
    """Issue 12.4: two fresh runs of one config start from the same weights (seeded init
    and dropout), so epoch 1 reports the same loss and ends with the same weights.
    Issue 12.3: resuming with another batch size / lr / augmentation is an error naming the
    keys (the run's config is kept); the number of epochs and what is logged may change;
    every resume is recorded."""
    from tf_cme.training.teacher import train
    cfg = _tiny(fer_records, epochs_per_rate=[2])
    m1 = train(cfg, tmp_path / "a", max_epochs=1)
    m2 = train(cfg, tmp_path / "b", max_epochs=1)
    assert m1["history"][0]["train_loss"] == m2["history"][0]["train_loss"]
    (_, w1), (_, w2) = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k], err_msg=k)
    run = tmp_path / "a"
    with pytest.raises(CmeError, match=r"batch_size: 16 -> 8") as e:
        train(_tiny(fer_records, epochs_per_rate=[2], batch_size=8, learning_rates=[0.1],
                    augment=False), run)
    assert "augment" in str(e.value) and "learning_rates" in str(e.value)
    assert "--allow-changed" in str(e.value)
    assert json.loads((run / "config.json").read_text())["batch_size"] == 16
    m = train(_tiny(fer_records, epochs_per_rate=[2], sample_images=1), run)  # may change
    assert m["epochs_done"] == 2
    lines = (run / "resumes.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["changed"] == {"sample_images": [0, 1]}
