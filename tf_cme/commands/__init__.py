"""The command-line stages: one module per command, each with a ``main()``.

``scripts/NAME.py`` (in a checkout) and the installed ``tf-cme NAME`` command run the same
``main``. Each module parses and checks its arguments before importing TensorFlow.
"""
from __future__ import annotations

import importlib

#: command module names (``tf-cme`` spells them with hyphens)
COMMANDS = ('benchmark_external', 'build_records', 'demo', 'evaluate_student', 'evaluate_teacher', 'export_model', 'import_student', 'import_weights', 'label_faces', 'make_demo_data', 'predict', 'report', 'run_tensorboard', 'serve_client', 'train_student', 'train_teacher', 'weights')


def run(name: str) -> None:
    """Run command ``name``'s ``main()`` the way every script does (tf_cme.utils.run_main)."""
    from ..utils import run_main
    if name not in COMMANDS:
        raise SystemExit(f"tf-cme: unknown command {name!r}")
    module = importlib.import_module(f"{__name__}.{name}")
    if name == "run_tensorboard":
        module.main()   # TensorBoard's own main exits
        return
    run_main(module.main)


# --- what both training commands share (no TensorFlow) ---------------------------------
def add_training_options(p, unit: str) -> None:
    """``--skip-corrupt``, ``--csv-log`` and ``--profile-batch`` of train_student.py and
    train_teacher.py; ``unit`` is what one CSV row is ("epoch", "mini-epoch")."""
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out shards that fail their checks (CRC, size, record count), "
                        "listed in metrics.json skipped_corrupt_shards, instead of failing")
    p.add_argument("--csv-log", metavar="FILE",
                   help=f"append one CSV row per {unit} (keras.callbacks.CSVLogger: epoch, "
                        "the logged metrics, learning_rate, val_*); a resumed run continues it")
    p.add_argument("--profile-batch", metavar="N[,M]",
                   help="profile training batches N..M of this call (counted from 1) with the "
                        "TensorFlow profiler into RUN/tensorboard/train (TensorBoard's "
                        "profile tab)")


def check_training_inputs(records, out, model_file, option: str, profile_batch) -> None:
    """A training command's checks before TensorFlow's start-up: ``--profile-batch`` (its
    syntax, first), the record set, the model file named by config key ``option`` (when
    set), the run folder."""
    from ..data import records as records_lib
    from ..utils import check_output_dir, parse_profile_batch, require_path
    parse_profile_batch(profile_batch)
    records_lib.read_manifest(records)
    if model_file:
        require_path(model_file, option)
    check_output_dir(out)
