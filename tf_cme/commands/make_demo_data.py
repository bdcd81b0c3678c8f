"""Generate the synthetic demo corpus in the on-disk formats of FER+, VoxCeleb/EmoVoxCeleb,
RML and raw talking-face videos (see tf_cme/demo/corpus.py)."""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_cme import config
from tf_cme.utils import CmeError, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (must be empty or absent unless --force)")
    from tf_cme.demo.corpus import DemoCorpusConfig
    p.set_defaults(_flags=config.add_field_args(p, DemoCorpusConfig, ["seed", "size"]))
    p.add_argument("--force", action="store_true",
                   help="replace the content of a non-empty output folder")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the VoxCeleb tracks (default: 1 for tiny, 2 for small); "
                        "the output does not depend on it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    config.add_config_args(p)
    return p


def main() -> int:
    args = build_parser().parse_args()
    from tf_cme.demo import corpus as demo_corpus
    cfg = config.resolve_or_exit(demo_corpus.DemoCorpusConfig, args,
                                 explicit=config.explicit(args, args._flags))
    if args.workers is not None and args.workers < 1:
        raise CmeError(f"--workers must be >= 1, got {args.workers}")
    s = demo_corpus.generate(args.out, seed=cfg.seed, size=cfg.size, force=args.force,
                             show_progress=not args.quiet, workers=args.workers)
    vox = s["voxceleb"]
    print(f"demo corpus ({s['size']}, seed {s['seed']}, synthetic) written to {s['out']}:")
    print(f"  ferplus:  {s['ferplus']['rows']} faces {s['ferplus']['usage']}")
    print(f"  voxceleb: {vox['tracks']} tracks ({vox['seconds']} s) of {vox['identities']} "
          f"identities, {vox['frames']} face frames; tracks per split {vox['split_tracks']}")
    for split, c in vox["dominant_counts"].items():
        print(f"    {split:8s} dominant emotions: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"  external: {s['external']['clips']} clips, {s['external']['speakers']} speakers, "
          f"22,050 Hz")
    print(f"  videos:   {s['videos']['videos']} mp4")
    print(f"  {s['files']} files, {s['bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in s['timings_s'].items())})")
    return 0


if __name__ == "__main__":
    run_main(main)
