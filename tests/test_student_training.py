"""train_student: the script on records, bad input, resume after a kill, TensorBoard."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _student_records as recs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import PY, env as _env, free_port as _free_port  # noqa: E402,F401


TINY = ["--width", "0.0625", "--mini-epochs", "3", "--batch-size", "8",
        "--crop-samples", "17760", "--epoch-fraction", "0.5", "--lr", "0.02", "0.005",
        "--set", "val_fraction=0.5"]


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("student")
    records = recs.synthetic(base / "labels")
    out = base / "run"
    p = subprocess.run([PY, "scripts/train_student.py", "--records", str(records),
                        "--out", str(out), *TINY, "--csv-log", str(out / "log.csv"),
                        "--profile-batch", "2"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p


def test_script_trains_on_records(script_run):
    out, p = script_run
    assert "mini-epoch 3" in p.stdout
    # --csv-log: one CSVLogger row per mini-epoch; --profile-batch 2: a profile in train/
    import csv
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(rows[-1]["learning_rate"]) == pytest.approx(0.005)
    assert {"loss", "top1_error", "val_loss", "val_top1_error"} <= set(rows[0])
    assert list((out / "tensorboard/train/plugins/profile").rglob("*.xplane.pb"))
    # fit is told its step counts: no "Your input ran out of data" warning (issue 13.6)
    assert "ran out of data" not in p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mini_epochs"] == 3 and cfg["width"] == 0.0625
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["mini_epoch"] == 3
    assert abs(state["learning_rate"] - 0.005) < 1e-9
    everything = json.loads((out / "metrics.json").read_text())
    metrics = everything["student"]
    assert metrics["steps_per_mini_epoch"] == 2 and metrics["val_steps"] == 1
    # protocol §6: a seeded random half (val_fraction=0.5) of the 8 unheard tracks
    from tf_cme.data.pipelines import random_subset
    val = everything["validation"]
    assert (val["split"], val["tracks"], val["of"], val["seed"]) == ("unheard", 4, 8, 0)
    assert val["keys_sha256"] == random_subset(cfg["records"], "unheard", 0.5, 0).digest
    assert sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.index")) == \
        ["ckpt-2.index", "ckpt-3.index"] and cfg["keep_epochs"] == [280]
    for k in ("loss", "top1_error", "mean_recall", "recall_neutral", "share_contempt"):
        assert k in metrics["train"] and k in metrics["val"]
    assert abs(sum(metrics["train"][f"share_{n}"] for n in
                   ("neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                    "fear", "contempt")) - 1) < 1e-5
    from tf_cme.models.io import load_model
    m = load_model(out / "model.keras")
    assert m.cme_metadata["name"] == "emovoxceleb-student"
    assert m.get_layer("conv1").filters == 6


def test_tensorboard_serves_scalars(script_run):
    out, _ = script_run
    port = _free_port()
    tb = subprocess.Popen([PY, "scripts/run_tensorboard.py", "--logdir", str(out / "tensorboard"),
                           "--host", "127.0.0.1", "--port", str(port)],
                          env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tags, deadline = None, time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if tags and any(tags.values()):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert tags, "TensorBoard did not answer"
        # the tags shared with the teacher (tf_cme.training.tags), Keras's train/validation
        for run, names in (("train", ("epoch_loss", "epoch_top1_error", "epoch_accuracy",
                                      "epoch_mean_recall", "epoch_recall/happiness",
                                      "epoch_learning_rate")),
                           ("validation", ("epoch_loss", "epoch_accuracy",
                                           "epoch_recall/happiness"))):
            for tag in names:
                assert tag in tags.get(run, {}), (run, tag, tags)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags",
                                    timeout=5) as r:
            images = json.loads(r.read())
        assert "inputs" in images.get("train", {}), images
    finally:
        tb.terminate()
        tb.wait(timeout=30)


def test_bad_records_are_clear_errors(tmp_path):
    from tf_cme.training.student import check_records
    from tf_cme.utils import CmeError
    rng = np.random.default_rng(0)
    good = recs.clip("A/v/1", "train", 0.1 * rng.standard_normal(8000), rng.standard_normal((3, 8)))
    short = recs.clip("A/v/2", "train", 0.1 * rng.standard_normal(300), rng.standard_normal((1, 8)))
    with pytest.raises(CmeError, match="A/v/2.*shorter than one 400-sample frame"):
        check_records(recs.write(tmp_path / "short", [good, short]), ["train"])
    nolog = recs.clip("A/v/3", "train", 0.1 * rng.standard_normal(8000), None)
    with pytest.raises(CmeError, match="A/v/3.*no teacher logits"):
        check_records(recs.write(tmp_path / "nolog", [good, nolog]), ["train"])
    with pytest.raises(CmeError, match="not labelled"):
        check_records(recs.write(tmp_path / "unl", [good], labelled=False), ["train"])
    wide = dict(recs.clip("A/v/4", "train", 0.1 * rng.standard_normal(8000), None),
                logits=rng.standard_normal(21).astype(np.float32))
    with pytest.raises(CmeError, match="A/v/4.*logits width != 8"):
        check_records(recs.write(tmp_path / "wide", [good, wide]), ["train"])
    with pytest.raises(CmeError, match="width 7"):
        check_records(recs.write(tmp_path / "t7", [good], teacher={"num_classes": 7}), ["train"])
    bad = np.full((3, 8), np.nan)
    nan = recs.clip("A/v/5", "train", 0.1 * rng.standard_normal(8000), bad)
    with pytest.raises(CmeError, match="A/v/5.*NaN"):
        check_records(recs.write(tmp_path / "nan", [good, nan]), ["train"])
    # train(): the same check runs before anything is built
    from tf_cme.training.student import StudentTrainConfig, train
    with pytest.raises(CmeError, match="A/v/3"):
        train(StudentTrainConfig(records=str(tmp_path / "nolog"), val_fraction=0),
              tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "state.json").exists()
    # options are checked before anything is read or built
    for bad_cfg, msg in ((dict(crop_samples=300), "crop_samples"),
                         (dict(teacher="senet50-ferplus"), "no such teacher model file"),
                         (dict(loss="huber"), "loss")):
        with pytest.raises(CmeError, match=msg):
            train(StudentTrainConfig(records=str(tmp_path / "nolog"), **bad_cfg),
                  tmp_path / "run2")


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    import _student_worker as w
    from tf_cme.training.student import train
    # uninterrupted, in this process
    metrics, student = train(w.tiny_config(), tmp_path / "ref", dataset_fn=w.dataset_fn_factory(),
                             sizes={"train": w.N, "unheard": w.N}, return_student=True)
    ref = w.weights_of(student)
    # killed (SIGKILL in the middle of mini-epoch 2), then restarted
    run = tmp_path / "killed"
    p = subprocess.run([PY, "tests/_student_worker.py", "train", str(tmp_path / "k.npz"),
                        str(run), "2"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == -9, (p.returncode, p.stderr[-2000:])
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["mini_epoch"] == 1 and not (run / "model.keras").exists()
    p = subprocess.run([PY, "tests/_student_worker.py", "train", str(tmp_path / "r.npz"),
                        str(run)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = np.load(tmp_path / "r.npz")
    assert sorted(resumed.files) == sorted(ref)
    for k in ref:
        np.testing.assert_allclose(resumed[k], ref[k], atol=1e-4, rtol=1e-4, err_msg=k)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["mini_epoch"] == 3


def test_resume_refuses_changed_options_and_records(script_run, tmp_path):
    """protocol §6 / issue 12.3: the whole resolved config and the records' manifest are
    compared on resume; only MAY_CHANGE keys may differ, --allow-changed overrides."""
    import shutil
    out, _ = script_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    cfg = json.loads((run / "config.json").read_text())
    records = Path(cfg["records"])
    args = ["scripts/train_student.py", "--out", str(run), *TINY]
    # another batch size: refused, naming the key (today: only 6 keys were compared)
    p = subprocess.run([PY, *args, "--records", str(records), "--set", "momentum=0.5"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and "momentum: 0.9 -> 0.5" in p.stderr, p.stderr[-2000:]
    # the same options on other records (a changed manifest): refused (today: accepted)
    other = tmp_path / "records"
    shutil.copytree(records, other)
    m = json.loads((other / "manifest.json").read_text())
    m["note"] = "rebuilt"
    (other / "manifest.json").write_text(json.dumps(m))
    p = subprocess.run([PY, *args, "--records", str(records)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]      # same everything: resumes (finished)
    cfg["records"] = str(other)
    from tf_cme.training.student import StudentTrainConfig, train
    from tf_cme.utils import CmeError
    c = StudentTrainConfig(**cfg)
    with pytest.raises(CmeError, match=r"sources\.records"):
        train(c, run)
    # more mini-epochs may change; with --allow-changed the new records are accepted
    import dataclasses
    c2 = dataclasses.replace(StudentTrainConfig(**json.loads((out / "config.json").read_text())))
    with pytest.raises(CmeError, match=r"momentum"):
        train(dataclasses.replace(c2, momentum=0.5), run)
    lines = (run / "resumes.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["resumed"] is True
    from tf_cme.training.student import MAY_CHANGE
    assert "mini_epochs" in MAY_CHANGE
