"""tf.data input pipelines over tf-cme record sets.

Every reader lists its shards from the manifest and checks them once per process
(:func:`tf_cme.data.records.shard_files`: size, every record's CRC, the record count): a
missing, truncated or corrupt shard is an error naming the file, the record and the
command that rebuilds it, or with ``skip_corrupt=True`` is left out whole and listed
in ``LAST_SKIPPED_SHARDS`` (callers report it as ``skipped_corrupt_shards``:
:func:`skipped_shards`), interleaves the shards, parses and decodes with
``num_parallel_calls=AUTOTUNE`` and prefetches. All randomness is stateless and
derived from ``seed`` and the element's position in the stream, so a pipeline
with a seed yields the same elements in the same order on every run.

Distribution: pass ``input_context`` (from
``strategy.distribute_datasets_from_function``) and each input pipeline reads a
disjoint part: whole shards (FILE sharding) when there are at least as many
shards as input pipelines, otherwise every n-th record (DATA sharding); the
batch size is then the global batch size and each pipeline batches
``input_context.get_per_replica_batch_size(batch_size)``. Without
``input_context`` the datasets set ``AutoShardPolicy.DATA`` so that
``strategy.experimental_distribute_dataset`` shards them correctly whatever the
number of shards.

What the pipelines do *not* do: grey-to-3-channel, mean subtraction and the
resampling to the teacher's input (with the FER+ augmentation's affine, which the
pipeline only draws) belong to the teacher model, so they need neither its mean nor
its input size; the spectrogram, its
row normalisation and the evaluation bucket crop belong to the student's front end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from .. import emotions
from ..utils import CmeError
from . import records, schema as schema_lib

AUTOTUNE = tf.data.AUTOTUNE
log = logging.getLogger(__name__)

#: Default training crop (protocol §3.1): 4.024 s at 16 kHz (tf_cme/audio/constants.py).
from ..audio.constants import TRAIN_CROP_SAMPLES as CROP_SAMPLES  # noqa: E402
#: Shards skipped as corrupt by the last reader built with skip_corrupt=True.
LAST_SKIPPED_SHARDS: list[str] = []


# ------------------------------------------------------------------- shards
def skipped_shards(dir, splits=None, skip_corrupt: bool = False) -> list[str]:
    """``skipped_corrupt_shards`` of a reader of ``splits`` (a name, names or None: all):
    the names of the shards it leaves out with ``skip_corrupt`` (checked once per
    process: the pipelines then reuse the result); a CmeError naming the first corrupt
    shard without ``skip_corrupt``. Trainers and evaluators write it into their outputs."""
    _, bad = records.shard_files(dir, splits, None, skip_corrupt=skip_corrupt)
    return records.skipped_names(bad)


@contextlib.contextmanager
def naming_corrupt_shards(dir, splits=None, skipped=()):
    """Turn a ``DataLossError`` raised inside the block (a shard damaged after it was
    checked, e.g. while a run was reading it) into the CmeError naming the shard, its
    record and the rebuild command: every shard of ``splits`` of ``dir`` is checked again
    (not from the once-per-process cache), except those already ``skipped`` (names).
    ``dir`` None: errors pass unchanged (pipelines that are not a record set's)."""
    try:
        yield
    except tf.errors.DataLossError as e:
        if dir is None:
            raise
        first = (e.message or str(e)).strip().splitlines()[0][:200]
        records.forget_checks()
        m = records.read_manifest(dir)
        _, bad = records.shard_files(dir, splits, m, skip_corrupt=True)
        new = [b for b in bad if Path(b).name not in set(skipped)]
        if new:
            raise CmeError(f"corrupt shard {new[0]} (damaged while it was being read: "
                           f"{first}); {records.rebuild_hint(dir, m)}") from None
        raise CmeError(f"{dir}: reading its records failed ({first}), yet every shard "
                       f"passes its checks now") from None


def named_iteration(iterable, dir, splits=None, skipped=()):
    """``iterable`` (a dataset), with :func:`naming_corrupt_shards` around every step."""
    it = iter(iterable)
    while True:
        with naming_corrupt_shards(dir, splits, skipped):
            try:
                x = next(it)
            except StopIteration:
                return
        yield x


def _records(dir, split, schema_name, *, shuffle_files: bool, seed: int,
             input_context=None, skip_corrupt: bool = False, cycle_length: int = 8):
    m = records.read_manifest(dir, expect_schema=schema_name)
    splits = [split] if split is not None else list(m["splits"])
    files, bad = [], []
    for s in splits:                       # split by split, in the manifest's split order
        if s not in m["splits"]:
            raise CmeError(f"{dir}: no split {s!r} (splits: {', '.join(m['splits']) or 'none'})")
        g, b = records.shard_files(dir, s, m, skip_corrupt=skip_corrupt)
        files += g
        bad += b
    LAST_SKIPPED_SHARDS[:] = bad
    if not files:
        raise CmeError(f"{dir}: no readable shards for split {split!r}")
    ds = tf.data.Dataset.from_tensor_slices(files)
    record_shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= n:
            ds = ds.shard(n, i)
        else:
            record_shard = (n, i)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read(f):
        # TF's default read buffer (256 KiB); every shard passed its CRCs in shard_files, and
        # a skipped shard is left out whole (never ignore_errors: records dropped silently)
        return tf.data.TFRecordDataset(f)

    if shuffle_files and len(files) > 1:
        # training: records of `cycle_length` shards interleaved one by one (a mix
        # for the shuffle buffer); parallel reads only where cores are plentiful:
        # on a small host the hand-off between reader threads costs more CPU than
        # it saves (measured: +75 us per 190 kB clip on 2 cores).
        cycle = max(1, min(cycle_length, len(files)))
        if records.cpu_count() > 4:
            ds = ds.interleave(read, cycle_length=cycle, block_length=1,
                               num_parallel_calls=AUTOTUNE, deterministic=True)
        else:
            ds = ds.interleave(read, cycle_length=cycle, block_length=1)
    else:
        ds = ds.flat_map(read)             # shard by shard, in record order
    if record_shard is not None:
        ds = ds.shard(*record_shard)
    return ds, m


def _options(ds):
    opt = tf.data.Options()
    opt.deterministic = True
    opt.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opt)


def _batch_size(batch_size, input_context):
    if input_context is not None:
        return input_context.get_per_replica_batch_size(batch_size)
    return batch_size


def _seed_pairs(ds, seed):
    """Zip each element with a stateless seed [seed, position]."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
        lambda x, i: (x, tf.stack([tf.cast(seed, tf.int64), i])))


# ----------------------------------------------------------- augmentation
def ferplus_affine(seed, batch: int) -> tf.Tensor:
    """protocol §4.2 step 5 augmentation as ``[batch, 2, 3]`` affines ``[L | t]`` on the
    normalised ``(x, y)`` output -> input sampling coordinates of the teacher's sampler
    (±1 = centres of the corner pixels; :func:`tf_cme.vision.resample.affine_sample`).

    With probability 0.5 the identity; otherwise A = Z·R·S: zoom s ~ U(0.96, 1.04),
    m_x, m_y in {1..9}, t = z(1 - 2m) with z = (s-1)/s, A = s [R S | t]; rotation in
    {-10, 0, 10} degrees; shear [[1, s1], [s2, 1]], s1, s2 in {-0.1, 0, 0.1}. Float32.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    s = tf.random.stateless_uniform([batch], seeds[0], 0.96, 1.04, dtype=tf.float64)
    m = tf.cast(tf.random.stateless_uniform([batch, 2], seeds[1], 1, 10, dtype=tf.int32), tf.float64)
    theta = tf.cast(tf.random.stateless_uniform([batch], seeds[2], -1, 2, dtype=tf.int32),
                    tf.float64) * (10.0 * math.pi / 180.0)
    sh = tf.cast(tf.random.stateless_uniform([batch, 2], seeds[3], -1, 2, dtype=tf.int32),
                 tf.float64) * 0.1
    use = tf.random.stateless_uniform([batch], seeds[4], 0, 1, dtype=tf.float64) >= 0.5
    z = (s - 1.0) / s
    t = z[:, None] * (1.0 - 2.0 * m)                                  # [B, 2]
    c, si = tf.cos(theta), tf.sin(theta)
    r = tf.stack([tf.stack([c, -si], -1), tf.stack([si, c], -1)], 1)  # [B, 2, 2]
    one = tf.ones_like(s)
    shear = tf.stack([tf.stack([one, sh[:, 0]], -1), tf.stack([sh[:, 1], one], -1)], 1)
    lin = s[:, None, None] * tf.linalg.matmul(r, shear)               # [B, 2, 2]
    trans = s[:, None] * t                                            # [B, 2]
    eye = tf.eye(2, batch_shape=[batch], dtype=tf.float64)
    lin = tf.where(use[:, None, None], lin, eye)
    trans = tf.where(use[:, None], trans, tf.zeros_like(trans))
    return tf.cast(tf.concat([lin, trans[:, :, None]], axis=2), tf.float32)


def augment_faces(images, seed, affine: bool = True):
    """Flip (p = 0.5, exact: a column reversal of the uint8 image) and the FER+ affine
    draw (:func:`ferplus_affine`, or None with ``affine=False``): ``(images, affines)``.
    The affine is not applied here: the teacher applies it in its single resampling
    (protocol §4.2 steps 3-5; :func:`tf_cme.models.teacher.forward`)."""
    b = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    flip = tf.random.stateless_uniform([b], seeds[0], 0, 1) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    return images, (ferplus_affine(seeds[1], b) if affine else None)


# ------------------------------------------------------------- PNG decoding
def decode_grey_pngs(pngs, h: int, w: int, canonical: bool = False):
    """Decode a batch ``[B]`` of grey ``h`` x ``w`` PNGs to uint8 ``[B, h, w, 1]``.

    ``canonical=True`` (record sets whose manifest says ``"image_encoding":
    "png-canonical"``, written by :func:`tf_cme.data.ferplus.png_bytes`: 8-bit grey,
    one IDAT chunk, filter 0 on every row) inflates the whole batch in one op
    (``tf.io.decode_compressed``; the zlib stream carries its own Adler-32 check)
    and drops the filter bytes: the same pixels as a PNG decoder at a third of the
    cost of one ``decode_png`` per image. A PNG that is not in that form (header,
    chunk layout, size or a non-zero filter byte) is an error, never wrong pixels.
    Otherwise every image is decoded by ``tf.io.decode_png``.
    """
    if not canonical:
        img = tf.map_fn(lambda b: tf.io.decode_png(b, channels=1), pngs,
                        fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8))
        return tf.ensure_shape(img, [None, h, w, 1])
    from .ferplus import PNG_IEND, png_header
    head = png_header(h, w)
    overhead = len(head) + 12 + len(PNG_IEND)            # header, IDAT framing, IEND
    n = tf.strings.length(pngs)
    # Inputs that are not canonical PNGs fail here (substr out of range, inflate
    # error, reshape) or in the one check below (header, chunk layout, filters).
    heads = tf.strings.substr(pngs, 0, len(head) + 8)
    idat = tf.reshape(tf.io.decode_raw(tf.strings.substr(heads, len(head), 4), tf.uint8), [-1, 4])
    idat = tf.reduce_sum(tf.cast(idat, tf.int32) * [1 << 24, 1 << 16, 1 << 8, 1], axis=1)
    rows = tf.io.decode_compressed(
        tf.strings.substr(pngs, tf.fill(tf.shape(n), len(head) + 8), n - overhead),
        compression_type="ZLIB")
    px = tf.reshape(tf.io.decode_raw(rows, tf.uint8), [-1, h, w + 1])
    ok = tf.reduce_all(tf.equal(tf.strings.substr(heads, 0, len(head)), head)
                       & tf.equal(tf.strings.substr(heads, len(head) + 4, 4), b"IDAT")
                       & tf.equal(idat, n - overhead)
                       & tf.equal(tf.strings.length(rows), h * (w + 1))) \
        & tf.reduce_all(tf.equal(px[:, :, 0], 0))
    with tf.control_dependencies([tf.debugging.Assert(ok, [
            f"not a canonical {h}x{w} grey PNG (tf_cme.data.ferplus.png_bytes) although the "
            f"manifest says image_encoding=png-canonical: rebuild the records"])]):
        img = tf.identity(px[:, :, 1:, None])
    return tf.ensure_shape(img, [None, h, w, 1])


# --------------------------------------------------------------- faces
def faces_dataset(dir, split, *, batch_size, training, seed=0, augment=True, repeat=False,
                  image_size=None, input_context=None, skip_corrupt=False,
                  shuffle_buffer=4096):
    """FER+ faces: ``(images uint8 [B, H, W, 1], {"label": int32 [B], "votes": float32 [B, 8]})``.

    ``votes`` is the soft label (cleaned emotion votes normalised). Training
    shuffles (seeded), drops the last partial batch and, with ``augment``, flips
    (exactly, at 48x48) and draws the protocol §4.2 affine augmentation, given as
    ``y["affine"]`` float32 ``[B, 2, 3]`` (``augment="flip"``: the flip only, no
    ``affine``): the images stay the records' uint8 pixels, and the teacher applies the
    affine in its single align-corners resampling after its mean subtraction
    (:func:`tf_cme.models.teacher.forward`), as the original does; out-of-image samples
    are then the mean colour. ``image_size`` resizes (bilinear, uint8) for other uses;
    leave it None for the teacher, which resamples by itself.
    """
    sch = schema_lib.FERPLUS_SCHEMA
    ds, m = _records(dir, split, sch.name, shuffle_files=training, seed=seed,
                     input_context=input_context, skip_corrupt=skip_corrupt)
    h, w, _ = m.get("image_size", [schema_lib.FER_SIZE, schema_lib.FER_SIZE, 1])
    canonical = m.get("image_encoding") == "png-canonical"
    bs = _batch_size(batch_size, input_context)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    spec = {k: v for k, v in sch.feature_spec().items() if k in ("image", "label", "soft")}

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        img = decode_grey_pngs(ex["image"], h, w, canonical)
        return img, {"label": tf.cast(ex["label"], tf.int32), "votes": ex["soft"]}

    ds = ds.batch(bs, drop_remainder=training)
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training and augment:
        if image_size is not None and augment != "flip":
            raise CmeError("faces_dataset: image_size and the affine augmentation exclude "
                           "each other (the teacher applies the affine when it resamples)")

        def aug(x, sd):
            images, affine = augment_faces(x[0], sd, affine=augment != "flip")
            return images, (x[1] if affine is None else {**x[1], "affine": affine})
        ds = _seed_pairs(ds, seed).map(aug, num_parallel_calls=AUTOTUNE, deterministic=True)
    if image_size is not None:
        size = _pair(image_size)
        ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(tf.round(
            tf.image.resize(x, size, antialias=True)), 0, 255), tf.uint8), y),
            num_parallel_calls=AUTOTUNE)
    return _options(ds.prefetch(AUTOTUNE))


def _pair(size):
    if isinstance(size, int):
        return [size, size]
    return [int(size[0]), int(size[1])]


# ----------------------------------------------------------- clip parsing
def _waveform(audio, max_samples=schema_lib.MAX_SAMPLES):
    x = tf.io.decode_raw(audio, tf.int16, little_endian=True)
    if max_samples:
        x = x[:max_samples]
    return tf.cast(x, tf.float32) / 32768.0


def _parse_clip(serialized, sch, max_samples=schema_lib.MAX_SAMPLES):
    out = dict(sch.parse_single(serialized))
    out["waveform"] = _waveform(out.pop("audio"), max_samples)
    if "logits" in out:
        out["logits"] = tf.reshape(out["logits"], [-1, emotions.NUM_CLASSES])
    return out


def clips_dataset(dir, split=None, *, skip_corrupt=False, input_context=None):
    """EmoVoxCeleb clips, unbatched, in record order: dicts with ``key``,
    ``waveform`` float32 [N] (16 kHz, the whole track: evaluation, protocol §3.2), ``identity``,
    ``video``, ``track``, ``split``, ``set``, ``logits`` float32 [F, 8] (F = 0 for
    unlabelled records), ``frames`` string [F'] JPEG, ``frame_index`` int64 and
    ``frame_times`` float32 [F'], ``num_samples``."""
    sch = schema_lib.EMOVOX_SCHEMA
    ds, _ = _records(dir, split, sch.name, shuffle_files=False, seed=0,
                     input_context=input_context, skip_corrupt=skip_corrupt)
    ds = ds.map(lambda s: _parse_clip(s, sch, None), num_parallel_calls=AUTOTUNE,
                deterministic=True)
    return _options(ds.prefetch(AUTOTUNE))


# ---------------------------------------------------------- distillation
def time_to_row(sample_1based, fs=schema_lib.SAMPLE_RATE):
    """protocol §2.2: idx(t) = floor(max(25 t - 1, 0) / 6) + 1 (1-based), t = n / fs,
    computed in float64 as the original."""
    t = tf.cast(sample_1based, tf.float64) / float(fs)
    v = tf.maximum(schema_lib.FPS * t - 1.0, 0.0) / float(schema_lib.FRAME_STRIDE)
    return tf.cast(tf.floor(v), tf.int64) + 1


def logit_rows(start, crop_samples, num_rows, fs=schema_lib.SAMPLE_RATE):
    """1-based inclusive row range ``(first, last)`` of the frames overlapping a crop
    starting at 0-based sample ``start`` (protocol §6): the crop covers seconds
    [(start+1)/fs, (start+crop)/fs]; first = idx(begin), last = min(idx(end), F).
    When no row overlaps (the crop starts after the last row), the last row is used."""
    start = tf.cast(start, tf.int64)
    f = tf.cast(num_rows, tf.int64)
    last = tf.minimum(time_to_row(start + crop_samples, fs), f)
    first = tf.minimum(time_to_row(start + 1, fs), last)
    return first, last


def aggregate_logits(logits, start, crop_samples=CROP_SAMPLES, agg="max"):
    """Per-emotion max (or mean) of the rows of ``logits`` [F, 8] overlapping the crop."""
    f = tf.shape(logits, out_type=tf.int64)[0]
    first, last = logit_rows(start, crop_samples, f)
    rows = logits[first - 1:last]
    if agg == "max":
        out = tf.reduce_max(rows, axis=0)
    elif agg == "mean":
        out = tf.reduce_mean(rows, axis=0)
    else:
        raise ValueError(f"agg must be 'max' or 'mean', got {agg!r}")
    return tf.ensure_shape(out, [emotions.NUM_CLASSES])


def crop_start(num_samples, seed, crop_samples=CROP_SAMPLES):
    """protocol §3.1: with wd = N - crop, a 0-based start uniform in {0..wd-1} when
    wd >= 1 (MATLAB's wr in 1..wd), else 0."""
    n = tf.cast(num_samples, tf.int64)
    wd = n - crop_samples
    u = tf.random.stateless_uniform([], tf.cast(seed, tf.int64), 0, 1, dtype=tf.float64)
    s = tf.minimum(tf.cast(tf.floor(u * tf.cast(wd, tf.float64)), tf.int64), wd - 1)
    return tf.where(wd >= 1, s, tf.constant(0, tf.int64))


def crop_waveform(waveform, start, crop_samples=CROP_SAMPLES):
    """``crop_samples`` samples from ``start``, zero-padded at the end when short."""
    start = tf.cast(start, tf.int64)
    piece = waveform[start:start + crop_samples]
    piece = tf.pad(piece, [[0, crop_samples - tf.shape(piece, out_type=tf.int64)[0]]])
    return tf.ensure_shape(piece, [crop_samples])


def crop_and_aggregate(waveform, logits, seed, crop_samples=CROP_SAMPLES, agg="max"):
    """protocol §3.1 random crop + protocol §6 logit aggregation, in-graph.

    ``waveform`` float32 [N] (N already clamped at 19.9 s), ``logits`` [F, 8].
    Returns ``(crop [crop_samples], aggregated logits [8], start)``.
    """
    start = crop_start(tf.shape(waveform, out_type=tf.int64)[0], seed, crop_samples)
    return (crop_waveform(waveform, start, crop_samples),
            aggregate_logits(logits, start, crop_samples, agg), start)


def crop_batch(audio, num_samples, seed, crop_samples=CROP_SAMPLES):
    """protocol §3.1 random crops of a batch of parsed records, decoding only the cropped
    bytes (``tf.strings.substr`` then ``decode_raw`` with zero padding).

    ``audio`` [B] int16 PCM strings, ``num_samples`` [B]; the starts are drawn from the
    stateless ``seed`` as :func:`crop_start` draws them. Returns ``(waveforms [B, crop],
    starts [B])``.
    """
    n = tf.minimum(tf.cast(num_samples, tf.int64), schema_lib.MAX_SAMPLES)
    b = tf.shape(n)[0]
    wd = n - crop_samples
    u = tf.random.stateless_uniform([b], tf.cast(seed, tf.int64), 0, 1, dtype=tf.float64)
    s = tf.minimum(tf.cast(tf.floor(u * tf.cast(wd, tf.float64)), tf.int64), wd - 1)
    start = tf.where(wd >= 1, s, tf.zeros_like(s))
    take = tf.minimum(tf.cast(crop_samples, tf.int64), n - start)
    piece = tf.strings.substr(audio, 2 * start, 2 * take)
    wave = tf.io.decode_raw(piece, tf.int16, little_endian=True, fixed_length=2 * crop_samples)
    wave = tf.cast(wave, tf.float32) * (1.0 / 32768.0)      # exact: a power of two
    return tf.ensure_shape(wave, [None, crop_samples]), start


def crop_and_aggregate_batch(audio, num_samples, logits, seed, crop_samples=CROP_SAMPLES,
                              agg="max"):
    """Batched :func:`crop_and_aggregate` on parsed records, without decoding whole clips.

    ``audio`` [B] int16 PCM strings, ``num_samples`` [B], ``logits`` a ragged
    [B, None] float tensor (F_i x 8 flattened per clip); the crops are
    :func:`crop_batch`'s. Returns
    ``(waveforms [B, crop], aggregated [B, 8], starts [B])``.
    """
    wave, start = crop_batch(audio, num_samples, seed, crop_samples)
    b = tf.shape(start)[0]
    # logits: rows per clip, as flat rows with their clip ids
    vals = tf.reshape(logits.flat_values, [-1, emotions.NUM_CLASSES])
    rows_per_clip = tf.cast(logits.row_lengths(), tf.int64) // emotions.NUM_CLASSES
    clip_of_row = tf.repeat(tf.range(tf.cast(b, tf.int64)), rows_per_clip)
    row_start = tf.cumsum(rows_per_clip, exclusive=True)
    pos = tf.range(tf.shape(vals, out_type=tf.int64)[0]) - tf.gather(row_start, clip_of_row)
    first, last = logit_rows(start, crop_samples, rows_per_clip)
    sel = (pos >= tf.gather(first, clip_of_row) - 1) & (pos < tf.gather(last, clip_of_row))
    if agg == "max":
        masked = tf.where(sel[:, None], vals, tf.fill(tf.shape(vals), -np.inf))
        out = tf.math.unsorted_segment_max(masked, clip_of_row, b)
    else:
        masked = tf.where(sel[:, None], vals, tf.zeros_like(vals))
        tot = tf.math.unsorted_segment_sum(masked, clip_of_row, b)
        cnt = tf.math.unsorted_segment_sum(tf.cast(sel, tf.float32), clip_of_row, b)
        out = tot / tf.maximum(cnt, 1.0)[:, None]
    return wave, tf.ensure_shape(out, [None, emotions.NUM_CLASSES]), start


# ------------------------------------------------------- seeded track subsets
_HASH_BUCKETS = (1 << 63) - 1
_KEY_SPEC = {"key": tf.io.FixedLenFeature([], tf.string)}


def track_hash(keys, seed) -> tf.Tensor:
    """int64 hash in ``[0, 2**63 - 1)`` of each track ``key`` under ``seed`` (FarmHash
    fingerprint of ``"<seed>:<key>"``): the same on every machine and run, unrelated to
    the records' order."""
    return tf.strings.to_hash_bucket_fast(tf.strings.join([f"{int(seed)}:", keys]),
                                          _HASH_BUCKETS)


@dataclasses.dataclass(frozen=True)
class TrackSubset:
    """A seeded random subset of a split's tracks (:func:`random_subset`): the records
    whose :func:`track_hash` under ``seed`` is at most ``max_hash``."""
    split: str
    seed: int
    fraction: float
    max_hash: int
    keys: tuple          # the chosen tracks' keys, sorted
    of: int              # tracks in the split

    @property
    def tracks(self) -> int:
        return len(self.keys)

    @property
    def digest(self) -> str:
        """sha256 of the sorted keys, one a line: names the subset in a run's metrics."""
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()

    def info(self) -> dict:
        return {"split": self.split, "seed": self.seed, "fraction": self.fraction,
                "tracks": self.tracks, "of": self.of, "keys_sha256": self.digest}


def record_keys(dir, split, *, skip_corrupt=False) -> list[str]:
    """The ``key`` of every emovox record of ``split``, in record order."""
    ds, _ = _records(dir, split, schema_lib.EMOVOX_SCHEMA.name, shuffle_files=False, seed=0,
                     skip_corrupt=skip_corrupt)
    ds = ds.batch(4096).map(lambda s: tf.io.parse_example(s, _KEY_SPEC)["key"])
    return [k.decode() for batch in ds.as_numpy_iterator() for k in batch]


def random_subset(dir, split, fraction, seed, *, skip_corrupt=False) -> TrackSubset:
    """A random ``fraction`` of the tracks of ``split``, fixed by ``seed`` whatever order
    the records are in (protocol §6: the validation tracks): the ``round(fraction * N)``
    (at least one) tracks of smallest :func:`track_hash`, i.e. the first ones of a seeded
    permutation of the track ids. One pass over the split's keys."""
    if not 0 < fraction <= 1:
        raise CmeError(f"fraction must be in (0, 1], got {fraction}")
    keys = record_keys(dir, split, skip_corrupt=skip_corrupt)
    if not keys:
        raise CmeError(f"{dir}: split {split!r} has no records to draw {fraction:g} of")
    h = track_hash(tf.constant(keys), seed).numpy()
    n = min(len(keys), max(1, int(round(fraction * len(keys)))))
    max_hash = int(np.sort(h)[n - 1])
    chosen = tuple(sorted(k for k, v in zip(keys, h) if v <= max_hash))
    return TrackSubset(split=split, seed=int(seed), fraction=float(fraction),
                       max_hash=max_hash, keys=chosen, of=len(keys))


def _in_subset(subset: TrackSubset):
    def keep(serialized):
        key = tf.io.parse_single_example(serialized, _KEY_SPEC)["key"]
        return track_hash(key, subset.seed) <= subset.max_hash
    return keep


def _clip_batches(dir, split, *, batch_size, seed, training, repeat, input_context,
                  skip_corrupt, shuffle_buffer, subset=None):
    """Serialized emovox records in batches, as the distillation pipelines read them:
    only the tracks of ``subset`` (a :class:`TrackSubset`) when given; shuffled (seeded)
    and without the last partial batch when ``training``."""
    ds, _ = _records(dir, split, schema_lib.EMOVOX_SCHEMA.name, shuffle_files=training,
                     seed=seed, input_context=input_context, skip_corrupt=skip_corrupt)
    if subset is not None:
        ds = ds.filter(_in_subset(subset))
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(_batch_size(batch_size, input_context), drop_remainder=training)


def distill_dataset(dir, split, *, batch_size, crop_samples=CROP_SAMPLES, seed=0, agg="max",
                    training=True, repeat=False, input_context=None, skip_corrupt=False,
                    shuffle_buffer=1024, subset=None):
    """Distillation batches from LABELLED emovox records:
    ``(waveform float32 [B, crop_samples], {"logits": float32 [B, 8], "label": int32 [B]})``.

    Each clip gives one random crop (protocol §3.1: zero-padded when shorter) and the
    per-emotion max (``agg="max"``) or mean of the teacher logits of the frames
    overlapping it (protocol §6); ``label`` is the arg-max of the aggregate
    (``maxLabel``). Validation uses random crops too, as the original
    (``training=False`` only stops shuffling and keeps the last partial batch).
    ``split=None`` reads every split. Crops are drawn per batch from the stateless
    seed [seed, batch number], so a seed fixes them. ``subset`` (:func:`random_subset`)
    keeps only its tracks (the validation tracks, protocol §6).
    """
    if agg not in ("max", "mean"):
        raise CmeError(f"agg must be 'max' or 'mean', got {agg!r}")
    if crop_samples < 1:
        raise CmeError(f"crop_samples must be positive, got {crop_samples}")
    sch = schema_lib.EMOVOX_SCHEMA
    m = records.read_manifest(dir, expect_schema=sch.name)
    if not m.get("labelled"):
        raise CmeError(f"{dir}: emovox records without teacher logits; label them first "
                       f"(scripts/label_faces.py) or build with --logits-mat")
    ds = _clip_batches(dir, split, batch_size=batch_size, seed=seed, training=training,
                       repeat=repeat, input_context=input_context, skip_corrupt=skip_corrupt,
                       shuffle_buffer=shuffle_buffer, subset=subset)
    spec = {k: v for k, v in sch.feature_spec(ragged=True).items()
            if k in ("audio", "num_samples", "logits")}

    def parse(serialized, sd):
        ex = tf.io.parse_example(serialized, spec)
        wave, z, _ = crop_and_aggregate_batch(ex["audio"], ex["num_samples"], ex["logits"], sd,
                                              crop_samples, agg)
        return wave, {"logits": z, "label": tf.cast(tf.argmax(z, axis=1), tf.int32)}

    ds = _seed_pairs(ds, seed).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _options(ds.prefetch(AUTOTUNE))


# ------------------------------------------------------------------ frames
def center_crop_resize(image, image_size, fraction=1 / 1.6):
    """protocol §4.4: centre crop of ``fraction`` of the largest centred square, resize
    (bilinear, antialiased), uint8."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.cast(tf.round(tf.cast(tf.minimum(h, w), tf.float32) * fraction), tf.int32)
    side = tf.maximum(side, 1)
    top, left = (h - side) // 2, (w - side) // 2
    img = image[top:top + side, left:left + side]
    size = _pair(image_size)
    img = tf.image.resize(img, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)


def frames_dataset(dir, *, image_size, split=None, crop_fraction=1 / 1.6, skip_corrupt=False):
    """Every face frame of emovox records, unbatched: ``(key, frame_idx, image uint8
    [S, S, 3])``; ``frame_idx`` is the 0-based row of the frame in its clip (the row
    of its logits). JPEG decoded, centre crop 1/1.6, resized to ``image_size``."""
    sch = schema_lib.EMOVOX_SCHEMA
    ds, _ = _records(dir, split, sch.name, shuffle_files=False, seed=0,
                     skip_corrupt=skip_corrupt)
    spec = {k: v for k, v in sch.feature_spec().items() if k in ("key", "frames")}

    def per_clip(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        frames = tf.sparse.to_dense(ex["frames"])
        n = tf.shape(frames, out_type=tf.int64)[0]
        return tf.data.Dataset.from_tensor_slices(
            (tf.fill([n], ex["key"]), tf.range(n), frames))

    def decode(key, idx, jpg):
        img = tf.io.decode_jpeg(jpg, channels=3)
        return key, idx, center_crop_resize(img, image_size, crop_fraction)

    ds = ds.flat_map(per_clip)
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _options(ds.prefetch(AUTOTUNE))


# ---------------------------------------------------------------- external
def external_dataset(dir, split=None, *, skip_corrupt=False):
    """External clips, unbatched: dicts with ``waveform`` float32 [N] (16 kHz),
    ``label`` (index in the manifest's ``classes``), ``label_name``,
    ``ferplus_label``, ``speaker``, ``dataset``, ``path``, ``split``, ``frames``
    (JPEG, possibly empty) and ``frame_times``."""
    sch = schema_lib.EXTERNAL_SCHEMA
    ds, _ = _records(dir, split, sch.name, shuffle_files=False, seed=0,
                     skip_corrupt=skip_corrupt)
    ds = ds.map(lambda s: _parse_clip(s, sch), num_parallel_calls=AUTOTUNE, deterministic=True)
    return _options(ds.prefetch(AUTOTUNE))


# ---------------------------------------------------------- online teacher
def frames_per_crop(crop_samples=CROP_SAMPLES, fs=schema_lib.SAMPLE_RATE) -> int:
    """The most frame rows any training crop of ``crop_samples`` samples overlaps: the
    maximum of :func:`logit_rows` over every start a clip of at most 19.9 s can draw
    (about ``ceil(25 (crop - 1) / (6 fs)) + 1``, computed with the same float64
    arithmetic as the row map: 18 for the default 4.024 s crop)."""
    key = (int(crop_samples), int(fs))
    if key not in _FRAMES_PER_CROP:
        starts = tf.range(max(1, schema_lib.MAX_SAMPLES - key[0]), dtype=tf.int64)
        first, last = logit_rows(starts, key[0], tf.int64.max, key[1])
        _FRAMES_PER_CROP[key] = int(tf.reduce_max(last - first + 1))
    return _FRAMES_PER_CROP[key]


_FRAMES_PER_CROP: dict = {}


def _require_frames(dir, manifest, split, skip_corrupt: bool = False) -> None:
    """CmeError unless the record set carries face frames (manifest, then its first record)."""
    if manifest.get("frames_kept") is False:
        raise CmeError(f"{dir}: labelled records written without their face frames "
                       f"(label_faces.py drops them); an online teacher needs the emovox "
                       f"records that still have them (build_records.py emovox)")
    files, _ = records.shard_files(dir, split, manifest, skip_corrupt=skip_corrupt)
    for path in files:
        for raw in records.iter_records(path, check_crc=True):
            feats = tf.train.Example.FromString(raw).features.feature
            if not feats["frames"].bytes_list.value:
                key = feats["key"].bytes_list.value[0].decode()
                raise CmeError(f"{dir}: record {key} has no face frames; an online teacher "
                               f"needs emovox records with frames (build_records.py emovox "
                               f"from the frames tree or raw videos)")
            return


def distill_frames_dataset(dir, split, *, batch_size, image_size, crop_samples=CROP_SAMPLES,
                           seed=0, training=True, repeat=False, input_context=None,
                           skip_corrupt=False, crop_fraction=1 / 1.6, max_frames=None,
                           shuffle_buffer=1024, subset=None):
    """Distillation batches for an ONLINE teacher, from emovox records WITH face frames
    (labelled or not): ``(waveform float32 [B, crop_samples], {"frames": uint8
    [B, K, S, S, 3], "frame_mask": bool [B, K]})``.

    The crops are exactly those of :func:`distill_dataset` for the same records, seed
    and batch position (the same stateless seed [seed, batch number] through
    :func:`crop_batch`, as :func:`crop_and_aggregate_batch`). ``frames[b, :n_b]`` are
    the face frames whose rows overlap crop ``b`` (:func:`logit_rows`; rows = frames
    in order), decoded as labelling decodes them (JPEG -> RGB, centre crop ``crop_fraction``, resized to
    ``image_size``, uint8); ``frame_mask[b, j]`` is ``j < n_b``, the rest is zero
    padding. ``K`` = :func:`frames_per_crop` (or ``max_frames``, at least that) keeps
    the shapes static. The teacher and the aggregation over the valid frames
    (:func:`aggregate_frame_logits`) run in :class:`tf_cme.training.distiller.Distiller`.
    A record set without frames is a CmeError here; a record without frames fails the
    pipeline naming it (``tf_cme.training.student.check_records`` finds it first).
    ``subset`` keeps only its tracks, as in :func:`distill_dataset`.
    """
    if crop_samples < 1:
        raise CmeError(f"crop_samples must be positive, got {crop_samples}")
    k = frames_per_crop(crop_samples)
    if max_frames is not None:
        if int(max_frames) < k:
            raise CmeError(f"max_frames: {max_frames} is fewer than the {k} frame rows a "
                           f"{crop_samples}-sample crop can overlap")
        k = int(max_frames)
    h, w = _pair(image_size)
    sch = schema_lib.EMOVOX_SCHEMA
    m = records.read_manifest(dir, expect_schema=sch.name)
    _require_frames(dir, m, split, skip_corrupt)
    ds = _clip_batches(dir, split, batch_size=batch_size, seed=seed, training=training,
                       repeat=repeat, input_context=input_context, skip_corrupt=skip_corrupt,
                       shuffle_buffer=shuffle_buffer, subset=subset)
    spec = {k_: v for k_, v in sch.feature_spec(ragged=True).items()
            if k_ in ("key", "audio", "num_samples", "frames")}

    def decode(jpg):
        return center_crop_resize(tf.io.decode_jpeg(jpg, channels=3), (h, w), crop_fraction)

    def parse(serialized, sd):
        ex = tf.io.parse_example(serialized, spec)
        b = tf.shape(ex["num_samples"], out_type=tf.int64)[0]
        wave, start = crop_batch(ex["audio"], ex["num_samples"], sd, crop_samples)  # as distill_dataset
        frames = ex["frames"]
        nf = tf.cast(frames.row_lengths(), tf.int64)
        check = tf.debugging.Assert(
            tf.reduce_all(nf > 0),
            ["emovox records without face frames (an online teacher needs them):",
             tf.boolean_mask(ex["key"], nf <= 0)], summarize=8)
        with tf.control_dependencies([check]):
            nf = tf.identity(nf)
        first, last = logit_rows(start, crop_samples, nf)
        rows = first[:, None] - 1 + tf.range(k, dtype=tf.int64)[None, :]      # [B, K] 0-based
        mask = (rows < last[:, None]) & (nf[:, None] > 0)
        row = tf.minimum(tf.maximum(rows, 0), tf.maximum(nf - 1, 0)[:, None])
        flat = tf.cast(frames.row_starts(), tf.int64)[:, None] + row
        jpgs = tf.gather(frames.flat_values, tf.boolean_mask(flat, mask))
        imgs = tf.map_fn(decode, jpgs, fn_output_signature=tf.TensorSpec([h, w, 3], tf.uint8))
        out = tf.scatter_nd(tf.where(mask), imgs, tf.stack([b, k, h, w, 3]))
        out = tf.ensure_shape(out, [None, k, h, w, 3])
        return wave, {"frames": out, "frame_mask": mask}

    ds = _seed_pairs(ds, seed).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _options(ds.prefetch(AUTOTUNE))


def aggregate_frame_logits(logits, mask, agg="max"):
    """Per-emotion max (or mean) of ``logits`` [B, K, 8] over the frames where ``mask``
    [B, K] is true: the aggregation of :func:`crop_and_aggregate_batch` (protocol §6) for
    the online teacher's logits of :func:`distill_frames_dataset` frames."""
    logits = tf.cast(logits, tf.float32)
    sel = tf.cast(mask, tf.bool)[:, :, None]
    if agg == "max":
        out = tf.reduce_max(tf.where(sel, logits, tf.constant(-np.inf, tf.float32)), axis=1)
    elif agg == "mean":
        tot = tf.reduce_sum(tf.where(sel, logits, tf.zeros_like(logits)), axis=1)
        cnt = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1)
        out = tot / tf.maximum(cnt, 1.0)[:, None]
    else:
        raise CmeError(f"agg must be 'max' or 'mean', got {agg!r}")
    return tf.ensure_shape(out, [None, emotions.NUM_CLASSES])
