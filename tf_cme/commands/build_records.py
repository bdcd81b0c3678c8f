"""Build a tf-cme record set (sharded TFRecords + manifest.json).

  build_records.py ferplus   --fer-csv fer2013.csv --ferplus-csv fer2013new.csv [--variant cntk|clean|full] --out DIR
  build_records.py emovox    --root VOXCELEB_TREE --out DIR
  build_records.py emovox    --root VOXCELEB_TREE --logits-mat senet50-ferplus-logits.mat --out DIR
  build_records.py emovox    --videos VIDEO_DIR [--detector haar|mtcnn] --out DIR
  build_records.py external  --root DATASET_DIR [--layout auto|manifest|rml|enterface] --out DIR
  build_records.py verify    DIR [--skip-corrupt]
  build_records.py KIND ... --out DIR --num-workers N --worker-index I   (one host's share)
  build_records.py merge     DIR

Split over hosts: every host runs the same command into the same --out (a shared file
system) with its own --worker-index (or TF_CONFIG: every task it lists counts, chief first);
worker I builds the shards whose position in the one-host shard list is I modulo N and
writes DIR/manifest.part-I-of-N.json. The last worker to finish writes manifest.json (the
one-host build's); `merge DIR` does it by hand, checking that every part is there, complete
and from the same inputs and options. Labelled sets (label_faces.py) merge the same way.

Shards are written to a temporary name and renamed when complete; re-running the
same command resumes an interrupted build (complete shards whose sha256 matches the one
recorded when they were written are kept; a damaged one is rebuilt and reported as
rebuilt_corrupt). verify reads every record (CRCs, counts); --skip-corrupt lists the bad
shards instead of failing. The
resolved config is saved in DIR/manifest.json ("config") and DIR/config.json.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config as config_lib
from tf_cme.utils import CmeError, run_main


def _common(p: argparse.ArgumentParser, cls, fields: list[str], **overrides) -> None:
    """The kind's config fields as flags (defaults and help from ``cls``), then the options
    every build shares."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder of the record set (shards + manifest.json)")
    flags = config_lib.add_field_args(p, cls, fields + ["shard_size", "workers"],
                                      shard_size={"metavar": "N"}, workers={"metavar": "N"},
                                      **overrides)
    p.set_defaults(_cls=cls, _flags=flags)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing record set made from other inputs or another config "
                        "(with --num-workers: only this worker's shards)")
    from tf_cme.data.records import add_part_args
    add_part_args(p)
    config_lib.add_config_args(p)


def parser() -> argparse.ArgumentParser:
    from tf_cme.data.emovox import EmovoxBuildConfig
    from tf_cme.data.external import ExternalBuildConfig
    from tf_cme.data.ferplus import FerplusBuildConfig
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True,
                            metavar="{ferplus,emovox,external,verify,merge}")

    p = sub.add_parser("ferplus", help="FER2013 faces with FER+ labels (protocol §2.1)")
    _common(p, FerplusBuildConfig, ["fer_csv", "ferplus_csv", "variant"],
            fer_csv={"metavar": "FILE"}, ferplus_csv={"metavar": "FILE"})

    p = sub.add_parser("emovox", help="VoxCeleb tracks -> clip records (protocol §2.2)")
    _common(p, EmovoxBuildConfig,
            ["root", "wav_dir", "frames_dir", "splits", "logits_mat", "videos", "video_set",
             "detector", "face_size", "max_seconds", "order_seed"],
            root={"metavar": "DIR"}, wav_dir={"metavar": "DIR"}, frames_dir={"metavar": "DIR"},
            splits={"metavar": "FILE"}, logits_mat={"metavar": "FILE"},
            videos={"metavar": "DIR"}, face_size={"metavar": "PX"},
            max_seconds={"metavar": "S"}, order_seed={"metavar": "N"})

    p = sub.add_parser("external", help="RML / eNTERFACE / manifest.csv clips (protocol §2.3)")
    _common(p, ExternalBuildConfig, ["root", "layout", "manifest", "dataset"],
            root={"metavar": "DIR"}, manifest={"metavar": "FILE"}, dataset={"metavar": "NAME"})

    p = sub.add_parser("verify", help="read every shard of a record set (checksums, counts)")
    p.add_argument("dir", metavar="DIR", help="record set folder")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="count corrupt or truncated shards instead of failing on the first")

    p = sub.add_parser("merge", help="join the parts of a build split with --num-workers into "
                                     "manifest.json (record sets and labelled sets)")
    p.add_argument("dir", metavar="DIR", help="record set folder holding manifest.part-*.json")
    return ap


def merge(out) -> dict:
    """``manifest.json`` from the part manifests; a labelled set's labelling summary too."""
    from tf_cme.data import records
    if any(Path(out).glob("labelling.part-*.json")):
        from tf_cme.labelling import merge_labelled
        merge_labelled(out)
        return records.read_manifest(out)
    return records.merge(out)


def _summary(out, m, rebuilt=()) -> str:
    parts = [f"{s}: {v['examples']}" for s, v in m["splits"].items()]
    skipped = ", ".join(f"{k} {v}" for k, v in m["skipped"].items()) or "none"
    return (f"{out}: {m['schema']} v{m['schema_version']} records; "
            f"{'; '.join(parts) or 'no examples'}; skipped: {skipped}"
            + (f"; rebuilt_corrupt {len(rebuilt)}: {', '.join(rebuilt)}" if rebuilt else ""))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.kind == "verify":
        from tf_cme.data import records
        records.read_manifest(args.dir)     # before TensorFlow's start-up
        r = records.verify(args.dir, skip_corrupt=args.skip_corrupt)
        print(f"{args.dir}: {r['shards']} shard(s), {r['examples']} example(s) OK; "
              f"{len(r['corrupt'])} corrupt shard(s) skipped"
              + ("".join(f"\n  corrupt: {p}" for p in r["corrupt"])))
        print("skipped_corrupt_shards: " + json.dumps(r["skipped_corrupt_shards"]))
        return 0
    if args.kind == "merge":
        m = merge(args.dir)
        print(_summary(args.dir, m) + f"; merged {len(m['shards'])} shard(s) -> "
              f"{Path(args.dir) / 'manifest.json'}")
        return 0
    from tf_cme.data import records
    part = records.part_from_args(args.num_workers, args.worker_index)
    import importlib
    mod = importlib.import_module(f"tf_cme.data.{args.kind}")
    cfg = config_lib.resolve_or_exit(args._cls, args,
                                     explicit=config_lib.explicit(args, args._flags))
    if args.kind == "ferplus" and (not cfg.fer_csv or not cfg.ferplus_csv):
        raise CmeError("ferplus needs --fer-csv and --ferplus-csv")
    m = mod.build(args.out, cfg, overwrite=args.overwrite, part=part)
    config_lib.save(cfg, Path(args.out) / "config.json")
    rebuilt = records.last_build(args.out, part)["rebuilt_corrupt"]
    if part is None:
        print(_summary(args.out, m, rebuilt))
        return 0
    print(f"{args.out}: worker {part.index} of {part.count}: {len(m['shards'])} of "
          f"{len(m['tasks'])} shard(s) -> {part.manifest}"
          + (f"; rebuilt_corrupt {len(rebuilt)}: {', '.join(rebuilt)}" if rebuilt else ""))
    if records.parts_complete(args.out, part):      # the last worker to finish merges
        m = records.merge(args.out)
        print(_summary(args.out, m) + f"; all {part.count} parts merged -> "
              f"{Path(args.out) / 'manifest.json'}")
    else:
        print(f"the other parts are not all there yet: the last worker merges, or run "
              f"`build_records.py merge {args.out}`")
    return 0


if __name__ == "__main__":
    run_main(main)
