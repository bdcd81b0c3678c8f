"""User Keras callbacks in both trainers (``train(..., callbacks=[...])``, ``--csv-log``,
``--profile-batch``).

Both trainers drive one :class:`keras.callbacks.CallbackList` per ``train()`` call:
``on_train_begin`` / ``on_train_end`` fire once per call, ``on_epoch_begin`` /
``on_epoch_end`` once per epoch (teacher) or mini-epoch (student) with Keras's 0-based
epoch index (mini-epoch ``e`` is epoch ``e - 1``), ``on_train_batch_begin`` /
``on_train_batch_end`` once per training step. ``on_epoch_end``'s logs are the numbers
the trainer records for that epoch (``loss``, ``accuracy`` or ``top1_error``, ...,
``learning_rate`` and the ``val_*`` ones). The student runs ``Model.fit`` once per
mini-epoch: :class:`FitHooks` passes fit's epoch, batch and test hooks on to the list and
keeps fit's train begin/end from it.
"""
from __future__ import annotations

from pathlib import Path

# --profile-batch's parser lives in the TensorFlow-free utils (commands check the option
# before TensorFlow's start-up; this module defines Keras classes at import)
from ..utils import parse_profile_batch  # noqa: F401  (re-exported)


def _keras_callback_base():
    import keras
    return keras.callbacks.Callback


class Profiler(_keras_callback_base()):
    """The TensorFlow profiler (``tf.profiler.experimental``) over training batches
    ``first..last`` (1-based, counted across the epochs of one ``train()`` call), written
    under ``logdir`` for TensorBoard's profile plugin; stopped at the end of training if
    fewer batches ran."""

    def __init__(self, logdir, first: int, last: int):
        super().__init__()
        self.logdir, self.first, self.last = str(logdir), int(first), int(last)
        self.batch = 0
        self.active = False
        self.profiled: list[int] = []

    def on_train_begin(self, logs=None):
        self.batch = 0

    def on_train_batch_begin(self, batch, logs=None):
        import tensorflow as tf
        self.batch += 1
        if self.batch == self.first and not self.active:
            Path(self.logdir).mkdir(parents=True, exist_ok=True)
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def on_train_batch_end(self, batch, logs=None):
        if self.active:
            self.profiled.append(self.batch)
            if self.batch >= self.last:
                self._stop()

    def on_train_end(self, logs=None):
        self._stop()

    def _stop(self):
        if self.active:
            import tensorflow as tf
            tf.profiler.experimental.stop()
            self.active = False


def cli_callbacks(csv_log: str | None, profile_batch: str | None, run_dir) -> list:
    """The callbacks of the training commands' ``--csv-log FILE`` (a
    keras.callbacks.CSVLogger appending to FILE, so a resumed run continues it) and
    ``--profile-batch N[,M]`` (:class:`Profiler` into ``RUN/tensorboard/train``)."""
    import keras
    from . import tags
    out = []
    if csv_log:
        Path(csv_log).parent.mkdir(parents=True, exist_ok=True)
        csv_logger = keras.callbacks.CSVLogger(str(csv_log), append=True)
        csv_logger.cme_chief_only = True      # one writer of FILE (student: the chief)
        out.append(csv_logger)
    span = parse_profile_batch(profile_batch)
    if span:
        out.append(Profiler(Path(run_dir) / "tensorboard" / tags.TRAIN_DIR, *span))
    return out


def callback_list(callbacks, model, *, epochs: int, steps: int, chief: bool = True):
    """The trainer's :class:`keras.callbacks.CallbackList` (no History, no progress bar);
    on a non-chief worker without the callbacks marked ``cme_chief_only`` (``--csv-log``'s,
    so that several workers do not append to one file)."""
    import keras
    callbacks = [c for c in (callbacks or []) if chief or not getattr(c, "cme_chief_only", False)]
    return keras.callbacks.CallbackList(callbacks, add_history=False,
                                        add_progbar=False, model=model, verbose=0,
                                        epochs=epochs, steps=steps)


class FitHooks(_keras_callback_base()):
    """Passes one ``Model.fit`` call's epoch, batch and test hooks on to ``target`` (a
    :func:`callback_list`), not its train begin/end (the trainer fires those once per
    ``train()``); ``extra`` is added to a copy of the epoch-end logs (the learning rate)."""

    def __init__(self, target, extra: dict | None = None):
        super().__init__()
        self.target, self.extra = target, dict(extra or {})

    def set_model(self, model):        # the trainer's list already has the model
        self._model = model

    def on_epoch_begin(self, epoch, logs=None):
        self.target.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.target.on_epoch_end(epoch, {**(logs or {}), **self.extra})

    def on_train_batch_begin(self, batch, logs=None):
        self.target.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.target.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs=None):
        self.target.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.target.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.target.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.target.on_test_batch_end(batch, logs)
