"""Audio I/O benchmarks (group ``records``): the project's resampler and ``load_audio``.

- ``resample-8k``, ``resample-22k``, ``resample-44k``, ``resample-48k`` (clips/s): a
  batch of 4 s clips to 16 kHz with :func:`tf_cme.audio.resample.resample_np` (one
  batched conv1d in TensorFlow) against ``scipy.signal.resample_poly`` on the same batch
  (the same numbers to 1e-5).
- ``load-wav-16k`` (files/s): :func:`tf_cme.audio.io.load_audio` on 16 kHz mono int16
  wavs against a plain ``soundfile.read`` loop.
- ``load-wav-44k`` (files/s): 44.1 kHz stereo int16 wavs to 16 kHz mono: ``load_audio``
  (decode, down-mix, resample) against ``soundfile.read`` + mean +
  ``scipy.signal.resample_poly``.
"""
from __future__ import annotations

import math
import wave

import numpy as np

from .harness import Pair, stage

CLIP_SECONDS = 4.0


def _clips(rate: int, n: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((n, int(rate * seconds)))).astype(np.float32)


def _resample_pair(ctx, rate_in: int) -> Pair:
    import scipy.signal as ss

    from ..audio.resample import ratio, resample_np
    n = 4 if ctx.quick else 16
    x = _clips(rate_in, n, CLIP_SECONDS)
    up, down = ratio(rate_in, 16000)

    def ours():
        resample_np(x, rate_in, 16000)
        return n

    def peer():
        ss.resample_poly(x, up, down, axis=-1)
        return n

    err = float(np.abs(resample_np(x[:1], rate_in, 16000)
                       - ss.resample_poly(x[:1], up, down, axis=-1)).max())
    return Pair(ours, peer, "scipy.signal.resample_poly",
                note=f"{n} clips of {CLIP_SECONDS:g} s, {rate_in} -> 16000 Hz; max abs diff {err:.1e}")


@stage("resample-8k", group="records", unit="clips/s")
def resample_8k(ctx):
    return _resample_pair(ctx, 8000)


@stage("resample-22k", group="records", unit="clips/s")
def resample_22k(ctx):
    return _resample_pair(ctx, 22050)


@stage("resample-44k", group="records", unit="clips/s")
def resample_44k(ctx):
    return _resample_pair(ctx, 44100)


@stage("resample-48k", group="records", unit="clips/s")
def resample_48k(ctx):
    return _resample_pair(ctx, 48000)


def _write_wavs(ctx, name: str, rate: int, channels: int, n: int, seconds: float) -> list:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = ctx.path(name, f"{i:04d}.wav")
        pcm = (rng.standard_normal((int(rate * seconds), channels)) * 3000).astype("<i2")
        with wave.open(str(p), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        paths.append(p)
    return paths


@stage("load-wav-16k", group="records", unit="files/s")
def load_wav_16k(ctx):
    import soundfile as sf

    from ..audio.io import load_audio
    paths = _write_wavs(ctx, "wav16k", 16000, 1, 8 if ctx.quick else 64, 6.0)

    def ours():
        for p in paths:
            load_audio(p, target_rate=16000)
        return len(paths)

    def peer():
        for p in paths:
            sf.read(p, dtype="float32")
        return len(paths)

    return Pair(ours, peer, "soundfile.read", ours_cores=1,
                note=f"{len(paths)} mono int16 wavs of 6 s")


@stage("load-wav-44k", group="records", unit="files/s")
def load_wav_44k(ctx):
    import scipy.signal as ss
    import soundfile as sf

    from ..audio.io import load_audio
    paths = _write_wavs(ctx, "wav44k", 44100, 2, 4 if ctx.quick else 24, 6.0)
    g = math.gcd(44100, 16000)

    def ours():
        for p in paths:
            load_audio(p, target_rate=16000)
        return len(paths)

    def peer():
        for p in paths:
            x, _ = sf.read(p, dtype="float32")
            ss.resample_poly(x.mean(axis=1), 16000 // g, 44100 // g)
        return len(paths)

    return Pair(ours, peer, "soundfile.read + scipy.signal.resample_poly",
                note=f"{len(paths)} stereo int16 wavs of 6 s at 44.1 kHz -> 16 kHz mono")
