"""The project's one resampler (tf_cme.audio.resample) against scipy.signal.resample_poly:
its TensorFlow execution (graphs, exported models) and its NumPy execution (``resample_np``,
offline stages and worker processes) of the same polyphase matrices."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.signal as ss
import tensorflow as tf

from tf_cme.audio import resample as R

PAIRS = [(8000, 16000), (22050, 16000), (44100, 16000), (48000, 16000), (16000, 8000)]
TOL = 1e-5          # against scipy (float64 accumulation)
NP_TF_TOL = 2e-6    # NumPy against TensorFlow execution (float32, different summation order)


def _ref(x, rate_in, rate_out):
    up, down = R.ratio(rate_in, rate_out)
    return ss.resample_poly(np.asarray(x, np.float32), up, down, axis=-1)


def _signal(rng, shape):
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


@functools.cache
def _dynamic(rate_out):
    """One traced graph per output rate (tracing builds a branch per common rate; to
    8 kHz only the 16 kHz branch, to keep the test quick)."""
    rates = R.COMMON_RATES if rate_out == 16000 else (16000,)
    return tf.function(lambda v, r: R.resample_dynamic(v, r, rate_out, rates=rates),
                       input_signature=[tf.TensorSpec([None], tf.float32),
                                        tf.TensorSpec([], tf.int32)])


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (320, 441), (160, 441), (1, 3), (640, 441)])
def test_filter_taps_bit_identical_to_scipy(up, down):
    ref = ss.firwin(2 * 10 * max(up, down) + 1, 1.0 / max(up, down), window=("kaiser", 5.0))
    ref = ref.astype(np.float32) * np.float32(up)
    np.testing.assert_array_equal(R.design_filter(up, down), ref)


def test_ratio_and_length():
    assert R.ratio(44100, 16000) == (160, 441)
    assert R.ratio(22050, 16000) == (320, 441)
    assert R.ratio(48000, 16000) == (1, 3)
    assert R.ratio(16000, 16000) == (1, 1)
    for n in (0, 1, 7, 441, 44100, 44101):
        assert R.output_length(n, 44100, 16000) == len(ss.resample_poly(np.ones(n), 160, 441)) \
            if n else R.output_length(n, 44100, 16000) == 0
    with pytest.raises(ValueError, match="rate_in"):
        R.ratio(0, 16000)
    with pytest.raises(ValueError, match="rate_out"):
        R.ratio(16000, 22050.5)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_eager_parity_with_scipy(rate_in, rate_out):
    rng = np.random.default_rng(rate_in)
    for n in (1, 7, 997, rate_in // 4 + 3):
        x = _signal(rng, (2, n))
        ref = _ref(x, rate_in, rate_out)
        y = R.resample(tf.constant(x), rate_in, rate_out).numpy()       # batched tensor
        assert y.shape == ref.shape and y.dtype == np.float32
        assert np.abs(y - ref).max() < TOL, (rate_in, rate_out, n)
        y1 = R.resample_np(x[1], rate_in, rate_out)                     # 1-D NumPy
        assert y1.shape == ref[1].shape
        assert np.abs(y1 - ref[1]).max() < TOL


@pytest.mark.parametrize("rate_in", R.COMMON_RATES)
def test_numpy_and_tensorflow_executions_agree(rate_in):
    """``resample_np`` (NumPy matmuls) and ``resample`` (conv1d / batched matmul in TF) run
    the same polyphase matrices: equal to float32 rounding, both within scipy's tolerance,
    in both forms (plain kernel for few phases, banded groups for many)."""
    rng = np.random.default_rng(rate_in + 7)
    up, down = R.ratio(rate_in, 16000)
    for n in (1, 5, 1001, rate_in + 17):
        x = _signal(rng, (3, n))
        y_np = R.resample_np(x, rate_in, 16000)
        y_tf = R.resample(tf.constant(x), rate_in, 16000).numpy()
        assert y_np.shape == y_tf.shape == (3, R.output_length(n, rate_in, 16000))
        assert y_np.dtype == np.float32
        assert np.abs(y_np - y_tf).max() < NP_TF_TOL, (rate_in, n)
        if up != down:
            ref = _ref(x, rate_in, 16000)
            assert np.abs(y_np - ref).max() < TOL and np.abs(y_tf - ref).max() < TOL


def test_numpy_execution_in_chunks_is_exact(monkeypatch):
    """Long signals are resampled a bounded number of blocks at a time: chunk boundaries
    change nothing (BLAS may sum a different number of rows in another order: float32
    rounding, while a misplaced block would be off by the signal's size)."""
    rng = np.random.default_rng(3)
    x = _signal(rng, (2, 20011))
    whole = {r: R.resample_np(x, r, 16000) for r in (44100, 48000)}
    monkeypatch.setattr(R, "_CHUNK_SAMPLES", 3000)            # a few blocks per chunk
    for r, y in whole.items():
        np.testing.assert_allclose(R.resample_np(x, r, 16000), y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_graph_parity_dynamic_length_and_tensor_rate(rate_in, rate_out):
    """Inside tf.function: unknown length with Python rates, and the rate as a tensor
    (what export's from_wav signature gets from tf.audio.decode_wav)."""
    rng = np.random.default_rng(rate_out + rate_in)
    static = tf.function(lambda v: R.resample(v, rate_in, rate_out),
                         input_signature=[tf.TensorSpec([None, None], tf.float32)])
    dynamic = _dynamic(rate_out)
    for n in (5, 3001):
        x = _signal(rng, (3, n))
        ref = _ref(x, rate_in, rate_out)
        y = static(x).numpy()
        assert y.shape == ref.shape and np.abs(y - ref).max() < TOL
        yd = dynamic(x[0], tf.constant(rate_in)).numpy()
        assert yd.shape == ref[0].shape and np.abs(yd - ref[0]).max() < TOL


def test_dynamic_rate_all_common_rates_and_identity():
    rng = np.random.default_rng(1)
    x = _signal(rng, (1000,))
    fn = _dynamic(16000)
    for rate in R.COMMON_RATES:
        y = fn(tf.constant(x), tf.constant(rate, tf.int32)).numpy()
        if rate == 16000:
            np.testing.assert_array_equal(y, x)
        else:
            ref = _ref(x, rate, 16000)
            assert y.shape == ref.shape and np.abs(y - ref).max() < TOL
    # eager with a tensor rate goes through the same numbers
    y = R.resample(x, tf.constant(44100), 16000).numpy()
    assert np.abs(y - _ref(x, 44100, 16000)).max() < TOL


def test_unsupported_tensor_rate_is_a_clear_error():
    fn = _dynamic(16000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported sample rate"):
        fn(tf.zeros([100]), tf.constant(12345))


def test_graph_has_only_core_ops():
    fn = _dynamic(16000).get_concrete_function()
    ops = {op.type for op in fn.graph.get_operations()}
    for f in fn.graph._functions.values():  # switch_case branches
        ops |= {node.op for node in f.definition.node_def}
    assert "Conv2D" in ops and ("BatchMatMulV2" in ops or "BatchMatMulV3" in ops)
    assert not [o for o in ops if o.startswith("IO>")]


def test_shapes_axes_and_edge_cases():
    rng = np.random.default_rng(2)
    x = _signal(rng, (2, 3, 500))
    y = R.resample(x, 48000, 16000)
    assert y.shape == (2, 3, 167)
    assert np.abs(y.numpy() - _ref(x, 48000, 16000)).max() < TOL
    xt = np.ascontiguousarray(x[0].T)                       # [samples, channels]
    y0 = R.resample_np(xt, 22050, 16000, axis=0)
    ref = ss.resample_poly(xt, 320, 441, axis=0)
    assert y0.shape == ref.shape and np.abs(y0 - ref).max() < TOL
    np.testing.assert_array_equal(R.resample_np(x, 16000, 16000), x)   # same rate: a copy
    assert R.resample_np(np.zeros(0, np.float32), 44100, 16000).shape == (0,)
    assert R.resample(tf.zeros([2, 0]), 44100, 16000).shape == (2, 0)


def test_sine_keeps_frequency_and_amplitude():
    t = np.arange(44100) / 44100.0
    x = (0.8 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = R.resample_np(x, 44100, 16000)
    assert y.shape == (16000,)
    ref = 0.8 * np.sin(2 * np.pi * 1000.0 * np.arange(16000) / 16000.0)
    mid = slice(200, -200)                                # away from the zero-padded ends
    assert np.abs(y[mid] - ref[mid]).max() < 2e-3
