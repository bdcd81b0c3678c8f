"""Mini-epochs are uniform samples of the training tracks (protocol §6), through the real
builder and the real distillation pipeline, on an identity-ordered split of 500 identities.

The original draws mini-epoch e as the first 5 % of ``randperm`` (seeded ``rng(e)``): a
uniform sample of the tracks without replacement, so a mini-epoch of m tracks covers in
expectation sum_i [1 - C(T - n_i, m) / C(T, m)] identities (n_i tracks of identity i, T
in all), and a batch of b tracks the same with m = b. The records here are built from an
imdb grouped by identity (as VoxCeleb's is); each track's audio is a constant equal to its
index + 1, so every crop names its track.

Measured with these settings (24 mini-epochs of 10 batches of 16, shards of 8, an 8-shard
interleave, a 64-clip shuffle buffer): records in identity order (before) cover 53.0
identities per mini-epoch and 13.35 per batch; in the seeded random order 142.1 and 15.84;
a uniform sample 141.9 and 15.82.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tf_cme.audio.io import write_wav
from tf_cme.data import emovox, labelled, pipelines, records
from tf_cme.demo import files as mat_fixtures
from tf_cme.demo.files import make_voxceleb_tree

N_ID, PER_ID = 500, 4                 # 2,000 training tracks, grouped by identity
SHARD, BUFFER, BATCH, STEPS, CROP = 8, 64, 16, 10, 160
EPOCHS = 24                           # mini-epochs measured (seeds as the trainer's)


def expected_covered(sizes, m: int) -> float:
    """E[identities covered] by a uniform sample of m of the sum(sizes) tracks, without
    replacement: sum_i 1 - C(T - n_i, m) / C(T, m) (float64, via log-gamma)."""
    t = int(sum(sizes))
    lg = math.lgamma
    return float(sum(1.0 - math.exp(lg(t - n + 1) - lg(t - n - m + 1) - lg(t + 1) + lg(t - m + 1))
                     if t - n >= m else 1.0 for n in sizes))


def randperm_covered(sizes, m: int, draws: int, seed: int = 0) -> np.ndarray:
    """Identities covered by the first m of ``draws`` simulated randperms (the original)."""
    ident = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    return np.array([np.unique(ident[rng.permutation(ident.size)[:m]]).size
                     for _ in range(draws)])


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A labelled emovox record set built (``--logits-mat``) from an identity-ordered imdb."""
    root = tmp_path_factory.mktemp("grouped")
    tracks = []
    for i in range(N_ID * PER_ID):
        ident, video = f"id{i // PER_ID:05d}", f"v{i:05d}"
        write_wav(root / "wav" / ident / video / "00001.wav", np.full(400, i + 1, np.int16), 16000)
        tracks.append({"name": f"{ident}/{video}/00001.m4a", "set": 1, "video": video,
                       "track": 1, "logits": np.zeros((1, 8), np.float32)})
    mat = mat_fixtures.write_logits_mat(root / "senet50-ferplus-logits.mat",
                                        mat_fixtures.make_imdb(tracks))
    out = root / "rec"
    m = emovox.build(out, emovox.EmovoxBuildConfig(root=str(root), logits_mat=str(mat),
                                                   shard_size=SHARD, order_seed=0, workers=1))
    return out, m


def _mini_epoch(d, e: int, seed: int = 0) -> list[np.ndarray]:
    """Track indices of mini-epoch e's batches, as the trainer draws them."""
    ds = pipelines.distill_dataset(d, "train", batch_size=BATCH, crop_samples=CROP,
                                   seed=seed * 100003 + e, training=True, repeat=True,
                                   shuffle_buffer=BUFFER).take(STEPS)
    return [np.rint(x.numpy()[:, 0] * 32768).astype(np.int64) - 1 for x, _ in ds]


def test_mini_epochs_cover_identities_as_randperm(grouped):
    d, m = grouped
    assert m["splits"]["train"]["examples"] == N_ID * PER_ID
    assert m["order"] == {"method": emovox.ORDER_METHOD, "seed": 0}
    sizes = [PER_ID] * N_ID
    per_epoch, per_batch, first3 = [], [], []
    for e in range(1, EPOCHS + 1):
        batches = _mini_epoch(d, e)
        tracks = np.concatenate(batches)
        assert tracks.size == STEPS * BATCH == np.unique(tracks).size   # no track twice
        first3 += [tracks] if e <= 3 else []
        per_epoch.append(np.unique(tracks // PER_ID).size)
        per_batch += [np.unique(b // PER_ID).size for b in batches]
    # statistic: the mean over the mini-epochs (batches) of the identities covered;
    # bound: the uniform expectation +- 4 standard errors of that mean, the standard
    # deviation of one mini-epoch (batch) taken from 5,000 simulated randperms (about 3.5
    # and 0.42 identities: bounds of +-2.9 and +-0.11 around 141.9 and 15.82)
    sim_e = randperm_covered(sizes, STEPS * BATCH, 5000)
    sim_b = randperm_covered(sizes, BATCH, 5000, seed=1)
    want_e, want_b = expected_covered(sizes, STEPS * BATCH), expected_covered(sizes, BATCH)
    assert abs(sim_e.mean() - want_e) < 0.25 and abs(sim_b.mean() - want_b) < 0.03
    se_e = sim_e.std() / math.sqrt(len(per_epoch))
    se_b = sim_b.std() / math.sqrt(len(per_batch))
    assert abs(np.mean(per_epoch) - want_e) <= 4 * se_e, (np.mean(per_epoch), want_e, se_e)
    assert abs(np.mean(per_batch) - want_b) <= 4 * se_b, (np.mean(per_batch), want_b, se_b)
    # successive mini-epochs are fresh draws, not the same few shards again: three uniform
    # samples of 160 of 2,000 tracks share few (expected distinct: 2000 (1 - 0.92^3) = 443)
    seen = np.unique(np.concatenate(first3))
    assert seen.size > 400


def test_resume_draws_the_same_mini_epoch_and_order_is_seeded(grouped, tmp_path):
    d, _ = grouped
    a, b = _mini_epoch(d, 7), _mini_epoch(d, 7)              # a restarted run's mini-epoch 7
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(_mini_epoch(d, 8)))
    # the build order: a seeded permutation within each split, recorded in the manifest
    items = list(range(50))
    assert emovox.record_order("train", items, 3) == emovox.record_order("train", items, 3)
    assert emovox.record_order("train", items, 3) != emovox.record_order("train", items, 4)
    assert sorted(emovox.record_order("heard", items, 3)) == items
    # labelled records made from emovox records keep their order (same shards, same rows)
    make_voxceleb_tree(tmp_path / "tree", 8, seconds=(1.2, 1.4), image=8, sets=(1,))
    src = tmp_path / "src"
    m2 = emovox.build(src, emovox.EmovoxBuildConfig(root=str(tmp_path / "tree"), shard_size=2,
                                                    order_seed=5, workers=1))
    assert m2["order"]["seed"] == 5
    keys = [records_key(r) for s in m2["shards"] for r in records.iter_records(src / s["file"])]
    listed = [e.split()[2] for e in (tmp_path / "tree" / "splits.txt").read_text().splitlines()]
    assert sorted(keys) != keys and len(set(keys)) == len(listed) == 8      # not in file order
    logits = {k.decode(): np.ones((len(c["frame_index"]), 8))
              for k, c in ((c["key"].numpy(), c) for c in pipelines.clips_dataset(src))}
    lab = labelled.write_labelled(src, tmp_path / "lab", logits, {"name": "t"})
    assert lab["order"] == m2["order"]
    assert [records_key(r) for s in lab["shards"]
            for r in records.iter_records(tmp_path / "lab" / s["file"])] == keys


def records_key(raw: bytes) -> bytes:
    import tensorflow as tf
    return tf.train.Example.FromString(raw).features.feature["key"].bytes_list.value[0]
