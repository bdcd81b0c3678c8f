"""tests/_proc.py: loopback ports that the kernel does not hand out, and a multi-worker run
retried on other ports when a worker's log shows its port was taken (the distribution
tests' free-port race), failing fast and with the cause otherwise."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _proc  # noqa: E402


def _py(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    lo, _ = _proc._ephemeral_range()
    ports = _proc.free_ports(8)
    assert len(set(ports)) == 8
    assert all(20000 <= p < lo for p in ports)


def test_cluster_run_again_on_other_ports_when_a_port_was_taken(tmp_path, capsys):
    calls = []

    def start(workers, folder):
        calls.append((workers, folder))
        if len(calls) == 1:      # worker 1 lost its port; worker 0 waits for it forever
            return [_py("import time; time.sleep(60)"),
                    _py("import sys; sys.stderr.write('E grpc_server_lib.cc:615] UNKNOWN: "
                        "Could not start gRPC server\\n'); sys.exit(1)")]
        (folder / "done").write_text("ok")
        return [_py("print('w0')"), _py("print('w1')")]

    t0 = time.monotonic()
    folder, outs = _proc.run_cluster(start, tmp_path)
    assert time.monotonic() - t0 < 50          # the waiting worker was killed, not awaited
    assert len(calls) == 2 and folder == tmp_path / "cluster-2" == calls[1][1]
    assert (folder / "done").exists() and not list(calls[0][1].iterdir())
    assert [o.strip() for o, _ in outs] == ["w0", "w1"]
    assert all(w.startswith("127.0.0.1:") for w in calls[0][0]) and len(calls[0][0]) == 2
    assert calls[0][0] != calls[1][0]          # other ports the second time
    out = capsys.readouterr().out
    assert "'Could not start gRPC server' in a worker's log" in out and "attempt 2/3" in out


def test_cluster_other_failures_are_not_retried_and_show_the_cause(tmp_path):
    calls = []

    def start(workers, folder):
        calls.append(folder)
        return [_py("import time; time.sleep(60)"),
                _py("import sys; sys.stderr.write('ValueError: bad records\\n'); sys.exit(3)")]

    with pytest.raises(AssertionError) as e:
        _proc.run_cluster(start, tmp_path)
    assert len(calls) == 1
    assert "process 1: exit 3" in str(e.value) and "bad records" in str(e.value)
    assert "process 0: exit -9" in str(e.value)


def test_cluster_gives_up_after_the_last_attempt(tmp_path):
    def start(workers, folder):
        return [_py("import sys; sys.stderr.write('bind: Address already in use\\n'); "
                    "sys.exit(1)"), _py("pass")]

    with pytest.raises(AssertionError, match=r"(?s)attempt 3/3 on ports .*Address already in use"):
        _proc.run_cluster(start, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster-1", "cluster-2",
                                                          "cluster-3"]
