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
    p.add_argument("--model", default=None,
                   help="student: exported SavedModel (a version folder, or a model folder "
                        "= its newest version), a .keras file, a run folder, or a .tflite file "
                        "from export_model.py --tflite (its fixed window; needs ai-edge-litert) "
                        "(default "
                        f"{prediction.DEFAULT_MODEL}, newest version)")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="files longer than this get a timeline of windows this long "
                        "(default 4.024 s = 400 frames, the training crop)")
    p.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="seconds between timeline windows (default 2.0)")
    p.add_argument("--silence-dbfs", type=float, default=None, metavar="DB",
                   help="files (and windows) whose level is under this are 'silent' "
                        "(default -60)")
    p.add_argument("--format", choices=("json", "csv"), default="json",
                   help="output format (default json)")
    p.add_argument("--out", metavar="FILE", help="write the output here instead of stdout")
    p.add_argument("--faces", action="store_true", default=None,
                   help="also score the faces of video files with --teacher")
    p.add_argument("--teacher", default=None,
                   help="teacher for --faces: exported SavedModel, .keras file or run folder")
    p.add_argument("--face-method", choices=("haar", "mtcnn"), default=None,
                   help="face detector for --faces (default haar)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows or face frames per model call (default 16)")
    p.add_argument("--embedding", action="store_true", default=None,
                   help="also output each file's embedding (the student's fc7 after its "
                        "ReLU; the mean over the non-silent windows of a long file); JSON "
                        "only")
    config.add_config_args(p)
    args = p.parse_args()
    cfg = config.resolve_or_exit(prediction.PredictConfig, args, explicit={
        "model": args.model, "window": args.window, "hop": args.hop,
        "silence_dbfs": args.silence_dbfs, "faces": args.faces, "teacher": args.teacher,
        "face_method": args.face_method, "batch_size": args.batch_size,
        "embedding": args.embedding})
    if cfg.window <= 0 or cfg.hop <= 0 or cfg.batch_size < 1:
        print(f"{Path(sys.argv[0]).name}: error: --window, --hop and --batch-size must be "
              f"positive", file=sys.stderr)
        return 2
    if cfg.faces and not cfg.teacher:
        print(f"{Path(sys.argv[0]).name}: error: --faces needs --teacher", file=sys.stderr)
        return 2
    results = prediction.predict_files(args.files, cfg)
    caveat = results and (results[0].get("model") or {}).get("caveat")
    if caveat:
        print(f"{Path(sys.argv[0]).name}: NOTE: {caveat}", file=sys.stderr)
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
