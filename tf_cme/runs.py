"""The run folder: everything a training or evaluation script writes.

Layout (ARCHITECTURE.md, "Runs")::

    RUN/config.json        the resolved config (tf_cme.config)
    RUN/resumes.jsonl      one line per start or resume: time, what changed (allowed keys)
    RUN/model.keras        the model a later stage uses (teacher: best epoch on val;
                           student: the last mini-epoch), with tf-cme metadata inside
    RUN/checkpoints/       resumable training state (student: the last two mini-epochs
                           and those of keep_epochs)
    RUN/epochs/            student models of kept mini-epochs (model-<e>.keras, --epoch)
    RUN/tensorboard/       TensorBoard event files
    RUN/metrics.json       figures measured by the run
    RUN/figures/           PNG figures
    RUN/export/            SavedModels (TF Serving layout) written by export_model.py

A run folder is enough to resume, to evaluate and to export.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
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
        """``RUN/model.keras`` (a student's kept mini-epoch: :func:`tf_cme.training.student.
        run_model`)."""
        if not self.model_path.exists():
            raise CmeError(
                f"{self.path}: no model.keras: the run has not finished training "
                f"(checkpoints: {len(list(self.checkpoints.glob('*')))} files)")
        return self.model_path

    @property
    def resumes_path(self) -> Path:
        return self.path / "resumes.jsonl"

    def start_or_resume(self, config: dict, *, sources: dict | None = None,
                        may_change: frozenset | set = frozenset(), started: bool,
                        override: bool = False) -> dict:
        """Check a run's resolved config against the one it was started with, then record it.

        ``config`` is the whole resolved config (``config.to_dict(cfg)``); ``sources`` names
        what the run reads besides (e.g. ``{"records": manifest_digest, "teacher": sha256}``)
        and is compared the same way. ``started`` says whether the run already holds
        training state (a checkpoint); a folder with a config but no state is a fresh start.
        Keys in ``may_change`` (documented by each trainer, e.g. the number of epochs) may
        differ on resume; any other difference is an error naming the keys, unless
        ``override`` (the CLI's ``--allow-changed``) is set. Every start and resume is
        appended to ``resumes.jsonl`` with the differences it allowed. Returns
        ``{"resumed": bool, "changed": {key: [old, new]}}``.
        """
        entry = {"config": config, "sources": sources or {}}
        prev_path = self.path / "run.json"
        changed: dict = {}
        resumed = False
        if started and prev_path.exists():
            prev = read_json(prev_path)
            resumed = True
            for group in ("config", "sources"):
                old, new = prev.get(group, {}), entry[group]
                for key in sorted(set(old) | set(new)):
                    if old.get(key) != new.get(key):
                        name = key if group == "config" else f"{group}.{key}"
                        changed[name] = [old.get(key), new.get(key)]
            refused = sorted(k for k in changed if k not in may_change)
            if refused and not override:
                detail = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}"
                                   for k in refused[:6])
                raise CmeError(
                    f"{self.path}: this run was started with other settings ({detail}). "
                    f"Use a new --out, or --allow-changed to continue with the new ones. "
                    f"Keys that may change on resume: {sorted(may_change) or 'none'}")
        elif started and not prev_path.exists() and self.config_path.exists():
            resumed = True   # a run from before run.json: its config.json is all we have
            old = read_json(self.config_path)
            changed = {k: [old.get(k), v] for k, v in config.items()
                       if k in old and old.get(k) != v}
            refused = sorted(k for k in changed if k not in may_change)
            if refused and not override:
                raise CmeError(f"{self.path}: this run was started with other settings "
                               f"({', '.join(refused)}); use a new --out or --allow-changed")
        write_json(prev_path, entry)
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.resumes_path, "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "resumed": resumed, "changed": changed,
                                "override": bool(override and changed)},
                               default=str) + "\n")
        return {"resumed": resumed, "changed": changed}
