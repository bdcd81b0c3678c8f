"""``TF_CONFIG``, the cluster TensorFlow's multi-worker training reads, parsed without
TensorFlow: the number of workers for training's strategy (tf_cme/training/strategy.py) and
this task's place among all tasks, by which record building and labelling split their
shards over hosts (tf_cme/data/records.py ``Part``)."""
from __future__ import annotations

import json
import os


def _tf_config() -> dict | None:
    """``TF_CONFIG`` parsed (None: not set); invalid JSON is a ValueError saying so."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(conf, dict):
        raise ValueError("TF_CONFIG must be a JSON object with \"cluster\" and \"task\"")
    return conf


def num_workers() -> int:
    """Workers (and the chief) that ``TF_CONFIG`` lists; 1 without it."""
    conf = _tf_config()
    if conf is None:
        return 1
    cluster = conf.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def cluster_task() -> tuple[int, int] | None:
    """``(index, count)`` of this task among every task ``TF_CONFIG`` lists (None: no
    TF_CONFIG): the tasks in the order chief, worker, then any other type by name, so the
    chief is 0 and ``{"type": "worker", "index": i}`` is ``i + number of chiefs``. The
    record builders split their shards by it (``tf_cme.data.records.Part``)."""
    conf = _tf_config()
    if conf is None:
        return None
    cluster = conf.get("cluster") or {}
    task = conf.get("task") or {}
    types = [t for t in ("chief", "worker") if t in cluster] + sorted(
        t for t in cluster if t not in ("chief", "worker"))
    start, count = {}, 0
    for t in types:
        start[t] = count
        count += len(cluster[t])
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in start or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task {task!r} is not one of the tasks its cluster lists "
                         f"({', '.join(f'{t}: {len(cluster[t])}' for t in types) or 'none'})")
    return start[kind] + index, count
