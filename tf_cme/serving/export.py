"""SavedModel export for TF Serving: raw-audio and image signatures.

``export_run(RUN)`` reads ``RUN/model.keras`` (its tf-cme metadata says whether it is
the speech student or a face teacher) and writes a SavedModel in TF Serving's layout::

    DIR/<registry-name>/<version>/saved_model.pb, variables/, assets.extra/tf_cme.json,
                                  assets.extra/tf_serving_warmup_requests (serving/warmup.py)
    DIR/models.config              TF Serving model config listing every model in DIR
    DIR/batching_parameters.txt    TF Serving --batching_parameters_file

Versions are increasing integers (the next one is the largest existing + 1). A
version is written under a hidden temporary name (TF Serving ignores folders whose
name is not a number) and renamed when complete, so a server polling ``DIR`` never
loads a half-written model.

Signatures (every one returns ``logits`` float32 [B, K], ``probabilities`` float32
[B, K], ``label`` string [B], ``provenance`` string [B] and, for the FER+ signatures,
``embedding`` float32 [B, D]). ``provenance`` is the same string in every row: where the
weights came from (``imported:<sha256>``, ``trained:<sha256>``, ``demo-synthetic``), and
for a demo model its caveat after ": " (:func:`tf_cme.provenance.serving_note`), so that a
client of TF Serving sees what ``tf-cme predict`` says about the model:

student (``emovoxceleb-student``)
    ``serving_default``  ``waveform`` float32 [B, samples], mono, 16 kHz, in [-1, 1].
    ``from_wav``         ``audio_bytes`` string [B]: encoded 16-bit PCM WAV files, any
                         rate, mono or multi-channel (core ``tf.audio.decode_wav``;
                         channels are averaged, other rates are resampled in-graph with
                         the project resampler). Clips may differ in length: each is
                         processed on its own.
    ``calibrated_<dataset>`` (when a calibration.json is given or found in the run's
                         sibling ``external/`` folder): ``waveform`` as serving_default;
                         ``logits``/``probabilities``/``label`` in the dataset's classes
                         (the logistic layer of benchmark_external.py on the 8 student
                         logits), plus ``ferplus_logits`` [B, 8].
teacher (``resnet50-ferplus``, ``senet50-ferplus``)
    ``serving_default``  ``images`` uint8 [B, height, width, 3] RGB, any size (the model
                         converts to grey, resizes and subtracts its mean itself).
    ``from_jpeg``        ``image_bytes`` string [B]: encoded JPEG/PNG/BMP/GIF images of
                         any sizes (``tf.io.decode_image``), each resized to the model's
                         input size so that they batch.

Student front end for serving: ``crop="bucket"``, dither off. This is the original
evaluation (protocol §3.2: spectrogram and row normalisation over the whole clip, then the
largest 100-frame bucket <= the clip's frames, centred), which is also how the student
logits behind the calibration layer were computed, so the calibrated signature sees the
inputs it was fitted on. Clips are therefore used whole up to 10.015 s (1,000 frames);
longer clips are scored on their central 10 s; `predict.py` covers long files with a
timeline of sliding windows instead. The original code does not handle clips under 100
frames (1.015 s); the exported graph rejects them with a clear error rather than guess,
and predict.py refuses the same clips (one decision for one file, protocol §3.2).

In-graph input checks (``tf.debugging`` asserts, so TF Serving answers with an
INVALID_ARGUMENT error whose message says what is wrong, never with NaN scores): empty
audio, audio shorter than :data:`MIN_SAMPLES`, non-finite samples, empty images; for
``from_wav`` the WAV header before decoding (:func:`check_wav_header`: not a WAV file,
a format other than 16-bit PCM, a truncated file).
All-zero audio (silence) is valid input and gives finite outputs.

No tensorflow-io op appears in an exported graph (:func:`non_core_ops` checks), so TF
Serving's stock binary loads it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

from .. import emotions, provenance
from ..audio.frontend import MIN_BUCKET_FRAMES, SAMPLE_RATE
from ..models.student import MIN_SERVING_SAMPLES, SERVING_CROP
from ..models.io import input_size
from ..utils import CmeError, read_json
from .config import ExportConfig  # noqa: F401  (re-exported: export.ExportConfig)

#: Shortest waveform the exported student accepts: 100 frames = 16,240 samples (1.015 s),
#: the smallest pool6 bucket of the original evaluation.
MIN_SAMPLES = MIN_SERVING_SAMPLES

TEACHER_EMBEDDING_LAYER = "pool5"
#: Extra file inside each version folder (TF Serving ignores assets.extra).
METADATA_FILE = "assets.extra/tf_cme.json"
CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"

#: Input keys of the signatures.
INPUT_KEYS = {
    ("student", "serving_default"): "waveform",
    ("student", "from_wav"): "audio_bytes",
    ("teacher", "serving_default"): "images",
    ("teacher", "from_jpeg"): "image_bytes",
}


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path            # DIR/<name>/<version>
    name: str             # registry name
    version: int
    kind: str             # "student" | "teacher"
    signatures: tuple[str, ...]


# --------------------------------------------------------------------------- versions

def versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer versions present under ``DIR/<name>/`` (sorted)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists())


def latest_version(model_dir: str | os.PathLike) -> Path:
    """``DIR/<name>/<largest version>``; CmeError when there is none."""
    vs = versions(model_dir)
    if not vs:
        raise CmeError(f"{model_dir}: no exported SavedModel versions (run "
                       f"scripts/export_model.py first)")
    return Path(model_dir) / str(vs[-1])


def resolve_saved_model(path: str | os.PathLike) -> Path:
    """A version folder (has saved_model.pb) or a model folder (newest version)."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    if path.is_dir():
        return latest_version(path)
    raise CmeError(f"{path}: not a SavedModel folder")


def read_export_metadata(version_dir: str | os.PathLike) -> dict:
    p = Path(version_dir) / METADATA_FILE
    return read_json(p) if p.exists() else {}


# --------------------------------------------------------------------------- calibration

def find_calibration(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/../external/calibration.json`` when it exists (the make-demo layout)."""
    p = Path(run_dir).resolve().parent / "external" / "calibration.json"
    return p if p.exists() else None


def load_calibration(path: str | os.PathLike) -> dict:
    """Read and check a calibration.json (``dataset``, ``classes``, ``weights`` [8][K], ``bias`` [K])."""
    import numpy as np
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise CmeError(f"{path}: no such calibration file") from None
    except json.JSONDecodeError as e:
        raise CmeError(f"{path}: not JSON ({e})") from None
    missing = [k for k in ("dataset", "classes", "weights", "bias") if k not in data]
    if missing:
        raise CmeError(f"{path}: calibration file lacks {', '.join(missing)}")
    classes = [str(c) for c in data["classes"]]
    try:
        w = np.asarray(data["weights"], dtype=np.float32)
        b = np.asarray(data["bias"], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise CmeError(f"{path}: weights/bias are not numbers ({e})") from None
    k = len(classes)
    if w.shape != (emotions.NUM_CLASSES, k) or b.shape != (k,):
        raise CmeError(f"{path}: expected weights [8 x {k}] and bias [{k}] for {k} classes, "
                       f"got {list(w.shape)} and {list(b.shape)}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise CmeError(f"{path}: non-finite calibration weights")
    dataset = re.sub(r"[^a-z0-9_]+", "_", str(data["dataset"]).lower()).strip("_")
    if not dataset:
        raise CmeError(f"{path}: empty dataset name")
    return {"dataset": dataset, "classes": classes, "weights": w, "bias": b,
            "path": str(path)}


# --------------------------------------------------------------------------- graph pieces

def _flat(x):
    """[B, ...] -> [B, D], keeping D static when it is known (signature shapes)."""
    import tensorflow as tf
    dims = x.shape[1:]
    if dims.is_fully_defined():
        return tf.reshape(x, [-1, dims.num_elements()])
    return tf.reshape(x, [tf.shape(x)[0], -1])


def _fer_outputs(logits, embedding, note: str, class_names=emotions.FERPLUS):
    import tensorflow as tf
    logits = tf.cast(logits, tf.float32)
    names = tf.constant(list(class_names))
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "label": tf.gather(names, tf.argmax(logits, axis=-1, output_type=tf.int32)),
        "provenance": tf.fill(tf.shape(logits)[:1], tf.constant(note)),
        **({"embedding": tf.cast(embedding, tf.float32)} if embedding is not None else {}),
    }


def check_waveform(waveform):
    """In-graph checks of a float32 [B, samples] batch: clear InvalidArgumentErrors."""
    import tensorflow as tf
    n = tf.shape(waveform)[1]
    checks = [
        tf.debugging.assert_positive(
            n, message="empty audio: the waveform has no samples"),
        tf.debugging.assert_greater_equal(
            n, MIN_SAMPLES,
            message=(f"audio too short: the student needs at least {MIN_SAMPLES} samples "
                     f"({MIN_SAMPLES / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz, "
                     f"{MIN_BUCKET_FRAMES} spectrogram frames)")),
    ]
    with tf.control_dependencies(checks):
        return tf.debugging.assert_all_finite(
            waveform, "audio has non-finite samples (NaN or Inf)")


#: WAV format codes named in check_wav_header's messages (everything else: "code N").
_WAV_FORMAT_NAMES = ((3, "float"), (0xFFFE, "WAVE_FORMAT_EXTENSIBLE"), (2, "Microsoft ADPCM"),
                     (6, "A-law"), (7, "mu-law"), (0x11, "IMA ADPCM"), (0x55, "MP3"))
_WAV_SEND = "send 16-bit PCM (format code 1) WAV"


def check_wav_header(audio_bytes):
    """In-graph checks of one encoded WAV (scalar string) before ``tf.audio.decode_wav``,
    which accepts only a RIFF/WAVE file whose 'fmt ' chunk (16 or 18 bytes) comes first,
    16-bit integer PCM (format code 1), and a 'data' chunk the bytes hold in full; its own
    errors name no reason outside the server's log.  Returns ``audio_bytes`` behind
    ``tf.debugging.Assert`` ops (core TF only, so TF Serving's clients see the reason)
    whose messages say what is wrong: ``not a WAV file: no RIFF header``, ``not a WAV
    file: no WAVE form type``, ``unsupported WAV layout: ...`` (another chunk before
    fmt, a fmt chunk of other than 16 or 18 bytes), ``unsupported WAV format: float
    (code 3); send 16-bit PCM ...``, ``unsupported WAV format: 24-bit PCM; ...``,
    ``truncated WAV: the request ends inside the fmt chunk ...``, ``truncated or
    unsupported WAV: no data chunk found ...``, ``truncated WAV: header says N bytes of
    data, request holds M``.
    Each check runs behind the one before it, so the first problem is the one reported."""
    import tensorflow as tf
    b = tf.reshape(audio_bytes, [])
    n = tf.strings.length(b)                                  # bytes (unit "BYTE")
    n64 = tf.cast(n, tf.int64)
    # zero padding, so that a fixed-offset read of a short request stays in range (each
    # check below first asserts that the bytes it reads are really there)
    padded = tf.strings.join([b, tf.constant(b"\0" * 48)])

    def text(pos, size=4):
        return tf.strings.substr(padded, pos, size)

    def uint(pos, size):
        raw = tf.io.decode_raw(tf.strings.substr(padded, pos, size), tf.uint8)
        weights = tf.constant([256 ** i for i in range(size)], tf.int64)
        return tf.reduce_sum(tf.cast(raw, tf.int64) * weights)

    def shown(s):               # printable ASCII, others as '?': the message stays text
        raw = tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32)
        raw = tf.where(tf.logical_and(raw >= 32, raw < 127), raw, 63)
        return tf.strings.join(["<", tf.strings.unicode_encode(raw, "UTF-8"), ">"])

    deps = []

    def check(cond, *message):
        with tf.control_dependencies(deps):
            deps.append(tf.debugging.Assert(cond, [tf.strings.join(list(message))]))

    # (TF's Assert escapes quotes in its message: the messages use none)
    check(tf.logical_and(n >= 4, tf.equal(text(0), "RIFF")),
          "not a WAV file: no RIFF header (the request holds ", tf.strings.as_string(n),
          " bytes, starting ", shown(tf.strings.substr(b, 0, 4)), "); ",
          _WAV_SEND)
    check(tf.logical_and(n >= 12, tf.equal(text(8), "WAVE")),
          "not a WAV file: no WAVE form type in the RIFF header; ", _WAV_SEND)
    check(tf.logical_and(n >= 20, tf.equal(text(12), "fmt ")),
          "unsupported WAV layout: the first chunk is ", shown(text(12)),
          ", not <fmt > (tf.audio.decode_wav needs the fmt chunk first); ", _WAV_SEND)
    check(n >= 36, "truncated WAV: the request ends inside the fmt chunk, after ",
          tf.strings.as_string(n), " bytes")
    code = uint(20, 2)
    name = tf.strings.join(["code ", tf.strings.as_string(code)])
    for value, label in _WAV_FORMAT_NAMES:
        name = tf.where(tf.equal(code, value), f"{label} (code {value})", name)
    check(tf.equal(code, 1), "unsupported WAV format: ", name, "; ", _WAV_SEND)
    bits = uint(34, 2)
    check(tf.equal(bits, 16),
          "unsupported WAV format: ", tf.strings.as_string(bits), "-bit PCM; ", _WAV_SEND)
    fmt_size = uint(16, 4)
    check(tf.logical_or(tf.equal(fmt_size, 16), tf.equal(fmt_size, 18)),
          "unsupported WAV layout: a fmt chunk of ", tf.strings.as_string(fmt_size),
          " bytes (tf.audio.decode_wav reads 16 or 18); ", _WAV_SEND)

    # walk the chunks after 'fmt ' to 'data' (decode_wav does not pad odd-sized chunks)
    def more(off, found):
        return tf.logical_and(tf.logical_not(found), off + 8 <= n64)

    def step(off, found):
        is_data = tf.equal(tf.strings.substr(padded, off, 4), "data")
        size = uint(off + 4, 4)
        return tf.where(is_data, off, off + 8 + size), is_data

    with tf.control_dependencies(deps):
        off, found = tf.while_loop(more, step, [20 + fmt_size, tf.constant(False)])
    check(found, "truncated or unsupported WAV: no data chunk found in the ",
          tf.strings.as_string(n), " bytes of the request (tf.audio.decode_wav walks the "
          "chunks without the pad byte after an odd-sized one)")
    with tf.control_dependencies(deps):     # off + 8 <= n from here on (found)
        off = tf.minimum(off, tf.maximum(n64 - 8, 0))
        declared = uint(off + 4, 4)
        held = tf.maximum(n64 - off - 8, 0)
    check(declared <= held,
          "truncated WAV: header says ", tf.strings.as_string(declared), " bytes of data, "
          "request holds ", tf.strings.as_string(held))
    with tf.control_dependencies(deps):
        return tf.identity(audio_bytes)


def decode_wav_16k(audio_bytes):
    """One encoded WAV (scalar string) -> float32 [samples] mono at 16 kHz, in-graph.

    The header is checked first (:func:`check_wav_header`: clear messages for a non-WAV,
    unsupported or truncated file); channels are averaged; rates in
    :data:`tf_cme.audio.resample.COMMON_RATES` are resampled (others fail with
    "unsupported sample rate")."""
    import tensorflow as tf
    audio, rate = tf.audio.decode_wav(check_wav_header(audio_bytes))  # [samples, channels]
    from ..audio.resample import resample_dynamic      # the project's one resampler
    mono = tf.reduce_mean(audio, axis=1)
    return tf.reshape(resample_dynamic(mono, rate, SAMPLE_RATE), [-1])


def _embedding_layer(model, default: str) -> str:
    md = getattr(model, "cme_metadata", None) or {}
    return md.get("embedding_layer") or default


def _student_net(model):
    from ..models.student import serving_student
    return serving_student(model, embedding=True)


def _teacher_net(model):
    import keras
    emb = model.get_layer(_embedding_layer(model, TEACHER_EMBEDDING_LAYER)).output
    return keras.Model(model.inputs, [model.outputs[0], emb], name="serving_teacher")


def _student_archive(model, calibration: dict | None, note: str):
    import keras
    import tensorflow as tf
    net = _student_net(model)
    emb_dim = int(_static_dim(net.outputs[1]))

    # The network is traced once, in `core`; every endpoint calls it (a shared function
    # in the SavedModel), which keeps export fast and the graphs small.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)], autograph=False)
    def core(waveform):
        waveform = check_waveform(waveform)
        logits, emb = net(waveform, training=False)
        return tf.cast(logits, tf.float32), _flat(emb)

    def serving_default(waveform):
        return _fer_outputs(*core(waveform), note)

    def from_wav(audio_bytes):
        def one(b):
            out = _fer_outputs(*core(decode_wav_16k(b)[None, :]), note)
            return {k: v[0] for k, v in out.items()}
        spec = {"logits": tf.TensorSpec([emotions.NUM_CLASSES], tf.float32),
                "probabilities": tf.TensorSpec([emotions.NUM_CLASSES], tf.float32),
                "label": tf.TensorSpec([], tf.string),
                "provenance": tf.TensorSpec([], tf.string),
                "embedding": tf.TensorSpec([emb_dim], tf.float32)}
        return tf.map_fn(one, audio_bytes, fn_output_signature=spec)

    archive = keras.export.ExportArchive()     # tracks the variables the endpoints use
    archive.add_endpoint("serving_default", serving_default, input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform")])
    archive.add_endpoint("from_wav", from_wav, input_signature=[
        tf.TensorSpec([None], tf.string, name="audio_bytes")])
    names = ["serving_default", "from_wav"]
    if calibration is not None:
        w = tf.constant(calibration["weights"])
        b = tf.constant(calibration["bias"])
        classes = calibration["classes"]

        def calibrated(waveform):
            logits, _ = core(waveform)
            out = _fer_outputs(tf.matmul(logits, w) + b, None, note, classes)
            out["ferplus_logits"] = logits
            return out
        name = f"calibrated_{calibration['dataset']}"
        archive.add_endpoint(name, calibrated, input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveform")])
        names.append(name)
    return archive, names, emb_dim


def _teacher_archive(model, input_size: int, note: str):
    import keras
    import tensorflow as tf
    net = _teacher_net(model)
    emb_dim = int(_static_dim(net.outputs[1]))
    channels = model.inputs[0].shape[-1]
    if channels not in (None, 3):
        raise CmeError(f"teacher input has {channels} channels; export expects RGB (3)")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                 autograph=False)
    def core(images):
        shape = tf.shape(images)
        check = tf.debugging.assert_positive(
            shape[1] * shape[2], message="empty image: height or width is 0")
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        logits, emb = net(images, training=False)
        return tf.cast(logits, tf.float32), _flat(emb)

    def serving_default(images):
        return _fer_outputs(*core(images), note)

    def from_jpeg(image_bytes):
        def one(b):
            img = tf.io.decode_image(b, channels=3, expand_animations=False)
            img.set_shape([None, None, 3])
            img = tf.image.resize(img, [input_size, input_size], method="bilinear",
                                  antialias=True)
            return tf.saturate_cast(tf.round(img), tf.uint8)
        images = tf.map_fn(one, image_bytes,
                           fn_output_signature=tf.TensorSpec([input_size, input_size, 3],
                                                             tf.uint8))
        return _fer_outputs(*core(images), note)

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_default, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("from_jpeg", from_jpeg, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    return archive, ["serving_default", "from_jpeg"], emb_dim


def _static_dim(t) -> int:
    dims = [d for d in t.shape[1:]]
    if any(d is None for d in dims):
        raise CmeError(f"embedding layer has a dynamic shape {t.shape}")
    n = 1
    for d in dims:
        n *= int(d)
    return n


# --------------------------------------------------------------------------- export

def export_info(md: dict, source: str | None = None) -> dict:
    """What every export says about its model, whatever the format: the SavedModel's
    ``tf_cme.json`` starts with it and a ``.tflite`` file carries it in its metadata
    table (:func:`tf_cme.serving.tflite.with_metadata`). ``md``: the Keras model's tf-cme
    metadata; name, kind, source, the class order (FER+), the model's metadata, where its
    weights came from and the demo caveat (tf_cme.provenance), the tf-cme version and,
    for a student, the sample rate, shortest input, crop and dither of its serving mode."""
    from .. import __version__
    kind = md.get("kind")
    info = {"name": md.get("name"), "kind": kind, "source": source,
            "class_names": list(emotions.FERPLUS), "model_metadata": md,
            "provenance": provenance.model_info(md)["provenance"],
            "caveat": provenance.caveat(md), "tf_cme_version": __version__}
    if kind == "student":
        info.update(sample_rate=SAMPLE_RATE, min_samples=MIN_SAMPLES,
                    crop=SERVING_CROP, dither=False)
    return info


def export_model(model, out_dir: str | os.PathLike, *, calibration: dict | None = None,
                 source: str | None = None, serving_base: str = "/models",
                 config: dict | None = None) -> ExportResult:
    """Export a Keras model with tf-cme metadata to ``out_dir/<name>/<next version>``."""
    md = dict(getattr(model, "cme_metadata", None) or {})
    kind, name = md.get("kind"), md.get("name")
    if kind not in ("student", "teacher") or not name:
        raise CmeError(f"{source or 'model'}: metadata has no kind student/teacher and name "
                       f"(got kind={kind!r}, name={name!r})")
    if calibration is not None and kind != "student":
        raise CmeError(f"{source or name}: a calibration layer applies to the student's "
                       f"logits, not to a {kind}")
    import keras
    if keras.backend.backend() != "tensorflow":
        raise CmeError(f"SavedModel export needs Keras's TensorFlow backend; this process "
                       f"uses {keras.backend.backend()!r} (unset KERAS_BACKEND or set it "
                       f"to tensorflow)")
    note = provenance.serving_note(md)          # the `provenance` output of every signature
    if kind == "student":
        archive, signatures, emb_dim = _student_archive(model, calibration, note)
    else:
        archive, signatures, emb_dim = _teacher_archive(model, input_size(model), note)

    out_dir = Path(out_dir)
    model_dir = out_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (versions(model_dir) or [0])[-1] + 1
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        archive.write_out(str(tmp), verbose=False)
        info = {
            **export_info(md, source), "version": version,
            "signatures": signatures, "embedding_dim": emb_dim, "config": config or {},
            "input_keys": {sig: key for (k, sig), key in INPUT_KEYS.items() if k == kind},
        }
        if calibration is not None:
            info["calibration"] = {"dataset": calibration["dataset"],
                                   "classes": calibration["classes"],
                                   "signature": f"calibrated_{calibration['dataset']}",
                                   "source": calibration["path"]}
        import tensorflow as tf
        from .warmup import WARMUP_FILE, write_warmup
        write_warmup(tmp, name, kind, signatures,
                     {sig: key for (k, sig), key in INPUT_KEYS.items() if k == kind},
                     input_size(model) if kind == "teacher" else None)
        info.update(warmup_file=WARMUP_FILE, tensorflow_version=tf.__version__,
                    serving_image=f"tensorflow/serving:{tf.__version__}")
        meta = tmp / METADATA_FILE
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        bad = non_core_ops(tmp)
        if bad:
            raise CmeError(f"exported graph contains ops TF Serving lacks: {', '.join(bad)}")
        while True:      # another exporter may have taken the number meanwhile
            final = model_dir / str(version)
            try:
                os.rename(tmp, final)
                break
            except OSError:
                if not final.exists():
                    raise
                version += 1
                info["version"] = version
                (tmp / METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True)
                                                 + "\n")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    write_serving_config(out_dir, serving_base)
    write_batching_parameters(out_dir)
    return ExportResult(final, name, version, kind, tuple(signatures))


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
               calibration: str | os.PathLike | None = None,
               serving_base: str = "/models", epoch: int | None = None) -> ExportResult:
    """Export ``RUN/model.keras`` (student or teacher) to ``out`` (default ``RUN/export``),
    or with ``epoch`` a student's kept checkpoint of that mini-epoch (``Run.require_model``).

    For a student, ``calibration`` (a calibration.json) or, when not given,
    ``RUN/../external/calibration.json`` adds a ``calibrated_<dataset>`` signature.
    """
    from ..models import io as model_io
    from ..runs import Run
    run = Run.open(run_dir)
    from ..training.student import run_model
    model_path = run_model(run.path, epoch)
    md = model_io.read_metadata(model_path)
    if calibration is not None and md.get("kind") != "student":
        raise CmeError(f"{model_path}: a calibration layer applies to the student's "
                       f"logits, not to a {md.get('kind')}")
    cal = None
    if calibration is not None:
        cal = load_calibration(calibration)
    elif md.get("kind") == "student":
        found = find_calibration(run.path)
        if found is not None:
            cal = load_calibration(found)
    model = model_io.load_model(model_path)
    return export_model(model, Path(out) if out is not None else run.export,
                        calibration=cal, source=str(model_path), serving_base=serving_base,
                        config={"run": str(run.path), "epoch": epoch,
                                "calibration": cal and cal["path"],
                                "serving_base": serving_base})


# --------------------------------------------------------------------------- TF Serving files

def write_serving_config(out_dir: str | os.PathLike, base_path: str = "/models",
                         path: str | os.PathLike | None = None) -> Path:
    """``DIR/models.config`` (or ``path``) listing every model under DIR that has a version.

    ``base_path`` is where DIR is seen by the server (``/models`` in the
    ``tensorflow/serving`` container started with ``-v DIR:/models``; DIR itself for a
    server on this machine).
    """
    out_dir = Path(out_dir)
    names = sorted(p.name for p in out_dir.iterdir() if p.is_dir() and versions(p))
    lines = ["# TF Serving model config written by tf-cme scripts/export_model.py.",
             f"# base_path is where {out_dir} is mounted in the server.",
             "model_config_list {"]
    for n in names:
        lines += ["  config {",
                  f"    name: '{n}'",
                  f"    base_path: '{base_path.rstrip('/')}/{n}'",
                  "    model_platform: 'tensorflow'",
                  "  }"]
    lines.append("}")
    path = Path(path) if path is not None else out_dir / CONFIG_FILE
    _write_text(path, "\n".join(lines) + "\n")
    return path


BATCHING_PARAMETERS = """\
# TF Serving --batching_parameters_file (with --enable_batching), written by tf-cme.
# Requests are merged along the batch dimension; tensors of different shapes are
# not padded (padding would repeat a sample value and change the spectrogram
# statistics), so send the student's serving_default equal-length windows, or use
# from_wav / from_jpeg, whose string inputs always merge.
max_batch_size { value: 32 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
pad_variable_length_inputs: false
"""


def write_batching_parameters(out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir) / BATCHING_FILE
    _write_text(path, BATCHING_PARAMETERS)
    return path


def _write_text(path: Path, text: str) -> None:
    from ..utils import write_bytes_atomic
    write_bytes_atomic(path, text.encode())


# --------------------------------------------------------------------------- graph checks

def graph_op_types(saved_model_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs and function library."""
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    functions: set[str] = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for f in mg.graph_def.library.function:
            functions.add(f.signature.name)
            ops.update(n.op for n in f.node_def)
    return ops - functions      # a node may call a library function by name


def non_core_ops(saved_model_dir: str | os.PathLike) -> list[str]:
    """Op types that TF Serving's stock binary would not know: tensorflow-io ops
    (``IO>...``) and anything not registered by core TensorFlow."""
    from tensorflow.python.framework import op_def_registry
    bad = []
    for op in sorted(graph_op_types(saved_model_dir)):
        if op.startswith("IO>") or op_def_registry.get(op) is None:
            bad.append(op)
    return bad
