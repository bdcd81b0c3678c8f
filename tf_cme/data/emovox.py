"""VoxCeleb / EmoVoxCeleb -> ``emovox`` clip records (protocol §2.2, §3.1).

Three sources:

1. A VoxCeleb-layout tree (:func:`plan_tree`)::

       ROOT/wav/<identity>/<video>/<utt>.wav
       ROOT/frames/<identity>/1.6/<video>/<track>/NNNNN.jpg   (every 6th frame at 25 fps)
       ROOT/splits.txt   "<set> <wav path rel. to wav/> <frames dir rel. to frames/>"

   Audio becomes 16 kHz mono int16 PCM (``tf_cme.audio.io.load_audio``: other
   rates resampled, stereo down-mixed, compressed formats decoded), the whole
   track (training crops from its first 19.9 s, evaluation reads all, §3.2); frames are kept as JPEG bytes in time order with frame file NNNNN ->
   video frame NNNNN -> time NNNNN / 25 s.
2. The published imdb with teacher logits, ``--logits-mat
   senet50-ferplus-logits.mat`` (:func:`plan_mat`): MAT v5 (scipy.io) or v7.3
   (HDF5, h5py); gives LABELLED records (per-frame logits ``wavLogits{i}``).
3. Raw videos, mp4 / avi / mov (:func:`plan_videos`): audio and frames (25 fps,
   stride 6) from ``tf_cme.vision.video.read_video``, faces detected
   (``tf_cme.vision.faces``, Haar or MTCNN) and cropped with the 1.6x box
   convention; frames without a face are dropped, a track with no face at all is
   skipped (``no_face``).

Skip reasons (manifest ``skipped``): ``missing_audio``, ``unreadable_audio``,
``empty_audio``, ``truncated_audio`` (a WAV whose header promises more samples than
the file holds: not the recording the corpus lists), ``silent_audio`` (all samples
zero), ``no_frames`` (track with no frame files), ``missing_frame_file``, ``no_face``,
``no_logits``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np

from .. import emotions, provenance
from ..utils import CmeError
from . import records, schema as schema_lib

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")


@dataclasses.dataclass
class EmovoxBuildConfig:
    # Each comment is also the --help text of build_records.py emovox's option.
    root: str = ""                  # VoxCeleb-layout tree: DIR/wav/, DIR/frames/, DIR/splits.txt
    wav_dir: str = ""               # wav root ('': ROOT/wav)
    frames_dir: str = ""            # face frames root ('': ROOT/frames)
    splits: str = ""                # split file ('': ROOT/splits.txt)
    logits_mat: str = ""            # senet50-ferplus-logits.mat (MAT v5 or v7.3): import the
                                    # published per-frame teacher logits, making LABELLED records
    videos: str = ""                # a folder of raw videos (mp4/avi/mov) instead of a tree: audio
                                    # and frames extracted at 25 fps stride 6, faces detected and
                                    # cropped 1.6x
    video_set: Literal[1, 2, 3] = 1   # split code for --videos clips (1 train, 2 unheard, 3 heard)
    detector: Literal["haar", "mtcnn"] = "haar"   # face detector for --videos
    face_size: int = 224            # side of the saved 1.6x face crops for --videos
    jpeg_quality: int = 90          # JPEG quality of the face crops saved for --videos
    max_seconds: float = 0.0        # cut tracks at S seconds (0: keep whole tracks; evaluation,
                                    # protocol §3.2, refuses cut tracks; training clamps at 19.9 s
                                    # itself, §3.1)
    shard_size: int = 128           # clips per shard
    order_seed: int = 0             # seed of the random order the tracks of each split are written
                                    # in across the shards, so that any run of records is a uniform
                                    # sample (protocol §6)
    workers: int = 0                # worker processes (0: every available core; 1: no subprocess)


# ------------------------------------------------------------------- order
#: How the records of a split are ordered across its shards (recorded in the manifest).
ORDER_METHOD = ("seeded random permutation of each split's tracks before cutting shards: "
                "numpy.random.default_rng([order_seed, set code]).permutation")


def record_order(split: str, items: list, seed: int) -> list:
    """``items`` (one split's inputs, in split-file / imdb order, i.e. grouped by
    identity) in a seeded random order, so that every run of consecutive records, and
    every selection of whole shards, is a uniform random sample of the split's tracks:
    a mini-epoch read through a few shuffled shards and a shuffle buffer then covers
    the identities as the original's ``randperm`` does (protocol §6)."""
    code = schema_lib.SPLIT_SETS[split]
    perm = np.random.default_rng([int(seed), code]).permutation(len(items))
    return [items[i] for i in perm]


def _chunk_splits(per_split: dict, cfg: EmovoxBuildConfig) -> list:
    tasks = []
    for split in ("train", "unheard", "heard"):
        if split in per_split:
            tasks += records.chunk(split, record_order(split, per_split[split], cfg.order_seed),
                                   cfg.shard_size)
    return tasks


# ------------------------------------------------------------------- audio
def audio_record(path: Path, max_seconds: float | None = schema_lib.MAX_SECONDS):
    """Load audio as 16 kHz mono -> (int16 PCM bytes, num_samples, source_rate) or a
    Skip reason string."""
    if not path.exists():
        return "missing_audio", f"{path}: no such file"
    from ..audio import io as audio_io
    # A WAV shorter than its header says is not the recording the corpus lists: a
    # skip (``truncated_audio``), whether or not the kept part (max_seconds) reaches
    # the missing bytes.  The header check is the audio reader's own.
    truncation = audio_io.wav_truncation(path)
    if truncation is not None:
        return "truncated_audio", f"{path}: truncated WAV: {truncation}"
    fast = _pcm16_wav(path, max_seconds)
    if fast is not None:
        return fast
    try:
        audio = audio_io.load_audio(str(path), target_rate=schema_lib.SAMPLE_RATE, mono=True,
                                    max_seconds=max_seconds)
    except CmeError as e:
        msg = str(e)
        return ("empty_audio" if "empty" in msg.lower() else "unreadable_audio"), msg
    except Exception as e:  # noqa: BLE001 - a decoder failing on a bad file
        return "unreadable_audio", f"{path}: {type(e).__name__}: {e}"
    if audio.truncation is not None:
        return "truncated_audio", f"{path}: truncated WAV: {audio.truncation}"
    x, rate = audio
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return "empty_audio", f"{path}: no samples"
    if not np.all(np.isfinite(x)):
        return "unreadable_audio", f"{path}: NaN or infinite samples"
    if max_seconds:
        x = x[:int(round(max_seconds * schema_lib.SAMPLE_RATE))]
    pcm = schema_lib.pcm16(x)
    if not np.any(np.frombuffer(pcm, "<i2")):
        return "silent_audio", f"{path}: all samples are zero"
    return pcm, x.size, source_rate(path)


def _pcm16_wav(path: Path, max_seconds):
    """Fast path: a plain 16 kHz mono 16-bit PCM wav is already in the record format;
    its samples are copied as they are (identical to load_audio + pcm16)."""
    if path.suffix.lower() not in (".wav", ".wave"):
        return None
    import wave
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) != \
                    (1, 2, schema_lib.SAMPLE_RATE, "NONE"):
                return None
            n = w.getnframes()
            if max_seconds:
                n = min(n, int(max_seconds * schema_lib.SAMPLE_RATE + 1e-6))
            pcm = w.readframes(n)
    except Exception:                    # noqa: BLE001 - let load_audio read or report it
        return None
    if len(pcm) == 0 or len(pcm) % 2:
        return None
    if not np.any(np.frombuffer(pcm, "<i2")):
        return "silent_audio", f"{path}: all samples are zero"
    return pcm, len(pcm) // 2, schema_lib.SAMPLE_RATE


def source_rate(path: Path) -> int:
    """Sample rate of the source file (0 when it cannot be told cheaply)."""
    try:
        import soundfile as sf
        return int(sf.info(str(path)).samplerate)
    except Exception:  # noqa: BLE001
        pass
    try:
        import av
        with av.open(str(path)) as c:
            a = [s for s in c.streams if s.type == "audio"]
            return int(a[0].rate) if a else 0
    except Exception:  # noqa: BLE001
        return 0


def _frame_number(name: str) -> int:
    return int(Path(name).stem)


def list_frames(frames_dir: Path) -> list[Path]:
    return [Path(frames_dir) / n for _, n in _frame_names(str(frames_dir))]


def _frame_names(frames_dir: str) -> list[tuple[int | None, str]]:
    """(frame number or None, file name) of the .jpg files, in time order (numeric
    names by number, others by name)."""
    names = [n for n in os.listdir(frames_dir) if n.lower().endswith((".jpg", ".jpeg"))]
    out = []
    for n in names:
        stem = n.rsplit(".", 1)[0]
        out.append((int(stem) if stem.isdigit() else None, n))
    if all(k is not None for k, _ in out):
        return sorted(out)
    return sorted((None, n) for _, n in out)


def _read(path: str) -> bytes:
    """A whole small file (a JPEG frame): raw os calls, a third cheaper than open()."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size:            # a short read (network file systems)
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


# -------------------------------------------------------------------- tree
def parse_splits(path: Path) -> list[tuple[int, str, str]]:
    if not path.exists():
        raise CmeError(f"{path}: no such file (the split file: '<set> <wav> <frames dir>' per line)")
    out, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise CmeError(f"{path}:{n}: expected '<set> <wav path> <frames dir>', got {line!r}")
        try:
            code = int(parts[0])
        except ValueError:
            raise CmeError(f"{path}:{n}: set code {parts[0]!r} is not 1, 2 or 3") from None
        if code not in schema_lib.SET_NAMES:
            raise CmeError(f"{path}:{n}: set code {code} is not 1 (train), 2 (unheard) or 3 (heard)")
        frames = parts[2] if len(parts) == 3 else ""
        k = (parts[1], frames)
        if k in seen:
            raise CmeError(f"{path}:{n}: duplicate entry {line!r}")
        seen.add(k)
        out.append((code, parts[1], frames))
    return out


def track_key(wav_rel: str, frames_rel: str) -> tuple[str, str, str]:
    """(identity, video, track) from the frames dir ``<id>/1.6/<video>/<track>``
    (or the wav path ``<id>/<video>/<utt>.wav`` when there is no frames dir)."""
    f = [p for p in frames_rel.strip("/").split("/") if p]
    if len(f) >= 4:
        return f[0], f[-2], f[-1]
    w = [p for p in wav_rel.strip("/").split("/") if p]
    if len(w) >= 3:
        return w[0], w[-2], Path(w[-1]).stem
    return (w[0] if w else "unknown"), "video", Path(wav_rel).stem


def plan_tree(cfg: EmovoxBuildConfig):
    root = Path(cfg.root) if cfg.root else None
    wav_dir = Path(cfg.wav_dir) if cfg.wav_dir else (root / "wav" if root else None)
    frames_dir = Path(cfg.frames_dir) if cfg.frames_dir else (root / "frames" if root else None)
    splits = Path(cfg.splits) if cfg.splits else (root / "splits.txt" if root else None)
    if wav_dir is None or splits is None:
        raise CmeError("emovox: give --root (a VoxCeleb-layout tree) or --wav-dir and --splits")
    if not wav_dir.is_dir():
        raise CmeError(f"{wav_dir}: no such folder (the wav root)")
    entries = parse_splits(splits)
    per_split: dict[str, list] = {}
    keys = {}
    for code, wav_rel, frames_rel in entries:
        key = "/".join(track_key(wav_rel, frames_rel))
        if key in keys:
            raise CmeError(f"{splits}: tracks {keys[key]!r} and {wav_rel!r} have the same key {key!r}")
        keys[key] = wav_rel
        per_split.setdefault(schema_lib.SET_NAMES[code], []).append(
            ("tree", code, wav_rel, frames_rel))
    tasks = _chunk_splits(per_split, cfg)
    sources = {"splits.txt": records.file_sha256(splits),
               "wav listing": records.listing_sha256(wav_dir, [e[1] for e in entries])}
    options = {"wav_dir": str(wav_dir), "frames_dir": str(frames_dir) if frames_dir else "",
               "max_seconds": cfg.max_seconds}
    return tasks, [], sources, options


def encode_track(item, *, wav_dir: str, frames_dir: str = "", max_seconds: float = 0.0,
                 **video_opts):
    """Worker: one input -> an ``emovox`` record (or a Skip)."""
    kind = item[0]
    if kind == "video":
        return encode_video(item, max_seconds=max_seconds, wav_dir=wav_dir, **video_opts)
    if kind == "mat":
        return encode_mat_track(item, wav_dir=wav_dir, frames_dir=frames_dir,
                                max_seconds=max_seconds)
    _, code, wav_rel, frames_rel = item
    identity, video, track = track_key(wav_rel, frames_rel)
    key = f"{identity}/{video}/{track}"
    audio = audio_record(Path(wav_dir) / wav_rel, max_seconds or None)
    if isinstance(audio[0], str):
        return records.Skip(audio[0], key, audio[1])
    pcm, n, rate = audio
    fdir = os.path.join(frames_dir, frames_rel) if frames_dir and frames_rel else None
    if fdir is None or not os.path.isdir(fdir):
        return records.Skip("no_frames", key, f"{fdir}: no such folder")
    named = _frame_names(fdir)
    if not named:
        return records.Skip("no_frames", key, f"{fdir}: no .jpg frames")
    if named[0][0] is not None:
        idx = [k for k, _ in named]
    else:
        idx = [schema_lib.FRAME_STRIDE * k for k in range(len(named))]
    try:
        jpgs = [_read(os.path.join(fdir, n)) for _, n in named]
    except OSError as e:
        return records.Skip("missing_frame_file", key, str(e))
    data = schema_lib.EMOVOX_SCHEMA.encode({
        "key": key, "identity": identity, "video": video, "track": track, "wav": wav_rel,
        "set": code, "split": schema_lib.SET_NAMES[code], "audio": pcm, "num_samples": n,
        "sample_rate": schema_lib.SAMPLE_RATE, "source_rate": rate, "frames": jpgs,
        "frame_index": idx, "frame_times": schema_lib.frame_time(idx), "logits": []})
    return records.Encoded(data, None)


# --------------------------------------------------------------- .mat import
def _mat_str(x) -> str:
    if isinstance(x, str):
        return x
    a = np.asarray(x)
    if a.dtype.kind in "US":
        return "".join(a.reshape(-1).astype(str))
    if a.dtype == object and a.size == 1:
        return _mat_str(a.reshape(-1)[0])
    if a.dtype.kind in "ui":
        return "".join(chr(int(c)) for c in a.reshape(-1))
    return str(x)


def _mat_list(x) -> list:
    """A MATLAB cell array (after scipy simplify_cells or h5py) as a Python list."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, np.ndarray) and x.dtype == object:
        return list(x.reshape(-1))
    return [x]


def _mat_num(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def load_imdb(path) -> dict:
    """Read ``senet50-ferplus-logits.mat`` (v5 via scipy.io, v7.3 via h5py).

    Returns lists aligned with ``wavLogits``: ``name`` (wav paths), ``set``,
    ``video``, ``track``, ``sp``, ``logits`` ([F_i, 8] float32), ``frames`` (the
    dense frame paths of each wav, in file-name order; empty lists when absent).
    """
    path = Path(path)
    if not path.exists():
        raise CmeError(f"{path}: no such file")
    import h5py
    try:
        if h5py.is_hdf5(str(path)):
            from ..matfile import read_mat73
            top = read_mat73(path)
        else:
            import scipy.io
            top = scipy.io.loadmat(str(path), simplify_cells=True)
    except (OSError, ValueError, NotImplementedError, KeyError) as e:
        raise CmeError(f"{path}: unreadable MAT file: {e}") from None
    imdb = top.get("imdb", top)
    try:
        images = imdb["images"]
        wav_logits = imdb["wavLogits"]
    except (KeyError, TypeError):
        raise CmeError(f"{path}: not an EmoVoxCeleb imdb (needs images.* and wavLogits)") from None
    logits_list = _mat_list(wav_logits)
    if isinstance(wav_logits, np.ndarray) and wav_logits.dtype != object:
        logits_list = [wav_logits]
    names = [_mat_str(n) for n in _mat_list(images["name"])]
    n = len(names)
    logits = [np.asarray(x, dtype=np.float32).reshape(-1, emotions.NUM_CLASSES)
              if np.asarray(x).size else np.zeros((0, 8), np.float32) for x in logits_list]
    if len(logits) != n:
        raise CmeError(f"{path}: {n} images.name entries but {len(logits)} wavLogits cells")

    def field(k, default=None):
        if k not in images:
            if default is None:
                raise CmeError(f"{path}: images.{k} is missing")
            return default
        return images[k]

    sets = _mat_num(field("set")).astype(int)
    video = [_mat_str(v) for v in _mat_list(field("video", [""] * n))]
    tr = field("track", np.arange(1, n + 1))
    track = [(_mat_str(t) if isinstance(t, str) or np.asarray(t).dtype.kind in "USO"
              else str(int(np.asarray(t).reshape(-1)[0]))) for t in _mat_list(tr)] \
        if not (isinstance(tr, np.ndarray) and tr.dtype.kind in "fiu") else \
        [str(int(t)) for t in _mat_num(tr)]
    sp = _mat_num(field("sp", np.zeros(n))).astype(int)
    frames: list[list[str]] = [[] for _ in range(n)]
    if "denseFrames" in images and "denseFramesWavIds" in images:
        paths = [_mat_str(p) for p in _mat_list(images["denseFrames"])]
        ids = _mat_num(images["denseFramesWavIds"]).astype(int)
        if len(paths) != len(ids):
            raise CmeError(f"{path}: denseFrames and denseFramesWavIds differ in length")
        for p, i in zip(paths, ids):
            if 1 <= i <= n:
                frames[i - 1].append(p)
        for fl in frames:
            fl.sort()
    for k, arr in (("set", sets), ("video", video), ("track", track)):
        if len(arr) != n:
            raise CmeError(f"{path}: images.{k} has {len(arr)} entries, images.name has {n}")
    return {"name": names, "set": list(sets), "video": video, "track": track, "sp": list(sp),
            "logits": logits, "frames": frames}


def wav_path_of(name: str) -> str:
    """``images.name`` -> wav path: the last 3 characters replaced by ``wav`` (protocol §2.2)."""
    return name[:-3] + "wav" if len(name) > 3 and not name.endswith(".wav") else name


def plan_mat(cfg: EmovoxBuildConfig):
    root = Path(cfg.root) if cfg.root else None
    wav_dir = Path(cfg.wav_dir) if cfg.wav_dir else (root / "wav" if root else None)
    frames_dir = Path(cfg.frames_dir) if cfg.frames_dir else (root / "frames" if root else None)
    if wav_dir is None or not wav_dir.is_dir():
        raise CmeError(f"emovox --logits-mat needs the wavs: --root or --wav-dir ({wav_dir} "
                       f"is not a folder)")
    imdb = load_imdb(cfg.logits_mat)
    pre, per_split = [], {}
    for i, name in enumerate(imdb["name"]):
        code = int(imdb["set"][i])
        if code not in schema_lib.SET_NAMES:
            raise CmeError(f"{cfg.logits_mat}: images.set({i + 1}) = {code}, expected 1, 2 or 3")
        lg = imdb["logits"][i]
        wav_rel = wav_path_of(name)
        if lg.shape[0] == 0:
            pre.append(records.Skip("no_logits", wav_rel, "wavLogits cell is empty"))
            continue
        fr = imdb["frames"][i]
        if fr and len(fr) != lg.shape[0]:
            raise CmeError(f"{cfg.logits_mat}: wav {i + 1} ({name}) has {lg.shape[0]} logit "
                           f"rows but {len(fr)} dense frames")
        per_split.setdefault(schema_lib.SET_NAMES[code], []).append(
            ("mat", code, wav_rel, imdb["video"][i], imdb["track"][i], fr,
             lg.astype(np.float32).tolist()))
    tasks = _chunk_splits(per_split, cfg)
    sources = {Path(cfg.logits_mat).name: records.file_sha256(cfg.logits_mat),
               "wav listing": records.listing_sha256(wav_dir, [wav_path_of(n) for n in imdb["name"]])}
    options = {"wav_dir": str(wav_dir),
               "frames_dir": str(frames_dir) if frames_dir and frames_dir.is_dir() else "",
               "max_seconds": cfg.max_seconds}
    return tasks, pre, sources, options


def encode_mat_track(item, *, wav_dir: str, frames_dir: str, max_seconds: float):
    _, code, wav_rel, video, track, frame_paths, logits = item
    w = [p for p in wav_rel.split("/") if p]
    identity = w[0] if w else "unknown"
    if str(track).isdigit():
        track = f"{int(track):05d}"
    if frame_paths:
        parts = [p for p in frame_paths[0].split("/") if p]
        if len(parts) >= 5:
            video, track = parts[-3], parts[-2]
    key = f"{identity}/{video}/{track}"
    logits = np.asarray(logits, dtype=np.float32).reshape(-1, emotions.NUM_CLASSES)
    audio = audio_record(Path(wav_dir) / wav_rel, max_seconds or None)
    if isinstance(audio[0], str):
        return records.Skip(audio[0], key, audio[1])
    pcm, n, rate = audio
    try:
        idx = [_frame_number(p) for p in frame_paths] if frame_paths else None
    except ValueError:
        idx = None
    if idx is None:
        idx = [schema_lib.FRAME_STRIDE * k for k in range(logits.shape[0])]
    jpgs = []
    if frames_dir and frame_paths:
        try:
            jpgs = [(Path(frames_dir) / p).read_bytes() for p in frame_paths]
        except OSError as e:
            return records.Skip("missing_frame_file", key, str(e))
    data = schema_lib.EMOVOX_SCHEMA.encode({
        "key": key, "identity": identity, "video": video, "track": track, "wav": wav_rel,
        "set": code, "split": schema_lib.SET_NAMES[code], "audio": pcm, "num_samples": n,
        "sample_rate": schema_lib.SAMPLE_RATE, "source_rate": rate, "frames": jpgs,
        "frame_index": idx, "frame_times": schema_lib.frame_time(idx),
        "logits": logits.reshape(-1)})
    return records.Encoded(data, dominant_label(logits))


def dominant_label(logits: np.ndarray) -> int | None:
    """protocol §7.1: the emotion holding the largest logit anywhere in the track."""
    logits = np.asarray(logits).reshape(-1, emotions.NUM_CLASSES)
    if logits.shape[0] == 0:
        return None
    return int(np.argmax(logits.max(axis=0)))


# ------------------------------------------------------------------- videos
def plan_videos(cfg: EmovoxBuildConfig):
    root = Path(cfg.videos)
    if not root.is_dir():
        raise CmeError(f"{root}: no such folder (raw videos)")
    if cfg.video_set not in schema_lib.SET_NAMES:
        raise CmeError(f"--video-set must be 1, 2 or 3, got {cfg.video_set}")
    if cfg.detector not in ("haar", "mtcnn"):
        raise CmeError(f"--detector must be haar or mtcnn, got {cfg.detector!r}")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not files:
        raise CmeError(f"{root}: no videos ({', '.join(VIDEO_EXTS)})")
    split = schema_lib.SET_NAMES[cfg.video_set]
    items = [("video", cfg.video_set, rel) for rel in files]
    tasks = _chunk_splits({split: items}, cfg)
    sources = {"video listing": records.listing_sha256(root, files)}
    options = {"wav_dir": str(root), "frames_dir": "", "max_seconds": cfg.max_seconds,
               "detector": cfg.detector, "face_size": cfg.face_size,
               "jpeg_quality": cfg.jpeg_quality}
    return tasks, [], sources, options


def encode_video(item, *, max_seconds: float, wav_dir: str = "", detector: str = "haar",
                 face_size: int = 224, jpeg_quality: int = 90, **_):
    _, code, rel = item
    path = Path(wav_dir) / rel
    parts = Path(rel).parts
    video = Path(rel).stem
    identity = parts[-2] if len(parts) >= 2 else video
    track = "00001"
    key = f"{identity}/{video}/{track}"
    from ..vision import faces as faces_lib, video as video_lib
    import cv2
    idx, jpgs = [], []
    try:
        frames, audio = video_lib.read_video(str(path), fps=schema_lib.FPS,
                                             stride=schema_lib.FRAME_STRIDE,
                                             max_seconds=max_seconds or None)
        with frames:
            for frame_index, _t, rgb in frames:
                found = faces_lib.detect_faces(rgb, method=detector)
                if not found:
                    continue
                face = found[0]                       # the largest face
                if detector == "mtcnn" and face.landmarks is not None:
                    crop = faces_lib.align_face(rgb, face.landmarks, size=face_size, enlarge=1.6)
                else:
                    crop = faces_lib.crop_face(rgb, face, enlarge=1.6, size=face_size)
                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                if ok:
                    idx.append(int(frame_index))
                    jpgs.append(buf.tobytes())
    except CmeError as e:
        return records.Skip("unreadable_video", key, str(e))
    except Exception as e:  # noqa: BLE001
        return records.Skip("unreadable_video", key, f"{path}: {type(e).__name__}: {e}")
    if audio is None:
        return records.Skip("missing_audio", key, f"{path}: no audio track")
    if np.asarray(audio).size == 0:
        return records.Skip("empty_audio", key, f"{path}: the audio track has no samples")
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if max_seconds:
        x = x[:int(round(max_seconds * schema_lib.SAMPLE_RATE))]
    pcm = schema_lib.pcm16(x)
    if not np.any(np.frombuffer(pcm, "<i2")):
        return records.Skip("silent_audio", key, f"{path}: all samples are zero")
    if not jpgs:
        return records.Skip("no_face", key, f"{path}: no face found in any sampled frame")
    data = schema_lib.EMOVOX_SCHEMA.encode({
        "key": key, "identity": identity, "video": video, "track": track, "wav": rel,
        "set": code, "split": schema_lib.SET_NAMES[code], "audio": pcm, "num_samples": x.size,
        "sample_rate": schema_lib.SAMPLE_RATE, "source_rate": source_rate(path),
        "frames": jpgs, "frame_index": idx, "frame_times": schema_lib.frame_time(idx),
        "logits": []})
    return records.Encoded(data, None)


# -------------------------------------------------------------------- build
def build(out_dir, cfg: EmovoxBuildConfig, overwrite: bool = False, part=None) -> dict:
    """Build the record set (``part``: one worker's share, :class:`records.Part`)."""
    if cfg.videos:
        tasks, pre, sources, options = plan_videos(cfg)
        source = "videos"
    elif cfg.logits_mat:
        tasks, pre, sources, options = plan_mat(cfg)
        source = "logits_mat"
    else:
        tasks, pre, sources, options = plan_tree(cfg)
        source = "tree"
    if cfg.max_seconds < 0:
        raise CmeError(f"--max-seconds must be 0 (whole tracks) or positive, got {cfg.max_seconds}")
    labelled = bool(cfg.logits_mat)
    extra = {"labelled": labelled, "source": source, "sample_rate": schema_lib.SAMPLE_RATE,
             "fps": schema_lib.FPS, "frame_stride": schema_lib.FRAME_STRIDE,
             "order": {"method": ORDER_METHOD, "seed": int(cfg.order_seed)},
             "audio_max_seconds": float(cfg.max_seconds),
             "class_counts_meaning": ("per clip: the emotion holding the largest teacher logit "
                                      "of the track (protocol §7.1)" if labelled else
                                      "none: unlabelled records")}
    if labelled:
        extra["teacher"] = {"name": "senet50-ferplus", "source": Path(cfg.logits_mat).name}
    if provenance.synthetic_inputs(cfg.root, cfg.wav_dir, cfg.frames_dir, cfg.logits_mat,
                                   cfg.videos):
        extra["synthetic"] = True
    return records.build(out_dir, schema_lib.EMOVOX_SCHEMA, tasks,
                         encode_fn=encode_track, options=options,
                         config=dataclasses.asdict(cfg), sources=sources, pre_skipped=pre,
                         extra=extra, workers=cfg.workers, overwrite=overwrite,
                         desc="emovox", unit="clip",
                         # processes: the tree encoder is mostly Python (file lists,
                         # protobuf chunks), so two threads were slower than one
                         executor="process", part=part)
