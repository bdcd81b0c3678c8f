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


def _common(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    if with_out:
        p.add_argument("--out", required=True, metavar="DIR",
                       help="output folder of the record set (shards + manifest.json)")
    p.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="inputs per shard (default: ferplus 4096 rows, emovox/external 128 clips)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default 0 = every available core; 1 = no subprocess)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing record set made from other inputs or another config "
                        "(with --num-workers: only this worker's shards)")
    from tf_cme.data.records import add_part_args
    add_part_args(p)
    config_lib.add_config_args(p)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True,
                            metavar="{ferplus,emovox,external,verify,merge}")

    p = sub.add_parser("ferplus", help="FER2013 faces with FER+ labels (protocol §2.1)")
    p.add_argument("--fer-csv", metavar="FILE", help="fer2013.csv (emotion,pixels,Usage)")
    p.add_argument("--ferplus-csv", metavar="FILE",
                   help="fer2013new.csv (Usage,Image name,neutral,...,contempt,unknown,NF), "
                        "aligned row by row with --fer-csv")
    p.add_argument("--variant", choices=["cntk", "clean", "full"], default=None,
                   help="vote cleaning (default cntk: votes <= 1 zeroed, drop unknown/NF "
                        "maxima, 3+ ties and weak majorities)")
    _common(p)

    p = sub.add_parser("emovox", help="VoxCeleb tracks -> clip records (protocol §2.2)")
    p.add_argument("--root", metavar="DIR",
                   help="VoxCeleb-layout tree: DIR/wav/, DIR/frames/, DIR/splits.txt")
    p.add_argument("--wav-dir", metavar="DIR", help="wav root (default ROOT/wav)")
    p.add_argument("--frames-dir", metavar="DIR", help="face frames root (default ROOT/frames)")
    p.add_argument("--splits", metavar="FILE", help="split file (default ROOT/splits.txt)")
    p.add_argument("--logits-mat", metavar="FILE",
                   help="senet50-ferplus-logits.mat (MAT v5 or v7.3): import the published "
                        "per-frame teacher logits, making LABELLED records")
    p.add_argument("--videos", metavar="DIR",
                   help="a folder of raw videos (mp4/avi/mov) instead of a tree: audio and "
                        "frames extracted at 25 fps stride 6, faces detected and cropped 1.6x")
    p.add_argument("--video-set", type=int, choices=[1, 2, 3], default=None,
                   help="split code for --videos clips (1 train, 2 unheard, 3 heard; default 1)")
    p.add_argument("--detector", choices=["haar", "mtcnn"], default=None,
                   help="face detector for --videos (default haar)")
    p.add_argument("--face-size", type=int, default=None, metavar="PX",
                   help="side of the saved 1.6x face crops for --videos (default 224)")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="cut tracks at S seconds (default 0: keep whole tracks; evaluation, protocol "
                        "§3.2, refuses cut tracks; training clamps at 19.9 s itself, §3.1)")
    p.add_argument("--order-seed", type=int, default=None, metavar="N",
                   help="seed of the random order the tracks of each split are written in "
                        "across the shards, so that any run of records is a uniform sample "
                        "(default 0; protocol §6)")
    _common(p)

    p = sub.add_parser("external", help="RML / eNTERFACE / manifest.csv clips (protocol §2.3)")
    p.add_argument("--root", metavar="DIR", help="dataset folder")
    p.add_argument("--layout", choices=["auto", "manifest", "rml", "enterface"], default=None,
                   help="input convention (default auto: manifest.csv, else RML, else eNTERFACE)")
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest CSV path,label,speaker[,split] (default ROOT/manifest.csv)")
    p.add_argument("--dataset", metavar="NAME", help="dataset name stored in the records")
    _common(p)

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
    common = {"shard_size": args.shard_size, "workers": args.workers}
    if args.kind == "ferplus":
        from tf_cme.data import ferplus as mod
        cfg = config_lib.resolve_or_exit(mod.FerplusBuildConfig, args, explicit={
            "fer_csv": args.fer_csv, "ferplus_csv": args.ferplus_csv, "variant": args.variant,
            **common})
        if not cfg.fer_csv or not cfg.ferplus_csv:
            raise CmeError("ferplus needs --fer-csv and --ferplus-csv")
    elif args.kind == "emovox":
        from tf_cme.data import emovox as mod
        cfg = config_lib.resolve_or_exit(mod.EmovoxBuildConfig, args, explicit={
            "root": args.root, "wav_dir": args.wav_dir, "frames_dir": args.frames_dir,
            "splits": args.splits, "logits_mat": args.logits_mat, "videos": args.videos,
            "video_set": args.video_set, "detector": args.detector,
            "face_size": args.face_size, "max_seconds": args.max_seconds,
            "order_seed": args.order_seed, **common})
    else:
        from tf_cme.data import external as mod
        cfg = config_lib.resolve_or_exit(mod.ExternalBuildConfig, args, explicit={
            "root": args.root, "layout": args.layout, "manifest": args.manifest,
            "dataset": args.dataset, **common})
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
