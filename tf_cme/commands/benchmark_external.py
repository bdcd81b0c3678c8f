"""External speech-emotion benchmark of a frozen student (protocol §7.3, emo_benchmarks.m).

The student's 8 logits per clip (whole clip, bucket crop) are the features of a
multinomial logistic regression without regularisation, cross-validated over 10 folds
of a seeded permutation (fold boundaries round(linspace(0, N, 11)), MATLAB rounding);
mean +- std accuracy over folds, the summed row-normalised confusion matrix, and the
random baseline (Gaussian features of the same width, averaged over draws). With
--teacher and face frames in the records, the teacher-visual variant too. The logistic
layer fitted on all clips is saved as OUT/calibration.json for export_model.py.

  scripts/benchmark_external.py --model runs/demo/student --records runs/demo/records/external \
      --out runs/demo/external
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
    from tf_cme.evaluation import external
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, metavar="RUN",
                   help="student run folder (with model.keras), or a .keras file")
    p.add_argument("--records", required=True, metavar="EXTERNAL_DIR",
                   help="external record set (build_records.py external output)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: RUN/external-<records folder name>)")
    p.add_argument("--teacher", metavar="TEACHER_RUN", default=None,
                   help="teacher run folder: also benchmark the teacher on the records' face "
                        "frames (max-pooled per clip), when the records have frames")
    flags = config.add_field_args(p, external.ExternalConfig,
                                  ["folds", "seed", "random_draws"])
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out shards that fail their checks (CRC, size, record count), "
                        "listed in metrics.json skipped_corrupt_shards, instead of failing")
    config.add_config_args(p)
    args = p.parse_args()
    cfg = config.resolve_or_exit(external.ExternalConfig, args,
                                 explicit=config.explicit(args, flags))
    if cfg.folds < 2 or cfg.random_draws < 1:
        print(f"{Path(sys.argv[0]).name}: error: folds must be >= 2 and random_draws >= 1",
              file=sys.stderr)
        return 2
    from tf_cme.data import records
    from tf_cme.utils import check_output_dir, require_path
    run = require_path(args.model, "--model", "any")      # before TensorFlow's start-up
    records.read_manifest(args.records, expect_schema="external")
    if args.teacher:
        require_path(args.teacher, "--teacher", "folder")
    base = run.parent if run.suffix == ".keras" else run
    out = Path(args.out) if args.out else base / f"external-{Path(args.records).name}"
    check_output_dir(out)
    metrics = external.benchmark(run, args.records, out, cfg, teacher_run=args.teacher,
                                 skip_corrupt=args.skip_corrupt)
    config.save({**config.to_dict(cfg), "model": str(run), "records": str(args.records),
                 "teacher": args.teacher}, out / "config.json")
    print(external.format_summary(metrics))
    print(f"wrote {out}/metrics.json, calibration.json, figures/ ({metrics['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
