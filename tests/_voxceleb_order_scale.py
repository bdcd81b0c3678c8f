"""Identity coverage at VoxCeleb scale (not a test; run by hand, about a minute):

    PYTHONPATH=. python tests/_voxceleb_order_scale.py before|after

Index-only emovox records (118,485 training tracks of 1,001 identities, 128 per shard; each
record's logits hold its index) in identity order (``before``) or in the builder's seeded
random order (``after``), read by the real ``distill_dataset`` (batch 64, 1,024-clip shuffle
buffer, 8-shard interleave, 93 steps = 5 % of the tracks per mini-epoch). Measured on the
2-core dev host: before 110-118 identities per mini-epoch, 29.5 per batch; after 995-999
and 61.96; randperm 999.0 and 62.02.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np

from tf_cme.data import emovox, records, schema

S = schema.EMOVOX_SCHEMA

def enc(i, **_):
    return records.Encoded(S.encode({"key": f"k{i}", "identity": "x", "video": "v", "track": "t",
        "wav": "w", "set": 1, "split": "train", "audio": b"\x01\x00" * 4, "num_samples": 4,
        "sample_rate": 16000, "source_rate": 16000, "frames": [], "frame_index": [0],
        "frame_times": [0.0], "logits": [float(i)] + [0.0] * 7}), None)

sizes = [119] * 367 + [118] * 634
ident = np.repeat(np.arange(1001), sizes)
T = ident.size
assert T == 118485
mode = sys.argv[1]
items = list(range(T))
if mode == "after":
    items = emovox.record_order("train", items, 0)
import tempfile

out = Path(tempfile.mkdtemp()) / f"vox-{mode}"
t0 = time.time()
records.build(out, S, records.chunk("train", items, 128), encode_fn=enc, workers=1,
              extra={"labelled": True}, overwrite=True)
print("build", time.time() - t0, flush=True)
from tf_cme.data import pipelines

steps = math.ceil(0.05 * T / 64)
pe, pb = [], []
for e in (1, 2, 3):
    ds = pipelines.distill_dataset(out, "train", batch_size=64, crop_samples=4, seed=e,
                                   training=True, repeat=True).take(steps)
    bs = [np.rint(y["logits"].numpy()[:, 0]).astype(np.int64) for _, y in ds]
    tr = np.concatenate(bs)
    pe.append(np.unique(ident[tr]).size); pb += [np.unique(ident[b]).size for b in bs]
print(mode, "tracks/mini-epoch", tr.size, "ids/mini-epoch", pe, "ids/batch mean %.2f" % np.mean(pb))
rng = np.random.default_rng(0)
sim = [np.unique(ident[rng.permutation(T)[:steps * 64]]).size for _ in range(20)]
simb = [np.unique(ident[rng.permutation(T)[:64]]).size for _ in range(2000)]
print("randperm ids/mini-epoch mean %.1f, ids/batch mean %.2f" % (np.mean(sim), np.mean(simb)))
