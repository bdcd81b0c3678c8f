"""MATLAB ``.mat`` reading shared by the EmoVoxCeleb imdb reader (:mod:`tf_cme.data.emovox`)
and the MatConvNet DagNN reader (:mod:`tf_cme.models.matconvnet`).

MAT v5/v7 files are read with :func:`scipy.io.loadmat` by the callers (their layouts
differ); this module holds the one MAT v7.3 (HDF5) decoder, :func:`h5_value`, which turns
MATLAB's HDF5 layout into Python values:

- a scalar struct (a group) -> ``dict``; a struct array (a group whose fields are datasets
  of object references) -> ``list`` of ``dict``;
- a cell (``MATLAB_class`` "cell", a dataset of references into ``#refs#``) -> ``list``, in
  MATLAB's column-major element order; an empty cell -> ``[]``;
- char (uint16 codes) -> ``str``; an empty char -> ``""``;
- numeric arrays -> ``numpy`` arrays, transposed back to MATLAB's row/column order (HDF5
  stores them column-major); an empty numeric array -> a 0-length array.
"""
from __future__ import annotations

import numpy as np


def _cls(obj) -> str:
    cls = obj.attrs.get("MATLAB_class", b"")
    return cls.decode() if isinstance(cls, bytes) else str(cls)


def h5_value(f, obj):
    """The Python value of the MAT v7.3 object ``obj`` of the open ``h5py.File`` ``f``."""
    import h5py
    if isinstance(obj, h5py.Group):
        fields = [k for k in obj.keys() if not k.startswith("#")]
        if not fields:
            return {}
        first = obj[fields[0]]
        is_array = (isinstance(first, h5py.Dataset) and first.dtype == h5py.ref_dtype
                    and _cls(first) == ""
                    and all(isinstance(obj[k], h5py.Dataset) for k in fields))
        if is_array:      # struct array: every field a dataset of references
            n = obj[fields[0]].size
            cols = {k: [h5_value(f, f[r]) for r in obj[k][()].ravel(order="F")]
                    for k in fields}
            return [{k: cols[k][i] for k in fields} for i in range(n)]
        return {k: h5_value(f, obj[k]) for k in fields}
    cls = _cls(obj)
    if obj.attrs.get("MATLAB_empty", 0):
        return "" if cls == "char" else [] if cls == "cell" else np.zeros((0,))
    data = obj[()]
    if cls == "cell" or obj.dtype == h5py.ref_dtype:
        return [h5_value(f, f[r]) for r in np.asarray(data).T.ravel(order="C")]
    if cls == "char":
        return "".join(chr(int(c)) for c in np.asarray(data).T.ravel())
    arr = np.asarray(data)
    return arr.T if arr.ndim > 1 else arr


def read_mat73(path) -> dict:
    """Every top-level variable of a MAT v7.3 file, decoded by :func:`h5_value`."""
    import h5py
    with h5py.File(str(path), "r") as f:
        return {k: h5_value(f, f[k]) for k in f.keys() if not k.startswith("#")}
