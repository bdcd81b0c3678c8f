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
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..audio.frontend import SAMPLE_RATE, TRAIN_CROP_SAMPLES
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
    from ..models.student import MIN_SERVING_SAMPLES
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
    from ..models.io import input_size, load_model
    from ..models.student import serving_student
    from ..utils import write_json
    model = load_model(model_path)
    md = getattr(model, "cme_metadata", {}) or {}
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
            data = make(q)
            path = write_tflite(data, out / f"{stem}{'-dynamic' if q else ''}.tflite")
            got = run_tflite(data, x)
            files.append({"file": path.name, "kind": kind, "quantization": q or "float32",
                          "bytes": len(data), "input_shape": list(x.shape),
                          "input_dtype": x.dtype.name, "ops": tflite_ops(data),
                          "select_tf_ops": [o for o in tflite_ops(data) if o.startswith("Flex")],
                          "max_abs_logit_diff": float(np.max(np.abs(got - ref))),
                          "max_abs_logit": float(np.max(np.abs(ref))), **extra})
    summary = {"model": str(model_path), "name": name, "kind": kind, "files": files,
               "parity_input": "serving.tflite.parity_input (speech-like harmonic signal)"
               if kind == "student" else "seeded uniform random uint8 image"}
    write_json(out / "tflite.json", summary)
    return summary
