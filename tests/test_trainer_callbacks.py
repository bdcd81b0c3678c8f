"""User callbacks in both trainers (issue 15.1): a CSVLogger and a recording callback
passed to train(), the hook sequence, CSV rows appended on resume; --profile-batch parsing."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_teacher_train import SIZE, WIDTH, fer_records  # noqa: E402,F401  (fixture)

from tf_cme.utils import CmeError  # noqa: E402


def _recorder():
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append(("train_begin", None, None))

        def on_train_end(self, logs=None):
            self.calls.append(("train_end", None, None))

        def on_epoch_begin(self, epoch, logs=None):
            self.calls.append(("epoch_begin", epoch, None))

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch_end", epoch, dict(logs or {})))

        def on_train_batch_begin(self, batch, logs=None):
            self.calls.append(("batch_begin", batch, None))

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(("batch_end", batch, None))

        def outline(self):
            """The calls without batches, and the number of batch begin/end calls."""
            events = [(n, i) for n, i, _ in self.calls if not n.startswith("batch")]
            return events, (sum(n == "batch_begin" for n, _, _ in self.calls),
                            sum(n == "batch_end" for n, _, _ in self.calls))

        def epoch_logs(self):
            return [logs for n, _, logs in self.calls if n == "epoch_end"]
    return Recorder()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_student_callbacks_once_per_call_and_csv_appends(tmp_path):
    import keras
    import _student_worker as w
    from tf_cme.training.student import learning_rates, train
    run, log = tmp_path / "run", tmp_path / "log.csv"
    cfg = w.tiny_config(images=0)
    rec = _recorder()
    data = dict(dataset_fn=w.dataset_fn_factory(), sizes={"train": w.N, "unheard": w.N})
    train(cfg, run, callbacks=[keras.callbacks.CSVLogger(str(log), append=True), rec], **data)
    steps = 3                                   # ceil(0.67 * 24 / 8)
    events, batches = rec.outline()
    # train begin/end once per train() call, not per mini-epoch (fit runs once per mini-epoch)
    assert events == [("train_begin", None), ("epoch_begin", 0), ("epoch_end", 0),
                      ("epoch_begin", 1), ("epoch_end", 1), ("epoch_begin", 2),
                      ("epoch_end", 2), ("train_end", None)]
    assert batches == (3 * steps, 3 * steps)
    lrs = learning_rates(cfg)
    state = __import__("json").loads((run / "checkpoints" / "state.json").read_text())
    for e, logs in enumerate(rec.epoch_logs()):
        assert logs["learning_rate"] == pytest.approx(lrs[e])
        for k in ("loss", "top1_error", "mean_recall", "val_loss", "val_top1_error"):
            assert k in logs, (k, sorted(logs))
    last = rec.epoch_logs()[-1]           # the logs are the numbers the trainer records
    assert last["loss"] == pytest.approx(state["train"]["loss"])
    assert last["val_loss"] == pytest.approx(state["val"]["loss"])
    rows = _rows(log)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"loss", "top1_error", "learning_rate", "val_loss"} <= set(rows[0])
    assert float(rows[2]["learning_rate"]) == pytest.approx(lrs[2])
    # resumed with one more mini-epoch: one more row, appended under the same header
    import dataclasses
    rec2 = _recorder()
    train(dataclasses.replace(cfg, mini_epochs=4), run,
          callbacks=[keras.callbacks.CSVLogger(str(log), append=True), rec2], **data)
    assert rec2.outline() == ([("train_begin", None), ("epoch_begin", 3), ("epoch_end", 3),
                               ("train_end", None)], (steps, steps))
    assert [r["epoch"] for r in _rows(log)] == ["0", "1", "2", "3"]
    assert log.read_text().count("epoch,") == 1
    # a callback that stops training (as EarlyStopping does) ends the call after that
    # mini-epoch's checkpoint; the next call resumes after it
    import json

    class StopAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 4:
                self.model.stop_training = True
    m = train(dataclasses.replace(cfg, mini_epochs=7), run, callbacks=[StopAt()], **data)
    assert m["student"]["mini_epoch"] == 5
    assert json.loads((run / "checkpoints" / "state.json").read_text())["mini_epoch"] == 5


def _hparams_sessions(logdir) -> int:
    """How many hparams session summaries the event files of ``logdir`` hold."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata as hp_md
    return sum(v.tag == hp_md.SESSION_START_INFO_TAG
               for f in sorted(Path(logdir).glob("events.out.tfevents.*"))
               for ev in tf.compat.v1.train.summary_iterator(str(f)) for v in ev.summary.value)


def test_hparams_written_once_per_config(tmp_path):
    from tf_cme.training.summaries import Summaries, config_digest, hparams_marker
    cfg = {"lr": 0.1, "epochs": 3, "arch": "senet50-ferplus", "rates": [1, 2]}
    tb = tmp_path / "tensorboard"
    assert Summaries(tb).hparams(cfg, "run") is True
    marker = hparams_marker(tb, cfg)
    assert marker.name == f"hparams-{config_digest(cfg)[:16]}.json" and marker.exists()
    assert __import__("json").loads(marker.read_text())["config_sha256"] == config_digest(cfg)
    # a resume (new Summaries, same config, keys in another order): nothing written again
    assert Summaries(tb).hparams(dict(reversed(list(cfg.items()))), "run") is False
    assert _hparams_sessions(tb) == 1
    # a resume with a changed config writes that config's summary
    assert Summaries(tb).hparams({**cfg, "epochs": 5}, "run") is True
    assert _hparams_sessions(tb) == 2
    # a worker without summaries writes neither summary nor marker
    other = tmp_path / "other"
    assert Summaries(other, enabled=False).hparams(cfg, "run") is False
    assert not hparams_marker(other, cfg).exists()


def test_teacher_callbacks_and_csv_on_resume(tmp_path, fer_records):  # noqa: F811
    import keras
    from tf_cme.training.teacher import TeacherTrainConfig, train
    cfg = TeacherTrainConfig(records=str(fer_records), arch="senet50-ferplus", width=WIDTH,
                             input_size=SIZE, batch_size=16, learning_rates=[0.01, 0.001],
                             epochs_per_rate=[1, 1], steps_per_epoch=2, sample_images=0)
    run, log = tmp_path / "run", tmp_path / "log.csv"
    rec = _recorder()
    from tf_cme.training.callbacks import Profiler
    prof = Profiler(tmp_path / "prof", 2, 2)
    m1 = train(cfg, run, max_epochs=1,
               callbacks=[keras.callbacks.CSVLogger(str(log), append=True), rec, prof])
    assert prof.profiled == [2] and not prof.active
    assert list((tmp_path / "prof" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert rec.outline() == ([("train_begin", None), ("epoch_begin", 0), ("epoch_end", 0),
                              ("train_end", None)], (2, 2))
    logs = rec.epoch_logs()[0]
    row = m1["history"][0]
    assert logs["loss"] == pytest.approx(row["train_loss"])
    assert logs["accuracy"] == pytest.approx(row["train_accuracy"])
    assert logs["val_accuracy"] == pytest.approx(row["val_accuracy"])
    assert logs["learning_rate"] == pytest.approx(0.01)
    assert {"val_loss", "val_mean_recall", "val_recall_happiness"} <= set(logs)
    rec2 = _recorder()
    m2 = train(cfg, run, callbacks=[keras.callbacks.CSVLogger(str(log), append=True), rec2])
    assert rec2.outline() == ([("train_begin", None), ("epoch_begin", 1), ("epoch_end", 1),
                               ("train_end", None)], (2, 2))
    rows = _rows(log)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.01, 0.001])
    assert float(rows[1]["val_accuracy"]) == pytest.approx(m2["history"][1]["val_accuracy"])
    assert {"loss", "accuracy", "val_loss", "val_recall_neutral"} <= set(rows[0])
    # resumed with the same config: the run's one hparams session summary, not one per call
    assert _hparams_sessions(run / "tensorboard") == 1


def test_profile_batch_option():
    from tf_cme.training.callbacks import Profiler, cli_callbacks, parse_profile_batch
    assert parse_profile_batch("3") == (3, 3)
    assert parse_profile_batch("2,5") == (2, 5)
    assert parse_profile_batch(None) is None
    for bad in ("0", "5,2", "a", "1,2,3"):
        with pytest.raises(CmeError, match="--profile-batch"):
            parse_profile_batch(bad)
    cbs = cli_callbacks(None, "2,3", "RUN")
    assert len(cbs) == 1 and isinstance(cbs[0], Profiler)
    assert cbs[0].logdir == str(Path("RUN/tensorboard/train"))


def test_teacher_checkpoints_and_old_npz_refused(tmp_path, fer_records):  # noqa: F811
    """Issue 15.2: tf.train.Checkpoint + state.json (the student's pattern, last two kept);
    a run folder holding the .npz checkpoint of an older tf-cme is a CmeError naming it."""
    import json
    import numpy as np
    from tf_cme.training.teacher import TeacherTrainConfig, train
    cfg = TeacherTrainConfig(records=str(fer_records), arch="senet50-ferplus", width=WIDTH,
                             input_size=SIZE, batch_size=16, learning_rates=[0.01],
                             epochs_per_rate=[3], steps_per_epoch=1, sample_images=0)
    run = tmp_path / "run"
    train(cfg, run)
    ck = run / "checkpoints"
    state = json.loads((ck / "state.json").read_text())
    assert state["epoch"] == 3 and state["prefix"] == "ckpt-3"
    assert sorted(p.name for p in ck.glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    assert not (ck / "last.npz").exists()
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    np.savez(old / "checkpoints" / "last.npz", w0=np.zeros(3))
    with pytest.raises(CmeError, match=r"last\.npz.*written by an older tf-cme.*start a new "
                                       r"--out"):
        train(cfg, old)
    assert not (old / "model.keras").exists()



def _events(logdir):
    """{tag: [(step, value or None)]} and the plugin names of the event files directly in
    ``logdir``."""
    import tensorflow as tf
    from tensorboard.util import tensor_util
    out, plugins = {}, set()
    for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for ev in tf.compat.v1.train.summary_iterator(str(f)):
            for v in ev.summary.value:
                plugins.add(v.metadata.plugin_data.plugin_name)
                val = None
                if v.metadata.plugin_data.plugin_name == "scalars":
                    val = float(tensor_util.make_ndarray(v.tensor))
                out.setdefault(v.tag, []).append((ev.step, val))
    return out, plugins


def _hparams(logdir) -> dict:
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata as hp_md
    found = {}
    for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for ev in tf.compat.v1.train.summary_iterator(str(f)):
            for v in ev.summary.value:
                if v.metadata.plugin_data.plugin_name == hp_md.PLUGIN_NAME:
                    data = hp_md.parse_session_start_info_plugin_data(
                        v.metadata.plugin_data.content) if v.tag == \
                        hp_md.SESSION_START_INFO_TAG else None
                    if data is not None:
                        for k, hv in data.hparams.items():
                            found[k] = hv.WhichOneof("kind") and getattr(
                                hv, hv.WhichOneof("kind"))
    return found


def test_shared_tags_and_hparams_in_both_trainers(tmp_path, fer_records):  # noqa: F811
    """Issue 15.3/15.4: the same tag names (tf_cme.training.tags) in train/ and validation/
    of both trainers' TensorBoard folders, and the hparams plugin's config summary."""
    import _student_worker as w
    from tf_cme.training import tags
    from tf_cme.training.student import learning_rates, train as train_student
    from tf_cme.training.teacher import TeacherTrainConfig, train as train_teacher
    scfg = w.tiny_config(mini_epochs=2)
    train_student(scfg, tmp_path / "s", dataset_fn=w.dataset_fn_factory(),
                  sizes={"train": w.N, "unheard": w.N})
    tcfg = TeacherTrainConfig(records=str(fer_records), arch="senet50-ferplus", width=WIDTH,
                              input_size=SIZE, batch_size=16, learning_rates=[0.01],
                              epochs_per_rate=[2], steps_per_epoch=1, sample_images=2)
    tm = train_teacher(tcfg, tmp_path / "t")
    common_train = {tags.LOSS, tags.ACCURACY, tags.LEARNING_RATE, tags.INPUTS}
    common_val = {tags.LOSS, tags.ACCURACY, tags.MEAN_RECALL} | {
        tags.recall(e) for e in ("neutral", "happiness")}   # contempt: none in the tiny val
    seen = {}
    for name in ("s", "t"):
        tb = tmp_path / name / "tensorboard"
        tr, trp = _events(tb / tags.TRAIN_DIR)
        va, _ = _events(tb / tags.VALIDATION_DIR)
        assert common_train <= set(tr), (name, sorted(tr))
        assert common_val <= set(va), (name, sorted(va))
        # no old names left: lr, train/loss, val_recall/*, val/recall_*, learning_rate
        for t in list(tr) + list(va):
            assert t.startswith("epoch_") or t == tags.INPUTS, (name, t)
        assert [s for s, _ in tr[tags.LEARNING_RATE]] == [1, 2]
        seen[name] = (tr, va)
        hp = _hparams(tb)
        assert hp, f"{name}: no hparams session summary in {tb}"
        seen[name + "_hp"] = hp
    s_tr, s_va = seen["s"]
    assert [v for _, v in s_tr[tags.LEARNING_RATE]] == pytest.approx(list(learning_rates(scfg)))
    state = __import__("json").loads((tmp_path / "s/checkpoints/state.json").read_text())
    assert s_va[tags.LOSS][-1][1] == pytest.approx(state["val"]["loss"])
    assert s_tr[tags.ACCURACY][-1][1] == pytest.approx(1 - state["train"]["top1_error"])
    t_tr, t_va = seen["t"]
    assert t_va[tags.ACCURACY][-1][1] == pytest.approx(tm["history"][-1]["val_accuracy"])
    assert [v for _, v in t_tr[tags.LEARNING_RATE]] == pytest.approx([0.01, 0.01])
    assert seen["s_hp"]["mini_epochs"] == 2 and seen["s_hp"]["loss"] == "hot-cross-ent"
    assert seen["t_hp"]["arch"] == "senet50-ferplus" and seen["t_hp"]["batch_size"] == 16
    assert seen["t_hp"]["learning_rates"] == "[0.01]"


def test_csv_log_only_on_the_chief():
    """--csv-log's CSVLogger is left out of a non-chief worker's list (one writer per file);
    a user's callbacks run everywhere, as in Keras."""
    import keras
    from tf_cme.training.callbacks import callback_list, cli_callbacks
    user = keras.callbacks.Callback()
    cbs = cli_callbacks("log.csv", None, "RUN") + [user]
    assert isinstance(cbs[0], keras.callbacks.CSVLogger)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    assert callback_list(cbs, model, epochs=1, steps=1, chief=True).callbacks == cbs
    assert callback_list(cbs, model, epochs=1, steps=1, chief=False).callbacks == [user]


def _image_summaries(logdir) -> list:
    """(description, [height, width]) of every tags.INPUTS image summary in ``logdir``."""
    import tensorflow as tf
    from tensorboard.util import tensor_util
    from tf_cme.training import tags
    out = []
    for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for ev in tf.compat.v1.train.summary_iterator(str(f)):
            for v in ev.summary.value:
                if v.tag == tags.INPUTS:
                    arr = tensor_util.make_ndarray(v.tensor)      # [w, h, png, png, ...]
                    out.append((v.metadata.summary_description,
                                [int(arr[1]), int(arr[0])]))
    return out


def test_input_images_as_the_models_see_them_with_their_axes(tmp_path, fer_records):  # noqa: F811
    """Issue 15.2: teacher images after its own preprocessing (the input size, not the 48 px
    FER+ face), spectrograms with frequency upwards, each with a note of what it shows."""
    import _student_worker as w
    from tf_cme.training.student import SPECTROGRAM_NOTE, train as train_student
    from tf_cme.training.teacher import MODEL_VIEW_NOTE, TeacherTrainConfig, train
    train(TeacherTrainConfig(records=str(fer_records), arch="resnet50-ferplus", width=WIDTH,
                             input_size=SIZE, batch_size=16, learning_rates=[0.01],
                             epochs_per_rate=[1], steps_per_epoch=1, sample_images=2),
          tmp_path / "t")
    imgs = _image_summaries(tmp_path / "t" / "tensorboard" / "train")
    assert imgs and all(d == MODEL_VIEW_NOTE and hw == [SIZE, SIZE] for d, hw in imgs), imgs
    train_student(w.tiny_config(mini_epochs=1), tmp_path / "s",
                  dataset_fn=w.dataset_fn_factory(), sizes={"train": w.N, "unheard": w.N})
    imgs = _image_summaries(tmp_path / "s" / "tensorboard" / "train")
    assert imgs and all(d == SPECTROGRAM_NOTE and hw[0] == 512 for d, hw in imgs), imgs
    assert "frequency upwards" in SPECTROGRAM_NOTE


def test_spectrogram_images_put_low_frequencies_at_the_bottom():
    import numpy as np
    from tf_cme.training.student import _spectrogram_images
    spec = np.zeros((1, 512, 4, 1), np.float32)
    spec[0, 0] = 1.0                      # bin 0 (0 Hz) loud
    img = _spectrogram_images(spec)
    assert img[0, -1].min() == 1.0 and img[0, 0].max() == 0.0     # the last row: 0 Hz
