"""Reading and writing audio files (offline stages: record builders, label_faces, predict.py).

``load_audio`` is the one entry point for every audio file the project reads:

- WAV (RIFF/WAVE): read by a small NumPy RIFF reader here: integer PCM of 8 (unsigned),
  16, 24 and 32 bits, IEEE float of 32 and 64 bits, plain or WAVE_FORMAT_EXTENSIBLE, any
  rate and channel count (other WAV codecs such as ADPCM or mu-law go to PyAV);
- FLAC, Ogg Vorbis/Opus and MP3: soundfile (libsndfile, which its wheels bundle: 1.2.2
  with soundfile 0.13+; MP3 needs libsndfile 1.1+, Opus 1.0.29+), with PyAV (FFmpeg) as
  the fallback when libsndfile cannot read a file (an older system libsndfile without MP3,
  an odd stream);
- containers (mp4, m4a, mov, avi, mkv, webm, ...) and anything else: the first audio
  track, decoded with PyAV.

tensorflow-io is not used by ``"auto"``: soundfile and PyAV read every format it reads,
without TensorFlow (record builders decode in worker processes that never import it) and
without its TF-version-bound native ops.  Where it is installed (the ``tfio`` extra, TF
2.17 only), ``backend="tfio"`` still decodes with it, as an independent cross-check.

Integer PCM becomes float32 in [-1, 1] by dividing by ``2**(bits-1)`` (int16 / 32768),
stereo is down-mixed by averaging the channels, and other rates are converted with the
project's one resampler (:mod:`tf_cme.audio.resample`).  Every failure is a ``CmeError``
naming the file: missing or unreadable file, no audio track, zero-length audio, NaN or
infinite samples.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct
import wave
from pathlib import Path
from typing import Callable

import numpy as np

from tf_cme.utils import CmeError, atomic_path

__all__ = ["load_audio", "Audio", "Truncation", "wav_truncation", "audio_info",
           "write_wav", "audio_dbfs", "Level", "DBFS_FLOOR",
           "WAV_EXTS", "SNDFILE_EXTS", "CONTAINER_EXTS", "BACKENDS"]

WAV_EXTS = frozenset({".wav", ".wave"})
SNDFILE_EXTS = frozenset({".flac", ".ogg", ".oga", ".opus", ".mp3"})
BACKENDS = ("auto", "soundfile", "av", "tfio")
CONTAINER_EXTS = frozenset({".mp4", ".m4a", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".aac",
                            ".3gp", ".mpg", ".mpeg", ".ts", ".wma", ".flv"})
DBFS_FLOOR = -200.0     # level reported for digital silence (instead of -inf)

# WAVE format tags
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_STREAMED = 0xFFFFFFFF      # 'data' size of a WAV written to a pipe: unknown length


@dataclasses.dataclass(frozen=True)
class Truncation:
    """A WAV file shorter than its header says: ``declared`` sample frames promised by
    the 'data' chunk, ``held`` frames present, at the file's own ``rate``."""
    declared: int
    held: int
    rate: int

    def __str__(self) -> str:
        return f"header says {self.declared} samples, file holds {self.held}"


class Audio(tuple):
    """What :func:`load_audio` returns: unpacks as ``(samples, rate)``; ``.truncation``
    (:class:`Truncation` or None) and ``.clipped`` (the number of float WAV samples,
    over every channel, beyond +-1) say what the reader noticed."""

    def __new__(cls, samples, rate: int, truncation: Truncation | None = None,
                clipped: int = 0):
        obj = super().__new__(cls, (samples, rate))
        obj.truncation, obj.clipped = truncation, int(clipped)
        return obj

    @property
    def samples(self):
        return self[0]

    @property
    def rate(self) -> int:
        return self[1]

    def __getnewargs__(self):
        return (self[0], self[1], self.truncation, self.clipped)


class _Unsupported(Exception):
    """The fast reader cannot handle this file: try the next backend."""


# ---------------------------------------------------------------------------------------
# WAV (RIFF) reader
# ---------------------------------------------------------------------------------------

def _is_riff_wave(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE"


@dataclasses.dataclass(frozen=True)
class _WavLayout:
    tag: int            # format tag (the sub-format's for WAVE_FORMAT_EXTENSIBLE)
    channels: int
    rate: int
    block_align: int
    bits: int
    start: int          # byte offset of the 'data' chunk's samples
    declared: int       # the 'data' chunk's size field, in bytes
    available: int      # bytes the file holds from ``start`` on


def _wav_layout(f, path: Path) -> _WavLayout:
    """Walk the chunks of an open RIFF/WAVE file up to its 'data' chunk (the one header
    parser: the reader and :func:`wav_truncation` use it)."""
    riff = f.read(12)
    if riff[:4] == b"RIFX":
        raise _Unsupported("big-endian RIFX")
    size = os.fstat(f.fileno()).st_size
    fmt = None
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise CmeError(f"{path}: not a valid WAV file (no 'data' chunk)")
        cid, csize = header[:4], struct.unpack("<I", header[4:])[0]
        if cid == b"fmt ":
            body = f.read(csize)
            if len(body) < 16:
                raise CmeError(f"{path}: not a valid WAV file (short 'fmt ' chunk)")
            tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]   # sub-format GUID's first 2 bytes
            fmt = (tag, channels, rate, block_align, bits)
            if csize % 2:
                f.seek(1, 1)
        elif cid == b"data":
            if fmt is None:
                raise CmeError(f"{path}: not a valid WAV file ('data' before 'fmt ')")
            start = f.tell()
            return _WavLayout(*fmt, start=start, declared=csize,
                              available=max(size - start, 0))
        else:
            f.seek(csize + (csize % 2), 1)
        if f.tell() >= size:
            raise CmeError(f"{path}: not a valid WAV file (no 'data' chunk)")


def _truncation(lay: _WavLayout) -> Truncation | None:
    """A 'data' chunk that promises more bytes than the file holds.  The size field
    0xFFFFFFFF marks a streamed file of unknown length (not a truncation)."""
    if lay.declared == _STREAMED or lay.declared <= lay.available or lay.block_align < 1:
        return None
    return Truncation(lay.declared // lay.block_align, lay.available // lay.block_align,
                      lay.rate)


def wav_truncation(path: str | os.PathLike) -> Truncation | None:
    """The :class:`Truncation` of a RIFF/WAVE file from its header and size alone (no
    decoding), None for a complete file, a streamed one or anything that is not a
    readable WAV (the reader reports those)."""
    path = Path(path)
    if not _is_riff_wave(path):
        return None
    try:
        with open(path, "rb") as f:
            return _truncation(_wav_layout(f, path))
    except (CmeError, _Unsupported, OSError):
        return None


def _read_wav(path: Path, max_frames: Callable[[int], int | None]):
    """Return ``(float32 [frames, channels], rate, truncation, clipped)``;
    ``_Unsupported`` for codecs it does not handle (compressed WAV), ``CmeError`` for
    broken files.  A truncated file (the 'data' chunk claims more than the file holds)
    is read as what is there and reported in ``truncation``; ``clipped`` counts the
    float samples beyond +-1 (of every channel, in what was read)."""
    with open(path, "rb") as f:
        lay = _wav_layout(f, path)
        tag, channels, rate, block_align, bits = (lay.tag, lay.channels, lay.rate,
                                                  lay.block_align, lay.bits)
        if tag not in (_PCM, _FLOAT):
            raise _Unsupported(f"WAV format tag 0x{tag:04x}")
        if channels < 1 or rate < 1:
            raise CmeError(f"{path}: invalid WAV header ({channels} channels, {rate} Hz)")
        width = bits // 8
        if bits % 8 or block_align != width * channels:
            raise _Unsupported(f"{bits}-bit samples, block align {block_align}")
        if tag == _PCM and width not in (1, 2, 3, 4):
            raise _Unsupported(f"{bits}-bit integer PCM")
        if tag == _FLOAT and width not in (4, 8):
            raise _Unsupported(f"{bits}-bit float")
        # a streamed (size 0xFFFFFFFF) or truncated file may claim more data than it
        # holds: read what is there, and say so (truncation)
        frames = min(lay.declared, lay.available) // block_align
        limit = max_frames(rate)
        if limit is not None:
            frames = min(frames, limit)
        raw = f.read(frames * block_align)
        data = _pcm_to_float(raw, tag, width, channels)
        clipped = int(np.count_nonzero(np.abs(data) > 1.0)) if tag == _FLOAT else 0
        return data, rate, _truncation(lay), clipped


def _pcm_to_float(raw: bytes, tag: int, width: int, channels: int) -> np.ndarray:
    if tag == _FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return x.reshape(-1, channels)


# ---------------------------------------------------------------------------------------
# soundfile / libsndfile (FLAC / Ogg / MP3)
# ---------------------------------------------------------------------------------------

def _read_sndfile(path: Path, max_frames: Callable[[int], int | None]):
    """libsndfile through soundfile.  Integer subtypes are read as left-aligned int32
    and scaled by ``2**31`` in float64, so 16- and 24-bit samples come out exactly as
    ``int / 2**(bits-1)`` (the WAV reader's numbers); float codecs (Vorbis, Opus, MP3)
    as the decoder's float32."""
    try:
        import soundfile as sf
    except Exception as e:  # pragma: no cover - soundfile is a core dependency
        raise _Unsupported(f"soundfile unavailable: {e}")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            limit = max_frames(rate)
            integer = f.subtype.startswith("PCM_")
            data = f.read(-1 if limit is None else limit,
                          dtype="int32" if integer else "float32", always_2d=True)
    except Exception as e:      # LibsndfileError / RuntimeError: unknown or broken -> PyAV
        raise _Unsupported(f"soundfile: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
    if integer:
        data = (data.astype(np.float64) / float(1 << 31)).astype(np.float32)
    return data, rate


# ---------------------------------------------------------------------------------------
# tensorflow-io (optional cross-check decoder: load_audio(backend="tfio"))
# ---------------------------------------------------------------------------------------

def _tfio_module():
    """``tensorflow_io`` if it is installed and its native ops load, else ``CmeError``
    (it imports TensorFlow, so only an explicit ``backend="tfio"`` gets here)."""
    import importlib.util
    if importlib.util.find_spec("tensorflow_io") is None:
        raise _Unsupported("tensorflow-io is not installed (pip install 'tf-cme[tfio]', "
                           "TensorFlow 2.17 only)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow_io as tfio
    except Exception as e:
        raise _Unsupported(f"tensorflow-io does not import: {str(e).splitlines()[0][:200]}")
    return tfio


def _read_tfio(path: Path, max_frames: Callable[[int], int | None]):
    tfio = _tfio_module()
    try:
        audio = tfio.audio.AudioIOTensor(str(path))
        rate = int(audio.rate.numpy())
        frames, channels = (int(v) for v in audio.shape.numpy())
        limit = max_frames(rate)
        if limit is not None:
            frames = min(frames, limit)
        if frames == 0:
            return np.zeros((0, max(channels, 1)), np.float32), rate
        data = audio[:frames].numpy()
    except Exception as e:      # tf.errors.*: unknown / broken file, ops that do not load
        raise _Unsupported(f"tensorflow-io: {str(e).splitlines()[0][:200]}")
    return _int_to_float(data), rate


def _int_to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data.astype(np.float64) / float(1 << 31)).astype(np.float32)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int64:
        return (data.astype(np.float64) / float(1 << 63)).astype(np.float32)
    return data.astype(np.float32)


# ---------------------------------------------------------------------------------------
# PyAV (FFmpeg): containers, fallback for everything
# ---------------------------------------------------------------------------------------

_AV_SCALE = {"u8": None, "s16": 32768.0, "s32": float(1 << 31), "s64": float(1 << 63),
             "flt": 1.0, "dbl": 1.0}


def _frame_to_float(frame) -> np.ndarray:
    """An ``av.AudioFrame`` as float32 ``[samples, channels]``."""
    name = frame.format.name
    planar = name.endswith("p")
    base = name[:-1] if planar else name
    channels = len(frame.layout.channels)
    arr = frame.to_ndarray()
    if planar:
        arr = arr.T                                     # [channels, n] -> [n, channels]
    else:
        arr = arr.reshape(-1, channels)                 # interleaved [1, n*ch]
    if base == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    scale = _AV_SCALE.get(base)
    if scale is None:
        raise _Unsupported(f"sample format {name}")
    if scale == 1.0:
        return arr.astype(np.float32)
    return (arr.astype(np.float64) / scale).astype(np.float32)


def _open_av(path: Path):
    import av
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise CmeError(f"{path}: cannot read media file: {_av_reason(e)}")


def _av_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.splitlines()[0][:200] if msg else type(e).__name__


def _read_av(path: Path, max_frames: Callable[[int], int | None]):
    import av
    container = _open_av(path)
    with container:
        if not container.streams.audio:
            raise CmeError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        limit = max_frames(rate) if rate > 0 else None
        chunks, got = [], 0
        try:
            for frame in container.decode(stream):
                if rate <= 0:
                    rate = int(frame.sample_rate)
                    limit = max_frames(rate)
                chunk = _frame_to_float(frame)
                if chunks and chunk.shape[1] != chunks[0].shape[1]:
                    raise CmeError(f"{path}: the number of audio channels changes mid-stream")
                chunks.append(chunk)
                got += chunk.shape[0]
                if limit is not None and got >= limit:
                    break
        except av.error.FFmpegError as e:
            if not chunks:
                raise CmeError(f"{path}: cannot decode audio: {_av_reason(e)}")
            # keep what decoded before the damage (FFmpeg's behaviour too)
        if rate <= 0:
            raise CmeError(f"{path}: cannot decode audio: the audio track has no sample rate")
        channels = chunks[0].shape[1] if chunks else max(int(stream.channels or 1), 1)
    data = np.concatenate(chunks, 0) if chunks else np.zeros((0, channels), np.float32)
    if limit is not None:
        data = data[:limit]
    return data, rate


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------

def _decode_data(path: Path, max_frames, backend: str):
    """``(data, rate, truncation, clipped)`` from the backend that reads ``path``."""
    ext = path.suffix.lower()
    if backend == "av":
        return _with_wav_notes(path, _read_av(path, max_frames))
    if backend in ("soundfile", "tfio"):
        try:
            got = (_read_sndfile if backend == "soundfile" else _read_tfio)(path, max_frames)
        except _Unsupported as e:
            raise CmeError(f"{path}: cannot decode audio: {e}")
        return _with_wav_notes(path, got)
    if backend != "auto":
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                         f"got {backend!r}")
    if _is_riff_wave(path):
        try:
            return _read_wav(path, max_frames)
        except _Unsupported:
            return _with_wav_notes(path, _read_av(path, max_frames))
    if ext in WAV_EXTS:                   # named .wav but not RIFF/WAVE: let FFmpeg probe it
        return _read_av(path, max_frames) + (None, 0)
    if ext in SNDFILE_EXTS:
        try:
            return _read_sndfile(path, max_frames) + (None, 0)
        except _Unsupported:
            return _read_av(path, max_frames) + (None, 0)
    return _read_av(path, max_frames) + (None, 0)


def _with_wav_notes(path: Path, got) -> tuple:
    """Another decoder's ``(data, rate)`` of a RIFF/WAVE file, with the truncation and
    float-clipping notes the WAV reader gives (from the same header parser)."""
    data, rate = got
    lay = None
    if _is_riff_wave(path):
        try:
            with open(path, "rb") as f:
                lay = _wav_layout(f, path)
        except (CmeError, _Unsupported, OSError):
            lay = None
    if lay is None:
        return data, rate, None, 0
    clipped = int(np.count_nonzero(np.abs(data) > 1.0)) if lay.tag == _FLOAT else 0
    return data, rate, _truncation(lay), clipped


def _decode(path: Path, max_frames, backend: str):
    return _decode_data(path, max_frames, backend)[:2]


def load_audio(path: str | os.PathLike, target_rate: int | None = 16000, mono: bool = True,
               max_seconds: float | None = None, *, backend: str = "auto"):
    """Decode an audio file (or a video's first audio track).

    Returns ``(samples, rate)``: float32 ``[samples]`` (``[samples, channels]`` when
    ``mono=False``), in [-1, 1] for integer formats, at ``target_rate`` Hz (the file's own
    rate when ``target_rate`` is None).  Stereo is down-mixed by averaging the channels.
    ``max_seconds`` keeps the first ``floor(max_seconds * rate)`` output samples (only
    about that much is decoded; the values equal those of resampling the whole file).
    ``backend``: ``"auto"`` (WAV reader / soundfile / PyAV by format), or force one
    decoder: ``"soundfile"``, ``"av"``, ``"tfio"`` (only where tensorflow-io is installed;
    a ``CmeError`` saying so elsewhere).  Only ``"tfio"`` imports TensorFlow.
    Raises ``CmeError`` naming the file for a missing or unreadable file, no audio track,
    zero-length audio and NaN / infinite samples.

    The result is an :class:`Audio`: it unpacks as ``samples, rate`` and also says what
    the reader noticed: ``.truncation`` (a WAV whose 'data' chunk promises more samples
    than the file holds: what is there is returned; record builders skip such files as
    ``truncated_audio``, predict.py warns) and ``.clipped`` (float WAV samples beyond
    +-1, returned as they are).
    """
    path = Path(path)
    if not path.exists():
        raise CmeError(f"{path}: no such file")
    if not path.is_file():
        raise CmeError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise CmeError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise CmeError(f"{path}: empty file (0 bytes)")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if target_rate is not None and (int(target_rate) != target_rate or target_rate <= 0):
        raise ValueError(f"target_rate must be a positive integer, got {target_rate}")

    def max_frames(rate: int) -> int | None:
        if max_seconds is None:
            return None
        # decode a few extra input samples so the resampler's filter sees the same
        # neighbourhood as when the whole file is resampled
        margin = 16 + 10 * math.ceil(rate / target_rate) if target_rate else 0
        return int(math.floor(max_seconds * rate + 1e-6)) + margin

    data, rate, truncation, clipped = _decode_data(path, max_frames, backend)
    if data.shape[0] == 0:
        what = f" ({truncation})" if truncation is not None else ""
        raise CmeError(f"{path}: zero-length (empty) audio: no samples{what}")
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CmeError(f"{path}: audio contains {bad} NaN or infinite sample(s)")
    if mono:
        data = data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    out_rate = rate
    if target_rate is not None and int(target_rate) != rate:
        from tf_cme.audio.resample import resample_np
        out_rate = int(target_rate)
        data = resample_np(data, rate, out_rate, axis=0)
    if max_seconds is not None:
        data = data[:int(math.floor(max_seconds * out_rate + 1e-6))]
    return Audio(np.ascontiguousarray(data, dtype=np.float32), out_rate,
                 truncation=truncation, clipped=clipped)


def audio_info(path: str | os.PathLike) -> dict:
    """``{"rate", "channels", "frames", "seconds", "backend"}`` of an audio file, from its
    header where possible (WAV), else by decoding."""
    path = Path(path)
    if not path.is_file():
        raise CmeError(f"{path}: no such file")
    if _is_riff_wave(path):
        holder = {}

        def probe(rate):
            holder["rate"] = rate
            return None
        try:
            data, rate, _, _ = _read_wav(path, probe)
            return {"rate": rate, "channels": data.shape[1], "frames": data.shape[0],
                    "seconds": data.shape[0] / rate, "backend": "wav"}
        except _Unsupported:
            pass
    data, rate = _decode(path, lambda r: None, "auto")
    return {"rate": rate, "channels": data.shape[1], "frames": data.shape[0],
            "seconds": data.shape[0] / rate if rate else 0.0, "backend": "decoded"}


def wav_bytes(x, rate: int, *, name: str = "audio") -> bytes:
    """Float audio (``[samples]`` or ``[samples, channels]``, in [-1, 1]) as the bytes of a
    16-bit PCM WAV file. Samples are scaled by 32768, rounded and clipped to the int16
    range, so ``int16 / 32768`` values round-trip exactly."""
    import io as _io
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"write_wav: expected [samples] or [samples, channels], got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise CmeError(f"{name}: refusing to write NaN or infinite samples")
    rate = int(rate)
    if rate <= 0:
        raise ValueError(f"write_wav: bad rate {rate}")
    if x.dtype == np.int16:
        pcm = x
    else:
        pcm = np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    buf = _io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, x, rate: int) -> Path:
    """Write float audio as 16-bit PCM WAV (:func:`wav_bytes`), atomically."""
    data = wav_bytes(x, rate, name=str(path))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


class Level(float):
    """A signal level in dBFS: the float value is the PEAK level; ``.peak_dbfs`` and
    ``.rms_dbfs`` hold both, and it unpacks as ``peak, rms = audio_dbfs(x)``."""

    def __new__(cls, peak_dbfs: float, rms_dbfs: float):
        obj = super().__new__(cls, peak_dbfs)
        obj.peak_dbfs = float(peak_dbfs)
        obj.rms_dbfs = float(rms_dbfs)
        return obj

    def __getnewargs__(self):
        return (self.peak_dbfs, self.rms_dbfs)

    def __iter__(self):
        return iter((self.peak_dbfs, self.rms_dbfs))

    def __repr__(self) -> str:
        return f"Level(peak_dbfs={self.peak_dbfs:.2f}, rms_dbfs={self.rms_dbfs:.2f})"


def audio_dbfs(x) -> Level:
    """The level of ``x`` relative to full scale 1.0: ``float(level)`` is the peak level
    ``20 log10 max|x|``; ``level.rms_dbfs`` is ``20 log10 sqrt(mean x^2)`` (a full-scale
    sine: 0 dBFS peak, -3.01 dBFS RMS); ``peak, rms = audio_dbfs(x)`` also works.
    Digital silence and empty input give :data:`DBFS_FLOOR` (-200), never -inf, so the
    numbers stay JSON-safe; predict.py calls audio below ``--silence-dbfs`` silent."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return Level(DBFS_FLOOR, DBFS_FLOOR)
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(np.square(x))))

    def db(v):
        if not np.isfinite(v):
            return float("nan")
        return max(20.0 * math.log10(v), DBFS_FLOOR) if v > 0 else DBFS_FLOOR
    return Level(db(peak), db(rms))
