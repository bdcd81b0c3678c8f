"""TensorBoard summaries of both trainers under the shared tag names of
:mod:`tf_cme.training.tags`: per epoch (teacher) or mini-epoch (student) scalars into
``RUN/tensorboard/train`` and ``RUN/tensorboard/validation``, input images, and the hparams
plugin's summary of the run's config in ``RUN/tensorboard`` (so that runs compare in one
table; the plugin reads the final value of every scalar as the run's metric), written once
per run and config: ``RUN/tensorboard/hparams-<sha256[:16]>.json`` marks the config written
(:func:`config_digest`), so a resumed run with the same config does not write another
session summary (a resume with a changed config, e.g. more epochs, writes one for it)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import tags


def tag_of(name: str) -> str:
    """The shared tag of a trainer's log name: ``loss`` -> :data:`tags.LOSS`,
    ``recall_happiness`` -> ``epoch_recall/happiness``, anything else -> ``epoch_<name>``."""
    fixed = {"loss": tags.LOSS, "accuracy": tags.ACCURACY, "mean_recall": tags.MEAN_RECALL,
             "learning_rate": tags.LEARNING_RATE}
    if name in fixed:
        return fixed[name]
    if name.startswith("recall_"):
        return tags.recall(name[len("recall_"):])
    return f"epoch_{name}"


def hparam_value(v):
    """A config value as the hparams plugin takes it (bool, number or string)."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if v is None:
        return ""
    return json.dumps(v)


def config_digest(config: dict) -> str:
    """sha256 (hex) of a config dict as sorted JSON: the key of its hparams marker."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def hparams_marker(logdir, config: dict) -> Path:
    """``LOGDIR/hparams-<sha256[:16]>.json``: present once ``config``'s summary is written."""
    return Path(logdir) / f"hparams-{config_digest(config)[:16]}.json"


class Summaries:
    """The run's summary writers (none when ``enabled`` is false: non-chief workers)."""

    def __init__(self, logdir, enabled: bool = True):
        import tensorflow as tf
        self.logdir = Path(logdir)
        self.writers = {}
        if enabled:
            for d in (tags.TRAIN_DIR, tags.VALIDATION_DIR):
                self.writers[d] = tf.summary.create_file_writer(str(self.logdir / d))

    def epoch(self, step: int, train: dict, val: dict | None = None,
              learning_rate: float | None = None) -> None:
        """Scalars of one epoch: ``train`` and ``val`` logs (trainer names: ``loss``,
        ``accuracy``, ``top1_error``, ``mean_recall``, ``recall_<emotion>``, ...; None
        values are not written), and the learning rate (train)."""
        if not self.writers:
            return
        import tensorflow as tf
        train = dict(train)
        if learning_rate is not None:
            train["learning_rate"] = learning_rate
        for d, logs in ((tags.TRAIN_DIR, train), (tags.VALIDATION_DIR, val or {})):
            logs = dict(logs)
            if "accuracy" not in logs and "top1_error" in logs:    # the student's
                logs["accuracy"] = 1.0 - float(logs["top1_error"])
            with self.writers[d].as_default():
                for k, v in logs.items():
                    if v is not None:
                        tf.summary.scalar(tag_of(k), float(v), step=step)
            self.writers[d].flush()

    def images(self, images: np.ndarray, step: int, description: str | None = None) -> None:
        """:data:`tags.INPUTS`: float images ``[k, H, W, C]`` in [0, 1] (train), with
        ``description`` (what the axes and the grey levels mean) shown beside them."""
        if not self.writers or images is None:
            return
        import tensorflow as tf
        with self.writers[tags.TRAIN_DIR].as_default():
            tf.summary.image(tags.INPUTS, images, step=step, max_outputs=images.shape[0],
                             description=description)
        self.writers[tags.TRAIN_DIR].flush()

    def hparams(self, config: dict, trial: str) -> bool:
        """The hparams plugin's session summary of ``config`` (scalars and strings; lists as
        JSON) in ``RUN/tensorboard``; its metrics are the scalars of train/ and validation/.
        Written once per config (:func:`hparams_marker`, written after the summary): False
        when this run already holds it (a resume) or this worker writes no summaries."""
        if not self.writers:
            return False
        marker = hparams_marker(self.logdir, config)
        if marker.exists():
            return False
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        from ..utils import write_json
        writer = tf.summary.create_file_writer(str(self.logdir))
        with writer.as_default():
            hp.hparams({k: hparam_value(v) for k, v in config.items()}, trial_id=trial)
        writer.flush()
        writer.close()
        write_json(marker, {"config_sha256": config_digest(config), "trial": trial,
                            "written": "hparams session summary of this config"})
        return True
