#!/usr/bin/env python3
"""The original's published weights and data by name: list, fetch, import, forget.

Runs ``tf-cme weights`` from a checkout; the code is tf_cme/commands/weights.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("weights")
