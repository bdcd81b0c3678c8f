#!/usr/bin/env python3
"""Benchmarks: every data-moving stage side by side with a peer (A B A B repeats,
medians, per-core rates); prints a table and writes bench.json.

  bench.py [--only GROUP|NAME] [--out FILE] [--repeats N] [--quick] [--list]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.benchmarks import harness
from tf_cme.utils import run_main

if __name__ == "__main__":
    run_main(harness.main)
