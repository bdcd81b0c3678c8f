"""tf-cme: Emotion Recognition in Speech using Cross-Modal Transfer in the Wild, in TensorFlow/Keras."""
__version__ = "0.1.0"

# Before anything can import TensorFlow: the oneDNN workaround (TF >= 2.20 on AMD CPUs) and
# a quiet TensorFlow import on hosts without a GPU (tf_cme/runtime.py; cheap, no TF import).
from . import runtime as _runtime  # noqa: E402

_runtime.configure()


def predict(paths, model=None, **options):
    """``tf_cme.predict(paths, model=...)``: emotions in audio/video files, as
    ``tf-cme predict`` prints them (:func:`tf_cme.prediction.predict`)."""
    from .prediction import DEFAULT_MODEL
    from .prediction import predict as _predict
    return _predict(paths, DEFAULT_MODEL if model is None else model, **options)
