"""TF Serving warm-up requests: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays this file when it loads a version, before the version takes traffic,
so the first real request does not pay for lazy initialisation (graph optimisation,
memory pools, the first run of each kernel). The file is a TFRecord of
``tensorflow.serving.PredictionLog`` messages, each holding one ``PredictRequest`` (as TF
Serving's SavedModel warm-up guide describes; at most 1,000 records are replayed).

We write a few real-shaped requests per signature:

student
    ``serving_default`` and ``calibrated_*``: ``waveform`` float32 [1, 64,384] (4.024 s, the
    training crop) and [2, 160,240] (10.015 s, the largest evaluation bucket);
    ``from_wav``: two 16-bit PCM WAV files, 4.024 s at 16 kHz and 2.0 s at 44.1 kHz stereo
    (so the in-graph resampler and channel mix run too).
teacher
    ``serving_default``: ``images`` uint8 [1, S, S, 3] and [4, S, S, 3], S the model's input
    size; ``from_jpeg``: a 320x240 JPEG and a 96x128 PNG.

The signals are deterministic, speech-like in level and spectrum (a harmonic voice with a
moving pitch and a syllable-rate envelope, plus low noise), and face-sized images are a
smooth gradient with noise: their only purpose is to exercise every path with real shapes.

The messages are encoded here directly (protobuf wire format: a handful of fields), so
that exporting needs neither ``tensorflow-serving-api`` nor its protobuf version; the
tests parse the file with ``tensorflow-serving-api``'s own ``PredictionLog``.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..audio.constants import SAMPLE_RATE, TRAIN_CROP_SAMPLES
from ..audio.frontend import MAX_BUCKET, samples_for_frames

#: Path of the warm-up file inside a version folder (TF Serving's fixed name).
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
#: 160,240 samples (10.015 s): the largest evaluation bucket (1,000 frames) of the student.
BUCKET_SAMPLES = samples_for_frames(MAX_BUCKET)


# ------------------------------------------------------------------ protobuf wire format

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, sub-messages, map entries."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model: str, signature: str, inputs: dict[str, bytes]) -> bytes:
    """A serialized ``PredictionLog{predict_log{request{model_spec, inputs}}}``; ``inputs``
    maps input keys to serialized ``TensorProto``s.

    Field numbers (tensorflow_serving/apis): ModelSpec name=1, signature_name=3;
    PredictRequest model_spec=1, inputs=2 (map<string, TensorProto>: key=1, value=2);
    PredictLog request=1; PredictionLog predict_log=6.
    """
    spec = _bytes_field(1, model.encode()) + _bytes_field(3, signature.encode())
    request = _bytes_field(1, spec) + b"".join(
        _bytes_field(2, _bytes_field(1, k.encode()) + _bytes_field(2, v))
        for k, v in sorted(inputs.items()))
    return _bytes_field(6, _bytes_field(1, request))


# ------------------------------------------------------------------ inputs

def speech_like(samples: int, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A deterministic voice-like float32 signal in [-1, 1] (about -20 dBFS RMS)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)              # moving pitch
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))      # harmonics, 1/k roll-off
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) ** 2       # ~4 syllables per second
    x = 0.08 * envelope * voice + 0.003 * rng.standard_normal(samples)
    return np.clip(x, -1, 1).astype(np.float32)


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 96 + 64 * (x / max(width - 1, 1)) + 32 * (y / max(height - 1, 1))
    img = base[..., None] + rng.normal(0, 12, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _encoded_image(img: np.ndarray, fmt: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def requests(kind: str, signatures: list[str], input_keys: dict[str, str],
             input_size: int | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``(signature, {input key: array})`` warm-up requests for every signature of an
    exported ``kind`` ("student"/"teacher") model; string inputs are object arrays of
    bytes. Calibrated student signatures take ``waveform`` like ``serving_default``."""
    from ..audio.io import wav_bytes
    out: list[tuple[str, dict[str, np.ndarray]]] = []
    for sig in signatures:
        if kind == "student":
            if sig == "from_wav":
                wavs = [wav_bytes(speech_like(TRAIN_CROP_SAMPLES), SAMPLE_RATE),
                        wav_bytes(np.stack([speech_like(88_200, 44_100, 1),
                                            speech_like(88_200, 44_100, 2)], 1), 44_100)]
                out.append((sig, {input_keys.get(sig, "audio_bytes"):
                                  np.array(wavs, dtype=object)}))
            else:
                key = input_keys.get(sig, "waveform")
                out.append((sig, {key: speech_like(TRAIN_CROP_SAMPLES)[None]}))
                out.append((sig, {key: np.stack([speech_like(BUCKET_SAMPLES, seed=3),
                                                 speech_like(BUCKET_SAMPLES, seed=4)])}))
        elif kind == "teacher":
            s = int(input_size or 224)
            if sig == "from_jpeg":
                imgs = [_encoded_image(_image(240, 320, 5), "JPEG"),
                        _encoded_image(_image(128, 96, 6), "PNG")]
                out.append((sig, {input_keys.get(sig, "image_bytes"):
                                  np.array(imgs, dtype=object)}))
            else:
                key = input_keys.get(sig, "images")
                out.append((sig, {key: _image(s, s, 7)[None]}))
                out.append((sig, {key: np.stack([_image(s, s, 8 + i) for i in range(4)])}))
        else:
            raise ValueError(f"unknown model kind {kind!r}")
    return out


def write_warmup(version_dir: str | Path, model_name: str, kind: str,
                 signatures: list[str], input_keys: dict[str, str],
                 input_size: int | None = None) -> Path:
    """Write ``version_dir/assets.extra/tf_serving_warmup_requests``; returns its path."""
    import tensorflow as tf

    from ..data.records import write_tfrecord
    logs = [prediction_log(model_name, sig, {k: tf.make_tensor_proto(v).SerializeToString()
                                             for k, v in inputs.items()})
            for sig, inputs in requests(kind, signatures, input_keys, input_size)]
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tfrecord(path, logs)
    return path
