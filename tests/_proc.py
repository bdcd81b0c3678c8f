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


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for port-0 binds and outgoing connections' source ports."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that are free right now, drawn below the
    kernel's ephemeral range: a port the kernel handed out for ``bind(0)`` is free again
    once closed, and any outgoing connection (a worker dialling its peer) or another
    process's ``bind(0)`` can be given it before our server binds it; ports outside that
    range are only ever taken by someone asking for that number. A clash with such a
    process is still possible, hence ``run_cluster``'s retry."""
    import random
    lo = 20000
    hi = min(_ephemeral_range()[0], 32768) - 1
    rng = random.SystemRandom()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(lo, hi)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (see ``free_ports``)."""
    return free_ports(1)[0]


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


def _wait(procs, timeout: int) -> list[tuple[str, str]]:
    """Every process's ``(stdout, stderr)``; when one exits non-zero (or ``timeout``
    passes), the others are killed instead of being waited for (a worker whose peer died
    would wait for it until the timeout)."""
    import threading
    import time
    outs: list = [None] * len(procs)

    def read(i, p):
        outs[i] = p.communicate()

    threads = [threading.Thread(target=read, args=(i, p), daemon=True)
               for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for t in threads:
            t.join()
    return [o if o is not None else ("", "") for o in outs]


def wait_all(procs, timeout: int = 600) -> list[tuple[str, str]]:
    """Wait for every ``subprocess.Popen`` of ``procs`` (killing any left when one fails or
    times out) and assert each exited 0, showing its stderr's tail otherwise; returns their
    ``(stdout, stderr)``."""
    outs = _wait(procs, timeout)
    _check(procs, outs)
    return outs


def _check(procs, outs, what: str = "") -> None:
    """Assert every process exited 0; the message shows each failed one's exit code and
    stderr tail (a worker killed after its peer failed shows -9, the peer the cause)."""
    bad = [f"process {i}: exit {p.returncode}\n{e[-3000:]}"
           for i, (p, (_, e)) in enumerate(zip(procs, outs)) if p.returncode != 0]
    assert not bad, what + "\n".join(bad)


#: What a worker's log says when its loopback port was taken between ``free_ports`` and
#: its server's bind, or when a peer's address answered as something else.
PORT_TROUBLE = ("Address already in use", "Could not start gRPC server",
                "failed to connect to all addresses", "Connection reset by peer")


def run_cluster(start, root: Path, n: int = 2, attempts: int = 3,
                timeout: int = 600) -> tuple[Path, list[tuple[str, str]]]:
    """Run an ``n``-worker loopback cluster to the end: ``start(workers, folder)`` gets the
    workers' ``host:port`` addresses and an empty folder (under ``root``) and returns their
    ``subprocess.Popen``. When a worker fails with one of ``PORT_TROUBLE`` in its stderr,
    the whole cluster is run again on other ports in a fresh folder (the reason printed);
    any other failure, or the last attempt's, fails the test with the worker's stderr.
    Returns the folder of the run that succeeded and every worker's ``(stdout, stderr)``."""
    for attempt in range(1, attempts + 1):
        ports = free_ports(n)
        folder = root / f"cluster-{attempt}"
        folder.mkdir(parents=True)
        procs = start([f"127.0.0.1:{p}" for p in ports], folder)
        outs = _wait(procs, timeout)
        if all(p.returncode == 0 for p in procs):
            return folder, outs
        seen = [m for _, e in outs for m in PORT_TROUBLE if m in e]
        if not seen or attempt == attempts:
            _check(procs, outs, f"attempt {attempt}/{attempts} on ports {ports}:\n")
        print(f"loopback cluster on ports {ports}: {seen[0]!r} in a worker's log; running "
              f"it again on other ports (attempt {attempt + 1}/{attempts})")
    raise AssertionError("unreachable")
