"""The export's config (no TensorFlow: ``export_model.py`` builds its flags from it before
TensorFlow's start-up). Each comment is also the --help text of the option."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ExportConfig:
    calibration: str | None = None     # calibration.json from benchmark_external.py (student
                                       # only; none: RUN/../external/calibration.json when it
                                       # exists) -> an extra calibrated_<dataset> signature
    serving_base: str = "/models"      # where DIR is mounted for the server, for the base_path
                                       # entries of models.config (as in the tensorflow/serving
                                       # container command of docs/serving.md)
