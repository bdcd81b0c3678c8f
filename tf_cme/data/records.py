"""Sharded, atomic, resumable record writing; the manifest; shard checks.

A record set is a folder::

    DIR/<split>-NNNNN.tfrecord   shards (TFRecord files of tf.train.Example)
    DIR/manifest.json            schema, schema_version, splits, skipped, sources, config, shards
    DIR/skipped.tsv              every dropped input: reason, input, detail
    DIR/.progress/               per-shard statistics, so that a re-run resumes
    DIR/manifest.part-I-of-N.json  one worker's part of a split build (:class:`Part`, :func:`merge`)

How a build works (:func:`build`): the builder turns its inputs into a fixed,
deterministic list of :class:`ShardTask` (a split, a shard number and the
inputs that go into that shard). Each worker (a process that never imports
TensorFlow, or a thread) encodes one task's inputs and writes the shard itself
(TFRecord framing and CRC-32C in :func:`write_tfrecord`, no TensorFlow needed) to
``<name>.pending-<pid>``, renamed when complete; its statistics are saved in
``.progress/`` just before the rename. Only the statistics go back to the
builder, so the records never cross a process boundary. A re-run keeps every shard whose file
and statistics exist and whose size and sha256 match the statistics (a shard that fails
this check is rebuilt, said on stderr and listed as ``rebuilt_corrupt`` in
``.progress/build.json``), so an interrupted or damaged build resumes without losing or
duplicating a shard. The manifest is written last, from the
per-shard statistics, and has no time stamp: a resumed build writes the same
manifest as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .. import emotions
from ..utils import CmeError, atomic_path, progress, read_json, write_json
from . import schema as schema_lib

MANIFEST = "manifest.json"
PROGRESS = ".progress"
SKIPPED = "skipped.tsv"
log = logging.getLogger(__name__)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tfrecord"


@dataclasses.dataclass
class ShardTask:
    split: str
    index: int
    items: list          # picklable inputs, given one at a time to the encoder

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


@dataclasses.dataclass(frozen=True)
class Part:
    """Worker ``index`` of ``count`` in a build split over several hosts: it builds the
    tasks whose position in the full task list satisfies ``position % count == index``
    (shard names are the one-host build's) and writes ``manifest.part-I-of-N.json``;
    :func:`merge` joins the parts into ``manifest.json``."""
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise CmeError(f"--worker-index must be in 0..{self.count - 1} for "
                           f"--num-workers {self.count}, got {self.index}")

    @property
    def tag(self) -> str:
        return f"part-{self.index}-of-{self.count}"

    @property
    def manifest(self) -> str:
        return f"manifest.{self.tag}.json"

    def select(self, items: Sequence) -> list:
        """The items (tasks, source shards) this worker builds."""
        return [x for k, x in enumerate(items) if k % self.count == self.index]


def add_part_args(p) -> None:
    """``--num-workers N --worker-index I`` (every builder and labeller)."""
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="split the build over N hosts (default: the task count of TF_CONFIG "
                        "when set, else 1); each writes only its shards and "
                        "manifest.part-I-of-N.json, and the last one to finish (or `merge`) "
                        "writes manifest.json")
    p.add_argument("--worker-index", type=int, default=None, metavar="I",
                   help="this host's index 0..N-1 (default: this task's position in TF_CONFIG)")


def part_from_args(num_workers: int | None, worker_index: int | None) -> Part | None:
    """The :class:`Part` of ``--num-workers/--worker-index``, else of ``TF_CONFIG`` (every
    task it lists counts, in the order chief, worker, others:
    :func:`tf_cme.cluster.cluster_task`); None: a one-host build."""
    if num_workers is None and worker_index is None:
        from ..cluster import cluster_task
        try:
            found = cluster_task()
        except ValueError as e:
            raise CmeError(str(e)) from None
        if found is None:
            return None
        worker_index, num_workers = found
    elif num_workers is None or worker_index is None:
        raise CmeError("--num-workers and --worker-index go together")
    if num_workers < 1:
        raise CmeError(f"--num-workers must be at least 1, got {num_workers}")
    part = Part(worker_index, num_workers)
    return part if num_workers > 1 else None


@dataclasses.dataclass
class Encoded:
    """An encoded record and the FER+ class it counts under (None: not counted)."""
    data: bytes
    label: int | None = None


@dataclasses.dataclass
class Skip:
    """An input dropped for ``reason`` (counted in the manifest)."""
    reason: str
    item: str
    detail: str = ""


def chunk(split: str, items: Sequence, shard_size: int, start: int = 0) -> list[ShardTask]:
    """Cut one split's inputs into shard tasks of ``shard_size`` inputs."""
    if shard_size < 1:
        raise CmeError(f"shard size must be at least 1, got {shard_size}")
    return [ShardTask(split, start + i, list(items[o:o + shard_size]))
            for i, o in enumerate(range(0, len(items), shard_size))]


# ------------------------------------------------------------------- workers
def encoder_name(fn: Callable) -> str:
    """``"module:function"`` of an encoder (what the build key records)."""
    return f"{fn.__module__}:{fn.__qualname__}"


def _encode_one(args):
    """Worker: encode one input (a CmeError becomes a counted skip)."""
    fn, options, item = args
    try:
        return fn(item, **options)
    except CmeError as e:
        return Skip("unreadable", str(item)[:200], str(e))


def _build_shard(args) -> dict:
    """Worker: encode one task's inputs, write its shard and statistics; return them."""
    out, t, fn, options, builder_pid = args
    results = [_encode_one((fn, options, it)) for it in t.items]
    return _finish_shard(Path(out), t, results, builder_pid)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def _pool(workers: int, encode_fn: Callable):
    # Workers must not inherit TensorFlow's threads: fork only while TF is not
    # loaded in this process, otherwise start them from a clean fork server.
    import sys
    method = "fork" if "tensorflow" not in sys.modules else "forkserver"
    ctx = mp.get_context(method)
    if method == "fork":
        return ctx.Pool(workers)
    ctx.set_forkserver_preload(["numpy", "cv2", encode_fn.__module__])
    # A forkserver worker re-imports the parent's __main__ script before it runs
    # anything (multiprocessing.spawn.prepare), and a script that imports TensorFlow
    # costs each worker seconds. The encoder is a module-level function (pickled by
    # reference to its module), so the workers never need __main__: hide its path while the
    # pool starts its workers.
    main = sys.modules.get("__main__")
    hidden = {}
    for attr in ("__file__", "__spec__"):
        if main is not None and getattr(main, attr, None) is not None:
            hidden[attr] = getattr(main, attr)
            setattr(main, attr, None)
    try:
        return ctx.Pool(workers)
    finally:
        for attr, value in hidden.items():
            setattr(main, attr, value)


# --------------------------------------------------------------------- build
from ..utils import file_sha256  # noqa: E402,F401  (re-exported: records.file_sha256)


def listing_sha256(root: str | os.PathLike, paths: Iterable[str]) -> str:
    """Checksum of a file tree listing: relative paths and sizes (not contents)."""
    h = hashlib.sha256()
    root = Path(root)
    for p in sorted(paths):
        try:
            size = (root / p).stat().st_size
        except OSError:
            size = -1
        h.update(f"{p}\t{size}\n".encode())
    return h.hexdigest()


def _build_key(schema: schema_lib.Schema, config: dict, tasks: list[ShardTask], fn: Callable,
               options: dict) -> str:
    h = hashlib.sha256()
    config = {k: v for k, v in config.items() if k not in ("workers",)}
    h.update(json.dumps([schema.name, schema.version, config, encoder_name(fn), options],
                        sort_keys=True,
                        default=str).encode())
    for t in tasks:
        h.update(f"{t.name}:{len(t.items)}:".encode())
        h.update(pickle.dumps(t.items, protocol=4))
    return h.hexdigest()


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes], hasher=None) -> int:
    """Write ``records`` as a TFRecord file (length, masked CRC-32C of the length,
    data, masked CRC-32C of the data; the framing TensorFlow reads) without
    TensorFlow; returns the file size. ``hasher`` (e.g. ``hashlib.sha256()``) is fed
    every byte written."""
    n = 0
    with open(path, "wb") as f:
        for r in records:
            head = struct.pack("<Q", len(r))
            parts = (head + struct.pack("<I", _masked_crc(head)), r,
                     struct.pack("<I", _masked_crc(r)))
            for part in parts:
                f.write(part)
                if hasher is not None:
                    hasher.update(part)
            n += 16 + len(r)
    return n


def build(out_dir: str | os.PathLike, schema: schema_lib.Schema, tasks: list[ShardTask], *,
          encode_fn: Callable, options: dict | None = None, config: dict | None = None,
          sources: dict | None = None, pre_skipped: list[Skip] | None = None,
          extra: dict | None = None, workers: int = 0, overwrite: bool = False,
          desc: str = "records", unit: str = "input", local_options: dict | None = None,
          key_extra: str = "", executor: str = "process", part: Part | None = None) -> dict:
    """Write ``tasks`` as shards of ``schema`` records under ``out_dir``; return the manifest.

    ``encode_fn`` (a module-level function, so that worker processes can unpickle it by
    reference) turns one input into :class:`Encoded` or
    :class:`Skip`; it is called as ``encode_fn(item, **options)`` in worker
    processes (``workers`` = 0: every available core; 1: in this process).
    ``pre_skipped`` are inputs the caller dropped before encoding (counted too).
    ``local_options`` are passed to the encoder too but are neither hashed into
    the build key nor sent to other processes (they force ``workers=1``);
    ``key_extra`` stands for them in the build key. An encoder may return a list
    of results (one input giving several records). ``executor``: ``"process"``
    (CPU-bound encoders) or ``"thread"`` (encoders that mostly read files and run
    NumPy / OpenCV code, which release the GIL: no process start-up, no pickling).
    ``part`` (:class:`Part`): build only that worker's tasks (chosen by their position in
    the full ``tasks``, so the shard names are the one-host build's), keep its resume state
    in ``.progress/build.part-I-of-N.json`` and write ``manifest.part-I-of-N.json``
    (returned) instead of ``manifest.json``: :func:`merge` joins the parts.
    """
    out = Path(out_dir)
    options = dict(options or {})
    config = dict(config or {})
    out.mkdir(parents=True, exist_ok=True)
    prog = out / PROGRESS
    # ``common``: what every worker of a split build shares (the full task list, config,
    # encoder); ``key_extra`` (the labeller's logits) may differ from part to part
    common = _build_key(schema, config, tasks, encode_fn, options)
    key = common + key_extra
    if local_options:
        workers = 1
        options = {**options, **local_options}
    mine = tasks if part is None else part.select(tasks)
    key_file = _key_file(out, part)
    if key_file.exists():
        old = read_json(key_file).get("key")
        if old != key:
            if not overwrite:
                raise CmeError(
                    f"{out} holds a build made from other inputs or another config"
                    + ("" if part is None else f" ({key_file.name})")
                    + "; choose another --out, or pass --overwrite to replace it")
            _clear(out, part, mine)
    elif _foreign(out, part, mine, common):
        if not overwrite:
            raise CmeError(f"{out} already holds records not made by this build; choose "
                           f"another --out, or pass --overwrite to replace them")
        _clear(out, part, mine)
    prog.mkdir(parents=True, exist_ok=True)
    write_json(key_file, {"key": key, "common": common, "schema": schema.name,
                          "rebuilt_corrupt": []})
    if part is None:
        stale = list(out.glob("*.tmp-*")) + list(out.glob("*.pending*"))
    else:       # other hosts' workers may be writing theirs right now
        stale = [q for t in mine for q in out.glob(f"{t.name}.pending*")]
        stale += list(out.glob(f"{part.manifest}.tmp-*"))
    for q in stale:
        q.unlink(missing_ok=True)          # left by an interrupted build

    done: dict[str, dict] = {}
    pending: list[ShardTask] = []
    rebuilt: list[str] = []
    for t in mine:
        st = prog / f"{t.name}.json"
        shard = out / t.name
        if st.exists() and shard.exists():
            stats = read_json(st)
            problem = _reuse_problem(shard, stats)
            if problem is None:
                done[t.name] = stats
                continue
            # a complete shard that no longer matches what was written: rebuilt, and said
            rebuilt.append(t.name)
            log.warning("rebuilding corrupt shard %s (%s)", shard, problem)
            print(f"rebuilding corrupt shard {shard} ({problem})", file=sys.stderr, flush=True)
            shard.unlink()
        pending.append(t)
    write_json(key_file, {"key": key, "common": common, "schema": schema.name,
                          "rebuilt_corrupt": rebuilt})

    n_workers = cpu_count() if workers <= 0 else workers
    n_workers = max(1, min(n_workers, sum(len(t.items) for t in pending)))
    total = sum(len(t.items) for t in mine)
    bar = progress(total=total, desc=desc, unit=unit)
    bar.update(sum(len(t.items) for t in mine if t.name in done))
    pool = None
    try:
        if n_workers > 1 and len(pending) > 1:
            if executor == "thread":
                from multiprocessing.pool import ThreadPool
                pool = ThreadPool(n_workers)
            else:
                pool = _pool(n_workers, encode_fn)
        slow = float(os.environ.get("TF_CME_TEST_SHARD_DELAY", "0") or 0)  # tests: a build to kill
        jobs = [(str(out), t, encode_fn, options, os.getpid()) for t in pending]
        # whole shards per worker, in any order: memory holds one shard per worker
        results = map(_build_shard, jobs) if pool is None else pool.imap_unordered(_build_shard, jobs)
        for stats in results:
            done[stats["file"]] = stats
            bar.update(stats["inputs"])
            if slow:
                import time
                time.sleep(slow)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()

    pre = [[sk.reason, sk.item, sk.detail] for sk in pre_skipped or []]
    if part is not None:
        pm = {"part": {"index": part.index, "count": part.count}, "build": common,
              "schema": schema.name, "schema_version": schema.version, "config": config,
              "sources": sources or {}, "extra": extra or {},
              "tasks": [[t.split, t.name] for t in tasks], "pre_skipped": pre,
              "shards": {t.name: done[t.name] for t in mine}}
        write_json(out / part.manifest, pm)
        return pm
    manifest = _manifest(schema, tasks, done, pre_skipped or [], sources or {}, config,
                         extra or {})
    _write_skipped(out, pre, [done[t.name] for t in tasks])
    write_json(out / MANIFEST, manifest)
    return manifest


def _key_file(out: Path, part: Part | None) -> Path:
    return out / PROGRESS / ("build.json" if part is None else f"build.{part.tag}.json")


def _foreign(out: Path, part: Part | None, mine: list[ShardTask], common: str) -> bool:
    """``out`` holds records (a manifest, shards this build would write, its part
    manifest) that no build with this task list, config and encoder wrote: a one-host build
    resumes the shards of a split one of the same inputs and options, and back."""
    if part is None:
        held = (out / MANIFEST).exists() or any(out.glob("*.tfrecord"))
    else:
        held = ((out / MANIFEST).exists() or (out / part.manifest).exists()
                or any((out / t.name).exists() for t in mine))
    if not held:
        return False
    for f in (out / PROGRESS).glob("build*.json"):
        try:
            if read_json(f).get("common") == common:
                return False
        except (OSError, json.JSONDecodeError):
            continue
    return True


def _clear(out: Path, part: Part | None = None, mine: Sequence[ShardTask] = ()) -> None:
    """Remove a record set (``part``: only that part's shards, statistics and part
    manifest, and the final manifest that named them)."""
    for name in (MANIFEST, SKIPPED):
        (out / name).unlink(missing_ok=True)
    if part is None:
        for p in list(out.glob("*.tfrecord")) + list(out.glob("manifest.part-*.json")):
            p.unlink()
        shutil.rmtree(out / PROGRESS, ignore_errors=True)
        return
    for t in mine:
        (out / t.name).unlink(missing_ok=True)
        (out / PROGRESS / f"{t.name}.json").unlink(missing_ok=True)
    (out / part.manifest).unlink(missing_ok=True)
    _key_file(out, part).unlink(missing_ok=True)


# ------------------------------------------------------------------ merging
#: the fields every part manifest of one build shares (``config`` without ``workers``)
PART_FIELDS = ("build", "schema", "schema_version", "config", "sources", "extra", "tasks",
               "pre_skipped")


def _part_files(out: Path) -> dict[Path, tuple[int, int]]:
    import re
    found = {}
    for f in sorted(out.glob("manifest.part-*.json")):
        m = re.fullmatch(r"manifest\.part-(\d+)-of-(\d+)\.json", f.name)
        if m is None:
            raise CmeError(f"{f}: not a part manifest name (manifest.part-I-of-N.json)")
        found[f] = (int(m[1]), int(m[2]))
    return found


def parts_complete(out_dir: str | os.PathLike, part: Part) -> bool:
    """Every part manifest of ``part``'s split is in ``out_dir`` (the last worker merges)."""
    return all((Path(out_dir) / Part(i, part.count).manifest).exists()
               for i in range(part.count))


def merge(out_dir: str | os.PathLike) -> dict:
    """Join the part manifests of a split build into ``manifest.json`` and ``skipped.tsv``
    (the same files a one-host build writes); return the manifest.

    Every part ``0..N-1`` must be there, all from the same N, the same build (task list,
    config but for ``workers``, sources, encoder, schema) and list exactly the shards its
    worker builds, each present with the size it was written with; anything else is a
    CmeError naming the part files (and the worker command to re-run)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise CmeError(f"{out}: no such folder (the --out of the split build to merge)")
    found = _part_files(out)
    if not found:
        raise CmeError(f"{out}: no part manifests (manifest.part-I-of-N.json) to merge; build "
                       f"it with --num-workers N --worker-index I on every worker first")
    parts = {}
    for f, (i, n) in found.items():
        try:
            pm = read_json(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CmeError(f"{f}: unreadable part manifest: {e}") from None
        if pm.get("part") != {"index": i, "count": n}:
            raise CmeError(f"{f}: its content says part {pm.get('part')}, its name part {i} "
                           f"of {n}")
        parts[f] = (i, n, pm)
    counts = sorted({n for _, n, _ in parts.values()})
    if len(counts) > 1:
        groups = "; ".join(f"N={c}: " + ", ".join(f.name for f, v in parts.items() if v[1] == c)
                           for c in counts)
        raise CmeError(f"{out}: part manifests of splits over different numbers of workers "
                       f"({groups}); every worker must use the same --num-workers: delete the "
                       f"stale part files, or re-run the missing workers with the same N")
    n = counts[0]
    by_index = {i: (f, pm) for f, (i, _, pm) in parts.items()}
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise CmeError(f"{out}: missing part(s) "
                       f"{', '.join(Part(i, n).manifest for i in missing)} (have "
                       f"{', '.join(f.name for f in parts)}); run "
                       + ", ".join(f"--num-workers {n} --worker-index {i}" for i in missing)
                       + " with the options of the others, then merge again")

    def same(k, v):
        return {a: b for a, b in v.items() if a != "workers"} if k == "config" and \
            isinstance(v, dict) else v

    f0, p0 = by_index[0]
    for i in range(1, n):
        f, pm = by_index[i]
        diff = [k for k in PART_FIELDS if same(k, pm.get(k)) != same(k, p0.get(k))]
        if diff:
            raise CmeError(f"{out}: {f.name} and {f0.name} come from different builds (they "
                           f"differ in {', '.join(diff)}): every worker must be run with the "
                           f"same inputs and options; re-run the odd one with the others' "
                           f"options and --overwrite, then merge again")
    name = p0.get("schema")
    schema = schema_lib.SCHEMAS.get(name)
    if schema is None or schema.version != p0.get("schema_version"):
        raise CmeError(f"{f0}: schema {name!r} version {p0.get('schema_version')}: not one this "
                       f"code writes; rebuild the records")
    named = [_Named(split, t_name) for split, t_name in p0["tasks"]]
    names = [t.name for t in named]
    done: dict[str, dict] = {}
    for i in range(n):
        f, pm = by_index[i]
        want = names[i::n]
        have = pm.get("shards") or {}
        if sorted(have) != sorted(want):
            raise CmeError(f"{f}: lists shards {sorted(have)}, worker {i} of {n} builds "
                           f"{sorted(want)}; re-run --num-workers {n} --worker-index {i}")
        for t_name in want:
            st = have[t_name]
            path = out / t_name
            problem = None
            if not path.exists():
                problem = "missing"
            elif path.stat().st_size != st.get("bytes"):
                problem = f"{path.stat().st_size} bytes, {st.get('bytes')} written"
            if problem:
                raise CmeError(f"shard {path} ({problem}), listed by {f.name}: re-run "
                               f"--num-workers {n} --worker-index {i} (it rebuilds it), then "
                               f"merge again")
            done[t_name] = st
    pre = [Skip(*row) for row in p0.get("pre_skipped", [])]
    manifest = _manifest(schema, named, done, pre, p0.get("sources") or {}, p0.get("config"),
                         p0.get("extra") or {})
    _write_skipped(out, p0.get("pre_skipped", []), [done[t.name] for t in named])
    write_json(out / MANIFEST, manifest)
    return manifest


@dataclasses.dataclass
class _Named:
    """A task as a part manifest lists it (what :func:`_manifest` reads of a task)."""
    split: str
    name: str


def _reuse_problem(shard: Path, stats: dict) -> str | None:
    """Why an existing complete shard may not be reused (None: it may): its size or sha256
    differs from the statistics written with it (statistics from before sha256 was
    recorded: every record's CRC and the record count are checked instead)."""
    size = shard.stat().st_size
    if stats.get("bytes") != size:
        return f"{size} bytes, {stats.get('bytes')} written"
    if stats.get("sha256"):
        if file_sha256(shard) != stats["sha256"]:
            return "sha256 differs from the one recorded when it was written"
        return None
    try:
        check_shard(shard, stats.get("examples"), cache=False)
    except CmeError as e:
        return str(e).split(": ", 1)[-1]
    return None


def last_build(out_dir: str | os.PathLike, part: Part | None = None) -> dict:
    """What the last :func:`build` call into ``out_dir`` (of ``part``) did beyond the
    manifest: ``rebuilt_corrupt`` (names of complete shards it found damaged and rebuilt)."""
    path = _key_file(Path(out_dir), part)
    info = read_json(path) if path.exists() else {}
    return {"rebuilt_corrupt": list(info.get("rebuilt_corrupt", []))}


def _finish_shard(out: Path, t: ShardTask, results: list, builder_pid: int | None = None) -> dict:
    records, counts, skipped, skip_lines = [], Counter(), Counter(), []
    flat = []
    for r in results:
        flat.extend(r if isinstance(r, list) else [r])
    for r in flat:
        if isinstance(r, Skip):
            skipped[r.reason] += 1
            skip_lines.append([r.reason, r.item, r.detail])
        else:
            records.append(r.data)
            if r.label is not None and 0 <= r.label < emotions.NUM_CLASSES:
                counts[emotions.FERPLUS[r.label]] += 1
    stats = {"split": t.split, "file": t.name, "examples": len(records),
             "inputs": len(t.items), "class_counts": dict(counts),
             "skipped": dict(skipped), "skipped_items": skip_lines}
    # the statistics first, then the shard: a shard file that exists is complete
    # and has its statistics (the size check catches a stale statistics file).
    tmp_path = out / f"{t.name}.pending-{os.getpid()}"
    try:
        h = hashlib.sha256()
        stats["bytes"] = write_tfrecord(tmp_path, records, hasher=h)
        stats["sha256"] = h.hexdigest()     # checked before the shard is reused on resume
        if builder_pid is not None and not _alive(builder_pid):
            return stats           # an orphaned worker of a killed build: leave no trace
        write_json(out / PROGRESS / f"{t.name}.json", stats)
        os.replace(tmp_path, out / t.name)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return stats


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # pragma: no cover - someone else's process
        return True
    return True


def _manifest(schema, tasks, done, pre_skipped, sources, config, extra) -> dict:
    splits: dict[str, dict] = {}
    skipped = Counter()
    shards = []
    for t in tasks:
        s = done[t.name]
        sp = splits.setdefault(t.split, {"examples": 0,
                                         "class_counts": {n: 0 for n in emotions.FERPLUS},
                                         "shards": 0})
        sp["examples"] += s["examples"]
        sp["shards"] += 1
        for k, v in s["class_counts"].items():
            sp["class_counts"][k] += v
        skipped.update(s["skipped"])
        shards.append({"file": t.name, "split": t.split, "examples": s["examples"],
                       "bytes": s["bytes"]})
    for sk in pre_skipped:
        skipped[sk.reason] += 1
    m = {"schema": schema.name, "schema_version": schema.version, "splits": splits,
         "skipped": dict(sorted(skipped.items())), "sources": sources, "config": config,
         "shards": shards}
    m.update(extra)
    return m


def _write_skipped(out: Path, pre_skipped: list, stats: list[dict]) -> None:
    """``skipped.tsv``: the inputs dropped before encoding, then each shard's, in task order."""
    lines = [list(row) for row in pre_skipped]
    for st in stats:
        lines += st.get("skipped_items", [])
    text = "".join("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n"
                   for row in lines)
    with atomic_path(out / SKIPPED) as tmp:
        tmp.write_text("reason\tinput\tdetail\n" + text)


# ------------------------------------------------------------------ reading
def manifest_digest(dir: str | os.PathLike) -> str:
    """sha256 of a record set's ``manifest.json``: it names every shard with its checksum and
    holds no time stamp, so equal digests mean the same records. Runs compare it on resume."""
    path = Path(dir) / MANIFEST
    if not path.exists():
        raise CmeError(f"{dir}: no manifest.json (not a tf-cme record set?)")
    return file_sha256(path)


def read_manifest(dir: str | os.PathLike, expect_schema: str | None = None) -> dict:
    """The manifest of a record set; checks the schema name and version."""
    path = Path(dir) / MANIFEST
    if not path.exists():
        raise CmeError(f"{dir}: no {MANIFEST}; not a record set (build it with "
                       f"scripts/build_records.py)")
    try:
        m = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise CmeError(f"{path}: unreadable manifest: {e}") from None
    name = m.get("schema")
    if name not in schema_lib.SCHEMAS:
        raise CmeError(f"{path}: unknown record schema {name!r}")
    if expect_schema is not None and name != expect_schema:
        raise CmeError(f"{dir}: holds {name!r} records, expected {expect_schema!r}")
    want = schema_lib.SCHEMAS[name].version
    if m.get("schema_version") != want:
        raise CmeError(f"{path}: schema {name!r} version {m.get('schema_version')}, this "
                       f"code reads version {want}; rebuild the records")
    return m


def rebuild_hint(dir: str | os.PathLike, manifest: dict) -> str:
    """The command that rebuilds a record set's damaged shards (a re-run into the same
    folder checks every shard's sha256 and rewrites the corrupt ones)."""
    dir = Path(dir)
    if manifest.get("labelled"):
        src = (manifest.get("source_records") or {}).get("dir") or "SOURCE_RECORDS"
        teacher = (manifest.get("teacher") or {}).get("file") or "TEACHER.keras"
        return (f"rebuild it with `label_faces.py --records {src} --teacher {teacher} "
                f"--out {dir}` (the options it was labelled with; it rewrites corrupt shards)")
    kind = manifest.get("schema", "KIND")
    if (dir / "config.json").exists():
        return (f"rebuild it with `build_records.py {kind} --config {dir / 'config.json'} "
                f"--out {dir}` (it rewrites corrupt shards)")
    return (f"rebuild it by re-running the `build_records.py {kind} ... --out {dir}` command "
            f"that wrote it (it rewrites corrupt shards)")


#: Shards whose every record passed its CRCs in this process: (path, size, mtime_ns) -> records.
_VERIFIED: dict[tuple, int] = {}
_WARNED: set = set()


def forget_checks() -> None:
    """Forget which shards passed :func:`check_shard` (the next readers read them again)."""
    _VERIFIED.clear()


def check_shard(path: str | os.PathLike, examples: int | None = None, *,
                cache: bool = True) -> int:
    """Read a whole shard, check every record's framing and CRCs (and, given
    ``examples``, the record count); return the number of records. A problem is a
    CmeError naming the file, the record and its byte offset. With ``cache`` a shard is
    read once per process while its size and modification time stay the same (every
    reader calls this through :func:`shard_files`)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    n = _VERIFIED.get(key) if cache else None
    if n is None:
        n = len(shard_index(p, check_crc=True)[1])
        if cache:
            _VERIFIED[key] = n
    if examples is not None and n != int(examples):
        raise CmeError(f"corrupt shard {p}: {n} records, the manifest says {examples}")
    return n


def shard_files(dir: str | os.PathLike, split=None, manifest: dict | None = None,
                skip_corrupt: bool = False, verify: bool = True) -> tuple[list[str], list[str]]:
    """Shard paths of ``split`` (a name, a list of names, or None: all splits), checked
    against the manifest.

    A missing shard, one whose size differs from the manifest (truncated) or, with
    ``verify`` (every reader), one whose records fail their CRCs or whose record count
    differs (:func:`check_shard`) is a CmeError naming the file, the record and the command
    that rebuilds it; with ``skip_corrupt`` it is left out, logged with its reason and
    returned in the second list instead (callers report them as
    ``skipped_corrupt_shards``: :func:`skipped_names`).
    """
    m = manifest or read_manifest(dir)
    names = None if split is None else ([split] if isinstance(split, str) else list(split))
    for sp in names or []:
        if sp not in m["splits"]:
            raise CmeError(f"{dir}: no split {sp!r} (splits: {', '.join(m['splits'])})")
    good, bad = [], []
    for s in m["shards"]:
        if names is not None and s["split"] not in names:
            continue
        p = Path(dir) / s["file"]
        problem = None
        if not p.exists():
            problem = "missing"
        elif p.stat().st_size != s["bytes"]:
            problem = f"truncated or altered ({p.stat().st_size} bytes, manifest says {s['bytes']})"
        elif verify:
            try:
                check_shard(p, s.get("examples"))
            except CmeError as e:
                problem = str(e).split(": ", 1)[-1]
        if problem:
            if not skip_corrupt:
                raise CmeError(f"corrupt shard {p} ({problem}); {rebuild_hint(dir, m)}, "
                               f"or pass --skip-corrupt to leave it out (counted)")
            if (str(p), problem) not in _WARNED:      # once per process, not per epoch
                _WARNED.add((str(p), problem))
                log.warning("skipping corrupt shard %s (%s)", p, problem)
                print(f"skipping corrupt shard {p} ({problem})", file=sys.stderr, flush=True)
            bad.append(str(p))
        else:
            good.append(str(p))
    return good, bad


def skipped_names(bad: Iterable[str]) -> list[str]:
    """``skipped_corrupt_shards`` as outputs report them: shard file names, sorted."""
    return sorted({Path(b).name for b in bad})


def shard_index(path: str | os.PathLike, check_crc: bool = True):
    """Read a whole TFRecord file with plain Python and check its framing and CRCs.

    Returns ``(data, offsets, lengths)``: the file's bytes and, per record, where
    its payload starts and how long it is (int64 arrays). A truncated file or a
    bad checksum is a CmeError naming the file, the record (0-based) and its byte offset.
    """
    import numpy as np
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    view = np.frombuffer(data, np.uint8)      # zero-copy slices for the CRC
    offs, lens = [], []
    off, n = 0, len(data)
    while off < n:
        where = f"record {len(offs)} at byte {off}"
        if off + 12 > n:
            raise CmeError(f"corrupt shard {path}: {where}: truncated record header")
        (length,) = struct.unpack_from("<Q", data, off)
        if check_crc and struct.unpack_from("<I", data, off + 8)[0] != _masked_crc(view[off:off + 8]):
            raise CmeError(f"corrupt shard {path}: {where}: length CRC mismatch")
        start = off + 12
        end = start + length
        if end + 4 > n:
            raise CmeError(f"corrupt shard {path}: {where}: truncated record")
        if check_crc and struct.unpack_from("<I", data, end)[0] != _masked_crc(view[start:end]):
            raise CmeError(f"corrupt shard {path}: {where}: data CRC mismatch")
        offs.append(start)
        lens.append(length)
        off = end + 4
    return data, np.asarray(offs, np.int64), np.asarray(lens, np.int64)


def iter_records(path: str | os.PathLike, check_crc: bool = True) -> Iterable[bytes]:
    """Read a TFRecord file with plain Python (length + CRC framing), naming the file on error."""
    data, offs, lens = shard_index(path, check_crc)
    for o, n in zip(offs.tolist(), lens.tolist()):
        yield data[o:o + n]


def verify(dir: str | os.PathLike, skip_corrupt: bool = False) -> dict:
    """Read every shard fully (CRC checks, record counts vs the manifest).

    Returns ``{"shards": good shards, "examples": n, "corrupt": [paths],
    "skipped_corrupt_shards": [names]}``; a corrupt, truncated or missing shard raises a
    CmeError naming it unless ``skip_corrupt``.
    """
    m = read_manifest(dir)
    good, bad = shard_files(dir, None, m, skip_corrupt=skip_corrupt)
    n_ex = sum(check_shard(p) for p in good)
    return {"shards": len(good), "examples": n_ex, "corrupt": bad,
            "skipped_corrupt_shards": skipped_names(bad)}


# CRC-32C (Castagnoli), masked as TFRecord does. google-crc32c is Google's C
# implementation (hardware instructions where the CPU has them).
def _crc32c(data: bytes) -> int:
    import google_crc32c
    return google_crc32c.value(data)


def _masked_crc(data: bytes) -> int:
    c = _crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
