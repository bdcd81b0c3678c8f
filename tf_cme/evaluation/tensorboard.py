"""TensorBoard outputs of the evaluation: PR curves (the pr_curves plugin) and the
embedding projector."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import write_bytes_atomic


def pr_curve_data(labels, probs, num_thresholds: int = 101) -> np.ndarray:
    """The pr_curves plugin's ``[6, T]`` tensor (TP, FP, TN, FN, precision, recall),
    computed as ``tensorboard.plugins.pr_curve.summary.pb`` does."""
    labels = np.asarray(labels, bool)
    probs = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    buckets = np.floor(probs * (num_thresholds - 1)).astype(np.int64)
    tp_b = np.bincount(buckets[labels], minlength=num_thresholds).astype(np.float64)
    fp_b = np.bincount(buckets[~labels], minlength=num_thresholds).astype(np.float64)
    tp = np.cumsum(tp_b[::-1])[::-1]
    fp = np.cumsum(fp_b[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)


def write_pr_curves(logdir: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                    num_thresholds: int = 101, step: int = 0) -> list[str]:
    """One PR-curve summary per tag (``{tag: (binary labels, probabilities)}``), in the
    TensorBoard pr_curves plugin format (``tf.summary.write`` with the plugin's metadata;
    the plugin's own ``op``/``raw_data_op`` are TF1 graph ops). A tag whose labels have no
    positive gets a text summary ``<tag>/pr_curves`` saying so instead of an empty plot
    (its precision is undefined). Returns the tags written as text."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import metadata as pr_metadata
    writer = tf.summary.create_file_writer(str(logdir))
    empty: list[str] = []
    with writer.as_default():
        for tag, (labels, probs) in curves.items():
            labels = np.asarray(labels, bool)
            if not labels.any():
                tf.summary.text(f"{tag}/pr_curves",
                                f"no PR curve: no positive among {labels.size} tracks "
                                f"(the teacher never labels this emotion here)", step=step)
                empty.append(tag)
                continue
            md = pr_metadata.create_summary_metadata(
                display_name=tag, description=f"student PR curve: {tag}",
                num_thresholds=num_thresholds)
            tf.summary.write(f"{tag}/pr_curves", pr_curve_data(labels, probs, num_thresholds),
                             step=step, metadata=md.SerializeToString())
    writer.flush()
    writer.close()
    return empty


def write_projector(logdir: Path, tensors: dict[str, np.ndarray], metadata_rows: list[list[str]],
                    header: list[str]) -> None:
    """Embedding-projector export of one or more tensors over the same rows (``{name:
    [N, D]}``, the first shown first): ``<name>.tsv`` vectors, ``<name>_metadata.tsv`` (with a
    header row; the projector labels and colours by its first column by default), and one
    ``projector_config.pbtxt`` in ``logdir`` listing them all."""
    from tensorboard.plugins import projector
    logdir.mkdir(parents=True, exist_ok=True)
    config = projector.ProjectorConfig()
    for name, vectors in tensors.items():
        _projector_tensor(logdir, config, name, np.asarray(vectors), metadata_rows, header)
    projector.visualize_embeddings(str(logdir), config)


def _projector_tensor(logdir, config, name, vectors, metadata_rows, header):
    vec_text = "\n".join("\t".join(f"{v:.6g}" for v in row) for row in vectors) + "\n"
    write_bytes_atomic(logdir / f"{name}.tsv", vec_text.encode())
    clean = [[str(c).replace("\t", " ").replace("\n", " ") for c in row] for row in metadata_rows]
    md_text = "\n".join("\t".join(r) for r in [header] + clean) + "\n"
    write_bytes_atomic(logdir / f"{name}_metadata.tsv", md_text.encode())
    emb = config.embeddings.add()
    emb.tensor_name = name
    emb.tensor_path = f"{name}.tsv"
    emb.metadata_path = f"{name}_metadata.tsv"
    emb.tensor_shape.extend([int(vectors.shape[0]), int(vectors.shape[1])])


