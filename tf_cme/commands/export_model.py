"""Export a student or teacher run as a SavedModel for TF Serving.

Reads RUN/model.keras (its metadata says student or teacher) and writes
DIR/<registry-name>/<version>/ (the next integer version), DIR/models.config (every
model under DIR, for tensorflow_model_server --model_config_file) and
DIR/batching_parameters.txt. Signatures: student serving_default (float32 waveform
[batch, samples] at 16 kHz), from_wav (encoded WAV bytes) and, with a calibration
file (given, or RUN/../external/calibration.json), calibrated_<dataset>; teacher
serving_default (uint8 RGB [batch, h, w, 3]) and from_jpeg (encoded images).
See docs/serving.md.

  scripts/export_model.py runs/demo/student --out runs/demo/export
  scripts/export_model.py runs/demo/teacher --out runs/demo/export
  scripts/export_model.py runs/demo/student --tflite --tflite-window 4.024 --tflite-window 2

--epoch N exports a student's kept checkpoint of mini-epoch N (the original released
mini-epoch 280; train_student.py keep_epochs) instead of RUN/model.keras.

--tflite writes DIR/tflite/ instead of a SavedModel: float32 and dynamic-range-quantised
.tflite files (student: front end inside, one fixed window per --tflite-window; teacher: at
its input size) that LiteRT (pip install 'tf-cme[tflite]') runs without TensorFlow, each
carrying the export metadata (provenance, demo caveat, class order, sample rate) in its
flatbuffer metadata table, and DIR/tflite/tflite.json with each file's size and its logit
difference from the Keras model.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.utils import run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run", metavar="RUN", help="student or teacher run folder (with model.keras)")
    p.add_argument("--out", metavar="DIR",
                   help="export folder in TF Serving's layout (default: RUN/export)")
    from tf_cme.serving.config import ExportConfig
    flags = config.add_field_args(p, ExportConfig, ["calibration", "serving_base"],
                                  calibration={"metavar": "FILE"},
                                  serving_base={"metavar": "PATH"})
    p.add_argument("--epoch", type=int, default=None, metavar="N",
                   help="export the student run's kept checkpoint of mini-epoch N "
                        "(keep_epochs of train_student.py; 280 by default) instead of its "
                        "model.keras")
    p.add_argument("--tflite", action="store_true",
                   help="write .tflite files (float32 and dynamic-range-quantised) to "
                        "DIR/tflite/ instead of a SavedModel")
    p.add_argument("--tflite-window", metavar="S", type=float, action="append", default=None,
                   help="student window in seconds for --tflite, repeatable (default 4.024, "
                        "the training crop; at least 1.015)")
    config.add_config_args(p)
    args = p.parse_args()
    if args.tflite_window and not args.tflite:
        p.error("--tflite-window needs --tflite")
    from tf_cme.runs import Run
    from tf_cme.utils import check_output_dir, require_path
    run = Run.open(args.run)           # before TensorFlow's start-up
    if args.epoch is None:
        run.require_model()
    if args.out:
        check_output_dir(args.out)
    if args.calibration:
        require_path(args.calibration, "--calibration")
    if args.tflite:
        from tf_cme.serving import tflite
        out = Path(args.out or run.export) / "tflite"
        from tf_cme.training.student import run_model
        res = tflite.export_tflite(run_model(run.path, args.epoch), out,
                                   windows=args.tflite_window or (tflite.DEFAULT_WINDOW_S,))
        for f in res["files"]:
            print(f"wrote {out / f['file']} ({f['bytes'] / 1e6:.2f} MB, {f['quantization']}; "
                  f"max |logit - Keras| {f['max_abs_logit_diff']:.2e}; select-TF ops: "
                  f"{', '.join(f['select_tf_ops']) or 'none'})")
        print(f"wrote {out / 'tflite.json'}")
        return 0
    from tf_cme.serving import export
    cfg = config.resolve_or_exit(ExportConfig, args, explicit=config.explicit(args, flags))
    res = export.export_run(args.run, args.out, calibration=cfg.calibration,
                            serving_base=cfg.serving_base, epoch=args.epoch)
    out = res.path.parent.parent
    print(f"exported {res.kind} {res.name} version {res.version} to {res.path}")
    print(f"signatures: {', '.join(res.signatures)}")
    print(f"wrote {out / export.CONFIG_FILE} and {out / export.BATCHING_FILE}")
    return 0


if __name__ == "__main__":
    run_main(main)
