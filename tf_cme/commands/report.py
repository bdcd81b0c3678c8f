"""Write the report of an experiment: one Markdown and one self-contained HTML page.

RUN is an experiment folder laid out as `make demo` writes it (subfolders teacher/,
labels/, student/, eval/, external/, and timings.json), or single run folders (teacher
run, student run, evaluate_student.py and benchmark_external.py outputs), recognised by
their contents. Writes OUT/report.md (figures in OUT/figures/, gallery in OUT/gallery/),
OUT/report.html (figures and audio inlined), OUT/summary.json, and prints the summary.

  scripts/report.py runs/demo --out runs/demo/report --summary runs/demo/summary.json
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.utils import run_main


def main() -> int:
    from tf_cme.evaluation import report
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="experiment folder (teacher/, labels/, student/, eval/, external/) "
                        "or run folders")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder for report.md, report.html, summary.json")
    p.add_argument("--summary", metavar="FILE", default=None,
                   help="also write the summary JSON here (e.g. runs/demo/summary.json)")
    flags = config.add_field_args(p, report.ReportConfig, ["title", "gallery_size"])
    config.add_config_args(p)
    args = p.parse_args()
    cfg = config.resolve_or_exit(report.ReportConfig, args,
                                 explicit=config.explicit(args, flags))
    out = Path(args.out)
    summary = report.write_report(args.runs, out, args.summary, cfg)
    config.save({**config.to_dict(cfg), "runs": [str(r) for r in args.runs]},
                out / "config.json")
    print(report.format_summary_table(summary))
    print(f"wrote {out}/report.html, {out}/report.md, {out}/summary.json"
          + (f", {args.summary}" if args.summary else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
