"""The original's published weights and data by name: list, fetch, import, forget.

The cache is $TF_CME_HOME (default ~/.cache/tf-cme). Nothing is downloaded except by
`fetch`. The sha256 recorded on the first fetch or import of a name is trusted (the
hashes are not published: trust on first use) and checked on every later use. Models
are converted to .keras (with metadata) once per source sha256; load them in Python
with tf_cme.models.pretrained(NAME).

  scripts/weights.py list
  scripts/weights.py fetch senet50-ferplus
  scripts/weights.py fetch emovoxceleb-student --url file:///data/emovoxceleb-student.mat
  scripts/weights.py import senet50-vggface2 --from ~/models/senet50_ft-dag.mat
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_status(name: str, st: dict) -> None:
    how = "" if st.get("downloaded", True) else " (already cached: verified, not downloaded)"
    print(f"{name}: cached {st['path']}{how} sha256 {st['sha256']}"
          + (f"; model {st['keras']}" if st.get("keras") else ""))


def main() -> int:
    from tf_cme.models.pretrained import PUBLISHED, fetch, forget, import_file, status
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the table: name, kind, cached?, recorded sha256, source URL")
    f = sub.add_parser("fetch", help="download NAME into the cache (and convert a model)")
    f.add_argument("name", choices=list(PUBLISHED))
    f.add_argument("--url", help="download from here instead of the table's URL "
                                 "(http, https or file://)")
    i = sub.add_parser("import", help="copy a file you already have into the cache as NAME "
                                      "(and convert a model)")
    i.add_argument("name", choices=list(PUBLISHED))
    i.add_argument("--from", dest="src", required=True, metavar="FILE",
                   help="the file (e.g. senet50_ft-dag.mat)")
    g = sub.add_parser("forget", help="remove NAME's cached file, conversions and recorded "
                                      "sha256")
    g.add_argument("name", choices=list(PUBLISHED))
    args = p.parse_args()
    if args.action == "import" and not os.path.isfile(os.path.expanduser(args.src)):
        p.error(f"--from {args.src}: no such file")

    if args.action == "list":
        rows = [("name", "kind", "cached", "sha256", "source")]
        for name, e in PUBLISHED.items():
            st = status(name)
            rows.append((name, e.kind, "yes" if st["cached"] else "no",
                         st["sha256"] or "-",
                         e.url or f"--from FILE ({e.filename}; see {e.page})"))
        widths = [max(len(r[k]) for r in rows) for k in range(4)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        from tf_cme.models.pretrained import home
        print(f"\ncache: {home()} (TF_CME_HOME); sha256 recorded on first fetch/import "
              f"(trust on first use)")
        return 0
    if args.action == "fetch":
        _print_status(args.name, fetch(args.name, args.url))
        return 0
    if args.action == "import":
        _print_status(args.name, import_file(args.name, os.path.expanduser(args.src)))
        return 0
    removed = forget(args.name)
    print(f"{args.name}: removed {len(removed)} file(s) and its recorded sha256"
          + "".join(f"\n  {r}" for r in removed))
    return 0


if __name__ == "__main__":
    from tf_cme.utils import run_main
    run_main(main)
