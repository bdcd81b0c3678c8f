#!/usr/bin/env python3
"""Run TensorBoard (``python -m tensorboard.main`` with the same arguments).

Runs ``tf-cme run-tensorboard`` from a checkout; the code is tf_cme/commands/run_tensorboard.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("run_tensorboard")
