#!/usr/bin/env python3
"""Evaluate a student on labelled EmoVoxCeleb records (protocol §7.1, the original's student_stats).

Runs ``tf-cme evaluate-student`` from a checkout; the code is tf_cme/commands/evaluate_student.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("evaluate_student")
