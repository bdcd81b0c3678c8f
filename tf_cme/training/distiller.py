"""``Distiller``: a Keras model that trains the student on teacher logits (protocol §6).

``train_step`` / ``test_step`` take batches ``(waveform [B, L], {"logits": [B, 8],
"label": [B]})`` as :func:`tf_cme.data.pipelines.distill_dataset` yields them: the
targets are the teacher's logits aggregated over the crop's face frames (max by
default), computed offline when the records were labelled. With an online frozen
``teacher`` the batches are ``(waveform, {"frames": uint8 [B, K, S, S, 3],
"frame_mask": bool [B, K]})`` from :func:`tf_cme.data.pipelines.distill_frames_dataset`:
the teacher (``trainable=False``, called with ``training=False``, never in the
optimizer) runs on the B*K frames, its logits are mapped into FER+ order
(:meth:`tf_cme.models.teacher.Teacher.ferplus_logits`), cast to float32 and aggregated over
the valid frames with the same per-emotion max (``agg="max"``) or mean as the offline
labels. Per step:

- the loss is the sum of the per-example losses divided by the **global** batch size
  (the all-reduced count of examples over replicas), so that the gradients that the
  optimizer sums over replicas are those of the batch mean on the global batch;
- with more than one replica the student must use synchronised BN (built with
  ``synchronized=True``; :func:`tf_cme.training.student.train` does so), so several
  replicas compute what one device computes on the global batch;
- mixed precision: the loss is scaled by the optimizer (``LossScaleOptimizer``, which
  Keras wraps around the optimizer under a ``mixed_float16`` policy) and the weight
  decay term is scaled the same way, so the unscaled update is unchanged;
- MatConvNet weight decay (:func:`tf_cme.training.optim.matconvnet_gradients`): the L2
  term ``wd * w`` is added to the gradient before momentum, on convolution kernels
  only (biases and BN parameters are not decayed). Each replica adds ``wd / R``.

Metrics (exact, over everything seen since the last reset, all replicas): ``loss``,
``top1_error`` (student argmax vs the teacher's max label), ``recall_<emotion>`` per
class and ``mean_recall`` (classes absent from the targets count 0, as the original's
``meanAcc``), and ``share_<emotion>`` (each class's share of the targets' max labels).
The original's ``ErrorStats`` over-weighted early batches (protocol §6); these are exact.
"""
from __future__ import annotations

import keras
from keras import ops

from .. import emotions
from ..utils import CmeError
from . import losses as losses_lib
from .optim import matconvnet_gradients


@keras.saving.register_keras_serializable(package="tf_cme")
class ClassStats(keras.metrics.Metric):
    """Confusion counts (rows: target max label, columns: student argmax) -> recalls, shares."""

    def __init__(self, num_classes: int = emotions.NUM_CLASSES, name="classes", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable((num_classes, num_classes), "zeros",
                                           dtype="float32", name="confusion")

    def update_state(self, target_label, pred_label, sample_weight=None):
        n = self.num_classes
        idx = ops.cast(target_label, "int32") * n + ops.cast(pred_label, "int32")
        counts = ops.sum(ops.one_hot(idx, n * n, dtype="float32"), axis=0)
        self.confusion.assign_add(ops.reshape(counts, (n, n)))

    def result(self):
        c = ops.convert_to_tensor(self.confusion)
        support = ops.sum(c, axis=1)
        diag = ops.diagonal(c)
        recall = ops.where(support > 0, diag / ops.maximum(support, 1.0), 0.0)
        share = support / ops.maximum(ops.sum(support), 1.0)
        out = {}
        for i, name in enumerate(emotions.FERPLUS[: self.num_classes]):
            out[f"recall_{name}"] = recall[i]
        out["mean_recall"] = ops.mean(recall)
        for i, name in enumerate(emotions.FERPLUS[: self.num_classes]):
            out[f"share_{name}"] = share[i]
        return out

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _decayed(v) -> bool:
    """Convolution kernels are decayed; biases and BN parameters are not."""
    name = getattr(v, "path", None) or v.name
    return name.split("/")[-1].split(":")[0] == "kernel"


class Distiller(keras.Model):
    """Wraps a student for distillation; ``fit`` / ``evaluate`` use the custom steps.

    Args:
      student: the student (``build_model("emovoxceleb-student", ...)``).
      loss: ``"hot-cross-ent"`` (default), ``"euclidean"`` or ``"softmaxlog"``.
      temperature: T of ``hot-cross-ent`` (both sides; 2 as the original).
      weight_decay: MatConvNet L2 weight decay (5e-4).
      teacher: an online frozen teacher (a Keras face model, a
        :class:`tf_cme.models.teacher.Teacher` or a ``.keras`` path; see
        :func:`tf_cme.models.teacher.as_teacher`), or None to distil from the records' logits.
      agg: ``"max"`` or ``"mean"``: how the online teacher's logits are aggregated
        over the crop's frames (the offline targets are aggregated by the pipeline).
    """

    def __init__(self, student, loss: str = "hot-cross-ent", temperature: float = 2.0,
                 weight_decay: float = 5e-4, teacher=None, agg: str = "max",
                 name: str = "distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        if agg not in ("max", "mean"):
            raise CmeError(f"agg must be 'max' or 'mean', got {agg!r}")
        self.agg = agg
        self.online = None
        if teacher is not None:
            from ..models.teacher import as_teacher
            online = as_teacher(teacher)
            online.model.trainable = False
            self.online = online
            self.teacher = online.model      # tracked (mirrored), frozen, not optimised
        self.student = student
        self.loss_name = loss
        self.temperature = float(temperature)
        self.loss_fn = losses_lib.get(loss, temperature)
        self.weight_decay = float(weight_decay)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.error_tracker = keras.metrics.Mean(name="top1_error")
        self.class_stats = ClassStats(name="classes")
        self.built = True

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.error_tracker, self.class_stats]

    def compile(self, optimizer, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self._check_replicas()
        self.optimizer.build(self.student.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's TF trainer traces a "symbolic build" on a first batch reduced with
        # strategy.reduce("MEAN"), which fails under MultiWorkerMirroredStrategy
        # (PerReplica -> Tensor). Nothing needs it here: the student is built and the
        # optimizer is built in compile(), and the Distiller has no compiled loss.
        return

    def _check_replicas(self):
        import tensorflow as tf
        n = tf.distribute.get_strategy().num_replicas_in_sync
        if n > 1:
            plain = [l.name for l in self.student.layers
                     if isinstance(l, keras.layers.BatchNormalization) and not l.synchronized]
            if plain:
                raise ValueError(
                    f"{n} replicas but the student's batch normalisation is not "
                    f"synchronised ({plain[0]}, ...): build it with synchronized=True")

    # -- steps ---------------------------------------------------------------------
    def targets(self, y):
        """The float32 [B, 8] targets of a batch's ``y``: its ``logits``, or with an
        online teacher the teacher's logits aggregated over ``frames`` / ``frame_mask``."""
        if self.online is not None:
            if not isinstance(y, dict) or "frames" not in y:
                raise CmeError("an online teacher is given but the batches carry no face "
                               "frames: read the records with "
                               "tf_cme.data.pipelines.distill_frames_dataset")
            return self._online_targets(y["frames"], y.get("frame_mask"))
        if isinstance(y, dict):
            if "logits" not in y:
                raise CmeError("the batches carry no teacher logits (unlabelled records?) "
                               "and no online teacher is given")
            t = y["logits"]
        else:
            t = y
        if t.shape[-1] is not None and t.shape[-1] != emotions.NUM_CLASSES:
            raise CmeError(f"teacher logits have width {t.shape[-1]}, expected "
                           f"{emotions.NUM_CLASSES} (FER+ order)")
        return ops.cast(t, "float32")

    def _online_targets(self, frames, mask):
        import tensorflow as tf
        from ..data.pipelines import aggregate_frame_logits
        frames = tf.convert_to_tensor(frames)
        if frames.shape.rank != 5:
            raise CmeError(f"online teacher: frames must be [B, K, S, S, 3], got {frames.shape}")
        dims = tf.shape(frames)
        b, k = dims[0], dims[1]
        tail = frames.shape[2:]
        flat = tf.reshape(frames, [-1, *tail] if tail.is_fully_defined()
                          else tf.concat([[-1], dims[2:]], 0))
        z = self.online.ferplus_logits(flat)
        if z.shape[-1] is not None and z.shape[-1] != emotions.NUM_CLASSES:
            raise CmeError(f"online teacher: its logits have width {z.shape[-1]} after mapping, "
                           f"expected {emotions.NUM_CLASSES} (FER+ order)")
        z = tf.stop_gradient(tf.reshape(tf.cast(z, tf.float32), [b, k, emotions.NUM_CLASSES]))
        if mask is None:
            mask = tf.ones([b, k], tf.bool)
        return aggregate_frame_logits(z, mask, self.agg)

    def _update_metrics(self, targets, logits, per_example):
        self.loss_tracker.update_state(per_example)
        t_label = ops.argmax(targets, axis=-1)
        p_label = ops.argmax(logits, axis=-1)
        self.error_tracker.update_state(ops.cast(ops.not_equal(t_label, p_label), "float32"))
        self.class_stats.update_state(t_label, p_label)
        return self._logs()

    def _logs(self):
        import tensorflow as tf
        out = {}
        for m in self.metrics:
            r = m.result()
            if isinstance(r, dict):
                out.update(r)
            else:
                out[m.name] = r
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces per-step logs with strategy.reduce("MEAN", v, axis=0) under
            # multi-worker training, which needs an axis: give every value one. The
            # epoch's logs are read from the metrics themselves (all replicas summed).
            out = {k: tf.reshape(v, [1]) for k, v in out.items()}
        return out

    def train_step(self, data):
        import tensorflow as tf
        x, y = data[0], data[1]
        targets = self.targets(y)
        strategy = tf.distribute.get_strategy()
        replicas = strategy.num_replicas_in_sync
        local_n = tf.cast(tf.shape(x)[0], tf.float32)
        ctx = tf.distribute.get_replica_context()
        global_n = (ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_n)
                    if (ctx is not None and replicas > 1) else local_n)
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            logits = ops.cast(self.student(x, training=True), "float32")
            per_example = self.loss_fn(targets, logits)
            loss = ops.sum(per_example) / global_n
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        scale = self.optimizer.scale_loss(tf.constant(1.0))
        wd = tf.constant(self.weight_decay / replicas) * tf.cast(scale, tf.float32)
        grads = matconvnet_gradients(grads, variables, wd, decay_filter=_decayed)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update_metrics(targets, logits, per_example)

    def test_step(self, data):
        x, y = data[0], data[1]
        targets = self.targets(y)
        logits = ops.cast(self.student(x, training=False), "float32")
        per_example = self.loss_fn(targets, logits)
        return self._update_metrics(targets, logits, per_example)
