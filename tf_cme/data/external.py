"""External acted speech-emotion datasets -> ``external`` clip records (protocol §2.3).

Inputs, chosen with ``--layout`` (``auto`` picks the first that applies):

``manifest``
    ``ROOT/manifest.csv`` (or ``--manifest FILE``) with columns
    ``path,label,speaker[,split]``; ``path`` relative to the manifest's folder;
    ``label`` in any spelling :mod:`tf_cme.emotions` knows (``Angry``, ``happy``...).
``rml``
    the RML layout read by ``mcnDatasets/rml/getRmlImdb.m``:
    ``ROOT/<rml-1|rml-2>/<s1..s8>/[<language>/]<an|di|fe|ha|sa|su>*.avi`` (a
    ``.wav`` beside the ``.avi`` is preferred); split = the subset folder, speaker =
    ``sN``.
``enterface``
    the eNTERFACE'05 layout of ``getEnterfaceImdb.m``:
    ``ROOT/subject-N/<anger|disgust|fear|happiness|sadness|surprise>/.../*.avi``;
    subjects 1-30 -> ``train``, 31-44 -> ``val``; speaker = ``subject-N``.

The label is stored in the dataset's own taxonomy (manifest ``classes``: for rml
and enterface the 6 classes in the original readers' order; for a manifest, the
RML/eNTERFACE order when every label belongs to it, else the labels' order of
first appearance) and in FER+ order. Audio is resampled to 16 kHz: a deliberate
deviation (the original fed 22.05 / 48 kHz audio to 16 kHz framing, protocol §3.2).
"""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Literal

from .. import emotions, provenance
from ..utils import CmeError
from . import records, schema as schema_lib
from .emovox import audio_record

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".avi", ".mp4", ".mov", ".m4a")
RML_KEYS = {"an": "anger", "di": "disgust", "fe": "fear", "ha": "happiness", "sa": "sadness",
            "su": "surprise"}


@dataclasses.dataclass
class ExternalBuildConfig:
    # Each comment is also the --help text of build_records.py external's option.
    root: str = ""                  # dataset folder
    layout: Literal["auto", "manifest", "rml", "enterface"] = "auto"   # input convention (auto:
                                    # manifest.csv, else RML, else eNTERFACE)
    manifest: str = ""              # manifest CSV path,label,speaker[,split] ('': ROOT/manifest.csv)
    dataset: str = ""               # dataset name stored in the records ('': layout or folder name)
    max_seconds: float = 0.0        # cut clips at S seconds (0: keep whole clips)
    shard_size: int = 128           # clips per shard
    workers: int = 0                # worker processes (0: every available core; 1: no subprocess)


def _detect(root: Path, cfg: ExternalBuildConfig) -> str:
    if cfg.layout != "auto":
        return cfg.layout
    if cfg.manifest or (root / "manifest.csv").exists():
        return "manifest"
    if any((root / s).is_dir() for s in ("rml-1", "rml-2")):
        return "rml"
    if any(p.is_dir() and re.fullmatch(r"subject[- _]?\d+", p.name, re.I) for p in root.iterdir()):
        return "enterface"
    raise CmeError(f"{root}: no manifest.csv, and not an RML (rml-1/, rml-2/) or eNTERFACE "
                   f"(subject-N/) folder; pass --layout or --manifest")


def _media(folder: Path) -> list[Path]:
    """Audio sources under ``folder``: one per clip, a .wav preferred over its .avi."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTS)
    by_stem: dict[Path, Path] = {}
    for p in files:
        k = p.with_suffix("")
        if k not in by_stem or p.suffix.lower() == ".wav":
            by_stem[k] = p
    return sorted(by_stem.values())


_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _rows_manifest(root: Path, cfg) -> tuple[list[dict], Path]:
    mpath = Path(cfg.manifest) if cfg.manifest else root / "manifest.csv"
    if not mpath.exists():
        raise CmeError(f"{mpath}: no such file")
    with open(mpath, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label", "speaker") if c not in cols]
        if missing:
            raise CmeError(f"{mpath}: missing column(s) {', '.join(missing)} "
                           f"(need path,label,speaker[,split])")
        rows = []
        for n, r in enumerate(reader, 2):
            r = {k.strip(): (v or "").strip() for k, v in r.items() if k}
            if not r.get("path"):
                raise CmeError(f"{mpath}:{n}: empty path")
            try:
                name = emotions.canonical(r["label"])
            except ValueError as e:
                raise CmeError(f"{mpath}:{n}: {e}") from None
            split = r.get("split") or "all"
            if not _SPLIT_RE.match(split) or ".." in split:
                raise CmeError(f"{mpath}:{n}: bad split name {split!r} (it names a folder "
                               f"under --out: letters, digits, '_', '.', '-', no '..')")
            rows.append({"path": r["path"], "label_name": name, "speaker": r.get("speaker", ""),
                         "split": split, "raw_label": r["label"]})
    return rows, mpath.parent


def _rows_rml(root: Path):
    rows = []
    for p in _media(root):
        rel = p.relative_to(root)
        parts = rel.parts
        key = p.stem[:2].lower()
        if key not in RML_KEYS or len(parts) < 3:
            continue
        rows.append({"path": str(rel), "label_name": RML_KEYS[key], "speaker": parts[1],
                     "split": parts[0], "raw_label": key})
    return rows


def _rows_enterface(root: Path):
    rows = []
    names = set(emotions.ENTERFACE)
    for p in _media(root):
        rel = p.relative_to(root)
        parts = rel.parts
        if len(parts) < 3:
            continue
        emo = parts[1].lower()
        if emo not in names:
            continue
        m = re.search(r"(\d+)$", parts[0])
        n = int(m.group(1)) if m else 0
        rows.append({"path": str(rel), "label_name": emo, "speaker": parts[0],
                     "split": "train" if n <= 30 else "val", "raw_label": parts[1]})
    return rows


def plan(cfg: ExternalBuildConfig):
    if not cfg.root and not cfg.manifest:
        raise CmeError("external: give --root (dataset folder) or --manifest")
    root = Path(cfg.root) if cfg.root else Path(cfg.manifest).parent
    if not root.is_dir():
        raise CmeError(f"{root}: no such folder")
    layout = _detect(root, cfg)
    if layout == "manifest":
        rows, base = _rows_manifest(root, cfg)
        classes = (emotions.RML if all(r["label_name"] in emotions.RML for r in rows)
                   else tuple(dict.fromkeys(r["label_name"] for r in rows)))
        dataset = cfg.dataset or root.name
    elif layout in ("rml", "enterface"):
        rows = _rows_rml(root) if layout == "rml" else _rows_enterface(root)
        base = root
        classes = emotions.RML if layout == "rml" else emotions.ENTERFACE
        dataset = cfg.dataset or layout
    else:
        raise CmeError(f"unknown layout {layout!r} (auto, manifest, rml, enterface)")
    if not rows:
        raise CmeError(f"{root}: no clips found for layout {layout!r}")
    per_split: dict[str, list] = {}
    for r in rows:
        label = classes.index(r["label_name"])
        per_split.setdefault(r["split"], []).append(
            (r["path"], label, r["label_name"], emotions.FERPLUS.index(r["label_name"]),
             r["speaker"], r["split"]))
    tasks = []
    for split in sorted(per_split):
        tasks += records.chunk(split, per_split[split], cfg.shard_size)
    sources = {"listing": records.listing_sha256(base, [r["path"] for r in rows])}
    if layout == "manifest":
        mp = Path(cfg.manifest) if cfg.manifest else root / "manifest.csv"
        sources["manifest.csv"] = records.file_sha256(mp)
    options = {"base": str(base), "dataset": dataset, "max_seconds": cfg.max_seconds}
    extra = {"dataset": dataset, "layout": layout, "classes": list(classes),
             "ferplus_indices": [emotions.FERPLUS.index(c) for c in classes],
             "sample_rate": schema_lib.SAMPLE_RATE,
             "resampled": "audio resampled to 16 kHz (deliberate deviation from the original, "
                          "which did not resample; protocol §3.2)"}
    return tasks, sources, options, extra


def encode_clip(item, *, base: str, dataset: str, max_seconds: float = 0.0):
    path, label, label_name, ferplus_label, speaker, split = item
    audio = audio_record(Path(base) / path, max_seconds if max_seconds > 0 else None)
    if isinstance(audio[0], str):
        return records.Skip(audio[0], path, audio[1])
    pcm, n, rate = audio
    data = schema_lib.EXTERNAL_SCHEMA.encode({
        "path": path, "dataset": dataset, "label": label, "label_name": label_name,
        "ferplus_label": ferplus_label, "speaker": speaker, "split": split, "audio": pcm,
        "num_samples": n, "sample_rate": schema_lib.SAMPLE_RATE, "source_rate": rate,
        "frames": [], "frame_times": []})
    return records.Encoded(data, ferplus_label)


def build(out_dir, cfg: ExternalBuildConfig, overwrite: bool = False, part=None) -> dict:
    """Build the record set (``part``: one worker's share, :class:`records.Part`)."""
    tasks, sources, options, extra = plan(cfg)
    if provenance.synthetic_inputs(cfg.root, cfg.manifest):
        extra["synthetic"] = True
    return records.build(out_dir, schema_lib.EXTERNAL_SCHEMA, tasks,
                         encode_fn=encode_clip, options=options,
                         config=dataclasses.asdict(cfg), sources=sources, extra=extra,
                         workers=cfg.workers, overwrite=overwrite, desc="external", unit="clip",
                         executor="thread", part=part)
