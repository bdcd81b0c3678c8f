"""An independent float64 NumPy/SciPy reference of protocol §3.1 steps 1-7 and §3.2 (tests only).

Written from the spec (``runSpec`` / ``mfccspec`` / ``rm_dc_n_dither``), sample by
sample with ``scipy.signal.lfilter``; shares no code with ``tf_cme.audio.frontend``.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def spectrogram(x, crop="none", dither_rng=None):
    """float64 ``[512, M]`` normalised spectrogram of one clip ``x`` (protocol §3.1)."""
    x = np.asarray(x, dtype=np.float64)
    if np.max(np.abs(x)) <= 1:
        x = x * 2.0 ** 15
    y = lfilter([1.0, -1.0], [1.0, -0.99], x)
    if dither_rng is not None:
        y = y + 1e-6 * np.std(y, ddof=1) * (dither_rng.random(y.shape)
                                            + dither_rng.random(y.shape) - 1)
    z = lfilter([1.0, -0.97], [1.0], y)
    nw, ns = 400, 160
    m = (len(z) - nw) // ns + 1
    idx = np.arange(nw)[None, :] + ns * np.arange(m)[:, None]
    frames = z[idx] * np.hamming(nw)[None, :]
    spec = np.abs(np.fft.fft(frames, n=512, axis=1)).T           # [512, M]
    mu = spec.mean(axis=1, keepdims=True)
    sd = spec.std(axis=1, ddof=1, keepdims=True) if m > 1 else np.zeros_like(mu)
    out = np.where(sd > 0, (spec - mu) / np.where(sd > 0, sd, 1), 0.0)
    if crop == "bucket":
        widths = [w for w in range(100, 1001, 100) if w <= m]
        w = widths[-1]
        rstart = int(np.floor((m - w) / 2 + 0.5))                # MATLAB round, 1-based
        rstart = max(rstart, 1)
        out = out[:, rstart - 1: rstart - 1 + w]
    return out
