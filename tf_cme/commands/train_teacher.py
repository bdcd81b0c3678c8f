"""Fine-tune a FER+ teacher (protocol §4.2) into a run folder; re-running resumes.

Writes RUN/config.json, RUN/checkpoints/ (tf.train.Checkpoint every epoch, the last two kept;
state.json atomic), RUN/tensorboard/,
RUN/model.keras (the best epoch on val) and RUN/metrics.json.

Examples:
  scripts/train_teacher.py --records records/ferplus --out runs/senet50 \\
      --init runs/teachers/senet50-vggface2.keras
  scripts/train_teacher.py --records runs/demo/records/ferplus --out runs/demo/teacher \\
      --arch senet50-ferplus --width 0.125 --input-size 48 --batch-size 64 \\
      --set learning_rates=[0.05,0.005] --set epochs_per_rate=[6,2] --set backbone_lr_mult=1
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.commands import add_training_options, check_training_inputs
from tf_cme.training.teacher import TeacherTrainConfig
from tf_cme.utils import run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (created; resumed if it holds a "
                                                "checkpoint)")
    flags = config.add_field_args(
        p, TeacherTrainConfig, ["records", "arch", "width", "input_size", "init", "loss",
                                "batch_size"])
    p.add_argument("--epochs", type=int,
                   help="shortcut: this many epochs at the first learning rate only")
    p.add_argument("--max-epochs", type=int,
                   help="stop after this many epochs in this call (resume later)")
    p.add_argument("--allow-changed", action="store_true",
                   help="resume even though options other than epochs_per_rate, "
                        "sample_images, records/init paths differ from the run's")
    add_training_options(p, "epoch")
    config.add_config_args(p)
    args = p.parse_args()
    explicit = config.explicit(args, flags)
    cfg = config.resolve_or_exit(TeacherTrainConfig, args, explicit=explicit)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, learning_rates=cfg.learning_rates[:1],
                                  epochs_per_rate=[args.epochs])
    check_training_inputs(cfg.records, args.out, cfg.init, "init",   # before TensorFlow
                          args.profile_batch)

    from tf_cme.training.teacher import train
    from tf_cme.training.callbacks import cli_callbacks
    m = train(cfg, args.out, max_epochs=args.max_epochs,
              allow_changed=args.allow_changed, skip_corrupt=args.skip_corrupt,
              callbacks=cli_callbacks(args.csv_log, args.profile_batch, args.out))
    if m["skipped_corrupt_shards"]:
        print(f"skipped corrupt shards: {', '.join(m['skipped_corrupt_shards'])}")
    print(f"best epoch {m['best_epoch']}: val accuracy {m['best_val_accuracy']:.4f} "
          f"-> {Path(args.out) / 'model.keras'}")
    return 0


if __name__ == "__main__":
    run_main(main)
