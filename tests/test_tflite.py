"""TFLite export (issue 15 item 3): export_model.py --tflite writes float32 and dynamic-range
quantised .tflite files (student with the front end inside, fixed windows; teacher at its
input size) with builtin operators only; LiteRT runs them without TensorFlow and their
logits match the Keras model's; predict.py --model X.tflite works."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tf_cme import emotions
from tf_cme.serving import tflite

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
    for name, model in (("student", build_model("emovoxceleb-student", width=1 / 16)),
                        ("teacher", build_model("resnet50-ferplus", width=1 / 16,
                                                input_size=32))):
        (root / name).mkdir()
        save_model(model, root / name / "model.keras")
    return root


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
