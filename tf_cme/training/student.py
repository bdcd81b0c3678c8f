"""Distilling the student: the original schedule (protocol §6), resumable, on one device or many.

:func:`train` runs ``cfg.mini_epochs`` mini-epochs. Mini-epoch ``e`` (1-based):

- trains on ``ceil(epoch_fraction * N_train / batch_size)`` batches of
  :func:`tf_cme.data.pipelines.distill_dataset` seeded by ``seed * 100003 + e`` (a fresh
  shuffled pass with fresh random crops: the original's first 5 % of ``randperm`` under
  ``rng(epoch)``);
- at learning rate ``logspace(log10(lr_start), log10(lr_end), mini_epochs)[e - 1]``;
- then, for monitoring only, evaluates a fixed random ``val_fraction`` of the
  ``val_split`` (unheard) tracks, drawn once from ``seed``
  (:func:`tf_cme.data.pipelines.random_subset`; its size and key digest are in
  ``metrics.json`` ``validation``), with fresh random crops seeded by :func:`val_seed`
  (``e``) and test-mode BN;
- then writes a checkpoint (``checkpoints/ckpt-<e>``, then ``checkpoints/state.json``,
  atomically) and TensorBoard summaries (:mod:`tf_cme.training.summaries`, the tags of
  :mod:`tf_cme.training.tags` shared with the teacher: every metric as ``epoch_<name>``
  in ``tensorboard/train`` and ``tensorboard/validation``, ``epoch_accuracy`` = 1 -
  top-1 error, ``epoch_learning_rate``, spectrogram images of a few crops as ``inputs``,
  and the run's config as hparams);
  the last two checkpoints are kept, and those of the mini-epochs in ``keep_epochs``
  (280, the released model of the original) for good.

Targets: the records' teacher logits (labelled records, the default, as the original), or
with ``teacher=PATH.keras`` an online frozen teacher run on the face frames of each crop
(:func:`tf_cme.data.pipelines.distill_frames_dataset`, records with frames, labelled or
not) and aggregated the same way; the teacher's path and sha256 go into ``metrics.json``
(``teacher``), and a run cannot resume with another teacher file.

An interrupted run restarts at the mini-epoch after the last checkpoint, with the
weights, BN statistics and momentum of that checkpoint; since every mini-epoch's data
and the dither are seeded, a resumed run ends where an uninterrupted one does.
The reported model is the last one (``model.keras``); validation never selects a
checkpoint. :func:`epoch_model` turns a kept checkpoint into a model file
(``RUN/epochs/model-<e>.keras``), which ``evaluate_student.py --epoch`` and
``export_model.py --epoch`` use (:meth:`tf_cme.runs.Run.require_model`).

Distribution: :func:`tf_cme.training.strategy.from_environment` (MirroredStrategy on
several GPUs, MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several workers).
With more than one replica the student uses synchronised BN and ``batch_size`` is the
global batch. Non-chief workers write their checkpoints to a scratch folder.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from .. import emotions
from ..metrics import contract
from ..runs import Run
from ..utils import CmeError, progress

from ..audio.constants import TRAIN_CROP_SAMPLES  # noqa: E402


# Keys that may differ when a run resumes: more (or fewer) mini-epochs continue the same
# schedule's draws; how many images are logged and whether the records are re-scanned
# change no number the run computes.
MAY_CHANGE = frozenset({"mini_epochs", "images", "check_records", "keep_epochs"})
#: Offset of the validation crops' seeds (:func:`val_seed`) from the training ones.
VAL_SEED = 10_000_019



@dataclasses.dataclass
class StudentTrainConfig:
    # Each comment is also the --help text of train_student.py's option.
    records: str = "records/emovox-labelled"   # labelled emovox record set (with teacher: records
                                               # with face frames)
    train_split: str = "train"
    val_split: str = "unheard"
    val_fraction: float = 0.2           # seeded random share of val_split evaluated each mini-epoch; 0: none
    width: float = 1.0                  # channel multiplier of the student
    crop_samples: int = TRAIN_CROP_SAMPLES   # training crop in samples at 16 kHz (64384 = 4.024 s
                                             # = 400 frames)
    batch_size: int = 64                # global batch size
    mini_epochs: int = 300              # number of mini-epochs
    epoch_fraction: float = 0.05        # share of the training tracks per mini-epoch
    lr_start: float = 1e-4
    lr_end: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: Literal["hot-cross-ent", "euclidean", "softmaxlog"] = "hot-cross-ent"   # distillation loss
    temperature: float = 2.0
    agg: str = "max"                    # max | mean aggregation of the teacher logits (online: here)
    dither: bool = True
    seed: int = 0                       # random seed
    mixed_precision: bool = False       # train under the mixed_float16 policy (GPUs)
    jit_compile: bool = False           # XLA-compile the training step
    teacher: Optional[str] = None       # online frozen teacher: targets from the teacher run on the
                                        # face frames of each crop of --records (emovox records with
                                        # frames, labelled or not) instead of the records' logits
    check_records: bool = True          # scan the records for bad clips before training
    images: int = 3                     # spectrogram images logged per mini-epoch
    keep_epochs: list[int] = dataclasses.field(   # mini-epochs whose checkpoints are kept
        default_factory=lambda: [280])            # besides the last two, for evaluate_student.py /
                                                  # export_model.py --epoch (280: the original's
                                                  # released student; '' for none)


def train_seed(cfg: StudentTrainConfig, e: int) -> int:
    """Seed of mini-epoch ``e``'s training data (shuffle and crops)."""
    return cfg.seed * 100003 + e


def val_seed(cfg: StudentTrainConfig, e: int) -> int:
    """Seed of mini-epoch ``e``'s validation crops: fresh crops every mini-epoch, the same
    ones again when a run resumes (the original: ``rng(epoch)``; protocol §6)."""
    return VAL_SEED + train_seed(cfg, e)


def learning_rates(cfg: StudentTrainConfig) -> np.ndarray:
    """``logspace(log10(lr_start), log10(lr_end), mini_epochs)`` (1e-4 .. 1e-5 by default)."""
    if cfg.mini_epochs == 1:
        return np.array([cfg.lr_start])
    return np.logspace(math.log10(cfg.lr_start), math.log10(cfg.lr_end), cfg.mini_epochs)


def _validate(cfg: StudentTrainConfig) -> None:
    from . import losses
    from ..audio.frontend import FRAME, MIN_BUCKET_FRAMES, samples_for_frames
    if cfg.teacher:
        from ..models.io import read_metadata
        if not Path(cfg.teacher).is_file():
            raise CmeError(f"teacher: {cfg.teacher}: no such teacher model file (a tf-cme "
                           f".keras teacher for online targets)")
        try:
            kind = read_metadata(cfg.teacher).get("kind")
        except CmeError as e:
            raise CmeError(f"teacher: {e}; online targets need a tf-cme teacher "
                           f"(train_teacher.py, import_weights.py)") from None
        if kind != "teacher":
            raise CmeError(f"teacher: {cfg.teacher}: a {kind} model, not a face teacher")
    if cfg.loss not in losses.LOSSES:
        raise CmeError(f"loss: {cfg.loss!r} is not one of {', '.join(losses.LOSSES)}")
    if cfg.crop_samples < samples_for_frames(MIN_BUCKET_FRAMES):
        raise CmeError(f"crop_samples: {cfg.crop_samples} samples give fewer than "
                       f"{MIN_BUCKET_FRAMES} frames; at least "
                       f"{samples_for_frames(MIN_BUCKET_FRAMES)} are needed "
                       f"(one frame is {FRAME} samples)")
    for key in ("batch_size", "mini_epochs"):
        if getattr(cfg, key) < 1:
            raise CmeError(f"{key} must be at least 1")
    if not 0 < cfg.epoch_fraction <= 1:
        raise CmeError("epoch_fraction must be in (0, 1]")
    if not 0 <= cfg.val_fraction <= 1:
        raise CmeError("val_fraction must be in [0, 1]")
    if cfg.agg not in ("max", "mean"):
        raise CmeError(f"agg: {cfg.agg!r} is not max or mean")
    bad = [e for e in cfg.keep_epochs if int(e) < 1]
    if bad:
        raise CmeError(f"keep_epochs: {bad[0]} is not a mini-epoch (they count from 1)")


def check_records(dir, splits, *, min_samples: int = 400, online: bool = False,
                  skip_corrupt: bool = False) -> dict:
    """Scan emovox records before training: every clip must have at least one frame of
    audio and finite teacher logits of width 8, or with ``online`` (an online teacher)
    face frames (JPEG). CmeError naming the record. Records are read with their CRCs
    checked; a corrupt shard is a CmeError naming it, or left out with ``skip_corrupt``."""
    import tensorflow as tf
    from ..data import records as records_lib
    m = records_lib.read_manifest(dir, expect_schema="emovox")
    if online and m.get("frames_kept") is False:
        raise CmeError(f"{dir}: labelled records written without their face frames; the online "
                       f"teacher needs the emovox records that have them (build_records.py emovox)")
    if not online and not m.get("labelled"):
        raise CmeError(f"{dir}: records without teacher logits (not labelled) and no online "
                       f"teacher given: run scripts/label_faces.py first, or distil from their "
                       f"face frames with --teacher MODEL.keras")
    teacher = m.get("teacher") or {}
    width = teacher.get("num_classes") or (len(teacher["classes"]) if "classes" in teacher
                                          else None)
    if not online and width is not None and int(width) != emotions.NUM_CLASSES:
        raise CmeError(f"{dir}: teacher logits have width {width}, expected "
                       f"{emotions.NUM_CLASSES} (FER+ order)")
    counts = {}
    for split in splits:
        files, _ = records_lib.shard_files(dir, split, m, skip_corrupt=skip_corrupt)
        n = 0
        bar = progress(total=m["splits"][split].get("examples"), desc=f"checking {split} records",
                       unit="clip")
        for path in files:
            for raw in records_lib.iter_records(path, check_crc=True):
                feats = tf.train.Example.FromString(raw).features.feature
                key = feats["key"].bytes_list.value[0].decode()
                num_samples = int(feats["num_samples"].int64_list.value[0])
                logits = np.asarray(feats["logits"].float_list.value, np.float32)
                frames = feats["frames"].bytes_list.value
                if num_samples < min_samples:
                    raise CmeError(f"{dir}: record {key} ({split}): {num_samples} audio "
                                   f"samples, shorter than one {min_samples}-sample frame")
                if online:
                    if not frames:
                        raise CmeError(f"{dir}: record {key} ({split}) has no face frames for "
                                       f"the online teacher"
                                       + ("" if logits.size else " (and no teacher logits)"))
                    for i, jpg in enumerate(frames):
                        if jpg[:2] != b"\xff\xd8":
                            raise CmeError(f"{dir}: record {key} ({split}): face frame {i} is "
                                           f"not a JPEG")
                    n += 1
                    bar.update(1)
                    continue
                if logits.size == 0:
                    raise CmeError(f"{dir}: record {key} ({split}) has no teacher logits "
                                   + ("(and no online teacher is given: --teacher MODEL.keras "
                                      "distils from its face frames)" if frames else
                                      "and no face frames (and no online teacher is given)"))
                if logits.size % emotions.NUM_CLASSES:
                    raise CmeError(f"{dir}: record {key} ({split}): {logits.size} logit values, "
                                   f"not a multiple of {emotions.NUM_CLASSES} (logits width != 8)")
                if not np.all(np.isfinite(logits)):
                    raise CmeError(f"{dir}: record {key} ({split}) has NaN or Inf teacher logits")
                n += 1
                bar.update(1)
        bar.close()
        counts[split] = n
    return counts


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0)


def _worker_dir(run: Run, strategy) -> Path:
    if _is_chief(strategy):
        return run.checkpoints
    r = strategy.cluster_resolver
    return run.path / ".scratch" / f"{r.task_type}-{r.task_id}" / "checkpoints"


def _read_state(ckdir: Path) -> dict:
    from .checkpoints import read_state
    return read_state(ckdir) or {"mini_epoch": 0}


#: What the student's TensorBoard images show (the tags.INPUTS description).
SPECTROGRAM_NOTE = ("The student's input: the log-magnitude spectrogram of a training crop "
                    "after the front end (protocol §3.1). Time runs to the right (10 ms per "
                    "column), frequency upwards (0 Hz at the bottom, 8 kHz at the top, 512 "
                    "bins); each image is min-max scaled on its own.")


def _spectrogram_images(spec: np.ndarray) -> np.ndarray:
    """Spectrograms ``[k, 512, T, C]`` as images in [0, 1], low frequencies at the bottom."""
    img = spec[:, :, :, :1]                              # [k, 512, T, 1]
    lo, hi = img.min(axis=(1, 2, 3), keepdims=True), img.max(axis=(1, 2, 3), keepdims=True)
    img = (img - lo) / np.maximum(hi - lo, 1e-6)
    return img[:, ::-1]


def default_dataset_fn(cfg: StudentTrainConfig, image_size: int | None = None,
                       val_subset=None, skip_corrupt: bool = False) -> Callable:
    """``fn(split, seed, training) -> tf.data.Dataset`` over the labelled records, or with
    ``cfg.teacher`` over the records' face frames at the teacher's ``image_size``;
    ``training=False`` (validation) reads only the tracks of ``val_subset``
    (:func:`validation_subset`) when given."""
    from ..data import pipelines

    def fn(split, seed, training):
        subset = None if training else val_subset
        if cfg.teacher:
            return pipelines.distill_frames_dataset(
                cfg.records, split, batch_size=cfg.batch_size, image_size=image_size,
                crop_samples=cfg.crop_samples, seed=seed, training=training, repeat=training,
                subset=subset, skip_corrupt=skip_corrupt)
        return pipelines.distill_dataset(cfg.records, split, batch_size=cfg.batch_size,
                                         crop_samples=cfg.crop_samples, seed=seed,
                                         agg=cfg.agg, training=training, repeat=training,
                                         subset=subset, skip_corrupt=skip_corrupt)
    return fn


def validation_subset(cfg: StudentTrainConfig, skip_corrupt: bool = False):
    """The run's validation tracks: a random ``val_fraction`` of ``val_split`` fixed by
    ``seed`` (:func:`tf_cme.data.pipelines.random_subset`; protocol §6), or None."""
    if not cfg.val_fraction:
        return None
    from ..data import pipelines
    return pipelines.random_subset(cfg.records, cfg.val_split, cfg.val_fraction, cfg.seed,
                                   skip_corrupt=skip_corrupt)


def split_sizes(cfg: StudentTrainConfig, skipped=()) -> dict:
    """{split: examples} of the records, less those of the ``skipped`` (corrupt) shards."""
    from ..data import records as records_lib
    m = records_lib.read_manifest(cfg.records, expect_schema="emovox")
    sizes = {k: int(v.get("examples", 0)) for k, v in m["splits"].items()}
    for sh in m["shards"]:
        if sh["file"] in skipped:
            sizes[sh["split"]] -= int(sh["examples"])
    return sizes


def _build_student(cfg: StudentTrainConfig, synchronized: bool = False):
    """The student ``train`` distils (training front end, no crop), before its weights."""
    from ..models import build_model
    from . import losses
    student = build_model("emovoxceleb-student", width=cfg.width, dither=cfg.dither,
                          crop="none", synchronized=synchronized)
    losses.configure_student_for_loss(student, cfg.loss)
    return student


def _save_student(student, path, origin: dict | None = None) -> Path:
    """Write ``student`` as the model file a later stage loads (``model.keras``), its
    metadata completed by ``origin`` (provenance, trained_on, synthetic)."""
    from ..models.io import save_model
    from ..models.student import with_frontend
    final = with_frontend(student, synchronized=False)
    final.cme_metadata = {**final.cme_metadata, **(origin or {})}
    return save_model(final, path)


def checkpoint_epochs(run_dir) -> list[int]:
    """The mini-epochs whose checkpoints ``RUN/checkpoints`` holds, in order."""
    from .checkpoints import saved
    return saved(Run(Path(run_dir)).checkpoints)


def run_model(run_dir, epoch: int | None = None) -> Path:
    """``RUN/model.keras``, or with ``epoch`` the student of that mini-epoch's kept checkpoint
    (:func:`epoch_model`): the one loader of ``evaluate_student.py`` and ``export_model.py``."""
    run = Run.open(run_dir)
    return run.require_model() if epoch is None else epoch_model(run.path, epoch)


def epoch_model(run_dir, epoch: int) -> Path:
    """``RUN/epochs/model-<epoch>.keras``: the student of mini-epoch ``epoch`` from its
    checkpoint (kept by ``keep_epochs``, or one of the last two), saved as ``train`` saves
    ``model.keras``; rewritten on every call. CmeError naming the run and the mini-epochs
    it holds when that checkpoint is absent (protocol §6, the released checkpoint)."""
    import tensorflow as tf
    from .. import config as config_lib
    run = Run.open(run_dir)
    try:
        cfg = config_lib.from_dict(StudentTrainConfig, run.config())
    except config_lib.ConfigError as e:
        raise CmeError(f"{run.path}: not a student run ({e}); --epoch loads a mini-epoch "
                       f"checkpoint of train_student.py") from None
    have = checkpoint_epochs(run.path)
    if int(epoch) not in have:
        raise CmeError(f"{run.path}: no checkpoint of mini-epoch {epoch}; the run holds "
                       f"mini-epoch(s) {', '.join(map(str, have)) or 'none'} (the last two "
                       f"and keep_epochs {list(cfg.keep_epochs)})")
    student = _build_student(cfg)
    status = tf.train.Checkpoint(student=student).read(str(run.checkpoints / f"ckpt-{epoch}"))
    status.expect_partial().assert_existing_objects_matched()
    out = run.path / "epochs"
    out.mkdir(exist_ok=True)
    return _save_student(student, out / f"model-{epoch}.keras", _run_origin(run, cfg))


def _run_origin(run: Run, cfg: StudentTrainConfig) -> dict:
    """The provenance of a run's students: from its model.keras when written, else from
    its records (when still there), else "unknown"."""
    keys = ("provenance", "trained_on", "synthetic")
    if run.model_path.exists():
        from ..models.io import read_metadata
        md = read_metadata(run.model_path)
        return {k: md[k] for k in keys if k in md}
    try:
        from ..data.records import manifest_digest
        return _provenance(cfg, manifest_digest(cfg.records))
    except (CmeError, OSError):
        return {"provenance": "unknown"}


def _provenance(cfg: StudentTrainConfig, digest: str | None) -> dict:
    """``provenance`` (and ``trained_on``) of the student distilled from ``cfg.records``:
    ``demo-synthetic`` when the records (or the online teacher) come from the demo corpus,
    else ``trained:<records manifest sha256>`` (tf_cme.provenance)."""
    from .. import provenance
    from ..data import records as records_lib
    if digest is None:        # dataset_fn: records not read from disk (tests)
        return {"provenance": "trained:dataset_fn", "trained_on": {"records": None},
                "synthetic": False}
    manifest = records_lib.read_manifest(cfg.records, expect_schema="emovox")
    synthetic = bool(manifest.get("synthetic"))
    if cfg.teacher:
        from ..models.io import read_metadata
        synthetic = synthetic or provenance.is_demo(read_metadata(cfg.teacher))
    md = {"provenance": provenance.trained({"synthetic": synthetic}, digest),
          "trained_on": {"records": str(cfg.records), "manifest_sha256": digest},
          "synthetic": synthetic}
    return md


def train(cfg: StudentTrainConfig, run_dir, *, dataset_fn: Callable | None = None,
          sizes: dict | None = None, strategy=None, save_model: bool = True,
          return_student: bool = False, allow_changed: bool = False,
          skip_corrupt: bool = False, callbacks=None):
    """Distil a student into the run folder ``run_dir`` (resuming if it has checkpoints).

    A run folder that holds a checkpoint resumes only with the same resolved config and the
    same input records (manifest digest) and teacher file (sha256), except the keys in
    :data:`MAY_CHANGE`; ``allow_changed`` (``--allow-changed``) continues anyway (protocol
    §6; every start and resume is recorded in ``RUN/resumes.jsonl``).
    ``dataset_fn(split, seed, training)`` and ``sizes`` ({split: examples}) replace the
    record pipeline (tests). Returns the final metrics (also in ``metrics.json``).
    The shards of the splits read are checked (CRCs) first: a corrupt one is a CmeError
    naming it, or with ``skip_corrupt`` is left out and listed in the metrics'
    ``skipped_corrupt_shards``.
    ``callbacks``: Keras callbacks (:mod:`tf_cme.training.callbacks`): train begin/end once
    per call, epoch begin/end per mini-epoch (epoch ``e - 1``; the logs of ``fit`` and
    ``learning_rate``), batch hooks per step.
    """
    _validate(cfg)
    if strategy is None:
        from .strategy import from_environment
        strategy = from_environment()
    import keras
    import tensorflow as tf
    from .. import config as config_lib
    from . import checkpoints
    from .callbacks import FitHooks, callback_list
    from .summaries import Summaries
    from .distiller import Distiller
    from .optim import set_learning_rate, sgd

    from ..data.pipelines import naming_corrupt_shards
    skipped: list[str] = []
    default_data = dataset_fn is None
    if default_data:
        from ..data.pipelines import skipped_shards
        skipped = skipped_shards(cfg.records, [cfg.train_split] + (
            [cfg.val_split] if cfg.val_fraction > 0 else []), skip_corrupt)
    run = Run.create(run_dir)
    chief = _is_chief(strategy)
    teacher_info = None
    origin: dict = {}
    if cfg.teacher:
        from ..models.importers import sha256
        teacher_info = {"path": str(cfg.teacher), "sha256": sha256(Path(cfg.teacher))}
    if chief:
        from ..data.records import manifest_digest
        cur = config_lib.to_dict(cfg)
        digest = manifest_digest(cfg.records) if dataset_fn is None else None
        sources = {"records": digest}
        if teacher_info:
            sources["teacher"] = teacher_info["sha256"]
        origin = _provenance(cfg, digest)
        run.start_or_resume(cur, sources=sources, may_change=MAY_CHANGE,
                            started=_read_state(run.checkpoints)["mini_epoch"] > 0,
                            override=allow_changed)
        run.save_config(cfg)
        if teacher_info:
            contract.update_metrics(run.path, contract.STUDENT, teacher=teacher_info)
    if dataset_fn is None:
        if sizes is None:
            sizes = split_sizes(cfg, skipped)
        if cfg.check_records and chief:
            need = [cfg.train_split] + ([cfg.val_split] if cfg.val_fraction > 0 else [])
            check_records(cfg.records, need, online=bool(cfg.teacher),
                          skip_corrupt=skip_corrupt)
    n_train = int(sizes.get(cfg.train_split, 0))
    if n_train < 1:
        raise CmeError(f"{cfg.records}: no training clips in split {cfg.train_split!r}")
    steps = max(1, math.ceil(cfg.epoch_fraction * n_train / cfg.batch_size))
    n_val = int(sizes.get(cfg.val_split, 0)) if cfg.val_fraction > 0 else 0
    val_steps = math.ceil(cfg.val_fraction * n_val / cfg.batch_size) if n_val else 0
    lrs = learning_rates(cfg)

    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        keras.utils.set_random_seed(cfg.seed)
        student = _build_student(cfg, synchronized=replicas > 1)
        teacher = None
        if cfg.teacher:   # after the student, so that its initial weights do not change
            from ..models.teacher import load_teacher
            teacher = load_teacher(cfg.teacher)
        distiller = Distiller(student, loss=cfg.loss, temperature=cfg.temperature,
                              weight_decay=cfg.weight_decay, teacher=teacher, agg=cfg.agg)
        optimizer = sgd(float(lrs[0]), momentum=cfg.momentum)
        distiller.compile(optimizer=optimizer, jit_compile=cfg.jit_compile)
        ckpt = tf.train.Checkpoint(student=student, optimizer=distiller.optimizer)
    ckdir = _worker_dir(run, strategy)
    ckdir.mkdir(parents=True, exist_ok=True)
    state = _read_state(run.checkpoints)
    start = int(state["mini_epoch"])
    if start > 0:
        checkpoints.restore(ckpt, run.checkpoints, state)
    if start >= cfg.mini_epochs and run.model_path.exists():
        return (run.metrics(), student) if return_student else run.metrics()
    if dataset_fn is None:
        val_subset = validation_subset(cfg, skip_corrupt) if val_steps else None
        if val_subset is not None:
            val_steps = math.ceil(val_subset.tracks / cfg.batch_size)
            if chief:
                contract.update_metrics(run.path, contract.STUDENT,
                                        validation=val_subset.info())
        dataset_fn = default_dataset_fn(cfg, image_size=teacher.input_size if teacher else None,
                                        val_subset=val_subset, skip_corrupt=skip_corrupt)

    summaries = Summaries(run.tensorboard, enabled=chief)
    summaries.hparams(config_lib.to_dict(cfg), trial=run.path.name)
    history: dict = {}
    bar = progress(range(start + 1, cfg.mini_epochs + 1), total=cfg.mini_epochs,
                   desc="distilling", unit="mini-epoch")
    if hasattr(bar, "update") and start:
        bar.update(start)
    keep = {int(k) for k in cfg.keep_epochs}
    t0 = time.time()
    hooks = callback_list(callbacks, distiller, epochs=cfg.mini_epochs, steps=steps,
                          chief=chief)
    hooks.on_train_begin()
    for e in bar:
        lr = float(lrs[e - 1])
        set_learning_rate(distiller.optimizer, lr)  # MatConvNet: lr after momentum
        ds = dataset_fn(cfg.train_split, train_seed(cfg, e), True).take(steps)
        val_ds = (dataset_fn(cfg.val_split, val_seed(cfg, e), False).take(val_steps)
                  if val_steps else None)
        # The step counts are passed on, not left for Keras to discover: a dataset of
        # unknown cardinality that ends makes Keras warn "Your input ran out of data".
        with naming_corrupt_shards(cfg.records if default_data else None, None, skipped):
            hist = distiller.fit(ds, epochs=e, initial_epoch=e - 1, verbose=0,
                                 steps_per_epoch=steps, validation_data=val_ds,
                                 validation_steps=val_steps or None, shuffle=False,
                                 callbacks=[FitHooks(hooks, {"learning_rate": lr})])
        logs = {k: float(v[-1]) for k, v in hist.history.items()}
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        summaries.epoch(e, train_logs, val_logs, learning_rate=lr)
        if cfg.images and chief and (e == start + 1 or e % 10 == 0 or e == cfg.mini_epochs):
            x, _ = next(iter(dataset_fn(cfg.train_split, train_seed(cfg, e), True)))
            spec = student.get_layer("spectrogram")(x[: cfg.images], training=False)
            summaries.images(_spectrogram_images(np.asarray(spec)), e, SPECTROGRAM_NOTE)
        # checkpoint: files first, then the state (atomic), then prune all but the last
        # two and those of keep_epochs
        checkpoints.save(ckpt, ckdir, e, {"mini_epoch": e, "learning_rate": lr,
                                          "train": train_logs, "val": val_logs},
                         keep=keep, chief=chief)
        history = {"mini_epoch": e, "train": train_logs, "val": val_logs}
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{train_logs.get('loss', float('nan')):.4f}",
                            err=f"{train_logs.get('top1_error', float('nan')):.3f}")
        if distiller.stop_training:      # a callback (EarlyStopping, ...) asked to stop
            break
    hooks.on_train_end(history.get("train"))
    elapsed = time.time() - t0
    metrics = {}
    if chief:
        if save_model:
            _save_student(student, run.model_path, origin)
        metrics = contract.update_metrics(
            run.path, contract.STUDENT,
            student=dict(history, mini_epochs=cfg.mini_epochs, steps_per_mini_epoch=steps,
                         val_steps=val_steps, replicas=replicas,
                         train_seconds_this_session=round(elapsed, 1)),
            skipped_corrupt_shards=skipped)
    else:
        shutil.rmtree(run.path / ".scratch", ignore_errors=True)
    return (metrics, student) if return_student else metrics
