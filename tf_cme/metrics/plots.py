"""Figures of the evaluation: ROC curves, confusion matrices, bar charts.

Matplotlib with the Agg canvas and no pyplot state (safe in scripts, tests and
threads). Every function returns PNG bytes and, when ``path`` is given, also
writes them there atomically.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..utils import write_bytes_atomic

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
            "#e377c2", "#17becf")


def _figure(w: float, h: float):
    os.environ.setdefault("MPLBACKEND", "Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path: str | os.PathLike | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    if path is not None:
        write_bytes_atomic(Path(path), data)
    return data


def _roc_axes(ax, result, title: str | None, legend: bool = True, small: bool = False,
              xlabel: bool = True, ylabel: bool = True):
    ax.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="chance")
    if result is not None and result.evaluable:
        label = f"AUC = {result.auc:.3f} ({result.positives}+ / {result.negatives}-)"
        if small:
            label = f"AUC {result.auc:.3f} ({result.positives}+/{result.negatives}-)"
        ax.plot(result.fpr, result.tpr, color=_COLOURS[0], linewidth=2 if not small else 1.5,
                label=label)
    else:
        reason = result.reason if result is not None else "no data"
        ax.text(0.5, 0.5, f"not evaluable\n({reason})", ha="center", va="center",
                fontsize=7 if small else 11, color="#aa0000",
                bbox=dict(facecolor="#fff0f0", edgecolor="#aa0000"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    if title:
        ax.set_title(title, fontsize=9 if small else 12)
    if small:
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.tick_params(labelsize=6, length=2)
        if not xlabel:
            ax.set_xticklabels([])
        if not ylabel:
            ax.set_yticklabels([])
    if xlabel:
        ax.set_xlabel("false positive rate", fontsize=7 if small else 10)
    if ylabel:
        ax.set_ylabel("true positive rate", fontsize=7 if small else 10)
    if not small:
        ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(loc="lower right", fontsize=6 if small else 9,
                  handlelength=1.5 if small else 2.0)


def plot_roc(result, path=None, title: str | None = None) -> bytes:
    """One ROC curve (a :class:`~tf_cme.evaluation.roc.RocResult`) with the chance line."""
    fig = _figure(5, 5)
    ax = fig.add_axes((0.14, 0.11, 0.82, 0.8))
    if title is None:
        title = f"{result.emotion} ({result.split})"
    _roc_axes(ax, result, title)
    return _finish(fig, path)


def plot_roc_grid(results: Mapping[str, Mapping[str, object]], path=None,
                  emotions_order: Sequence[str] | None = None,
                  splits: Sequence[str] | None = None, title: str | None = None,
                  panel_paths: Mapping[tuple[str, str], str | os.PathLike] | None = None,
                  dpi: int = 110) -> bytes:
    """Grid of ROC curves: one row per emotion, one column per split.

    ``results[split][emotion]`` is a RocResult. Every panel has its axes, labels, title
    and legend, so ``panel_paths`` (``{(split, emotion): path}``) can save each panel as
    its own PNG, cropped from the one rendered grid (24 separate figures would cost
    ~20x more rendering).
    """
    splits = list(splits or results.keys())
    if emotions_order is None:
        emotions_order = list(next(iter(results.values())).keys()) if results else []
    rows, cols = max(1, len(emotions_order)), max(1, len(splits))
    panel, top = 2.8, 0.45 if title else 0.1
    w, h = panel * cols + 0.1, panel * rows + top + 0.1
    fig = _figure(w, h)
    axes = {}
    for i, emo in enumerate(emotions_order):
        for j, split in enumerate(splits):
            # fixed panel geometry (tight_layout is slow with many panels)
            left = (0.1 + j * panel + 0.55) / w
            bottom = (h - top - (i + 1) * panel + 0.5) / h
            ax = fig.add_axes((left, bottom, (panel - 0.75) / w, (panel - 0.85) / h))
            res = results.get(split, {}).get(emo)
            _roc_axes(ax, res, f"{emo} ({split})", legend=True, small=True)
            axes[(split, emo)] = ax
    if title:
        fig.suptitle(title, x=0.03, y=1 - 0.1 / h, ha="left", fontsize=11)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, format="PNG")
    data = buf.getvalue()
    if path is not None:
        write_bytes_atomic(Path(path), data)
    if panel_paths:
        renderer = canvas.get_renderer()
        height = rgba.shape[0]
        for key, ppath in panel_paths.items():
            if key not in axes:
                continue
            bb = axes[key].get_tightbbox(renderer)
            x0, x1 = max(0, int(bb.x0) - 6), min(rgba.shape[1], int(np.ceil(bb.x1)) + 6)
            y0 = max(0, height - int(np.ceil(bb.y1)) - 6)
            y1 = min(height, height - int(bb.y0) + 6)
            pbuf = io.BytesIO()
            Image.fromarray(rgba[y0:y1, x0:x1, :3]).save(pbuf, format="PNG")
            write_bytes_atomic(Path(ppath), pbuf.getvalue())
    return data


def plot_confusion(cm, class_names: Sequence[str], path=None, title: str = "confusion matrix",
                   normalised: bool = True) -> bytes:
    """Confusion matrix (rows: true class, columns: predicted) with values printed."""
    cm = np.asarray(cm, np.float64)
    k = len(class_names)
    fig = _figure(1.0 + 0.75 * k + 1.2, 1.0 + 0.75 * k)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalised else max(1.0, cm.max()))
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            v = cm[i, j]
            txt = f"{v:.2f}" if normalised else f"{int(v)}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                    color="white" if v > (0.5 if normalised else cm.max() / 2) else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of the true class" if normalised else "count")
    fig.tight_layout()
    return _finish(fig, path)


def plot_bars(values: Mapping[str, float], path=None, title: str = "", ylabel: str = "",
              errors: Mapping[str, float] | None = None, reference: float | None = None,
              reference_label: str = "chance", ylim: tuple[float, float] | None = (0, 1)) -> bytes:
    """A bar chart of named values, optional error bars and a horizontal reference line."""
    names = list(values)
    vals = [values[n] for n in names]
    fig = _figure(max(4, 1.1 * len(names) + 1.5), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    err = [errors.get(n, 0.0) for n in names] if errors else None
    ax.bar(range(len(names)), vals, yerr=err, capsize=4,
           color=[_COLOURS[i % len(_COLOURS)] for i in range(len(names))], label=ylabel or "value")
    for i, v in enumerate(vals):
        top = v + (err[i] if err else 0.0)
        ax.text(i, top + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="#444444", linestyle="--", linewidth=1,
                   label=f"{reference_label} ({reference:.3f})")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


def plot_distributions(dists: Mapping[str, Sequence[float]], class_names: Sequence[str],
                       path=None, title: str = "", highlight: int | None = None) -> bytes:
    """Grouped bars: one group per class, one bar per named distribution
    (e.g. ``{"teacher (face)": p, "student (voice)": q}``)."""
    k = len(class_names)
    n = max(1, len(dists))
    fig = _figure(max(4.5, 0.6 * k + 1.5), 2.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / n
    x = np.arange(k)
    for i, (name, p) in enumerate(dists.items()):
        ax.bar(x - 0.4 + width * (i + 0.5), np.asarray(p, np.float64), width,
               color=_COLOURS[i % len(_COLOURS)], label=name)
    if highlight is not None:
        ax.axvspan(highlight - 0.5, highlight + 0.5, color="#ffe9a8", alpha=0.5, zorder=0)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


def plot_histogram(counts: Mapping[str, int], path=None, title: str = "",
                   ylabel: str = "count", log: bool = False) -> bytes:
    """Bars of counts per class (e.g. teacher labels per emotion), optionally log-scaled."""
    names = list(counts)
    vals = [max(counts[n], 0) for n in names]
    fig = _figure(max(4, 0.7 * len(names) + 1.5), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), vals, color=_COLOURS[0], label=ylabel)
    if log and any(vals):
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)
