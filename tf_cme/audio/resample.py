"""The one resampler of tf-cme: polyphase (upfirdn) resampling, one filter design and one
set of polyphase matrices, executed in core TensorFlow ops or in NumPy.

Every stage that changes a sample rate uses this module: the record builders and
``load_audio`` through :func:`resample_np` (NumPy: builder workers never import
TensorFlow), the exported SavedModels (``from_wav`` feeds ``tf.audio.decode_wav``'s rate
tensor to :func:`resample_dynamic`) and graphs through :func:`resample` (TensorFlow).
It reproduces ``scipy.signal.resample_poly(x, up, down)`` with its defaults (Kaiser
window, beta 5.0, ``half_len = 10 * max(up, down)``, gain ``up``, zero padding at both
ends, the same output length ``ceil(n * up / down)`` and the same alignment: output
sample ``k`` is centred on input time ``k * down / up``), to float32 rounding
(about 3e-7 max abs error on unit-variance noise).

How it is computed.  With ``h_c`` the centred filter (taps ``-half_len..half_len``),

    y[k] = sum_i h_c[k * down - i * up] * x[i].

The pattern of taps repeats every ``U = k_block * up`` outputs (``k_block`` makes ``U`` at
least 16, so the products below stay efficient when ``up`` is 1 or 2); the outputs
``s*U .. s*U + U - 1`` read a window of ``W`` input samples starting at ``s*D - A``
(``D = k_block * down``).  So the resampler is a matrix product per block of outputs, and
no zero-stuffed upsampled signal is ever built (44.1 -> 16 kHz is ``up = 160``,
``down = 441``):

- few phases (``up`` small: 8, 24, 32, 48 kHz -> 16 kHz): ONE strided ``conv1d`` over the
  zero-padded signal with the ``[W, 1, U]`` polyphase matrix as kernel, stride ``D``;
- many phases (11.025, 22.05, 44.1 kHz -> 16 kHz): the matrix is banded (each phase
  uses only ``2 * half_len / up + 1`` taps of the ``W``), so the phases are cut into
  groups of up to 80 whose windows of ``Wg`` samples are slices of the signal reshaped
  into blocks, and one batched ``matmul`` does all groups (``Wg / W``, a sixth to a half,
  of the multiply-adds of the plain kernel).

Only core ops (pad, reshape, strided slice, conv1d, batch matmul, switch_case): safe for
exported SavedModels (no tensorflow-io).  :func:`resample_np` applies the same matrices
(``[W, U]``, or per group ``[Wg, P]``) as float32 NumPy matrix products over the windows of
the padded signal, a bounded number of blocks at a time; the two executions agree to
float32 rounding (about 1e-6).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

# The rates the graph-friendly variant can dispatch on (``tf.audio.decode_wav`` returns
# the rate as a tensor, so an exported graph has to choose among known rates).
COMMON_RATES: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)

KAISER_BETA = 5.0       # scipy.signal.resample_poly's default window ('kaiser', 5.0)
_MIN_PHASES = 16        # block outputs so the conv has at least this many output channels
_GROUP_PHASES = 80      # phases per group in the banded (grouped matmul) form

__all__ = ["COMMON_RATES", "ratio", "design_filter", "polyphase_kernel", "polyphase_groups",
           "output_length", "resample", "resample_dynamic", "resample_np"]


def _as_rate(rate, name: str) -> int:
    try:
        r = int(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    if r != rate or r <= 0:
        raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    return r


@functools.lru_cache(maxsize=None)
def ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    """``(up, down)`` in lowest terms, as ``resample_poly`` reduces them."""
    rate_in, rate_out = _as_rate(rate_in, "rate_in"), _as_rate(rate_out, "rate_out")
    g = math.gcd(rate_in, rate_out)
    return rate_out // g, rate_in // g


def output_length(n_in: int, rate_in: int, rate_out: int) -> int:
    """Number of output samples: ``ceil(n_in * up / down)`` (``resample_poly``'s length)."""
    up, down = ratio(rate_in, rate_out)
    return -(-int(n_in) * up // down)


@functools.lru_cache(maxsize=64)
def design_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter of ``resample_poly(x, up, down)`` for float32 input.

    ``firwin(2 * half_len + 1, 1 / max(up, down), window=('kaiser', 5.0))`` computed in
    float64, cast to float32 and multiplied by ``up`` in float32, exactly as scipy does
    for float32 signals (the taps are bit-identical).  Read-only array.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    numtaps = 2 * half_len + 1
    cutoff = 1.0 / max_rate
    m = np.arange(numtaps, dtype=np.float64) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m)
    h *= np.kaiser(numtaps, KAISER_BETA)
    h /= np.sum(h)                       # unit DC gain (firwin scale=True, lowpass)
    h = h.astype(np.float32)
    h *= np.float32(up)
    h.setflags(write=False)
    return h


@functools.lru_cache(maxsize=64)
def polyphase_kernel(up: int, down: int) -> tuple[np.ndarray, int, int, int, int]:
    """The polyphase matrix as a conv1d kernel.

    Returns ``(kernel [W, 1, U] float32, A, W, U, D)``: output ``s*U + r`` equals
    ``sum_w kernel[w, 0, r] * x[s*D - A + w]`` (``x`` zero outside ``0..n-1``).
    """
    h = design_filter(up, down)
    half_len = (h.shape[0] - 1) // 2
    k_block = max(1, -(-_MIN_PHASES // up)) if up < _MIN_PHASES else 1
    U, D = up * k_block, down * k_block
    A = half_len // up                                   # taps reaching back in time
    W = (((U - 1) * down + half_len) // up) + A + 1      # window length per block
    r = np.arange(U)[:, None]
    w = np.arange(W)[None, :]
    t = r * down - (w - A) * up                          # index into the centred filter
    ok = np.abs(t) <= half_len
    M = np.zeros((U, W), np.float32)
    M[ok] = h[(t + half_len)[ok]]
    kernel = np.ascontiguousarray(M.T[:, None, :])
    kernel.setflags(write=False)
    return kernel, A, W, U, D


@functools.lru_cache(maxsize=64)
def polyphase_groups(up: int, down: int):
    """The banded form of :func:`polyphase_kernel` for large ``up`` (e.g. 44.1 kHz ->
    16 kHz: ``U = 160`` phases read a window of ``W = 493`` samples, but each phase only
    ``2 * half_len / up + 1 = 56`` of them).  The ``U`` phases are cut into ``G`` groups of
    ``P`` consecutive phases; group ``g`` reads ``Wg`` samples from offset ``lo[g]`` of the
    block's window, so a block costs ``G * Wg * P`` multiply-adds instead of ``W * U``.

    Returns ``(weights [G, Wg, P] float32, lo tuple[int], Wg)`` or None when the plain
    kernel is as good (few phases, or ``Wg > D``).
    """
    kernel, A, W, U, D = polyphase_kernel(up, down)
    P = max((p for p in range(1, _GROUP_PHASES + 1) if U % p == 0), default=U)
    G = U // P
    if G < 2:
        return None
    M = kernel[:, 0, :].T                                # [U, W]
    spans = []
    for g in range(G):
        cols = np.nonzero(np.any(M[g * P:(g + 1) * P] != 0, axis=0))[0]
        spans.append((int(cols[0]), int(cols[-1]) + 1))
    Wg = max(hi - lo for lo, hi in spans)
    if Wg > D or 4 * Wg > 3 * W:                        # not worth it
        return None
    weights = np.zeros((G, Wg, P), np.float32)
    for g, (lo, _) in enumerate(spans):
        seg = M[g * P:(g + 1) * P, lo:lo + Wg]
        weights[g, :seg.shape[1]] = seg.T
    weights.setflags(write=False)
    return weights, tuple(lo for lo, _ in spans), Wg


def _tf():
    import tensorflow as tf
    return tf


def _resample_2d(tf, x, up: int, down: int):
    """Resample a float32 ``[B, n]`` tensor (graph or eager; ``n`` may be dynamic)."""
    kernel, A, W, U, D = polyphase_kernel(up, down)
    groups = polyphase_groups(up, down)
    # blocks read past the last one by the grouped form (it reshapes whole blocks)
    extra = 0 if groups is None else max(groups[1]) // D + 2
    reach = W if groups is None else (extra + 1) * D   # input read from the last block's start
    n_static = x.shape[-1]
    if n_static is not None:
        n_in = int(n_static)
        n_out = -(-n_in * up // down)
        blocks = max(-(-n_out // U), 1)
        total = (blocks - 1) * D + reach
        right = max(total - A - n_in, 0)
        paddings = [[0, 0], [A, right]]
    else:
        n_in = tf.cast(tf.shape(x)[-1], tf.int64)       # int64: n * up overflows int32
        n_out = (n_in * up + down - 1) // down
        blocks = tf.maximum((n_out + U - 1) // U, 1)
        total = (blocks - 1) * D + reach
        right = tf.maximum(total - A - n_in, 0)
        paddings = tf.stack([tf.zeros([2], tf.int64),
                             tf.stack([tf.constant(A, tf.int64), right])])
    batch = tf.shape(x)[0]
    xp = tf.pad(x, paddings)
    if groups is None:
        # one strided conv: [B, total, 1] * [W, 1, U] -> [B, blocks, U]
        y = tf.nn.conv1d(xp[:, :total, None], tf.constant(kernel), stride=D, padding="VALID")
    else:
        # the signal as blocks [B, blocks + extra, D]; group g reads Wg columns from its
        # offset lo[g] of each block's window (a slice, or two when it crosses a block
        # boundary); one batched matmul [G, B*blocks, Wg] x [G, Wg, P] does all groups
        weights, lo, Wg = groups
        G, P = weights.shape[0], weights.shape[2]
        nb = blocks if isinstance(blocks, int) else tf.cast(blocks, tf.int32)
        xb = tf.reshape(xp[:, :(blocks + extra) * D], [batch, nb + extra, D])
        parts = []
        for o in lo:                                     # columns o .. o+Wg of each window
            q, r = divmod(o, D)
            if r + Wg <= D:
                parts.append(xb[:, q:q + nb, r:r + Wg])
            else:
                parts.append(tf.concat([xb[:, q:q + nb, r:],
                                        xb[:, q + 1:q + 1 + nb, :r + Wg - D]], axis=2))
        frames = tf.stack(parts)                         # [G, B, blocks, Wg]
        y = tf.linalg.matmul(tf.reshape(frames, [G, -1, Wg]), tf.constant(weights))
        y = tf.transpose(tf.reshape(y, [G, batch, nb, P]), [1, 2, 0, 3])
    y = tf.reshape(y, [batch, -1])                       # [B, blocks * U]
    return y[:, :n_out]


def resample(x, rate_in, rate_out):
    """Resample the last axis of float32 ``x`` (``[..., samples]``) from ``rate_in`` to
    ``rate_out`` Hz; the same numbers and length as ``scipy.signal.resample_poly``.

    Works eagerly and inside ``tf.function`` / SavedModel graphs, with any (also
    dynamic) number of samples.  Rates are Python ints; when ``rate_in`` is a scalar
    tensor (e.g. from ``tf.audio.decode_wav``) this dispatches to
    :func:`resample_dynamic`.  Equal rates return ``x`` unchanged.
    """
    tf = _tf()
    if isinstance(rate_in, (tf.Tensor, tf.Variable)):
        if tf.executing_eagerly():
            rate_in = int(rate_in.numpy())
        else:
            return resample_dynamic(x, rate_in, rate_out)
    up, down = ratio(rate_in, rate_out)
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    if up == down == 1:
        return tf.identity(x)
    if x.shape.rank == 0:
        raise ValueError("resample: x must have at least one (time) axis")
    if x.shape.rank == 1:
        return _resample_2d(tf, x[None, :], up, down)[0]
    if x.shape.rank == 2:
        return _resample_2d(tf, x, up, down)
    shape = tf.shape(x)
    y = _resample_2d(tf, tf.reshape(x, [-1, shape[-1]]), up, down)
    out = tf.reshape(y, tf.concat([shape[:-1], tf.shape(y)[-1:]], 0))
    if x.shape[-1] is not None:
        out.set_shape(x.shape[:-1].concatenate([output_length(x.shape[-1], rate_in, rate_out)]))
    else:
        out.set_shape(x.shape[:-1].concatenate([None]))
    return out


def resample_dynamic(x, rate_in, rate_out, rates: Sequence[int] = COMMON_RATES):
    """:func:`resample` with ``rate_in`` a scalar integer tensor (graph-friendly).

    ``rate_in`` must be one of ``rates`` (default :data:`COMMON_RATES`); one branch per
    rate is built with ``tf.switch_case`` and the matching one runs.  Any other rate
    fails with ``InvalidArgumentError`` naming the rate ("unsupported sample rate").
    ``rate_out`` is a Python int.  The output length is dynamic.
    """
    tf = _tf()
    rate_out = _as_rate(rate_out, "rate_out")
    rates = tuple(_as_rate(r, "rates") for r in rates)
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    rate = tf.cast(tf.reshape(tf.convert_to_tensor(rate_in), []), tf.int64)
    table = tf.constant(rates, tf.int64)
    match = tf.equal(table, rate)
    check = tf.debugging.Assert(
        tf.reduce_any(match),
        ["resample: unsupported sample rate", rate, "Hz; supported rates:", table])
    with tf.control_dependencies([check]):
        index = tf.cast(tf.argmax(tf.cast(match, tf.int32)), tf.int32)
    branches = [functools.partial(resample, x, r, rate_out) for r in rates]
    out = tf.switch_case(index, branches)
    out.set_shape(x.shape[:-1].concatenate([None]))
    return out


_CHUNK_SAMPLES = 1 << 20    # window samples per NumPy matmul (bounds the copies' memory)


def _resample_2d_np(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """:func:`_resample_2d` in NumPy: the same polyphase matrices (:func:`polyphase_kernel`,
    :func:`polyphase_groups`), applied as float32 matrix products over the signal's
    windows, so worker processes resample without importing TensorFlow.  ``x``: float32
    ``[B, n]`` with ``n > 0``."""
    kernel, A, W, U, D = polyphase_kernel(up, down)
    groups = polyphase_groups(up, down)
    batch, n_in = x.shape
    n_out = -(-n_in * up // down)
    blocks = max(-(-n_out // U), 1)
    if groups is None:
        parts = [(0, W, kernel[:, 0, :])]                # window offset, length, [W, U]
    else:
        weights, lo, Wg = groups
        parts = [(o, Wg, weights[g]) for g, o in enumerate(lo)]
    need = (blocks - 1) * D + max(o + w for o, w, _ in parts)
    xp = np.zeros((batch, max(need, A + n_in)), np.float32)
    xp[:, A:A + n_in] = x
    y = np.empty((batch, blocks, U), np.float32)
    # block s, part (o, w, M) fills outputs s*U + cols: xp[s*D + o : s*D + o + w] @ M
    step = max(1, _CHUNK_SAMPLES // (batch * max(w for _, w, _ in parts)))
    col = 0
    for o, w, M in parts:
        view = np.lib.stride_tricks.sliding_window_view(xp, w, axis=-1)   # [B, len-w+1, w]
        cols = M.shape[1]
        for s0 in range(0, blocks, step):
            s1 = min(blocks, s0 + step)
            win = np.ascontiguousarray(view[:, o + s0 * D:o + (s1 - 1) * D + 1:D])
            np.matmul(win, M, out=y[:, s0:s1, col:col + cols])
        col += cols
    return y.reshape(batch, blocks * U)[:, :n_out]


def resample_np(x, rate_in: int, rate_out: int, axis: int = -1) -> np.ndarray:
    """NumPy in, NumPy out: :func:`resample` along ``axis`` (float32 result), computed
    in NumPy with the same filter and polyphase matrices as the TensorFlow path (the
    two agree to float32 rounding, about 1e-6).  Never imports TensorFlow: record
    builders call it from worker processes through ``load_audio``."""
    up, down = ratio(rate_in, rate_out)
    x = np.asarray(x, dtype=np.float32)
    if up == down == 1:
        return x.copy()
    if x.ndim == 0:
        raise ValueError("resample_np: x must have at least one (time) axis")
    moved = np.moveaxis(x, axis, -1)
    lead = moved.shape[:-1]
    flat = np.ascontiguousarray(moved.reshape(int(np.prod(lead)), moved.shape[-1]))
    n_out = output_length(flat.shape[-1], rate_in, rate_out)
    if flat.shape[0] == 0 or flat.shape[-1] == 0:
        y = np.zeros((flat.shape[0], n_out), np.float32)
    else:
        y = _resample_2d_np(flat, up, down)
    return np.moveaxis(y.reshape(lead + (n_out,)), -1, axis)
