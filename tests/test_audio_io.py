"""tf_cme.audio.io: decoding every supported format, down-mix, resampling, errors, write_wav,
levels.  Files are generated here: WAV/FLAC/Ogg with soundfile, MP3/MP4/AVI/MOV with PyAV."""
from __future__ import annotations

import importlib.util
import json
import math
import pickle
import struct
import subprocess
import sys
import textwrap
import wave

import av
import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf

from tf_cme.audio import io as aio
from tf_cme.utils import CmeError

from _proc import ROOT, env

#: tensorflow-io is the optional `tfio` extra (TF 2.17 only); the tests check both cases
HAVE_TFIO = importlib.util.find_spec("tensorflow_io") is not None

SUBTYPES = {"PCM_U8": 128.0, "PCM_16": 32768.0, "PCM_24": float(1 << 23),
            "PCM_32": float(1 << 31), "FLOAT": None, "DOUBLE": None}


def _tone(rate, seconds=0.5, freq=440.0, amp=0.5, phase=0.0):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t + phase)


BITS = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def _pcm(x, subtype):
    """``(array to give soundfile, float64 values the file then holds)``.  Integer data is
    passed to soundfile as int32 (left-aligned), so the stored integers are exact."""
    if subtype not in BITS:
        x32 = np.asarray(x, np.float32 if subtype == "FLOAT" else np.float64)
        return x32, x32.astype(np.float64)
    bits = BITS[subtype]
    scale = float(1 << (bits - 1))
    q = np.clip(np.round(np.asarray(x) * scale), -scale, scale - 1).astype(np.int64)
    return (q << (32 - bits)).astype(np.int32), q / scale


def _write(path, x, rate, subtype="PCM_16", **kw):
    data, expected = _pcm(x, subtype)
    sf.write(path, data, rate, subtype=subtype, **kw)
    return expected


def _stereo(rate, seconds=0.5):
    return np.stack([_tone(rate, seconds, 440.0, 0.5), _tone(rate, seconds, 1000.0, 0.3)], 1)


def _resample_ref(x, rate_in, rate_out=16000):
    g = math.gcd(rate_in, rate_out)
    return ss.resample_poly(np.asarray(x, np.float32), rate_out // g, rate_in // g, axis=0)


def _peak_freq(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def _encode_av(path, x, rate, codec, fmt=None, video=None):
    """Encode float audio ``[n]`` / ``[n, ch]`` with PyAV (and optionally a tiny video)."""
    x = np.asarray(x)
    x2 = x[:, None] if x.ndim == 1 else x
    layout = "mono" if x2.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as c:
        if video:
            vs = c.add_stream(video, rate=25)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream(codec, rate=rate, layout=layout)
        if video:
            for k in range(10):
                fr = av.VideoFrame.from_ndarray(np.full((32, 32, 3), k * 20, np.uint8), "rgb24")
                for p in vs.encode(fr):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        fmt_name = a.codec_context.format.name if a.codec_context.format else "s16"
        step = a.codec_context.frame_size or 1024
        for i in range(0, len(x2), step):
            chunk = x2[i:i + step]
            if fmt_name == "fltp":
                arr = np.ascontiguousarray(chunk.T.astype(np.float32))
            elif fmt_name == "s16p":
                arr = np.ascontiguousarray((chunk.T * 32767).astype(np.int16))
            else:                                               # packed s16
                fmt_name = "s16"
                arr = np.ascontiguousarray((chunk * 32767).astype(np.int16).reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(arr, format=fmt_name, layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return path


# ------------------------------------------------------------------------------- WAV

@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_rates_and_channels(tmp_path, rate, channels):
    x = _tone(rate) if channels == 1 else _stereo(rate)
    path = tmp_path / f"a_{rate}_{channels}.wav"
    q = _write(path, x, rate).reshape(len(x), channels)

    native, r = aio.load_audio(path, target_rate=None, mono=False)
    assert r == rate and native.dtype == np.float32 and native.shape == q.shape
    np.testing.assert_array_equal(native, q.astype(np.float32))          # exact int16/32768

    mono_ref = q.mean(axis=1)
    y, r = aio.load_audio(path)                                          # 16 kHz mono
    assert r == 16000 and y.ndim == 1 and y.dtype == np.float32
    ref = mono_ref if rate == 16000 else _resample_ref(mono_ref, rate)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-5


@pytest.mark.parametrize("subtype", list(SUBTYPES))
def test_wav_sample_formats(tmp_path, subtype):
    x = _stereo(22050, 0.2)
    path = tmp_path / f"f_{subtype}.wav"
    q = _write(path, x, 22050, subtype)
    y, r = aio.load_audio(path, target_rate=None, mono=False)
    assert r == 22050 and y.shape == q.shape
    np.testing.assert_allclose(y, q, atol=1e-7, rtol=0)
    m, _ = aio.load_audio(path, target_rate=None)                        # down-mix = average
    np.testing.assert_allclose(m, q.mean(1), atol=1e-7, rtol=0)


def test_wav_extensible_and_odd_chunks(tmp_path):
    x = _stereo(48000, 0.1)
    path = tmp_path / "ext.wav"
    q = _write(path, x, 48000, "PCM_24", format="WAVEX")
    assert path.read_bytes()[20:22] == b"\xfe\xff"                        # WAVE_FORMAT_EXTENSIBLE
    y, r = aio.load_audio(path, target_rate=None, mono=False)
    np.testing.assert_allclose(y, q, atol=1e-7, rtol=0)
    # an odd-sized LIST chunk before 'data' (padded to even, as RIFF requires)
    pcm = (np.arange(100, dtype=np.int16) * 300).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
            + b"data" + struct.pack("<I", len(pcm)) + pcm)
    odd = tmp_path / "odd.wav"
    odd.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    y, r = aio.load_audio(odd, target_rate=None)
    assert r == 8000
    np.testing.assert_array_equal(y, np.arange(100) * 300 / 32768.0)


def test_max_seconds_equals_truncated_full_decode(tmp_path):
    rate = 44100
    x = np.random.default_rng(0).uniform(-0.5, 0.5, rate)                # 1 s of noise
    path = tmp_path / "n.wav"
    _write(path, x, rate)
    full, _ = aio.load_audio(path)
    part, _ = aio.load_audio(path, max_seconds=0.3)
    assert part.shape == (4800,)
    np.testing.assert_allclose(part, full[:4800], atol=1e-6, rtol=0)
    native, _ = aio.load_audio(path, target_rate=None, max_seconds=0.25)
    assert native.shape == (11025,)


# ------------------------------------------------------------------ compressed formats

def test_flac_lossless_via_every_backend(tmp_path):
    x = _stereo(44100, 0.3)
    for subtype in ("PCM_16", "PCM_24"):
        path = tmp_path / f"a_{subtype}.flac"
        q = _write(path, x, 44100, subtype).astype(np.float32)
        for backend in ("auto", "soundfile", "av") + (("tfio",) if HAVE_TFIO else ()):
            y, r = aio.load_audio(path, target_rate=None, mono=False, backend=backend)
            assert r == 44100
            np.testing.assert_array_equal(y, q, err_msg=f"{subtype} {backend}")   # exact
        y, _ = aio.load_audio(path)
        ref = _resample_ref(q.mean(1), 44100)
        assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-5
        part, _ = aio.load_audio(path, max_seconds=0.1)                # a prefix decode
        np.testing.assert_allclose(part, y[:1600], atol=1e-6, rtol=0)


def test_tfio_backend_only_where_installed(tmp_path):
    """``backend="tfio"`` decodes with tensorflow-io where the extra is installed and is
    a clear error naming the file and the extra where it is not (never a silent switch)."""
    path = tmp_path / "a.flac"
    q = _write(path, _tone(22050, 0.2), 22050).astype(np.float32)
    if HAVE_TFIO:
        y, r = aio.load_audio(path, target_rate=None, backend="tfio")
        assert r == 22050
        np.testing.assert_array_equal(y, q)
    else:
        _raises(path, r"tensorflow-io is not installed.*tf-cme\[tfio\]", backend="tfio")
    with pytest.raises(ValueError, match="'soundfile', 'av', 'tfio'"):
        aio.load_audio(path, backend="tensorflow-io")


# One script for the subprocess below: it decodes like a record builder's worker, with
# TensorFlow and tensorflow-io made unimportable (sys.modules[name] = None: any import
# of them raises ImportError), and reports what it got.
_NO_TF_WORKER = textwrap.dedent("""
    import json, sys
    sys.modules["tensorflow"] = sys.modules["tensorflow_io"] = None
    import numpy as np
    from tf_cme.audio.io import load_audio
    from tf_cme.data.emovox import audio_record
    out = {}
    for p in sys.argv[1:]:
        y, r = load_audio(p)
        rec = audio_record(__import__("pathlib").Path(p))
        out[p] = {"rate": r, "y": y.tolist(), "record_samples": rec[1], "record_rate": rec[2]}
    out["modules"] = sorted(m for m, v in sys.modules.items() if v is not None and
                            m.split(".")[0] in ("tensorflow", "tensorflow_io", "keras", "jax"))
    print(json.dumps(out))
""")


def test_decoding_and_resampling_never_import_tensorflow(tmp_path):
    """A record builder's worker (load_audio -> emovox.audio_record) decodes WAV, FLAC,
    Ogg Vorbis/Opus and MP3 and resamples 44.1 / 48 kHz to 16 kHz without TensorFlow or
    tensorflow-io: the same numbers as in this process, and scipy's resampling."""
    x = _stereo(44100, 0.5)
    files = {}
    files["a.wav"] = _write(tmp_path / "a.wav", x, 44100)
    files["a.flac"] = _write(tmp_path / "a.flac", x, 44100, "PCM_24")
    sf.write(tmp_path / "a.ogg", x, 44100)
    sf.write(tmp_path / "a.opus", _stereo(48000, 0.5), 48000, format="OGG", subtype="OPUS")
    sf.write(tmp_path / "a.mp3", x, 44100, format="MP3")
    paths = [str(tmp_path / n) for n in ("a.wav", "a.flac", "a.ogg", "a.opus", "a.mp3")]
    proc = subprocess.run([sys.executable, "-c", _NO_TF_WORKER, *paths], cwd=ROOT,
                          env=env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got.pop("modules") == []
    for p in paths:
        name = p.rsplit("/", 1)[1]
        y = np.asarray(got[p]["y"], np.float32)
        assert got[p]["rate"] == 16000 and got[p]["record_samples"] == len(y)
        assert got[p]["record_rate"] == (48000 if name == "a.opus" else 44100)
        here, _ = aio.load_audio(p)
        np.testing.assert_array_equal(y, here, err_msg=name)
        if name in files:                                   # lossless: scipy's numbers
            ref = _resample_ref(files[name].mean(1), 44100)
            assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-5, name
        else:                                               # lossy: the tone survives
            assert abs(len(y) - 8000) < 700, name
            assert abs(_peak_freq(y, 16000) - 440.0) < 3.0, name


def test_ogg_vorbis(tmp_path):
    x = _tone(48000, 1.0, 1000.0, 0.5)
    path = tmp_path / "a.ogg"
    sf.write(path, x, 48000)
    y, r = aio.load_audio(path)
    assert r == 16000 and abs(len(y) - 16000) <= 16
    assert abs(_peak_freq(y, 16000) - 1000.0) < 2.0
    assert abs(np.sqrt(np.mean(y[2000:-2000] ** 2)) - 0.5 / math.sqrt(2)) < 0.02


def test_mp3_stereo_22k(tmp_path):
    x = np.stack([_tone(22050, 1.0, 440.0, 0.4), _tone(22050, 1.0, 440.0, 0.2)], 1)
    path = _encode_av(tmp_path / "a.mp3", x, 22050, "libmp3lame")
    for backend in ("auto", "soundfile", "av"):
        y, r = aio.load_audio(path, backend=backend)
        assert r == 16000 and abs(len(y) - 16000) < 1200                # encoder padding
        assert abs(_peak_freq(y, 16000) - 440.0) < 2.0
        rms = np.sqrt(np.mean(y[3000:12000] ** 2))
        assert abs(rms - 0.3 / math.sqrt(2)) < 0.02                     # mean of 0.4 and 0.2
    st, _ = aio.load_audio(path, target_rate=None, mono=False)
    assert st.shape[1] == 2


@pytest.mark.parametrize("name,codec,video", [("a.mp4", "aac", "libx264"),
                                              ("a.avi", "pcm_s16le", "mpeg4"),
                                              ("a.mov", "aac", "libx264"),
                                              ("a.m4a", "aac", None)])
def test_container_audio_tracks(tmp_path, name, codec, video):
    x = np.stack([_tone(44100, 1.0, 660.0, 0.6), np.zeros(44100)], 1)
    path = _encode_av(tmp_path / name, x, 44100, codec, video=video)
    y, r = aio.load_audio(path)
    assert r == 16000 and 16000 <= len(y) <= 16000 + 800
    assert abs(_peak_freq(y, 16000) - 660.0) < 2.0
    assert abs(np.sqrt(np.mean(y[2000:14000] ** 2)) - 0.3 / math.sqrt(2)) < 0.02
    if codec.startswith("pcm"):                   # lossless track: exact numbers
        ref = _resample_ref((x * 32767).astype(np.int16).mean(1) / 32768.0, 44100)
        assert len(y) == len(ref) and np.abs(y - ref).max() < 1e-5


# ------------------------------------------------------------------------------ errors

def _raises(path, match, **kw):
    with pytest.raises(CmeError, match=match) as e:
        aio.load_audio(path, **kw)
    assert str(path) in str(e.value)


def test_errors_name_the_file(tmp_path):
    _raises(tmp_path / "missing.wav", "no such file")
    _raises(tmp_path, "not a file")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _raises(empty, "empty")
    rng = np.random.default_rng(0)
    for name in ("garbage.wav", "garbage.flac", "garbage.mp3", "garbage.mp4", "garbage.xyz"):
        p = tmp_path / name
        p.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        _raises(p, "cannot")
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    _raises(trunc, "not a valid WAV")


def test_zero_length_and_non_finite(tmp_path):
    zero = tmp_path / "zero.wav"
    with wave.open(str(zero), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    _raises(zero, "zero-length")
    zo = tmp_path / "zero.ogg"                     # headers, no samples
    sf.write(zo, np.zeros((0, 1)), 16000)
    assert zo.stat().st_size > 0
    _raises(zo, "zero-length")
    for bad in (np.nan, np.inf):
        x = _tone(16000, 0.1).astype(np.float32)
        x[100] = bad
        p = tmp_path / f"bad_{bad}.wav"
        sf.write(p, x, 16000, subtype="FLOAT")
        _raises(p, "NaN or infinite")


def test_video_without_audio_track(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(5):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), "rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    _raises(path, "no audio track")


# ----------------------------------------------------------------------- write / level

def test_write_wav_round_trip(tmp_path):
    ints = np.array([-32768, -1, 0, 1, 12345, 32767], np.int16)
    x = ints / 32768.0
    p = aio.write_wav(tmp_path / "sub" / "w.wav", x, 11025)
    assert [q.name for q in p.parent.iterdir()] == ["w.wav"]               # no temp file left
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 11025)
        np.testing.assert_array_equal(np.frombuffer(w.readframes(6), "<i2"), ints)
    y, r = aio.load_audio(p, target_rate=None)
    np.testing.assert_array_equal(y, x.astype(np.float32))
    st = aio.write_wav(tmp_path / "st.wav", np.array([[0.5, -0.5], [2.0, -2.0]]), 8000)
    y, _ = aio.load_audio(st, target_rate=None, mono=False)
    np.testing.assert_array_equal(y, [[0.5, -0.5], [32767 / 32768, -1.0]])  # clipped
    with pytest.raises(CmeError, match="NaN"):
        aio.write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), 8000)
    assert not (tmp_path / "nan.wav").exists()


def test_audio_dbfs():
    sine = np.sin(2 * np.pi * np.arange(16000) * 100 / 16000)
    lvl = aio.audio_dbfs(sine)
    assert abs(float(lvl) - 0.0) < 1e-6 and lvl.peak_dbfs == float(lvl)
    assert abs(lvl.rms_dbfs - 20 * math.log10(1 / math.sqrt(2))) < 1e-3
    peak, rms = aio.audio_dbfs(0.1 * sine)
    assert abs(peak + 20.0) < 1e-6 and abs(rms + 23.0103) < 1e-3
    assert tuple(aio.audio_dbfs(np.zeros(100))) == (aio.DBFS_FLOOR, aio.DBFS_FLOOR)
    assert float(aio.audio_dbfs(np.zeros(0))) == aio.DBFS_FLOOR
    assert float(aio.audio_dbfs(np.full(10, 1e-3))) == pytest.approx(-60.0)
    again = pickle.loads(pickle.dumps(lvl))
    assert tuple(again) == tuple(lvl)
