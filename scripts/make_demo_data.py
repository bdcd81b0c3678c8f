#!/usr/bin/env python3
"""Generate the synthetic demo corpus in the on-disk formats of FER+, VoxCeleb/EmoVoxCeleb,

Runs ``tf-cme make-demo-data`` from a checkout; the code is tf_cme/commands/make_demo_data.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("make_demo_data")
