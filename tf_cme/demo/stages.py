"""`make demo`: the whole experiment on the generated demo corpus.

Each stage runs the project's real command-line scripts, in order, and writes
under ``OUT/<stage>/`` (ARCHITECTURE.md: ``runs/demo/{corpus,records,teacher,
labels,student,eval,external,export,report}/``). A stage that finishes writes
``OUT/<stage>/.complete`` with the commands it ran; a second ``make demo`` skips
complete stages whose commands are unchanged (a stage whose commands changed, e.g.
after an upgrade, runs again from scratch), and a stage that runs again invalidates
every stage after it: their folders are removed and rebuilt. A stage interrupted half-way (no ``.complete``) resumes where it
stopped, since every script it runs is resumable. Wall times go to
``OUT/timings.json``.

The demo uses the registry's real architectures at small widths, small inputs
and short crops so that everything, install included, fits in about 15 minutes
on 2 CPU cores. Users run the same scripts with the real sizes (the defaults).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..utils import CmeError, read_json, write_json

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
MARKER = ".complete"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    commands: tuple[tuple[str, ...], ...]   # each: script name + arguments ({out} = OUT)
    description: str


def stages() -> list[Stage]:
    """The demo stages in order. ``{out}`` stands for the demo folder."""
    return [
        Stage("corpus", (
            ("make_demo_data.py", "--out", "{out}/corpus", "--size", "small", "--seed", "0",
             "--force", "--quiet"),
        ), "synthetic FER2013/FER+ CSVs, VoxCeleb-layout wavs and face frames, an "
           "RML-style acted set, and talking-face videos"),
        Stage("records", (
            ("build_records.py", "ferplus",
             "--fer-csv", "{out}/corpus/ferplus/fer2013.csv",
             "--ferplus-csv", "{out}/corpus/ferplus/fer2013new.csv",
             "--out", "{out}/records/ferplus", "--overwrite"),
            ("build_records.py", "emovox", "--root", "{out}/corpus/voxceleb",
             "--out", "{out}/records/emovox", "--overwrite"),
            ("build_records.py", "external", "--root", "{out}/corpus/external",
             "--out", "{out}/records/external", "--overwrite"),
        ), "TFRecords: FER+ faces (CNTK cleaning), EmoVoxCeleb clips with face frames, "
           "the external acted set"),
        *_TEACHER_STUDENT_STAGES,
        Stage("eval", (
            ("evaluate_student.py", "{out}/student", "--records", "{out}/labels",
             "--out", "{out}/eval"),
        ), "student ROC AUC per emotion against the teacher on train / heard / unheard"),
        Stage("external", (
            ("benchmark_external.py", "--model", "{out}/student",
             "--records", "{out}/records/external", "--out", "{out}/external"),
        ), "frozen student + 10-fold logistic regression on the acted set, vs random"),
        Stage("export", (
            ("export_model.py", "{out}/student", "--out", "{out}/export"),
            ("export_model.py", "{out}/teacher", "--out", "{out}/export"),
            ("predict.py", "--model", "{out}/export/emovoxceleb-student",
             "--faces", "--teacher", "{out}/export/senet50-ferplus",
             "--out", "{out}/export/predictions.json",
             "{out}/corpus/voxceleb/wav/Synth_Person_001/vid0001/00001.wav",
             "{out}/corpus/videos/talk01.mp4"),
            ("export_model.py", "{out}/student", "--out", "{out}/export", "--tflite"),
        ), "SavedModels in TF Serving layout; predict.py on a wav and a video; the .tflite "
           "student (float32 and dynamic-range quantised)"),
        Stage("report", (
            ("report.py", "{out}", "--out", "{out}/report", "--summary", "{out}/summary.json"),
        ), "Markdown + self-contained HTML report, summary.json"),
    ]


#: The demo's small teacher and student (the real sizes are the scripts' defaults).
#: Teacher: SE-ResNet-50 at 1/4 width on 48 px faces, flip-only augmentation (the
#: the original's ±0.7 affine translations slow learning on tiny synthetic faces), a short
#: two-step schedule. Student: VGGVox at 1/8 width, 2.015 s crops (200 frames) in
#: batches of 16, whole passes as mini-epochs, higher learning rate and weight decay
#: than the original. Half-length crops in half-size batches give four times as many
#: updates for about the same compute; with 4.024 s crops in batches of 32 (180 steps)
#: the student underfits its 288 tracks (train AUC about 0.85) and reaches only about
#: 0.65 mean AUC on the unheard identities.
_TEACHER_STUDENT_STAGES: list[Stage] = [
    Stage("teacher", (
        ("train_teacher.py", "--records", "{out}/records/ferplus", "--out", "{out}/teacher",
         "--arch", "senet50-ferplus", "--width", "0.25", "--input-size", "48",
         "--batch-size", "64", "--set", "learning_rates=[0.05,0.005]",
         "--set", "epochs_per_rate=[16,4]", "--set", "backbone_lr_mult=1",
         "--set", "affine=false"),
        ("evaluate_teacher.py", "--run", "{out}/teacher", "--records", "{out}/records/ferplus"),
    ), "SE-ResNet-50 teacher (small) fine-tuned on the FER+ records, evaluated on val/test"),
    Stage("labels", (
        ("label_faces.py", "--records", "{out}/records/emovox",
         "--teacher", "{out}/teacher/model.keras", "--out", "{out}/labels",
         "--stats", "{out}/labels/teacher-stats.png"),
    ), "the teacher's per-frame logits on every EmoVoxCeleb face frame"),
    Stage("student", (
        ("train_student.py", "--records", "{out}/labels", "--out", "{out}/student",
         "--width", "0.125", "--crop-samples", "32240", "--batch-size", "16",
         "--epoch-fraction", "1.0", "--mini-epochs", "40", "--lr", "0.03", "0.003",
         "--set", "weight_decay=0.005"),
    ), "the speech student distilled from the teacher's logits (hot-cross-ent, T = 2)"),
]


def stage_key(commands, upstream: str) -> str:
    """What a stage's ``.complete`` marker is keyed by: its commands, the key of the stage
    before it (its input; so the keys chain) and the versions of what interprets them
    (tf-cme's version, the teacher preprocessing version). A marker under another key is
    stale: the stage runs again from scratch (issue 12.1)."""
    import hashlib

    from .. import __version__
    from ..models.teacher import PREPROCESSING_VERSION
    desc = {"commands": commands, "upstream": upstream, "tf_cme": __version__,
            "preprocessing_version": PREPROCESSING_VERSION}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def _expand(args: tuple[str, ...], out: Path) -> list[str]:
    return [a.replace("{out}", str(out)) for a in args]


def _run_command(script: str, args: list[str]) -> None:
    cmd = [sys.executable, str(SCRIPTS / script), *args]
    print("  $ " + " ".join(shlex.quote(c) for c in
                            ["python", f"scripts/{script}", *args]), flush=True)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # hides the CUDA plugin noise of a CPU machine
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise CmeError(f"stage command failed (exit {proc.returncode}): scripts/{script} "
                       + " ".join(args))


def run(out: str | os.PathLike = "runs/demo", only: list[str] | None = None,
        force: bool = False) -> dict:
    """Run (or skip, when complete) every demo stage; returns the timings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings = read_json(timings_path) if timings_path.exists() else {}
    all_stages = stages()
    names = [s.name for s in all_stages]
    for o in only or []:
        if o not in names:
            raise CmeError(f"unknown stage {o!r}; stages: {', '.join(names)}")
    invalidated = False
    t_all = time.perf_counter()
    upstream = ""                # the key of the stage before: its output is this one's input
    for stage in all_stages:
        marker = out / stage.name / MARKER
        commands = [[script, *_expand(tuple(args), out)] for script, *args in stage.commands]
        key = stage_key(commands, upstream)
        upstream = key
        selected = not only or stage.name in only
        if not selected:
            if invalidated and marker.exists():
                marker.unlink()          # its input changed: the next make demo re-runs it
            continue
        changed = marker.exists() and read_json(marker).get("key") != key
        if marker.exists() and not force and not invalidated and not changed:
            print(f"[{stage.name}] complete, skipped ({timings.get(stage.name, 0):.0f} s "
                  f"when it ran)", flush=True)
            continue
        if changed and not force and not invalidated:
            print(f"[{stage.name}] its commands differ from the ones that made "
                  f"{out / stage.name}, or its inputs or the tf-cme version do: running it "
                  f"again", flush=True)
        print(f"[{stage.name}] {stage.description}", flush=True)
        if (invalidated or force or changed) and (out / stage.name).exists():
            # its inputs changed (or --force): start afresh instead of resuming
            shutil.rmtree(out / stage.name)
        elif marker.exists():
            marker.unlink()
        t0 = time.perf_counter()
        for script, *args in commands:
            _run_command(script, args)
        seconds = time.perf_counter() - t0
        timings[stage.name] = round(seconds, 2)
        write_json(timings_path, timings)
        write_json(marker, {"seconds": round(seconds, 2), "commands": commands, "key": key,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        print(f"[{stage.name}] done in {seconds:.1f} s", flush=True)
        invalidated = True      # every later stage depends on this one's output
    print(f"demo: {time.perf_counter() - t_all:.1f} s this run; outputs in {out}/", flush=True)
    _print_summary(out, timings)
    return timings


def _print_summary(out: Path, timings: dict) -> None:
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        print("\nsummary (runs/demo/summary.json):")
        print(json.dumps({k: v for k, v in summary.items() if k != "timings"}, indent=2))
    print("\nstage timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
