"""TFLite export (issue 15 item 3): export_model.py --tflite writes float32 and dynamic-range
quantised .tflite files (student with the front end inside, fixed windows; teacher at its
input size) with builtin operators only; LiteRT runs them without TensorFlow and their
logits match the Keras model's; predict.py --model X.tflite works. Each file carries the
export's tf-cme metadata (provenance, demo caveat, class order, ...) in its flatbuffer
metadata table, read back without TensorFlow; an older file without it still loads, its
provenance "unknown"."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tf_cme import emotions, provenance
from tf_cme.serving import tflite
from tf_cme.utils import CmeError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _proc import run_script_inprocess  # noqa: E402

# Tolerances on the largest absolute logit difference from the Keras model. float32: the
# same maths in another runtime (measured ~5e-6 on logits of magnitude ~4). Dynamic-range
# quantisation rounds the weights to int8 (measured ~0.2 on an untrained 1/16-width
# student with logits ~4): bounded relative to the logits' scale.
FLOAT_ATOL = 1e-4
DYNAMIC_REL = 0.15


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import keras

    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("tfl")
    student = build_model("emovoxceleb-student", width=1 / 16)
    for name, model in (("student", student),
                        ("teacher", build_model("resnet50-ferplus", width=1 / 16,
                                                input_size=32))):
        (root / name).mkdir()
        save_model(model, root / name / "model.keras")
    # demo-like: the same student as a demo run's (trained on the synthetic corpus) says
    (root / "demo").mkdir()
    save_model(student, root / "demo" / "model.keras",
               metadata={**student.cme_metadata, "provenance": provenance.DEMO,
                         "synthetic": True})
    return root


@pytest.fixture(scope="module")
def demo_tflite(runs, tmp_path_factory):
    """The demo-like student exported with --tflite (2 s window) and, as an export by an
    older tf-cme wrote it, the same conversion without metadata."""
    from tf_cme.models.io import load_model
    out = tmp_path_factory.mktemp("demo-tfl")
    assert run_script_inprocess("export_model.py", runs / "demo", "--out", out, "--tflite",
                                "--tflite-window", "2") == 0
    raw = tflite.student_tflite_bytes(load_model(runs / "demo" / "model.keras"), 2.0)
    old = tflite.write_tflite(raw, out / "old" / "student-2s.tflite")
    return out / "tflite", old


def _speech(n, seed=1):
    """A speech-like clip other than the export's own parity input: vowel formants on a
    gliding pitch with a syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.3 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * ph) * np.exp(-((k * 140 - 700) / 400) ** 2) for k in range(1, 25))
    x *= np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) + 0.05
    return (0.4 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_student_and_teacher_tflite_builtin_parity_and_predict(runs, tmp_path, capsys):
    from tf_cme.models.io import load_model
    from tf_cme.models.student import serving_student
    out = tmp_path / "exp"
    assert run_script_inprocess("export_model.py", runs / "student", "--out", out, "--tflite",
                                "--tflite-window", "4.024", "--tflite-window", "2") == 0
    printed = capsys.readouterr().out
    assert "select-TF ops: none" in printed
    summary = json.loads((out / "tflite" / "tflite.json").read_text())
    files = {f["file"]: f for f in summary["files"]}
    assert set(files) == {"emovoxceleb-student-4.024s.tflite",
                          "emovoxceleb-student-4.024s-dynamic.tflite",
                          "emovoxceleb-student-2s.tflite",
                          "emovoxceleb-student-2s-dynamic.tflite"}
    for f in files.values():
        assert f["select_tf_ops"] == [] and "RFFT2D" in f["ops"]      # builtin FFT
        assert f["bytes"] == (out / "tflite" / f["file"]).stat().st_size
    assert files["emovoxceleb-student-4.024s.tflite"]["input_shape"] == [1, 64384]
    assert files["emovoxceleb-student-2s.tflite"]["input_shape"] == [1, 32000]
    # the quantised file is smaller
    assert (files["emovoxceleb-student-4.024s-dynamic.tflite"]["bytes"]
            < 0.8 * files["emovoxceleb-student-4.024s.tflite"]["bytes"])

    # independent input, LiteRT against Keras
    keras_student = serving_student(load_model(runs / "student" / "model.keras"))
    x = _speech(64384)[None]
    ref = np.asarray(keras_student(x))
    got32 = tflite.run_tflite(out / "tflite" / "emovoxceleb-student-4.024s.tflite", x)
    got8 = tflite.run_tflite(out / "tflite" / "emovoxceleb-student-4.024s-dynamic.tflite", x)
    d32, d8, scale = np.abs(got32 - ref).max(), np.abs(got8 - ref).max(), np.abs(ref).max()
    print(f"student float32 max|diff| {d32:.2e}, dynamic {d8:.3f}, max|logit| {scale:.2f}")
    assert d32 < FLOAT_ATOL
    assert d8 < DYNAMIC_REL * scale and d8 > 0

    # the same file in a process where TensorFlow cannot be imported
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; sys.modules['tensorflow'] = None\n"
            "from ai_edge_litert.interpreter import Interpreter\n"
            f"it = Interpreter(model_path={str(out / 'tflite' / 'emovoxceleb-student-4.024s.tflite')!r})\n"
            "it.allocate_tensors(); i = it.get_input_details()[0]\n"
            f"it.set_tensor(i['index'], np.load({str(tmp_path / 'x.npy')!r})); it.invoke()\n"
            "np.save(sys.argv[1], it.get_tensor(it.get_output_details()[0]['index']))\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.npy")], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), got32, rtol=0, atol=1e-6)

    capsys.readouterr()
    # predict.py --model X.tflite: a short clip (padded to the window) and a long one
    sf.write(tmp_path / "short.wav", _speech(30000), 16000)
    sf.write(tmp_path / "long.wav", _speech(16000 * 7), 16000)
    assert run_script_inprocess("predict.py", "--model",
                                out / "tflite" / "emovoxceleb-student-4.024s.tflite",
                                "--format", "json", tmp_path / "short.wav",
                                tmp_path / "long.wav") == 0
    res = json.loads(capsys.readouterr().out)
    res = res if isinstance(res, list) else res["results"]
    assert [r["status"] for r in res] == ["ok", "ok"]
    assert "zero-padded to the TFLite student's fixed window" in res[0]["message"]
    assert res[0]["warnings"] == ["short: 1.875 s is below the TFLite student's fixed window "
                                  "of 4.024 s (padded)"]
    assert res[1]["warnings"] == []
    # under the student's 1.015 s: refused, as by the SavedModel (one decision)
    sf.write(tmp_path / "tiny.wav", _speech(8000), 16000)
    assert run_script_inprocess("predict.py", "--model",
                                out / "tflite" / "emovoxceleb-student-4.024s.tflite",
                                "--format", "json", tmp_path / "tiny.wav") == 1
    (r,) = json.loads(capsys.readouterr().out)
    assert r["status"] == "error" and "short: 0.500 s (8000 samples) is below the " \
        "student's minimum of 1.015 s" in r["message"]
    assert len(res[1]["timeline"]) == 3 and res[1]["timeline"][0]["end_s"] == 4.024
    p = res[1]["timeline"][0]["probabilities"]
    wav, _ = sf.read(tmp_path / "long.wav", dtype="float32")      # as predict reads it
    w0 = np.asarray(keras_student(wav[None, :64384]))[0]
    want = np.exp(w0 - w0.max()) / np.exp(w0 - w0.max()).sum()
    np.testing.assert_allclose([p[e] for e in emotions.FERPLUS], want, atol=1e-5)

    # the teacher at its input size
    assert run_script_inprocess("export_model.py", runs / "teacher", "--out", out,
                                "--tflite") == 0
    t = json.loads((out / "tflite" / "tflite.json").read_text())
    tf_files = {f["quantization"]: f for f in t["files"]}
    assert tf_files["float32"]["input_shape"] == [1, 32, 32, 3]
    assert tf_files["float32"]["select_tf_ops"] == []
    assert tf_files["float32"]["max_abs_logit_diff"] < FLOAT_ATOL
    assert (tf_files["dynamic"]["max_abs_logit_diff"]
            < DYNAMIC_REL * tf_files["dynamic"]["max_abs_logit"])


def test_tflite_window_too_short(runs, tmp_path, capsys):
    assert run_script_inprocess("export_model.py", runs / "student", "--out", tmp_path,
                                "--tflite", "--tflite-window", "0.5") == 1
    assert "at least 1.015" in capsys.readouterr().err


def _predict_cli(capsys, model, *wavs):
    capsys.readouterr()
    code = run_script_inprocess("predict.py", "--model", model, "--format", "json", *wavs)
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_tflite_carries_the_metadata_and_predict_says_the_demo_caveat(demo_tflite, runs,
                                                                     tmp_path, capsys):
    from tf_cme.models.io import read_metadata
    from tf_cme.serving.export import export_info
    folder, old = demo_tflite
    summary = json.loads((folder / "tflite.json").read_text())
    assert [(f["file"], f["metadata"], f["provenance"]) for f in summary["files"]] == [
        ("emovoxceleb-student-2s.tflite", "tf_cme", "demo-synthetic"),
        ("emovoxceleb-student-2s-dynamic.tflite", "tf_cme", "demo-synthetic")]
    model_md = read_metadata(runs / "demo" / "model.keras")
    for f, q in (("emovoxceleb-student-2s.tflite", "float32"),
                 ("emovoxceleb-student-2s-dynamic.tflite", "dynamic")):
        md = tflite.read_tflite_metadata(folder / f)
        # what the SavedModel's tf_cme.json says about the model, and the file's own part
        assert {k: md[k] for k in export_info(model_md)} == {
            **export_info(model_md), "source": str(runs / "demo" / "model.keras")}
        assert md["provenance"] == "demo-synthetic"
        assert md["caveat"] == provenance.STUDENT_CAVEAT
        assert md["class_names"] == list(emotions.FERPLUS) and md["sample_rate"] == 16000
        assert md["min_samples"] == 16240 and md["kind"] == "student"
        assert (md["format"], md["quantization"], md["window_s"]) == ("tflite", q, 2.0)
        assert md["input_shape"] == [1, 32000] and md["input_dtype"] == "float32"

    # embedding the metadata leaves the model as it was: identical logits in LiteRT
    x = _speech(32000)[None]
    raw = old.read_bytes()
    got_raw = tflite.run_tflite(raw, x)
    np.testing.assert_array_equal(tflite.run_tflite(tflite.with_metadata(raw, {"a": 1}), x),
                                  got_raw)
    np.testing.assert_array_equal(tflite.run_tflite(folder / "emovoxceleb-student-2s.tflite",
                                                    x), got_raw)
    # a second with_metadata replaces the entry
    again = tflite.with_metadata(tflite.with_metadata(raw, {"a": 1}), {"b": 2})
    assert tflite.read_tflite_metadata(again) == {"b": 2}

    # read back, and loaded by predict's Predictor, where TensorFlow cannot be imported
    code = ("import sys, json; sys.modules['tensorflow'] = None\n"
            "from tf_cme.serving.tflite import read_tflite_metadata\n"
            "from tf_cme.prediction import Predictor\n"
            "md = read_tflite_metadata(sys.argv[1])\n"
            "p = Predictor.load(sys.argv[1], 'student')\n"
            "print(json.dumps([md['provenance'], p.info]))\n")
    f32 = folder / "emovoxceleb-student-2s.tflite"
    p = subprocess.run([sys.executable, "-c", code, str(f32)],
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    prov, info = json.loads(p.stdout.strip().splitlines()[-1])
    assert prov == "demo-synthetic"
    assert info["provenance"] == "demo-synthetic"
    assert info["caveat"] == provenance.STUDENT_CAVEAT

    sf.write(tmp_path / "voice.wav", _speech(40000), 16000)

    # predict.py on the .tflite: the same provenance and caveat as on the SavedModel
    sf.write(tmp_path / "voice2.wav", _speech(20000, seed=2), 16000)
    code, res, err = _predict_cli(capsys, f32, tmp_path / "voice.wav", tmp_path / "voice2.wav")
    assert code == 0 and [r["status"] for r in res] == ["ok", "ok"]
    for r in res:
        assert r["model"] == {"name": "emovoxceleb-student-2s", "source": str(f32),
                              "provenance": "demo-synthetic",
                              "caveat": provenance.STUDENT_CAVEAT}
    assert err.count(f"NOTE: {provenance.STUDENT_CAVEAT}") == 1


def test_tflite_without_metadata_loads_provenance_unknown_said_once(demo_tflite, tmp_path,
                                                                   capsys):
    _, old = demo_tflite
    assert tflite.read_tflite_metadata(old) == {}
    sf.write(tmp_path / "a.wav", _speech(40000), 16000)
    sf.write(tmp_path / "b.wav", _speech(20000, seed=2), 16000)
    code, res, err = _predict_cli(capsys, old, tmp_path / "a.wav", tmp_path / "b.wav")
    assert code == 0 and [r["status"] for r in res] == ["ok", "ok"]
    assert [r["model"]["provenance"] for r in res] == ["unknown", "unknown"]
    assert [r["model"]["caveat"] for r in res] == [None, None]
    assert err.count("provenance unknown") == 1
    assert f"NOTE: {old}: provenance unknown: its metadata does not say" in err
    assert "export it again with export_model.py --tflite" in err


def test_tflite_metadata_errors(demo_tflite, tmp_path):
    _, old = demo_tflite
    with pytest.raises(CmeError, match="not a TFLite flatbuffer"):
        tflite.read_tflite_metadata(b"\0" * 64)
    with pytest.raises(CmeError, match="'tf_cme' is a JSON list, not an object"):
        tflite.read_tflite_metadata(tflite.with_metadata(old.read_bytes(), [1, 2]))
    teacher_md = tmp_path / "t.tflite"
    teacher_md.write_bytes(tflite.with_metadata(old.read_bytes(), {"kind": "teacher"}))
    from tf_cme.prediction import Predictor
    with pytest.raises(CmeError, match="its metadata says teacher, but its input"):
        Predictor.load(teacher_md, "student")
