"""The speech student ``emovoxceleb-student``: VGGVox VGG-M with BN (protocol §5).

Waveform ``[B, samples]`` float32 at 16 kHz in, 8 logits (FER+ order) out. Layers
(frequency x time; every conv "valid" after explicit zero padding; pools valid, floor):

=====  ===========================  ======  ======  ===  ======
 #      layer                        kernel  stride  pad  out ch
=====  ===========================  ======  ======  ===  ======
 0      ``spectrogram``              -       -       -    512 x M x 1
 1      conv1 + conv1_bn + relu1     7x7     2x2     1    96
 2      mpool1 (max)                 3x3     2x2     0
 3      conv2 + conv2_bn + relu2     5x5     2x2     1    256
 4      mpool2 (max)                 3x3     2x2     0
 5-7    conv3/4/5 + _bn + relu       3x3     1       1    384/256/256
 8      mpool5 (max)                 5x3     3x2     0
 9      fc6 + fc6_bn + relu6         9x1     1       0    4096
 10     pool6 = mean over time
 11     fc7 + fc7_bn + ``fc7_relu``  1x1     1       0    1024   (the embedding)
 12     ``prediction`` (fc8, bias)   1x1     1       0    8
=====  ===========================  ======  ======  ===  ======

``logits`` flattens the ``prediction`` output to ``[B, 8]`` in float32. pool6 is a global
average over time (protocol §5: the original's bucketed pool sizes equal the fc6 width),
so any input of at least 100 frames (about 1.01 s) works. Convolutions keep their biases
beside BN (the original's are unknown; harmless) so a MatConvNet file maps one to one.
He-normal (fan-in) initialisation, zero biases; BN gamma 1, beta 0, epsilon 1e-5,
momentum 0.9 (MatConvNet's moment rate 0.1).

Options: ``width`` multiplies every channel count except the 8 outputs (the real
geometry is kept, so fc6's kernel height stays 9 over the 512 frequency rows);
``dither`` / ``crop`` configure the front end; ``synchronized`` uses synchronised BN
(several replicas computing the statistics of the global batch).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .. import emotions
from ..audio.frontend import MIN_BUCKET_FRAMES, Spectrogram, samples_for_frames
from .registry import register

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
#: (name, out channels, kernel (freq, time), stride, pad) of conv1..conv5, fc6, fc7.
CONVS = (
    ("conv1", 96, (7, 7), (2, 2), 1),
    ("conv2", 256, (5, 5), (2, 2), 1),
    ("conv3", 384, (3, 3), (1, 1), 1),
    ("conv4", 256, (3, 3), (1, 1), 1),
    ("conv5", 256, (3, 3), (1, 1), 1),
    ("fc6", 4096, (9, 1), (1, 1), 0),
    ("fc7", 1024, (1, 1), (1, 1), 0),
)
POOLS = {"conv1": ("mpool1", (3, 3), (2, 2)), "conv2": ("mpool2", (3, 3), (2, 2)),
         "conv5": ("mpool5", (5, 3), (3, 2))}
BN_LAYERS = tuple(name for name, *_ in CONVS)

_METADATA = {"sample_rate": 16000, "input": "waveform float32 [batch, samples] in [-1, 1]",
             "output": "8 logits, FER+ order", "embedding_layer": "fc7_relu",
             "min_samples": 400 + 99 * 160}
_DEFAULTS = {"width": 1.0, "dither": True, "crop": "none", "synchronized": False,
             "input_samples": None}


def channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


@keras.saving.register_keras_serializable(package="tf_cme")
class TimeMean(layers.Layer):
    """pool6: mean over the time axis of ``[B, 1, T, C]`` -> ``[B, 1, 1, C]``."""

    def call(self, x):
        return ops.mean(x, axis=2, keepdims=True)

    def compute_output_shape(self, s):
        return (s[0], s[1], 1, s[3])


def build_student(width: float = 1.0, dither: bool = True, crop: str = "none",
                  synchronized: bool = False, input_samples: int | None = None,
                  name: str = "emovoxceleb_student") -> keras.Model:
    """The student as a functional Keras model (see the module docstring)."""
    wave = keras.Input((input_samples,), name="waveform", dtype="float32")
    x = Spectrogram(dither=dither, crop=crop, name="spectrogram")(wave)
    for lname, cout, kernel, stride, pad in CONVS:
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"{lname}_pad")(x)
        x = layers.Conv2D(channels(cout, width), kernel, strides=stride, padding="valid",
                          kernel_initializer="he_normal", bias_initializer="zeros",
                          name=lname)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      synchronized=synchronized, name=f"{lname}_bn")(x)
        relu = "fc7_relu" if lname == "fc7" else f"{lname}_relu"
        x = layers.ReLU(name=relu)(x)
        if lname in POOLS:
            pname, size, pstride = POOLS[lname]
            x = layers.MaxPooling2D(size, strides=pstride, padding="valid", name=pname)(x)
        if lname == "fc6":
            x = TimeMean(name="pool6")(x)
    x = layers.Conv2D(emotions.NUM_CLASSES, 1, kernel_initializer="he_normal",
                      bias_initializer="zeros", dtype="float32", name="prediction")(x)
    logits = layers.Reshape((emotions.NUM_CLASSES,), dtype="float32", name="logits")(x)
    return keras.Model(wave, logits, name=name)


@register("emovoxceleb-student", kind="student", metadata=_METADATA, defaults=_DEFAULTS,
          description="VGGVox VGG-M/BN speech student on raw 16 kHz waveforms (protocol §5)")
def _build(width=1.0, dither=True, crop="none", synchronized=False, input_samples=None):
    return build_student(width=width, dither=dither, crop=crop, synchronized=synchronized,
                         input_samples=input_samples)


def options_of(model) -> dict:
    md = getattr(model, "cme_metadata", None) or {}
    return dict(md.get("options") or {})


def with_frontend(model, crop: str | None = None, dither: bool | None = None,
                  synchronized: bool | None = None, input_samples=...) -> keras.Model:
    """A student with the same weights as ``model`` and another front-end mode.

    Evaluation and export use ``crop="bucket", dither=False``. Options not given keep
    the model's own. The weights are copied (the two models do not share variables,
    so training one never changes the other).
    """
    spec = model.get_layer("spectrogram")
    opts = {**_DEFAULTS, **options_of(model)}
    conv1 = model.get_layer("conv1")
    opts["width"] = conv1.filters / 96.0 if "width" not in options_of(model) else opts["width"]
    opts["crop"] = spec.crop if crop is None else crop
    opts["dither"] = spec.dither if dither is None else bool(dither)
    if synchronized is not None:
        opts["synchronized"] = synchronized
    else:
        opts["synchronized"] = bool(model.get_layer("conv1_bn").synchronized)
    if input_samples is not ...:
        opts["input_samples"] = input_samples
    else:
        opts["input_samples"] = None
    new = build_student(**{k: opts[k] for k in _DEFAULTS})
    for layer in model.layers:
        if layer.weights:
            new.get_layer(layer.name).set_weights(layer.get_weights())
    md = dict(getattr(model, "cme_metadata", None) or
              {"name": "emovoxceleb-student", "kind": "student", "sample_rate": 16000,
               "class_names": list(emotions.FERPLUS), **_METADATA})
    md["options"] = {k: opts[k] for k in _DEFAULTS}
    new.cme_metadata = md
    return new


#: The front-end mode of the student outside training (evaluation, export, prediction): the
#: original evaluation (protocol §3.2): spectrogram and row normalisation over the whole clip,
#: then the centred crop to the largest 100-frame bucket (at most 1,000 frames); no dither.
SERVING_CROP = "bucket"
#: The shortest clip the serving student accepts: the smallest bucket, 100 frames = 16,240
#: samples (1.015 s at 16 kHz).
from ..audio.constants import MIN_SERVING_SAMPLES  # noqa: E402  (defined once there)
assert MIN_SERVING_SAMPLES == samples_for_frames(MIN_BUCKET_FRAMES)


def embedding_layer(model) -> str:
    """Name of the layer whose output is the model's embedding (metadata, else fc7)."""
    md = getattr(model, "cme_metadata", None) or {}
    return md.get("embedding_layer") or _METADATA["embedding_layer"]


def serving_student(model, embedding: bool = False) -> keras.Model:
    """The student as evaluation, export and prediction run it: the same weights as
    ``model`` with the front end in :data:`SERVING_CROP` mode and dither off.

    Waveform ``[B, samples]`` (at least :data:`MIN_SERVING_SAMPLES`) in; the 8 logits out,
    and with ``embedding=True`` also the embedding (:func:`embedding_layer`, fc7 after its
    ReLU) as a second output. The one wrapper used by
    :class:`tf_cme.evaluation.scoring.StudentScorer`, :class:`tf_cme.prediction.Predictor`
    and :mod:`tf_cme.serving.export`.
    """
    serving = with_frontend(model, crop=SERVING_CROP, dither=False)
    if not embedding:
        return serving
    emb = serving.get_layer(embedding_layer(model)).output
    return keras.Model(serving.inputs, [serving.outputs[0], emb], name="serving_student")


def num_weights(width: float = 1.0) -> int:
    """Kernel weights of conv1..fc8 (no biases, no BN): 16,618,080 at full width."""
    total, cin = 0, 1
    for _, cout, (kh, kw), _, _ in CONVS:
        c = channels(cout, width)
        total += kh * kw * cin * c
        cin = c
    return total + cin * emotions.NUM_CLASSES
