"""tf_cme.audio: audio decoding (:mod:`.io`), the one resampler (:mod:`.resample`) and the
student's spectrogram front end (:mod:`.frontend`).

Importing the package is cheap: submodules (and TensorFlow) load on first use;
``tf_cme.audio.Spectrogram`` is imported from :mod:`.frontend` when first asked for.
"""
from __future__ import annotations

__all__ = ["Spectrogram"]


def __getattr__(name: str):
    if name == "Spectrogram":
        from .frontend import Spectrogram
        return Spectrogram
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
