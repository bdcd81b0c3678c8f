"""Figures are real PNGs; the report and summary from a synthetic experiment folder."""
from __future__ import annotations

import base64
import io
import json
import re
import os
import sys
import wave

import numpy as np
import pytest
from PIL import Image

from tf_cme import emotions
from tf_cme.data import schema
from tf_cme.evaluation import report
from tf_cme.metrics import classification, contract, plots, roc
from tf_cme.utils import CmeError, write_json


def _check_png(data_or_path, min_w=200, min_h=150, min_colours=8):
    img = Image.open(data_or_path if not isinstance(data_or_path, bytes)
                     else io.BytesIO(data_or_path))
    assert img.format == "PNG"
    w, h = img.size
    assert w >= min_w and h >= min_h
    rgb = np.asarray(img.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"{len(colours)} colours: blank figure?"
    # not one flat colour: a real share of pixels differ from the background
    bg = np.all(rgb == rgb[0, 0], axis=-1)
    assert 0.01 < 1 - bg.mean() < 0.99
    return img


def test_figures_are_real_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    r = roc.binary_roc(y, y + rng.standard_normal(50), emotion="anger", split="heard")
    ne = roc.binary_roc(np.zeros(5), np.arange(5.0), emotion="fear", split="heard")
    data = plots.plot_roc(r, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes() == data
    _check_png(tmp_path / "roc.png")
    _check_png(plots.plot_roc(ne))                      # the "not evaluable" panel
    grid = plots.plot_roc_grid({"train": {"anger": r, "fear": ne}, "heard": {"anger": r}},
                               tmp_path / "grid.png", emotions_order=["anger", "fear"],
                               splits=["train", "heard"])
    img = _check_png(grid)
    assert img.size[1] > 300
    cm = classification.row_normalise(rng.integers(0, 10, (6, 6)))
    _check_png(plots.plot_confusion(cm, list(emotions.RML), tmp_path / "cm.png"))
    _check_png(plots.plot_bars({"random": 0.17, "student": 0.4}, errors={"student": 0.05},
                               reference=1 / 6, title="acc"))
    _check_png(plots.plot_distributions({"teacher": np.full(8, 1 / 8), "student":
                                         np.eye(8)[2]}, emotions.FERPLUS, highlight=2))
    _check_png(plots.plot_histogram({e: i * 10 for i, e in enumerate(emotions.FERPLUS)},
                                    log=True))


def _wav(n=16000):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(n) / 5) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def _jpeg():
    buf = io.BytesIO()
    Image.fromarray((np.indices((32, 32)).sum(0) * 4).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_experiment(root):
    """A synthetic experiment folder in the layout make demo writes."""
    rng = np.random.default_rng(0)
    contract.write_metrics(root / "teacher", "teacher", {"val_accuracy": 0.91,
                                                         "test_accuracy": 0.89})
    write_json(root / "teacher" / "config.json", {"model": "resnet50-ferplus", "width": 0.25})
    write_json(root / "student" / "config.json", {"model": "emovoxceleb-student"})
    ev = root / "eval"
    auc, mean = {}, {}
    for split in schema.EMOVOX_SPLITS:
        labels = rng.integers(0, 5, 40)
        res = roc.per_emotion_roc(labels, rng.dirichlet(np.ones(8), 40), split=split)
        auc[split] = {e: r.to_json() for e, r in res.items()}
        mean[split] = roc.mean_auc(res)
    contract.write_metrics(ev, "eval", {"auc": auc, "mean_auc": mean, "ignore": list(
        roc.DEFAULT_IGNORE), "tracks": {s: 40 for s in schema.EMOVOX_SPLITS}, "skipped": {}})
    (ev / "figures").mkdir(parents=True)
    plots.plot_bars({"a": 0.5}, ev / "figures" / "roc-grid.png")
    g = ev / "gallery"
    g.mkdir()
    entries = []
    for c, emo in enumerate(emotions.FERPLUS[:2]):
        (g / f"{emo}-1.jpg").write_bytes(_jpeg())
        (g / f"{emo}-1.wav").write_bytes(_wav())
        entries.append({"key": f"id/v/{c}", "split": "train", "emotion": emo, "rank": 1,
                        "confidence": 0.9, "time_s": 0.5, "frame": f"{emo}-1.jpg",
                        "audio": f"{emo}-1.wav", "teacher_probs": np.eye(8)[c].tolist(),
                        "student_probs": np.full(8, 1 / 8).tolist()})
    write_json(g / "gallery.json", {"classes": list(emotions.FERPLUS), "entries": entries})
    ex = root / "external"
    contract.write_metrics(ex, "external", {
        "dataset": "rml", "classes": list(emotions.RML), "clips": 60, "folds": 10,
        "accuracy_mean": 0.45, "accuracy_std": 0.07, "random_accuracy_mean": 0.16,
        "random": {"accuracy_mean": 0.16, "accuracy_std": 0.05, "draws": 10},
        "chance": 1 / 6, "teacher_visual": {"status": "skipped", "reason": "no frames"}})
    write_json(ex / "calibration.json", {"dataset": "rml"})
    write_json(root / "timings.json", {"corpus": 12.5, "student": 100.0})
    write_json(root / "export" / "tflite" / "tflite.json", {"kind": "student", "files": [
        {"file": "s-4.024s.tflite", "window_s": 4.024, "quantization": "float32",
         "bytes": 7_654_321, "max_abs_logit_diff": 3.2e-6, "select_tf_ops": []},
        {"file": "s-4.024s-dynamic.tflite", "window_s": 4.024, "quantization": "dynamic",
         "bytes": 2_100_000, "max_abs_logit_diff": 0.0912, "select_tf_ops": []}],
        "parity_input": "speech-like"})
    return root


def test_report_and_summary_from_experiment_folder(tmp_path):
    exp = make_experiment(tmp_path / "demo")
    out = tmp_path / "report"
    summary = report.write_report([exp], out, summary_path=tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary) == {"teacher", "student", "external", "timings"}
    assert summary["teacher"] == {"val_accuracy": 0.91, "test_accuracy": 0.89}
    assert set(summary["student"]) == {"mean_auc"}
    assert set(summary["student"]["mean_auc"]) == {"train", "heard", "unheard"}
    assert set(summary["external"]) == {"accuracy_mean", "accuracy_std", "random_accuracy_mean"}
    for v in [*summary["teacher"].values(), *summary["student"]["mean_auc"].values(),
              *summary["external"].values()]:
        assert 0.0 <= v <= 1.0
    assert summary["timings"] == {"corpus": 12.5, "student": 100.0}

    page = (out / "report.html").read_text()
    # self-contained: no src/href to files, only data URIs
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs)
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) >= 3
    _check_png(base64.b64decode(pngs[0]), min_w=100, min_h=100, min_colours=3)
    wavs = re.findall(r'src="data:audio/wav;base64,([^"]+)"', page)
    assert len(wavs) == 2
    with wave.open(io.BytesIO(base64.b64decode(wavs[0]))) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 16000
    assert "<audio controls" in page and "data:image/jpeg;base64," in page
    assert "0.910" in page and "0.450" in page and "not evaluable" in page
    md = (out / "report.md").read_text()
    for rel in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / rel).exists(), rel
    assert "| emotion | train | heard | unheard |" in md
    assert "| s-4.024s.tflite | 4.024 | float32 | 7.65 | 3.20e-06 | none |" in md
    assert "| s-4.024s-dynamic.tflite | 4.024 | dynamic | 2.10 | 9.12e-02 | none |" in md

    table = report.format_summary_table(summary)
    assert "FER+ val accuracy" in table and "0.910" in table and "0.450 +- 0.070" in table


def test_single_run_folders_and_missing_parts(tmp_path):
    exp = make_experiment(tmp_path / "demo")
    s = report.write_report([exp / "eval", exp / "external"], tmp_path / "r")
    assert s["teacher"] == {"val_accuracy": None, "test_accuracy": None}
    assert s["external"]["accuracy_mean"] == 0.45
    assert "No teacher run." in (tmp_path / "r" / "report.html").read_text()
    with pytest.raises(CmeError, match="no such folder"):
        report.write_report([tmp_path / "nope"], tmp_path / "r2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CmeError, match="neither an experiment folder"):
        report.write_report([tmp_path / "empty"], tmp_path / "r3")


def test_report_reads_the_run_folder_contract(tmp_path):
    """The kind and the teacher's accuracy come from the contract's fields only: a folder
    without them is an error naming the file, not a guess from its text."""
    exp = make_experiment(tmp_path / "demo")
    # a teacher folder written before the contract (alias spellings, no kind) is refused
    write_json(exp / "teacher" / "metrics.json", {"val": {"accuracy": 0.91}})
    with pytest.raises(CmeError, match=r"teacher.metrics.json: no 'kind' field"):
        report.write_report([exp], tmp_path / "r1")
    with pytest.raises(CmeError, match="no 'kind' field"):
        report.write_report([exp / "teacher"], tmp_path / "r1b")
    # the text of config.json no longer makes a folder a teacher
    (exp / "teacher" / "metrics.json").unlink()
    with pytest.raises(CmeError, match="no metrics.json"):
        report.write_report([exp], tmp_path / "r2")
    with pytest.raises(CmeError, match="nor a run folder"):
        report.write_report([exp / "teacher"], tmp_path / "r2b")
    # a folder of the wrong kind in the teacher's place
    contract.write_metrics(exp / "teacher", "student", {})
    with pytest.raises(CmeError, match="kind 'student', expected 'teacher'"):
        report.write_report([exp], tmp_path / "r3")
    # a trained but not evaluated teacher: accuracy n/a, said so
    (exp / "teacher" / "metrics.json").unlink()
    contract.update_metrics(exp / "teacher", "teacher", training={"best_epoch": 1})
    s = report.write_report([exp], tmp_path / "r4")
    assert s["teacher"] == {"val_accuracy": None, "test_accuracy": None}
    assert "no val/test accuracy" in (tmp_path / "r4" / "report.md").read_text()
    # a required key missing
    m = json.loads((exp / "external" / "metrics.json").read_text())
    del m["accuracy_std"]
    write_json(exp / "external" / "metrics.json", m)
    with pytest.raises(CmeError, match="kind 'external' without accuracy_std"):
        report.write_report([exp], tmp_path / "r5")


def test_contract_writers_stamp_and_refuse_another_kind(tmp_path):
    d = contract.update_metrics(tmp_path, "teacher", training={"best_epoch": 2})
    d = contract.update_metrics(tmp_path, "teacher", val_accuracy=0.5, test_accuracy=0.25)
    assert d == {"kind": "teacher", "contract": contract.VERSION, "training":
                 {"best_epoch": 2}, "val_accuracy": 0.5, "test_accuracy": 0.25}
    assert contract.read_metrics(tmp_path, expect="teacher") == d
    with pytest.raises(CmeError, match="refusing to write 'eval'"):
        contract.update_metrics(tmp_path, "eval", auc={}, mean_auc={})
    with pytest.raises(CmeError, match="unknown run-folder kind 'teach'"):
        contract.write_metrics(tmp_path, "teach", {})
    write_json(tmp_path / "metrics.json", {"kind": "teacher", "contract": 99})
    with pytest.raises(CmeError, match="contract version 99"):
        contract.read_metrics(tmp_path)


def _script(repo_root, name, *args):
    """scripts/NAME run in-process (``repo_root`` is the checkout the fixture names)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _proc import run_script_inprocess
    return run_script_inprocess(name, *args)


def test_report_script(tmp_path, repo_root, capsys):
    exp = make_experiment(tmp_path / "demo")
    assert _script(repo_root, "report.py", exp, "--out", tmp_path / "rep",
                   "--summary", tmp_path / "s.json") == 0
    out = capsys.readouterr().out
    assert "mean AUC heard" in out and (tmp_path / "s.json").exists()
    assert (tmp_path / "rep" / "config.json").exists()
    assert _script(repo_root, "report.py", tmp_path / "missing", "--out", tmp_path / "rep2") == 1
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    assert _script(repo_root, "report.py", exp, "--out", tmp_path / "rep3",
                   "--set", "nope=1") == 2
    assert "unknown config key" in capsys.readouterr().err
