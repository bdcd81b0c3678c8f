"""Where a model's weights came from, and the caveat a demo model carries (protocol §11).

A model's metadata (``.keras`` member, export metadata) holds ``provenance``:

- ``imported:<sha256>``: converted from a weights file (import-weights, import-student,
  ``weights fetch/import``), the sha256 of that file;
- ``trained:<sha256>``: trained on a record set, the digest of its ``manifest.json``
  (:func:`tf_cme.data.records.manifest_digest`);
- ``demo-synthetic``: trained on records built from the synthetic demo corpus. The corpus
  writes :data:`MARKER` into each of its folders; record builders that read from a folder
  holding it write ``"synthetic": true`` into their manifest, labelled records keep it,
  and the trainers turn it into this provenance.

:func:`caveat` is the one sentence every output carries for such a model (predict,
evaluate-student / evaluate-teacher, the report, the export metadata).
"""
from __future__ import annotations

import os
from pathlib import Path

#: file the demo corpus writes in each of its folders (its content says why)
MARKER = "SYNTHETIC"
DEMO = "demo-synthetic"
STUDENT_CAVEAT = "demo model: trained on synthetic voices; its labels mean nothing on real speech"
TEACHER_CAVEAT = "demo model: trained on synthetic faces; its labels mean nothing on real faces"


def imported(digest: str) -> str:
    return f"imported:{digest}"


def trained(manifest: dict, digest: str) -> str:
    """The provenance of a model trained on records with ``manifest`` (sha256 ``digest``)."""
    return DEMO if manifest.get("synthetic") else f"trained:{digest}"


def synthetic_inputs(*paths: str | os.PathLike | None) -> bool:
    """True when any input folder (or a file's folder) holds the demo corpus's marker."""
    for p in paths:
        if not p:
            continue
        p = Path(p)
        folder = p if p.is_dir() else p.parent
        if (folder / MARKER).is_file():
            return True
    return False


def is_demo(md: dict | None) -> bool:
    md = md or {}
    return md.get("provenance") == DEMO or bool(md.get("synthetic"))


def caveat(md: dict | None) -> str | None:
    """The demo caveat for a model with metadata ``md`` (None for any other model)."""
    if not is_demo(md):
        return None
    return TEACHER_CAVEAT if (md or {}).get("kind") == "teacher" else STUDENT_CAVEAT


def serving_note(md: dict | None) -> str:
    """What every response of an exported model carries in its ``provenance`` output:
    the provenance, then the demo caveat after ": " for a demo model
    (``"demo-synthetic: demo model: trained on synthetic voices; ..."``)."""
    info = model_info(md)
    return f"{info['provenance']}: {info['caveat']}" if info["caveat"] else info["provenance"]


def note_caveat(note: str | None) -> str | None:
    """The caveat inside a :func:`serving_note` (None when it carries none)."""
    if not note or not note.startswith(DEMO + ": "):
        return None
    return note[len(DEMO) + 2:]


def model_info(md: dict | None, source: str | None = None) -> dict:
    """``{"name", "source", "provenance", "caveat"}``: what outputs say about their model.
    A model without metadata (a .tflite file exported before tf-cme embedded it) has
    provenance "unknown"."""
    md = md or {}
    return {"name": md.get("name"), "source": source,
            "provenance": md.get("provenance") or "unknown", "caveat": caveat(md)}


def note(info: dict | None) -> str | None:
    """The one line a command prints about its model (``info``: :func:`model_info`'s
    dict): the demo caveat, or that its provenance is unknown (a .tflite file from an
    older tf-cme, a model built but never trained or imported); None for a model of
    known, non-demo provenance."""
    info = info or {}
    if info.get("caveat"):
        return info["caveat"]
    if info.get("provenance", "unknown") == "unknown":
        return (f"{info.get('source') or 'the model'}: provenance unknown: its metadata "
                f"does not say where its weights came from (a .tflite file exported by an "
                f"older tf-cme carries none: export it again with export_model.py --tflite)")
    return None
