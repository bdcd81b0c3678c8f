"""Send audio/video files or face images to a TF Serving server (REST or gRPC).

Audio and video files go to the student (default model emovoxceleb-student): with
--signature serving_default (the default) the file is decoded here (any format, any
rate, resampled to 16 kHz mono) and sent as a float32 waveform; with --signature
from_wav the WAV file's bytes are sent as they are (16-bit PCM) and decoded by the
server. Images go to a teacher (default model senet50-ferplus): from_jpeg (the
default) sends the encoded bytes, serving_default sends decoded uint8 RGB pixels.
Prints a JSON list with one object per file (label, probabilities); exit code 1 when
a request failed.

  scripts/serve_client.py --protocol rest --server localhost:8501 clip.wav
  scripts/serve_client.py --protocol grpc --server localhost:8500 --signature from_wav clip.wav
  scripts/serve_client.py --protocol grpc --model resnet50-ferplus face.jpg
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme.utils import run_main


def main() -> int:
    from tf_cme.serving import client as cl
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audio/video files (student) or face images (teacher); one kind "
                        "per call")
    p.add_argument("--protocol", choices=("rest", "grpc"), default="rest",
                   help="REST (port 8501) or gRPC (port 8500) (default rest)")
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="server address (default localhost:8501 for REST, localhost:8500 "
                        "for gRPC)")
    p.add_argument("--model", default=None,
                   help="model name in the server's models.config (default "
                        "emovoxceleb-student for audio, senet50-ferplus for images)")
    p.add_argument("--version", type=int, default=None,
                   help="model version (default: the newest the server has)")
    p.add_argument("--signature", default=None,
                   help="signature: student serving_default | from_wav | calibrated_<dataset>, "
                        "teacher from_jpeg | serving_default")
    p.add_argument("--rest-format", choices=("instances", "inputs"), default="instances",
                   help="REST request format: row (instances) or columnar (inputs)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = p.parse_args()
    kinds = {cl.kind_of(f) for f in args.files}
    if len(kinds) != 1:
        print(f"{Path(sys.argv[0]).name}: error: give either audio/video files or images, "
              f"not both", file=sys.stderr)
        return 2
    kind = kinds.pop()
    model = args.model or ("emovoxceleb-student" if kind == "student" else "senet50-ferplus")
    client = cl.make_client(args.protocol, model, args.server, version=args.version,
                            signature=args.signature, timeout=args.timeout)
    results = cl.score_files(args.files, client, kind, args.signature, args.rest_format)
    for r in results:
        r["model"] = model
    print(json.dumps(results, indent=2))
    from ..provenance import note_caveat
    for caveat in dict.fromkeys(note_caveat(r.get("provenance")) for r in results):
        if caveat:                 # once: what the served model says about itself
            print(f"{Path(sys.argv[0]).name}: NOTE: {caveat}", file=sys.stderr)
    bad = [r for r in results if r["status"] == "error"]
    for r in bad:
        print(f"{Path(sys.argv[0]).name}: error: {r['message']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    run_main(main)
