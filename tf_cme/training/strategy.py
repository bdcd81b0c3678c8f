"""The distribution strategy, chosen from the environment.

- ``TF_CONFIG`` naming more than one worker: ``MultiWorkerMirroredStrategy``;
- more than one visible GPU: ``MirroredStrategy``;
- otherwise the default (one device) strategy.

``TF_CME_CPU_REPLICAS=N`` splits the CPU into N logical devices and mirrors over
them (used by tests and for trying multi-replica code on a laptop); CPU mirroring
uses ``ReductionToOneDevice``, since the default collective ops fail with
synchronised batch normalisation there.
"""
from __future__ import annotations

import json
import os


def _num_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


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
