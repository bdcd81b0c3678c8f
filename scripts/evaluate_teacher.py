#!/usr/bin/env python3
"""Evaluate a FER+ teacher (protocol §4.3): accuracy on val and test against majority-vote

Runs ``tf-cme evaluate-teacher`` from a checkout; the code is tf_cme/commands/evaluate_teacher.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("evaluate_teacher")
