"""Write small ``senet50-ferplus-logits.mat``-style files (tests and demos).

The published imdb (SPEC §2.2) holds ``images.{name, id, set, video, track, sp,
denseFrames, denseFramesWavIds}`` and ``wavLogits`` (a cell of ``F_i x 8``
single matrices). :func:`write_logits_mat` writes the same fields as MAT v5
(``scipy.io.savemat``) or as MAT v7.3 (HDF5 in MATLAB's layout: column-major
arrays stored transposed, chars as uint16, cells as object references into
``#refs#``), so both reading paths of :func:`tf_cme.data.emovox.load_imdb` are
exercised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_imdb(tracks: list[dict]) -> dict:
    """``tracks``: dicts with ``name`` (wav path), ``set``, ``video``, ``track``,
    ``sp``, ``logits`` [F, 8] and optionally ``frames`` (F relative jpg paths)."""
    names, frames, wav_ids = [], [], []
    for i, t in enumerate(tracks, 1):
        names.append(t["name"])
        for p in t.get("frames", []):
            frames.append(p)
            wav_ids.append(i)
    return {
        "images": {
            "name": names,
            "id": np.arange(1, len(tracks) + 1, dtype=np.float64),
            "set": np.array([t["set"] for t in tracks], dtype=np.float64),
            "video": [t["video"] for t in tracks],
            "track": np.array([float(t["track"]) for t in tracks]),
            "sp": np.array([t.get("sp", 1) for t in tracks], dtype=np.float64),
            "denseFrames": frames,
            "denseFramesWavIds": np.array(wav_ids, dtype=np.float64),
        },
        "wavLogits": [np.asarray(t["logits"], dtype=np.float32) for t in tracks],
    }


def _cell(items) -> np.ndarray:
    a = np.empty((1, len(items)), dtype=object)
    for i, x in enumerate(items):
        a[0, i] = x
    return a


def write_logits_mat(path, imdb: dict, version: str = "5") -> Path:
    path = Path(path)
    if version in ("5", "v5", "7"):
        import scipy.io
        images = dict(imdb["images"])
        for k in ("name", "video", "denseFrames"):
            images[k] = _cell(images[k])
        for k, v in list(images.items()):
            if isinstance(v, np.ndarray) and v.dtype != object:
                images[k] = v.reshape(1, -1)
        scipy.io.savemat(str(path), {"images": images, "wavLogits": _cell(imdb["wavLogits"])},
                         format="5", long_field_names=True)
        return path
    if version not in ("7.3", "v7.3"):
        raise ValueError(f"version must be '5' or '7.3', got {version!r}")
    import h5py
    with h5py.File(str(path), "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def new_ref_name():
            counter[0] += 1
            return f"r{counter[0]}"

        def write(group, name, value):
            if isinstance(value, dict):
                g = group.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for k, v in value.items():
                    write(g, k, v)
                return g
            if isinstance(value, str):
                data = np.array([ord(c) for c in value], dtype=np.uint16).reshape(-1, 1)
                if data.size == 0:
                    d = group.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
                    d.attrs["MATLAB_empty"] = np.uint8(1)
                else:
                    d = group.create_dataset(name, data=data)
                d.attrs["MATLAB_class"] = np.bytes_("char")
                return d
            if isinstance(value, list):
                rs = []
                for x in value:
                    rn = new_ref_name()
                    write(refs, rn, x)
                    rs.append(refs[rn].ref)
                d = group.create_dataset(name, data=np.array(rs, dtype=h5py.ref_dtype).reshape(-1, 1))
                d.attrs["MATLAB_class"] = np.bytes_("cell")
                return d
            a = np.asarray(value)
            cls = {"float64": "double", "float32": "single"}.get(str(a.dtype), "double")
            if a.size == 0:
                d = group.create_dataset(name, data=np.array(list(a.shape) or [0, 0], dtype=np.uint64))
                d.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                if a.ndim == 1:
                    a = a.reshape(1, -1)
                d = group.create_dataset(name, data=a.T)
            d.attrs["MATLAB_class"] = np.bytes_(cls)
            return d

        write(f, "images", imdb["images"])
        write(f, "wavLogits", list(imdb["wavLogits"]))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: tf-cme fixture HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        block = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
        fh.write(block.ljust(128, b"\x00"))
    return path
