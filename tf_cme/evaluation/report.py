"""The experiment report: one Markdown page and one self-contained HTML page.

Input: an **experiment folder** laid out as ``make demo`` writes it (ARCHITECTURE.md)::

    EXP/teacher/    teacher run (config.json, metrics.json from evaluate_teacher.py, figures/)
    EXP/labels/     labelled emovox records (manifest.json)
    EXP/student/    student run (config.json, model.keras, metrics.json)
    EXP/eval/       evaluate_student.py output (metrics.json, predictions.npz, figures/, gallery/)
    EXP/external/   benchmark_external.py output (metrics.json, calibration.json, figures/)
    EXP/timings.json  seconds per stage

Any subfolder may be missing (its section says so); a teacher, eval or external folder
that is there must hold a metrics.json of its kind (the run-folder contract,
:mod:`tf_cme.metrics.contract`), or the report fails naming it. Instead of an experiment folder, single run folders may be given
(``report.py runs/t runs/s runs/eval runs/ext``); each is recognised by the ``kind`` its
metrics.json declares, and later ones fill parts the earlier ones lacked.

The HTML page is self-contained: figures are inlined as base64 PNGs and the gallery's
audio as base64 WAV data URIs. The Markdown page links the same figures, copied into
``OUT/figures/`` and ``OUT/gallery/``. :func:`build_summary` gives the headline numbers
(``summary.json``), as fractions in [0, 1].
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from pathlib import Path
from typing import Any

from .. import emotions, provenance
from ..utils import CmeError, read_json, write_bytes_atomic, write_json
from ..data.schema import EMOVOX_SPLITS
from ..metrics import contract, plots

PARTS = ("teacher", "labels", "student", "eval", "external")
#: written by ``export_model.py --tflite`` (make demo: EXP/export/tflite/tflite.json)
TFLITE_SUMMARY = "export/tflite/tflite.json"


@dataclasses.dataclass
class ReportConfig:
    title: str = "tf-cme experiment report"   # page title
    gallery_size: int = 3                # clips per emotion in the gallery (at most what eval kept)
    teacher_figures: int = 6             # PNGs taken from the teacher run's figures/


# ---------------------------------------------------------------------------------
# Finding the parts of an experiment
# ---------------------------------------------------------------------------------

def _kind_of(path: Path) -> str | None:
    """Which part a single folder is: the ``kind`` its metrics.json declares (the run-folder
    contract, :mod:`tf_cme.metrics.contract`); None when it has no metrics.json."""
    return contract.kind_of(path)


# the parts whose figures the report shows: their metrics.json must follow the contract;
# the labels and student folders are shown by their config/manifest, metrics optional
FIGURE_PARTS = (contract.TEACHER, contract.EVAL, contract.EXTERNAL)


def _part_metrics(folder: Path, part: str) -> dict:
    if part in FIGURE_PARTS or (folder / contract.FILE).exists():
        return contract.read_metrics(folder, expect=part)
    return {}


def find_parts(paths) -> dict[str, Path | None]:
    """``{part: folder or None}`` plus ``timings`` (a file) from experiment or run folders."""
    parts: dict[str, Path | None] = {p: None for p in PARTS}
    parts["timings"] = None
    parts["tflite"] = None
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise CmeError(f"{p}: no such folder")
        subs = [s for s in PARTS if (p / s).is_dir()]
        if subs:
            for s in subs:
                _part_metrics(p / s, s)          # fails clearly when the contract is absent
                parts[s] = parts[s] or p / s
            if (p / "timings.json").exists():
                parts["timings"] = parts["timings"] or p / "timings.json"
            if (p / TFLITE_SUMMARY).exists():
                parts["tflite"] = parts["tflite"] or p / TFLITE_SUMMARY
            continue
        kind = _kind_of(p)
        if kind is None:
            raise CmeError(f"{p}: neither an experiment folder (with {', '.join(PARTS)} "
                           f"subfolders) nor a run folder (no {contract.FILE} declaring its "
                           f"kind, tf_cme/metrics/contract.py)")
        _part_metrics(p, kind)
        parts[kind] = parts[kind] or p
    if not any(parts[s] for s in PARTS):
        raise CmeError("nothing to report: no teacher, student, eval or external folder found")
    return parts


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise CmeError(f"{path}: unreadable JSON ({e})") from None


# ---------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------

def collect(parts: dict[str, Path | None]) -> dict:
    """Everything the report shows, read from the parts' folders."""
    data: dict[str, Any] = {"parts": {k: (str(v) if v else None) for k, v in parts.items()}}
    for part in PARTS:
        folder = parts.get(part)
        if folder is None:
            continue
        data.setdefault(part, {})["metrics"] = _part_metrics(folder, part)
        for name in ("config.json", "manifest.json"):
            f = folder / name
            if f.exists():
                data[part][name[:-5]] = _read(f)
    data["timings"] = _read(parts["timings"]) if parts.get("timings") else {}
    tfl = parts.get("tflite")
    data["tflite"] = _read(tfl) if tfl else None
    data["caveats"] = _caveats(parts, data)
    t = data.get("teacher", {}).get("metrics", {})
    data["teacher_accuracy"] = {"val": t.get(contract.TEACHER_VAL_ACCURACY),
                                "test": t.get(contract.TEACHER_TEST_ACCURACY)}
    return data


def _caveats(parts: dict, data: dict) -> list[str]:
    """The demo caveats (tf_cme.provenance) of the models behind the report: from each
    part's metrics.json (evaluations write ``caveat``) and the runs' model.keras metadata."""
    from ..models.io import read_metadata
    found = []
    for part in PARTS:
        c = (data.get(part) or {}).get("metrics", {}).get("caveat")
        folder = parts.get(part)
        if not c and folder is not None and (Path(folder) / "model.keras").is_file():
            try:
                c = provenance.caveat(read_metadata(Path(folder) / "model.keras"))
            except CmeError:
                c = None
        if c and c not in found:
            found.append(c)
    return found


def build_summary(data: dict) -> dict:
    """``summary.json``: the headline numbers as fractions in [0, 1] (None when missing)."""
    ev = data.get("eval", {}).get("metrics", {})
    ex = data.get("external", {}).get("metrics", {})
    mean_auc = ev.get("mean_auc", {}) if isinstance(ev, dict) else {}

    def num(v):
        return None if v is None else float(v)

    return {
        "teacher": {"val_accuracy": num(data["teacher_accuracy"]["val"]),
                    "test_accuracy": num(data["teacher_accuracy"]["test"])},
        "student": {"mean_auc": {s: num(mean_auc.get(s)) for s in ("train", "heard", "unheard")}},
        "external": {"accuracy_mean": num(ex.get("accuracy_mean")),
                     "accuracy_std": num(ex.get("accuracy_std")),
                     "random_accuracy_mean": num(ex.get("random_accuracy_mean"))},
        "timings": dict(data.get("timings") or {}),
    }


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_summary_table(summary: dict, data: dict | None = None) -> str:
    """The summary as a fixed-width text table (printed at the end of ``make demo``)."""
    t, s, e = summary["teacher"], summary["student"]["mean_auc"], summary["external"]
    rows = [("teacher", "FER+ val accuracy", _f(t["val_accuracy"])),
            ("teacher", "FER+ test accuracy", _f(t["test_accuracy"])),
            ("student", "mean AUC train", _f(s["train"])),
            ("student", "mean AUC heard", _f(s["heard"])),
            ("student", "mean AUC unheard", _f(s["unheard"]))]
    ds = ""
    if data and data.get("external", {}).get("metrics"):
        ds = f" ({data['external']['metrics'].get('dataset', '')})"
    acc = (f"{_f(e['accuracy_mean'])} +- {_f(e['accuracy_std'])}"
           if e["accuracy_mean"] is not None else "n/a")
    rows += [("external", f"student accuracy{ds}", acc),
             ("external", "random-feature accuracy", _f(e["random_accuracy_mean"]))]
    for stage, sec in (summary.get("timings") or {}).items():
        if isinstance(sec, (int, float)):
            rows.append(("timing", f"{stage} (s)", f"{sec:.1f}"))
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    w3 = max(len(r[2]) for r in rows)
    sep = f"+-{'-' * w1}-+-{'-' * w2}-+-{'-' * w3}-+"
    out = [sep, f"| {'area':<{w1}} | {'measure':<{w2}} | {'value':>{w3}} |", sep]
    out += [f"| {a:<{w1}} | {b:<{w2}} | {c:>{w3}} |" for a, b, c in rows]
    out.append(sep)
    return "\n".join(out)


# ---------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------

class _Page:
    """Collects sections once, renders Markdown (files beside) and HTML (all inlined)."""

    def __init__(self, out: Path):
        self.out = out
        self.md: list[str] = []
        self.html: list[str] = []
        self._n = 0

    def heading(self, text: str, level: int = 2):
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str):
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list[str]]):
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.md.append("| " + " | ".join(r) + " |")
        self.md.append("")
        h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in rows)
        self.html.append(f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>")

    def save(self, rel: str, data: bytes) -> str:
        write_bytes_atomic(self.out / rel, data)
        return rel

    def figure(self, png: bytes, caption: str, name: str | None = None):
        self._n += 1
        rel = self.save(f"figures/{name or f'figure-{self._n}'}.png", png)
        self.md.append(f"![{caption}]({rel})\n")
        self.html.append(
            f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,"
            f"{base64.b64encode(png).decode()}\"><figcaption>{html.escape(caption)}"
            f"</figcaption></figure>")

    def details(self, summary: str, text: str):
        self.md.append(f"<details><summary>{summary}</summary>\n\n```json\n{text}\n```\n"
                       f"</details>\n")
        self.html.append(f"<details><summary>{html.escape(summary)}</summary><pre>"
                         f"{html.escape(text)}</pre></details>")

    def raw(self, md: str, html_text: str):
        self.md.append(md)
        self.html.append(html_text)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0.5em}figure img{max-width:100%}figcaption{font-size:90%;
color:#555}pre{background:#f7f7f7;padding:0.6em;overflow:auto;font-size:85%}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.clip{border:1px solid #ddd;border-radius:6px;
padding:8px;width:330px}.clip img.face{width:96px;height:96px;object-fit:cover;float:left;
margin-right:8px}.clip img.bars{width:100%}.clip .meta{font-size:80%;color:#444}
.clip audio{width:100%}
"""


def _auc_rows(ev: dict) -> list[list[str]]:
    rows = []
    ignore = set(ev.get("ignore", []))
    for emo in emotions.FERPLUS:
        row = [emo + (" (ignored)" if emo in ignore else "")]
        for s in EMOVOX_SPLITS:
            r = ev.get("auc", {}).get(s, {}).get(emo)
            if r is None:
                row.append("n/a")
            elif not r.get("evaluable"):
                row.append(f"not evaluable ({r.get('reason')})")
            else:
                row.append(f"{r['auc']:.3f} ({r['positives']})")
        rows.append(row)
    rows.append(["mean"] + [_f(ev.get("mean_auc", {}).get(s)) for s in EMOVOX_SPLITS])
    rows.append(["tracks"] + [str(ev.get("tracks", {}).get(s, 0)) for s in EMOVOX_SPLITS])
    return rows


def _png_files(folder: Path | None, limit: int) -> list[Path]:
    if folder is None or not (folder / "figures").is_dir():
        return []
    return sorted((folder / "figures").glob("*.png"))[:limit]


def _gallery(page: _Page, eval_dir: Path, cfg: ReportConfig):
    gfile = eval_dir / "gallery" / "gallery.json"
    if not gfile.exists():
        page.para("No gallery: the evaluation folder has no gallery/gallery.json.")
        return
    g = _read(gfile)
    classes = g.get("classes", list(emotions.FERPLUS))
    by_emotion: dict[str, list[dict]] = {}
    for e in g.get("entries", []):
        by_emotion.setdefault(e["emotion"], []).append(e)
    page.para("For each emotion, the clips in which the teacher is most sure of it in some "
              "frame (the original's sample_audio.m): the peak face frame, the teacher's "
              "distribution on that frame beside the student's on the clip's audio, and "
              "the audio around the peak frame.")
    for emo in classes:
        entries = sorted(by_emotion.get(emo, []), key=lambda e: e.get("rank", 0))
        entries = entries[: cfg.gallery_size]
        page.heading(emo, 3)
        if not entries:
            page.para("No clip.")
            continue
        md_cells, html_cells = [], []
        for e in entries:
            stem = f"{emo}-{e.get('rank', 0)}"
            dists = {"teacher (face, peak frame)": e["teacher_probs"]}
            if e.get("student_probs") is not None:
                dists["student (voice, whole clip)"] = e["student_probs"]
            bars = plots.plot_distributions(dists, classes, title=f"{e['key']}",
                                            highlight=classes.index(emo))
            bars_rel = page.save(f"gallery/{stem}-bars.png", bars)
            face_html = audio_html = ""
            face_md = audio_md = ""
            if e.get("frame") and (eval_dir / "gallery" / e["frame"]).exists():
                jpg = (eval_dir / "gallery" / e["frame"]).read_bytes()
                rel = page.save(f"gallery/{e['frame']}", jpg)
                face_md = f"![face]({rel}) "
                face_html = (f"<img class=\"face\" alt=\"peak face frame\" src=\"data:image/jpeg;"
                             f"base64,{base64.b64encode(jpg).decode()}\">")
            if e.get("audio") and (eval_dir / "gallery" / e["audio"]).exists():
                wav = (eval_dir / "gallery" / e["audio"]).read_bytes()
                rel = page.save(f"gallery/{e['audio']}", wav)
                audio_md = f" [audio]({rel})"
                audio_html = (f"<audio controls preload=\"none\" src=\"data:audio/wav;base64,"
                              f"{base64.b64encode(wav).decode()}\"></audio>")
            meta = (f"{e['key']} ({e['split']}), teacher p({emo}) = {e['confidence']:.3f} "
                    f"at {e.get('time_s', 0):.2f} s")
            md_cells.append(f"{face_md}![bars]({bars_rel}){audio_md}<br>{meta}")
            html_cells.append(
                f"<div class=\"clip\">{face_html}<div class=\"meta\">{html.escape(meta)}</div>"
                f"<img class=\"bars\" alt=\"teacher and student distributions\" "
                f"src=\"data:image/png;base64,{base64.b64encode(bars).decode()}\">"
                f"{audio_html}</div>")
        page.raw("\n".join(f"- {c}" for c in md_cells) + "\n",
                 "<div class=\"gallery\">" + "".join(html_cells) + "</div>")


def render(data: dict, parts: dict, out: Path, cfg: ReportConfig, summary: dict) -> _Page:
    page = _Page(out)
    page.heading(cfg.title, 1)
    for c in data.get("caveats") or []:
        text = c[0].upper() + c[1:] + "."
        page.raw(f"\n**{text}**\n", f"<p><strong>{html.escape(text)}</strong></p>")
    page.para("Sources: " + ", ".join(f"{k} = {v}" for k, v in data["parts"].items() if v))

    page.heading("Summary")
    page.raw("```\n" + format_summary_table(summary, data) + "\n```\n",
             "<pre>" + html.escape(format_summary_table(summary, data)) + "</pre>")

    # teacher
    page.heading("Teacher: FER+ accuracy")
    ta = data["teacher_accuracy"]
    if parts.get("teacher") is None:
        page.para("No teacher run.")
    else:
        page.table(["split", "accuracy"], [["FER+ val (PublicTest)", _f(ta["val"])],
                                          ["FER+ test (PrivateTest)", _f(ta["test"])]])
        if ta["val"] is None and ta["test"] is None:
            page.para("The teacher run's metrics.json has no val/test accuracy "
                      "(run evaluate_teacher.py).")
        for png in _png_files(parts.get("teacher"), cfg.teacher_figures):
            page.figure(png.read_bytes(), f"teacher: {png.stem}", name=f"teacher-{png.stem}")

    # student
    page.heading("Student: ROC AUC per emotion (EmoVoxCeleb)")
    ev = data.get("eval", {}).get("metrics")
    if not ev:
        page.para("No student evaluation (run evaluate_student.py).")
    else:
        page.para("AUC of the student's softmax score for each emotion against the teacher's "
                  "label (argmax of the per-emotion max over all face frames of a track); in "
                  "brackets the number of tracks with that label. The mean is over emotions "
                  "that occur and are not ignored (protocol §7.1).")
        page.table(["emotion"] + list(EMOVOX_SPLITS), _auc_rows(ev))
        if ev.get("skipped"):
            page.para("Skipped tracks: " + ", ".join(f"{k}: {v}" for k, v in ev["skipped"].items()))
        for name, cap in (("roc-grid", "student ROC curves, per emotion and split"),
                          ("teacher-labels", "teacher labels per emotion (all tracks)")):
            f = parts["eval"] / "figures" / f"{name}.png"
            if f.exists():
                page.figure(f.read_bytes(), cap, name=f"eval-{name}")

    # external
    page.heading("External benchmark: frozen student + logistic layer")
    ex = data.get("external", {}).get("metrics")
    if not ex:
        page.para("No external benchmark (run benchmark_external.py).")
    else:
        rows = [["student logits", f"{ex['accuracy_mean']:.3f}", f"{ex['accuracy_std']:.3f}"],
                [f"random features (x{ex['random']['draws']})",
                 f"{ex['random']['accuracy_mean']:.3f}", f"{ex['random']['accuracy_std']:.3f}"]]
        tv = ex.get("teacher_visual", {})
        if "accuracy_mean" in tv:
            rows.append(["teacher (faces)", f"{tv['accuracy_mean']:.3f}",
                         f"{tv['accuracy_std']:.3f}"])
        rows.append(["chance", f"{ex['chance']:.3f}", ""])
        page.para(f"{ex['dataset']}: {ex['clips']} clips, classes {', '.join(ex['classes'])}; "
                  f"{ex['folds']}-fold cross-validation on a seeded permutation (protocol §7.3).")
        page.table(["features", "accuracy (mean over folds)", "std over folds"], rows)
        if "accuracy_mean" not in tv:
            page.para(f"Teacher-visual variant: skipped ({tv.get('reason', '')}).")
        for name, cap in (("accuracy", "external accuracy against the random baseline"),
                          ("confusion-student", "row-normalised confusion matrix, summed over "
                                                "folds (student)"),
                          ("confusion-teacher-visual", "confusion matrix (teacher, faces)")):
            f = parts["external"] / "figures" / f"{name}.png"
            if f.exists():
                page.figure(f.read_bytes(), cap, name=f"external-{name}")

    # TFLite
    page.heading("TFLite student")
    tfl = data.get("tflite")
    if not tfl:
        page.para("No TFLite export (run export_model.py RUN --tflite).")
    else:
        page.para("LiteRT (ai-edge-litert, no TensorFlow) against the Keras model on a "
                  f"speech-like signal ({tfl.get('parity_input', '')}); fixed window, the "
                  "front end inside the file.")
        page.table(["file", "window (s)", "quantisation", "size (MB)",
                    "max |logit - Keras|", "select-TF ops"],
                   [[f["file"], f"{f.get('window_s', 0):g}", f["quantization"],
                     f"{f['bytes'] / 1e6:.2f}", f"{f['max_abs_logit_diff']:.2e}",
                     ", ".join(f.get("select_tf_ops") or []) or "none"]
                    for f in tfl.get("files", [])])

    # gallery
    page.heading("Gallery: what the teacher saw, what the student heard")
    if parts.get("eval") is None:
        page.para("No evaluation folder, no gallery.")
    else:
        _gallery(page, parts["eval"], cfg)

    # configs
    page.heading("Run configurations")
    for part in PARTS:
        d = data.get(part, {})
        for name in ("config", "manifest"):
            if name in d:
                text = json.dumps(d[name], indent=2, sort_keys=True, default=str)
                if len(text) > 20000:
                    text = text[:20000] + "\n... (truncated)"
                page.details(f"{part}/{name}.json", text)
    if data.get("timings"):
        page.table(["stage", "seconds"], [[k, f"{v:.1f}" if isinstance(v, (int, float))
                                           else str(v)] for k, v in data["timings"].items()])
    return page


def write_report(paths, out: str | os.PathLike, summary_path: str | os.PathLike | None = None,
                 cfg: ReportConfig | None = None) -> dict:
    """Write ``OUT/report.md``, ``OUT/report.html`` (self-contained), ``OUT/summary.json``
    and, when given, ``summary_path``. Returns the summary."""
    cfg = cfg or ReportConfig()
    out = Path(out)
    parts = find_parts(paths)
    data = collect(parts)
    summary = build_summary(data)
    for part, folder in parts.items():
        if folder is not None and folder.is_dir() and folder.resolve() == out.resolve():
            raise CmeError(f"--out {out} is the {part} folder the report reads; "
                           f"choose another folder (e.g. EXP/report)")
    out.mkdir(parents=True, exist_ok=True)
    page = render(data, parts, out, cfg, summary)
    write_bytes_atomic(out / "report.md", ("\n".join(page.md) + "\n").encode())
    doc = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(cfg.title)}</title><style>{_CSS}</style></head><body>"
           + "\n".join(page.html) + "</body></html>\n")
    write_bytes_atomic(out / "report.html", doc.encode())
    write_json(out / "summary.json", summary)
    if summary_path is not None:
        write_json(summary_path, summary)
    return summary
