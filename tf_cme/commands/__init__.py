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
