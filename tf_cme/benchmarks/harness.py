"""The benchmark harness: stages, interleaved repeats, medians, bench.json.

A stage is a function registered with ``@stage(name, group, unit)``. Called with
a :class:`Context`, it prepares its data and returns a :class:`Pair`: ``ours``
and ``peer`` callables (each does the work once and returns the number of units
it processed), the peer's name and the cores each side may use. The harness
warms both up once, then times ``repeats`` rounds of ours then peer, A B A B ...,
so that drift on a shared machine hits both; rates are units per second
(higher is better), reported as medians, also per core. ``scripts/bench.py`` runs
each stage in a fresh Python process, as pyperf runs its benchmarks: a Python peer's
rate was seen to move by up to 2x with the heap state that earlier stages left behind
(glibc's adaptive mmap threshold). ``bench.json`` is a list
of rows ``{"stage", "unit", "ours", "peer", "peer_name", "ratio", ...}`` with
``ratio = ours / peer``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


@dataclasses.dataclass
class Pair:
    ours: Callable[[], float]
    peer: Callable[[], float]
    peer_name: str
    ours_cores: int | None = None     # None: every available core
    peer_cores: int = 1
    cleanup: Callable[[], None] | None = None
    note: str = ""
    #: further peers timed in the same A B A B rounds (name -> callable), e.g. a
    #: compiled variant of the peer; reported in ``row["extra"]``
    extra: dict = dataclasses.field(default_factory=dict)
    #: what the stage ran on beyond :func:`_env` (device, framework versions)
    env: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    group: str
    unit: str
    fn: Callable[["Context"], Pair]
    module: str = ""


@dataclasses.dataclass
class Context:
    workdir: Path
    repeats: int = 5
    quick: bool = False
    cache: dict = dataclasses.field(default_factory=dict)

    def path(self, *parts) -> Path:
        p = self.workdir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


REGISTRY: dict[str, Stage] = {}


def stage(name: str, group: str, unit: str):
    """Register a stage ``fn(ctx) -> Pair`` under ``name`` in ``group``."""
    def wrap(fn):
        REGISTRY[name] = Stage(name, group, unit, fn, fn.__module__)
        return fn
    return wrap


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def discover(package: str = "tf_cme.benchmarks") -> list[str]:
    """Import every module of the benchmarks package (each registers its stages)."""
    pkg = importlib.import_module(package)
    names = []
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name in ("harness",) or m.name.startswith("_"):
            continue
        importlib.import_module(f"{package}.{m.name}")
        names.append(m.name)
    return names


#: Groups run only when named with --only (XLA compiles for minutes on a CPU; the gpu
#: group runs on Keras's JAX backend and is sized for a GPU).
OPT_IN_GROUPS = {"teacher-xla", "gpu"}


def select(only: list[str] | None) -> list[Stage]:
    stages = list(REGISTRY.values())
    if not only:
        return [s for s in stages if s.group not in OPT_IN_GROUPS]
    wanted = set()
    for o in only:
        wanted.update(x.strip() for x in o.split(",") if x.strip())
    unknown = [w for w in wanted if w not in REGISTRY and w not in {s.group for s in stages}]
    if unknown:
        groups = sorted({s.group for s in stages})
        raise ValueError(f"unknown stage or group {', '.join(sorted(unknown))}; groups: "
                         f"{', '.join(groups)}; stages: {', '.join(sorted(REGISTRY))}")
    return [s for s in stages if s.name in wanted or s.group in wanted]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    units = fn()
    dt = time.perf_counter() - t0
    return float(units) / dt if dt > 0 else float("inf")


def run_stage(st: Stage, ctx: Context) -> dict:
    pair = st.fn(ctx)
    try:
        _timed(pair.ours)                     # warm-up: caches, graph tracing, pools
        _timed(pair.peer)
        for fn in pair.extra.values():
            _timed(fn)
        ours, peer = [], []
        extra = {name: [] for name in pair.extra}
        for _ in range(max(1, ctx.repeats)):  # A B A B ...
            ours.append(_timed(pair.ours))
            peer.append(_timed(pair.peer))
            for name, fn in pair.extra.items():
                extra[name].append(_timed(fn))
    finally:
        if pair.cleanup:
            pair.cleanup()
    o, p = statistics.median(ours), statistics.median(peer)
    oc = pair.ours_cores or cpu_count()
    return {"stage": st.name, "group": st.group, "unit": st.unit, "ours": o, "peer": p,
            "peer_name": pair.peer_name, "ratio": o / p if p > 0 else float("inf"),
            "ours_per_core": o / oc, "peer_per_core": p / pair.peer_cores,
            "ours_cores": oc, "peer_cores": pair.peer_cores, "repeats": len(ours),
            "ours_all": ours, "peer_all": peer, "note": pair.note,
            "extra": {name: {"rate": statistics.median(v), "all": v,
                             "ratio": o / statistics.median(v)}
                      for name, v in extra.items()},
            "env": {**_env(), **pair.env}}


def _env() -> dict:
    """The stack a row was measured on: TensorFlow's version and its oneDNN setting (the
    tf_cme.runtime workaround changes the teacher's and the student's rates)."""
    import importlib.metadata

    from .. import runtime
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"tensorflow": version, "onednn": runtime.onednn_state()}


def format_table(rows: list[dict]) -> str:
    head = ["stage", "unit", "ours", "peer", "ratio", "ours/core", "peer/core", "peer_name"]
    body = [[r["stage"], r["unit"], f"{r['ours']:.1f}", f"{r['peer']:.1f}", f"{r['ratio']:.2f}",
             f"{r['ours_per_core']:.1f}", f"{r['peer_per_core']:.1f}", r["peer_name"]]
            for r in rows]
    for r in rows:                  # extra peers: one line each under their stage's
        at = next(i for i, b in enumerate(body) if b[0] == r["stage"]) + 1
        for name, e in (r.get("extra") or {}).items():
            body.insert(at, [f"{r['stage']} (vs extra)", r["unit"], f"{r['ours']:.1f}",
                             f"{e['rate']:.1f}", f"{e['ratio']:.2f}", "", "", name])
            at += 1
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (one line per peer; extra peers get their own line),
    with the device and versions they were measured on."""
    out = ["| stage | unit | ours | peer | peer rate | ours / peer | note |",
           "| --- | --- | ---: | --- | ---: | ---: | --- |"]
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    for r in rows:
        peers = [(r["peer_name"], r["peer"], r["ratio"])]
        peers += [(n, e["rate"], e["ratio"]) for n, e in (r.get("extra") or {}).items()]
        for i, (name, rate, ratio) in enumerate(peers):
            ours = f"{r['ours']:,.0f}" if i == 0 else "〃"
            out.append(f"| {r['stage']} | {r['unit']} | {ours} | {cell(name)} | {rate:,.0f} | "
                       f"{ratio:.2f} | {cell(r.get('note', '')) if i == 0 else ''} |")
    envs = []
    for r in rows:
        e = {k: v for k, v in (r.get("env") or {}).items() if v is not None}
        text = ", ".join(f"{k} {v}" for k, v in sorted(e.items()))
        if text not in envs:
            envs.append(text)
    return "\n".join(out + [""] + [f"Measured on: {e}." for e in envs])


def _run_isolated(st: Stage, workdir: Path, repeats: int, quick: bool) -> dict:
    """Run one stage in a fresh interpreter and return its row."""
    import subprocess
    row_file = workdir / f"row-{st.name}.json"
    cmd = [sys.executable, "-m", "tf_cme.benchmarks.harness", "--stage", st.name,
           "--workdir", str(workdir), "--repeats", str(repeats), "--row-out", str(row_file)]
    if quick:
        cmd.append("--quick")
    r = subprocess.run(cmd)
    if r.returncode != 0 or not row_file.exists():
        raise RuntimeError(f"bench stage {st.name} failed in its process (exit {r.returncode})")
    return json.loads(row_file.read_text())


def run(only: list[str] | None = None, repeats: int = 5, out: str | None = "bench.json",
        quick: bool = False, workdir: str | None = None, echo=print,
        isolate: bool = False) -> list[dict]:
    """Run the selected stages; ``isolate``: each stage in a fresh Python process
    (``scripts/bench.py`` does so unless ``--in-process``), so that no stage's rates
    depend on which stages ran before it in the same process."""
    discover()
    stages = select(only)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tf-cme-bench-"))
    ctx = Context(workdir=tmp, repeats=repeats, quick=quick)
    rows = []
    try:
        for st in stages:
            echo(f"[bench] {st.name} ({st.group}) ...")
            rows.append(_run_isolated(st, tmp, repeats, quick) if isolate
                        else run_stage(st, ctx))
            if out:             # an interrupted bench keeps the rows it finished
                from ..utils import write_json
                write_json(out, rows)
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    if out:
        from ..utils import write_json
        write_json(out, rows)
    echo(format_table(rows))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Measure each data-moving stage side by side with "
                                             "a peer; print a table and write bench.json.")
    ap.add_argument("--only", action="append", metavar="GROUP|NAME",
                    help="run only these stages or groups (comma-separated or repeated)")
    ap.add_argument("--out", default="bench.json", metavar="FILE",
                    help="where to write the rows (default bench.json; '' for none)")
    ap.add_argument("--repeats", type=int, default=5, metavar="N",
                    help="timed repeats of each side, interleaved A B A B (default 5)")
    ap.add_argument("--quick", action="store_true", help="smaller data (a smoke run)")
    ap.add_argument("--list", action="store_true", help="list the stages and exit")
    ap.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                    help="Keras backend for the stages (sets KERAS_BACKEND before Keras is "
                         "imported; the gpu group needs jax, every other group tensorflow; "
                         "default: KERAS_BACKEND or tensorflow)")
    ap.add_argument("--markdown", metavar="BENCH_JSON",
                    help="print the rows of a bench.json as a Markdown table (the README's "
                         "tables) and exit")
    ap.add_argument("--in-process", action="store_true",
                    help="run every stage in this process (default: each stage in a fresh "
                         "process; a stage's rates, the Python peers' above all, can depend "
                         "on what earlier stages left in the process's heap)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)        # child: one stage
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--row-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.markdown:
        from ..utils import require_path
        path = require_path(args.markdown, "--markdown")
        print(markdown_table(json.loads(Path(path).read_text())))
        return 0
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != args.backend:
            print(f"bench: error: --backend {args.backend}: Keras is already imported on "
                  f"another backend", file=sys.stderr)
            return 2
        os.environ["KERAS_BACKEND"] = args.backend   # the stages' processes inherit it
    discover()
    if args.stage:                                            # a child of _run_isolated
        ctx = Context(workdir=Path(args.workdir), repeats=args.repeats, quick=args.quick)
        row = run_stage(REGISTRY[args.stage], ctx)
        Path(args.row_out).write_text(json.dumps(row))
        return 0
    if args.list:
        for s in sorted(REGISTRY.values(), key=lambda s: (s.group, s.name)):
            print(f"{s.group:12s} {s.name:24s} {s.unit}")
        return 0
    try:
        select(args.only)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    run(args.only, repeats=args.repeats, out=args.out or None, quick=args.quick,
        isolate=not args.in_process)
    return 0


if __name__ == "__main__":
    # run as -m: the stage modules register with tf_cme.benchmarks.harness, not __main__
    from tf_cme.benchmarks import harness as _canonical
    sys.exit(_canonical.main())
