"""Small shared helpers: atomic writes, progress bars, JSON files, errors for scripts."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class CmeError(Exception):
    """An error the user can act on (bad input, missing file). Scripts print it on
    one line, without a traceback, and exit non-zero."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    Nothing half-written is ever left under the final name: an interrupted or
    failed write leaves at most ``<name>.tmp-<pid>``, which the next run overwrites.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool, what: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created, with the holder's pid in it).

    ``wait=False``: if another process holds it, CmeError naming ``what``, the lock file
    and the holder's pid, instead of two processes writing the same files; ``wait=True``:
    block until it is free (for short critical sections). The kernel releases the lock
    when its holder exits, however it exits, so a crash never leaves a stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)

            def take():
                fcntl.flock(fd, flags)
        except ImportError:                          # pragma: no cover - Windows
            import msvcrt
            mode = msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK

            def take():
                msvcrt.locking(fd, mode, 1)
        try:
            take()
        except OSError:
            holder = ""
            with contextlib.suppress(OSError):
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 32).decode(errors="replace").strip()
            raise CmeError(f"{what} is in use by another process (pid {holder or 'unknown'}, "
                           f"lock {path}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)                                 # closing releases the lock


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data, **kwargs) -> Path:
    """Write JSON atomically (sorted keys, indented, trailing newline)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default, **kwargs) + "\n"
    return write_bytes_atomic(path, text.encode())


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def as_str(v) -> str:
    """A record's string feature as ``str`` (bytes decoded as UTF-8, NumPy scalars unwrapped)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "shape") and getattr(v, "shape") == () and hasattr(v, "item"):
        return as_str(v.item())
    return str(v)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None,
             desc: str = "", unit: str = "it", disable: bool | None = None):
    """A tqdm progress bar (rate and ETA) on stderr; quiet when TF_CME_QUIET=1."""
    from tqdm.auto import tqdm
    if disable is None:
        disable = os.environ.get("TF_CME_QUIET") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                dynamic_ncols=True, file=sys.stderr, mininterval=0.5)


def run_main(main) -> None:
    """Run a script's ``main()``; turn CmeError into a one-line message and exit 1."""
    try:
        code = main()
    except CmeError as e:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tf-cme"
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        raise SystemExit(130)
    raise SystemExit(code or 0)


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's contents (hex), read in blocks: the one file checksum of tf-cme."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


# --- argument checks that commands run before importing TensorFlow --------------------
def parse_profile_batch(text: str | None) -> tuple[int, int] | None:
    """``--profile-batch``: ``"N"`` or ``"N,M"`` (1-based training batches of one
    ``train()`` call, counted across epochs, as keras.callbacks.TensorBoard's
    ``profile_batch``) -> ``(N, M)``; None for no value. Without TensorFlow (the training
    commands check it before its start-up; training.callbacks.cli_callbacks uses it)."""
    if text is None or str(text).strip() == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or nums[0] < 1 or nums[-1] < nums[0]:
        raise CmeError(f"--profile-batch: {text!r} is not N or N,M with 1 <= N <= M "
                       f"(training batches counted from 1)")
    return nums[0], nums[-1]


def require_path(path: str | os.PathLike, option: str, kind: str = "file") -> Path:
    """``path`` as a Path, or a CmeError naming ``option``: ``kind`` is "file", "folder"
    or "any" (a file or a folder)."""
    p = Path(path)
    ok = {"file": p.is_file, "folder": p.is_dir, "any": p.exists}[kind]()
    if not ok:
        what = "file or folder" if kind == "any" else kind
        if p.exists():
            raise CmeError(f"{path}: not a {what} ({option})")
        raise CmeError(f"{path}: no such {what} ({option})")
    return p


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` can be made a folder and written: not an existing file, and its nearest
    existing ancestor is a writable folder. Creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CmeError(f"{path}: exists and is not a folder ({option})")
    q = p if p.exists() else p.parent
    while not q.exists() and q != q.parent:
        q = q.parent
    if not q.is_dir():
        raise CmeError(f"{path}: {q} is not a folder ({option})")
    if not os.access(q, os.W_OK | os.X_OK):
        raise CmeError(f"{path}: {q} is not writable ({option})")
    return p
