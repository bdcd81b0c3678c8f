#!/usr/bin/env python3
"""Label the face frames of emovox records with a teacher (protocol §4.4): writes a labelled

Runs ``tf-cme label-faces`` from a checkout; the code is tf_cme/commands/label_faces.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("label_faces")
