"""Evaluate a FER+ teacher (protocol §4.3): accuracy on val and test against majority-vote
labels, per-class recall, confusion matrices; writes metrics.json and figures/ into the
run folder.

Examples:
  scripts/evaluate_teacher.py --run runs/demo/teacher --records runs/demo/records/ferplus
  scripts/evaluate_teacher.py --model senet50-ferplus.keras --records records/ferplus --out runs/eval-senet
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme.utils import CmeError, run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="teacher run folder: evaluates RUN/model.keras and writes "
                                 "into RUN")
    p.add_argument("--model", help="a teacher .keras file (instead of --run)")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--records", required=True, help="FER+ record set folder")
    p.add_argument("--splits", default="val,test",
                   help="comma-separated splits to evaluate (default: val,test)")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out shards that fail their checks (CRC, size, record count), "
                        "listed in metrics.json skipped_corrupt_shards, instead of failing")
    args = p.parse_args()
    if bool(args.run) == bool(args.model):
        p.error("give exactly one of --run and --model")
    if args.model and not args.out:
        p.error("--model needs --out")

    from tf_cme.evaluation.teacher_eval import evaluate
    from tf_cme.runs import Run
    model = Run.open(args.run).require_model() if args.run else Path(args.model)
    if not Path(model).is_file():
        raise CmeError(f"{model}: no such model file")
    m = evaluate(model, args.records, args.out or args.run,
                 splits=[s for s in args.splits.split(",") if s], batch_size=args.batch_size,
                 skip_corrupt=args.skip_corrupt)
    if m["skipped_corrupt_shards"]:
        print(f"skipped corrupt shards: {', '.join(m['skipped_corrupt_shards'])}")
    if m.get("caveat"):
        print(f"NOTE: {m['caveat']}")
    for s in args.splits.split(","):
        if s and m.get(f"{s}_accuracy") is not None:
            print(f"{s}: accuracy {m[f'{s}_accuracy']:.4f} ({m[f'{s}_examples']} images)")
    return 0


if __name__ == "__main__":
    run_main(main)
