"""The model registry: ``build_model(name, **options)``.

Each entry carries its metadata (kind, input size, channel means, sample rate,
class order) so that preprocessing can never silently mismatch the weights.
Entries register themselves with :func:`register` when their module is
imported; :data:`_MODULES` lists the modules that hold entries.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from .. import emotions

#: Modules that register entries when imported (added by each model family).
_MODULES: list[str] = [
    "tf_cme.models.resnet",    # resnet50-ferplus, senet50-ferplus
    "tf_cme.models.student",   # emovoxceleb-student
]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., Any]
    kind: str                              # "teacher" (faces) or "student" (audio)
    metadata: dict                         # JSON-able: input_size, mean, sample_rate, ...
    defaults: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    def describe(self, **options) -> dict:
        """Metadata for a model built with ``options``: stored with its weights."""
        opts = {**self.defaults, **options}
        md = {"name": self.name, "kind": self.kind, "options": opts,
              "class_names": list(emotions.FERPLUS), **self.metadata}
        for key in ("input_size", "mean", "sample_rate"):
            if key in opts:
                md[key] = opts[key]
        return md


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(name: str, *, kind: str, metadata: dict | None = None,
             defaults: dict | None = None, description: str = ""):
    """Decorator registering ``builder(**options) -> keras.Model`` under ``name``."""
    def wrap(builder):
        _REGISTRY[name] = ModelSpec(name, builder, kind, dict(metadata or {}),
                                    dict(defaults or {}), description)
        return builder
    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:      # a real missing dependency inside the module
                raise
    _loaded = True


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, **options):
    """Build registry entry ``name`` with ``options`` (over its defaults).

    The returned Keras model has the entry's metadata in ``model.cme_metadata``;
    :func:`tf_cme.models.io.save_model` stores it with the weights.
    """
    spec = get_spec(name)
    opts = {**spec.defaults, **options}
    model = spec.builder(**opts)
    model.cme_metadata = spec.describe(**options)
    return model
