#!/usr/bin/env python3
"""Fine-tune a FER+ teacher (protocol §4.2) into a run folder; re-running resumes.

Runs ``tf-cme train-teacher`` from a checkout; the code is tf_cme/commands/train_teacher.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("train_teacher")
