#!/usr/bin/env python3
"""Emotion scores for audio and video files from the speech student (and, with --faces,

Runs ``tf-cme predict`` from a checkout; the code is tf_cme/commands/predict.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("predict")
