"""Truncated, too-short and clipped audio (issue 12.8) and the from_wav signature's
in-graph WAV header checks (issue 12.9).

- The WAV reader reports a file whose 'data' chunk promises more samples than it holds
  (``Audio.truncation``) and float samples beyond +-1 (``Audio.clipped``).
- Record builders skip a truncated WAV as ``truncated_audio``.
- predict.py answers a truncated file with a ``truncated:`` warning, a clipped float WAV
  with a ``clipped:`` warning (JSON list, CSV column), and refuses a clip under 1.015 s
  exactly as the exported signatures do.
- from_wav names what is wrong with a bad WAV (not only ``[[{{node ...DecodeWav}}]]``).
"""
from __future__ import annotations

import csv
import io
import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from tf_cme import emotions, prediction
from tf_cme.audio import io as aio
from tf_cme.audio.io import write_wav
from tf_cme.data import emovox, external
from tf_cme.demo.files import make_voxceleb_tree

RATE = 16000
DECLARED = 113600                       # 7.1 s at 16 kHz


@pytest.fixture(scope="session")
def student_sm(tiny):
    return tf.saved_model.load(str(tiny["student_version"]))


def _speech(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _pcm16(x):
    return np.clip(np.round(np.asarray(x, np.float64) * 32768), -32768, 32767).astype(np.int16)


def _truncated(path, held, declared=DECLARED, rate=RATE, channels=1, seed=0):
    """A 16-bit WAV whose header promises ``declared`` frames and that holds ``held``;
    returns the int16 frames it holds."""
    full = _pcm16(np.stack([_speech(declared, seed + c) for c in range(channels)], 1)
                  if channels > 1 else _speech(declared, seed))
    write_wav(path, full, rate)
    data = path.read_bytes()
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == \
        declared * 2 * channels
    path.write_bytes(data[:44 + held * 2 * channels])
    return full[:held]


def _float_wav(path, x, rate=RATE):
    sf.write(path, np.asarray(x, np.float32), rate, format="WAV", subtype="FLOAT")
    return path


def _wav_bytes(x, rate=RATE, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _probs(r):
    return np.array([r["probabilities"][n] for n in emotions.FERPLUS])


# ------------------------------------------------------------------ the reader

@pytest.mark.parametrize("held", [32, 48000])          # 2 ms and 3 s of a 7.1 s file
def test_reader_reports_truncation(tmp_path, held):
    p = tmp_path / "cut.wav"
    pcm = _truncated(p, held)
    for backend in ("auto", "av"):
        audio = aio.load_audio(p, target_rate=None, backend=backend)
        x, rate = audio                                 # still unpacks as before
        assert rate == RATE and x.shape == (held,)
        assert audio.truncation == aio.Truncation(DECLARED, held, RATE), backend
        assert str(audio.truncation) == f"header says {DECLARED} samples, file holds {held}"
        np.testing.assert_array_equal(x, pcm / 32768.0)
    assert aio.wav_truncation(p) == aio.Truncation(DECLARED, held, RATE)
    # 44.1 kHz stereo: counted in frames at the file's own rate
    q = tmp_path / "cut44.wav"
    _truncated(q, 44100, declared=3 * 44100, rate=44100, channels=2)
    audio = aio.load_audio(q)
    assert audio.truncation == aio.Truncation(3 * 44100, 44100, 44100)
    assert audio.samples.shape == (16000,) and audio.rate == RATE


def test_complete_and_streamed_wavs_are_not_truncated(tmp_path):
    p = tmp_path / "ok.wav"
    write_wav(p, _pcm16(_speech(20000)), RATE)
    audio = aio.load_audio(p)
    assert audio.truncation is None and audio.clipped == 0 and aio.wav_truncation(p) is None
    s = tmp_path / "streamed.wav"       # a WAV written to a pipe: data size 0xFFFFFFFF
    data = bytearray(p.read_bytes())
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    s.write_bytes(bytes(data))
    audio = aio.load_audio(s)
    assert audio.truncation is None and audio.samples.shape == (20000,)


def test_reader_counts_float_samples_beyond_one(tmp_path):
    x = 0.5 * _speech(20000)
    x[[10, 500, 7000]] = [1.5, -1.25, 1.0001]
    x[9000] = 1.0                                         # full scale is not beyond
    st = np.stack([x, x], 1)
    st[100, 1] = -3.0                                     # every channel counts
    audio = aio.load_audio(_float_wav(tmp_path / "f.wav", st), target_rate=None, mono=False)
    assert audio.clipped == 7 and audio.truncation is None
    assert float(audio.samples.max()) == 1.5             # returned as they are
    for backend in ("soundfile", "av"):
        assert aio.load_audio(tmp_path / "f.wav", backend=backend).clipped == 7, backend
    # integer PCM cannot exceed full scale: nothing to count
    write_wav(tmp_path / "i.wav", np.full(20000, 32767, np.int16), RATE)
    assert aio.load_audio(tmp_path / "i.wav").clipped == 0


# ------------------------------------------------------------------ builders

def test_emovox_builder_skips_truncated_audio(tmp_path):
    root = tmp_path / "vox"
    make_voxceleb_tree(root, 4, seed=0, seconds=(1.5, 2.5), image=32)
    entries = emovox.parse_splits(root / "splits.txt")
    w = [root / "wav" / e[1] for e in entries]
    _truncated(w[0], 16000, declared=40000)               # 16 kHz mono: the fast path
    _truncated(w[1], 8000, declared=44100, rate=22050, channels=2)   # load_audio path
    m = emovox.build(tmp_path / "rec", emovox.EmovoxBuildConfig(root=str(root), workers=1))
    assert m["skipped"] == {"truncated_audio": 2}
    assert sum(v["examples"] for v in m["splits"].values()) == 2
    from tf_cme.data import records
    text = (tmp_path / "rec" / records.SKIPPED).read_text()
    assert f"{w[0]}: truncated WAV: header says 40000 samples, file holds 16000" in text
    assert f"{w[1]}: truncated WAV: header says 44100 samples, file holds 8000" in text
    # even when only the first second is kept (--max-seconds 1: the part present)
    m = emovox.build(tmp_path / "rec1", emovox.EmovoxBuildConfig(root=str(root), workers=1,
                                                                  max_seconds=0.5))
    assert m["skipped"] == {"truncated_audio": 2}


def test_external_builder_skips_truncated_audio(tmp_path):
    man = tmp_path / "man"
    man.mkdir()
    write_wav(man / "a.wav", _pcm16(_speech(20000)), RATE)
    _truncated(man / "b.wav", 100, declared=30000)
    (man / "manifest.csv").write_text("path,label,speaker\na.wav,happy,x\nb.wav,sad,y\n")
    m = external.build(tmp_path / "rec", external.ExternalBuildConfig(root=str(man), workers=1))
    assert m["skipped"] == {"truncated_audio": 1}
    assert sum(v["examples"] for v in m["splits"].values()) == 1


# ------------------------------------------------------------------ predict.py

def _cfg(tiny, **kw):
    return prediction.PredictConfig(model=str(tiny["export"] / "emovoxceleb-student"), **kw)


def test_predict_warns_on_truncated_audio(tmp_path, tiny):
    cut, tiny_cut, whole = tmp_path / "cut.wav", tmp_path / "cut2ms.wav", tmp_path / "w.wav"
    pcm = _truncated(cut, 48000)                          # 3 s of 7.1 s
    write_wav(whole, pcm, RATE)                           # the same 3 s, complete
    _truncated(tiny_cut, 32)                              # 2 ms of 7.1 s (the case)
    res = prediction.predict_files([cut, whole, tiny_cut], _cfg(tiny))
    r, ref, r2 = res
    assert r["status"] == "ok" and ref["status"] == "ok" and ref["warnings"] == []
    assert r["warnings"] == [f"truncated: header says {DECLARED} samples, file holds 48000 "
                             f"(7.100 s promised, 3.000 s present: the part present is "
                             f"scored)"]
    np.testing.assert_allclose(_probs(r), _probs(ref), atol=1e-6)   # what is there
    # 2 ms: too short to score (not "ok, neutral 0.58"), and the truncation is named
    assert r2["status"] == "error" and r2["label"] is None and r2["probabilities"] is None
    assert r2["message"].startswith(f"{tiny_cut}: short: 0.002 s (32 samples) is below the "
                                    f"student's minimum of 1.015 s (16240 samples")
    assert r2["warnings"][0].startswith(f"truncated: header says {DECLARED} samples, "
                                        f"file holds 32 ")
    rows = list(csv.DictReader(io.StringIO(prediction.to_csv(res))))
    assert [row["warnings"] for row in rows if row["segment"] == "file"] == \
        [r["warnings"][0], "", r2["warnings"][0]]


def test_predict_warns_on_clipped_float_wav(tmp_path, tiny):
    x = _speech(24000)
    x[[5, 3000, 3001, 9000]] = [1.8, -2.0, 1.5, -1.1]
    clipped = np.clip(x, -1, 1)
    both = np.concatenate([x, np.zeros(100, np.float32)])
    _float_wav(tmp_path / "hot.wav", x)
    _float_wav(tmp_path / "ref.wav", clipped)
    # float and truncated: both warnings, in order
    cut = _float_wav(tmp_path / "hotcut.wav", both)
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) - 400])
    res = prediction.predict_files([tmp_path / "hot.wav", tmp_path / "ref.wav", cut],
                                   _cfg(tiny))
    hot, ref, hc = res
    assert hot["warnings"] == ["clipped: 4 samples beyond ±1 (scored clipped to ±1)"]
    assert ref["warnings"] == []
    np.testing.assert_allclose(_probs(hot), _probs(ref), atol=1e-6)
    assert hc["status"] == "ok"
    assert [w.split(":")[0] for w in hc["warnings"]] == ["truncated", "clipped"]
    assert hc["warnings"][0].startswith("truncated: header says 24100 samples, file holds "
                                        "24000 ")
    rows = list(csv.DictReader(io.StringIO(prediction.to_csv(res))))
    assert rows[2]["warnings"] == "; ".join(hc["warnings"])
    assert list(rows[0])[-8:] == list(emotions.FERPLUS)


def test_short_clip_same_decision_in_predict_and_serving(tmp_path, tiny, student_sm):
    """A clip under 100 frames (16,240 samples) is refused by predict.py (SavedModel and
    .keras) and by both serving signatures; at exactly 16,240 all of them answer, with
    the same scores."""
    from tf_cme.serving import export as ex
    assert ex.MIN_SAMPLES == 16240
    short, edge = _pcm16(_speech(16239, 3)), _pcm16(_speech(16240, 3))
    write_wav(tmp_path / "short.wav", short, RATE)
    write_wav(tmp_path / "edge.wav", edge, RATE)
    files = [tmp_path / "short.wav", tmp_path / "edge.wav"]
    for model in (tiny["export"] / "emovoxceleb-student", tiny["student_run"] / "model.keras"):
        rs, re_ = prediction.predict_files(files, prediction.PredictConfig(model=str(model)))
        assert rs["status"] == "error" and rs["probabilities"] is None, model
        assert (f"{files[0]}: short: 1.015 s (16239 samples) is below the student's minimum "
                f"of 1.015 s (16240 samples, 100 spectrogram frames): not scored") \
            in rs["message"]
        assert re_["status"] == "ok" and re_["warnings"] == [], model
    for blob in (_wav_bytes(short), ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="audio too short"):
            student_sm.signatures["from_wav"](audio_bytes=tf.constant([blob]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="audio too short"):
        student_sm.signatures["serving_default"](
            waveform=tf.constant(short[None] / np.float32(32768)))
    out = student_sm.signatures["from_wav"](audio_bytes=tf.constant([_wav_bytes(edge)]))
    got = out["probabilities"].numpy()[0]
    np.testing.assert_allclose(got, _probs(re_), atol=2e-6)


# ------------------------------------------------------------------ from_wav header checks

def _good(seconds=1.3, rate=RATE):
    return _wav_bytes(_speech(int(seconds * rate), 5), rate)


def _extensible(plain):
    """``plain`` (16-bit mono) with a 40-byte WAVE_FORMAT_EXTENSIBLE fmt chunk."""
    body = struct.pack("<HHIIHH", 0xFFFE, 1, RATE, 2 * RATE, 2, 16)
    body += struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", 1) + bytes(14)   # sub-format PCM
    rest = plain[36:]
    head = b"WAVE" + b"fmt " + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(head) + len(rest)) + head + rest


def _bad_inputs():
    good = _good()
    junk_first = good[:12] + b"JUNK" + struct.pack("<I", 4) + b"abcd" + good[12:]
    ext = _wav_bytes(_speech(20000), subtype="PCM_16")
    fmt40 = ext[:16] + struct.pack("<I", 40) + ext[20:36] + b"\0" * 24 + ext[36:]
    return [
        ("not a wav", b"not a wav",
         "not a WAV file: no RIFF header (the request holds 9 bytes, starting <not >)"),
        ("empty", b"", "not a WAV file: no RIFF header (the request holds 0 bytes"),
        ("RIFF, not WAVE", b"RIFF\x10\0\0\0AVI LIST\x04\0\0\0abcd",
         "not a WAV file: no WAVE form type in the RIFF header"),
        ("truncated 2 ms", good[:44 + 64],
         f"truncated WAV: header says {len(good) - 44} bytes of data, request holds 64"),
        ("truncated half", good[:44 + 20000],
         f"truncated WAV: header says {len(good) - 44} bytes of data, request holds 20000"),
        ("header cut", good[:30], "truncated WAV: the request ends inside the fmt chunk, "
                                  "after 30 bytes"),
        ("no data chunk", good[:36],
         "truncated or unsupported WAV: no data chunk found in the 36 bytes of the request"),
        # RIFF pads an odd-sized chunk; decode_wav does not skip the pad byte (the walk
        # then runs past the end: the message stays readable text)
        ("odd chunk, padded", good[:36] + b"LIST" + struct.pack("<I", 5) + b"ab\xffde\0"
         + good[36:], "truncated or unsupported WAV: no data chunk found in the "
                      f"{len(good) + 14} bytes"),
        ("float", _wav_bytes(_speech(20000), subtype="FLOAT"),
         "unsupported WAV format: float (code 3); send 16-bit PCM (format code 1) WAV"),
        ("24-bit", _wav_bytes(_speech(20000), subtype="PCM_24"),
         "unsupported WAV format: 24-bit PCM; send 16-bit PCM"),
        ("extensible", _extensible(good),
         "unsupported WAV format: WAVE_FORMAT_EXTENSIBLE (code 65534); send 16-bit PCM"),
        ("mu-law", _wav_bytes(_speech(20000), subtype="ULAW"),
         "unsupported WAV format: mu-law (code 7)"),
        ("chunk before fmt", junk_first,
         "unsupported WAV layout: the first chunk is <JUNK>, not <fmt >"),
        ("fmt of 40 bytes", fmt40, "unsupported WAV layout: a fmt chunk of 40 bytes"),
    ]


@pytest.mark.parametrize("name, blob, message", _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_from_wav_names_the_problem(student_sm, name, blob, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        student_sm.signatures["from_wav"](audio_bytes=tf.constant([_good(), blob]))
    assert message in str(e.value), str(e.value)[:600]


def test_from_wav_still_answers_good_wavs(student_sm, tiny):
    """Good files (16 kHz, 44.1 kHz stereo, a LIST chunk between fmt and data, an
    18-byte fmt chunk) answer as the waveform signature on the decoded audio."""
    from tf_cme.audio.resample import resample_np
    rng = np.random.default_rng(4)
    st = (0.2 * rng.standard_normal((int(44100 * 1.2), 2))).astype(np.float32)
    plain = _good()
    with_list = plain[:36] + b"LIST" + struct.pack("<I", 6) + b"INFOab" + plain[36:]
    fmt18 = (plain[:16] + struct.pack("<I", 18) + plain[20:36] + b"\0\0" + plain[36:])
    blobs = [plain, _wav_bytes(st, 44100), with_list, fmt18]
    out = student_sm.signatures["from_wav"](audio_bytes=tf.constant(blobs))
    y, _ = sf.read(io.BytesIO(plain), dtype="float32")
    ref = student_sm.signatures["serving_default"](waveform=tf.constant(y[None]))
    for i in (0, 2, 3):
        np.testing.assert_allclose(out["logits"].numpy()[i], ref["logits"].numpy()[0],
                                   rtol=1e-5, atol=1e-5)
    ys, _ = sf.read(io.BytesIO(blobs[1]), dtype="float32")
    mono = resample_np(ys.mean(axis=1), 44100, RATE).astype(np.float32)
    ref2 = student_sm.signatures["serving_default"](waveform=tf.constant(mono[None]))
    np.testing.assert_allclose(out["logits"].numpy()[1], ref2["logits"].numpy()[0],
                               rtol=1e-4, atol=1e-4)


def test_rest_client_reads_the_header_problem(tiny):
    """Through the loopback stand-in for TF Serving (its error text is the graph's): a
    REST client of from_wav gets HTTP 400 with the reason, not only the DecodeWav node."""
    from tf_cme.serving.client import RestClient, ServingError
    from tf_cme.serving.testdouble import ServingTestDouble
    name = "emovoxceleb-student"
    good = _good()
    with ServingTestDouble({name: tiny["export"] / name}) as d:
        client = RestClient(name, d.rest_url, signature="from_wav")
        out = client.predict({"audio_bytes": np.array([good], dtype=object)})
        assert np.asarray(out["logits"]).shape == (1, 8)
        with pytest.raises(ServingError) as e:
            client.predict({"audio_bytes": np.array([good[:44 + 64]], dtype=object)})
        assert f"HTTP 400: truncated WAV: header says {len(good) - 44} bytes of data, " \
               f"request holds 64" in str(e.value)
        with pytest.raises(ServingError, match=r"HTTP 400: unsupported WAV format: float "
                                               r"\(code 3\); send 16-bit PCM"):
            client.predict({"audio_bytes": np.array(
                [_wav_bytes(_speech(20000), subtype="FLOAT")], dtype=object)})
        with pytest.raises(ServingError, match="HTTP 400: not a WAV file: no RIFF header"):
            client.predict({"audio_bytes": np.array([b"ID3\x03 an mp3, not a wav"],
                                                    dtype=object)})
