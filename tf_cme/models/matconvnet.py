"""Reading MatConvNet DagNN ``.mat`` files (fixtures in the same format are written by
:func:`tf_cme.demo.files.write_dagnn_mat`).

A DagNN saved with ``net.saveobj()`` holds the fields ``params`` (struct array:
``name``, ``value``, ...), ``layers`` (struct array: ``name``, ``type``, ``inputs``,
``outputs``, ``params``, ``block``) and ``meta``, either at the top level of the file
(``save(f, '-struct', 'net')``, the model-zoo layout) or inside one variable ``net``.

Both MAT versions are read: v5/v7 with :func:`scipy.io.loadmat`, v7.3 (HDF5) with
``h5py``. Parameter values keep MATLAB's layout (convolution filters are
``H x W x Cin x Cout``, the same as Keras); MATLAB drops trailing singleton dimensions,
so callers compare shapes with :func:`fit_shape`.

The reader is generic: it returns a name -> array dict and a list of layer dicts, and
is shared by the teacher importers and the student importer.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..matfile import h5_value
from ..utils import CmeError


@dataclasses.dataclass
class DagNN:
    """A MatConvNet DagNN: ``params`` (name -> array, file order), ``layers`` and ``meta``."""
    params: dict[str, np.ndarray]
    layers: list[dict]
    meta: dict
    path: Path | None = None

    def layer(self, name: str) -> dict:
        for layer in self.layers:
            if layer["name"] == name:
                return layer
        raise KeyError(name)


def fit_shape(value: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``value`` reshaped to ``shape`` if the two agree up to singleton dimensions
    (MATLAB drops trailing ones: a ``3x3x8x1`` filter is stored 3-D, a bias as ``Cx1``);
    None if they do not."""
    value = np.asarray(value)
    if tuple(value.shape) == tuple(shape):
        return value
    squeeze = lambda s: tuple(d for d in s if d != 1)
    if squeeze(value.shape) == squeeze(shape):
        return value.reshape(shape)
    return None


# --------------------------------------------------------------------------- v5 / v7

def _mat_str(x) -> str:
    a = np.asarray(x)
    if a.dtype.kind in "US":
        return "".join(str(s) for s in a.ravel())
    if a.dtype == object:
        return "".join(_mat_str(v) for v in a.ravel())
    return str(a)


def _mat_cellstr(x) -> list[str]:
    a = np.asarray(x)
    if a.dtype.kind in "US":
        return [str(s) for s in a.ravel()] if a.size else []
    if a.dtype == object:
        return [_mat_str(v) for v in a.ravel()]
    return []


def _mat_plain(x) -> Any:
    """Best-effort conversion of a loadmat value (struct/cell/array) to Python."""
    a = x
    if isinstance(a, np.ndarray):
        if a.dtype.names:
            recs = [{n: _mat_plain(r[n]) for n in a.dtype.names} for r in a.ravel()]
            return recs[0] if len(recs) == 1 else recs
        if a.dtype.kind in "US":
            return _mat_str(a)
        if a.dtype == object:
            items = [_mat_plain(v) for v in a.ravel()]
            return items
        if a.size == 1:
            return a.ravel()[0].item()
        return a
    return a


def _v5_read(path: Path) -> tuple[np.ndarray, np.ndarray | None, Any]:
    import scipy.io
    try:
        data = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=True)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds on garbage
        raise CmeError(f"{path}: not a readable MatConvNet .mat file "
                       f"({type(e).__name__}: {e})") from None
    root = data
    if "params" not in data and "net" in data:
        net = data["net"]
        if not (isinstance(net, np.ndarray) and net.dtype.names):
            raise CmeError(f"{path}: variable 'net' is not a struct")
        root = {n: net[n][0, 0] if net.size == 1 else net[n] for n in net.dtype.names}
    if "params" not in root:
        raise CmeError(f"{path}: no 'params' in the file (not a DagNN; found "
                       f"{', '.join(k for k in data if not k.startswith('__'))})")
    return root["params"], root.get("layers"), root.get("meta")


def _v5_params(path: Path, params) -> dict[str, np.ndarray]:
    if not (isinstance(params, np.ndarray) and params.dtype.names
            and "name" in params.dtype.names and "value" in params.dtype.names):
        raise CmeError(f"{path}: 'params' is not a struct array with name and value")
    out = {}
    for rec in params.ravel():
        out[_mat_str(rec["name"])] = np.asarray(rec["value"])
    return out


def _v5_layers(layers) -> list[dict]:
    if not (isinstance(layers, np.ndarray) and layers.dtype.names):
        return []
    out = []
    for rec in layers.ravel():
        names = layers.dtype.names
        block = _mat_plain(rec["block"]) if "block" in names else {}
        out.append({
            "name": _mat_str(rec["name"]) if "name" in names else "",
            "type": _mat_str(rec["type"]) if "type" in names else "",
            "inputs": _mat_cellstr(rec["inputs"]) if "inputs" in names else [],
            "outputs": _mat_cellstr(rec["outputs"]) if "outputs" in names else [],
            "params": _mat_cellstr(rec["params"]) if "params" in names else [],
            "block": block if isinstance(block, dict) else {},
        })
    return out


# --------------------------------------------------------------------------- v7.3 (HDF5)

def _h5_read(path: Path):
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CmeError(f"{path}: not a readable MAT v7.3 file ({e})") from None
    with f:
        root = f["net"] if "params" not in f and "net" in f else f
        if "params" not in root:
            raise CmeError(f"{path}: no 'params' in the file (not a DagNN)")
        params = h5_value(f, root["params"])
        layers = h5_value(f, root["layers"]) if "layers" in root else []
        meta = h5_value(f, root["meta"]) if "meta" in root else {}
    if isinstance(params, dict):
        params = [params]
    out = {}
    for p in params:
        out[str(p["name"])] = np.asarray(p["value"])
    lay = []
    for rec in (layers if isinstance(layers, list) else [layers]):
        if not isinstance(rec, dict):
            continue
        lay.append({"name": str(rec.get("name", "")), "type": str(rec.get("type", "")),
                    "inputs": _as_strlist(rec.get("inputs")),
                    "outputs": _as_strlist(rec.get("outputs")),
                    "params": _as_strlist(rec.get("params")),
                    "block": rec.get("block") if isinstance(rec.get("block"), dict) else {}})
    return out, lay, meta if isinstance(meta, dict) else {}


def _as_strlist(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    return [str(s) for s in v]


# --------------------------------------------------------------------------- public API

def read_dagnn(path: str | os.PathLike) -> DagNN:
    """Read a MatConvNet DagNN ``.mat`` (v5/v7 or v7.3); CmeError naming the file if not one."""
    path = Path(path)
    if not path.is_file():
        raise CmeError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(512 + 8)
    if head[512:520] == b"\x89HDF\r\n\x1a\n" or head[:8] == b"\x89HDF\r\n\x1a\n":
        params, layers, meta = _h5_read(path)
        return DagNN(params, layers, meta, path)
    raw_params, raw_layers, raw_meta = _v5_read(path)
    meta = _mat_plain(raw_meta) if raw_meta is not None else {}
    return DagNN(_v5_params(path, raw_params), _v5_layers(raw_layers),
                 meta if isinstance(meta, dict) else {}, path)
