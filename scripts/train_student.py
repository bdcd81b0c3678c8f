#!/usr/bin/env python3
"""Distil the speech student from teacher-labelled EmoVoxCeleb records (protocol §6), or

Runs ``tf-cme train-student`` from a checkout; the code is tf_cme/commands/train_student.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("train_student")
