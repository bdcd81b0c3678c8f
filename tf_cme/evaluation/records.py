"""Reading emovox record sets for evaluation (manifest checks, clips as NumPy dicts)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..utils import CmeError


def open_records(records: str | os.PathLike, schema: str = "emovox") -> dict:
    """The manifest of a record set, with clear errors for a missing folder or another schema."""
    from ..data import records as records_lib
    if not Path(records).is_dir():
        raise CmeError(f"{records}: no such record folder")
    return records_lib.read_manifest(records, expect_schema=schema)


def iterate_clips(records: str | os.PathLike) -> Iterator[dict]:
    """Emovox clips as NumPy dicts (``clips_dataset`` of the records pipeline)."""
    from ..data import pipelines
    yield from pipelines.clips_dataset(str(records)).as_numpy_iterator()


