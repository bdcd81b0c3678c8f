#!/usr/bin/env python3
"""Build a tf-cme record set (sharded TFRecords + manifest.json).

Runs ``tf-cme build-records`` from a checkout; the code is tf_cme/commands/build_records.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("build_records")
