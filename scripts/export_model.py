#!/usr/bin/env python3
"""Export a student or teacher run as a SavedModel for TF Serving.

Runs ``tf-cme export-model`` from a checkout; the code is tf_cme/commands/export_model.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("export_model")
