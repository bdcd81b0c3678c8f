"""The run folder: everything a training or evaluation script writes.

Layout (ARCHITECTURE.md, "Runs")::

    RUN/config.json        the resolved config (tf_cme.config)
    RUN/model.keras        the model a later stage uses (teacher: best epoch on val;
                           student: the last mini-epoch), with tf-cme metadata inside
    RUN/checkpoints/       resumable training state
    RUN/tensorboard/       TensorBoard event files
    RUN/metrics.json       figures measured by the run
    RUN/figures/           PNG figures
    RUN/export/            SavedModels (TF Serving layout) written by export_model.py

A run folder is enough to resume, to evaluate and to export.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from . import config as config_lib
from .utils import CmeError, read_json, write_json


@dataclasses.dataclass(frozen=True)
class Run:
    path: Path

    @classmethod
    def create(cls, path: str | os.PathLike) -> "Run":
        run = cls(Path(path))
        for sub in (run.checkpoints, run.tensorboard, run.figures):
            sub.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        run = cls(Path(path))
        if not run.path.is_dir():
            raise CmeError(f"{run.path}: no such run folder")
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def export(self) -> Path:
        return self.path / "export"

    def save_config(self, cfg) -> Path:
        return config_lib.save(cfg, self.config_path)

    def config(self) -> dict:
        if not self.config_path.exists():
            raise CmeError(f"{self.path}: no config.json (not a tf-cme run folder?)")
        return read_json(self.config_path)

    def metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, **values) -> dict:
        """Merge ``values`` into metrics.json (atomically) and return the result."""
        data = self.metrics()
        data.update(values)
        write_json(self.metrics_path, data)
        return data

    def require_model(self) -> Path:
        if not self.model_path.exists():
            raise CmeError(
                f"{self.path}: no model.keras: the run has not finished training "
                f"(checkpoints: {len(list(self.checkpoints.glob('*')))} files)")
        return self.model_path
