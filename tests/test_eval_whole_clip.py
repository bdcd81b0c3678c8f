"""Whole-clip evaluation (protocol §3.2, §7.1): records keep the whole track, and the
evaluation front end normalises over all of it and takes the centred bucket crop, checked
against the independent float64 NumPy reference (tests/_np_frontend.py, no tf_cme code).

A 30 s clip has 2,998 frames: the crop is frames 999-1998 (1-based); when the records kept
only 19.9 s (schema v1) evaluation cropped frames 494-1493 of a different normalisation.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from _np_frontend import spectrogram as np_spectrogram

from tf_cme.audio import frontend
from tf_cme.audio.io import write_wav
from tf_cme.data import emovox
from tf_cme.demo.files import jpeg
from tf_cme.evaluation import records as eval_records
from tf_cme.evaluation.student_eval import StudentEvalConfig
from tf_cme.utils import CmeError


@pytest.fixture(scope="module")
def long_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    lines, waves = [], {}
    for secs in (30, 60):
        t = np.arange(secs * 16000) / 16000
        x = (rng.normal(size=t.size) * 2000 + 3000 * np.sin(2 * np.pi * 220 * t)
             * (1 + np.sin(2 * np.pi * 0.05 * t))).clip(-32768, 32767).astype(np.int16)
        rel = f"P{secs}/v/00001"
        write_wav(root / "wav" / f"{rel}.wav", x, 16000)
        fdir = root / "frames" / f"P{secs}/1.6/v/00001"
        fdir.mkdir(parents=True)
        (fdir / "00000.jpg").write_bytes(jpeg(np.zeros((8, 8, 3), np.uint8)))
        lines.append(f"1 {rel}.wav P{secs}/1.6/v/00001\n")
        waves[secs] = x
    (root / "splits.txt").write_text("".join(lines))
    out = root / "rec"
    emovox.build(out, emovox.EmovoxBuildConfig(root=str(root), workers=1))
    return out, waves


@pytest.mark.parametrize("secs, first, frames", [(30, 999, 2998), (60, 2499, 5998)])
def test_evaluation_crop_is_the_centre_of_the_whole_clip(long_records, secs, first, frames):
    d, waves = long_records
    assert StudentEvalConfig().max_seconds == 0          # evaluation clamps nothing
    clips = {c["key"].decode(): c for c in eval_records.iterate_clips(d)}
    wav = clips[f"P{secs}/v/00001"]["waveform"]
    assert wav.shape == (secs * 16000,)                  # the whole track is in the record
    assert frontend.num_frames(wav.size) == frames
    assert frontend.bucket_start(frames) + 1 == first    # 1-based first frame of the crop
    got = np.asarray(frontend.Spectrogram(crop="bucket")(wav[None, :]))[0, :, :, 0]
    want = np_spectrogram(waves[secs].astype(np.float64) / 32768, crop="bucket")
    assert got.shape == want.shape == (512, 1000)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 1e-3, err


def test_old_records_are_an_error_naming_the_rebuild(long_records, tmp_path):
    d, _ = long_records
    old = tmp_path / "old"
    old.mkdir()
    m = json.loads((d / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(dict(m, schema_version=1)))
    with pytest.raises(CmeError, match=r"version 1.*19\.9 s.*build_records\.py emovox"):
        eval_records.open_records(old)
    (old / "manifest.json").write_text(json.dumps(dict(m, audio_max_seconds=19.9)))
    with pytest.raises(CmeError, match=r"--max-seconds 19\.9.*build_records\.py emovox"):
        eval_records.open_records(old)
    assert eval_records.open_records(d)["schema_version"] == 2
