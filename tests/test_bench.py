"""The benchmark harness on a trivial stage: interleaving, medians, rows, --only, --out."""
from __future__ import annotations

import json

import pytest

from tf_cme.benchmarks import harness


@pytest.fixture
def trivial():
    calls = []

    @harness.stage("trivial-copy", group="testgroup", unit="items/s")
    def _stage(ctx):
        data = list(range(2000))

        def ours():
            calls.append("A")
            bytes(bytearray(data[i] % 256 for i in range(len(data))))
            return len(data)

        def peer():
            calls.append("B")
            [x % 256 for x in data]
            return len(data)

        return harness.Pair(ours, peer, "list comprehension", ours_cores=2)

    yield calls
    harness.REGISTRY.pop("trivial-copy", None)


def test_harness_runs_a_trivial_stage(trivial, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = harness.run(["testgroup"], repeats=3, out=str(out), workdir=str(tmp_path / "w"))
    assert trivial == ["A", "B"] + ["A", "B"] * 3          # warm-up, then A B A B A B
    (row,) = rows
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows))
    for k in ("stage", "unit", "ours", "peer", "peer_name", "ratio"):
        assert k in row
    assert row["stage"] == "trivial-copy" and row["unit"] == "items/s"
    assert row["ratio"] == pytest.approx(row["ours"] / row["peer"])
    assert row["ours"] == pytest.approx(sorted(row["ours_all"])[1])    # median of 3
    assert row["ours_per_core"] == pytest.approx(row["ours"] / 2)
    assert row["peer_per_core"] == pytest.approx(row["peer"])
    assert "trivial-copy" in capsys.readouterr().out
    # selection by name works too; unknown names are an error listing the groups
    assert harness.select(["trivial-copy"])[0].name == "trivial-copy"
    with pytest.raises(ValueError, match="testgroup"):
        harness.select(["nope"])


def test_bench_script_lists_record_stages(repo_root):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(repo_root / "scripts" / "bench.py"), "--list"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("build-ferplus", "build-emovox", "pipeline-faces", "pipeline-clips"):
        assert name in r.stdout
    r = subprocess.run([sys.executable, str(repo_root / "scripts" / "bench.py"), "--only",
                        "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown stage" in r.stderr


def test_opt_in_groups_run_only_when_named(trivial):
    harness.discover()
    default = {s.group for s in harness.select(None)}
    assert "teacher-xla" not in default and {"records", "student", "teacher"} <= default
    named = harness.select(["teacher-xla"])
    assert named and {s.group for s in named} == {"teacher-xla"}


def test_bench_script_runs_each_stage_in_a_fresh_process(repo_root, tmp_path):
    """scripts/bench.py isolates stages (a peer's rate depends on the heap state that
    earlier stages leave); the rows come back from the child processes intact."""
    import subprocess
    import sys
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(repo_root / "scripts" / "bench.py"), "--quick",
                        "--repeats", "1", "--only", "load-wav-16k,resample-8k", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert sorted(x["stage"] for x in rows) == ["load-wav-16k", "resample-8k"]
    for x in rows:
        assert x["repeats"] == 1 and x["ours"] > 0 and x["peer"] > 0
        assert x["ratio"] == pytest.approx(x["ours"] / x["peer"])
    assert "load-wav-16k" in r.stdout and "ratio" in r.stdout
    h = subprocess.run([sys.executable, str(repo_root / "scripts" / "bench.py"), "--help"],
                       capture_output=True, text=True)
    assert "--in-process" in h.stdout and "--row-out" not in h.stdout
