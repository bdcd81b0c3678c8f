"""Importing teacher weights: MatConvNet DagNN ``.mat`` and pytorch-mcn ``.pth`` files.

Sources (protocol §4.1):

- MatConvNet DagNN: the released ``resnet50-ferplus.mat`` / ``senet50-ferplus.mat`` and
  the VGGFace2 bases ``resnet50_ft-dag.mat`` / ``senet50_ft-dag.mat`` (8631-way
  classifier: only the trunk is imported, ``base=True``). Parameters are
  ``<layer>_filter`` / ``<layer>_bias`` (or ``<layer>f`` / ``<layer>b``); batch norm has
  ``<bn>_mult``, ``<bn>_bias``, ``<bn>_moments`` (or ``m``/``b``/``x``), the moments'
  two columns being the mean and sigma = sqrt(variance + epsilon). Filters are
  ``H x W x Cin x Cout`` (Keras's layout).
- PyTorch state dicts of the pytorch-mcn conversions (``resnet50_ferplus_dag.pth``,
  ``senet50_ferplus_dag.pth``): ``<layer>.weight`` (``Cout x Cin x H x W``),
  ``<layer>.bias``, BN ``.weight .bias .running_mean .running_var``. Loaded with
  ``torch.load(..., weights_only=True)``; torch is imported only here.

Every parameter of the Keras model must be found with the right shape, and every
parameter of the file must be used: otherwise a :class:`CmeError` names the first
mismatching parameter and nothing is written.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..provenance import imported as provenance_imported
from ..utils import CmeError, file_sha256
from .matconvnet import fit_shape, read_dagnn

ARCHS = ("resnet50-ferplus", "senet50-ferplus")


def guess_arch(path: str | os.PathLike) -> str:
    """``senet50-ferplus`` for files named like senet/se-resnet, ``resnet50-ferplus`` for
    resnet; CmeError otherwise."""
    name = Path(path).name.lower()
    if "senet" in name or "se_resnet" in name or "se-resnet" in name:
        return "senet50-ferplus"
    if "resnet" in name:
        return "resnet50-ferplus"
    raise CmeError(f"{path}: cannot tell the architecture from the file name; pass --arch "
                   f"({' or '.join(ARCHS)})")


def _keras_params(model):
    """(layer, kind, [keras weight names]) for every Conv2D / BN layer, in order."""
    import keras
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out.append((layer, "conv"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append((layer, "bn"))
    return out


class _Source:
    """A name -> array dict with the lookup conventions of one file format."""

    def __init__(self, path, params: dict[str, np.ndarray], fmt: str):
        self.path, self.params, self.fmt = Path(path), params, fmt
        self.used: set[str] = set()

    def take(self, candidates: list[str], shape: tuple, transform=None) -> np.ndarray:
        for name in candidates:
            if name in self.params:
                value = np.asarray(self.params[name])
                if transform is not None:
                    value = transform(value)
                fitted = fit_shape(value, shape)
                if fitted is None:
                    raise CmeError(
                        f"{self.path}: parameter {name!r} has shape {tuple(value.shape)}, "
                        f"the model expects {tuple(shape)} (wrong architecture, width or "
                        f"class count?)")
                self.used.add(name)
                return fitted.astype(np.float32)
        raise CmeError(f"{self.path}: missing parameter {candidates[0]!r} (layer names do "
                       f"not match the model; wrong architecture?)")


def _conv_mat(src: _Source, layer, k_shape, b_shape):
    n = layer.name
    w = [src.take([f"{n}_filter", f"{n}f"], k_shape)]
    if b_shape is not None:
        w.append(src.take([f"{n}_bias", f"{n}b"], b_shape))
    return w


def _bn_mat(src: _Source, layer, c):
    n = layer.name
    gamma = src.take([f"{n}_mult", f"{n}m"], (c,))
    beta = src.take([f"{n}_bias", f"{n}b"], (c,))
    moments = src.take([f"{n}_moments", f"{n}x"], (c, 2))
    mean = moments[:, 0]
    sigma = moments[:, 1].astype(np.float64)
    var = (sigma * sigma - layer.epsilon).astype(np.float32)
    return [gamma, beta, mean, var]


def _conv_pth(src: _Source, layer, k_shape, b_shape):
    n = layer.name
    cout, cin, kh, kw = k_shape[3], k_shape[2], k_shape[0], k_shape[1]
    w = [src.take([f"{n}.weight"], (cout, cin, kh, kw)).transpose(2, 3, 1, 0)]
    if b_shape is not None:
        w.append(src.take([f"{n}.bias"], b_shape))
    return w


def _bn_pth(src: _Source, layer, c):
    n = layer.name
    src.used.add(f"{n}.num_batches_tracked")
    return [src.take([f"{n}.weight"], (c,)), src.take([f"{n}.bias"], (c,)),
            src.take([f"{n}.running_mean"], (c,)), src.take([f"{n}.running_var"], (c,))]


def load_params(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Read a weights file: ``(name -> array, "matconvnet" | "pytorch")``."""
    path = Path(path)
    if not path.is_file():
        raise CmeError(f"{path}: no such file")
    if path.suffix.lower() == ".mat":
        return read_dagnn(path).params, "matconvnet"
    if path.suffix.lower() in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError:
            raise CmeError("importing .pth files needs PyTorch (pip install 'tf-cme[bench]' "
                           "or torch)") from None
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds
            raise CmeError(f"{path}: not a readable PyTorch state dict ({e})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise CmeError(f"{path}: expected a state dict, got {type(sd).__name__}")
        return {k: v.detach().cpu().numpy() for k, v in sd.items()}, "pytorch"
    raise CmeError(f"{path}: unknown weights format (expected .mat or .pth)")


def assign_weights(model, params: dict[str, np.ndarray], fmt: str, *, path="weights",
                   base: bool = False) -> dict:
    """Copy ``params`` into ``model`` (built by the registry). Checks every name and shape
    before assigning anything. ``base``: the file is a VGGFace2 base (8631-way
    classifier), whose classifier is skipped and left initialised. Returns a summary."""
    src = _Source(path, params, fmt)
    conv_fn, bn_fn = (_conv_mat, _bn_mat) if fmt == "matconvnet" else (_conv_pth, _bn_pth)
    plan = []
    skipped = []
    for layer, kind in _keras_params(model):
        if kind == "conv":
            k_shape = tuple(layer.kernel.shape)
            b_shape = (k_shape[-1],) if layer.use_bias else None
            if layer.name == "classifier" and base:
                skipped.append(layer.name)
                continue
            if layer.name == "classifier":
                _check_classifier(src, layer, k_shape, fmt)
            plan.append((layer, conv_fn(src, layer, k_shape, b_shape)))
        else:
            plan.append((layer, bn_fn(src, layer, layer.gamma.shape[0])))
    ignore = set()
    if base:
        ignore = {k for k in params if k.startswith("classifier")}
    unused = [k for k in params if k not in src.used and k not in ignore]
    if unused:
        raise CmeError(f"{path}: unexpected parameter {unused[0]!r} (not in the model; "
                       f"{len(unused)} unused in all: wrong architecture?)")
    for layer, weights in plan:
        layer.set_weights(weights)
    return {"assigned_layers": len(plan), "skipped_layers": skipped,
            "parameters": len(src.used)}


def _check_classifier(src: _Source, layer, k_shape, fmt):
    names = (["classifier_filter", "classifierf"] if fmt == "matconvnet"
             else ["classifier.weight"])
    for n in names:
        if n in src.params:
            v = np.asarray(src.params[n])
            if fmt == "matconvnet":   # H x W x Cin x K (MATLAB drops a trailing K = 1)
                classes = v.shape[3] if v.ndim == 4 else 1
            else:                     # K x Cin x H x W
                classes = v.shape[0]
            if classes != k_shape[-1]:
                raise CmeError(
                    f"{src.path}: parameter {n!r} has {classes} classes, the model has "
                    f"{k_shape[-1]} (a VGGFace2 base? import it with --base to take the "
                    f"trunk only)")


def sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file (tf_cme.utils.file_sha256)."""
    return file_sha256(path)


STEM = "conv1_7x7_s2"     # the stem convolution: 64 filters at width 1


def infer_width(params: dict[str, np.ndarray], fmt: str, path="weights") -> float:
    """The channel multiplier of a teacher file: its stem's filter count / 64 (1.0 for the
    released weights)."""
    names = ([f"{STEM}_filter", f"{STEM}f"] if fmt == "matconvnet" else [f"{STEM}.weight"])
    for n in names:
        if n in params:
            v = np.asarray(params[n])
            cout = (v.shape[3] if v.ndim == 4 else 1) if fmt == "matconvnet" else v.shape[0]
            return cout / 64.0
    raise CmeError(f"{path}: missing parameter {names[0]!r} (not a ResNet-50 / SE-ResNet-50 "
                   f"teacher?)")


def import_weights(src: str | os.PathLike, out: str | os.PathLike, *, arch: str | None = None,
                   base: bool = False, width: float | None = 1.0, input_size: int = 224,
                   dropout: float = 0.5, extra_metadata: dict | None = None):
    """Import a ``.mat`` / ``.pth`` teacher into a registry model and save it to ``out``
    (``.keras`` with metadata). ``width=None`` reads the width from the file's stem.
    ``extra_metadata`` is merged into the saved metadata. Returns the model. Nothing is
    written on error. The metadata's ``provenance`` is ``imported:<sha256 of src>``."""
    from .io import save_model
    from .registry import build_model
    arch = arch or guess_arch(src)
    if arch not in ARCHS:
        raise CmeError(f"unknown teacher architecture {arch!r} (one of {', '.join(ARCHS)})")
    params, fmt = load_params(src)
    if width is None:
        width = infer_width(params, fmt, src)
    model = build_model(arch, width=width, input_size=input_size, dropout=dropout)
    summary = assign_weights(model, params, fmt, path=src, base=base)
    md = dict(model.cme_metadata)
    digest = sha256(src)
    md["imported_from"] = {"file": Path(src).name, "format": fmt, "sha256": digest,
                           "base": bool(base), **summary}
    md["provenance"] = provenance_imported(digest)
    md.update(extra_metadata or {})
    model.cme_metadata = md
    save_model(model, out)
    return model
