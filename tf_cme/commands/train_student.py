"""Distil the speech student from teacher-labelled EmoVoxCeleb records (protocol §6), or
with --teacher from an online frozen teacher run on the records' face frames.

Defaults follow the original schedule: batch 64, 300 mini-epochs of 5 % of the
training tracks, learning rate log-spaced 1e-4 .. 1e-5, SGD momentum 0.9, weight decay
5e-4, hot-cross-ent at T = 2, 4.024 s crops; validation on a seeded random 20 % of the
unheard tracks with fresh crops every mini-epoch, for monitoring only; the reported model
is the last one (RUN/model.keras); the checkpoints of the last two mini-epochs and of
--keep-epochs (280, the original's released student) are kept, for
evaluate_student.py / export_model.py --epoch N.
Re-running on the same run folder resumes at the mini-epoch after the last checkpoint,
only with the same options and records (allowed to change: mini_epochs, images,
check_records, keep_epochs; anything else needs a new --out or --allow-changed; RUN/resumes.jsonl).

Distribution comes from the environment: several GPUs -> MirroredStrategy; TF_CONFIG
with several workers -> MultiWorkerMirroredStrategy (run this script on every worker
with the same --out on a shared file system); TF_CME_CPU_REPLICAS=N -> N CPU replicas.

Examples:
  scripts/train_student.py --records runs/demo/labels --out runs/demo/student
  scripts/train_student.py --records records/emovox-labelled --out runs/student \\
      --set mini_epochs=50 --set crop_samples=32240
  scripts/train_student.py --records runs/demo/records/emovox \\
      --teacher runs/demo/teacher/model.keras --out runs/student-online
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.commands import add_training_options, check_training_inputs
from tf_cme.training.student import StudentTrainConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (created; resumed if it exists)")
    flags = config.add_field_args(
        p, StudentTrainConfig, ["records", "width", "mini_epochs", "batch_size", "crop_samples",
                                "epoch_fraction", "loss", "seed", "mixed_precision", "teacher",
                                "keep_epochs"],
        teacher={"metavar": "PATH.keras"}, keep_epochs={"metavar": "E1,E2"})
    d = StudentTrainConfig()
    p.add_argument("--lr", type=float, nargs=2, metavar=("START", "END"),
                   help=f"learning rates of the first and last mini-epochs, log-spaced between "
                        f"(config lr_start, lr_end; default: {d.lr_start:g} {d.lr_end:g})")
    p.add_argument("--allow-changed", action="store_true",
                   help="resume a run folder although its resolved config, records (manifest) "
                        "or teacher file differ from the run's; without it only "
                        "mini_epochs, images, check_records and keep_epochs may change on resume")
    add_training_options(p, "mini-epoch")
    config.add_config_args(p)
    args = p.parse_args()
    explicit = {**config.explicit(args, flags),
                "lr_start": args.lr[0] if args.lr else None,
                "lr_end": args.lr[1] if args.lr else None}
    cfg = config.resolve_or_exit(StudentTrainConfig, args, explicit=explicit)
    check_training_inputs(cfg.records, args.out, cfg.teacher, "teacher",   # before TensorFlow
                          args.profile_batch)

    from tf_cme.training.student import train
    from tf_cme.training.callbacks import cli_callbacks
    metrics = train(cfg, args.out, allow_changed=args.allow_changed,
                    skip_corrupt=args.skip_corrupt,
                    callbacks=cli_callbacks(args.csv_log, args.profile_batch, args.out))
    if metrics.get("skipped_corrupt_shards"):
        print(f"skipped corrupt shards: {', '.join(metrics['skipped_corrupt_shards'])}")
    st = metrics.get("student", {})
    if st:
        tr, va = st.get("train", {}), st.get("val", {})
        print(f"mini-epoch {st.get('mini_epoch')}: train loss {tr.get('loss', float('nan')):.4f} "
              f"top-1 error {tr.get('top1_error', float('nan')):.3f}"
              + (f"; val loss {va['loss']:.4f} top-1 error {va['top1_error']:.3f}" if va else "")
              + f" -> {Path(args.out) / 'model.keras'}")
    return 0


if __name__ == "__main__":
    from tf_cme.utils import run_main
    run_main(main)
