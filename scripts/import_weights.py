#!/usr/bin/env python3
"""Import teacher weights (MatConvNet DagNN .mat or pytorch-mcn .pth) into a .keras file.

Runs ``tf-cme import-weights`` from a checkout; the code is tf_cme/commands/import_weights.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("import_weights")
