"""Saving and loading models together with their tf-cme metadata.

A ``.keras`` file written by :func:`save_model` is an ordinary Keras archive with
one extra member, ``tf_cme_metadata.json``: the registry entry's metadata (name,
options, input size, channel means or sample rate, class order). Keras ignores
the extra member; :func:`load_model` reads it back into ``model.cme_metadata``.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ..utils import CmeError, atomic_path

METADATA_MEMBER = "tf_cme_metadata.json"


def save_model(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save ``model`` to ``path`` (``.keras``) atomically, with its metadata."""
    import keras
    path = Path(path)
    md = metadata if metadata is not None else getattr(model, "cme_metadata", None)
    if md is None:
        raise ValueError("model has no cme_metadata; build it with tf_cme.models.build_model")
    with atomic_path(path) as tmp:
        tmp_keras = tmp.with_name(tmp.name + ".keras")   # Keras insists on the suffix
        try:
            keras.saving.save_model(model, tmp_keras)
            with zipfile.ZipFile(tmp_keras, "a") as zf:
                zf.writestr(METADATA_MEMBER, json.dumps(md, indent=2, sort_keys=True))
            os.replace(tmp_keras, tmp)
        finally:
            if tmp_keras.exists():
                tmp_keras.unlink()
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if METADATA_MEMBER not in zf.namelist():
                raise CmeError(f"{path}: a Keras file without tf-cme metadata "
                               f"(not written by tf_cme.models.io.save_model)")
            return json.loads(zf.read(METADATA_MEMBER))
    except zipfile.BadZipFile as e:
        raise CmeError(f"{path}: not a .keras file ({e})") from None
    except FileNotFoundError:
        raise CmeError(f"{path}: no such model file") from None


def load_model(path: str | os.PathLike, compile: bool = False):
    """Load a ``.keras`` file written by :func:`save_model`; sets ``model.cme_metadata``."""
    import keras
    from .registry import _load_all
    _load_all()                      # registers every custom layer before deserialising
    md = read_metadata(path)
    model = keras.saving.load_model(path, compile=compile)
    model.cme_metadata = md
    return model


def input_size(model, default: int = 224) -> int:
    """A face model's square input size: its metadata's ``input_size`` (or the option it
    was built with), else its static input shape, else ``default``."""
    md = getattr(model, "cme_metadata", None) or {}
    size = md.get("input_size") or (md.get("options") or {}).get("input_size")
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not size:
        shape = model.inputs[0].shape
        size = shape[1]
    return int(size or default)
