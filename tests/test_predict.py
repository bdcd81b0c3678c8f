"""predict.py: audio files of every format, rate and channel count, video audio tracks,
long files (timeline), silence, bad files; faces of a video with a teacher."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import wave

import numpy as np
import pytest
import soundfile as sf

from tf_cme import emotions, prediction

RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = {"wav": ("WAV", "PCM_16"), "ogg": ("OGG", "VORBIS"), "flac": ("FLAC", "PCM_16"),
           "mp3": ("MP3", None)}


def _signal(rate, seconds, channels, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.05 * rng.standard_normal(t.size)
    if channels == 2:
        x = np.stack([x, 0.5 * x[::-1]], axis=1)
    return x.astype(np.float32)


def _write_mp4(path, audio=None, rate=16000, seconds=1.6):
    import av
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=rate)
            a.layout = "mono"
        for i in range(int(25 * seconds)):
            img = np.full((64, 64, 3), (i * 9) % 255, np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        if a is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            step = 1024
            for k, s in enumerate(range(0, pcm.size, step)):
                fr = av.AudioFrame.from_ndarray(pcm[None, s:s + step], format="s16",
                                                layout="mono")
                fr.sample_rate, fr.pts = rate, s
                for pkt in a.encode(fr):
                    c.mux(pkt)
            for pkt in a.encode():
                c.mux(pkt)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good files (every rate x mono/stereo x format), a long one, a video, and bad ones."""
    d = tmp_path_factory.mktemp("predict-files")
    good = []
    seed = 0
    for rate in RATES:
        for channels in (1, 2):
            for ext, (fmt, sub) in FORMATS.items():
                p = d / f"r{rate}_c{channels}.{ext}"
                sf.write(p, _signal(rate, 1.3, channels, seed % 5), rate, format=fmt,
                         subtype=sub)
                good.append(p)
                seed += 1
    long = d / "long.wav"
    sf.write(long, _signal(22050, 7.0, 2, 1), 22050, subtype="PCM_16")
    video = d / "talk.mp4"
    _write_mp4(video, audio=_signal(16000, 1.6, 1, 2))
    silent = d / "silent.wav"
    sf.write(silent, np.zeros(16000 * 2, np.float32), 16000, subtype="PCM_16")
    noaudio = d / "noaudio.mp4"
    _write_mp4(noaudio)
    empty = d / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    nan = d / "nan.wav"
    x = _signal(16000, 1.5, 1, 3)
    x[100] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    garbage = d / "garbage.mp3"
    garbage.write_bytes(b"this is not an mp3 file at all" * 10)
    bad = {"noaudio": noaudio, "empty": empty, "nan": nan, "garbage": garbage,
           "missing": d / "missing.flac"}
    return {"good": good, "long": long, "video": video, "silent": silent, "bad": bad}


@pytest.fixture(scope="module")
def cli_run(files, tiny, repo_root):
    order = [*files["good"], files["long"], files["video"], files["silent"],
             *files["bad"].values()]
    out = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "predict.py"), "--model",
         str(tiny["export"] / "emovoxceleb-student"), *map(str, order)],
        capture_output=True, text=True, timeout=600, cwd=repo_root)
    return out, order


def _check_scores(r):
    assert r["status"] == "ok", r
    p = r["probabilities"]
    assert list(p) == list(emotions.FERPLUS)
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-4)
    assert r["label"] == max(p, key=p.get)


def test_cli_every_format_rate_and_channels(cli_run, files):
    out, order = cli_run
    assert out.returncode == 1, out.stderr[-3000:]          # bad files below
    res = json.loads(out.stdout)
    assert [r["file"] for r in res] == [str(p) for p in order]
    by = {r["file"]: r for r in res}
    for p in files["good"]:
        r = by[str(p)]
        _check_scores(r)
        assert r["duration_s"] == pytest.approx(1.3, abs=0.08)   # mp3/ogg add padding
        assert "timeline" not in r
        assert r["message"] == ""
    _check_scores(by[str(files["video"])])
    assert by[str(files["video"])]["duration_s"] == pytest.approx(1.6, abs=0.1)


def test_cli_long_file_timeline(cli_run, files):
    r = {x["file"]: x for x in json.loads(cli_run[0].stdout)}[str(files["long"])]
    _check_scores(r)
    tl = r["timeline"]
    # 7.0 s, windows of 4.024 s every 2 s: starts 0, 2, then one ending at 7.0 s
    assert [t["start_s"] for t in tl] == [0.0, 2.0, 2.976]
    assert [t["end_s"] for t in tl] == [4.024, 6.024, 7.0]
    mean = np.mean([[t["probabilities"][n] for n in emotions.FERPLUS] for t in tl], axis=0)
    np.testing.assert_allclose([r["probabilities"][n] for n in emotions.FERPLUS], mean,
                               atol=2e-6)


def test_cli_silent_and_bad_files(cli_run, files):
    out, _ = cli_run
    by = {r["file"]: r for r in json.loads(out.stdout)}
    s = by[str(files["silent"])]
    assert s["status"] == "silent" and s["label"] is None and s["probabilities"] is None
    assert "-60 dBFS" in s["message"]
    expected = {"noaudio": "audio", "empty": "zero-length", "nan": "NaN",
                "garbage": "garbage.mp3", "missing": "no such file"}
    for key, words in expected.items():
        r = by[str(files["bad"][key])]
        assert r["status"] == "error", r
        assert r["label"] is None
        assert words.lower() in r["message"].lower(), (key, r["message"])
        assert str(files["bad"][key]) in r["message"]
        assert str(files["bad"][key]) in out.stderr
    assert "Traceback" not in out.stderr


def test_scores_match_the_keras_student(files, tiny):
    """The exported model through predict_files == the Keras student (bucket front end) on
    load_audio's 16 kHz mono samples, for a resampled stereo file and a video track."""
    from tf_cme.audio.io import load_audio
    from tf_cme.models.student import with_frontend
    net = with_frontend(tiny["student"], crop="bucket", dither=False)
    picks = [files["good"][7], files["video"]]          # 16 kHz stereo mp3, the mp4
    cfg = prediction.PredictConfig(model=str(tiny["export"] / "emovoxceleb-student" / "1"))
    res = prediction.predict_files(picks, cfg)
    keras_cfg = prediction.PredictConfig(model=str(tiny["student_run"]))   # run folder
    res_keras = prediction.predict_files(picks, keras_cfg)
    for p, r, rk in zip(picks, res, res_keras):
        x, rate = load_audio(p)
        assert rate == 16000
        ref = np.asarray(net(x[None], training=False))[0]
        ref = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
        got = [r["probabilities"][n] for n in emotions.FERPLUS]
        np.testing.assert_allclose(got, ref, atol=2e-5)
        np.testing.assert_allclose([rk["probabilities"][n] for n in emotions.FERPLUS], ref,
                                   atol=2e-5)


def test_short_clip_is_refused_and_csv(tmp_path, tiny):
    """A clip under the student's 1.015 s is not scored (the exported signatures refuse
    it too: one decision, tests/test_audio_warnings.py); the other files are."""
    short = tmp_path / "short.wav"
    sf.write(short, _signal(16000, 0.5, 1, 4), 16000, subtype="PCM_16")
    long = tmp_path / "long.flac"
    sf.write(long, _signal(16000, 5.0, 1, 2), 16000)
    cfg = prediction.PredictConfig(model=str(tiny["export"] / "emovoxceleb-student"),
                                   window=2.0, hop=1.5)
    res = prediction.predict_files([short, long], cfg)
    assert res[0]["status"] == "error" and res[0]["probabilities"] is None
    assert f"{short}: short: 0.500 s (8000 samples) is below the student's minimum of " \
        f"1.015 s" in res[0]["message"]
    assert [t["start_s"] for t in res[1]["timeline"]] == [0.0, 1.5, 3.0]
    rows = list(csv.DictReader(io.StringIO(prediction.to_csv(res))))
    assert [r["segment"] for r in rows] == ["file", "file", "window", "window", "window"]
    assert rows[0]["file"] == str(short) and rows[0]["status"] == "error"
    assert rows[1]["status"] == "ok" and rows[1]["warnings"] == ""
    assert sum(float(rows[2][n]) for n in emotions.FERPLUS) == pytest.approx(1.0, abs=1e-4)
    assert list(rows[0])[-8:] == list(emotions.FERPLUS)


def test_window_starts():
    assert prediction.window_starts(100, 100, 50) == [0]
    assert prediction.window_starts(250, 100, 50) == [0, 50, 100, 150]
    assert prediction.window_starts(260, 100, 50) == [0, 50, 100, 150, 160]


def test_faces_of_a_demo_video(demo_corpus, tiny):
    video = sorted((demo_corpus / "videos").glob("*.mp4"))[0]
    cfg = prediction.PredictConfig(model=str(tiny["export"] / "emovoxceleb-student"),
                                   faces=True, teacher=str(tiny["teacher_version"]))
    wav = next((demo_corpus / "voxceleb" / "wav").rglob("*.wav"))
    res = prediction.predict_files([video, wav], cfg)
    _check_scores(res[0])
    f = res[0]["faces"]
    assert f["status"] == "ok", f
    assert f["faces"] >= 1 and f["frames"] >= f["faces"]
    assert len(f["timeline"]) == f["faces"]
    assert [t["frame"] for t in f["timeline"]][:2] == [0, 6]      # every 6th frame at 25 fps
    assert sum(f["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert res[1]["faces"]["status"] == "skipped"
    _check_scores(res[1])


def test_python_api_with_embedding(tmp_path, tiny):
    """tf_cme.predict (the documented API): the same results as predict_files, plus the
    student's fc7 embedding, equal to the Keras student's fc7 (mean over windows for a
    long file); from the SavedModel and the .keras run alike."""
    import keras
    import tf_cme
    from tf_cme.audio.io import write_wav
    from tf_cme.models.student import serving_student
    from tf_cme.utils import CmeError
    short, long_ = tmp_path / "a.wav", tmp_path / "b.wav"
    write_wav(short, _signal(16000, 3.0, 1, 1), 16000)
    write_wav(long_, _signal(16000, 9.0, 1, 2), 16000)
    sm = str(tiny["export"] / "emovoxceleb-student")
    res = tf_cme.predict([short, long_], model=sm, embedding=True, hop=2.5)
    plain = prediction.predict_files([str(short), str(long_)], prediction.PredictConfig(
        model=sm, hop=2.5))
    net = serving_student(tiny["student"], embedding=True)
    from tf_cme.audio.io import load_audio
    for r, pl in zip(res, plain):
        assert r["status"] == "ok" and r["probabilities"] == pl["probabilities"]
        assert "embedding" not in pl
        x = np.asarray(load_audio(r["file"])[0], np.float32)
        if "timeline" in r:
            win = int(round(prediction.PredictConfig().window * 16000))
            segs = [x[s:s + win] for s in prediction.window_starts(x.size, win, 40000)]
            ref = np.mean([np.asarray(net(s[None], training=False)[1])[0] for s in segs], 0)
        else:
            ref = np.asarray(net(x[None], training=False)[1])[0]
        assert len(r["embedding"]) == ref.size
        np.testing.assert_allclose(r["embedding"], ref.reshape(-1), atol=1e-4)
    via_keras = tf_cme.predict(short, model=tiny["student_run"], embedding=True)[0]
    np.testing.assert_allclose(via_keras["embedding"], res[0]["embedding"], atol=1e-4)
    with pytest.raises(CmeError, match="unknown option"):
        tf_cme.predict(short, model=sm, windw=3)
    assert keras.backend.backend() == "tensorflow"
