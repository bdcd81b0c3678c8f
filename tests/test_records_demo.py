"""Record builders on the demo corpus (fixture ``demo_corpus``): exact counts against
its split file and manifests; external layouts; one raw-video build."""
from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from tf_cme import emotions
from tf_cme.audio.io import write_wav
from tf_cme.data import emovox, external, pipelines, records, schema
from tf_cme.utils import CmeError


def test_emovox_from_demo_corpus(demo_corpus, tmp_path):
    vox = demo_corpus / "voxceleb"
    m = emovox.build(tmp_path / "rec", emovox.EmovoxBuildConfig(root=str(vox), shard_size=16))
    lines = [l.split() for l in (vox / "splits.txt").read_text().splitlines() if l.strip()]
    want = Counter(schema.SET_NAMES[int(l[0])] for l in lines)
    assert {s: v["examples"] for s, v in m["splits"].items()} == dict(want)
    assert m["skipped"] == {}
    assert m["synthetic"] is True          # the corpus's SYNTHETIC marker (tf_cme.provenance)
    clips = list(pipelines.clips_dataset(tmp_path / "rec", "heard"))
    assert len(clips) == want["heard"]
    import soundfile as sf
    for c in clips[:3]:
        wav = vox / "wav" / c["wav"].numpy().decode()
        x, rate = sf.read(str(wav), dtype="int16")
        assert rate == 16000
        np.testing.assert_array_equal(c["waveform"].numpy(),
                                      x[:schema.MAX_SAMPLES].astype(np.float32) / 32768)
        n_frames = len(list((vox / "frames" / c["identity"].numpy().decode() / "1.6" /
                             c["video"].numpy().decode() / c["track"].numpy().decode()).glob("*.jpg")))
        assert len(c["frames"]) == n_frames > 0
        assert (c["frame_index"].numpy() % 6 == 0).all()


def test_external_from_demo_corpus(demo_corpus, tmp_path):
    root = demo_corpus / "external"
    m = external.build(tmp_path / "rec", external.ExternalBuildConfig(root=str(root)))
    with open(root / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert m["layout"] == "manifest" and m["classes"] == list(emotions.RML)
    assert m["synthetic"] is True
    assert m["splits"]["all"]["examples"] == len(rows) and m["skipped"] == {}
    want = Counter(emotions.canonical(r["label"]) for r in rows)
    assert {k: v for k, v in m["splits"]["all"]["class_counts"].items() if v} == dict(want)
    clips = {c["path"].numpy().decode(): c for c in pipelines.external_dataset(tmp_path / "rec")}
    r = rows[0]
    c = clips[r["path"]]
    assert c["label_name"].numpy().decode() == emotions.canonical(r["label"])
    assert int(c["label"]) == emotions.RML.index(emotions.canonical(r["label"]))
    assert int(c["ferplus_label"]) == emotions.index(r["label"])
    assert c["speaker"].numpy().decode() == r["speaker"]
    import soundfile as sf
    info = sf.info(str(root / r["path"]))
    assert int(c["source_rate"]) == info.samplerate == 22050
    assert abs(c["waveform"].shape[0] - info.frames * 16000 / 22050) <= 1


def test_external_layouts(tmp_path):
    rng = np.random.default_rng(0)
    tone = lambda: (rng.normal(size=8000) * 2000).astype(np.int16)  # noqa: E731
    rml = tmp_path / "rml"
    for subset, sp, name in [("rml-1", "s1", "an1"), ("rml-1", "s2", "ha3"),
                             ("rml-2", "s6", "su2")]:
        write_wav(rml / subset / sp / "english" / f"{name}.wav", tone(), 16000)
    m = external.build(tmp_path / "r1", external.ExternalBuildConfig(root=str(rml), workers=1))
    assert m["layout"] == "rml" and m["dataset"] == "rml"
    assert "synthetic" not in m            # no marker: not the demo corpus
    assert {s: v["examples"] for s, v in m["splits"].items()} == {"rml-1": 2, "rml-2": 1}
    got = {c["path"].numpy().decode(): (int(c["label"]), int(c["ferplus_label"]),
                                        c["speaker"].numpy().decode())
           for c in pipelines.external_dataset(tmp_path / "r1")}
    assert got["rml-1/s1/english/an1.wav"] == (0, emotions.index("anger"), "s1")
    assert got["rml-2/s6/english/su2.wav"] == (5, emotions.index("surprise"), "s6")
    ent = tmp_path / "ent"
    write_wav(ent / "subject-3" / "fear" / "sentence 1" / "s3_fe_1.wav", tone(), 16000)
    write_wav(ent / "subject-40" / "sadness" / "sentence 2" / "s40_sa_2.wav", tone(), 16000)
    m = external.build(tmp_path / "r2", external.ExternalBuildConfig(root=str(ent), workers=1))
    assert m["layout"] == "enterface"
    assert {s: v["examples"] for s, v in m["splits"].items()} == {"train": 1, "val": 1}
    # manifest with a split column, a missing file counted, an unknown label an error
    man = tmp_path / "man"
    write_wav(man / "a.wav", tone(), 16000)
    write_wav(man / "b.wav", np.zeros(100, np.int16), 16000)
    write_wav(man / "d.wav", np.zeros(0, np.int16), 16000)
    (man / "manifest.csv").write_text("path,label,speaker,split\na.wav,happy,x,f1\n"
                                      "b.wav,sad,y,f2\nc.wav,fear,z,f2\nd.wav,angry,z,f2\n")
    m = external.build(tmp_path / "r3", external.ExternalBuildConfig(root=str(man), workers=1))
    assert m["skipped"] == {"silent_audio": 1, "missing_audio": 1, "empty_audio": 1}
    assert m["splits"]["f1"]["examples"] == 1 and m["splits"]["f2"]["examples"] == 0
    (man / "manifest.csv").write_text("path,label,speaker\na.wav,bored,x\n")
    with pytest.raises(CmeError, match=r"manifest.csv:2: unknown emotion name 'bored'"):
        external.build(tmp_path / "r4", external.ExternalBuildConfig(root=str(man)))


def test_raw_video_build(demo_corpus, tmp_path, monkeypatch):
    vids = demo_corpus / "videos"
    n = len([p for p in vids.iterdir() if p.suffix == ".mp4"])
    m = emovox.build(tmp_path / "rec", emovox.EmovoxBuildConfig(videos=str(vids), workers=1))
    assert m["splits"]["train"]["examples"] == n and m["source"] == "videos"
    assert m["skipped"] == {}
    for c in pipelines.clips_dataset(tmp_path / "rec"):
        assert len(c["frames"]) > 0 and c["waveform"].shape[0] > 16000
        idx = c["frame_index"].numpy()
        assert (idx % 6 == 0).all() and (np.diff(idx) > 0).all()
        np.testing.assert_allclose(c["frame_times"].numpy(), idx / 25)
        img = pipelines.center_crop_resize(
            __import__("tensorflow").io.decode_jpeg(c["frames"][0]), 32)
        assert img.shape == (32, 32, 3)
    # a track where no face is found is skipped and counted
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(vids.glob("*.mp4"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    from tf_cme.vision import faces
    monkeypatch.setattr(faces, "detect_faces", lambda *a, **k: [])
    m = emovox.build(tmp_path / "rec2", emovox.EmovoxBuildConfig(videos=str(one), workers=1))
    assert m["skipped"] == {"no_face": 1} and m["splits"]["train"]["examples"] == 0
