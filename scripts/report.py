#!/usr/bin/env python3
"""Write the report of an experiment: one Markdown and one self-contained HTML page.

Runs ``tf-cme report`` from a checkout; the code is tf_cme/commands/report.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("report")
