"""Label the face frames of emovox records with a teacher (protocol §4.4): writes a labelled
record set with per-frame logits in FER+ order. Resumable: per-shard logits are cached
(OUT.logits-cache/ by default), keyed by everything that determines them (teacher and
input shard checksums, crop fraction, input size, colour, scaling, class map,
preprocessing version); a re-run reuses only entries with the same key.

Examples:
  scripts/label_faces.py --records runs/demo/records/emovox --teacher runs/demo/teacher/model.keras \\
      --out runs/demo/labels --stats runs/demo/labels/teacher-stats.png
  scripts/label_faces.py --records records/emovox --teacher other.h5 \\
      --teacher-classes angry,disgust,fear,happy,sad,surprise,neutral --input-size 48 \\
      --colour grey --scaling unit --out records/emovox-other
  scripts/label_faces.py --stats-only runs/demo/labels --stats stats.png

Split over hosts: run the same command on every host into the same --out with
--num-workers N --worker-index I (or TF_CONFIG); worker I labels the source shards whose
position is I modulo N and writes OUT/manifest.part-I-of-N.json and
labelling.part-I-of-N.json; the last one to finish writes manifest.json, labelling.json and
metrics.json, or run `label_faces.py --merge --out OUT [--stats PNG]` (the same check as
`build_records.py merge OUT`).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme.utils import run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", help="emovox record set with face frames")
    p.add_argument("--teacher", help="teacher model: a tf-cme .keras, or any Keras face model "
                                     "(.keras/.h5) with --teacher-classes")
    p.add_argument("--out", help="output labelled record set folder")
    p.add_argument("--teacher-classes",
                   help="comma-separated output class names of a non-tf-cme teacher, in its "
                        "output order (mapped into FER+ order by name; missing FER+ classes "
                        "get a logit of -30)")
    p.add_argument("--input-size", type=int,
                   help="teacher input size in pixels (default: from the model)")
    p.add_argument("--colour", choices=["grey", "rgb"],
                   help="colour mode of a non-tf-cme teacher (default grey)")
    p.add_argument("--scaling", choices=["raw", "unit", "symmetric", "uint8"],
                   help="pixel scaling of a non-tf-cme teacher: raw 0..255 float, unit 0..1, "
                        "symmetric -1..1, uint8 unchanged (default unit)")
    p.add_argument("--batch-size", type=int, default=128, help="frames per batch (default 128)")
    p.add_argument("--crop-fraction", type=float, default=1 / 1.6,
                   help="centre crop of each frame (default 1/1.6: undoes the 1.6x box; use 1 "
                        "for tight face crops)")
    p.add_argument("--cache", help="logits cache folder (default OUT.logits-cache); entries are keyed by the "
                        "teacher, the input shard and every option above, so a changed one "
                        "is recomputed")
    p.add_argument("--stats", help="also write the per-frame dominant-emotion histogram "
                                   "(log y-axis, protocol §7.2) to this PNG")
    p.add_argument("--stats-only", metavar="LABELLED",
                   help="only draw --stats for an existing labelled record set")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out shards that fail their checks (CRC, size, record count), "
                        "listed in labelling.json / metrics.json skipped_corrupt_shards and "
                        "in the labelled manifest, instead of failing")
    p.add_argument("--merge", action="store_true",
                   help="only join the parts of a split labelling in --out (every part there, "
                        "complete, from the same records, teacher and options)")
    from tf_cme.data.records import add_part_args
    add_part_args(p)
    args = p.parse_args()

    if args.stats_only:
        if not args.stats:
            p.error("--stats-only needs --stats PNG")
        from tf_cme.labelling import stats_from_records
        counts = stats_from_records(args.stats_only, args.stats, skip_corrupt=args.skip_corrupt)
        print(f"dominant emotions: {counts} -> {args.stats}")
        return 0
    if args.merge:
        if not args.out:
            p.error("--merge needs --out (the labelled set holding manifest.part-*.json)")
        from tf_cme.labelling import merge_labelled
        s = merge_labelled(args.out, args.stats)
        print(f"merged: labelled {s['frames']} frames of {s['clips']} clips; undecodable "
              f"frames skipped: {s['undecodable_frames']} -> {args.out}")
        return 0
    if not (args.records and args.teacher and args.out):
        p.error("--records, --teacher and --out are required")
    from tf_cme.data import records
    part = records.part_from_args(args.num_workers, args.worker_index)
    from tf_cme.utils import check_output_dir, require_path
    records.read_manifest(args.records)
    require_path(args.teacher, "--teacher", "any")
    check_output_dir(args.out)

    from tf_cme.labelling import label_records
    s = label_records(args.records, args.out, args.teacher, batch_size=args.batch_size,
                      cache_dir=args.cache, classes=args.teacher_classes,
                      input_size=args.input_size, colour=args.colour, scaling=args.scaling,
                      crop_fraction=args.crop_fraction, stats_png=args.stats,
                      overwrite=args.overwrite, skip_corrupt=args.skip_corrupt, part=part)
    fps = (f", {s['frames_per_second']} frames/s" if s["frames_per_second"] else
           f" (all {s['shards_from_cache']} shards from the cache)")
    who = "" if part is None else f"worker {part.index} of {part.count}: "
    print(f"{who}labelled {s['frames']} frames of {s['clips']} clips{fps}; undecodable frames "
          f"skipped: {s['undecodable_frames']} -> {args.out}"
          + ("" if part is None else f" ({part.manifest})"))
    if part is not None:
        print(f"all {part.count} parts merged -> manifest.json, labelling.json" if "merged" in s
              else f"the other parts are not all there yet: the last worker merges, or run "
                   f"`label_faces.py --merge --out {args.out}`")
    if s["skipped_corrupt_shards"]:
        print(f"skipped corrupt shards: {', '.join(s['skipped_corrupt_shards'])}")
    return 0


if __name__ == "__main__":
    run_main(main)
