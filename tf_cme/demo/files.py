"""Fixture files in the REAL on-disk formats (tests, benchmarks and the demo).

Everything here invents data; nothing in the product imports it (only scripts, tests and
benchmarks do). The real readers it feeds are elsewhere: ``tf_cme.data`` (CSV, wav trees,
the EmoVoxCeleb ``.mat`` imdb) and ``tf_cme.models.matconvnet`` (DagNN ``.mat``).

- FER2013 / FER+ CSV pairs: :func:`write_fer_csvs`, :func:`make_fer_csvs`;
- a VoxCeleb-layout tree (wavs, face frames, ``splits.txt``): :func:`make_voxceleb_tree`;
- JPEG bytes: :func:`jpeg`;
- ``senet50-ferplus-logits.mat``-style imdbs (protocol §2.2): :func:`make_imdb`,
  :func:`write_logits_mat`;
- MatConvNet DagNN ``.mat`` files in the model-zoo layout: :func:`write_dagnn_mat`.

The ``.mat`` writers produce MAT v5 (``scipy.io.savemat``) or MAT v7.3 (HDF5 in MATLAB's
layout: arrays stored transposed, chars as uint16, cells and struct-array fields as object
references into ``#refs#``, a MATLAB header in the 512-byte user block), so both reading
paths of :mod:`tf_cme.matfile` are exercised. WAV files are written by the product's own
:func:`tf_cme.audio.io.write_wav`.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from .. import emotions
from ..audio.io import write_wav
from ..data.schema import FER_USAGE
from ..utils import atomic_path

#: fer2013new.csv's vote columns (the one spelling is tf_cme.emotions).
VOTE_COLUMNS = list(emotions.FERPLUS_VOTE_COLUMNS)
#: fer2013.csv's Usage values, in file order.
USAGES = list(FER_USAGE)


# ----------------------------------------------------------------------- FER2013 / FER+
def write_fer_csvs(dir, fer_rows: list, new_rows: list) -> tuple[Path, Path]:
    """Write ``fer2013.csv`` rows ``(emotion, pixels, usage)`` and ``fer2013new.csv``
    rows ``(usage, image name, 10 votes)``."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    a, b = d / "fer2013.csv", d / "fer2013new.csv"
    with open(a, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(fer_rows)
    with open(b, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name"] + VOTE_COLUMNS)
        w.writerows(new_rows)
    return a, b


def make_fer_csvs(dir, n: int, seed: int = 0, votes=None):
    """``n`` random faces; every row keeps under CNTK unless ``votes`` are given."""
    rng = np.random.default_rng(seed)
    fer, new = [], []
    for i in range(n):
        usage = USAGES[i % 3]
        pix = " ".join(map(str, rng.integers(0, 256, 2304)))
        fer.append([int(rng.integers(0, 7)), pix, usage])
        if votes is None:
            v = [0] * 10
            a, b = rng.choice(8, 2, replace=False)
            v[a], v[b] = 7, 3
        else:
            v = list(votes[i])
        new.append([usage, f"fer{i:07d}.png"] + v)
    return write_fer_csvs(dir, fer, new)


# ----------------------------------------------------------------------- images, trees
def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Baseline JPEG bytes of an RGB uint8 image (PIL/libjpeg, no optimisation)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def make_voxceleb_tree(root, n_tracks: int, seed: int = 0, seconds=(3.0, 5.0),
                       image: int = 64, sets=(1, 1, 2, 3)) -> list[tuple[int, str, str]]:
    """A VoxCeleb-layout tree: wav/, frames/ (one JPEG every 6 frames of 25 fps over
    the clip), splits.txt. Returns the split entries."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    entries = []
    for i in range(n_tracks):
        ident = f"Person_{i % 3:03d}"
        video = f"vid{i:04d}"
        utt = f"{i % 5 + 1:05d}"
        secs = float(rng.uniform(*seconds))
        n = int(secs * 16000)
        x = (rng.normal(size=n) * 3000).clip(-32768, 32767).astype(np.int16)
        wav_rel = f"{ident}/{video}/{utt}.wav"
        write_wav(root / "wav" / wav_rel, x, 16000)
        frames_rel = f"{ident}/1.6/{video}/{utt}"
        fdir = root / "frames" / frames_rel
        fdir.mkdir(parents=True, exist_ok=True)
        n_frames = int(secs * 25) // 6 + 1
        base = rng.integers(0, 256, (image, image, 3)).astype(np.uint8)
        for k in range(n_frames):
            img = np.roll(base, k, axis=1)
            (fdir / f"{6 * k:05d}.jpg").write_bytes(jpeg(img))
        entries.append((sets[i % len(sets)], wav_rel, frames_rel))
    (root / "splits.txt").write_text("".join(f"{s} {w} {f}\n" for s, w, f in entries))
    return entries


# ----------------------------------------------------------------------- .mat files
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


class StructArray(list):
    """A MATLAB struct array (a list of dicts with the same fields), for the writers;
    ``fields`` names them (needed when the array is empty)."""

    def __init__(self, records=(), fields=None):
        super().__init__(records)
        self.fields = list(fields) if fields is not None else (list(self[0]) if self else [])


def _cell(items) -> np.ndarray:
    a = np.empty((1, len(items)), dtype=object)
    for i, x in enumerate(items):
        a[0, i] = x
    return a


def _struct_array_v5(records: list[dict], fields: list[str]) -> np.ndarray:
    arr = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, rec in enumerate(records):
        for f in fields:
            arr[0, i][f] = rec.get(f, np.zeros((0, 0)))
    return arr


def write_mat73(path: str | os.PathLike, variables: dict) -> Path:
    """Write ``variables`` as a MAT v7.3 file (HDF5 in MATLAB's layout).

    Values: ``dict`` -> scalar struct, :class:`StructArray` -> struct array (each field a
    dataset of references), ``str`` -> char, ``list``/``tuple`` -> cell, anything else ->
    a numeric array (float32 -> single, else double). Written atomically.
    """
    import h5py
    path = Path(path)
    counter = [0]

    def ref_to(f, value):
        counter[0] += 1
        name = f"r{counter[0]}"
        put(f["#refs#"], name, value, f)
        return f["#refs#"][name].ref

    def put(group, name, value, f):
        if isinstance(value, StructArray):
            g = group.create_group(name)
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            for fld in value.fields:
                refs = np.array([ref_to(f, r[fld]) for r in value], dtype=h5py.ref_dtype)
                g.create_dataset(fld, data=refs.reshape(-1, 1) if len(value) else
                                 np.zeros((0, 1), dtype=h5py.ref_dtype))
            return
        if isinstance(value, dict):
            g = group.create_group(name)
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            for k, v in value.items():
                put(g, k, v, f)
            return
        if isinstance(value, str):
            codes = np.array([ord(c) for c in value], dtype=np.uint16).reshape(-1, 1)
            if codes.size == 0:
                d = group.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
                d.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                d = group.create_dataset(name, data=codes)
            d.attrs["MATLAB_class"] = np.bytes_("char")
            return
        if isinstance(value, (list, tuple)):
            if value:
                refs = np.array([ref_to(f, v) for v in value], dtype=h5py.ref_dtype)
                d = group.create_dataset(name, data=refs.reshape(-1, 1))
            else:
                d = group.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
                d.attrs["MATLAB_empty"] = np.uint8(1)
            d.attrs["MATLAB_class"] = np.bytes_("cell")
            return
        a = np.asarray(value)
        cls = "single" if a.dtype == np.float32 else "double"
        if a.size == 0:
            d = group.create_dataset(name, data=np.array(list(a.shape) or [0, 0], np.uint64))
            d.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            d = group.create_dataset(name, data=np.atleast_2d(a).T)
        d.attrs["MATLAB_class"] = np.bytes_(cls)

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            f.create_group("#refs#")
            for k, v in variables.items():
                put(f, k, v, f)
        with open(tmp, "r+b") as fh:            # the MATLAB header in the user block
            text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: tf-cme fixtures. HDF5 schema 1.00 ."
            fh.write((text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM").ljust(128, b"\x00"))
    return path


def write_logits_mat(path, imdb: dict, version: str = "5") -> Path:
    """Write an imdb from :func:`make_imdb` as ``senet50-ferplus-logits.mat`` would be."""
    path = Path(path)
    if version in ("7.3", "v7.3"):
        return write_mat73(path, {"images": dict(imdb["images"]),
                                  "wavLogits": list(imdb["wavLogits"])})
    if version not in ("5", "v5", "7"):
        raise ValueError(f"version must be '5' or '7.3', got {version!r}")
    import scipy.io
    images = dict(imdb["images"])
    for k in ("name", "video", "denseFrames"):
        images[k] = _cell(images[k])
    for k, v in list(images.items()):
        if isinstance(v, np.ndarray) and v.dtype != object:
            images[k] = v.reshape(1, -1)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            scipy.io.savemat(fh, {"images": images, "wavLogits": _cell(imdb["wavLogits"])},
                             format="5", long_field_names=True)
    return path


LAYER_FIELDS = ["name", "type", "inputs", "outputs", "params"]


def write_dagnn_mat(path: str | os.PathLike, params: dict, layers: list[dict] | None = None,
                    meta: dict | None = None, *, version: str = "5") -> Path:
    """Write a DagNN ``.mat`` in the model-zoo layout (top-level ``params``, ``layers``,
    ``meta``), read back by :func:`tf_cme.models.matconvnet.read_dagnn`. ``version`` is
    ``"5"`` (scipy) or ``"7.3"`` (HDF5). Values are stored as single precision."""
    path = Path(path)
    layers = layers or []
    meta = meta or {}
    precs = [{"name": k, "value": np.asarray(v, dtype=np.float32),
              "learningRate": np.float64(1), "weightDecay": np.float64(1),
              "trainMethod": "gradient"} for k, v in params.items()]
    lrecs = [{"name": l["name"], "type": l.get("type", ""),
              "inputs": list(l.get("inputs", [])), "outputs": list(l.get("outputs", [])),
              "params": list(l.get("params", [])), "block": dict(l.get("block", {}))}
             for l in layers]
    if version == "7.3":
        return write_mat73(path, {
            "params": StructArray(({"name": p["name"], "value": p["value"]} for p in precs),
                                  ["name", "value"]),
            "layers": StructArray(({k: l[k] for k in LAYER_FIELDS} for l in lrecs),
                                  LAYER_FIELDS),
            "meta": {}})
    if version != "5":
        raise ValueError(f"version must be '5' or '7.3', got {version!r}")
    import scipy.io
    for l in lrecs:
        for k in ("inputs", "outputs", "params"):
            l[k] = _cell(l[k])
    data = {
        "params": _struct_array_v5(precs, ["name", "value", "learningRate", "weightDecay",
                                           "trainMethod"]),
        "layers": _struct_array_v5(lrecs, ["name", "type", "inputs", "outputs", "params",
                                           "block"]),
        "meta": meta,
        "vars": _struct_array_v5([], ["name"]),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            scipy.io.savemat(fh, data, format="5", do_compression=False)
    return path
