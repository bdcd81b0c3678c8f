"""Emotion scores for audio and video files from the speech student (and, with --faces,
from a face teacher for the faces of videos).

Inputs: wav, flac, ogg, mp3 (any rate, mono or stereo) and the audio track of mp4, avi,
mov files. Output (stdout, or --out FILE): --format json, a list with one object per
file: file, status (ok / silent / error), message, label, probabilities (keyed by FER+
emotion) and, for files longer than --window, a timeline of sliding windows; or
--format csv, one row per file, window and face frame. Every result has warnings (a
list; a "; "-joined CSV column): "truncated: header says N samples, file holds M" (a WAV
cut short: the part present is scored), "clipped: K samples beyond ±1" (a float WAV,
scored clipped to ±1). Files quieter than --silence-dbfs are "silent" (no emotion, not
an error). Bad files (unreadable, no audio track, zero-length, NaN samples, shorter than
the student's 1.015 s minimum, which the exported model refuses too) are "error" with a
message; the others are still processed and the exit code is 1.

  scripts/predict.py clip.wav talk.mp4
  scripts/predict.py --model runs/demo/student/model.keras --format csv clip.flac
  scripts/predict.py --faces --teacher runs/demo/export/senet50-ferplus talk.mp4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.utils import run_main, write_bytes_atomic


def main() -> int:
    from tf_cme import prediction
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video files")
    p.add_argument("--format", choices=("json", "csv"), default="json",
                   help="output format (default json)")
    p.add_argument("--out", metavar="FILE", help="write the output here instead of stdout")
    flags = config.add_field_args(
        p, prediction.PredictConfig,
        ["model", "window", "hop", "silence_dbfs", "faces", "teacher", "face_method",
         "batch_size", "embedding"],
        window={"metavar": "SECONDS"}, hop={"metavar": "SECONDS"},
        silence_dbfs={"metavar": "DB"})
    config.add_config_args(p)
    args = p.parse_args()
    cfg = config.resolve_or_exit(prediction.PredictConfig, args,
                                 explicit=config.explicit(args, flags))
    if cfg.window <= 0 or cfg.hop <= 0 or cfg.batch_size < 1:
        print(f"{Path(sys.argv[0]).name}: error: --window, --hop and --batch-size must be "
              f"positive", file=sys.stderr)
        return 2
    if cfg.faces and not cfg.teacher:
        print(f"{Path(sys.argv[0]).name}: error: --faces needs --teacher", file=sys.stderr)
        return 2
    results = prediction.predict_files(args.files, cfg)
    from tf_cme import provenance
    note = results and results[0].get("model") and provenance.note(results[0]["model"])
    if note:                 # once per run: the demo caveat, or an unknown provenance
        print(f"{Path(sys.argv[0]).name}: NOTE: {note}", file=sys.stderr)
    if args.format == "json":
        text = json.dumps(results, indent=2) + "\n"
    else:
        text = prediction.to_csv(results)
    if args.out:
        write_bytes_atomic(args.out, text.encode())
    else:
        sys.stdout.write(text)
    bad = [r for r in results if r["status"] == "error"]
    for r in bad:
        print(f"{Path(sys.argv[0]).name}: error: {r['message']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    run_main(main)
