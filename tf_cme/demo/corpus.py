"""The demo corpus: a small synthetic dataset in exactly the on-disk formats of the real ones.

``generate(out, seed=0, size="small")`` writes (protocol §2, ``/tmp`` contract of the project):

* ``ferplus/fer2013.csv`` and ``ferplus/fer2013new.csv``: 48x48 grey procedural faces with
  8 expressions, FER2013 codes and FER+ votes (with unknown/NF votes, ties, sub-majority
  rows, a 9-vote row and empty image names, so every CNTK cleaning rule is exercised);
* ``voxceleb/``: ``wav/<identity>/<video>/<utt>.wav`` (16 kHz mono int16),
  ``frames/<identity>/1.6/<video>/<track>/NNNNN.jpg`` (every 6th frame of 25 fps video,
  face box enlarged 1.6x), ``splits.txt`` (1 train, 2 unheard, 3 heard) and ``truth.csv``
  (the synthetic ground truth: dominant emotion and per-frame trajectory, for tests);
* ``external/``: an RML-style acted set (6 classes, new speakers, 22,050 Hz) with
  ``manifest.csv``;
* ``videos/``: talking-face ``.mp4`` (H.264 25 fps + AAC) with ``manifest.csv``;
* ``README.md`` and ``config.json``.

Faces and voices share one emotion trajectory per track: the face shows the expression of
each frame, the voice carries it through prosody (:mod:`tf_cme.demo.synth.voice`).
Everything is deterministic for a seed (byte-identical trees); the tree is written into a
temporary sibling folder and renamed into place at the end.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import emotions
from ..audio.io import write_wav
from ..provenance import MARKER
from ..utils import CmeError, progress
from .files import jpeg
from .synth import faces as F
from .synth import voice as V

VOX_RATE = 16000
EXTERNAL_RATE = 22050
VIDEO_FPS = 25
FRAME_STRIDE = 6
FRAME_SIZE = 80          # voxceleb dense frames (face box = central 1/1.6 = 50 px)
VIDEO_SIZE = 256
ENLARGE = 1.6
FER_SUPERSAMPLE = 1

#: FER+ class priors of the FER rows (moderately skewed like FER+).
FER_PRIOR = np.array([0.27, 0.23, 0.13, 0.12, 0.11, 0.05, 0.05, 0.04])
#: Dominant-emotion priors of VoxCeleb tracks (neutral and happiness common).
VOX_PRIOR = np.array([0.44, 0.26, 0.08, 0.08, 0.08, 0.02, 0.02, 0.02])
#: Classes guaranteed a minimum number of tracks per split.
MAIN_CLASSES = (0, 1, 2, 3, 4)
#: Confusions used to draw annotator votes (row: true class -> weights over 8 classes).
_CONFUSE = np.array([
    # neu  hap  sur  sad  ang  dis  fea  con
    [0.0, 0.25, 0.10, 0.30, 0.10, 0.05, 0.05, 0.15],  # neutral
    [0.50, 0.0, 0.30, 0.02, 0.02, 0.02, 0.02, 0.12],  # happiness
    [0.25, 0.20, 0.0, 0.03, 0.02, 0.02, 0.45, 0.03],  # surprise
    [0.55, 0.02, 0.03, 0.0, 0.08, 0.07, 0.15, 0.10],  # sadness
    [0.25, 0.02, 0.05, 0.10, 0.0, 0.40, 0.05, 0.13],  # anger
    [0.15, 0.02, 0.03, 0.10, 0.50, 0.0, 0.05, 0.15],  # disgust
    [0.15, 0.02, 0.45, 0.20, 0.08, 0.05, 0.0, 0.05],  # fear
    [0.55, 0.15, 0.02, 0.05, 0.10, 0.10, 0.03, 0.0],  # contempt
])
_CONFUSE = _CONFUSE / _CONFUSE.sum(1, keepdims=True)

RML_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise")  # RML spelling, RML order
RML_SHORT = ("an", "di", "fe", "ha", "sa", "su")


@dataclass
class DemoCorpusConfig:
    """Config of ``scripts/make_demo_data.py`` (``--set seed=3 --set size=tiny``)."""
    seed: int = 0                   # random seed; the same seed and size give a byte-identical tree
    size: Literal["tiny", "small"] = "small"   # tiny: a few MB in seconds, for tests; small:
                                               # the make-demo default


@dataclass(frozen=True)
class Size:
    fer_rows: int
    train_ids: int
    unheard_ids: int
    train_tracks: int      # per train identity
    heard_tracks: int      # per train identity
    unheard_tracks: int    # per unheard identity
    long_tracks: bool      # some tracks up to 12 s
    ext_speakers: int
    ext_per_class: int     # per speaker and class
    ext_seconds: tuple     # clip duration range
    videos: int
    video_seconds: float
    quota: int             # min tracks per main class per split


SIZES = {
    "tiny": Size(fer_rows=240, train_ids=4, unheard_ids=2, train_tracks=5, heard_tracks=1,
                 unheard_tracks=4, long_tracks=False, ext_speakers=4, ext_per_class=2,
                 ext_seconds=(1.5, 2.5), videos=1, video_seconds=3.0, quota=1),
    "small": Size(fer_rows=4000, train_ids=24, unheard_ids=8, train_tracks=12, heard_tracks=2,
                  unheard_tracks=10, long_tracks=True, ext_speakers=8, ext_per_class=6,
                  ext_seconds=(2.0, 4.0), videos=3, video_seconds=5.0, quota=6),
}
PART_SEEDS = {"ferplus": 1, "voxceleb": 2, "external": 3, "videos": 4}


def _rng(seed: int, part: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), PART_SEEDS[part], *[int(m) for m in more]])


# --------------------------------------------------------------------------- writers

def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(rgb, quality))


def _write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue())


# --------------------------------------------------------------------------- FER+

def ferplus_arrays(n: int, seed: int = 0):
    """FER rows as arrays: ``(pixels uint8 [n,48,48], true FER+ label [n], votes int [n,10],
    usage [n] str, image_name [n] str)``. Special rows exercise every cleaning rule."""
    rng = _rng(seed, "ferplus")
    labels = rng.choice(8, size=n, p=FER_PRIOR)
    intensity = np.clip(rng.beta(5.0, 1.5, n), 0.35, 1.0)
    # special rows (fixed positions spread through the file, so all usages get some)
    special = _special_votes()
    pos = np.linspace(0, n - 1, len(special) + 2).astype(int)[1:-1]
    for (_, _, lab), i in zip(special, pos):
        if lab is not None:  # the face shows the emotion its votes are about
            labels[i] = lab
            intensity[i] = 0.6
    ident = F.sample_identities(rng, n)
    expr = F.expression_params(labels, intensity, rng)
    pose = F.sample_poses(rng, n, strength=0.7)
    rgb = F.render(ident, expr, pose, 48, view=1.0, supersample=FER_SUPERSAMPLE, rng=rng)
    pixels = F.to_gray(rgb)
    # votes: annotators see the true class with a probability growing with intensity
    p_true = 0.2 + 0.7 * intensity
    p = np.zeros((n, 10))
    p[:, :8] = _CONFUSE[labels] * (1 - p_true)[:, None] * 0.94
    p[np.arange(n), labels] = p_true
    p[:, 8] = (1 - p_true) * 0.05   # unknown
    p[:, 9] = (1 - p_true) * 0.01   # NF
    p /= p.sum(1, keepdims=True)
    cum = np.cumsum(p, axis=1)
    draws = rng.random((n, 10))
    pick = (draws[:, :, None] > cum[:, None, :]).sum(-1)  # [n, 10 annotators]
    pick = np.minimum(pick, 9)
    votes = np.zeros((n, 10), np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), 10), pick.ravel()), 1)
    usage = np.array(["Training"] * n, dtype=object)
    r = rng.random(n)
    usage[r > 0.8] = "PublicTest"
    usage[r > 0.9] = "PrivateTest"
    names = np.array([f"fer{i:07d}.png" for i in range(n)], dtype=object)
    for (kind, vrow, _), i in zip(special, pos):
        votes[i] = vrow
        if kind in ("noface", "nf_max"):  # not a face: smooth noise
            noise = rng.normal(128, 50, (12, 12)).repeat(4, 0).repeat(4, 1)
            pixels[i] = np.clip(noise + rng.normal(0, 8, (48, 48)), 0, 255).astype(np.uint8)
        if kind == "noface":
            names[i] = ""
    return pixels, labels, votes, usage, names


def _special_votes():
    """(kind, 10 votes, true label or None) rows that exercise the CNTK cleaning rules."""
    V10 = lambda *a: np.array(a, np.int64)  # noqa: E731
    rows = [
        ("unknown_max", V10(2, 1, 0, 0, 0, 0, 0, 0, 5, 2), None),      # (i) unknown wins: drop
        ("nf_max", V10(3, 0, 0, 0, 0, 0, 0, 0, 1, 6), None),           # (i) NF wins: drop
        ("noface", V10(0, 0, 0, 0, 0, 0, 0, 0, 0, 10), None),          # NF, empty name: drop
        ("tie2", V10(4, 4, 1, 1, 0, 0, 0, 0, 0, 0), 1),                # 2-way tie: keep, label 0
        ("tie2", V10(0, 0, 4, 0, 0, 0, 4, 0, 2, 0), 2),                # 2-way tie: keep, label 2
        ("tie3", V10(3, 3, 3, 1, 0, 0, 0, 0, 0, 0), 0),                # 3-way tie: drop
        ("submajority", V10(3, 0, 2, 2, 2, 0, 0, 0, 1, 0), 0),         # 3 <= 4.5: drop
        ("tie2_submajority", V10(0, 0, 0, 3, 3, 2, 2, 0, 0, 0), 3),    # 2*3 <= 5: drop
        ("outliers", V10(4, 1, 1, 1, 1, 1, 1, 0, 0, 0), 0),            # kept only after rule 1
        ("nine_votes", V10(0, 7, 1, 0, 0, 0, 0, 0, 1, 0), 1),          # sums to 9
        ("tie_unknown", V10(4, 0, 0, 0, 0, 0, 0, 0, 4, 2), 0),         # argmax tie with unknown: drop
    ]
    return rows


def fer2013_code(ferplus_label: int) -> int:
    """FER2013 code of a FER+ class (contempt, absent from FER2013, -> neutral)."""
    name = emotions.FERPLUS[ferplus_label]
    if name == "contempt":
        name = "neutral"
    return emotions.FER2013.index(name)


def write_ferplus(root: Path, n: int, seed: int) -> dict:
    pixels, labels, votes, usage, names = ferplus_arrays(n, seed)
    flat = pixels.reshape(n, -1)
    pix_str = [" ".join(map(str, row)) for row in flat.tolist()]
    codes = [fer2013_code(int(lab)) for lab in labels]
    d = root / "ferplus"
    _write_csv(d / "fer2013.csv", ["emotion", "pixels", "Usage"],
               zip(codes, pix_str, usage))
    _write_csv(d / "fer2013new.csv", ["Usage", "Image name", *emotions.FERPLUS_VOTE_COLUMNS],
               ([u, nm, *v] for u, nm, v in zip(usage, names, votes.tolist())))
    return {"rows": n, "usage": {u: int((usage == u).sum())
                                 for u in ("Training", "PublicTest", "PrivateTest")}}


# --------------------------------------------------------------------------- emotion trajectories

def emotion_trajectory(rng: np.random.Generator, dominant: int, n_frames: int):
    """Per-frame FER+ labels and intensities whose most frequent label is ``dominant``."""
    lab = np.full(n_frames, dominant, np.int64)
    peak = rng.uniform(0.55, 1.0)
    inten = np.full(n_frames, peak)
    if dominant == 0:
        inten[:] = 0.0
        if n_frames >= 8 and rng.random() < 0.5:  # a brief other expression
            other = rng.choice([1, 1, 1, 2, 3, 4, 7])
            ln = int(rng.integers(2, max(3, int(0.3 * n_frames))))
            st = int(rng.integers(0, n_frames - ln))
            lab[st:st + ln] = other
            inten[st:st + ln] = rng.uniform(0.4, 0.9)
        return lab, inten
    # neutral onset / offset, a ramp, sometimes a secondary emotion
    on = int(rng.integers(0, max(1, int(0.2 * n_frames)) + 1))
    off = int(rng.integers(0, max(1, int(0.15 * n_frames)) + 1))
    lab[:on] = 0
    inten[:on] = 0.0
    if off:
        lab[n_frames - off:] = 0
        inten[n_frames - off:] = 0.0
    ramp = np.clip((np.arange(n_frames) - on + 1) / 3.0, 0, 1)
    inten = np.where(lab == dominant, inten * np.maximum(ramp, 0.35), inten)
    if n_frames >= 10 and rng.random() < 0.3:
        cands = [c for c in range(1, 8) if c != dominant]
        other = int(rng.choice(cands))
        ln = int(rng.integers(1, max(2, int(0.2 * n_frames))))
        st = int(rng.integers(on, max(on + 1, n_frames - off - ln)))
        lab[st:st + ln] = other
        inten[st:st + ln] = rng.uniform(0.4, 0.9)
    # guarantee dominance
    cnt = np.bincount(lab, minlength=8)
    if cnt.argmax() != dominant or (np.sort(cnt)[-2] == cnt[dominant]):
        keep = max(n_frames // 2 + 1, 1)
        lab[-keep:] = dominant
        inten[-keep:] = peak
    return lab, inten


def trajectory_string(labels) -> str:
    """Compact per-frame trajectory: one FER+ index digit per frame (``"0011111"``)."""
    return "".join(str(int(v)) for v in labels)


def dominant_emotion(labels) -> int:
    return int(np.bincount(np.asarray(labels), minlength=8).argmax())


def _assign_dominant(rng, total: int, quota: int) -> np.ndarray:
    q = min(quota, total // len(MAIN_CLASSES))
    fixed = np.repeat(np.array(MAIN_CLASSES), q)
    rest = rng.choice(8, size=total - len(fixed), p=VOX_PRIOR)
    out = np.concatenate([fixed, rest]).astype(np.int64)
    rng.shuffle(out)
    return out


def _durations(rng, n: int, long_tracks: bool) -> np.ndarray:
    if not long_tracks:
        return np.round(rng.uniform(3.0, 4.0, n), 2)
    r = rng.random(n)
    d = np.where(r < 0.8, rng.uniform(3.0, 5.0, n),
                 np.where(r < 0.95, rng.uniform(5.0, 8.0, n), rng.uniform(8.0, 12.0, n)))
    return np.round(d, 2)


# --------------------------------------------------------------------------- VoxCeleb

def voxceleb_plan(seed: int, size: Size | str) -> list[dict]:
    """Track list: identity, video, track, split, duration, dominant emotion, trajectory."""
    size = SIZES[size] if isinstance(size, str) else size
    rng = _rng(seed, "voxceleb")
    n_id = size.train_ids + size.unheard_ids
    ident_split = ["train"] * size.train_ids + ["unheard"] * size.unheard_ids
    order = rng.permutation(n_id)  # identity numbering does not reveal the split
    split_tracks = {
        "train": size.train_ids * size.train_tracks,
        "heard": size.train_ids * size.heard_tracks,
        "unheard": size.unheard_ids * size.unheard_tracks,
    }
    dom = {s: _assign_dominant(rng, t, size.quota) for s, t in split_tracks.items()}
    used = {s: 0 for s in dom}
    tracks = []
    vid_no = 0
    for slot in range(n_id):
        i = int(np.where(order == slot)[0][0])  # identity index i gets number slot+1
        name = f"Synth_Person_{slot + 1:03d}"
        parts = ([("train", size.train_tracks), ("heard", size.heard_tracks)]
                 if ident_split[i] == "train" else [("unheard", size.unheard_tracks)])
        utt = 0
        for split, count in parts:
            left = count
            while left > 0:
                vid_no += 1
                k = min(left, int(rng.integers(1, 4)))
                for _ in range(k):
                    utt += 1
                    j = used[split]
                    used[split] += 1
                    tracks.append({"identity": name, "ident_index": i, "video": f"vid{vid_no:04d}",
                                   "track": f"{utt:05d}", "split": split,
                                   "dominant": int(dom[split][j])})
                left -= k
    durs = _durations(rng, len(tracks), size.long_tracks)
    for t, d in zip(tracks, durs):
        t["duration"] = float(d)
        t["n_video_frames"] = int(np.floor(d * VIDEO_FPS))
        t["n_frames"] = (t["n_video_frames"] + FRAME_STRIDE - 1) // FRAME_STRIDE
    for k, t in enumerate(tracks):
        trng = _rng(seed, "voxceleb", 1, k)
        lab, inten = emotion_trajectory(trng, t["dominant"], t["n_frames"])
        t["labels"], t["intensity"] = lab, inten
        t["dominant"] = dominant_emotion(lab)
    return tracks


SET_CODE = {"train": 1, "unheard": 2, "heard": 3}


def voxceleb_people(seed: int, n: int):
    """Face and voice parameters of the ``n`` VoxCeleb identities."""
    rng = _rng(seed, "voxceleb", 7)
    return F.sample_identities(rng, n), V.sample_speakers(rng, n)


#: Speech-to-noise ratio of the VoxCeleb tracks (dB): of a neutral voice, and the range
#: every track is kept in once its emotion's loudness is added.
SNR_NEUTRAL_DB = (6.0, 18.0)
SNR_RANGE_DB = (5.0, 20.0)


def synth_track_audio(seed: int, k: int, track: dict, spk: dict, rate: int = VOX_RATE,
                      snr_db: float | None = None, return_parts: bool = False):
    """Noisy speech (int16) of track number ``k``; with ``return_parts`` also the float
    speech and noise that were mixed, and the SNR in dB.

    The background of a recording does not change with the speaker's emotion: the noise
    level is drawn relative to the speaker's neutral voice (``SNR_NEUTRAL_DB``), so loud
    (angry, happy) speech stands out more from it and quiet (sad) speech less. The SNR
    is kept within ``SNR_RANGE_DB``. An explicit ``snr_db`` is used as it is."""
    rng = _rng(seed, "voxceleb", 2, k)
    snr_neutral = float(rng.uniform(*SNR_NEUTRAL_DB))
    traj_t = np.arange(track["n_frames"]) * FRAME_STRIDE / VIDEO_FPS
    speech, info = V.synth_utterance(rng, spk, track["duration"], rate, traj_t,
                                     track["labels"], track["intensity"])
    if snr_db is None:
        snr_db = float(np.clip(snr_neutral + info["level_db"], *SNR_RANGE_DB))
    noise = V.background_noise(rng, len(speech), rate)
    mix, noise = V.mix_at_snr(speech, noise, snr_db)
    gain = 10 ** (rng.uniform(-4, 2) / 20)
    x = V.to_int16(mix * gain)
    if return_parts:
        return x, speech, noise, snr_db
    return x, snr_db


def render_track_frames(seed: int, k: int, track: dict, ident: dict, video_pose: dict,
                        size: int = FRAME_SIZE) -> np.ndarray:
    """RGB frames ``[F, size, size, 3]`` of a track (face box enlarged 1.6x)."""
    rng = _rng(seed, "voxceleb", 3, k)
    nf = track["n_frames"]
    idp = {key: np.repeat(v[track["ident_index"]:track["ident_index"] + 1], nf)
           for key, v in ident.items()}
    expr = F.expression_params(track["labels"], track["intensity"], rng, jitter=0.06)
    expr["open"] = expr["open"] + np.abs(rng.normal(0, 0.12, nf)).astype(np.float32)  # talking
    pose = {key: np.repeat(np.asarray([v]), nf).astype(np.float32) for key, v in video_pose.items()}
    drift = np.cumsum(rng.normal(0, 0.01, (nf, 4)), axis=0).astype(np.float32)
    pose["rot"] = pose["rot"] + drift[:, 0] * 2
    pose["tx"] = pose["tx"] + drift[:, 1]
    pose["ty"] = pose["ty"] + drift[:, 2]
    pose["yaw"] = np.clip(pose["yaw"] + drift[:, 3] * 4, -0.8, 0.8)
    pose["gaze_x"] = rng.normal(0, 0.3, nf).astype(np.float32)
    pose["gaze_y"] = rng.normal(0, 0.2, nf).astype(np.float32)
    return F.render(idp, expr, pose, size, view=ENLARGE, supersample=1, rng=rng)


def video_poses(seed: int, tracks: list[dict]) -> dict[str, dict]:
    """Base head pose, lighting and camera noise of every video (in plan order)."""
    prng = _rng(seed, "voxceleb", 4)
    poses = {}
    for t in tracks:
        if t["video"] not in poses:
            p = F.sample_poses(prng, 1, strength=0.8)
            poses[t["video"]] = {key: float(v[0]) for key, v in p.items()}
    return poses


def _write_track(job) -> float:
    """Write the wav and the dense frames of one track; return its SNR (dB)."""
    seed, k, t, ident, spk, pose, vox = job
    wav_rel = f"{t['identity']}/{t['video']}/{t['track']}.wav"
    fr_rel = f"{t['identity']}/1.6/{t['video']}/{t['track']}"
    x, snr = synth_track_audio(seed, k, t, spk)
    write_wav(vox / "wav" / wav_rel, x, VOX_RATE)
    frames = render_track_frames(seed, k, t, ident, pose)
    for j in range(t["n_frames"]):
        write_jpeg(vox / "frames" / fr_rel / f"{j * FRAME_STRIDE:05d}.jpg", frames[j])
    return snr


def write_voxceleb(root: Path, seed: int, size: Size, show_progress: bool = True,
                   workers: int = 1) -> dict:
    tracks = voxceleb_plan(seed, size)
    n_id = size.train_ids + size.unheard_ids
    ident, spk = voxceleb_people(seed, n_id)
    vox = root / "voxceleb"
    poses = video_poses(seed, tracks)
    jobs = [(seed, k, t, ident, V.speaker(spk, t["ident_index"]), poses[t["video"]], vox)
            for k, t in enumerate(tracks)]
    bar = progress(total=len(jobs), desc="voxceleb tracks", unit="track",
                   disable=None if show_progress else True)
    if workers > 1:  # every track has its own seeds: the result does not depend on workers
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            snrs = []
            for snr in ex.map(_write_track, jobs, chunksize=4):
                snrs.append(snr)
                bar.update(1)
    else:
        snrs = []
        for job in jobs:
            snrs.append(_write_track(job))
            bar.update(1)
    bar.close()
    lines, truth = [], []
    for t, snr in zip(tracks, snrs):
        wav_rel = f"{t['identity']}/{t['video']}/{t['track']}.wav"
        fr_rel = f"{t['identity']}/1.6/{t['video']}/{t['track']}"
        lines.append(f"{SET_CODE[t['split']]} {wav_rel} {fr_rel}\n")
        truth.append([wav_rel, t["identity"], t["video"], t["track"], t["split"],
                      SET_CODE[t["split"]], fr_rel, f"{t['duration']:.2f}", t["n_frames"],
                      emotions.FERPLUS[t["dominant"]], f"{snr:.2f}",
                      f"{spk['f0'][t['ident_index']]:.1f}",
                      trajectory_string(t["labels"]),
                      " ".join(f"{v:.2f}" for v in t["intensity"])])
    (vox / "splits.txt").write_text("".join(lines))
    _write_csv(vox / "truth.csv",
               ["wav", "identity", "video", "track", "split", "set", "frames_dir",
                "duration_s", "n_frames", "dominant_emotion", "snr_db", "speaker_f0_hz",
                "trajectory", "intensity"], truth)
    counts = {s: {e: 0 for e in emotions.FERPLUS} for s in SET_CODE}
    for t in tracks:
        counts[t["split"]][emotions.FERPLUS[t["dominant"]]] += 1
    return {"tracks": len(tracks), "identities": n_id,
            "frames": int(sum(t["n_frames"] for t in tracks)),
            "seconds": round(float(sum(t["duration"] for t in tracks)), 2),
            "split_tracks": {s: sum(c.values()) for s, c in counts.items()},
            "dominant_counts": counts}


# --------------------------------------------------------------------------- external (RML-style)

def write_external(root: Path, seed: int, size: Size) -> dict:
    rng = _rng(seed, "external")
    n_spk = size.ext_speakers
    spk = V.sample_speakers(rng, n_spk)
    ext = root / "external"
    rows = []
    k = 0
    for s in range(n_spk):
        for c, (cname, short) in enumerate(zip(RML_NAMES, RML_SHORT)):
            fer = emotions.index(cname)
            for r in range(size.ext_per_class):
                crng = _rng(seed, "external", 1, k)
                k += 1
                dur = float(np.round(crng.uniform(*size.ext_seconds), 2))
                inten = crng.uniform(0.75, 1.0)
                sp, _ = V.synth_utterance(crng, V.speaker(spk, s), dur, EXTERNAL_RATE,
                                          [0.0], [fer], [inten])
                noise = V.background_noise(crng, len(sp), EXTERNAL_RATE)
                mix, _ = V.mix_at_snr(sp, noise, crng.uniform(15.0, 25.0))
                rel = f"s{s + 1}/{cname}/s{s + 1}_{short}{r + 1}.wav"
                write_wav(ext / rel, V.to_int16(mix), EXTERNAL_RATE)
                rows.append([rel, cname, f"s{s + 1}"])
    _write_csv(ext / "manifest.csv", ["path", "label", "speaker"], rows)
    return {"clips": len(rows), "speakers": n_spk, "classes": list(RML_NAMES)}


# --------------------------------------------------------------------------- videos

def write_videos(root: Path, seed: int, size: Size) -> dict:
    vdir = root / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(size.videos):
        rng = _rng(seed, "videos", v)
        ident = F.sample_identities(rng, 1)
        spk = V.speaker(V.sample_speakers(rng, 1), 0)
        dur = size.video_seconds
        nvf = int(dur * VIDEO_FPS)
        # timeline: 2-3 segments
        nseg = int(rng.integers(2, 4))
        seg = rng.dirichlet(np.full(nseg, 4.0)) * (dur - nseg * 1.0) + 1.0  # >= 1 s each
        starts = np.round(np.concatenate([[0.0], np.cumsum(seg)[:-1]]), 2)
        segl = [0] + [int(c) for c in rng.choice([1, 2, 3, 4], size=nseg - 1, replace=False)]
        if rng.random() < 0.5:  # sometimes start with the emotion, end neutral
            segl = segl[1:] + segl[:1]
        ft = np.arange(nvf) / VIDEO_FPS
        seg_idx = np.searchsorted(starts, ft, side="right") - 1
        lab = np.array(segl)[seg_idx]
        inten = np.where(lab == 0, 0.0, rng.uniform(0.7, 1.0))
        speech, _ = V.synth_utterance(rng, spk, dur, VOX_RATE, ft, lab, inten)
        noise = V.background_noise(rng, len(speech), VOX_RATE)
        mix, _ = V.mix_at_snr(speech, noise, rng.uniform(10, 20))
        audio = V.to_int16(mix)
        # mouth opening follows the speech envelope
        env = np.sqrt(np.mean(speech[: nvf * (VOX_RATE // VIDEO_FPS)].reshape(nvf, -1) ** 2, axis=1))
        env = env / (env.max() + 1e-9)
        idp = {key: np.repeat(val, nvf) for key, val in ident.items()}
        expr = F.expression_params(lab, inten, rng, jitter=0.04)
        expr["open"] = expr["open"] + 0.5 * env.astype(np.float32)
        pose = F.sample_poses(rng, 1, strength=0.6)
        pose = {key: np.repeat(val, nvf) for key, val in pose.items()}
        pose["tx"] = pose["tx"] + 0.08 * np.sin(np.linspace(0, 2, nvf)).astype(np.float32)
        small = F.render(idp, expr, pose, VIDEO_SIZE // 2, view=ENLARGE * 1.25, rng=rng, chunk=64)
        frames = _upscale2(small)
        name = f"talk{v + 1:02d}.mp4"
        write_mp4(vdir / name, frames, audio, VOX_RATE, VIDEO_FPS)
        timeline = ";".join(f"{st:.2f}:{emotions.FERPLUS[c]}" for st, c in zip(starts, segl))
        rows.append([name, timeline])
    _write_csv(vdir / "manifest.csv", ["path", "emotion_timeline"], rows)
    return {"videos": len(rows)}


def _upscale2(frames: np.ndarray) -> np.ndarray:
    """2x bilinear upscaling of uint8 frames [N,H,W,3] (numpy, deterministic)."""
    x = frames.astype(np.float32)
    x = np.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
    x = np.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
    # rows: output 2i = .25 x[i-1] + .75 x[i]; 2i+1 = .75 x[i] + .25 x[i+1]
    r0 = 0.25 * x[:, :-2] + 0.75 * x[:, 1:-1]
    r1 = 0.75 * x[:, 1:-1] + 0.25 * x[:, 2:]
    x = np.stack([r0, r1], axis=2).reshape(x.shape[0], -1, x.shape[2], 3)
    c0 = 0.25 * x[:, :, :-2] + 0.75 * x[:, :, 1:-1]
    c1 = 0.75 * x[:, :, 1:-1] + 0.25 * x[:, :, 2:]
    x = np.stack([c0, c1], axis=3).reshape(x.shape[0], x.shape[1], -1, 3)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, audio_int16: np.ndarray, rate: int, fps: int) -> None:
    """H.264 (yuv420p) + AAC mono mp4, bit-exact (no timestamps or encoder strings)."""
    import av
    from fractions import Fraction
    with av.open(str(path), mode="w", format="mp4",
                 options={"fflags": "+bitexact", "movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "23", "preset": "fast", "threads": "1"}
        astream = c.add_stream("aac", rate=rate, layout="mono")
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for pkt in vs.encode(vf):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        x = (audio_int16.astype(np.float32) / 32768.0)
        fs = 1024
        for i in range(0, len(x), fs):
            chunk = x[i:i + fs]
            af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
            af.sample_rate = rate
            af.pts = i
            af.time_base = Fraction(1, rate)
            for pkt in astream.encode(af):
                c.mux(pkt)
        for pkt in astream.encode():
            c.mux(pkt)


# --------------------------------------------------------------------------- main entry

MARKER_TEXT = ("synthetic: made by tf_cme.demo.corpus. Records built from this folder are "
               "marked synthetic, and models trained on them are demo models whose labels "
               "mean nothing on real data.\n")

README = """# tf-cme demo corpus (synthetic)

Everything in this folder is **synthetic**: procedurally rendered faces and source-filter
synthesised voices, made by `scripts/make_demo_data.py --seed {seed} --size {size}`
(`tf_cme.demo.corpus.generate`). It is laid out in exactly the on-disk formats of the
real datasets so that every stage of tf-cme runs its real code on it. No real person,
image or recording is in it. The same seed and size give a byte-identical tree.

| part | content |
|---|---|
| `ferplus/fer2013.csv` | {fer_rows} rows `emotion,pixels,Usage` (48x48 grey, FER2013 codes 0-6; contempt faces are coded neutral) |
| `ferplus/fer2013new.csv` | FER+ votes (10 per row; unknown/NF votes, 2- and 3-way ties, sub-majority rows, one 9-vote row, empty image names) |
| `voxceleb/wav/` | {tracks} tracks, {seconds} s of 16 kHz mono 16-bit speech of {identities} identities |
| `voxceleb/frames/` | {frames} face frames (every 6th frame of 25 fps video, `1.6` = face box enlarged 1.6x) |
| `voxceleb/splits.txt` | `<set> <wav> <frames dir>`; set 1 train ({n_train}), 2 unheard ({n_unheard}), 3 heard ({n_heard}) |
| `voxceleb/truth.csv` | ground truth per track: dominant emotion, per-frame trajectory (one FER+ index digit per frame: {order}), SNR, speaker pitch |
| `external/` | {clips} RML-style acted clips (Angry, Disgust, Fear, Happy, Sad, Surprise), {ext_speakers} new speakers, 22,050 Hz, `manifest.csv` (path,label,speaker) |
| `videos/` | {videos} talking-face videos (H.264 25 fps + AAC), `manifest.csv` (path,emotion_timeline as `start_s:emotion;...`) |

Dominant emotions of the VoxCeleb tracks per split:

{dominant_table}

How emotions are carried: each track has a per-frame emotion trajectory (neutral onset,
the dominant emotion, sometimes a brief secondary one). The face frames show that
expression (mouth, eyes, brows); the voice carries it through prosody and voice quality
(pitch level and range, speaking rate, loudness, spectral tilt, jitter, breathiness) of a
source-filter synthesis with speaker-dependent pitch and formants, mixed with background
noise at a speech-to-noise ratio between 5 and 20 dB. The noise level of a recording is
set against the speaker's neutral voice, so loud (angry, happy) speech stands out more
from the background and quiet (sad) speech less.
"""


def _dominant_table(counts: dict) -> str:
    head = "| split | " + " | ".join(emotions.FERPLUS) + " |"
    sep = "|---" * (len(emotions.FERPLUS) + 1) + "|"
    body = ["| " + s + " | " + " | ".join(str(c[e]) for e in emotions.FERPLUS) + " |"
            for s, c in counts.items()]
    return "\n".join([head, sep, *body])


def generate(out, seed: int = 0, size: str = "small", force: bool = False,
             show_progress: bool = True, workers: int | None = None) -> dict:
    """Write the demo corpus into ``out`` and return a summary dict.

    Refuses a non-empty ``out`` unless ``force`` (then its content is replaced). The tree is
    built in a temporary sibling folder and renamed into place, so ``out`` never holds a
    half-written corpus. ``workers``: processes for the VoxCeleb tracks (default: 1 for
    ``tiny``, up to 2 otherwise); the output does not depend on it.
    """
    if size not in SIZES:
        raise CmeError(f"unknown corpus size {size!r}; choose one of {', '.join(SIZES)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CmeError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CmeError(f"{out} is not empty; pass --force to replace its content")
    sz = SIZES[size]
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        timings = {}
        t = time.perf_counter()
        fer = write_ferplus(tmp, sz.fer_rows, seed)
        timings["ferplus"] = time.perf_counter() - t
        t = time.perf_counter()
        if workers is None:
            workers = 1 if size == "tiny" else max(1, min(2, os.cpu_count() or 1))
        vox = write_voxceleb(tmp, seed, sz, show_progress, workers)
        timings["voxceleb"] = time.perf_counter() - t
        t = time.perf_counter()
        ext = write_external(tmp, seed, sz)
        timings["external"] = time.perf_counter() - t
        t = time.perf_counter()
        vid = write_videos(tmp, seed, sz)
        timings["videos"] = time.perf_counter() - t
        st = vox["split_tracks"]
        (tmp / "README.md").write_text(README.format(
            seed=seed, size=size, fer_rows=fer["rows"], tracks=vox["tracks"],
            seconds=vox["seconds"], identities=vox["identities"], frames=vox["frames"],
            n_train=st["train"], n_unheard=st["unheard"], n_heard=st["heard"],
            order=", ".join(f"{i}={e}" for i, e in enumerate(emotions.FERPLUS)),
            clips=ext["clips"], ext_speakers=ext["speakers"], videos=vid["videos"],
            dominant_table=_dominant_table(vox["dominant_counts"])))
        (tmp / "config.json").write_text(json.dumps(
            {"seed": int(seed), "size": size, "synthetic": True}, indent=2, sort_keys=True) + "\n")
        # every folder a record builder reads says it is synthetic: the records' manifest
        # and every model trained on them carry it (tf_cme.provenance)
        for folder in (tmp, *sorted(d for d in tmp.iterdir() if d.is_dir())):
            (folder / MARKER).write_text(MARKER_TEXT)
        # swap into place
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    n_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "seed": seed, "size": size, "ferplus": fer, "voxceleb": vox,
            "external": ext, "videos": vid, "files": n_files, "bytes": n_bytes,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "seconds": round(time.perf_counter() - t0, 2)}
