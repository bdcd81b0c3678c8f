"""External benchmarks (the original's ``emo_benchmarks.m`` / ``run_cross_val.m``, protocol §7.3).

Features: the frozen student's 8 logits per clip (whole clip, front end in bucket
mode), or the ``random`` baseline (Gaussian features of the same width), or the
teacher's per-frame logits max-pooled over a clip's face frames (the "visual" variant,
when the external records have frames and a teacher is given).

Protocol:

1. a seeded permutation of all N clips (the dataset's own train/val split is ignored):
   ``numpy.random.default_rng(seed).permutation(N)``. MATLAB's ``rng(0); randperm(N)``
   (Mersenne Twister) cannot be matched bit for bit, so fold *membership* differs from
   the original; only the protocol is the same.
2. 10 folds with boundaries ``round(linspace(0, N, 11))``, rounded as MATLAB rounds
   (half away from zero; NumPy rounds half to even): fold k holds the permuted clips
   ``b[k] .. b[k+1]-1`` (0-based).
3. per fold, a multinomial logistic regression with intercepts and no regularisation
   (MATLAB ``mnrfit``; here scikit-learn ``LogisticRegression(C=inf, solver="lbfgs")``,
   multinomial for more than 2 classes) on the other 9 folds; held-out class = argmax.
4. accuracy per fold; mean +- std (N-1, as MATLAB's ``std``) over folds; confusion
   matrices summed over folds and row-normalised for the figure.

The logistic layer fitted on all clips is saved as ``calibration.json``
(``{"dataset", "classes", "weights": [[8 x K]], "bias": [K]}``; probabilities =
``softmax(logits @ weights + bias)``) so the export can offer it as a calibration head.
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import emotions
from ..utils import CmeError, progress, write_json
from ..metrics import classification as cls_lib
from ..metrics import contract, plots


@dataclasses.dataclass
class ExternalConfig:
    folds: int = 10                      # cross-validation folds (protocol §7.3)
    seed: int = 0                        # seed of the clip permutation (rng(0) in the original)
    random_draws: int = 10               # draws of the Gaussian-feature baseline, averaged
    random_seed: int = 0                 # seed of the first random-baseline draw
    max_iter: int = 1000                 # lbfgs iterations (separable folds have no finite
                                         # MLE and stop here; counted in the metrics)
    tol: float = 1e-6                    # lbfgs tolerance
    batch_size: int = 16                 # student crops per forward pass
    max_seconds: float = 19.9            # clips are clamped to this before the front end
    teacher_batch_size: int = 64         # face frames per teacher forward pass


# ---------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------

def matlab_round(x) -> np.ndarray:
    """MATLAB's ``round``: halves away from zero (NumPy's ``round`` goes to even)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def fold_boundaries(n: int, folds: int = 10) -> np.ndarray:
    """``round(linspace(0, n, folds + 1))`` with MATLAB rounding, as int64."""
    return matlab_round(np.linspace(0, n, folds + 1)).astype(np.int64)


def permutation(n: int, seed: int = 0) -> np.ndarray:
    """The seeded clip order: ``numpy.random.default_rng(seed).permutation(n)``."""
    return np.random.default_rng(seed).permutation(n)


def fold_indices(n: int, folds: int = 10, seed: int = 0) -> list[np.ndarray]:
    """The held-out clip indices of each fold (indices into the original order)."""
    perm = permutation(n, seed)
    b = fold_boundaries(n, folds)
    return [perm[b[k]:b[k + 1]] for k in range(folds)]


def check_labels(labels, num_classes: int, folds: int, what: str = "labels") -> None:
    """Clear errors for sets the protocol cannot run on."""
    labels = np.asarray(labels)
    n = labels.size
    present = np.unique(labels)
    if n < folds:
        raise CmeError(f"{what}: {n} examples, fewer than the {folds} folds of the "
                       f"cross-validation (use a bigger set or --set folds=K with K <= {n})")
    if present.size < 2:
        raise CmeError(f"{what}: only {present.size} class present "
                       f"({', '.join(map(str, present)) or 'none'}); a classifier needs "
                       f"at least 2 classes")
    if present.min() < 0 or present.max() >= num_classes:
        raise CmeError(f"{what}: labels outside 0..{num_classes - 1}")


# ---------------------------------------------------------------------------------
# Logistic regression
# ---------------------------------------------------------------------------------

@dataclasses.dataclass
class LogisticLayer:
    """``softmax(x @ weights + bias)`` over ``num_classes`` classes."""
    weights: np.ndarray          # [D, K]
    bias: np.ndarray             # [K]
    converged: bool = True

    def logits(self, x) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.weights + self.bias

    def predict(self, x) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


def fit_logistic(x, y, num_classes: int, max_iter: int = 1000,
                 tol: float = 1e-6) -> LogisticLayer:
    """Unregularised multinomial logistic regression with intercepts (``mnrfit``).

    Classes absent from ``y`` get weight 0 and bias -inf-like (-1e9), so they are never
    predicted; a single-class ``y`` predicts that class.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    d = x.shape[1]
    weights = np.zeros((d, num_classes))
    bias = np.full(num_classes, -1e9)
    present = np.unique(y)
    if present.size == 1:
        bias[present[0]] = 0.0
        return LogisticLayer(weights, bias)
    from threadpoolctl import threadpool_limits
    clf = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=max_iter, tol=tol)
    # one BLAS thread: these problems are tiny, and several threads on a busy machine
    # make each lbfgs iteration ten times slower
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef, inter = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:                          # binary: one logit = class 1 vs class 0
        coef = np.vstack([np.zeros_like(coef), coef])
        inter = np.r_[0.0, inter]
    for j, c in enumerate(clf.classes_):
        weights[:, c] = coef[j]
        bias[c] = inter[j]
    return LogisticLayer(weights, bias, converged)


@dataclasses.dataclass
class CvResult:
    fold_accuracies: np.ndarray      # [folds]
    confusion: np.ndarray            # [K, K] counts summed over folds (true x predicted)
    predictions: np.ndarray          # [N] held-out prediction of each clip
    not_converged: int = 0           # folds whose lbfgs hit max_iter

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        """Sample std over folds, N-1 as MATLAB's ``std`` (0 for a single fold)."""
        a = self.fold_accuracies
        return float(np.std(a, ddof=1)) if len(a) > 1 else 0.0

    def to_json(self, class_names: Sequence[str]) -> dict:
        return {"accuracy_mean": self.mean, "accuracy_std": self.std,
                "fold_accuracies": self.fold_accuracies.tolist(),
                "confusion": self.confusion.tolist(),
                "confusion_normalised": cls_lib.row_normalise(self.confusion).tolist(),
                "classes": list(class_names), "folds_not_converged": self.not_converged}


def cross_validate(features, labels, num_classes: int, folds: int = 10, seed: int = 0,
                   max_iter: int = 1000, tol: float = 1e-6) -> CvResult:
    """protocol §7.3 k-fold cross-validation of the logistic layer on ``features``."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    if not np.all(np.isfinite(x)):
        raise CmeError("features contain non-finite values")
    check_labels(y, num_classes, folds)
    n = y.size
    accs = np.zeros(folds)
    cm = np.zeros((num_classes, num_classes), np.int64)
    preds = np.full(n, -1, np.int64)
    not_conv = 0
    for k, test in enumerate(fold_indices(n, folds, seed)):
        train = np.ones(n, bool)
        train[test] = False
        layer = fit_logistic(x[train], y[train], num_classes, max_iter, tol)
        not_conv += int(not layer.converged)
        p = layer.predict(x[test])
        preds[test] = p
        accs[k] = cls_lib.accuracy(y[test], p)
        cm += cls_lib.confusion_matrix(y[test], p, num_classes)
    return CvResult(accs, cm, preds, not_conv)


def random_baseline(labels, num_classes: int, width: int = 8, draws: int = 10, seed: int = 0,
                    folds: int = 10, fold_seed: int = 0, max_iter: int = 1000,
                    tol: float = 1e-6) -> dict:
    """The ``random`` baseline: Gaussian features ``[N, width]`` (``randn``), the same
    cross-validation, averaged over ``draws`` draws (seeds ``seed .. seed+draws-1``)."""
    y = np.asarray(labels, np.int64)
    means, stds = [], []
    for d in range(draws):
        feats = np.random.default_rng(seed + d).standard_normal((y.size, width))
        r = cross_validate(feats, y, num_classes, folds, fold_seed, max_iter, tol)
        means.append(r.mean)
        stds.append(r.std)
    return {"accuracy_mean": float(np.mean(means)), "accuracy_std": float(np.mean(stds)),
            "accuracy_std_over_draws": float(np.std(means)), "draws": draws, "width": width,
            "draw_accuracies": means}


# ---------------------------------------------------------------------------------
# Features from the record set
# ---------------------------------------------------------------------------------

def read_external(records: str | os.PathLike, limit: int = 0,
                  skip_corrupt: bool = False) -> tuple[dict, list[dict]]:
    """``(manifest, clips)`` of an external record set; clips as NumPy dicts (corrupt
    shards: an error naming them, or left out with ``skip_corrupt``)."""
    from ..data import pipelines
    from .records import open_records
    manifest = open_records(records, "external")
    clips = []
    for i, ex in enumerate(pipelines.external_dataset(
            str(records), skip_corrupt=skip_corrupt).as_numpy_iterator()):
        if limit and i >= limit:
            break
        clips.append(ex)
    if not clips:
        raise CmeError(f"{records}: the record set has no clips")
    return manifest, clips


def manifest_classes(manifest: dict, records) -> list[str]:
    classes = manifest.get("classes") or (manifest.get("config") or {}).get("classes")
    if not classes:
        raise CmeError(f"{records}/manifest.json: no 'classes' list (not an external "
                       f"record set?)")
    return [str(c) for c in classes]


def student_features(model, waveforms: Sequence[np.ndarray], batch_size: int = 16,
                     max_seconds: float = 19.9) -> tuple[np.ndarray, np.ndarray]:
    """Frozen student logits ``[N, 8]`` and a mask of clips that could be scored."""
    from ..data.schema import SAMPLE_RATE
    from .scoring import StudentScorer
    scorer = StudentScorer(model, batch_size=batch_size,
                           max_samples=int(round(max_seconds * SAMPLE_RATE)))
    feats = np.zeros((len(waveforms), emotions.NUM_CLASSES), np.float32)
    ok = np.zeros(len(waveforms), bool)
    items = ((i, w) for i, w in enumerate(progress(waveforms, desc="student logits",
                                                    unit="clip")))
    for i, logits in scorer.score(items):
        feats[i] = logits
        ok[i] = True
    return feats, ok


def teacher_features(teacher, frames_per_clip: Sequence, batch_size: int = 64
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher logits max-pooled over each clip's face frames (JPEG bytes) ``[N, 8]``."""
    import tensorflow as tf
    feats = np.zeros((len(frames_per_clip), emotions.NUM_CLASSES), np.float32)
    ok = np.zeros(len(frames_per_clip), bool)
    fn = tf.function(lambda x: teacher(x, training=False), reduce_retracing=True)
    for i, frames in enumerate(progress(frames_per_clip, desc="teacher logits", unit="clip")):
        if frames is None or len(frames) == 0:
            continue
        imgs = [tf.io.decode_jpeg(bytes(f), channels=3).numpy() for f in frames]
        shape = imgs[0].shape
        imgs = [im if im.shape == shape else tf.image.resize(im, shape[:2]).numpy()
                .astype(np.uint8) for im in imgs]
        batch = np.stack(imgs)
        out = np.concatenate([np.asarray(fn(batch[j:j + batch_size]))
                              for j in range(0, len(batch), batch_size)])
        feats[i] = out.max(axis=0)
        ok[i] = True
    return feats, ok


def calibration(dataset: str, classes: Sequence[str], layer: LogisticLayer) -> dict:
    return {"dataset": dataset, "classes": list(classes),
            "weights": layer.weights.tolist(), "bias": layer.bias.tolist(),
            "input": "student logits (8, FER+ order: " + ", ".join(emotions.FERPLUS) + ")",
            "apply": "softmax(logits @ weights + bias)"}


def benchmark(model_run: str | os.PathLike, records: str | os.PathLike,
              out: str | os.PathLike, cfg: ExternalConfig | None = None,
              teacher_run: str | os.PathLike | None = None, skip_corrupt: bool = False) -> dict:
    """Run the external benchmark of the student of ``model_run`` on ``records`` (corrupt
    shards left out with ``skip_corrupt`` are listed in ``skipped_corrupt_shards``)."""
    from ..data.pipelines import skipped_shards
    from ..utils import as_str
    from .scoring import load_student
    cfg = cfg or ExternalConfig()
    t0 = time.perf_counter()
    out = Path(out)
    manifest, clips = read_external(records, skip_corrupt=skip_corrupt)
    skipped_shards_ = skipped_shards(records, None, skip_corrupt)   # checked once: listed
    classes = manifest_classes(manifest, records)
    k = len(classes)
    dataset = str(manifest.get("dataset") or as_str(clips[0].get("dataset", "")) or
                  Path(records).name)
    labels = np.array([int(c["label"]) for c in clips], np.int64)
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        raise CmeError(f"{records}: {int(bad.sum())} clips have labels outside the "
                       f"{k} classes of the manifest ({', '.join(classes)})")
    check_labels(labels, k, cfg.folds, what=f"{records}")
    model, model_path = load_student(model_run)

    feats, ok = student_features(model, [c["waveform"] for c in clips], cfg.batch_size,
                                 cfg.max_seconds)
    skipped = {}
    if not ok.all():
        skipped["too short for the student (under 100 frames)"] = int((~ok).sum())
    x, y = feats[ok], labels[ok]
    check_labels(y, k, cfg.folds, what=f"{records} (clips the student could score)")
    student = cross_validate(x, y, k, cfg.folds, cfg.seed, cfg.max_iter, cfg.tol)
    rand = random_baseline(y, k, width=x.shape[1], draws=cfg.random_draws,
                           seed=cfg.random_seed, folds=cfg.folds, fold_seed=cfg.seed,
                           max_iter=cfg.max_iter, tol=cfg.tol)
    full = fit_logistic(x, y, k, cfg.max_iter, cfg.tol)
    write_json(out / "calibration.json", calibration(dataset, classes, full))

    results = {"student": student.to_json(classes)}
    visual = {"status": "skipped"}
    has_frames = any(c.get("frames") is not None and len(c.get("frames")) > 0 for c in clips)
    if not has_frames:
        visual["reason"] = "the external records have no face frames"
    elif teacher_run is None:
        visual["reason"] = "no teacher given (--teacher RUN)"
    else:
        from ..models import io as model_io
        tpath = Path(teacher_run)
        tpath = tpath if tpath.suffix == ".keras" else tpath / "model.keras"
        if not tpath.exists():
            raise CmeError(f"{teacher_run}: no model.keras (teacher run not finished?)")
        teacher = model_io.load_model(tpath)
        tf_feats, tok = teacher_features(teacher, [c.get("frames") for c in clips],
                                         cfg.teacher_batch_size)
        check_labels(labels[tok], k, cfg.folds, what=f"{records} (clips with face frames)")
        vis = cross_validate(tf_feats[tok], labels[tok], k, cfg.folds, cfg.seed,
                             cfg.max_iter, cfg.tol)
        results["teacher_visual"] = vis.to_json(classes)
        visual = {"status": "done", "clips": int(tok.sum()), "teacher": str(tpath)}

    figs = out / "figures"
    plots.plot_confusion(cls_lib.row_normalise(student.confusion), classes,
                         figs / "confusion-student.png",
                         title=f"{dataset}: student logits + logistic layer "
                               f"({cfg.folds}-fold, {student.mean:.3f})")
    if "teacher_visual" in results:
        plots.plot_confusion(np.array(results["teacher_visual"]["confusion_normalised"]),
                             classes, figs / "confusion-teacher-visual.png",
                             title=f"{dataset}: teacher (faces) + logistic layer")
    bars = {"random": rand["accuracy_mean"], "student": student.mean}
    errs = {"random": rand["accuracy_std"], "student": student.std}
    if "teacher_visual" in results:
        bars["teacher (visual)"] = results["teacher_visual"]["accuracy_mean"]
        errs["teacher (visual)"] = results["teacher_visual"]["accuracy_std"]
    plots.plot_bars(bars, figs / "accuracy.png", title=f"{dataset}: {cfg.folds}-fold accuracy",
                    ylabel="accuracy", errors=errs, reference=1.0 / k,
                    reference_label=f"chance 1/{k}")

    counts = {name: int(np.sum(y == i)) for i, name in enumerate(classes)}
    metrics = {
        "dataset": dataset, "classes": classes, "clips": int(y.size), "class_counts": counts,
        "model": str(model_path), "records": str(records),
        "folds": cfg.folds, "seed": cfg.seed,
        "permutation": "numpy.random.default_rng(seed).permutation(N) (MATLAB randperm "
                       "cannot be matched bit for bit)",
        "fold_boundaries": fold_boundaries(int(y.size), cfg.folds).tolist(),
        "student": results["student"], "random": rand,
        "accuracy_mean": student.mean, "accuracy_std": student.std,
        "random_accuracy_mean": rand["accuracy_mean"],
        "chance": 1.0 / k, "teacher_visual": results.get("teacher_visual", visual),
        "skipped": skipped, "skipped_corrupt_shards": skipped_shards_,
        "calibration": "calibration.json",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return contract.write_metrics(out, contract.EXTERNAL, metrics)


def format_summary(metrics: dict) -> str:
    lines = [f"{metrics['dataset']}: {metrics['clips']} clips, {len(metrics['classes'])} "
             f"classes, {metrics['folds']}-fold CV (chance {metrics['chance']:.3f})",
             f"  student logits : {metrics['accuracy_mean']:.3f} +- {metrics['accuracy_std']:.3f}",
             f"  random (x{metrics['random']['draws']})  : "
             f"{metrics['random']['accuracy_mean']:.3f} +- {metrics['random']['accuracy_std']:.3f}"]
    tv = metrics.get("teacher_visual", {})
    if "accuracy_mean" in tv:
        lines.append(f"  teacher visual : {tv['accuracy_mean']:.3f} +- {tv['accuracy_std']:.3f}")
    else:
        lines.append(f"  teacher visual : skipped ({tv.get('reason', '')})")
    return "\n".join(lines)
