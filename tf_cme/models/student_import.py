"""Importing the released student ``emovoxceleb-student.mat`` (MatConvNet DagNN, protocol §5).

The file is read with the generic reader :func:`tf_cme.models.matconvnet.read_dagnn`.
Parameters are matched to the Keras student in two ways:

1. by the file's layer list, when it has one: its ``dagnn.Conv`` layers in order are
   conv1..conv5, fc6, fc7 and fc8 (``prediction``), each with its ``params``
   (filter[, bias]); its ``dagnn.BatchNorm`` layers in order follow conv1..conv5, fc6
   and fc7, each with (mult, bias, moments);
2. otherwise by name: convolutions ``<layer>_filter`` / ``<layer>f`` (``fc8`` or
   ``prediction`` for the classifier), biases ``<layer>_bias`` / ``<layer>b``; BN
   ``<layer>_bn_mult`` / ``bn<i>m`` (VGGVox naming, i = 1..7), ``_bias`` / ``b``,
   ``_moments`` / ``x``.

BN moments are ``[C, 2]``: the mean and sigma = sqrt(variance + epsilon), as in the
teacher importers; Keras gets ``variance = sigma^2 - epsilon``. A file without any BN
parameter (BN folded into the convolutions, as the public VGGVox identification
model) gets identity BN layers (gamma 1, beta 0, mean 0, variance 1 - epsilon). A
missing convolution bias is zero. Every parameter of the file must be used and every
shape must match; otherwise a CmeError names the parameter and nothing is written.
The width is read from conv1's filter count (96 at full width).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..utils import CmeError
from ..provenance import imported as provenance_imported
from ..utils import file_sha256 as sha256
from .matconvnet import DagNN, fit_shape, read_dagnn

CONV_ORDER = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "prediction")
BN_ORDER = ("conv1_bn", "conv2_bn", "conv3_bn", "conv4_bn", "conv5_bn", "fc6_bn", "fc7_bn")


def _take(net: DagNN, used: set, name: str, shape) -> np.ndarray:
    if name not in net.params:
        raise CmeError(f"{net.path}: missing parameter {name!r}")
    value = np.asarray(net.params[name])
    fitted = fit_shape(value, tuple(shape))
    if fitted is None:
        raise CmeError(f"{net.path}: parameter {name!r} has shape {tuple(value.shape)}, the "
                       f"student expects {tuple(shape)} (wrong width or not the student?)")
    used.add(name)
    return fitted.astype(np.float32)


def _first(net: DagNN, names) -> str | None:
    for n in names:
        if n in net.params:
            return n
    return None


def _names_from_layers(net: DagNN):
    convs = [l for l in net.layers if l.get("type", "").endswith("Conv")]
    bns = [l for l in net.layers if l.get("type", "").endswith("BatchNorm")]
    if len(convs) != len(CONV_ORDER):
        raise CmeError(f"{net.path}: {len(convs)} convolution layers, the student has "
                       f"{len(CONV_ORDER)} (conv1-5, fc6, fc7, fc8)")
    if bns and len(bns) != len(BN_ORDER):
        raise CmeError(f"{net.path}: {len(bns)} batch-norm layers, the student has "
                       f"{len(BN_ORDER)} (after conv1-5, fc6, fc7) or none (folded)")
    conv = {k: list(l["params"]) for k, l in zip(CONV_ORDER, convs)}
    bn = {k: list(l["params"]) for k, l in zip(BN_ORDER, bns)}
    return conv, bn


def _names_by_convention(net: DagNN):
    conv, bn = {}, {}
    for i, k in enumerate(CONV_ORDER):
        aliases = [k] + (["fc8"] if k == "prediction" else [])
        f = _first(net, [f"{a}{s}" for a in aliases for s in ("_filter", "f")])
        if f is None:
            raise CmeError(f"{net.path}: missing parameter {k}_filter (or {k}f): not the "
                           f"student's layer names")
        b = _first(net, [f"{a}{s}" for a in aliases for s in ("_bias", "b")])
        conv[k] = [f] + ([b] if b else [])
    for i, k in enumerate(BN_ORDER, start=1):
        stems = [k, f"bn{i}", f"{k[:-3]}bn"]
        names = [_first(net, [f"{s}{suffix}" for s in stems for suffix in sfx])
                 for sfx in (("_mult", "m"), ("_bias", "b"), ("_moments", "x"))]
        if any(n is not None for n in names):
            if any(n is None for n in names):
                raise CmeError(f"{net.path}: incomplete batch norm for {k}: "
                               f"{[n for n in names if n]}")
            bn[k] = names
    if bn and len(bn) != len(BN_ORDER):
        missing = [k for k in BN_ORDER if k not in bn]
        raise CmeError(f"{net.path}: no batch-norm parameters for {missing[0]}")
    return conv, bn


def load_student_weights(model, net: DagNN) -> dict:
    """Assign the DagNN's parameters to a built Keras student; returns a summary."""
    conv_names, bn_names = (_names_from_layers(net) if net.layers
                            else _names_by_convention(net))
    used: set = set()
    assign = {}
    for k in CONV_ORDER:
        layer = model.get_layer(k)
        kshape, bshape = tuple(layer.kernel.shape), tuple(layer.bias.shape)
        names = conv_names[k]
        w = [_take(net, used, names[0], kshape)]
        w.append(_take(net, used, names[1], bshape) if len(names) > 1
                 else np.zeros(bshape, np.float32))
        assign[k] = w
    folded = not bn_names
    for k in BN_ORDER:
        layer = model.get_layer(k)
        c = int(layer.gamma.shape[0])
        if folded:
            assign[k] = [np.ones(c, np.float32), np.zeros(c, np.float32),
                         np.zeros(c, np.float32), np.full(c, 1.0 - layer.epsilon, np.float32)]
            continue
        m, b, x = bn_names[k]
        gamma = _take(net, used, m, (c,))
        beta = _take(net, used, b, (c,))
        moments = _take(net, used, x, (c, 2))
        sigma = moments[:, 1].astype(np.float64)
        var = np.maximum(sigma * sigma - layer.epsilon, 0.0).astype(np.float32)
        assign[k] = [gamma, beta, moments[:, 0], var]
    unused = [n for n in net.params if n not in used]
    if unused:
        raise CmeError(f"{net.path}: parameter {unused[0]!r} is not used by the student "
                       f"({len(unused)} unused): not the student's architecture?")
    for k, w in assign.items():
        model.get_layer(k).set_weights(w)
    return {"parameters": len(used), "bn_folded": folded}


def import_student(path: str | os.PathLike, out: str | os.PathLike | None = None, *,
                   dither: bool = True, crop: str = "none", extra_metadata: dict | None = None):
    """Read ``emovoxceleb-student.mat`` into the Keras student (saved to ``out`` if given).
    The metadata's ``provenance`` is ``imported:<sha256 of the file>``; ``extra_metadata``
    is merged into it."""
    from . import build_model
    from .io import save_model
    path = Path(path)
    net = read_dagnn(path)
    f1 = _first(net, ["conv1_filter", "conv1f"])
    if net.layers:
        convs = [l for l in net.layers if l.get("type", "").endswith("Conv")]
        f1 = convs[0]["params"][0] if convs and convs[0]["params"] else f1
    if f1 is None or f1 not in net.params:
        raise CmeError(f"{path}: no conv1 filter: not the student")
    c1 = np.asarray(net.params[f1])
    cout = int(c1.shape[3]) if c1.ndim == 4 else 1
    width = cout / 96.0
    model = build_model("emovoxceleb-student", width=width, dither=dither, crop=crop)
    info = load_student_weights(model, net)
    digest = sha256(path)
    model.cme_metadata["imported_from"] = {"file": path.name, "format": "matconvnet",
                                           "sha256": digest, **info}
    model.cme_metadata["provenance"] = provenance_imported(digest)
    model.cme_metadata.update(extra_metadata or {})
    if out is not None:
        save_model(model, out)
    return model
