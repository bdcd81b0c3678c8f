"""Record schemas: round trips through the hand-written protobuf encoder and
tf.io parsing, and errors on malformed values."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_cme.data import schema


def _values(sch):
    rng = np.random.default_rng(0)
    out = {}
    for f in sch.features:
        n = 3 if f.variable else (int(np.prod(f.shape)) if f.shape else 1)
        if f.dtype == schema.BYTES:
            v = [bytes(rng.integers(0, 256, 5, dtype=np.uint8)) + b"\x00" for _ in range(n)]
        elif f.dtype == schema.INT64:
            v = [int(x) for x in rng.integers(-2**40, 2**40, n)]
            v[0] = -1
        else:
            v = rng.normal(size=n).astype(np.float32).tolist()
        out[f.name] = v[0] if f.shape == () else v
    return out


@pytest.mark.parametrize("name", sorted(schema.SCHEMAS))
def test_round_trip(name):
    sch = schema.get(name)
    vals = _values(sch)
    data = sch.encode(vals)
    ex = tf.train.Example.FromString(data)
    assert sorted(ex.features.feature) == sorted(sch.names)
    dec = sch.decode_numpy(data)
    single = sch.parse_single(tf.constant(data))
    batch = sch.parse_batch(tf.constant([data, data]))
    for f in sch.features:
        want = vals[f.name]
        if f.dtype == schema.FLOAT32:
            np.testing.assert_array_equal(dec[f.name], np.float32(want))
            np.testing.assert_array_equal(single[f.name].numpy(), np.float32(want))
        elif f.dtype == schema.INT64:
            np.testing.assert_array_equal(dec[f.name], want)
            np.testing.assert_array_equal(single[f.name].numpy(), want)
        else:
            assert (dec[f.name] == want) and (
                single[f.name].numpy().tolist() == want if f.shape else
                single[f.name].numpy() == want)
        b = batch[f.name]
        if f.variable:
            assert isinstance(b, tf.RaggedTensor) and b.shape[0] == 2
        else:
            assert b.shape == (2,) + tuple(f.shape)


def test_empty_lists_and_errors():
    sch = schema.EMOVOX_SCHEMA
    vals = _values(sch)
    vals.update(frames=[], logits=[], frame_index=[], frame_times=[])
    p = sch.parse_single(tf.constant(sch.encode(vals)))
    assert p["frames"].shape == (0,) and p["logits"].shape == (0,)
    with pytest.raises(ValueError, match="missing feature 'key'"):
        sch.encode({k: v for k, v in vals.items() if k != "key"})
    with pytest.raises(ValueError, match="unknown feature 'bogus'"):
        sch.encode({**vals, "bogus": 1})
    with pytest.raises(ValueError, match="expected integers"):
        sch.encode({**vals, "frame_index": [0.5]})
    with pytest.raises(ValueError, match="expected one value"):
        sch.encode({**vals, "set": [1, 2]})
    f = schema.FERPLUS_SCHEMA
    with pytest.raises(ValueError, match=r"'soft': expected 8 values, got 7"):
        f.encode({**_values(f), "soft": [0.1] * 7})
    with pytest.raises(ValueError, match="expected bytes"):
        f.encode({**_values(f), "image": 5})


def test_pcm16_round_trip():
    x = np.array([0, 0.5, -1.0, 1.0, -0.25, 1 / 32768], np.float32)
    b = schema.pcm16(x)
    np.testing.assert_array_equal(np.frombuffer(b, "<i2"), [0, 16384, -32768, 32767, -8192, 1])
    np.testing.assert_array_equal(schema.pcm16_to_float(b)[[0, 1, 2, 4, 5]], x[[0, 1, 2, 4, 5]])


def test_tfrecord_writer_is_byte_identical_to_tensorflows(tmp_path):
    """Shards are written without TensorFlow (workers never import it); the bytes,
    framing and CRC-32C must be exactly those of tf.io.TFRecordWriter."""
    from tf_cme.data import records
    from tf_cme.utils import CmeError
    rng = np.random.default_rng(0)
    recs = [b"", b"x", rng.bytes(1000), rng.bytes(300_000)]
    ours = tmp_path / "ours.tfrecord"
    size = records.write_tfrecord(ours, recs)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in recs:
            w.write(r)
    assert ours.read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert size == ours.stat().st_size == sum(16 + len(r) for r in recs)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == recs
    assert list(records.iter_records(ours)) == recs
    # the known CRC-32C check value ("123456789" -> 0xE3069283)
    assert records._crc32c(b"123456789") == 0xE3069283
    bad = bytearray(ours.read_bytes())
    bad[16 + 1 + 16 + 500] ^= 1                  # a byte inside the third record
    (tmp_path / "bad.tfrecord").write_bytes(bytes(bad))
    with pytest.raises(CmeError, match="bad.tfrecord: record 2 at byte 33: data CRC mismatch"):
        list(records.iter_records(tmp_path / "bad.tfrecord"))
