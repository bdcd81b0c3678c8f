"""protocol §6: the student's validation tracks (a seeded random 20 % of unheard, fresh
crops every mini-epoch) and its kept mini-epoch checkpoints (--epoch N)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _student_records as recs  # noqa: E402
import _student_worker as w  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return recs.synthetic(tmp_path_factory.mktemp("val") / "labels", n_train=8, n_unheard=40)


def _keys(ds):
    return [k.decode() for b in ds.as_numpy_iterator() for k in b]


def test_validation_tracks_are_a_seeded_random_fifth(records):
    import tensorflow as tf
    from tf_cme.data import pipelines
    order = pipelines.record_keys(records, "unheard")
    assert len(order) == 40
    a = pipelines.random_subset(records, "unheard", 0.2, seed=0)
    assert a.tracks == 8 and a.of == 40 and len(set(a.keys)) == 8 and set(a.keys) <= set(order)
    assert set(a.keys) != set(order[:8])                 # not the first 20 % in file order
    b = pipelines.random_subset(records, "unheard", 0.2, seed=0)
    assert b.keys == a.keys and b.digest == a.digest
    c = pipelines.random_subset(records, "unheard", 0.2, seed=1)
    assert c.tracks == 8 and c.keys != a.keys and c.digest != a.digest
    # the pipeline reads exactly those tracks, in record order
    spec = {"key": tf.io.FixedLenFeature([], tf.string)}
    got = _keys(pipelines._clip_batches(
        records, "unheard", batch_size=3, seed=5, training=False, repeat=False,
        input_context=None, skip_corrupt=False, shuffle_buffer=8, subset=a).map(
        lambda s: tf.io.parse_example(s, spec)["key"]))
    assert got == [k for k in order if k in set(a.keys)]
    ds = pipelines.distill_dataset(records, "unheard", batch_size=3, crop_samples=w.L,
                                   seed=5, training=False, subset=a)
    assert sum(int(x.shape[0]) for x, _ in ds) == 8


def test_validation_crops_are_fresh_each_mini_epoch_and_reproducible(records):
    from tf_cme.data import pipelines
    from tf_cme.training import student
    cfg = w.tiny_config(records=str(records), val_fraction=0.2)
    sub = student.validation_subset(cfg)
    assert sub.tracks == 8
    fn = student.default_dataset_fn(cfg, val_subset=sub)

    def crops(e):
        return np.concatenate([np.asarray(x) for x, _ in
                               fn(cfg.val_split, student.val_seed(cfg, e), False)])
    one, two, again = crops(1), crops(2), crops(1)
    assert one.shape == (8, w.L)
    assert not np.array_equal(one, two)
    np.testing.assert_array_equal(one, again)
    # and the val seeds never repeat a training seed of the run
    seeds = [student.train_seed(cfg, e) for e in range(1, 301)]
    assert not set(seeds) & {student.val_seed(cfg, e) for e in range(1, 301)}
    assert pipelines.random_subset(records, "unheard", 0.2, cfg.seed).keys == sub.keys


def test_train_validates_with_a_new_seed_each_mini_epoch(tmp_path):
    from tf_cme.training import student
    calls = []
    base = w.dataset_fn_factory()

    def spy(split, seed, training):
        calls.append((split, seed, training))
        return base(split, seed, training)
    cfg = w.tiny_config(mini_epochs=2, images=0)
    student.train(cfg, tmp_path / "run", dataset_fn=spy, sizes={"train": w.N, "unheard": w.N},
                  save_model=False)
    val = [seed for split, seed, training in calls if not training]
    assert val == [student.val_seed(cfg, 1), student.val_seed(cfg, 2)]
    assert len(set(val)) == 2


def _weights(model):
    return {layer.name: [np.asarray(v) for v in layer.get_weights()]
            for layer in model.layers if layer.weights}


def test_keep_epochs_survive_resume_and_load_with_epoch(tmp_path, records, monkeypatch, capsys):
    from tf_cme.models.io import load_model
    from tf_cme.training.student import run_model
    from tf_cme.training import student
    from tf_cme.utils import CmeError
    run = tmp_path / "run"
    cfg = w.tiny_config(mini_epochs=2, keep_epochs=[2], images=0)
    kw = dict(dataset_fn=w.dataset_fn_factory(), sizes={"train": w.N, "unheard": w.N})
    _, st = student.train(cfg, run, return_student=True, **kw)
    from tf_cme.models.student import with_frontend
    saved = _weights(with_frontend(st, synchronized=False))
    # resumed to 4 mini-epochs: ckpt-1 is pruned, ckpt-2 is kept (old code: pruned too)
    student.train(dataclasses.replace(cfg, mini_epochs=4), run, **kw)
    assert student.checkpoint_epochs(run) == [2, 3, 4]
    path = run_model(run, 2)
    assert path == run / "epochs" / "model-2.keras"
    loaded = _weights(load_model(path))
    assert loaded.keys() == saved.keys()
    for name in saved:
        for a, b in zip(loaded[name], saved[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    last = _weights(load_model(run / "model.keras"))
    assert any(not np.array_equal(a, b) for n in last for a, b in zip(last[n], saved[n]))
    with pytest.raises(CmeError, match=r"run: no checkpoint of mini-epoch 5; the run holds "
                                       r"mini-epoch\(s\) 2, 3, 4"):
        run_model(run, 5)

    # the commands: evaluate_student.py and export_model.py --epoch 2 use that model
    from tf_cme.commands import evaluate_student, export_model
    monkeypatch.setattr(sys, "argv", ["evaluate_student.py", str(run), "--epoch", "2",
                                      "--records", str(records), "--set", "gallery_size=0"])
    assert evaluate_student.main() == 0
    m = json.loads((run / "eval-epoch-2" / "metrics.json").read_text())
    assert m["model"] == str(path)
    assert json.loads((run / "eval-epoch-2" / "config.json").read_text())["epoch"] == 2
    monkeypatch.setattr(sys, "argv", ["export_model.py", str(run), "--epoch", "2",
                                      "--out", str(tmp_path / "export")])
    assert export_model.main() == 0
    from tf_cme.serving import export
    info = json.loads((tmp_path / "export" / "emovoxceleb-student" / "1"
                       / export.METADATA_FILE).read_text())
    assert info["source"] == str(path) and info["config"]["epoch"] == 2
    for argv in (["evaluate_student.py", str(run), "--epoch", "5", "--records", str(records)],
                 ["export_model.py", str(run), "--epoch", "5"]):
        monkeypatch.setattr(sys, "argv", argv)
        main = evaluate_student.main if argv[0].startswith("evaluate") else export_model.main
        with pytest.raises(CmeError, match=r"no checkpoint of mini-epoch 5.*2, 3, 4"):
            main()


def test_epoch_of_a_run_that_is_not_a_student(tmp_path):
    from tf_cme.training.student import run_model
    from tf_cme.utils import CmeError
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text(json.dumps({"lr_classifier_mult": 1}))
    with pytest.raises(CmeError, match="teacher: not a student run"):
        run_model(tmp_path / "teacher", 280)


def test_keep_epochs_option(tmp_path):
    from tf_cme import config
    from tf_cme.training.student import MAY_CHANGE, StudentTrainConfig, train
    from tf_cme.utils import CmeError
    assert StudentTrainConfig().keep_epochs == [280]
    assert "keep_epochs" in MAY_CHANGE
    cfg = config.resolve(StudentTrainConfig, None, {"keep_epochs": "2,280"})
    assert cfg.keep_epochs == [2, 280]
    with pytest.raises(CmeError, match="keep_epochs: 0"):
        train(w.tiny_config(keep_epochs=[0]), tmp_path / "r", dataset_fn=w.dataset_fn_factory(),
              sizes={"train": w.N, "unheard": w.N})
