#!/usr/bin/env python3
"""Run the whole tf-cme pipeline on the generated demo corpus (what `make demo` does).

Runs ``tf-cme demo`` from a checkout; the code is tf_cme/commands/demo.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("demo")
