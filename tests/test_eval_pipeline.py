"""Student evaluation and external benchmark with a real (tiny, untrained) student, end to end
on the tiny demo corpus: records -> evaluate_student -> benchmark_external -> report.

The scripts run in-process (``runpy``) so TensorFlow is imported once. The corpus is cut
to a few tracks and clips to keep the test fast.
"""
from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tf_cme import emotions
from tf_cme.data import schema
from tf_cme.evaluation import scoring, student_eval, tensorboard
from tf_cme.metrics import roc
from tf_cme.metrics.classification import softmax
from tf_cme.utils import CmeError


def _script(repo_root, name, *args):
    """scripts/NAME run in-process (``repo_root`` is the checkout the fixture names)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _proc import run_script_inprocess
    return run_script_inprocess(name, *args)


@pytest.fixture(scope="module")
def experiment(demo_corpus, tmp_path_factory):
    """A make-demo-shaped experiment folder (labels/, student/, records/external/, teacher/)
    from a cut of the tiny demo corpus, with an untrained width-1/16 student."""
    from tf_cme.data import emovox, external as ext_records, labelled, pipelines
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    from tf_cme.utils import write_json
    exp = tmp_path_factory.mktemp("exp") / "demo"
    vox = demo_corpus / "voxceleb"
    # 5 train, 4 unheard, 4 heard tracks
    lines = (vox / "splits.txt").read_text().split("\n")
    keep = {"1": 5, "2": 4, "3": 4}
    cut = []
    for ln in lines:
        if ln.strip() and keep.get(ln.split()[0], 0) > 0:
            keep[ln.split()[0]] -= 1
            cut.append(ln)
    (exp / "src").mkdir(parents=True)
    (exp / "src" / "splits.txt").write_text("\n".join(cut) + "\n")
    emovox.build(exp / "records" / "emovox", emovox.EmovoxBuildConfig(
        root=str(vox), splits=str(exp / "src" / "splits.txt"), workers=1))
    truth = {}
    with open(vox / "truth.csv") as f:
        for r in csv.DictReader(f):
            truth[f"{r['identity']}/{r['video']}/{r['track']}"] = \
                emotions.FERPLUS.index(r["dominant_emotion"])
    rng = np.random.default_rng(0)
    logits = {}
    for ex in pipelines.clips_dataset(str(exp / "records" / "emovox")).as_numpy_iterator():
        key = ex["key"].decode()
        lg = rng.standard_normal((len(ex["frame_index"]), 8)).astype(np.float32)
        lg[:, truth[key]] += 3.0
        logits[key] = lg
    labelled.write_labelled(exp / "records" / "emovox", exp / "labels", logits,
                            {"name": "synthetic"})
    # a 12-clip external subset (2 per class), wav paths absolute
    with open(demo_corpus / "external" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, list] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    with open(exp / "src" / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker"])
        for label in sorted(by_label):
            for r in by_label[label][:2]:
                w.writerow([str(demo_corpus / "external" / r["path"]), label, r["speaker"]])
    ext_records.build(exp / "records" / "external", ext_records.ExternalBuildConfig(
        root=str(exp / "src"), dataset="rml-demo", workers=1))
    save_model(build_model("emovoxceleb-student", width=1 / 16), exp / "student" / "model.keras")
    write_json(exp / "student" / "config.json", {"model": "emovoxceleb-student", "width": 1 / 16})
    from tf_cme.metrics import contract
    contract.write_metrics(exp / "teacher", "teacher", {"val_accuracy": 0.95,
                                                        "test_accuracy": 0.93})
    write_json(exp / "timings.json", {"corpus": 1.0, "records": 2.0})
    return exp


# ------------------------------------------------------------------ the scorer

def test_scorer_batches_by_bucket_and_matches_per_clip(experiment):
    from tf_cme.models.io import load_model
    from tf_cme.models.student import with_frontend
    model = load_model(experiment / "student" / "model.keras")
    rng = np.random.default_rng(0)
    # 100-frame minimum is 16,240 samples; clips are clamped to max_samples (19.9 s by
    # default, 40,000 here to keep the test small)
    lens = [16240, 20000, 33000, 16239, 40000, 21000, 52000]
    clips = [(i, (rng.standard_normal(n) * 0.1).astype(np.float32)) for i, n in enumerate(lens)]
    scorer = scoring.StudentScorer(model, batch_size=2, max_samples=40000)
    assert scorer._spec is not None                      # front end split off, body batched
    got = dict(scorer.score(iter(clips)))
    assert sorted(got) == [0, 1, 2, 4, 5, 6]
    assert scorer.skipped == {"shorter than the smallest bucket (16240 samples)": 1}
    ref = with_frontend(model, crop="bucket", dither=False)
    for i, w in clips:
        if i in got:
            want = np.asarray(ref(w[None, :40000]))[0]
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_teacher_label_is_argmax_of_per_emotion_max():
    f = np.zeros((3, 8))
    f[0, 1] = 5.0        # happiness peaks once
    f[1:, 0] = 4.0       # neutral is higher on average but lower at its peak
    assert student_eval.teacher_label(f) == 1


def test_pr_curve_data_matches_tensorboard_pb():
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import summary as pr_summary
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50).astype(bool)
    probs = rng.uniform(size=50).astype(np.float32)
    ours = tensorboard.pr_curve_data(labels, probs, 21)
    pb = pr_summary.pb("x", labels, probs, num_thresholds=21)
    np.testing.assert_allclose(ours, tf.make_ndarray(pb.value[0].tensor), rtol=1e-6)


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def evaluated(experiment, repo_root):
    exp = experiment
    assert _script(repo_root, "evaluate_student.py", exp / "student", "--records", exp / "labels",
                   "--out", exp / "eval", "--set", "gallery_size=1") == 0
    return exp, json.loads((exp / "eval" / "metrics.json").read_text())


def test_evaluate_student(evaluated):
    exp, m = evaluated
    assert m["tracks"] == {"train": 5, "heard": 4, "unheard": 4}
    assert m["skipped"] == {}
    p = np.load(exp / "eval" / "predictions.npz")
    assert p["student_logits"].shape == (13, 8)
    probs = softmax(p["student_logits"])
    for split, code in schema.SPLIT_SETS.items():
        sel = p["set"] == code
        counts = m["teacher_label_counts"][split]
        assert sum(counts.values()) == m["tracks"][split]
        present = []
        for c, emo in enumerate(emotions.FERPLUS):
            r = m["auc"][split][emo]
            assert r["positives"] == counts[emo] == int(np.sum(p["teacher_label"][sel] == c))
            if counts[emo] in (0, m["tracks"][split]):
                assert r["auc"] is None and not r["evaluable"]    # never 0.5, never NaN
                assert r["reason"] in ("no positive example", "no negative example")
            else:
                # the AUC recomputed from the saved predictions
                want = roc.roc_auc(p["teacher_label"][sel] == c, probs[sel, c])
                assert r["auc"] == pytest.approx(want)
                if emo not in roc.DEFAULT_IGNORE:
                    present.append(want)
        want_mean = np.mean(present) if present else None
        assert m["mean_auc"][split] == (pytest.approx(want_mean) if present else None)
    # figures: one per emotion and split, cropped from the grid, and the grid
    figs = sorted(f.name for f in (exp / "eval" / "figures").glob("roc-*.png"))
    assert len(figs) == 8 * 3 + 1 and "roc-grid.png" in figs
    grid = Image.open(exp / "eval" / "figures" / "roc-grid.png")
    assert grid.size[0] > 600 and grid.size[1] > 1500
    panel = np.asarray(Image.open(exp / "eval" / "figures" / "roc-neutral-train.png")
                       .convert("RGB"))
    assert panel.shape[0] > 200 and panel.shape[1] > 200
    assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 10
    # gallery: the top clip of each emotion, with frame, audio and both distributions
    g = json.loads((exp / "eval" / "gallery" / "gallery.json").read_text())
    assert len(g["entries"]) == 8
    for e in g["entries"]:
        assert (exp / "eval" / "gallery" / e["frame"]).exists()
        assert (exp / "eval" / "gallery" / e["audio"]).exists()
        assert len(e["teacher_probs"]) == 8 and len(e["student_probs"]) == 8
    table = student_eval.format_table(m)
    assert "mean" in table and "n/e" in table


def test_tensorboard_pr_curves_and_projector(evaluated):
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.pr_curve import metadata as pr_md
    exp, m = evaluated
    tb = exp / "eval" / "tensorboard"
    acc = event_accumulator.EventAccumulator(str(tb), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert len(tags) == 3 * 8 and "heard/neutral/pr_curves" in tags
    # emotions without a positive in a split: a text summary saying so, no empty curve
    counts = m["teacher_label_counts"]
    empty = sorted(f"{s}/{e}" for s in counts for e in counts[s] if counts[s][e] == 0)
    assert empty and sorted(m["pr_curves_without_positives"]) == empty
    for tag in empty:
        md = acc.SummaryMetadata(f"{tag}/pr_curves")
        assert md.plugin_data.plugin_name == "text"
        msg = tf.make_ndarray(acc.Tensors(f"{tag}/pr_curves")[0].tensor_proto)
        assert b"no PR curve: no positive among" in msg.item()
    full = next(f"{s}/{e}" for s in counts for e in counts[s] if counts[s][e] > 0)
    assert acc.SummaryMetadata(f"{full}/pr_curves").plugin_data.plugin_name == \
        pr_md.PLUGIN_NAME
    s0, e0 = full.split("/")
    data = tf.make_ndarray(acc.Tensors(f"{full}/pr_curves")[0].tensor_proto)
    assert data.shape == (6, 101)
    # TP + FN = tracks labelled with the emotion, at every threshold
    np.testing.assert_allclose(data[0] + data[3], counts[s0][e0])
    # projector: the fc7 embedding first, then the logits, labelled by the teacher label
    from tensorboard.plugins import projector
    from google.protobuf import text_format
    cfg = text_format.Parse((tb / "projector_config.pbtxt").read_text(),
                            projector.ProjectorConfig())
    assert [e.tensor_name for e in cfg.embeddings] == ["student_fc7", "student_logits"]
    from tf_cme.models.io import load_model
    fc7 = load_model(exp / "student" / "model.keras").get_layer("fc7_relu").output.shape[-1]
    assert list(cfg.embeddings[0].tensor_shape) == [13, fc7]
    assert list(cfg.embeddings[1].tensor_shape) == [13, 8]
    vec = (tb / "student_fc7.tsv").read_text().strip().split("\n")
    assert len(vec) == 13 and len(vec[0].split("\t")) == fc7 != 8
    pred = np.load(exp / "eval" / "predictions.npz")
    meta = (tb / "student_fc7_metadata.tsv").read_text().strip().split("\n")
    assert meta[0] == "teacher_label\tkey\tsplit\tstudent_label" and len(meta) == 14
    assert [r.split("\t")[0] for r in meta[1:]] == [emotions.FERPLUS[int(t)]
                                                   for t in pred["teacher_label"]]
    vec8 = np.loadtxt(tb / "student_logits.tsv", ndmin=2)
    np.testing.assert_allclose(vec8, pred["student_logits"], rtol=1e-5, atol=1e-5)


def test_benchmark_external_and_report(evaluated, repo_root):
    exp, m = evaluated
    assert _script(repo_root, "benchmark_external.py", "--model", exp / "student", "--records",
                   exp / "records" / "external", "--out", exp / "external",
                   "--random-draws", "2") == 0
    x = json.loads((exp / "external" / "metrics.json").read_text())
    assert x["dataset"] == "rml-demo" and x["clips"] == 12
    assert x["classes"] == list(emotions.RML)
    assert x["fold_boundaries"] == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
    accs = x["student"]["fold_accuracies"]
    assert len(accs) == 10 and x["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert np.array(x["student"]["confusion"]).sum() == 12
    assert x["random"]["draws"] == 2
    assert x["teacher_visual"] == {"status": "skipped",
                                   "reason": "the external records have no face frames"}
    from tf_cme.serving.export import load_calibration
    cal = load_calibration(exp / "external" / "calibration.json")
    assert cal["weights"].shape == (8, 6) and cal["classes"] == list(emotions.RML)
    for f in ("confusion-student.png", "accuracy.png"):
        assert Image.open(exp / "external" / "figures" / f).size[0] > 300

    assert _script(repo_root, "report.py", exp, "--out", exp / "report",
                   "--summary", exp / "summary.json") == 0
    s = json.loads((exp / "summary.json").read_text())
    assert s["teacher"] == {"val_accuracy": 0.95, "test_accuracy": 0.93}
    assert s["student"]["mean_auc"] == {k: m["mean_auc"][k] for k in ("train", "heard", "unheard")}
    assert s["external"] == {"accuracy_mean": x["accuracy_mean"],
                             "accuracy_std": x["accuracy_std"],
                             "random_accuracy_mean": x["random_accuracy_mean"]}
    assert s["timings"] == {"corpus": 1.0, "records": 2.0}
    page = (exp / "report" / "report.html").read_text()
    assert page.count("data:audio/wav;base64,") == 8       # one clip per emotion
    assert "rml-demo" in page


def test_teacher_visual_features_are_max_pooled_frame_logits():
    import io
    import keras
    from tf_cme.evaluation import external
    inp = keras.Input((None, None, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(inp, "float32") / 255.0)
    stand_in = keras.Model(inp, keras.layers.Dense(8, kernel_initializer="glorot_uniform")(x))

    def jpeg(v):
        buf = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), v, np.uint8)).save(buf, "JPEG", quality=100)
        return buf.getvalue()

    frames = [[jpeg(10), jpeg(200), jpeg(90)], [], [jpeg(255)]]
    feats, ok = external.teacher_features(stand_in, frames, batch_size=2)
    assert ok.tolist() == [True, False, True]
    for i, fr in enumerate(frames):
        if fr:
            imgs = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in fr])
            want = np.asarray(stand_in(imgs)).max(axis=0)
            np.testing.assert_allclose(feats[i], want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ bad input

def test_bad_inputs(experiment, tmp_path, repo_root):
    from tf_cme.evaluation import external
    student = experiment / "student"
    # a run folder without model.keras: script exit 1, one line
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    code = _script(repo_root, "evaluate_student.py", tmp_path / "run", "--records",
                   experiment / "labels")
    assert code == 1
    with pytest.raises(CmeError, match="no model.keras"):
        scoring.load_student(tmp_path / "run")
    with pytest.raises(CmeError, match="no such run folder"):
        scoring.load_student(tmp_path / "absent")
    with pytest.raises(CmeError, match="no model.keras"):
        external.benchmark(tmp_path / "run", experiment / "records" / "external", tmp_path / "o")
    with pytest.raises(CmeError, match="no such record folder"):
        external.benchmark(student, tmp_path / "absent", tmp_path / "o")
    with pytest.raises(CmeError, match="holds 'emovox' records, expected 'external'"):
        external.benchmark(student, experiment / "labels", tmp_path / "o")
    with pytest.raises(CmeError, match="holds 'external' records, expected 'emovox'"):
        student_eval.evaluate(student, experiment / "records" / "external", tmp_path / "o")
    with pytest.raises(CmeError, match="fewer than the 30 folds"):
        external.benchmark(student, experiment / "records" / "external", tmp_path / "o",
                           external.ExternalConfig(folds=30))
    # only unlabelled or too-short tracks: nothing to evaluate, and the reasons are named
    clips = [{"key": b"a/b/1", "set": 1, "waveform": np.zeros(20000, np.float32),
              "logits": np.zeros((0, 8), np.float32)},
             {"key": b"a/b/2", "set": 2, "waveform": np.zeros(1000, np.float32),
              "logits": np.ones((2, 8), np.float32)}]
    with pytest.raises(CmeError, match="no track could be evaluated.*unlabelled.*smallest "
                                       "bucket"):
        student_eval.evaluate(student, "in-memory", tmp_path / "o", clips=clips)


def test_nonfinite_logits_are_counted_skips_not_neutral(experiment, tmp_path):
    """Issue 12.7: a track whose teacher logits are NaN was counted as neutral (arg-max of
    NaN = 0) and evaluation exited 0; now it is a counted skip in metrics.json."""
    student = experiment / "student"
    rng = np.random.default_rng(0)
    good = [{"key": f"id{i}/v/{i}".encode(), "set": 1 + i % 3,
             "waveform": rng.normal(0, 0.1, 32000).astype(np.float32),
             "logits": rng.normal(0, 1, (4, 8)).astype(np.float32)} for i in range(12)]
    bad = [{"key": b"idx/v/nan", "set": 3, "waveform": good[0]["waveform"],
            "logits": np.full((4, 8), np.nan, np.float32)}]
    m = student_eval.evaluate(student, "in-memory", tmp_path / "o", clips=good + bad)
    assert m["skipped"] == {student_eval.NONFINITE_TEACHER: 1}, m["skipped"]
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["skipped"] == {student_eval.NONFINITE_TEACHER: 1}
    with pytest.raises(CmeError, match="no track could be evaluated.*non-finite teacher"):
        student_eval.evaluate(student, "in-memory", tmp_path / "o2", clips=bad)


def test_student_scoring_progress_bar_has_a_total(experiment, tmp_path, monkeypatch):
    """The scoring bar knows how many tracks there are (tqdm then shows an ETA): the
    labelled manifest's examples, or --limit when smaller."""
    seen = []
    real = student_eval.progress

    def spy(iterable=None, **kw):
        seen.append(kw)
        return real(iterable, **kw)
    monkeypatch.setattr(student_eval, "progress", spy)
    student_eval.evaluate(experiment / "student", experiment / "labels", tmp_path / "a",
                          student_eval.StudentEvalConfig(gallery_size=1))
    assert seen[-1]["total"] == 13 and seen[-1]["desc"] == "student logits"
    student_eval.evaluate(experiment / "student", experiment / "labels", tmp_path / "b",
                          student_eval.StudentEvalConfig(gallery_size=1, limit=5))
    assert seen[-1]["total"] == 5
