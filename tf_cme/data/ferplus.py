"""FER2013 + FER+ -> ``ferplus`` records (protocol §2.1).

``fer2013.csv`` (``emotion,pixels,Usage``) and Microsoft's ``fer2013new.csv``
(``Usage,Image name,neutral,...,contempt,unknown,NF``) are joined row by row;
the FER+ votes are cleaned with one of three variants:

``cntk`` (default, ``getFerPlusImdb.m`` / ``fer_loader.py``)
    1. every vote count <= 1 is set to 0;
    2. with ``n`` the remaining total and ``m`` the maximum, the image is dropped
       when (i) any arg-max column is ``unknown`` or ``NF``, (ii) 3 or more columns
       tie at the maximum, or (iii) ties x m <= 0.5 n;
    3. hard label = first arg-max of the 10 cleaned columns (always an emotion);
    4. soft label = the 8 cleaned emotion votes / their sum.
``clean``
    raw votes; dropped when the plain first arg-max is ``unknown`` or ``NF``; 8 classes.
``full``
    raw votes, nothing dropped, label = the first arg-max of all 10 columns (8 =
    unknown, 9 = NF).

Bad input: mismatched row counts between the two files is an error naming both
files; so is a ``fer2013new.csv`` row whose ``Image name`` is not ``fer%07d.png`` of
its 0-based row index (an empty name is an NF row and is allowed) or whose Usage
differs from the ``fer2013.csv`` row's (the error names the first bad row: the
join is by row order, so a deleted and an appended row would otherwise silently
hand faces their neighbours' votes). A row whose pixels are not exactly 2,304
integers in 0..255 is skipped (``bad_pixels``); an unknown Usage is skipped
(``bad_usage``); a FER2013 emotion code outside 0..6 is skipped
(``bad_fer2013_emotion``); an all-zero vote row is skipped (``zero_votes``) in
every variant.
"""
from __future__ import annotations

import csv
import dataclasses
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from .. import emotions, provenance
from ..utils import CmeError
from . import records, schema as schema_lib

VARIANTS = ("cntk", "clean", "full")
NUM_PIXELS = schema_lib.FER_SIZE * schema_lib.FER_SIZE
#: FER2013 code (0..6) -> FER+ index.
FER2013_TO_FERPLUS = np.array(emotions.ferplus_indices("fer2013"), dtype=np.int64)

# drop reasons (manifest "skipped" keys)
DROP_UNKNOWN = "ferplus_argmax_unknown_or_nf"
DROP_TIES = "ferplus_3_or_more_tied_maxima"
DROP_WEAK = "ferplus_weak_majority"
BAD_PIXELS = "bad_pixels"
BAD_USAGE = "bad_usage"
USAGE_MISMATCH = "usage_mismatch"
BAD_VOTES = "bad_votes"
ZERO_VOTES = "zero_votes"
BAD_EMOTION = "bad_fer2013_emotion"


@dataclasses.dataclass
class FerplusBuildConfig:
    # Each comment is also the --help text of build_records.py ferplus's option.
    fer_csv: str = ""               # fer2013.csv (emotion,pixels,Usage)
    ferplus_csv: str = ""           # fer2013new.csv (Usage,Image name,neutral,...,contempt,unknown,NF),
                                    # aligned row by row with --fer-csv
    variant: Literal["cntk", "clean", "full"] = "cntk"   # vote cleaning (cntk: votes <= 1
                                    # zeroed, drop unknown/NF maxima, 3+ ties and weak majorities)
    shard_size: int = 4096          # input rows per shard
    workers: int = 0                # worker processes (0: every available core; 1: no subprocess)


def clean_votes(votes, variant: str = "cntk"):
    """Apply a protocol §2.1 cleaning variant to vote counts ``[N, 10]``.

    Returns ``(keep [N] bool, label [N] int64, cleaned [N, 10] float32,
    reason [N] object)`` where ``reason`` is '' for kept rows, else the drop reason.
    """
    if variant not in VARIANTS:
        raise CmeError(f"unknown FER+ variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    v = np.asarray(votes, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 10:
        raise ValueError(f"votes must be [N, 10], got {v.shape}")
    n_rows = v.shape[0]
    reason = np.full(n_rows, "", dtype=object)
    if variant == "cntk":
        v = np.where(v <= 1, 0.0, v)                      # 1. outlier votes
        total = v.sum(axis=1)
        m = v.max(axis=1)
        at_max = v == m[:, None]
        ties = at_max.sum(axis=1)
        bad_cols = at_max[:, 8:].any(axis=1)               # (i)
        many = ties >= 3                                   # (ii)
        weak = ties * m <= 0.5 * total                     # (iii)
        reason[weak] = DROP_WEAK
        reason[many] = DROP_TIES
        reason[bad_cols] = DROP_UNKNOWN                    # first failing rule wins
        label = np.argmax(v, axis=1)
    elif variant == "clean":
        label = np.argmax(v, axis=1)
        reason[label >= 8] = DROP_UNKNOWN
    else:  # full
        label = np.argmax(v, axis=1)
    reason[np.asarray(votes, dtype=np.float64).sum(axis=1) == 0] = ZERO_VOTES
    keep = reason == ""
    return keep, label.astype(np.int64), v.astype(np.float32), reason


def soft_labels(cleaned) -> np.ndarray:
    """The 8 emotion votes normalised to sum 1 (zero rows stay zero)."""
    e = np.asarray(cleaned, dtype=np.float64)[:, :8]
    s = e.sum(axis=1, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0).astype(np.float32)


def _read_csv(path: Path, required: list[str]) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise CmeError(f"{path}: no such file")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CmeError(f"{path}: unreadable CSV: {e}") from None
    if not rows:
        raise CmeError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise CmeError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    return header, [r for r in rows[1:] if r]


def plan(fer_csv, ferplus_csv, variant: str = "cntk", shard_size: int = 4096):
    """Read and join the CSVs, clean the votes; return (tasks, pre_skipped, sources)."""
    fer_csv, ferplus_csv = Path(fer_csv), Path(ferplus_csv)
    h1, r1 = _read_csv(fer_csv, ["emotion", "pixels", "Usage"])
    h2, r2 = _read_csv(ferplus_csv, ["Usage"] + list(emotions.FERPLUS_VOTE_COLUMNS))
    if len(r1) != len(r2):
        raise CmeError(f"row counts differ: {fer_csv} has {len(r1)} data rows, {ferplus_csv} "
                       f"has {len(r2)}; the two files must be aligned row by row")
    i_emo, i_pix, i_use = (h1.index(c) for c in ("emotion", "pixels", "Usage"))
    i_use2 = h2.index("Usage")
    vote_cols = [h2.index(c) for c in emotions.FERPLUS_VOTE_COLUMNS]
    pre: list[records.Skip] = []
    n = len(r1)
    votes = np.zeros((n, 10), dtype=np.float64)
    ok = np.ones(n, dtype=bool)
    for i, row in enumerate(r2):
        try:
            votes[i] = [float(row[c]) for c in vote_cols]
            if not np.all(np.isfinite(votes[i])) or np.any(votes[i] < 0):
                raise ValueError("negative or non-finite")
        except (ValueError, IndexError) as e:
            ok[i] = False
            pre.append(records.Skip(BAD_VOTES, f"{ferplus_csv.name} row {i + 1}", str(e)))
    i_name = h2.index("Image name") if "Image name" in h2 else None
    for i in range(n):
        u1 = r1[i][i_use].strip() if len(r1[i]) > i_use else ""
        u2 = r2[i][i_use2].strip() if len(r2[i]) > i_use2 else ""
        if u2 and u2 != u1:
            raise CmeError(f"{ferplus_csv}: data row {i + 1} has Usage {u2!r} but {fer_csv} row "
                           f"{i + 1} has {u1!r}; the two files must be aligned row by row")
        name = r2[i][i_name].strip() if i_name is not None and len(r2[i]) > i_name else ""
        if name and name != f"fer{i:07d}.png":
            raise CmeError(f"{ferplus_csv}: data row {i + 1} has Image name {name!r}, expected "
                           f"'fer{i:07d}.png' (or empty for an NF row); the two files must be "
                           f"aligned row by row")
    keep, label, cleaned, reason = clean_votes(votes, variant)
    soft = soft_labels(cleaned)
    per_split: dict[str, list] = {s: [] for s in schema_lib.FER_USAGE.values()}
    for i in range(n):
        if not ok[i]:
            continue
        row1 = r1[i]
        where = f"{fer_csv.name} row {i + 1}"
        if len(row1) <= max(i_emo, i_pix, i_use):
            pre.append(records.Skip(BAD_PIXELS, where, "missing columns"))
            continue
        usage = row1[i_use].strip()
        split = schema_lib.FER_USAGE.get(usage)
        if split is None:
            pre.append(records.Skip(BAD_USAGE, where, f"Usage {usage!r}"))
            continue
        if reason[i]:
            pre.append(records.Skip(reason[i], where))
            continue
        code = row1[i_emo].strip()
        if not (code.isascii() and code.isdigit() and 0 <= int(code) <= 6):
            pre.append(records.Skip(BAD_EMOTION, where, f"emotion {code!r} (need 0..6)"))
            continue
        fer_label = int(FER2013_TO_FERPLUS[int(code)])
        per_split[split].append((i, fer_label, row1[i_pix], split, int(label[i]),
                                 cleaned[i].tolist(), soft[i].tolist()))
    tasks = []
    for split, items in per_split.items():
        if items:
            tasks += records.chunk(split, items, shard_size)
    sources = {str(fer_csv.name): records.file_sha256(fer_csv),
               str(ferplus_csv.name): records.file_sha256(ferplus_csv)}
    return tasks, pre, sources


def parse_pixels(text: str) -> np.ndarray | None:
    """2,304 space-separated integers 0..255 -> uint8 [48, 48]; None when malformed."""
    tokens = text.split()
    if len(tokens) != NUM_PIXELS or not all(t.isascii() and t.isdigit() for t in tokens):
        return None                              # junk after the 2,304th value, '12abc', '1.5'
    a = np.asarray(tokens).astype(np.int64)
    if a.min() < 0 or a.max() > 255:
        return None
    return a.astype(np.uint8).reshape(schema_lib.FER_SIZE, schema_lib.FER_SIZE)


def png_bytes(img: np.ndarray) -> bytes:
    """A 2-D uint8 image as a PNG in the records' canonical form: 8-bit grey,
    not interlaced, one IDAT chunk, filter type 0 (None) on every row, zlib level 1.

    Any PNG reader decodes it; :func:`tf_cme.data.pipelines.decode_grey_pngs`
    also inflates a whole batch of them in one op (faster than a PNG decode per
    image) and falls back to ``tf.io.decode_png`` for any other PNG.
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim != 2:
        raise CmeError(f"png_bytes: expected a 2-D grey image, got shape {img.shape}")
    h, w = img.shape
    rows = np.zeros((h, w + 1), np.uint8)
    rows[:, 1:] = img
    return png_header(h, w) + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + PNG_IEND


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header(h: int, w: int) -> bytes:
    """PNG signature + IHDR of an 8-bit grey, non-interlaced ``h`` x ``w`` image (33 bytes)."""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))


#: Manifest ``image_encoding`` of records whose faces are all :func:`png_bytes` PNGs.
PNG_ENCODING = "png-canonical"

#: The IEND chunk (12 bytes) that ends every PNG.
PNG_IEND = _png_chunk(b"IEND", b"")


def encode_row(item) -> records.Encoded | records.Skip:
    """Worker: one joined CSV row -> a ``ferplus`` record."""
    row, fer_label, pixels, split, label, votes, soft = item
    img = parse_pixels(pixels)
    if img is None:
        n = len(pixels.split())
        return records.Skip(BAD_PIXELS, f"row {row + 1}",
                            f"{n} values (need {NUM_PIXELS} integers in 0..255)")
    data = schema_lib.FERPLUS_SCHEMA.encode({
        "image": png_bytes(img), "label": label, "votes": votes, "soft": soft,
        "fer2013_label": fer_label, "row": row, "split": split})
    return records.Encoded(data, label if label < 8 else None)


def build(out_dir, cfg: FerplusBuildConfig, overwrite: bool = False, part=None) -> dict:
    """Build the record set (``part``: one worker's share, :class:`records.Part`)."""
    if cfg.variant not in VARIANTS:
        raise CmeError(f"unknown FER+ variant {cfg.variant!r}; choose one of {', '.join(VARIANTS)}")
    tasks, pre, sources = plan(cfg.fer_csv, cfg.ferplus_csv, cfg.variant, cfg.shard_size)
    synthetic = ({"synthetic": True} if provenance.synthetic_inputs(cfg.fer_csv, cfg.ferplus_csv)
                 else {})
    return records.build(
        out_dir, schema_lib.FERPLUS_SCHEMA, tasks, encode_fn=encode_row,
        config=dataclasses.asdict(cfg), sources=sources, pre_skipped=pre,
        extra={"variant": cfg.variant, "image_size": [schema_lib.FER_SIZE, schema_lib.FER_SIZE, 1],
               "image_encoding": PNG_ENCODING,
               "classes": list(emotions.FERPLUS_VOTE_COLUMNS if cfg.variant == "full"
                               else emotions.FERPLUS), **synthetic},
        workers=cfg.workers, overwrite=overwrite, desc="ferplus", unit="row",
        key_extra=PNG_ENCODING, part=part)   # records of an older encoder are not resumed as these
