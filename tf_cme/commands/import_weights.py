"""Import teacher weights (MatConvNet DagNN .mat or pytorch-mcn .pth) into a .keras file.

Examples:
  scripts/import_weights.py senet50-ferplus.mat runs/teachers/senet50-ferplus.keras
  scripts/import_weights.py resnet50_ferplus_dag.pth runs/teachers/resnet50-ferplus.keras
  scripts/import_weights.py --base senet50_ft-dag.mat runs/teachers/senet50-vggface2.keras
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="MatConvNet DagNN .mat (v5/v7 or v7.3) or PyTorch .pth "
                                   "state dict of the pytorch-mcn conversion")
    p.add_argument("out", help="output .keras file (written atomically, with metadata)")
    p.add_argument("--arch", choices=["resnet50-ferplus", "senet50-ferplus"],
                   help="teacher architecture (default: guessed from the file name)")
    p.add_argument("--base", action="store_true",
                   help="the file is a VGGFace2 base (resnet50_ft-dag / senet50_ft-dag, "
                        "8631 identities): import the trunk only and leave the 8-way "
                        "classifier freshly initialised")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel multiplier of the model (1.0 for the released weights)")
    p.add_argument("--input-size", type=int, default=224,
                   help="model input size in pixels (224 for the released weights)")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="dropout rate of the fine-tuning dropout layers (training only)")
    args = p.parse_args()
    if not args.out.endswith(".keras"):
        p.error("out must end with .keras")

    from tf_cme.models.importers import import_weights
    model = import_weights(args.weights, args.out, arch=args.arch, base=args.base,
                           width=args.width, input_size=args.input_size,
                           dropout=args.dropout)
    info = model.cme_metadata["imported_from"]
    print(f"imported {info['parameters']} parameters ({info['format']}) into "
          f"{model.cme_metadata['name']} -> {args.out}"
          + (f"; left initialised: {', '.join(info['skipped_layers'])}"
             if info["skipped_layers"] else ""))
    return 0


if __name__ == "__main__":
    from tf_cme.utils import run_main
    run_main(main)
