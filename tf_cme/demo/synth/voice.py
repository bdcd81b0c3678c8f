"""Source-filter speech synthesis with speaker voices and emotion prosody (numpy/scipy).

A speaker (:func:`sample_speakers`) has a base pitch, a pitch range, a vocal-tract length
(formant scale), a speaking rate and a breathiness. An utterance is a sequence of
syllables (consonant burst + vowel) grouped into words and pauses. The glottal source is a
Rosenberg-like pulse train whose per-cycle period carries jitter; it is filtered by four
formant resonators per vowel. The emotion, given as a trajectory over time, sets per
syllable the pitch level and range, speaking rate, loudness, spectral tilt (mix of a bright
and a dark source), jitter and breathiness (:data:`PROSODY`). Background noise (pink
noise, hum, babble) is added at a chosen speech-to-noise ratio.

:func:`pitch_track` and :func:`prosodic_features` are simple measurements (autocorrelation
pitch, energy, syllable rate) used by the tests and the corpus report.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import signal

from ... import emotions

#: Emotion prosody, FER+ order: pitch factor, pitch-range factor, rate factor,
#: loudness (dB), brightness (0 dark .. 1 bright), jitter (fraction), breathiness add,
#: pause factor.
PROSODY_KEYS = ("pitch", "range", "rate", "loud_db", "bright", "jitter", "breath", "pause")
_PROSODY = {
    "neutral":   (1.00, 1.00, 1.00, 0.0, 0.45, 0.008, 0.00, 1.0),
    "happiness": (1.18, 1.70, 1.15, 3.0, 0.70, 0.010, 0.00, 0.85),
    "surprise":  (1.30, 2.20, 1.00, 3.0, 0.60, 0.010, 0.05, 1.0),
    "sadness":   (0.86, 0.45, 0.65, -5.0, 0.15, 0.020, 0.15, 1.8),
    "anger":     (1.12, 1.30, 1.30, 6.0, 0.95, 0.018, 0.00, 0.7),
    "disgust":   (0.92, 0.90, 0.80, 0.0, 0.30, 0.016, 0.08, 1.4),
    "fear":      (1.25, 0.70, 1.30, -2.0, 0.50, 0.035, 0.12, 1.1),
    "contempt":  (0.95, 1.20, 0.88, -1.0, 0.40, 0.010, 0.04, 1.2),
}
PROSODY = np.array([_PROSODY[e] for e in emotions.FERPLUS], dtype=np.float64)
_NEUTRAL = PROSODY[0]
_ADDITIVE = np.array([k in ("loud_db", "bright", "breath") for k in PROSODY_KEYS])
#: Scale of the synthesised speech (RMS about 0.1 for a neutral voice at 0 dB).
SPEECH_LEVEL = 0.07

#: Vowel formants (Hz) of an adult male vocal tract: F1..F4 and bandwidths.
VOWELS = np.array([
    [730, 1090, 2440, 3400],  # a
    [530, 1840, 2480, 3500],  # e
    [270, 2290, 3010, 3700],  # i
    [570, 840, 2410, 3400],   # o
    [300, 870, 2240, 3300],   # u
    [660, 1720, 2410, 3400],  # ae
    [490, 1350, 1690, 3300],  # er
], dtype=np.float64)
BANDWIDTHS = np.array([80, 100, 140, 200], dtype=np.float64)


def sample_speakers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Voices of ``n`` random speakers (about half low, half high voices)."""
    high = rng.random(n) < 0.5
    f0 = np.where(high, rng.uniform(170, 250, n), rng.uniform(90, 150, n))
    return {
        "f0": f0,
        "range": rng.uniform(0.11, 0.17, n),          # relative pitch excursion
        "formant": np.where(high, rng.uniform(1.10, 1.22, n), rng.uniform(0.92, 1.05, n)),
        "rate": rng.uniform(4.0, 5.0, n),             # syllables per second
        "breath": rng.uniform(0.02, 0.12, n),
        "bright": rng.uniform(-0.1, 0.1, n),
        "loud_db": rng.uniform(-3, 3, n),
    }


def speaker(params: dict[str, np.ndarray], i: int) -> dict[str, float]:
    return {k: float(v[i]) for k, v in params.items()}


def _emotion_at(times, traj_t, traj_lab, traj_int, style=None):
    """Prosody vector at ``times`` from a piecewise-constant trajectory (frame times),
    modulated by a per-utterance ``style`` (multiplicative, except loudness/brightness)."""
    idx = np.clip(np.searchsorted(traj_t, times, side="right") - 1, 0, len(traj_t) - 1)
    k = traj_int[idx][:, None]
    p = _NEUTRAL[None] * (1 - k) + PROSODY[traj_lab[idx]] * k
    if style is not None:
        p = p * np.where(_ADDITIVE, 1.0, style)[None] + np.where(_ADDITIVE, style, 0.0)[None]
    return p


def synth_utterance(rng: np.random.Generator, spk: dict, duration: float, sr: int,
                    traj_t, traj_lab, traj_int):
    """Clean speech of ``duration`` seconds at ``sr`` Hz following an emotion trajectory.

    ``traj_t`` [F] start times (s), ``traj_lab`` [F] FER+ indices, ``traj_int`` [F]
    intensities in [0, 1]. Returns ``(speech float64 [N], info dict)``; info has the
    syllable onsets (s), the mean f0 actually used and ``level_db``, the level of the
    syllables relative to the speaker's neutral voice.
    """
    traj_t = np.asarray(traj_t, np.float64)
    traj_lab = np.asarray(traj_lab, np.int64)
    traj_int = np.asarray(traj_int, np.float64)
    n = int(round(duration * sr))
    # per-utterance speaking style: the same emotion is not always voiced the same way
    style = np.array([np.exp(rng.normal(0, 0.03)), np.exp(rng.normal(0, 0.12)),
                      np.exp(rng.normal(0, 0.06)), rng.normal(0, 1.5), rng.normal(0, 0.08),
                      np.exp(rng.normal(0, 0.15)), 0.0, np.exp(rng.normal(0, 0.1))])
    # --- syllable plan (sequential, ~4-6 syllables per second) ---
    onsets, durs, vowels = [], [], []
    t = rng.uniform(0.05, 0.35)
    while t < duration - 0.15:
        pr = _emotion_at(np.array([t]), traj_t, traj_lab, traj_int, style)[0]
        nsyl = rng.integers(1, 5)
        for _ in range(nsyl):
            d = rng.uniform(0.75, 1.3) / (spk["rate"] * pr[2])
            if t + d > duration - 0.05:
                break
            onsets.append(t)
            durs.append(d)
            vowels.append(rng.integers(0, len(VOWELS)))
            t += d
        t += rng.uniform(0.06, 0.30) * pr[7] * (2.0 if rng.random() < 0.15 else 1.0)
    onsets = np.array(onsets)
    durs = np.array(durs)
    nsyl = len(onsets)
    pros = (_emotion_at(onsets + durs / 2, traj_t, traj_lab, traj_int, style) if nsyl
            else np.zeros((0, len(PROSODY_KEYS))))
    # --- per-sample control curves ---
    tt = np.arange(n) / sr
    f0 = np.full(n, spk["f0"])
    amp = np.zeros(n)
    bright = np.full(n, 0.5)
    breath = np.full(n, spk["breath"])
    jit = np.full(n, 0.01)
    phrase = 1 - 0.08 * tt / max(duration, 1e-6)  # declination
    for i in range(nsyl):
        a, b = int(onsets[i] * sr), min(n, int((onsets[i] + durs[i]) * sr))
        if b <= a:
            continue
        p = pros[i]
        m = b - a
        x = np.linspace(0, 1, m)
        accent = spk["range"] * p[1] * (rng.normal(0.4, 0.5) + 0.6 * np.sin(np.pi * x))
        if traj_lab[min(np.searchsorted(traj_t, onsets[i], "right") - 1, len(traj_lab) - 1)] == 2:
            accent = accent + spk["range"] * p[1] * 0.8 * x  # surprise: rising
        f0[a:b] = spk["f0"] * p[0] * (1 + accent)
        # vowel nucleus: attack-sustain-decay; the first 25 % is the consonant
        env = np.clip(np.minimum((x - 0.2) / 0.15, (1 - x) / 0.25), 0, 1) ** 1.5
        amp[a:b] = env * 10 ** ((p[3] + spk["loud_db"]) / 20) * rng.uniform(0.8, 1.2)
        bright[a:b] = np.clip(p[4] + spk["bright"], 0, 1)
        breath[a:b] = spk["breath"] + p[6]
        jit[a:b] = p[5]
    f0 *= phrase
    # smooth the pitch contour (10 ms), then per-cycle jitter
    k = max(1, int(0.01 * sr))
    c = np.cumsum(np.pad(f0, (k + 1, k), mode="edge"))
    f0 = (c[2 * k + 1:] - c[:-2 * k - 1]) / (2 * k + 1)  # moving average
    blk = max(1, int(sr / 200))
    nb = n // blk + 1
    jn = rng.normal(0, 1, nb).repeat(blk)[:n]
    f0 = f0 * (1 + jit * jn)
    # --- glottal source: Rosenberg pulse from the phase ---
    phase = np.cumsum(f0 / sr)
    ph = phase - np.floor(phase)
    oq = 0.6
    g = np.where(ph < oq * 0.66, 0.5 * (1 - np.cos(np.pi * ph / (oq * 0.66))),
                 np.where(ph < oq, np.cos(0.5 * np.pi * (ph - oq * 0.66) / (oq * 0.34)), 0.0))
    dg = np.diff(g, prepend=0.0) * (sr / 100.0)
    bl, al = signal.butter(2, 500 / (sr / 2))
    dark = signal.lfilter(bl, al, dg) * 3.0
    src = bright * dg + (1 - bright) * dark
    src = src / (np.std(src) + 1e-9)
    asp = signal.lfilter(*_band(400.0, min(0.475 * sr, 5000.0), sr), rng.normal(0, 1, n))
    voiced = src * (1 - breath) + asp * breath * 1.5
    # --- formant filtering per syllable, consonant bursts ---
    speech = np.zeros(n)
    for i in range(nsyl):
        a, b = int(onsets[i] * sr), min(n, int((onsets[i] + durs[i]) * sr) + int(0.03 * sr))
        if b - a < 16:
            continue
        fm = VOWELS[vowels[i]] * spk["formant"] * (1 + 0.05 * (pros[i][0] - 1))
        fm = np.minimum(fm, 0.45 * sr)
        sos = np.concatenate([_resonator(f, bw, sr) for f, bw in zip(fm, BANDWIDTHS)])
        seg = signal.sosfilt(sos, voiced[a:b] * amp[a:b])
        speech[a:b] += seg
        # consonant: a short band-limited noise burst at the syllable start
        cl = int(min(0.25 * durs[i], 0.07) * sr)
        if cl > 8:
            lo = 1500 + 250 * int(rng.integers(0, 9))
            hi = min(0.45 * sr, lo * (1.5 + 0.25 * int(rng.integers(0, 5))))
            burst = signal.lfilter(*_band(lo, hi, sr), rng.normal(0, 1, cl)) * np.hanning(cl)
            speech[a:a + cl] += burst * 0.08 * 10 ** ((pros[i][3] + spk["loud_db"]) / 20)
    speech = speech * SPEECH_LEVEL  # absolute level: loudness is an emotion cue
    loud = amp > 0.3
    mean_f0 = float(np.mean(f0[loud])) if np.any(loud) else spk["f0"]
    # level of the voiced syllables relative to this speaker's neutral voice (dB): what
    # the emotion and the speaking style add to the speech-to-noise ratio of a recording
    level_db = (float(10 * np.log10(np.sum(durs * 10 ** (pros[:, 3] / 10)) / np.sum(durs)))
                if nsyl else 0.0)
    return speech, {"onsets": onsets, "mean_f0": mean_f0, "level_db": level_db}


@functools.lru_cache(maxsize=256)
def _band(lo: float, hi: float, sr: int):
    """Cached 2nd-order Butterworth band-pass (b, a)."""
    return signal.butter(2, [lo / (sr / 2), hi / (sr / 2)], "band")


def _resonator(f, bw, sr):
    r = np.exp(-np.pi * bw / sr)
    th = 2 * np.pi * f / sr
    a = np.array([1.0, -2 * r * np.cos(th), r * r])
    b = np.array([a.sum(), 0.0, 0.0])  # unity gain at 0 Hz (Klatt resonator)
    return np.concatenate([b, a])[None]


def background_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS background: pink noise, optional mains hum and far babble."""
    spec = rng.normal(0, 1, n // 2 + 1) + 1j * rng.normal(0, 1, n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / sr)
    spec /= np.sqrt(np.maximum(f, 150.0))
    noise = np.fft.irfft(spec, n)
    noise /= np.std(noise) + 1e-12
    tt = np.arange(n) / sr
    if rng.random() < 0.4:
        hz = 50.0 if rng.random() < 0.5 else 60.0
        noise += rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * hz * tt + rng.uniform(0, 6.3))
    if rng.random() < 0.5:  # amplitude-modulated band noise (far babble)
        band = signal.lfilter(*_band(300.0, 3000.0, sr), rng.normal(0, 1, n))
        mod = 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(2, 5) * tt + rng.uniform(0, 6.3))
        noise += 0.6 * band / (np.std(band) + 1e-12) * mod
    return noise / (np.std(noise) + 1e-12)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float):
    """Scale ``noise`` so that power(speech) / power(noise) = ``snr_db``; return (mix, noise)."""
    ps = np.mean(speech ** 2)
    noise = noise * np.sqrt(ps / (np.mean(noise ** 2) + 1e-20) / 10 ** (snr_db / 10))
    return speech + noise, noise


def to_int16(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = np.max(np.abs(x)) + 1e-12
    if m > peak:
        x = x * (peak / m)
    return np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- measurement

def pitch_track(x: np.ndarray, sr: int, fmin: float = 70.0, fmax: float = 400.0,
                frame: float = 0.04, hop: float = 0.01):
    """Autocorrelation pitch per frame: ``(f0 [T] Hz, voicing strength [T], rms [T])``."""
    x = np.asarray(x, np.float64)
    if len(x) > 64:  # keep the band of the low harmonics
        x = signal.sosfiltfilt(signal.butter(4, [110, 1200], "band", fs=sr, output="sos"), x)
    fl, hl = int(frame * sr), int(hop * sr)
    if len(x) < fl:
        x = np.pad(x, (0, fl - len(x)))
    nfr = 1 + (len(x) - fl) // hl
    idx = np.arange(fl)[None] + hl * np.arange(nfr)[:, None]
    fr = x[idx]
    rms = np.sqrt(np.mean(fr ** 2, axis=1))
    win = np.hanning(fl)
    fr = (fr - fr.mean(axis=1, keepdims=True)) * win[None]
    nfft = 1 << (2 * fl - 1).bit_length()
    sp = np.fft.rfft(fr, nfft)
    ac = np.fft.irfft(np.abs(sp) ** 2, nfft)[:, :fl]
    acw = np.fft.irfft(np.abs(np.fft.rfft(win, nfft)) ** 2, nfft)[:fl]
    ac = ac / (ac[:, :1] + 1e-12) / np.maximum(acw / acw[0], 1e-3)[None]  # Boersma (1993)
    lo, hi = int(sr / fmax), min(fl - 1, int(sr / fmin))
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(nfr), lag]
    return sr / lag, strength, rms


def prosodic_features(x: np.ndarray, sr: int) -> np.ndarray:
    """Simple prosodic features of one utterance (pitch statistics, energy, rate, tilt).

    ``[median log f0, IQR log f0, std log f0, mean log energy, std log energy,
    energy-peak rate (1/s), voiced fraction, high/low band energy ratio (dB)]``.
    """
    f0, st, rms = pitch_track(x, sr)
    le = np.log(rms + 1e-6)
    voiced = (st > 0.7) & (le > np.percentile(le, 40))
    lf = np.log(f0[voiced]) if voiced.sum() >= 3 else np.log(np.full(3, 120.0))
    q25, q50, q75 = np.percentile(lf, [25, 50, 75])
    env = np.convolve(le, np.ones(5) / 5, "same")
    peaks = (env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & (env[1:-1] > np.percentile(env, 60))
    rate = peaks.sum() / (len(x) / sr)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    tilt = 10 * np.log10((spec[(f > 1000) & (f < 4000)].sum() + 1e-9) / (spec[(f > 80) & (f < 1000)].sum() + 1e-9))
    return np.array([q50, q75 - q25, lf.std(), le[voiced].mean() if voiced.any() else le.mean(),
                     le.std(), rate, voiced.mean(), tilt])
