#!/usr/bin/env python3
"""Send audio/video files or face images to a TF Serving server (REST or gRPC).

Runs ``tf-cme serve-client`` from a checkout; the code is tf_cme/commands/serve_client.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tf_cme.commands import run

if __name__ == "__main__":
    run("serve_client")
