#!/usr/bin/env python3
"""External speech-emotion benchmark of a frozen student (protocol §7.3, emo_benchmarks.m).

Runs ``tf-cme benchmark-external`` from a checkout; the code is tf_cme/commands/benchmark_external.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("benchmark_external")
