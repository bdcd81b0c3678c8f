"""SavedModel export: signatures, parity with the Keras models, TF Serving files, checks."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from tf_cme import emotions
from tf_cme.serving import export as ex
from tf_cme.demo.runs import TINY_CALIBRATION_CLASSES


@pytest.fixture(scope="session")
def student_sm(tiny):
    return tf.saved_model.load(str(tiny["student_version"]))


@pytest.fixture(scope="session")
def teacher_sm(tiny):
    return tf.saved_model.load(str(tiny["teacher_version"]))


def _wav_bytes(x, rate):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _keras_student(tiny):
    from tf_cme.models.student import with_frontend
    import keras
    m = with_frontend(tiny["student"], crop="bucket", dither=False)
    return keras.Model(m.inputs, [m.outputs[0], m.get_layer("fc7_relu").output])


def test_layout_versions_and_serving_files(tiny):
    exp = tiny["export"]
    assert ex.versions(exp / "emovoxceleb-student")[0] == 1
    assert ex.versions(exp / "resnet50-ferplus") == [1]
    assert not [p for p in (exp / "emovoxceleb-student").iterdir() if p.name.startswith(".")]
    cfg = (exp / "models.config").read_text()
    assert cfg.count("config {") == 2
    assert "name: 'emovoxceleb-student'" in cfg
    assert "base_path: '/models/emovoxceleb-student'" in cfg
    assert "base_path: '/models/resnet50-ferplus'" in cfg
    assert "model_platform: 'tensorflow'" in cfg
    batching = (exp / "batching_parameters.txt").read_text()
    assert "max_batch_size { value: 32 }" in batching
    assert "pad_variable_length_inputs: false" in batching
    md = ex.read_export_metadata(tiny["student_version"])
    assert md["kind"] == "student" and md["min_samples"] == 16240 and md["crop"] == "bucket"
    assert md["calibration"]["signature"] == "calibrated_rml"
    assert ex.read_export_metadata(tiny["teacher_version"])["kind"] == "teacher"


def test_no_tensorflow_io_ops(tiny):
    for v, decoder in ((tiny["student_version"], "DecodeWav"),
                       (tiny["teacher_version"], "DecodeImage")):
        ops = ex.graph_op_types(v)
        assert decoder in ops
        assert not [o for o in ops if o.startswith("IO>")]
        assert ex.non_core_ops(v) == []


def test_saved_model_cli_lists_signatures(tiny):
    cli = Path(sys.executable).parent / "saved_model_cli"     # this venv's, not .venv's
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m",
                                           "tensorflow.python.tools.saved_model_cli"]
    procs = {key: subprocess.Popen(cmd + ["show", "--dir", str(tiny[key]), "--all"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key in ("student_version", "teacher_version")}     # both at once
    texts = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        texts[key] = stdout

    def sig_block(text, name):
        m = re.search(rf"signature_def\['{name}'\]:(.*?)(?=signature_def\[|\Z)", text, re.S)
        assert m, f"signature {name} not listed"
        return m.group(1)

    s = texts["student_version"]
    blk = sig_block(s, "serving_default")
    assert re.search(r"inputs\['waveform'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1\)",
                     blk)
    for out, dtype, shape in (("logits", "DT_FLOAT", r"\(-1, 8\)"),
                              ("probabilities", "DT_FLOAT", r"\(-1, 8\)"),
                              ("label", "DT_STRING", r"\(-1\)"),
                              ("provenance", "DT_STRING", r"\(-1\)"),
                              ("embedding", "DT_FLOAT", r"\(-1, 64\)")):
        assert re.search(rf"outputs\['{out}'\] tensor_info:\s+dtype: {dtype}\s+shape: {shape}",
                         blk), out
    blk = sig_block(s, "from_wav")
    assert re.search(r"inputs\['audio_bytes'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)",
                     blk)
    blk = sig_block(s, "calibrated_rml")
    assert re.search(r"outputs\['logits'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 6\)", blk)
    assert re.search(r"outputs\['ferplus_logits'\]", blk)
    t = texts["teacher_version"]
    blk = sig_block(t, "serving_default")
    assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_UINT8\s+"
                     r"shape: \(-1, -1, -1, 3\)", blk)
    assert re.search(r"outputs\['embedding'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 128\)",
                     blk)
    blk = sig_block(t, "from_jpeg")
    assert re.search(r"inputs\['image_bytes'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)",
                     blk)


def test_student_signatures_match_keras(tiny, student_sm):
    net = _keras_student(tiny)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((2, 25000))).astype(np.float32)
    out = student_sm.signatures["serving_default"](waveform=tf.constant(x))
    logits, emb = net(x, training=False)
    np.testing.assert_allclose(out["logits"].numpy(), logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["embedding"].numpy(), np.reshape(emb, (2, -1)),
                               rtol=1e-5, atol=1e-5)
    p = out["probabilities"].numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, tf.nn.softmax(logits).numpy(), atol=1e-6)
    labels = [b.decode() for b in out["label"].numpy()]
    assert labels == [emotions.FERPLUS[i] for i in logits.numpy().argmax(1)]
    # the calibrated signature: the logistic layer on the student's logits
    cal = json.loads(tiny["calibration"].read_text())
    c = student_sm.signatures["calibrated_rml"](waveform=tf.constant(x))
    ref = logits.numpy().astype(np.float64) @ np.array(cal["weights"]) + np.array(cal["bias"])
    np.testing.assert_allclose(c["logits"].numpy(), ref, rtol=1e-4, atol=1e-4)
    assert [b.decode() for b in c["label"].numpy()] == \
        [TINY_CALIBRATION_CLASSES[i] for i in ref.argmax(1)]
    np.testing.assert_allclose(c["ferplus_logits"].numpy(), logits.numpy(), atol=1e-5)


def test_from_wav_any_rate_and_stereo(tiny, student_sm):
    from tf_cme.audio.resample import resample_np
    net = _keras_student(tiny)
    rng = np.random.default_rng(2)
    blobs, refs = [], []
    for rate, channels, seconds in ((16000, 1, 1.3), (44100, 2, 1.2), (8000, 1, 2.0)):
        x = (0.2 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32)
        blob = _wav_bytes(x, rate)
        blobs.append(blob)
        y, _ = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
        mono = y.mean(axis=1)
        mono = mono if rate == 16000 else resample_np(mono, rate, 16000)
        refs.append(net(mono[None].astype(np.float32), training=False)[0].numpy()[0])
    out = student_sm.signatures["from_wav"](audio_bytes=tf.constant(blobs))
    assert out["logits"].shape == (3, 8) and out["embedding"].shape == (3, 64)
    np.testing.assert_allclose(out["logits"].numpy(), np.stack(refs), rtol=1e-4, atol=1e-4)


def test_teacher_signatures_match_keras(tiny, teacher_sm):
    import keras
    m = tiny["teacher"]
    net = keras.Model(m.inputs, [m.outputs[0], m.get_layer("pool5").output])
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (2, 45, 37, 3), dtype=np.uint8)
    out = teacher_sm.signatures["serving_default"](images=tf.constant(imgs))
    logits, emb = net(imgs, training=False)
    np.testing.assert_allclose(out["logits"].numpy(), logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["embedding"].numpy(), np.reshape(emb, (2, -1)), atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-6)
    # from_jpeg: PNG (lossless) of different sizes, each resized to the input size (32)
    blobs = [tf.io.encode_png(imgs[0]).numpy(), tf.io.encode_png(imgs[1, :30, :20]).numpy()]
    j = teacher_sm.signatures["from_jpeg"](image_bytes=tf.constant(blobs))
    resized = [tf.saturate_cast(tf.round(tf.image.resize(im, [32, 32], antialias=True)),
                                tf.uint8).numpy() for im in (imgs[0], imgs[1, :30, :20])]
    ref = net(np.stack(resized), training=False)[0].numpy()
    np.testing.assert_allclose(j["logits"].numpy(), ref, rtol=1e-5, atol=1e-5)


def test_every_signature_says_where_its_model_came_from(tiny, student_sm, teacher_sm):
    """The `provenance` output: one string per row, the export metadata's provenance and,
    for these demo models, the caveat tf-cme predict prints."""
    from tf_cme import provenance
    rng = np.random.default_rng(4)
    wave = (0.1 * rng.standard_normal((3, 20000))).astype(np.float32)
    imgs = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    calls = {
        ("student", "serving_default"): dict(waveform=tf.constant(wave)),
        ("student", "calibrated_rml"): dict(waveform=tf.constant(wave)),
        ("student", "from_wav"): dict(audio_bytes=tf.constant(
            [_wav_bytes(w, 16000) for w in wave])),
        ("teacher", "serving_default"): dict(images=tf.constant(imgs)),
        ("teacher", "from_jpeg"): dict(image_bytes=tf.constant(
            [tf.io.encode_png(i).numpy() for i in imgs])),
    }
    for (kind, sig), inputs in calls.items():
        sm = student_sm if kind == "student" else teacher_sm
        md = ex.read_export_metadata(tiny[f"{kind}_version"])
        assert md["provenance"] == provenance.DEMO
        notes = [b.decode() for b in sm.signatures[sig](**inputs)["provenance"].numpy()]
        caveat = provenance.STUDENT_CAVEAT if kind == "student" else provenance.TEACHER_CAVEAT
        assert notes == [f"demo-synthetic: {caveat}"] * len(next(iter(inputs.values()))), sig
        assert provenance.note_caveat(notes[0]) == md["caveat"] == caveat
    assert provenance.serving_note({"provenance": "imported:ab12"}) == "imported:ab12"
    assert provenance.note_caveat("imported:ab12") is None


@pytest.mark.parametrize("x, message", [
    (np.zeros((1, 0), np.float32), "empty audio"),
    (np.zeros((1, 16239), np.float32), "audio too short"),
    (np.where(np.arange(20000) == 7, np.nan, 0.1).astype(np.float32)[None], "non-finite"),
    (np.where(np.arange(20000) == 7, np.inf, 0.1).astype(np.float32)[None], "non-finite"),
])
def test_in_graph_checks(student_sm, x, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        student_sm.signatures["serving_default"](waveform=tf.constant(x))


def test_silence_gives_finite_outputs(student_sm):
    out = student_sm.signatures["serving_default"](waveform=tf.zeros((2, 16240)))
    for k in ("logits", "probabilities", "embedding"):
        assert np.isfinite(out[k].numpy()).all(), k
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-6)
    wav = _wav_bytes(np.zeros(30000, np.float32), 22050)
    out = student_sm.signatures["from_wav"](audio_bytes=tf.constant([wav]))
    assert np.isfinite(out["logits"].numpy()).all()


def test_from_wav_rejects_bad_bytes(student_sm):
    with pytest.raises(tf.errors.InvalidArgumentError):
        student_sm.signatures["from_wav"](audio_bytes=tf.constant([b"not a wav"]))


def test_calibration_validation(tmp_path):
    from tf_cme.utils import CmeError
    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"dataset": "RML", "classes": ["a", "b"],
                             "weights": [[0, 0, 0]] * 8, "bias": [0, 0]}))
    with pytest.raises(CmeError, match=r"weights \[8 x 2\]"):
        ex.load_calibration(p)
    p.write_text(json.dumps({"dataset": "RML", "classes": ["a"]}))
    with pytest.raises(CmeError, match="lacks weights, bias"):
        ex.load_calibration(p)


def test_export_script_next_version(tiny, repo_root, tmp_path):
    """The CLI exports the student run again (model.keras, the calibration found in the
    sibling external/ folder): version 2 beside 1; models.config lists both models."""
    out = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "export_model.py"),
         str(tiny["student_run"]), "--out", str(tiny["export"])],
        capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "version 2" in out.stdout
    assert "calibrated_rml" in out.stdout
    assert ex.versions(tiny["export"] / "emovoxceleb-student") == [1, 2]
    assert ex.latest_version(tiny["export"] / "emovoxceleb-student").name == "2"
    md = ex.read_export_metadata(tiny["export"] / "emovoxceleb-student" / "2")
    assert Path(md["config"]["calibration"]).resolve() == tiny["calibration"].resolve()
    assert (tiny["export"] / "models.config").read_text().count("config {") == 2
    # a calibration file does not apply to a teacher: one-line error, exit 1
    bad = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "export_model.py"),
         str(tiny["teacher_run"]), "--out", str(tmp_path), "--calibration",
         str(tiny["calibration"])], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "not to a teacher" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- warm-up

def _warmup_requests(version_dir):
    """The warm-up file parsed with tensorflow-serving-api's own protos."""
    from tensorflow_serving.apis import prediction_log_pb2
    from tf_cme.serving.warmup import WARMUP_FILE
    out = []
    for rec in tf.data.TFRecordDataset(str(Path(version_dir) / WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(rec.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        out.append(log.predict_log.request)
    return out


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_warmup_requests_cover_every_signature_and_run(tiny, student_sm, teacher_sm, which):
    version = tiny[f"{which}_version"]
    sm = student_sm if which == "student" else teacher_sm
    info = ex.read_export_metadata(version)
    reqs = _warmup_requests(version)
    assert {r.model_spec.signature_name for r in reqs} == set(info["signatures"])
    assert all(r.model_spec.name == info["name"] for r in reqs)
    assert len(reqs) >= 2 * len(info["signatures"]) - 1 and len(reqs) <= 1000
    size = info["model_metadata"].get("input_size")
    for r in reqs:
        sig = sm.signatures[r.model_spec.signature_name]
        want = set(sig.structured_input_signature[1])
        assert set(r.inputs) == want, r.model_spec.signature_name
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in r.inputs.items()}
        for k, t in inputs.items():        # real shapes
            if t.dtype == tf.float32:
                assert t.shape[1] in (64_384, 160_240)
            elif t.dtype == tf.uint8 and size:
                assert tuple(t.shape[1:]) == (size, size, 3)
        out = sig(**inputs)
        n = next(iter(inputs.values())).shape[0]
        assert out["logits"].shape[0] == n and np.all(np.isfinite(out["logits"].numpy()))
    assert info["serving_image"] == f"tensorflow/serving:{tf.__version__}"


def test_warmup_wire_format_against_the_official_protos():
    """The hand-encoded PredictionLog equals the one tensorflow-serving-api builds."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    from tf_cme.serving.warmup import prediction_log
    x = tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = tf.make_tensor_proto(np.array([b"RIFF", b"\x00" * 300], dtype=object))
    ours = prediction_log("m" * 200, "from_wav", {"waveform": x.SerializeToString(),
                                                  "audio_bytes": b.SerializeToString()})
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
        name="m" * 200, signature_name="from_wav"))
    req.inputs["audio_bytes"].CopyFrom(b)
    req.inputs["waveform"].CopyFrom(x)
    official = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=req))
    parsed = prediction_log_pb2.PredictionLog.FromString(ours)
    assert parsed == official
    assert ours == official.SerializeToString(deterministic=True)
