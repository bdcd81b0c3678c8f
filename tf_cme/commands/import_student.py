"""Import the released student emovoxceleb-student.mat (MatConvNet DagNN) into a .keras file.

Example:
  scripts/import_student.py emovoxceleb-student.mat runs/students/emovoxceleb-student.keras
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="MatConvNet DagNN .mat of the student (v5/v7 or v7.3)")
    p.add_argument("out", help="output .keras file (written atomically, with metadata)")
    p.add_argument("--crop", choices=["none", "bucket"], default="none",
                   help="front-end mode of the saved model (evaluation uses bucket)")
    p.add_argument("--no-dither", action="store_true",
                   help="build the front end without training-time dither")
    args = p.parse_args()
    if not args.out.endswith(".keras"):
        p.error("out must end with .keras")
    from tf_cme.models.student_import import import_student
    model = import_student(args.weights, args.out, dither=not args.no_dither, crop=args.crop)
    info = model.cme_metadata["imported_from"]
    print(f"imported {info['parameters']} parameters into emovoxceleb-student "
          f"(width {model.cme_metadata['options']['width']:g}"
          + (", BN folded" if info["bn_folded"] else "") + f") -> {args.out}")
    return 0


if __name__ == "__main__":
    from tf_cme.utils import run_main
    run_main(main)
