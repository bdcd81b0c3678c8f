"""Helpers for tests that start subprocesses or servers on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The interpreter running the tests (so `make test-tf221` runs its scripts on the
#: TF 2.21 venv, not on .venv), for script subprocesses.
PY = sys.executable


def env(**kw) -> dict:
    """The environment for a child process: quiet, no inherited TF_CONFIG, plus ``kw``."""
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CME_QUIET="1")
    e.pop("TF_CONFIG", None)
    e.update(kw)
    return e


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script_inprocess(name: str, *args) -> int:
    """Run ``scripts/NAME`` in this process as ``__main__``; return its exit code."""
    import runpy

    import pytest
    argv = sys.argv
    sys.argv = [str(ROOT / "scripts" / name), *map(str, args)]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    return e.value.code


def wait_all(procs, timeout: int = 600) -> list[tuple[str, str]]:
    """Wait for every ``subprocess.Popen`` of ``procs`` (killing any left when one fails or
    times out) and assert each exited 0, showing its stderr's tail otherwise; returns their
    ``(stdout, stderr)``."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return outs
