"""TFLite export of the student (front end inside) for a fixed window, and of the teacher.

``export_student_tflite(model, path, window_s)`` writes a ``.tflite`` whose input is a
float32 waveform ``[1, round(window_s * 16000)]`` at 16 kHz and whose output is the 8
logits (FER+ order), computed as :func:`tf_cme.models.student.serving_student` computes
them (spectrogram, whole-window row normalisation, bucket crop, no dither). The default
window is the training crop, 4.024 s (400 frames). ``quantize="dynamic"`` writes the
dynamic-range-quantised variant (int8 weights, float activations).

The files run in LiteRT (``ai_edge_litert``, the ``tflite`` extra) without TensorFlow:
:func:`run_tflite`. :func:`tflite_ops` lists the operators of a file, so a test can check
that only builtin operators remain (no ``FlexXXX`` select-TF op, which LiteRT alone cannot
run).

Each file carries its model's metadata: the JSON of :func:`tf_cme.serving.export.export_info`
(what the SavedModel's ``tf_cme.json`` says: name, kind, class order, provenance, demo
caveat, sample rate, tf-cme version) plus the file's own quantisation, input and window,
as the buffer named :data:`METADATA_NAME` in the flatbuffer's ``metadata`` table
(:func:`with_metadata`, at export). :func:`read_tflite_metadata` reads it back with
LiteRT's flatbuffer schema, without TensorFlow; a file exported before tf-cme embedded it
gives ``{}`` (provenance "unknown").
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..audio.constants import SAMPLE_RATE, TRAIN_CROP_SAMPLES
from ..utils import CmeError, write_bytes_atomic

def Interpreter(**kw):
    """LiteRT's interpreter (``ai_edge_litert``, the ``tflite`` extra; no TensorFlow)."""
    try:
        from ai_edge_litert.interpreter import Interpreter as _I
    except ImportError:
        raise CmeError("running a .tflite file needs ai-edge-litert: pip install "
                       "'tf-cme[tflite]'") from None
    return _I(**kw)


DEFAULT_WINDOW_S = TRAIN_CROP_SAMPLES / SAMPLE_RATE          # 4.024 s


def window_samples(window_s: float) -> int:
    from ..audio.constants import MIN_SERVING_SAMPLES
    n = int(round(float(window_s) * SAMPLE_RATE))
    if n < MIN_SERVING_SAMPLES:
        raise CmeError(f"--tflite-window {window_s}: at least {MIN_SERVING_SAMPLES / SAMPLE_RATE}"
                       f" s ({MIN_SERVING_SAMPLES} samples) is needed (the smallest bucket)")
    return n


def _convert(fn, quantize: str | None) -> bytes:
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize is not None:
        raise CmeError(f"unknown quantisation {quantize!r} (None or 'dynamic')")
    return conv.convert()


def student_tflite_bytes(model, window_s: float = DEFAULT_WINDOW_S,
                         quantize: str | None = None) -> bytes:
    """The student (Keras, any front-end mode) as TFLite for a ``window_s`` window."""
    import tensorflow as tf

    from ..models.student import serving_student
    n = window_samples(window_s)
    serving = serving_student(model)

    @tf.function(input_signature=[tf.TensorSpec([1, n], tf.float32, name="waveform")])
    def fn(waveform):
        return {"logits": serving(waveform, training=False)}

    return _convert(fn.get_concrete_function(), quantize)


def teacher_tflite_bytes(model, quantize: str | None = None) -> bytes:
    """The teacher as TFLite at its input size: uint8 RGB ``[1, h, w, 3]`` -> 8 logits."""
    import tensorflow as tf

    from ..models.io import input_size
    h = w = int(input_size(model))

    @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name="images")])
    def fn(images):
        return {"logits": model(images, training=False)}

    return _convert(fn.get_concrete_function(), quantize)


#: name of the flatbuffer ``metadata`` entry that holds a file's tf-cme metadata (JSON)
METADATA_NAME = "tf_cme"


def with_metadata(data: bytes, info: dict) -> bytes:
    """The .tflite flatbuffer ``data`` with ``info`` as JSON in its ``metadata`` table
    under :data:`METADATA_NAME` (replacing an entry of that name). Operators, tensors and
    weights are unchanged: TensorFlow's ``flatbuffer_utils`` unpacks the model and packs it
    again with one more buffer (as TFLite's own metadata tools do)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    blob = np.frombuffer(json.dumps(info, sort_keys=True).encode(), np.uint8)
    model.metadata = list(model.metadata or [])
    mine = [m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())]
    if mine:
        model.buffers[mine[0].buffer].data = blob
        model.buffers[mine[0].buffer].offset = model.buffers[mine[0].buffer].size = 0
    else:
        buf = schema.BufferT()
        buf.data = blob
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_tflite_metadata(path_or_bytes) -> dict:
    """The tf-cme metadata a .tflite file carries (:func:`with_metadata`), or ``{}`` for a
    file without it (exported before tf-cme embedded it, or not by tf-cme). Reads the
    flatbuffer with LiteRT's schema (``ai_edge_litert``), without TensorFlow; a file that
    is not a TFLite flatbuffer, or whose entry is not a JSON object, is a CmeError."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, where = bytes(path_or_bytes), "TFLite model"
    else:
        data, where = Path(path_or_bytes).read_bytes(), str(path_or_bytes)
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise CmeError("reading a .tflite file needs ai-edge-litert: pip install "
                       "'tf-cme[tflite]'") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise CmeError(f"{where}: not a TFLite flatbuffer (no TFL3 file identifier)")
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != METADATA_NAME.encode():
            continue
        if entry.Buffer() >= model.BuffersLength():
            raise CmeError(f"{where}: metadata {METADATA_NAME!r} names buffer "
                           f"{entry.Buffer()} of {model.BuffersLength()}")
        buf = model.Buffers(entry.Buffer())
        if buf.Offset() > 1:                     # data stored after the flatbuffer (> 2 GB)
            raw = data[buf.Offset():buf.Offset() + buf.Size()]
        else:
            raw = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
        try:
            md = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CmeError(f"{where}: metadata {METADATA_NAME!r} is not JSON ({e})") from None
        if not isinstance(md, dict):
            raise CmeError(f"{where}: metadata {METADATA_NAME!r} is a JSON "
                           f"{type(md).__name__}, not an object")
        return md
    return {}


def write_tflite(data: bytes, path: str | os.PathLike) -> Path:
    return write_bytes_atomic(Path(path), data)


def tflite_ops(path_or_bytes) -> list[str]:
    """Sorted operator names of a .tflite file (custom/select-TF ops by their custom name)."""
    kw = ({"model_content": bytes(path_or_bytes)} if isinstance(path_or_bytes, (bytes, bytearray))
          else {"model_path": str(path_or_bytes)})
    it = Interpreter(**kw)
    return sorted({d["op_name"] for d in it._get_ops_details()})


def run_tflite(path_or_bytes, x: np.ndarray) -> np.ndarray:
    """Run a .tflite file (its one input, one output) in LiteRT, without TensorFlow."""
    kw = ({"model_content": bytes(path_or_bytes)} if isinstance(path_or_bytes, (bytes, bytearray))
          else {"model_path": str(path_or_bytes)})
    it = Interpreter(**kw)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.asarray(x, dtype=inp["dtype"])
    if tuple(x.shape) != tuple(inp["shape"]):
        raise CmeError(f"TFLite model expects input {tuple(inp['shape'])} {inp['dtype'].__name__}"
                       f", got {tuple(x.shape)}")
    it.set_tensor(inp["index"], x)
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


def parity_input(n: int, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal of ``n`` samples at 16 kHz: a voiced
    harmonic series (gliding pitch 110-220 Hz, 1/k amplitudes, syllable-rate envelope)
    plus a little noise, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110.0 * (1.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 16))
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)) + 0.02 * rng.standard_normal(n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)[None]


def export_tflite(model_path: str | os.PathLike, out_dir: str | os.PathLike,
                  windows=(DEFAULT_WINDOW_S,)) -> dict:
    """Write ``OUT/<name>[-<window>s][-dynamic].tflite`` for a student (one pair per window)
    or a teacher (at its input size) and ``OUT/tflite.json``: per file its size in bytes,
    input shape, operators, and the largest absolute logit difference from the Keras model
    on :func:`parity_input` (student) or a seeded random image (teacher), run in LiteRT."""
    import tensorflow as tf

    from ..models.io import input_size, load_model
    from ..models.student import serving_student
    from ..utils import write_json
    from .export import export_info
    model = load_model(model_path)
    md = getattr(model, "cme_metadata", {}) or {}
    common = export_info(md, str(model_path))
    kind, name = md.get("kind"), md.get("name", Path(model_path).stem)
    out = Path(out_dir)
    files = []
    if kind == "student":
        serving = serving_student(model)
        jobs = []
        for w in windows:
            x = parity_input(window_samples(w))
            jobs.append((f"{name}-{w:g}s", lambda q, w=w: student_tflite_bytes(model, w, q),
                         x, np.asarray(serving(x, training=False)), {"window_s": float(w)}))
    elif kind == "teacher":
        h = w = int(input_size(model))
        x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3)).astype(np.uint8)
        jobs = [(name, lambda q: teacher_tflite_bytes(model, q), x,
                 np.asarray(model(x, training=False)), {})]
    else:
        raise CmeError(f"{model_path}: metadata kind {kind!r} is neither student nor teacher")
    for stem, make, x, ref, extra in jobs:
        for q in (None, "dynamic"):
            own = {"format": "tflite", "quantization": q or "float32",
                   "input_shape": list(x.shape), "input_dtype": x.dtype.name,
                   "tensorflow_version": tf.__version__, **extra}
            data = with_metadata(make(q), {**common, **own})
            path = write_tflite(data, out / f"{stem}{'-dynamic' if q else ''}.tflite")
            got = run_tflite(data, x)
            files.append({"file": path.name, "kind": kind, "quantization": q or "float32",
                          "bytes": len(data), "input_shape": list(x.shape),
                          "input_dtype": x.dtype.name, "ops": tflite_ops(data),
                          "select_tf_ops": [o for o in tflite_ops(data) if o.startswith("Flex")],
                          "max_abs_logit_diff": float(np.max(np.abs(got - ref))),
                          "max_abs_logit": float(np.max(np.abs(ref))),
                          "metadata": METADATA_NAME, "provenance": common["provenance"],
                          **extra})
    summary = {"model": str(model_path), "name": name, "kind": kind, "files": files,
               "parity_input": "serving.tflite.parity_input (speech-like harmonic signal)"
               if kind == "student" else "seeded uniform random uint8 image"}
    write_json(out / "tflite.json", summary)
    return summary
