"""Run the whole tf-cme pipeline on the generated demo corpus (what `make demo` does).

Stages: corpus, records, teacher, labels, student, eval, external, export, report.
Complete stages are skipped; a re-run stage invalidates the stages after it.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme.demo import stages as demo
from tf_cme.utils import run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    p.add_argument("--only", action="append", metavar="STAGE",
                   help="run only this stage (repeatable); later stages are invalidated")
    p.add_argument("--force", action="store_true",
                   help="re-run the selected stages even if complete")
    p.add_argument("--list", action="store_true", help="list the stages and exit")
    args = p.parse_args()
    if args.list:
        for s in demo.stages():
            print(f"{s.name:10s} {s.description}")
        return 0
    demo.run(args.out, only=args.only, force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
