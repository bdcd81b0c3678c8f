"""Reading raw videos (mp4 / avi / mov / mkv / webm) with PyAV: frames at 25 fps and the
audio track.

Frames follow the VoxCeleb dense-frames convention: the video is resampled to ``fps``
(25) the way FFmpeg's ``fps`` filter does it (each source frame goes to output slot
``round(t * fps)``, ``t`` its presentation time from the stream start; a later frame in
the same slot replaces an earlier one; an empty slot repeats the previous frame), and
every ``stride``-th (6th) output frame is returned with its index ``n`` (0, 6, 12, ...)
and time ``n / fps``.  A 25 fps source therefore gives exactly its frames 0, 6, 12, ...
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from tf_cme.utils import CmeError

__all__ = ["VideoFrame", "VideoClip", "read_video", "iter_frames", "read_video_audio",
           "video_info"]


class VideoFrame(NamedTuple):
    index: int          # frame number at ``fps`` (0, stride, 2*stride, ...)
    time_s: float       # index / fps
    rgb: np.ndarray     # uint8 [H, W, 3]


class VideoClip(NamedTuple):
    frames: Iterator[VideoFrame]   # lazy: decoded while iterated (iterate once)
    audio: np.ndarray | None       # float32 mono at audio_rate; None without an audio track


def _open(path: Path):
    from tf_cme.audio.io import _open_av
    if not path.exists():
        raise CmeError(f"{path}: no such file")
    if not path.is_file():
        raise CmeError(f"{path}: not a file")
    return _open_av(path)


def video_info(path: str | os.PathLike) -> dict:
    """Stream facts: ``duration_s``, ``fps``, ``frames`` (0 when the container does not
    say), ``width``, ``height``, ``video_codec``, ``has_video``, ``has_audio``,
    ``audio_rate``, ``audio_channels``, ``audio_codec``."""
    path = Path(path)
    container = _open(path)
    with container:
        info = {"path": str(path), "has_video": bool(container.streams.video),
                "has_audio": bool(container.streams.audio),
                "duration_s": (container.duration / 1e6) if container.duration else None}
        if container.streams.video:
            vs = container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            info.update(fps=float(rate) if rate else None, frames=int(vs.frames or 0),
                        width=int(vs.codec_context.width), height=int(vs.codec_context.height),
                        video_codec=vs.codec_context.name)
            if info["duration_s"] is None and vs.duration is not None and vs.time_base:
                info["duration_s"] = float(vs.duration * vs.time_base)
        if container.streams.audio:
            a = container.streams.audio[0]
            info.update(audio_rate=int(a.rate or 0), audio_channels=int(a.channels or 0),
                        audio_codec=a.codec_context.name)
    return info


def _slot(t: float, fps: float) -> int:
    # FFmpeg's fps filter rounds to the nearest output slot (halves away from zero)
    return int(math.floor(t * fps + 0.5 + 1e-6))


def _frames(container, stream, path: Path, fps: float, stride: int,
            max_seconds: float | None) -> Iterator[VideoFrame]:
    import av
    tb = stream.time_base
    t0 = float(stream.start_time * tb) if (stream.start_time is not None and tb) else None
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    limit = None if max_seconds is None else max_seconds * fps   # emit n < limit
    next_n = 0                      # first output slot not yet covered
    held, held_rgb = None, None     # the source frame covering slots >= next_n
    last_t, count = None, 0

    def emit(upto: int):
        """Emit the held frame for the kept slots in [next_n, upto)."""
        nonlocal held_rgb
        n = -(-next_n // stride) * stride
        while n < upto:
            if limit is not None and n >= limit - 1e-9:
                return False
            if held_rgb is None:
                held_rgb = held.to_ndarray(format="rgb24")
                rgb = held_rgb
            else:                       # a repeated source frame: its own array
                rgb = held_rgb.copy()
            yield VideoFrame(n, n / fps, rgb)
            n += stride
        return True

    try:
        with container:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = count / float(rate)
                count += 1
                if t0 is None:
                    t0 = t
                t = max(t - t0, 0.0)
                slot = _slot(t, fps)
                if held is not None and slot > next_n:
                    go = yield from emit(slot)
                    if not go:
                        return
                    next_n = slot
                held, held_rgb, last_t = frame, None, t
            if held is None:
                return
            dur = None
            if getattr(held, "duration", None) and tb:
                dur = float(held.duration * tb)
            if not dur:
                dur = 1.0 / float(rate)
            end = max(_slot(last_t + dur, fps), next_n + 1)
            yield from emit(end)
    except av.error.FFmpegError as e:
        raise CmeError(f"{path}: video decoding failed after {count} frames: {e}")


class _FrameIterator:
    """The lazy frame iterator: closing it (or exhausting it) closes the file."""

    def __init__(self, container, gen):
        self._container, self._gen = container, gen

    def __iter__(self):
        return self

    def __next__(self) -> VideoFrame:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _open_video(path: Path, fps: float, stride: int):
    if not fps > 0 or int(stride) < 1:
        raise ValueError(f"fps must be > 0 and stride >= 1, got fps={fps}, stride={stride}")
    container = _open(path)
    if not container.streams.video:
        container.close()
        raise CmeError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def iter_frames(path: str | os.PathLike, fps: float = 25.0, stride: int = 6,
                max_seconds: float | None = None) -> Iterator[VideoFrame]:
    """``(index, time_s, rgb)`` for every ``stride``-th frame of the video resampled to
    ``fps``, lazily.  The file is opened (and checked) before this returns: a missing or
    unreadable file, or one without a video stream, raises ``CmeError`` here."""
    path = Path(path)
    container, stream = _open_video(path, fps, stride)
    return _FrameIterator(container, _frames(container, stream, path, float(fps),
                                             int(stride), max_seconds))


def read_video_audio(path: str | os.PathLike, rate: int = 16000,
                     max_seconds: float | None = None) -> np.ndarray:
    """The first audio track as float32 mono at ``rate`` (``load_audio``); ``CmeError``
    when the file has no audio track."""
    from tf_cme.audio.io import load_audio
    x, _ = load_audio(path, target_rate=rate, mono=True, max_seconds=max_seconds)
    return x


def read_video(path: str | os.PathLike, fps: float = 25.0, stride: int = 6,
               max_seconds: float | None = None, *, audio: bool = True,
               audio_rate: int = 16000) -> VideoClip:
    """``(frames, audio)``: :func:`iter_frames` (lazy) and the audio track as float32
    mono at ``audio_rate`` (None when the file has no audio track or ``audio=False``;
    an empty array when the track holds no samples).  Unreadable files and files without
    a video stream raise ``CmeError``."""
    path = Path(path)
    container, stream = _open_video(path, fps, stride)
    has_audio = bool(container.streams.audio)
    frames = _FrameIterator(container, _frames(container, stream, path, float(fps),
                                               int(stride), max_seconds))
    track = None
    if audio and has_audio:
        try:
            track = read_video_audio(path, rate=audio_rate, max_seconds=max_seconds)
        except CmeError as e:
            if "zero-length" not in str(e):
                frames.close()
                raise
            track = np.zeros(0, np.float32)
    return VideoClip(frames, track)
