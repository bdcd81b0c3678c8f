"""Builds split over hosts (issue 16.1): ``--num-workers N --worker-index I`` (or TF_CONFIG)
builds every I-th shard of the one-host shard list and a part manifest; ``merge`` joins the
parts into the one-host manifest; a killed worker resumes; missing, stale or mixed parts are
errors naming the part files. Record builders (ferplus, emovox, external) and the labeller."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tf_cme.data import emovox, external, ferplus, records
from tf_cme.demo.files import make_fer_csvs
from tf_cme.utils import CmeError

ROOT = Path(__file__).resolve().parents[1]
P = records.Part


def _same_set(a: Path, b: Path) -> list[str]:
    """``a`` and ``b`` hold the same record set: manifest, skipped.tsv, shard bytes."""
    assert json.loads((a / "manifest.json").read_text()) == \
        json.loads((b / "manifest.json").read_text())
    assert (a / "skipped.tsv").read_text() == (b / "skipped.tsv").read_text()
    names = sorted(x.name for x in a.glob("*.tfrecord"))
    assert names == sorted(x.name for x in b.glob("*.tfrecord"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    return names


@pytest.fixture(scope="module")
def fer(tmp_path_factory):
    """120 FER rows in 20-row shards (6 shards over 3 splits) and their one-host build."""
    d = tmp_path_factory.mktemp("fer")
    a, b = make_fer_csvs(d / "csv", 120, seed=3)
    cfg = ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b), shard_size=20,
                                     workers=1)
    ref = d / "ref"
    ferplus.build(ref, cfg)
    return cfg, ref


def test_two_workers_and_merge_equal_the_one_host_build(tmp_path, fer):
    cfg, ref = fer
    order = [s["file"] for s in records.read_manifest(ref)["shards"]]
    assert len(order) == 6
    out = tmp_path / "split"
    pm = ferplus.build(out, cfg, part=P(0, 2))
    # worker 0 wrote the shards at even positions of the one-host list, and no manifest
    assert sorted(pm["shards"]) == sorted(order[0::2])
    assert sorted(x.name for x in out.glob("*.tfrecord")) == sorted(order[0::2])
    assert (out / "manifest.part-0-of-2.json").exists() and not (out / "manifest.json").exists()
    with pytest.raises(CmeError, match=r"missing part\(s\) manifest\.part-1-of-2\.json.*"
                                       r"--num-workers 2 --worker-index 1"):
        records.merge(out)
    ferplus.build(out, cfg, part=P(1, 2))
    assert not records.parts_complete(tmp_path / "nowhere", P(0, 2))
    assert records.parts_complete(out, P(1, 2))
    m = records.merge(out)
    assert sum(v["examples"] for v in m["splits"].values()) == 120
    assert _same_set(out, ref) == sorted(order)
    # a one-host build into the split folder resumes it: nothing rebuilt, same set
    stamps = {n: (out / n).stat().st_mtime_ns for n in order}
    ferplus.build(out, cfg)
    assert {n: (out / n).stat().st_mtime_ns for n in order} == stamps
    _same_set(out, ref)


def test_three_workers_any_order(tmp_path, fer):
    cfg, ref = fer
    out = tmp_path / "split"
    for i in (2, 0, 1):
        ferplus.build(out, cfg, part=P(i, 3))
    records.merge(out)
    _same_set(out, ref)


def _cmd(cfg, out, *extra):
    return [sys.executable, str(ROOT / "scripts" / "build_records.py"), "ferplus",
            "--fer-csv", cfg.fer_csv, "--ferplus-csv", cfg.ferplus_csv, "--out", str(out),
            "--shard-size", str(cfg.shard_size), "--workers", "1", *extra]


def test_killed_worker_resumes_and_the_last_worker_merges(tmp_path, fer):
    """Worker 1 of 2 (from TF_CONFIG: a chief and a worker) is killed after its first shard;
    its re-run keeps that shard, builds the rest and, being last, writes manifest.json."""
    cfg, ref = fer
    order = [s["file"] for s in records.read_manifest(ref)["shards"]]
    mine = order[1::2]
    out = tmp_path / "split"
    ferplus.build(out, cfg, part=P(0, 2))
    tf_config = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                            "task": {"type": "worker", "index": 0}})
    env = {**os.environ, "TF_CONFIG": tf_config, "TF_CME_QUIET": "1"}
    p = subprocess.Popen(_cmd(cfg, out), env={**env, "TF_CME_TEST_SHARD_DELAY": "0.5"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any((out / n).exists() for n in mine):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    built = [n for n in mine if (out / n).exists()]
    assert 1 <= len(built) < len(mine)
    assert not (out / "manifest.part-1-of-2.json").exists() and not (out / "manifest.json").exists()
    stamps = {n: (out / n).stat().st_mtime_ns for n in built}
    r = subprocess.run(_cmd(cfg, out), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "worker 1 of 2" in r.stdout and "all 2 parts merged" in r.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in built} == stamps    # kept, not rebuilt
    _same_set(out, ref)
    assert not list(out.glob("*.pending*")) and not list(out.glob("*.tmp-*"))


def test_lost_part_is_rebuilt(tmp_path, fer):
    """A worker whose part manifest and one shard are gone (a crash before it finished)
    re-runs into the same result."""
    cfg, ref = fer
    out = tmp_path / "split"
    for i in range(2):
        ferplus.build(out, cfg, part=P(i, 2))
    lost = sorted(ferplus.build(out, cfg, part=P(1, 2))["shards"])[0]
    (out / "manifest.part-1-of-2.json").unlink()
    (out / lost).unlink()
    with pytest.raises(CmeError, match="missing part"):
        records.merge(out)
    ferplus.build(out, cfg, part=P(1, 2))
    records.merge(out)
    _same_set(out, ref)
    # a shard gone after its part was written: merge names it and the worker to re-run
    (out / lost).unlink()
    with pytest.raises(CmeError, match=rf"{lost} \(missing\), listed by "
                                       rf"manifest\.part-1-of-2\.json: re-run --num-workers 2 "
                                       rf"--worker-index 1"):
        records.merge(out)


def test_mixed_parts_are_refused(tmp_path, fer):
    cfg, ref = fer
    other = dataclasses.replace(cfg, variant="clean")
    out = tmp_path / "split"
    ferplus.build(out, cfg, part=P(0, 2))
    ferplus.build(out, other, part=P(1, 2))             # another config on worker 1
    with pytest.raises(CmeError, match=r"manifest\.part-1-of-2\.json and manifest\.part-0-of-2"
                                       r"\.json come from different builds \(they differ in "
                                       r"build, config, .*\)"):
        records.merge(out)
    # worker 1 run again with other options: refused without --overwrite, replaced with it
    with pytest.raises(CmeError, match=r"another config \(build\.part-1-of-2\.json\)"):
        ferplus.build(out, cfg, part=P(1, 2))
    ferplus.build(out, cfg, part=P(1, 2), overwrite=True)
    records.merge(out)
    _same_set(out, ref)
    # a part of another split (3 workers) beside the 2-worker parts
    ferplus.build(out, cfg, part=P(2, 3))
    with pytest.raises(CmeError, match=r"different numbers of workers \(N=2: manifest\.part-0-of-"
                                       r"2\.json, manifest\.part-1-of-2\.json; N=3: manifest\."
                                       r"part-2-of-3\.json\)"):
        records.merge(out)
    with pytest.raises(CmeError, match="no part manifests"):
        records.merge(ref)


def test_worker_options_and_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert records.part_from_args(None, None) is None
    assert records.part_from_args(1, 0) is None
    assert records.part_from_args(4, 3) == P(3, 4)
    with pytest.raises(CmeError, match="go together"):
        records.part_from_args(2, None)
    with pytest.raises(CmeError, match=r"--worker-index must be in 0\.\.1"):
        records.part_from_args(2, 2)
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}
    for task, want in [({"type": "chief", "index": 0}, P(0, 4)),
                       ({"type": "worker", "index": 1}, P(2, 4)),
                       ({"type": "ps", "index": 0}, P(3, 4))]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert records.part_from_args(None, None) == want
    assert records.part_from_args(2, 1) == P(1, 2)       # the options win over TF_CONFIG
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 5}}))
    with pytest.raises(CmeError, match="not one of the tasks its cluster lists"):
        records.part_from_args(None, None)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(CmeError, match="TF_CONFIG is not valid JSON"):
        records.part_from_args(None, None)


@pytest.mark.parametrize("kind", ["emovox", "external"])
def test_emovox_and_external_split(kind, demo_corpus, tmp_path):
    if kind == "emovox":
        mod, cfg = emovox, emovox.EmovoxBuildConfig(root=str(demo_corpus / "voxceleb"),
                                                    shard_size=4, workers=1)
    else:
        mod, cfg = external, external.ExternalBuildConfig(root=str(demo_corpus / "external"),
                                                          shard_size=4, workers=1)
    ref = tmp_path / "ref"
    m = mod.build(ref, cfg)
    assert len(m["shards"]) >= 3
    out = tmp_path / "split"
    for i in range(3):
        mod.build(out, cfg, part=P(i, 3))
    records.merge(out)
    _same_set(out, ref)


# ------------------------------------------------------------------- labelling
@pytest.fixture(scope="module")
def labelling(tmp_path_factory):
    from test_teacher_label import _build_records
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    src = _build_records(tmp_path_factory.mktemp("vox"), 0)
    teacher = tmp_path_factory.mktemp("teacher") / "t.keras"
    save_model(build_model("resnet50-ferplus", width=0.0625, input_size=32), teacher)
    from tf_cme.labelling import label_records
    ref = tmp_path_factory.mktemp("lab") / "ref"
    label_records(src, ref, teacher, batch_size=4)
    return src, teacher, ref


TIMING = ("seconds", "frames_per_second", "devices")   # how the run went, per host


def _summary(d: Path) -> dict:
    s = json.loads((d / "labelling.json").read_text())
    return {k: v for k, v in s.items() if k not in TIMING + ("output",)}


def test_split_labelling_equals_one_host(tmp_path, labelling):
    from tf_cme.labelling import label_records, merge_labelled
    src, teacher, ref = labelling
    out = tmp_path / "split"
    s0 = label_records(src, out, teacher, batch_size=4, part=P(0, 2))
    assert "merged" not in s0 and not (out / "manifest.json").exists()
    with pytest.raises(CmeError, match=r"missing part\(s\) manifest\.part-1-of-2\.json"):
        merge_labelled(out)
    s1 = label_records(src, out, teacher, batch_size=4, part=P(1, 2))
    assert s1["merged"]["frames"] == s0["frames"] + s1["frames"] == _summary(ref)["frames"] == 12
    names = _same_set(out, ref)
    assert len(names) == 3
    assert _summary(out) == _summary(ref)
    assert json.loads((out / "metrics.json").read_text())["frames"] == 12
    # the labelled parts merge by hand too, with build_records.py merge (one implementation)
    (out / "manifest.json").unlink()
    (out / "labelling.json").unlink()
    from tf_cme.commands import build_records
    assert build_records.main(["merge", str(out)]) == 0
    _same_set(out, ref)
    assert _summary(out) == _summary(ref)

    # a worker whose part manifest and a shard are gone re-runs into the same set
    lost = sorted(json.loads((out / "manifest.part-0-of-2.json").read_text())["shards"])[0]
    (out / "manifest.part-0-of-2.json").unlink()
    (out / lost).unlink()
    (out / "manifest.json").unlink()
    again = label_records(src, out, teacher, batch_size=4, part=P(0, 2))
    assert again["shards_from_cache"] == 2 and again["frames_computed"] == 0   # logits cached
    _same_set(out, ref)
    run = ("frames_computed", "shards_from_cache")          # what this run did, not the set
    assert {k: v for k, v in _summary(out).items() if k not in run} == \
        {k: v for k, v in _summary(ref).items() if k not in run}

    # worker 1 with another crop: the labelled set refuses to merge, naming the parts
    with pytest.raises(CmeError, match=r"manifest\.part-1-of-2\.json and manifest\.part-0-of-2"
                                       r"\.json come from different builds"):
        label_records(src, out, teacher, batch_size=4, part=P(1, 2), crop_fraction=1.0,
                      overwrite=True)
