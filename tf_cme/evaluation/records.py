"""Reading emovox record sets for evaluation (manifest checks, clips as NumPy dicts)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from ..utils import CmeError


def open_records(records: str | os.PathLike, schema: str = "emovox") -> dict:
    """The manifest of a record set, with clear errors for a missing folder or another schema."""
    from ..data import records as records_lib
    if not Path(records).is_dir():
        raise CmeError(f"{records}: no such record folder")
    if schema == "emovox":
        _check_whole_clips(records)
    return records_lib.read_manifest(records, expect_schema=schema)


REBUILD = ("rebuild them: scripts/build_records.py emovox --root VOXCELEB_TREE [--logits-mat "
           "senet50-ferplus-logits.mat] --out DIR (then scripts/label_faces.py for records "
           "labelled by a teacher)")


def _check_whole_clips(records) -> None:
    """Evaluation (protocol §3.2, §7.1) normalises over the whole clip and crops its
    centre: records that kept only part of the audio are an error naming the rebuild."""
    from ..data import records as records_lib, schema as schema_lib
    path = Path(records) / records_lib.MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return                                  # read_manifest names the problem
    if m.get("schema") != "emovox":
        return
    version = m.get("schema_version")
    if isinstance(version, int) and version < schema_lib.EMOVOX_SCHEMA.version:
        raise CmeError(f"{records}: emovox records of schema version {version}, which keep "
                       f"only the first 19.9 s of each track; the evaluation needs whole "
                       f"clips (protocol §3.2): {REBUILD}")
    if m.get("audio_max_seconds"):
        raise CmeError(f"{records}: built with --max-seconds {m['audio_max_seconds']}, which "
                       f"cut the tracks; the evaluation needs whole clips (protocol §3.2): "
                       f"{REBUILD} without --max-seconds")


def iterate_clips(records: str | os.PathLike, skip_corrupt: bool = False) -> Iterator[dict]:
    """Emovox clips as NumPy dicts (``clips_dataset`` of the records pipeline; corrupt
    shards are an error naming them, or left out with ``skip_corrupt``)."""
    from ..data import pipelines
    ds = pipelines.clips_dataset(str(records), skip_corrupt=skip_corrupt).as_numpy_iterator()
    yield from pipelines.named_iteration(
        ds, str(records), None, pipelines.skipped_shards(str(records), None, skip_corrupt))


