#!/usr/bin/env python3
"""Import the released student emovoxceleb-student.mat (MatConvNet DagNN) into a .keras file.

Runs ``tf-cme import-student`` from a checkout; the code is tf_cme/commands/import_student.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("import_student")
