"""The report's gallery: per emotion, the clips the teacher is most sure of (the original's
``sample_audio.m``), with the peak face frame, a few seconds of audio around it, and the
teacher's and student's probabilities."""
from __future__ import annotations

import heapq
import os
from pathlib import Path

import numpy as np

from .. import emotions
from ..audio.io import write_wav
from ..data.schema import SAMPLE_RATE
from ..metrics.classification import softmax
from ..utils import as_str, write_bytes_atomic, write_json
from .records import iterate_clips


class Gallery:
    """Per emotion, the ``k`` tracks with the highest teacher probability in any frame."""

    def __init__(self, k: int, seconds: float):
        self.k = k
        self.seconds = seconds
        self.heaps: list[list] = [[] for _ in emotions.FERPLUS]
        self._n = 0

    def offer(self, key: str, split: str, waveform, frame_logits, frames, frame_times):
        if self.k <= 0 or frame_logits.shape[0] == 0:
            return
        probs = softmax(frame_logits)                  # [F, 8]
        for c in range(len(emotions.FERPLUS)):
            f = int(np.argmax(probs[:, c]))
            conf = float(probs[f, c])
            heap = self.heaps[c]
            if len(heap) >= self.k and conf <= heap[0][0]:
                continue
            self._n += 1
            # frames, frame_times and logits rows are aligned (one row per face frame)
            aligned = frame_times is not None and len(frame_times) == frame_logits.shape[0]
            t = float(frame_times[f]) if aligned else 0.0
            half = int(self.seconds * SAMPLE_RATE / 2)
            centre = int(t * SAMPLE_RATE)
            wav = np.asarray(waveform, np.float32)
            lo = max(0, min(centre - half, wav.size - 2 * half))
            seg = wav[lo: lo + 2 * half]
            jpeg = (bytes(frames[f]) if frames is not None
                    and len(frames) == frame_logits.shape[0] else b"")
            item = (conf, self._n, {"key": key, "split": split, "emotion": emotions.FERPLUS[c],
                                    "confidence": conf, "frame_index": f, "time_s": t,
                                    "teacher_probs": probs[f].tolist(),
                                    "segment_start_s": lo / SAMPLE_RATE,
                                    "_wav": seg.copy(), "_jpeg": jpeg})
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def missing_frames(self) -> set[str]:
        return {item["key"] for heap in self.heaps for _, _, item in heap if not item["_jpeg"]}

    def fill_frames(self, records: str | os.PathLike, skip_corrupt: bool = False) -> int:
        """Take the peak face frames of the kept clips from another record set of the same
        clips (labelled records are written without their JPEG frames by default)."""
        wanted = self.missing_frames()
        found = 0
        for ex in iterate_clips(records, skip_corrupt=skip_corrupt):
            key = as_str(ex["key"])
            if key not in wanted:
                continue
            frames = ex.get("frames")
            for heap in self.heaps:
                for _, _, item in heap:
                    if item["key"] == key and frames is not None and \
                            len(frames) > item["frame_index"]:
                        item["_jpeg"] = bytes(frames[item["frame_index"]])
            wanted.discard(key)
            found += 1
            if not wanted:
                break
        return found

    def write(self, out: Path, student_logits: dict[str, np.ndarray]) -> list[dict]:
        entries = []
        for c, heap in enumerate(self.heaps):
            for rank, (_, _, item) in enumerate(sorted(heap, key=lambda t: -t[0])):
                stem = f"{emotions.FERPLUS[c]}-{rank + 1}"
                entry = {k: v for k, v in item.items() if not k.startswith("_")}
                entry["rank"] = rank + 1
                if item["_jpeg"]:
                    write_bytes_atomic(out / f"{stem}.jpg", item["_jpeg"])
                    entry["frame"] = f"{stem}.jpg"
                if item["_wav"].size:
                    write_wav(out / f"{stem}.wav", item["_wav"], SAMPLE_RATE)
                    entry["audio"] = f"{stem}.wav"
                logits = student_logits.get(item["key"])
                entry["student_probs"] = (softmax(logits).tolist()
                                          if logits is not None else None)
                entries.append(entry)
        write_json(out / "gallery.json", {"classes": list(emotions.FERPLUS),
                                          "entries": entries})
        return entries


