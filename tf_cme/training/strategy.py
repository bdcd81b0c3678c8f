"""The distribution strategy, chosen from the environment.

- ``TF_CONFIG`` naming more than one worker: ``MultiWorkerMirroredStrategy``;
- more than one visible GPU: ``MirroredStrategy``;
- otherwise the default (one device) strategy.

:func:`inference_strategy` is the same choice for inference on one host (labelling): a
``MirroredStrategy`` over every visible GPU (or ``TF_CME_CPU_REPLICAS`` logical CPUs), or
None for one device. Several hosts split the shards instead (``--num-workers``).

``TF_CME_CPU_REPLICAS=N`` splits the CPU into N logical devices and mirrors over
them (used by tests and for trying multi-replica code on a laptop); CPU mirroring
uses ``ReductionToOneDevice``, since the default collective ops fail with
synchronised batch normalisation there.
"""
from __future__ import annotations

import os

from ..cluster import cluster_task, num_workers as _num_workers  # noqa: F401  (re-exported)


def split_cpu(n: int) -> list:
    """Configure ``n`` logical CPU devices (must run before TF initialises devices)."""
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        pass   # already initialised; keep whatever exists
    return tf.config.list_logical_devices("CPU")


def from_environment():
    import tensorflow as tf
    if _num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    n_cpu = int(os.environ.get("TF_CME_CPU_REPLICAS", "0") or 0)
    if n_cpu > 1:
        devices = split_cpu(n_cpu)
        return tf.distribute.MirroredStrategy(
            [d.name for d in devices[:n_cpu]],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def inference_strategy():
    """A MirroredStrategy over this host's GPUs (or TF_CME_CPU_REPLICAS logical CPUs) when
    there are several, else None (one device: no strategy needed)."""
    import tensorflow as tf
    n_cpu = int(os.environ.get("TF_CME_CPU_REPLICAS", "0") or 0)
    if n_cpu > 1:
        devices = split_cpu(n_cpu)
        return tf.distribute.MirroredStrategy([d.name for d in devices[:n_cpu]],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return None


def split_batch_call(strategy, fn):
    """``fn(batch) -> [n, ...]`` run with each replica of ``strategy`` taking a contiguous
    share of the batch (sizes differ by at most one), results concatenated in order: the
    same rows as ``fn(batch)`` on one device. Call it inside a ``tf.function``."""
    import tensorflow as tf
    n = strategy.num_replicas_in_sync

    def part(x):
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        b = tf.shape(x)[0]
        return fn(x[(i * b) // n:((i + 1) * b) // n])

    def call(batch):
        out = strategy.run(part, args=(batch,))
        return tf.concat(strategy.experimental_local_results(out), axis=0)
    return call
