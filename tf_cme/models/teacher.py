"""The teacher wrapper (protocol §4): any Keras face model with its class map and preprocessing.

One home for "a face-emotion teacher", used by labelling (:mod:`tf_cme.labelling`), the
online teacher of distillation (:class:`tf_cme.training.distiller.Distiller`), teacher
training and evaluation (:func:`forward`) and prediction:

- :func:`load_teacher`: a tf-cme teacher ``.keras`` (its metadata gives the class order
  and input size; the model preprocesses itself, protocol §4.1-4.4) or any other Keras
  ``.keras``/``.h5`` face model with its ``classes`` (mapped into FER+ order by name),
  ``input_size``, ``colour`` (``grey``/``rgb``) and ``scaling`` (``raw`` 0..255, ``unit``
  0..1, ``symmetric`` -1..1, ``uint8``: passed unchanged);
- :func:`as_teacher`: the same from a loaded Keras model or a :class:`Teacher`;
- :func:`forward`: a tf-cme teacher's logits for uint8 faces with an optional FER+
  augmentation affine, which its ``preprocess`` layer applies in its single resampling
  (protocol §4.2 steps 4-5);
- :func:`teacher_geometry`: the input size and mean a model's metadata gives.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import emotions
from ..utils import CmeError

__all__ = ["COLOURS", "PREPROCESSING_VERSION", "SCALINGS", "Teacher", "as_teacher", "forward",
           "load_teacher", "teacher_geometry"]

#: Version of the face preparation a tf-cme teacher sees (frame decoding, centre crop,
#: resize, the model's own resampling). Part of every cache key over teacher outputs
#: (label_faces.py's logits cache): bump it when any of those steps changes.
#: 2: the original's align-corners sampler after mean subtraction (issue 11.3).
PREPROCESSING_VERSION = 2

SCALINGS = ("raw", "unit", "symmetric", "uint8")
COLOURS = ("grey", "rgb")


@dataclasses.dataclass
class Teacher:
    """A loaded teacher: ``fn(uint8 [B,S,S,3]) -> scores [B, K]`` and how to read them."""
    model: object
    classes: tuple[str, ...]       # output class names (FER+ names after canonical())
    input_size: int
    colour: str
    scaling: str
    native: bool                   # a tf-cme teacher (preprocesses itself)
    info: dict

    def ferplus_logits(self, images):
        """In-graph: uint8 RGB ``[N, S, S, 3]`` -> float32 FER+ logits ``[N, 8]``.

        The model runs in inference mode (``training=False``); a foreign model's input
        is converted first (``colour``, ``scaling``) and its classes are mapped into
        FER+ order by name (classes it lacks get :data:`tf_cme.emotions.MISSING_LOGIT`),
        as :func:`tf_cme.labelling.label_records` does. Used by labelling and by the online teacher of
        :class:`tf_cme.training.distiller.Distiller`.
        """
        import tensorflow as tf
        x = images if self.native else _foreign_preprocess(self)(images)
        scores = tf.cast(self.model(x, training=False), tf.float32)
        if tuple(self.classes) == emotions.FERPLUS:
            return scores
        src = {c: i for i, c in enumerate(self.classes)}
        idx = [src.get(name, len(self.classes)) for name in emotions.FERPLUS]
        fill = tf.fill(tf.concat([tf.shape(scores)[:-1], [1]], 0), emotions.MISSING_LOGIT)
        return tf.gather(tf.concat([scores, fill], -1), idx, axis=-1)


def load_teacher(path, *, classes=None, input_size: int | None = None,
                 colour: str | None = None, scaling: str | None = None) -> Teacher:
    """Load a tf-cme teacher (metadata inside) or any Keras face model (options needed)."""
    import keras

    from . import io as model_io
    path = Path(path)
    if not path.is_file():
        raise CmeError(f"{path}: no such teacher model file")
    md = None
    if path.suffix == ".keras":
        try:
            md = model_io.read_metadata(path)
        except CmeError:
            md = None
    if md is not None and md.get("kind") == "teacher" and classes is None:
        model = model_io.load_model(path)
        size = int(input_size or md.get("input_size", 224))
        return Teacher(model, tuple(md.get("class_names", emotions.FERPLUS)), size, "rgb",
                       "uint8", True, {"name": md.get("name"), "options": md.get("options"),
                                       "metadata": md})
    if classes is None:
        raise CmeError(f"{path}: not a tf-cme teacher; give its class names (--teacher-classes "
                       f"NAME,NAME,...), --input-size, --colour and --scaling")
    names = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes)
             if c.strip()]
    try:
        fer = emotions.resolve_classes(names)
    except ValueError as e:
        raise CmeError(f"--teacher-classes: {e}") from None
    try:
        from .registry import _load_all
        _load_all()
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds on bad files
        raise CmeError(f"{path}: cannot load the Keras model ({type(e).__name__}: {e})") from None
    out_dim = model.output_shape[-1]
    if out_dim != len(fer):
        raise CmeError(f"{path}: the model has {out_dim} outputs but {len(fer)} class names "
                       f"were given")
    colour = colour or "grey"
    scaling = scaling or "unit"
    if colour not in COLOURS:
        raise CmeError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    if scaling not in SCALINGS:
        raise CmeError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    shape = model.input_shape
    size = int(input_size or (shape[1] if shape[1] else 0))
    if not size:
        raise CmeError(f"{path}: the model's input size is not fixed; give --input-size")
    return Teacher(model, fer, size, colour, scaling, False,
                   {"name": path.stem, "classes": names, "colour": colour, "scaling": scaling})


def as_teacher(obj) -> Teacher:
    """A :class:`Teacher` from a Teacher, a teacher file (:func:`load_teacher`) or a Keras
    model: a tf-cme teacher (``cme_metadata``: class order, input size) or any model that
    takes uint8 RGB faces, preprocesses itself and outputs the 8 FER+ logits. A model
    whose outputs cannot be read as 8 FER+ logits is a CmeError (a foreign model with
    another taxonomy needs :func:`load_teacher` with its class names)."""
    import os
    if isinstance(obj, Teacher):
        teacher = obj
    elif isinstance(obj, (str, os.PathLike)):
        teacher = load_teacher(obj)
    else:
        md = dict(getattr(obj, "cme_metadata", None) or {})
        name = md.get("name") or getattr(obj, "name", "teacher")
        if not hasattr(obj, "output_shape") or not callable(obj):
            raise CmeError(f"teacher: expected a Keras model, a tf_cme.models.teacher.Teacher or a "
                           f".keras file, got {type(obj).__name__}")
        if md.get("kind") not in (None, "teacher"):
            raise CmeError(f"teacher {name}: a {md.get('kind')} model, not a face teacher")
        try:
            classes = emotions.resolve_classes(md.get("class_names") or emotions.FERPLUS)
        except ValueError as e:
            raise CmeError(f"teacher {name}: {e}") from None
        size = md.get("input_size") or (obj.input_shape[1] if obj.input_shape else None)
        if not size:
            raise CmeError(f"teacher {name}: its input size is unknown (no tf-cme metadata "
                           f"and no fixed input shape)")
        teacher = Teacher(obj, classes, int(size), "rgb", "uint8", True,
                          {"name": name, "metadata": md})
    out = teacher.model.output_shape[-1]
    if out != len(teacher.classes):
        raise CmeError(f"teacher {teacher.info.get('name')}: {out} outputs cannot be mapped to "
                       f"the {emotions.NUM_CLASSES} FER+ classes (its class names: "
                       f"{', '.join(teacher.classes)}); give a tf-cme teacher or load it with "
                       f"tf_cme.models.teacher.load_teacher(path, classes=...)")
    return teacher


def _foreign_preprocess(teacher: Teacher):
    """uint8 RGB [B,S,S,3] -> the foreign model's input (TF ops)."""
    import tensorflow as tf
    from ..vision.faces import RGB2GRAY
    channels = teacher.model.input_shape[-1] or 3

    def fn(x):
        if teacher.colour == "grey":
            g = tf.round(tf.reduce_sum(tf.cast(x, tf.float32) * tf.constant(RGB2GRAY), -1,
                                       keepdims=True))
            x = tf.repeat(g, channels, axis=-1) if channels != 1 else g
            if teacher.scaling == "uint8":
                x = tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)
        if teacher.scaling == "uint8":
            return x
        x = tf.cast(x, tf.float32)
        if teacher.scaling == "unit":
            return x / 255.0
        if teacher.scaling == "symmetric":
            return x / 127.5 - 1.0
        return x
    return fn


def teacher_geometry(model) -> dict:
    """``{"input_size", "mean"}`` of a tf-cme teacher from its metadata (``cme_metadata``,
    the registry's), else from its ``preprocess`` layer."""
    md = dict(getattr(model, "cme_metadata", None) or {})
    out = {"input_size": md.get("input_size"), "mean": md.get("mean")}
    try:
        pre = model.get_layer("preprocess")
    except (ValueError, AttributeError):
        pre = None
    if pre is not None:
        out["input_size"] = out["input_size"] or pre.input_size
        out["mean"] = out["mean"] or list(pre.mean)
    return out


_BODIES: dict = {}


def forward(model, images, affine=None, training: bool = False):
    """Logits of a tf-cme teacher for uint8 ``images [B, H, W, C]``.

    ``affine`` (``[B, 2, 3]``, from :func:`tf_cme.data.pipelines.faces_dataset`'s
    ``y["affine"]``) is applied by the model's ``preprocess`` layer in its one
    align-corners resampling, after the mean subtraction (protocol §4.2): the rest of the
    network then runs on that input. ``affine=None`` is ``model(images)``."""
    if affine is None:
        return model(images, training=training)
    import keras
    key = id(model)
    if key not in _BODIES or _BODIES[key][0] is not model:
        try:
            pre = model.get_layer("preprocess")
        except ValueError:
            raise CmeError(f"teacher {model.name}: no 'preprocess' layer; the FER+ affine "
                           f"augmentation needs a tf-cme teacher") from None
        _BODIES[key] = (model, pre, keras.Model(pre.output, model.output,
                                                name=model.name + "_body"))
    _, pre, body = _BODIES[key]
    return body(pre(images, affine=affine), training=training)
