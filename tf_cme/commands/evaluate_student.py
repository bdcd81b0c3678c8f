"""Evaluate a student on labelled EmoVoxCeleb records (protocol §7.1, the original's student_stats).

Student logits for every track (whole utterance up to 19.9 s, the front end's bucket
crop of at most 10 s), the teacher's label per track (argmax of the per-emotion max over
all frames), ROC curves and AUCs per emotion on train / heard / unheard, the mean AUC
over present and not ignored emotions. Writes OUT/metrics.json, OUT/config.json,
OUT/predictions.npz, OUT/figures/*.png, OUT/tensorboard/ (PR curves, embedding
projector) and OUT/gallery/ (for report.py).

  scripts/evaluate_student.py runs/demo/student --records runs/demo/labels --out runs/demo/eval
  scripts/evaluate_student.py runs/student --epoch 280 --records records/emovox-labelled

--epoch N evaluates the kept checkpoint of mini-epoch N (the original released mini-epoch
280; train_student.py keep_epochs) instead of RUN/model.keras (default out: RUN/eval-epoch-N).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.utils import run_main


def main() -> int:
    from tf_cme.evaluation import student_eval
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run", metavar="RUN",
                   help="student run folder (with model.keras), or a .keras file")
    p.add_argument("--records", required=True, metavar="LABELLED_DIR",
                   help="labelled emovox record set (label_faces.py output)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: RUN/eval, with --epoch N RUN/eval-epoch-N)")
    p.add_argument("--epoch", type=int, default=None, metavar="N",
                   help="evaluate the run's kept checkpoint of mini-epoch N (keep_epochs of "
                        "train_student.py; 280 by default) instead of its model.keras")
    flags = config.add_field_args(
        p, student_eval.StudentEvalConfig, ["batch_size", "ignore", "frames_records", "limit"],
        ignore={"metavar": "E1,E2"}, frames_records={"flag": "--frames",
                                                     "metavar": "RECORDS_DIR"})
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out shards that fail their checks (CRC, size, record count), "
                        "listed in metrics.json skipped_corrupt_shards, instead of failing")
    config.add_config_args(p)
    args = p.parse_args()
    cfg = config.resolve_or_exit(student_eval.StudentEvalConfig, args,
                                 explicit=config.explicit(args, flags))
    try:
        from tf_cme import emotions
        [emotions.canonical(e) for e in cfg.ignore]
    except ValueError as e:
        print(f"{Path(sys.argv[0]).name}: error: ignore: {e}", file=sys.stderr)
        return 2
    run = Path(args.run)
    model = run
    if args.epoch is not None:
        if run.suffix == ".keras":
            p.error("--epoch needs a run folder, not a .keras file")
        from tf_cme.training.student import run_model
        model = run_model(run, args.epoch)
    default = "eval" if args.epoch is None else f"eval-epoch-{args.epoch}"
    out = Path(args.out) if args.out else (run.parent if run.suffix == ".keras" else run) / default
    metrics = student_eval.evaluate(model, args.records, out, cfg,
                                    skip_corrupt=args.skip_corrupt)
    config.save({**config.to_dict(cfg), "run": str(run), "epoch": args.epoch,
                 "records": str(args.records)}, out / "config.json")
    if metrics.get("caveat"):
        print(f"NOTE: {metrics['caveat']}")
    print(student_eval.format_table(metrics))
    if metrics["skipped"]:
        print("skipped: " + ", ".join(f"{k}: {v}" for k, v in metrics["skipped"].items()))
    if metrics["skipped_corrupt_shards"]:
        print(f"skipped corrupt shards: {', '.join(metrics['skipped_corrupt_shards'])}")
    print(f"wrote {out}/metrics.json, figures/, tensorboard/ ({metrics['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
