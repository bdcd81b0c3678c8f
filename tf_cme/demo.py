"""`make demo`: the whole experiment on the generated demo corpus.

Each stage runs the project's real command-line scripts, in order, and writes
under ``OUT/<stage>/`` (ARCHITECTURE.md: ``runs/demo/{corpus,records,teacher,
labels,student,eval,external,export,report}/``). A stage that finishes writes
``OUT/<stage>/.complete``; a second ``make demo`` skips complete stages, and a
stage that runs again invalidates every stage after it. Wall times go to
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
import subprocess
import sys
import time
from pathlib import Path

from .utils import CmeError, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
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
             "--force"),
        ), "synthetic FER2013/FER+ CSVs, VoxCeleb-layout wavs and face frames, an "
           "RML-style acted set, and talking-face videos"),
    ]


def _expand(args: tuple[str, ...], out: Path) -> list[str]:
    return [a.replace("{out}", str(out)) for a in args]


def _run_command(script: str, args: list[str]) -> None:
    cmd = [sys.executable, str(SCRIPTS / script), *args]
    print("  $ " + " ".join(shlex.quote(c) for c in
                            ["python", f"scripts/{script}", *args]), flush=True)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    for stage in all_stages:
        marker = out / stage.name / MARKER
        selected = not only or stage.name in only
        if not selected:
            if invalidated and marker.exists():
                marker.unlink()          # its input changed: the next make demo re-runs it
            continue
        if marker.exists() and not force and not invalidated:
            print(f"[{stage.name}] complete, skipped ({timings.get(stage.name, 0):.0f} s "
                  f"when it ran)", flush=True)
            continue
        print(f"[{stage.name}] {stage.description}", flush=True)
        if marker.exists():
            marker.unlink()
        t0 = time.perf_counter()
        for script, *args in stage.commands:
            _run_command(script, _expand(tuple(args), out))
        seconds = time.perf_counter() - t0
        timings[stage.name] = round(seconds, 2)
        write_json(timings_path, timings)
        write_json(marker, {"seconds": round(seconds, 2),
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
