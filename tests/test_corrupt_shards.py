"""Corrupt shards (issue 12.2): a shard with one flipped byte (same size, a bad CRC) is a
CmeError naming the shard, the record and the command that rebuilds it in every command
that reads records; with --skip-corrupt each command finishes and lists the shard in its
outputs (skipped_corrupt_shards); re-running the build rebuilds the shard byte-identically."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_cme.audio.io import write_wav
from tf_cme.data import records
from tf_cme.demo.files import jpeg
from tf_cme.utils import CmeError

WIDTH, SIZE = 0.0625, 32


def flip(shard: Path, record: int = 1) -> str:
    """Flip one payload byte of ``record`` (the file keeps its size); return the text the
    error must contain: the shard, the record and its byte offset."""
    data, offs, _ = records.shard_index(shard)
    b = bytearray(data)
    b[int(offs[record]) + 5] ^= 0xFF
    shard.write_bytes(bytes(b))
    return f"{shard.name} (record {record} at byte {int(offs[record]) - 12}: data CRC mismatch)"


def run_cmd(monkeypatch, module, *argv) -> int:
    """``main()`` of a tf_cme.commands module in this process, with ``argv``."""
    import importlib
    mod = importlib.import_module(f"tf_cme.commands.{module}")
    monkeypatch.setattr(sys, "argv", [f"{module}.py", *map(str, argv)])
    return mod.main()


# ----------------------------------------------------------------------- FER+ / teacher
@pytest.fixture(scope="module")
def fer(tmp_path_factory):
    """FER+ records built by build_records.py (small shards: several per split) and a
    clean copy of them."""
    from tf_cme.commands import build_records
    from tf_cme.demo import corpus as dc
    root = tmp_path_factory.mktemp("fer")
    dc.write_ferplus(root, 160, seed=0)
    argv = ["ferplus", "--fer-csv", root / "ferplus/fer2013.csv",
            "--ferplus-csv", root / "ferplus/fer2013new.csv", "--shard-size", "8",
            "--workers", "1"]
    argv = [str(a) for a in argv]
    assert build_records.main(argv + ["--out", str(root / "rec")]) == 0
    assert build_records.main(argv + ["--out", str(root / "ref")]) == 0
    return root / "rec", root / "ref", argv


def test_teacher_commands_name_skip_and_rebuild(fer, tmp_path, monkeypatch, capsys):
    from tf_cme.commands import build_records
    rec, ref, argv = fer
    m = records.read_manifest(rec)
    val = [s["file"] for s in m["shards"] if s["split"] == "val"]
    assert len(val) >= 2
    bad_train = flip(rec / "train-00000.tfrecord")
    bad_val = flip(rec / val[0], record=0)
    hint = f"rebuild it with `build_records.py ferplus --config {rec / 'config.json'} --out {rec}`"
    tiny = ["--records", rec, "--arch", "resnet50-ferplus", "--width", WIDTH, "--input-size",
            SIZE, "--batch-size", 16, "--epochs", 1, "--set", "steps_per_epoch=1"]

    # train_teacher: named error (it died with a raw DataLossError naming no file)
    with pytest.raises(CmeError) as e:
        run_cmd(monkeypatch, "train_teacher", *tiny, "--out", tmp_path / "t")
    assert bad_train in str(e.value) and hint in str(e.value) and "--skip-corrupt" in str(e.value)
    assert not (tmp_path / "t").exists()
    assert run_cmd(monkeypatch, "train_teacher", *tiny, "--out", tmp_path / "t",
                   "--skip-corrupt") == 0
    tm = json.loads((tmp_path / "t/metrics.json").read_text())["training"]
    assert tm["skipped_corrupt_shards"] == sorted(["train-00000.tfrecord", val[0]])
    assert tm["epochs_done"] == 1

    # evaluate_teacher (val, test): the val shard is named, or skipped and listed
    with pytest.raises(CmeError, match=r"corrupt shard .*" + val[0]):
        run_cmd(monkeypatch, "evaluate_teacher", "--run", tmp_path / "t", "--records", rec)
    assert run_cmd(monkeypatch, "evaluate_teacher", "--run", tmp_path / "t", "--records", rec,
                   "--skip-corrupt") == 0
    em = json.loads((tmp_path / "t/metrics.json").read_text())
    assert em["skipped_corrupt_shards"] == [val[0]]
    n_val = sum(s["examples"] for s in m["shards"] if s["split"] == "val")
    skipped_val = next(s["examples"] for s in m["shards"] if s["file"] == val[0])
    assert em["val_examples"] == n_val - skipped_val > 0

    # build_records verify: named; with --skip-corrupt both shards listed
    with pytest.raises(CmeError, match=r"corrupt shard .*train-00000\.tfrecord"):
        build_records.main(["verify", str(rec)])
    capsys.readouterr()
    assert build_records.main(["verify", str(rec), "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert json.dumps(sorted(["train-00000.tfrecord", val[0]])) in out
    r = records.verify(rec, skip_corrupt=True)
    assert r["examples"] == sum(s["examples"] for s in m["shards"]) - skipped_val - next(
        s["examples"] for s in m["shards"] if s["file"] == "train-00000.tfrecord")

    # re-running the build (as the message says) rebuilds exactly the damaged shards
    assert build_records.main(["ferplus", "--config", str(rec / "config.json"),
                               "--out", str(rec)]) == 0
    out = capsys.readouterr()
    assert "rebuilt_corrupt 2" in out.out and "rebuilding corrupt shard" in out.err
    assert records.last_build(rec)["rebuilt_corrupt"] == sorted(["train-00000.tfrecord", val[0]])
    names = sorted(p.name for p in ref.glob("*.tfrecord"))
    assert names == sorted(p.name for p in rec.glob("*.tfrecord"))
    assert all((rec / n).read_bytes() == (ref / n).read_bytes() for n in names)
    assert (rec / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    assert records.verify(rec)["corrupt"] == []
    assert build_records.main(argv + ["--out", str(rec)]) == 0   # nothing left to rebuild
    assert records.last_build(rec)["rebuilt_corrupt"] == []


def test_old_progress_without_sha256_is_crc_checked(fer, tmp_path):
    """Statistics written before sha256 was recorded: the resume reads the CRCs instead."""
    from tf_cme.data import ferplus
    from tf_cme.demo import corpus as dc
    dc.write_ferplus(tmp_path, 40, seed=1)
    cfg = ferplus.FerplusBuildConfig(fer_csv=str(tmp_path / "ferplus/fer2013.csv"),
                                     ferplus_csv=str(tmp_path / "ferplus/fer2013new.csv"),
                                     shard_size=8, workers=1)
    ferplus.build(tmp_path / "r", cfg)
    clean = (tmp_path / "r/train-00001.tfrecord").read_bytes()
    for st in (tmp_path / "r/.progress").glob("*.tfrecord.json"):
        d = json.loads(st.read_text())
        d.pop("sha256")
        st.write_text(json.dumps(d))
    flip(tmp_path / "r/train-00001.tfrecord", record=0)
    ferplus.build(tmp_path / "r", cfg)
    assert records.last_build(tmp_path / "r")["rebuilt_corrupt"] == ["train-00001.tfrecord"]
    assert (tmp_path / "r/train-00001.tfrecord").read_bytes() == clean


# ------------------------------------------------------------ emovox / labels / student
@pytest.fixture(scope="module")
def vox(tmp_path_factory):
    """A VoxCeleb-layout tree (8 tracks, 3 frames each) built by build_records.py emovox
    into shards of 2 clips, and a teacher file."""
    from tf_cme.commands import build_records
    from tf_cme.models import build_model
    from tf_cme.models.io import save_model
    root = tmp_path_factory.mktemp("vox")
    rng = np.random.default_rng(0)
    lines = []
    for t in range(8):
        ident = f"Synth_Person_{t % 4:03d}"
        write_wav(root / "wav" / ident / "vid0001" / f"{t + 1:05d}.wav",
                  rng.normal(0, 2000, 24000).astype(np.int16), 16000)
        fdir = root / "frames" / ident / "1.6" / "vid0001" / f"{t + 1:05d}"
        fdir.mkdir(parents=True, exist_ok=True)
        for k in range(3):
            (fdir / f"{6 * k:05d}.jpg").write_bytes(
                jpeg(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), quality=90))
        code = 1 if t < 6 else 2
        lines.append(f"{code} {ident}/vid0001/{t + 1:05d}.wav {ident}/1.6/vid0001/{t + 1:05d}")
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    assert build_records.main(["emovox", "--root", str(root), "--out", str(root / "rec"),
                               "--shard-size", "2", "--workers", "1"]) == 0
    teacher = root / "t.keras"
    save_model(build_model("resnet50-ferplus", width=WIDTH, input_size=SIZE), teacher)
    return root / "rec", teacher


def test_emovox_commands_name_skip_and_rebuild(vox, tmp_path, monkeypatch, capsys):
    from tf_cme.training.student import check_records
    src, teacher = vox
    shutil.copytree(src, tmp_path / "src")
    src = tmp_path / "src"
    bad_src = flip(src / "train-00000.tfrecord", record=0)
    lab = tmp_path / "labels"
    label = ["--records", src, "--teacher", teacher, "--out", lab, "--batch-size", 8]

    # label_faces: named (it died, even with --skip-corrupt); with it the shard is listed
    with pytest.raises(CmeError) as e:
        run_cmd(monkeypatch, "label_faces", *label)
    assert bad_src in str(e.value) and "build_records.py emovox --config" in str(e.value)
    assert run_cmd(monkeypatch, "label_faces", *label, "--skip-corrupt") == 0
    summary = json.loads((lab / "labelling.json").read_text())
    assert summary["skipped_corrupt_shards"] == ["train-00000.tfrecord"]
    assert summary["clips"] == 6 and json.loads((lab / "metrics.json").read_text())[
        "skipped_corrupt_shards"] == ["train-00000.tfrecord"]
    lm = records.read_manifest(lab)
    assert lm["source_records"]["skipped_corrupt_shards"] == ["train-00000.tfrecord"]
    assert lm["splits"]["train"]["examples"] == 4
    clean = (lab / "train-00001.tfrecord").read_bytes()

    # the labelled set: a corrupt shard in the student's pre-scan, trainer and evaluator
    bad_lab = flip(lab / "train-00001.tfrecord", record=1)
    with pytest.raises(CmeError) as e:
        check_records(lab, ["train"])               # read with CRC checks on
    assert bad_lab in str(e.value) and "label_faces.py --records" in str(e.value)
    tiny = ["--records", lab, "--width", WIDTH, "--mini-epochs", 1, "--batch-size", 2,
            "--crop-samples", 17760, "--epoch-fraction", 0.5, "--set", "val_fraction=0"]
    with pytest.raises(CmeError, match=r"corrupt shard .*train-00001\.tfrecord \(record 1"):
        run_cmd(monkeypatch, "train_student", *tiny, "--out", tmp_path / "s")
    assert run_cmd(monkeypatch, "train_student", *tiny, "--out", tmp_path / "s",
                   "--skip-corrupt") == 0
    sm = json.loads((tmp_path / "s/metrics.json").read_text())
    assert sm["skipped_corrupt_shards"] == ["train-00001.tfrecord"]
    assert sm["student"]["steps_per_mini_epoch"] == 1      # 2 clips left: ceil(0.5 * 2 / 2)
    with pytest.raises(CmeError, match=r"corrupt shard .*train-00001\.tfrecord"):
        run_cmd(monkeypatch, "evaluate_student", tmp_path / "s", "--records", lab,
                "--out", tmp_path / "e")
    assert run_cmd(monkeypatch, "evaluate_student", tmp_path / "s", "--records", lab,
                   "--out", tmp_path / "e", "--skip-corrupt") == 0
    ev = json.loads((tmp_path / "e/metrics.json").read_text())
    assert ev["skipped_corrupt_shards"] == ["train-00001.tfrecord"]
    assert ev["tracks"]["train"] == 2 and ev["tracks"]["unheard"] == 2

    # re-running label_faces as the message says rewrites the damaged labelled shard
    capsys.readouterr()
    assert run_cmd(monkeypatch, "label_faces", *label, "--skip-corrupt") == 0
    assert "rebuilding corrupt shard" in capsys.readouterr().err
    assert (lab / "train-00001.tfrecord").read_bytes() == clean
    assert records.last_build(lab)["rebuilt_corrupt"] == ["train-00001.tfrecord"]


def test_shard_damaged_after_its_check_is_still_named(fer, tmp_path):
    """A shard that passed its check and is damaged afterwards (same size and modification
    time, so the once-per-process check is not repeated): the DataLossError tf.data raises
    inside the loop becomes the CmeError naming the shard."""
    import os

    from tf_cme.models import build_model
    from tf_cme.training.teacher import predict_split
    rec = tmp_path / "rec"
    shutil.copytree(fer[1], rec)
    records.verify(rec)                                  # checked: cached in this process
    shard = rec / "val-00000.tfrecord"
    st = shard.stat()
    flip(shard, record=0)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    model = build_model("resnet50-ferplus", width=WIDTH, input_size=SIZE)
    with pytest.raises(CmeError) as e:
        predict_split(model, rec, "val", batch_size=4)
    assert "corrupt shard" in str(e.value) and "val-00000.tfrecord" in str(e.value)
    assert "damaged while it was being read" in str(e.value)
    assert "build_records.py ferplus --config" in str(e.value)
