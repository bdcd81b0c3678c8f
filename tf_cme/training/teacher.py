"""FER+ fine-tuning of the teachers (protocol §4.2, ``teacher/ferplus_baselines.m``).

- SGD, momentum 0.9, weight decay 5e-4 added to the gradient *before* momentum, as
  MatConvNet does (:func:`tf_cme.training.optim.matconvnet_gradients`); decay applies to
  convolution kernels (BN scales/shifts and biases are not decayed, MatConvNet's
  defaults for those parameters).
- Per-variable learning-rate multipliers, exact for SGD with momentum because they scale
  the decayed gradient: ``backbone_lr_mult`` (the original's ``finetuneLR`` 0.1) for every
  variable but the classifier's, ``classifier_lr_mult`` for ``classifier`` (protocol §9, question 8:
  ambiguous in the original; 1 by default).
- Batch 128, learning rates 0.01 / 0.001 / 0.0001 for 60 epochs each; dropout 0.5;
  loss ``softmaxlog`` (hard labels, resnet50-ferplus) or ``distributions`` (soft vote
  distribution, senet50-ferplus); losses are batch means; BN in training mode.
- Augmentation (flip + the affine Z·R·S) from the records pipeline
  (:func:`tf_cme.data.pipelines.faces_dataset`: the flip, and the affine as ``y["affine"]``);
  the model subtracts its mean and resamples once, the affine included
  (:func:`tf_cme.models.teacher.forward`, protocol §4.2).
- The distribution strategy comes from the environment; TensorBoard
  (:mod:`tf_cme.training.summaries`: loss, accuracy, per-class recall, learning rate,
  sample images under the tags shared with the student, the config as hparams); an epoch
  checkpoint (:mod:`tf_cme.training.checkpoints`: weights, optimizer state, then
  ``state.json`` with epoch, best so far, history) that a re-run resumes from; the best
  epoch on val (accuracy, i.e. MatConvNet's ``classerror``) is kept as ``RUN/model.keras``.
  User Keras callbacks are driven from the loop (:mod:`tf_cme.training.callbacks`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np

from .. import emotions, provenance
from ..metrics import contract
from ..metrics.classification import confusion_matrix, recall_per_class
from ..runs import Run
from ..utils import CmeError, progress

log = logging.getLogger(__name__)

LOSSES = ("softmaxlog", "distributions")
OLD_CHECKPOINT = "last.npz"        # before tf.train.Checkpoint (refused, named)
# config keys that may differ on resume: the schedule's length, what is logged, and paths
# whose contents are compared through their digests (records, init)
MAY_CHANGE = frozenset({"epochs_per_rate", "sample_images", "records", "init"})


@dataclasses.dataclass
class TeacherTrainConfig:
    # Each comment is also the --help text of train_teacher.py's option.
    records: str = "records/ferplus"          # FER+ record set folder (build_records.py ferplus)
    arch: Literal["resnet50-ferplus", "senet50-ferplus"] = "senet50-ferplus"   # teacher
                                              # architecture (registry name)
    width: float = 1.0                        # channel multiplier
    input_size: int = 224                     # model input size
    dropout: float = 0.5
    init: str = ""                            # start from this .keras (e.g. an imported VGGFace2
                                              # base); '': random initialisation
    loss: Literal["auto", "softmaxlog", "distributions"] = "auto"   # hard-label or
                                              # vote-distribution loss (auto: distributions for
                                              # senet, softmaxlog for resnet)
    batch_size: int = 128                     # global batch size
    learning_rates: list[float] = dataclasses.field(
        default_factory=lambda: [0.01, 0.001, 0.0001])
    epochs_per_rate: list[int] = dataclasses.field(default_factory=lambda: [60, 60, 60])
    momentum: float = 0.9
    weight_decay: float = 5e-4
    backbone_lr_mult: float = 0.1
    classifier_lr_mult: float = 1.0
    augment: bool = True
    affine: bool = True                       # protocol §4.2 affine augmentation (False: flip only)
    steps_per_epoch: int = 0                  # 0: whole train split each epoch
    val_split: str = "val"
    seed: int = 0
    sample_images: int = 8                    # images logged to TensorBoard (0: none)
    shuffle_buffer: int = 4096

    def resolved_loss(self) -> str:
        if self.loss == "auto":
            return "distributions" if self.arch.startswith("senet") else "softmaxlog"
        if self.loss not in LOSSES:
            raise CmeError(f"unknown teacher loss {self.loss!r}; choose one of "
                           f"{', '.join(LOSSES)} or auto")
        return self.loss

    def schedule(self) -> list[float]:
        if len(self.learning_rates) != len(self.epochs_per_rate):
            raise CmeError(f"learning_rates ({len(self.learning_rates)}) and epochs_per_rate "
                           f"({len(self.epochs_per_rate)}) differ in length")
        out = []
        for lr, n in zip(self.learning_rates, self.epochs_per_rate):
            out += [float(lr)] * int(n)
        if not out:
            raise CmeError("the learning-rate schedule has no epochs")
        return out


# ------------------------------------------------------------------------------ losses

def per_example_loss(name: str, logits, labels, votes):
    """``softmaxlog``: -log softmax(x)[label]; ``distributions``: -sum_c p_c log softmax(x)_c
    with p the cleaned vote distribution (SoftmaxCELoss at T = 1). Float32 ``[B]``."""
    from keras import ops
    logq = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    if name == "softmaxlog":
        return -ops.take_along_axis(logq, ops.expand_dims(ops.cast(labels, "int32"), -1),
                                    axis=-1)[:, 0]
    p = ops.cast(votes, "float32")
    p = p / ops.maximum(ops.sum(p, axis=-1, keepdims=True), 1e-12)
    return -ops.sum(p * logq, axis=-1)


# ------------------------------------------------------------------------------ model

def build_teacher(cfg: TeacherTrainConfig, synchronized: bool = False):
    """The registry model, with weights from ``cfg.init`` when given (copied layer by layer
    by name; the classifier only when its shape matches). ``synchronized``: batch
    normalisation over the global batch of all replicas (several devices or workers)."""
    from ..models import build_model
    model = build_model(cfg.arch, width=cfg.width, input_size=cfg.input_size,
                        dropout=cfg.dropout, **({"synchronized": True} if synchronized else {}))
    if cfg.init:
        copy_weights_by_name(load_init(cfg.init), model, source=cfg.init)
    return model


def load_init(path):
    from ..models.io import load_model
    p = Path(path)
    if not p.is_file():
        raise CmeError(f"{p}: no such model file (--init)")
    return load_model(p)


def copy_weights_by_name(src, dst, source="init") -> dict:
    """Copy weights of every ``dst`` layer with weights from the same-named ``src`` layer.
    The classifier is skipped when its class count differs; anything else missing or
    mismatched is a CmeError naming the layer."""
    copied, skipped = 0, []
    src_layers = {l.name: l for l in src.layers}
    for layer in dst.layers:
        w = layer.get_weights()
        if not w:
            continue
        other = src_layers.get(layer.name)
        ow = other.get_weights() if other is not None else None
        if ow is None or [a.shape for a in ow] != [a.shape for a in w]:
            if layer.name == "classifier":
                skipped.append(layer.name)
                continue
            got = "missing" if ow is None else f"shapes {[a.shape for a in ow]}"
            raise CmeError(f"{source}: layer {layer.name!r} does not match the model "
                           f"({got}, expected {[a.shape for a in w]}): wrong arch or width?")
        layer.set_weights(ow)
        copied += 1
    return {"copied_layers": copied, "skipped": skipped}


# ------------------------------------------------------------------------------ checkpoints

def _old_checkpoint(run: Run) -> None:
    """CmeError for a run folder holding the .npz checkpoint of an older tf-cme (weights and
    optimizer variables by index), which this version does not read."""
    old = run.checkpoints / OLD_CHECKPOINT
    if old.exists():
        raise CmeError(f"{old}: a teacher checkpoint written by an older tf-cme (weights by "
                       f"index in .npz), which this version does not resume; start a new "
                       f"--out (or delete {run.checkpoints} to train this run from scratch)")


def make_predict_fn(model):
    """A test-mode forward pass traced once for any batch of uint8 images."""
    import tensorflow as tf
    return tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)])


def predict_split(model, records_dir, split: str, batch_size: int = 256, predict_fn=None,
                  skip_corrupt: bool = False):
    """(logits [N, 8], hard labels [N], votes [N, 8]) of a FER+ split, no augmentation.
    ``predict_fn`` (from :func:`make_predict_fn`) avoids re-tracing across calls;
    ``skip_corrupt`` leaves corrupt shards out (the caller reports them)."""
    from ..data.pipelines import faces_dataset, named_iteration, skipped_shards
    ds = faces_dataset(records_dir, split, batch_size=batch_size, training=False,
                       augment=False, skip_corrupt=skip_corrupt)
    fn = predict_fn or make_predict_fn(model)
    logits, labels, votes = [], [], []
    for x, y in named_iteration(ds, records_dir, split,
                                skipped_shards(records_dir, split, skip_corrupt)):
        logits.append(np.asarray(fn(x)))
        labels.append(y["label"].numpy())
        votes.append(y["votes"].numpy())
    if not logits:
        return (np.zeros((0, 8), np.float32), np.zeros((0,), np.int32),
                np.zeros((0, 8), np.float32))
    return np.concatenate(logits), np.concatenate(labels), np.concatenate(votes)


# ------------------------------------------------------------------------------ training

#: What the teacher's TensorBoard images show (the tags.INPUTS description).
MODEL_VIEW_NOTE = ("The teacher's input as the network sees it: the face after the model's own "
                   "preprocessing layer (grey, mean subtracted, the affine augmentation and "
                   "the resize to the input size in one resampling; protocol §4.2, §4.4), "
                   "each image min-max scaled on its own.")


def _model_view(model, images, affine, n: int) -> np.ndarray:
    """The first ``n`` uint8 ``images`` after the model's ``preprocess`` layer (with their
    ``affine`` augmentation), as float images in [0, 1] for TensorBoard."""
    pre = model.get_layer("preprocess")
    x = images[:n]
    view = np.asarray(pre(x, affine=affine[:n]) if affine is not None else pre(x), np.float32)
    lo = view.min(axis=(1, 2, 3), keepdims=True)
    hi = view.max(axis=(1, 2, 3), keepdims=True)
    view = (view - lo) / np.maximum(hi - lo, 1e-6)
    return np.repeat(view, 3, axis=-1) if view.shape[-1] == 1 else view


def train(cfg: TeacherTrainConfig, run_dir, *, max_epochs: int | None = None,
          allow_changed: bool = False, skip_corrupt: bool = False,
          callbacks=None) -> dict:
    """Train (or resume) a teacher into ``run_dir``. ``max_epochs`` stops after that many
    epochs in this call (tests use it to simulate an interruption). Returns metrics.

    Initial weights and dropout are seeded from ``cfg.seed``. A resume compares the whole
    config and the record set's (and ``init``'s) digest with the run's
    (:meth:`tf_cme.runs.Run.start_or_resume`); only :data:`MAY_CHANGE` may differ unless
    ``allow_changed``. Every shard of the train and val splits is checked (CRCs) first:
    a corrupt one is a CmeError naming it, or with ``skip_corrupt`` is left out and listed
    in the metrics' ``skipped_corrupt_shards``.
    ``callbacks``: Keras callbacks (:mod:`tf_cme.training.callbacks`) driven from the loop:
    train begin/end once per call, epoch begin/end per epoch (0-based; logs ``loss``,
    ``accuracy``, ``learning_rate``, ``val_loss``, ``val_accuracy``, ``val_mean_recall``,
    ``val_recall_<emotion>``), batch begin/end per step (logs ``loss``)."""
    import keras
    import tensorflow as tf

    from .. import config as config_lib

    from ..data import records as records_lib
    from ..data.pipelines import faces_dataset, named_iteration, skipped_shards
    from ..models.io import save_model
    from ..models.teacher import forward as teacher_forward
    from . import checkpoints, optim, strategy as strategy_lib
    from .callbacks import callback_list
    from .summaries import Summaries

    loss_name = cfg.resolved_loss()
    schedule = cfg.schedule()
    manifest = records_lib.read_manifest(cfg.records, expect_schema="ferplus")
    for split in ("train", cfg.val_split):
        if split not in manifest["splits"]:
            raise CmeError(f"{cfg.records}: no {split!r} split")
    skipped = skipped_shards(cfg.records, ["train", cfg.val_split], skip_corrupt)
    run = Run.create(run_dir)
    _old_checkpoint(run)
    saved_state = checkpoints.read_state(run.checkpoints)
    sources = {"records": records_lib.manifest_digest(cfg.records)}
    # where the saved weights come from (tf_cme.provenance): the records, whatever the init
    origin = {"provenance": provenance.trained(manifest, sources["records"]),
              "trained_on": {"records": str(cfg.records), "manifest_sha256": sources["records"]},
              "synthetic": bool(manifest.get("synthetic"))}
    if cfg.init:
        from ..models.importers import sha256
        sources["init"] = sha256(cfg.init) if Path(cfg.init).is_file() else None
    run.start_or_resume(config_lib.to_dict(cfg), sources=sources, may_change=MAY_CHANGE,
                        started=saved_state is not None, override=allow_changed)
    run.save_config(cfg)

    strategy = strategy_lib.from_environment()
    with strategy.scope():
        keras.utils.set_random_seed(cfg.seed)   # initial weights and dropout (protocol §4.2)
        replicas = strategy.num_replicas_in_sync
        model = build_teacher(cfg, synchronized=replicas > 1)
        opt = optim.sgd(schedule[0], momentum=cfg.momentum)
        opt.build(model.trainable_variables)
        # the dropout layers' random streams too: a resumed run draws the same masks
        ckpt = tf.train.Checkpoint(model=model, optimizer=opt,
                                   rng=checkpoints.random_states(model))
    variables = model.trainable_variables
    mults = {}
    for v in variables:
        mults[id(v)] = (cfg.classifier_lr_mult if v.path.startswith("classifier/")
                        else cfg.backbone_lr_mult)
    decayed = {id(v) for v in variables if v.path.endswith("/kernel")}
    state = {"epoch": 0, "best_epoch": None, "best_val_accuracy": -1.0, "history": []}
    if saved_state is not None:
        try:
            checkpoints.restore(ckpt, run.checkpoints, saved_state)
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise CmeError(f"{run.checkpoints / saved_state['prefix']}: unreadable or "
                           f"incompatible checkpoint ({str(e).splitlines()[0][:200]}); "
                           f"another arch or width? start a new --out") from None
        state = {k: v for k, v in saved_state.items() if k != "prefix"}
        log.info("resuming %s after epoch %d", run.path, state["epoch"])
        print(f"resuming from {run.checkpoints / saved_state['prefix']} "
              f"(epoch {state['epoch']} done)")

    n_train = int(manifest["splits"]["train"]["examples"]) - sum(
        int(s["examples"]) for s in manifest["shards"] if s["file"] in skipped
        and s["split"] == "train")
    steps = cfg.steps_per_epoch or max(1, n_train // cfg.batch_size)
    if n_train < cfg.batch_size:
        raise CmeError(f"{cfg.records}: {n_train} training images, fewer than one batch of "
                       f"{cfg.batch_size}")
    global_batch = cfg.batch_size

    def step_fn(images, y):
        with tf.GradientTape() as tape:
            logits = teacher_forward(model, images, y.get("affine"), training=True)
            per_ex = per_example_loss(loss_name, logits, y["label"], y["votes"])
            loss = tf.nn.compute_average_loss(per_ex, global_batch_size=global_batch)
        grads = tape.gradient(loss, variables)
        grads = optim.matconvnet_gradients(
            # the decay term is added on every replica and the replicas' gradients are
            # summed: each adds its share, so the decay counts once (as in the Distiller)
            grads, variables, cfg.weight_decay / replicas, lr_multiplier=lambda v: mults[id(v)],
            decay_filter=lambda v: id(v) in decayed)
        opt.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                 y["label"]), tf.float32))
        return loss, correct

    @tf.function
    def train_step(images, y):
        loss, correct = strategy.run(step_fn, args=(images, y))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    predict_fn = make_predict_fn(model)
    summaries = Summaries(run.tensorboard)
    summaries.hparams(config_lib.to_dict(cfg), trial=run.path.name)
    epochs_run = 0
    t_start = time.time()
    model.stop_training = False           # set by callbacks (EarlyStopping), as fit does
    hooks = callback_list(callbacks, model, epochs=len(schedule), steps=steps)
    hooks.on_train_begin()
    while state["epoch"] < len(schedule):
        if max_epochs is not None and epochs_run >= max_epochs:
            break
        epoch = state["epoch"]            # 0-based index of the epoch to run
        lr = schedule[epoch]
        optim.set_learning_rate(opt, lr)  # MatConvNet: lr after momentum
        hooks.on_epoch_begin(epoch)
        ds = faces_dataset(cfg.records, "train", batch_size=cfg.batch_size, training=True,
                           seed=cfg.seed * 1000 + epoch, augment=_augment_mode(cfg), repeat=True,
                           shuffle_buffer=cfg.shuffle_buffer,
                           skip_corrupt=skip_corrupt).take(steps)
        dist = strategy.experimental_distribute_dataset(ds)
        tot_loss, tot_correct, seen = 0.0, 0.0, 0
        t0 = time.time()
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{len(schedule)}", unit="batch")
        for i, (images, y) in enumerate(named_iteration(dist, cfg.records, "train", skipped)):
            if i == 0 and epoch == 0 and cfg.sample_images:
                local = strategy.experimental_local_results(images)[0]
                aff = y.get("affine")
                aff = strategy.experimental_local_results(aff)[0] if aff is not None else None
                summaries.images(_model_view(model, local, aff, cfg.sample_images), step=0,
                                 description=MODEL_VIEW_NOTE)
            hooks.on_train_batch_begin(i)
            loss, correct = train_step(images, y)
            hooks.on_train_batch_end(i, {"loss": float(loss)})
            tot_loss += float(loss)
            tot_correct += float(correct)
            seen += global_batch
            bar.update(1)
            bar.set_postfix(loss=f"{tot_loss / (i + 1):.3f}")
        bar.close()
        if not np.isfinite(tot_loss):
            raise CmeError(f"training diverged at epoch {epoch + 1} (loss {tot_loss}); "
                           f"lower the learning rate")
        train_time = time.time() - t0
        logits, labels, votes = predict_split(model, cfg.records, cfg.val_split,
                                              predict_fn=predict_fn, skip_corrupt=skip_corrupt)
        preds = logits.argmax(-1)
        val_acc = float((preds == labels).mean()) if len(labels) else 0.0
        val_loss = float(np.mean(np.asarray(per_example_loss(loss_name, logits, labels,
                                                             votes)))) if len(labels) else 0.0
        recall = recall_per_class(confusion_matrix(labels, preds, emotions.NUM_CLASSES))
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": tot_loss / max(1, steps),
               "train_accuracy": tot_correct / max(1, seen), "val_loss": val_loss,
               "val_accuracy": val_acc, "train_seconds": round(train_time, 2),
               "images_per_second": round(seen / max(train_time, 1e-9), 1)}
        known = [r for r in recall.values() if r is not None]
        train_logs = {"loss": row["train_loss"], "accuracy": row["train_accuracy"]}
        val_logs = {"loss": val_loss, "accuracy": val_acc,
                    "mean_recall": float(np.mean(known)) if known else None,
                    **{f"recall_{n}": r for n, r in recall.items()}}
        summaries.epoch(epoch + 1, train_logs, val_logs, learning_rate=lr)
        print(f"epoch {epoch + 1}/{len(schedule)} lr {lr:g}: train loss {row['train_loss']:.4f}"
              f" acc {row['train_accuracy']:.4f}, val loss {val_loss:.4f} acc {val_acc:.4f}"
              f" ({row['images_per_second']:.0f} img/s)", flush=True)
        hooks.on_epoch_end(epoch, {**train_logs, "learning_rate": lr, **{
            f"val_{k}": (np.nan if v is None else v) for k, v in val_logs.items()}})
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if val_acc > state["best_val_accuracy"]:
            state["best_val_accuracy"] = val_acc
            state["best_epoch"] = epoch + 1
            state["best_recall"] = recall
            model.cme_metadata = {**model.cme_metadata, "training": {
                "epoch": epoch + 1, "val_accuracy": val_acc, "loss": loss_name,
                "records": str(cfg.records), "init": cfg.init or None}, **origin}
            save_model(model, run.model_path)
        checkpoints.save(ckpt, run.checkpoints, epoch + 1, state)
        epochs_run += 1
        if model.stop_training:           # a callback (EarlyStopping, ...) asked to stop
            break
    hooks.on_train_end()
    metrics = {"best_epoch": state["best_epoch"],
               "best_val_accuracy": state["best_val_accuracy"],
               "val_recall_best_epoch": state.get("best_recall"),
               "epochs_done": state["epoch"], "epochs_total": len(schedule),
               "loss": loss_name, "history": state["history"],
               "skipped_corrupt_shards": skipped,
               "train_seconds_this_call": round(time.time() - t_start, 1)}
    contract.update_metrics(run.path, contract.TEACHER, training=metrics)
    return metrics


def _augment_mode(cfg) -> bool | str:
    """faces_dataset's ``augment``: False, "flip" (flip only) or True (flip + affine)."""
    if not cfg.augment:
        return False
    return True if cfg.affine else "flip"
