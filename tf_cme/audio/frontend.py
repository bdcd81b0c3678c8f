"""The student's spectrogram front end, as a Keras layer (protocol §3.1 steps 1-7, §3.2).

``Spectrogram(dither, crop)`` maps float32 waveforms ``[B, L]`` at 16 kHz to
normalised linear-magnitude spectrograms ``[B, 512, M, 1]`` (frequency x time),
``M = floor((L - 400) / 160) + 1``, in the graph, with ``keras.ops`` only (so the
student also runs on Keras's JAX backend). Per clip, in this order (VGGVox
``runSpec`` -> ``mfccspec``, ``rm_dc_n_dither``):

1. if ``max|x| <= 1``: ``x *= 2**15``;
2. DC removal ``y[n] = x[n] - x[n-1] + 0.99 y[n-1]`` (zero initial state), then, only
   when ``dither=True`` and training, ``y += 1e-6 * std(y) * (u1 + u2 - 1)``;
3. pre-emphasis ``z[n] = y[n] - 0.97 y[n-1]`` (zero initial state);
4. frames of 400 samples, hop 160, no padding (the tail is dropped);
5. the symmetric Hamming window ``numpy.hamming(400)``;
6. ``|FFT_512|`` keeping all 512 bins (the mirrored negative frequencies included);
7. per frequency row: minus the mean over time, divided by the N-1 standard deviation
   over time (a row with zero spread gives zeros: silence is valid input).

``crop="bucket"`` then takes the centred crop of protocol §3.2 (after the whole-clip
normalisation): width ``w`` = the largest of 100, 200, ..., 1000 frames that is at most
``M``; start (0-based) ``max(round((M - w) / 2), 1) - 1`` (MATLAB's 1-based
``rstart = round((N - w)/2)`` with 0 mapped to 1).

Steps 2 and 3 run without a per-sample loop, to float32 precision: about one rounding
of the exact result per sample, as a sequential float32 filter gives, not the ~sqrt(64)
roundings of a plain float32 block product, whose rounding noise is white and, once each
frequency row is normalised, swamps the quiet rows. ``d[n] = x[n] - x[n-1]`` is cut into
blocks of :data:`BLOCK` samples; inside a block each filter is a matrix product with the
lower-triangular Toeplitz matrix of its impulse response, and the state ``s`` carried
in (``y`` at the previous block's end) adds ``s * 0.99**(i+1)`` to ``y[i]`` and
``s * (0.99 - 0.97) * 0.99**i`` to ``z[i]``. The block-end states follow
``s_b = P s_{b-1} + e_b``, ``P = 0.99**BLOCK`` (= 0.53), ``e_b`` the zero-state block
end, summed by recursive doubling over 64 blocks (``P**64 ~ 1e-18``). The block products
are made exact by splitting both operands (:func:`_split_dot`): high parts with few
significant bits on a power-of-two grid, whose products and sums float32 holds exactly,
and small remainders computed in plain float32. Without dither the layer filters ``d``
straight to ``z`` (both filters at once: the same maths, one rounding fewer); with dither
it forms ``y``, adds the dither, then pre-emphasises as ``(y[n] - y[n-1]) + 0.03 y[n-1]``
(the value of ``y[n] - 0.97 y[n-1]``, with a 30 times smaller product to round).
"""
from __future__ import annotations

import math

import numpy as np

import keras
from keras import ops

from .constants import SAMPLE_RATE, TRAIN_CROP_SAMPLES  # noqa: E402,F401  (defined once there)
FRAME = 400               # round(0.025 * 16000)
HOP = 160                 # 0.010 * 16000
NFFT = 512                # 2 ** nextpow2(400)
NUM_BINS = NFFT
DC_POLE = 0.99            # rm_dc_n_dither at 16 kHz
PREEMPH = 0.97
DITHER_SCALE = 1e-6
BUCKET_STEP = 100
MAX_BUCKET = 1000
MIN_BUCKET_FRAMES = 100
BLOCK = 64
_HI_BITS = 9              # bits of the high parts in _split_dot (see there)
_STATE_DOUBLINGS = 6      # block-end states summed over 2**6 blocks: (0.99**64)**64 ~ 1e-18


def num_frames(num_samples: int) -> int:
    """Frames of a clip of ``num_samples`` samples (0 when shorter than one frame)."""
    return 0 if num_samples < FRAME else (num_samples - FRAME) // HOP + 1


def samples_for_frames(frames: int) -> int:
    """The fewest samples that give ``frames`` frames (400 frames -> 64,384 - 160 + ...)."""
    return FRAME + (frames - 1) * HOP


def bucket_width(frames: int) -> int:
    """Largest 100-frame bucket (100..1000) not above ``frames`` (protocol §3.2)."""
    if frames < MIN_BUCKET_FRAMES:
        raise ValueError(f"a bucket crop needs at least {MIN_BUCKET_FRAMES} frames "
                         f"({samples_for_frames(MIN_BUCKET_FRAMES)} samples); got {frames}")
    return min(MAX_BUCKET, (frames // BUCKET_STEP) * BUCKET_STEP)


def bucket_start(frames: int) -> int:
    """0-based first frame of the bucket crop of a clip with ``frames`` frames."""
    w = bucket_width(frames)
    return max(int(math.floor((frames - w) / 2 + 0.5)), 1) - 1


def _split_weights(w: np.ndarray):
    """float64 ``w`` [K, N] (``|w| <= 1``) -> float32 ``(w_hi, [w_lo; w])`` for
    :func:`_split_dot`: ``w_hi`` is ``w`` rounded to multiples of ``2**-_HI_BITS``,
    ``w_lo = w - w_hi``."""
    assert np.max(np.abs(w)) <= 1.0
    hi = np.round(w * 2.0 ** _HI_BITS) / 2.0 ** _HI_BITS
    return hi.astype(np.float32), np.concatenate([w - hi, w]).astype(np.float32)


def _iir_matrices() -> dict:
    """The block filters (float64 maths, float32 tables) for steps 2-3.

    ``y``: [BLOCK, BLOCK] zero-state DC filter of a block of ``d`` (row k = source sample,
    column i = output sample), whose last column is the block-end value; ``z``:
    [BLOCK, BLOCK + 1], the zero-state DC filter followed by pre-emphasis, plus the
    block-end ``y`` as an extra column; each as ``(hi, [lo; full])`` (:func:`_split_weights`).
    ``carry_y`` / ``carry_z``: what a carried-in state ``s`` adds to sample ``i`` of ``y``
    / ``z``; ``state_gains``: ``P**(2**j)``, ``P = 0.99**BLOCK``, for the doubling.
    """
    k = np.arange(BLOCK)
    diff = k[None, :] - k[:, None]                          # [src k, dst i] = i - k
    lag = np.maximum(diff, 0)
    t_y = np.where(diff >= 0, DC_POLE ** lag, 0.0)
    h_z = np.where(lag == 0, 1.0, (DC_POLE - PREEMPH) * DC_POLE ** (lag - 1.0))
    t_z = np.where(diff >= 0, h_z, 0.0)                     # (1 - 0.97 z^-1) after the DC filter
    z_and_end = np.concatenate([t_z, t_y[:, -1:]], axis=1)
    pole_block = DC_POLE ** BLOCK
    return {"y": _split_weights(t_y), "z": _split_weights(z_and_end),
            "carry_y": (DC_POLE ** (k + 1.0)).astype(np.float32),
            "carry_z": ((DC_POLE - PREEMPH) * DC_POLE ** k).astype(np.float32),
            "state_gains": [np.float32(pole_block ** (2 ** j)) for j in range(_STATE_DOUBLINGS)]}


def _split_dot(u, w_hi, w_rest):
    """``u @ w`` for ``u`` [B, n, K] (K <= 64) and ``w`` split by :func:`_split_weights`,
    with the error of one float32 rounding of the exact product.

    A float32 matrix product rounds every partial sum; its error, ~sqrt(K) roundings at
    the scale of the sums, is white noise. Here each row of ``u`` is split as ``u_hi +
    u_lo``: ``u_hi`` is ``u`` rounded to multiples of ``g``, a power of two with
    ``max|u_row| <= 2**_HI_BITS * g``, and ``u_lo = u - u_hi`` exactly. Every product of
    ``u_hi`` and ``w_hi`` is then an integer multiple of ``g * 2**-_HI_BITS`` of at most
    ``2**(2 * _HI_BITS)`` of them, so the K-term sums (at most ``2**24`` units) are exact
    in any order; ``u_hi @ w_lo + u_lo @ w`` is ``2**-_HI_BITS`` smaller and is rounded
    at that scale. The operands of the exact product have at most 10 significant bits,
    which TF32 holds, so where matrix products round their inputs to TF32 (GPUs) only
    the small remainder loses precision.
    """
    m = ops.max(ops.abs(u), axis=-1, keepdims=True)
    m = ops.where(m > 0, m, ops.ones_like(m))
    e = ops.clip(ops.ceil(ops.log2(m)), -100.0, 100.0) - _HI_BITS
    g = ops.power(2.0, e)                                   # exact: a power of two
    g = ops.where(g * 2.0 ** _HI_BITS < m, 2.0 * g, g)      # log2 rounded down
    hi = ops.round(u / g) * g
    lo = u - hi
    return (ops.matmul(hi, ops.convert_to_tensor(w_hi))
            + ops.matmul(ops.concatenate([hi, lo], axis=-1), ops.convert_to_tensor(w_rest)))


@keras.saving.register_keras_serializable(package="tf_cme")
class Spectrogram(keras.layers.Layer):
    """Waveform ``[B, L]`` (16 kHz) -> normalised spectrogram ``[B, 512, M, 1]`` float32.

    Args:
      dither: add the tiny triangular dither of ``rm_dc_n_dither`` while training.
      crop: ``"none"`` (all frames) or ``"bucket"`` (protocol §3.2 centred bucket crop).
    Always computes in float32, whatever the global dtype policy.
    """

    def __init__(self, dither: bool = False, crop: str = "none", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if crop not in ("none", "bucket"):
            raise ValueError(f"Spectrogram crop must be 'none' or 'bucket', got {crop!r}")
        self.dither = bool(dither)
        self.crop = crop
        self._iir = _iir_matrices()
        self.window = np.hamming(FRAME).astype(np.float32)
        if self.dither and keras.backend.backend() != "tensorflow":
            self._seed = keras.random.SeedGenerator(1234)

    # -- checks --------------------------------------------------------------------
    def _min_samples(self) -> int:
        return samples_for_frames(MIN_BUCKET_FRAMES) if self.crop == "bucket" else FRAME

    def _check_length(self, length):
        need = self._min_samples()
        what = ("one frame" if self.crop == "none"
                else f"{MIN_BUCKET_FRAMES} frames (the smallest bucket)")
        msg = (f"Spectrogram: clip of {{}} samples is shorter than {what}: "
               f"at least {need} samples at {SAMPLE_RATE} Hz are needed")
        if isinstance(length, int):
            if length < need:
                raise ValueError(msg.format(length))
            return None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            return tf.debugging.assert_greater_equal(
                length, need, message=msg.format("fewer"))
        return None

    def compute_output_shape(self, input_shape):
        length = input_shape[-1]
        frames = None
        if length is not None:
            frames = num_frames(length)
            if self.crop == "bucket" and frames >= MIN_BUCKET_FRAMES:
                frames = bucket_width(frames)
        return (input_shape[0], NUM_BINS, frames, 1)

    # -- the steps -----------------------------------------------------------------
    def _block_filter(self, x, length, to_z: bool):
        """Step 2 (``to_z=False``: ``y``) or steps 2-3 (``to_z=True``: ``z``) along the
        last axis, blockwise, to float32 precision (see the module docstring)."""
        d = x - ops.pad(x, [[0, 0], [1, 0]])[:, :-1]           # x[n] - x[n-1]
        nblocks = (length + BLOCK - 1) // BLOCK
        d = ops.pad(d, [[0, 0], [0, BLOCK * nblocks - length]])
        blocks = ops.reshape(d, (-1, nblocks, BLOCK))
        if to_z:
            out = _split_dot(blocks, *self._iir["z"])          # [B, nb, BLOCK + 1]
            local, ends = out[:, :, :BLOCK], out[:, :, BLOCK]
        else:
            local = _split_dot(blocks, *self._iir["y"])
            ends = local[:, :, BLOCK - 1]                       # zero-state block ends
        # s_b = P s_{b-1} + e_b (y at each block end): recursive doubling
        states = ends
        for j, gain in enumerate(self._iir["state_gains"]):
            shift = 2 ** j
            states = states + gain * ops.pad(states, [[0, 0], [shift, 0]])[:, :-shift]
        prev = ops.pad(states, [[0, 0], [1, 0]])[:, :-1]       # carried into each block
        carry = ops.convert_to_tensor(self._iir["carry_z" if to_z else "carry_y"])
        out = local + ops.expand_dims(prev, -1) * carry
        return ops.reshape(out, (-1, nblocks * BLOCK))[:, :length]

    @staticmethod
    def _preemphasis(y):
        """``z[n] = y[n] - 0.97 y[n-1]`` (zero initial state), as
        ``(y[n] - y[n-1]) + 0.03 y[n-1]``: the same value, a smaller product to round."""
        prev = ops.pad(y, [[0, 0], [1, 0]])[:, :-1]
        return (y - prev) + np.float32(1.0 - PREEMPH) * prev

    def _add_dither(self, y, length):
        n = ops.cast(length, "float32")
        mean = ops.mean(y, axis=-1, keepdims=True)
        std = ops.sqrt(ops.sum(ops.square(y - mean), axis=-1, keepdims=True)
                       / ops.maximum(n - 1.0, 1.0))
        shape = ops.shape(y)
        if keras.backend.backend() == "tensorflow":
            # stateless, seeded by the batch's content: reproducible across restarts
            # and replicas, and no seed variable to update in a replica context
            import tensorflow as tf
            seed = tf.bitcast(tf.stack([tf.reduce_sum(y * y), tf.reduce_sum(y)]), tf.int32)
            u = (tf.random.stateless_uniform(shape, seed)
                 + tf.random.stateless_uniform(shape, seed[::-1] + 1) - 1.0)
        else:
            u = (keras.random.uniform(shape, seed=self._seed)
                 + keras.random.uniform(shape, seed=self._seed) - 1.0)
        return y + DITHER_SCALE * std * u

    def _frames(self, z, length, frames):
        """``[B, L]`` -> ``[B, M, 400]`` (hop 160) from 5 strided slices of 80-sample blocks."""
        sub = 80                                               # gcd(400, 160)
        nsub = 2 * frames + 3                                  # 80-blocks covering M frames
        z = z[:, : sub * nsub]                                 # = 160 (M - 1) + 400 <= L
        blocks = ops.reshape(z, (-1, nsub, sub))
        parts = [blocks[:, j: j + 2 * frames - 1: 2, :] for j in range(FRAME // sub)]
        return ops.concatenate(parts, axis=-1)

    def call(self, inputs, training=None):
        x = ops.convert_to_tensor(inputs)
        if len(x.shape) != 2:
            raise ValueError(f"Spectrogram expects waveforms [batch, samples], got shape "
                             f"{tuple(x.shape)}")
        x = ops.cast(x, "float32")
        static_len = x.shape[-1]
        length = static_len if static_len is not None else ops.shape(x)[-1]
        check = self._check_length(length)
        if check is not None:                                   # dynamic length (TF)
            import tensorflow as tf
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        # 1. int16 scale when the clip is in [-1, 1]
        peak = ops.max(ops.abs(x), axis=-1, keepdims=True)
        x = ops.where(peak <= 1.0, x * 32768.0, x)
        # 2. DC removal (+ dither), 3. pre-emphasis
        if self.dither and training:
            y = self._add_dither(self._block_filter(x, length, to_z=False), length)
            z = self._preemphasis(y)
        else:
            z = self._block_filter(x, length, to_z=True)    # both filters at once
        # 4-6. frames, window, |FFT_512|: bins 0..256 here, the mirrored 255 at the end
        frames = (length - FRAME) // HOP + 1
        f = self._frames(z, length, frames) * ops.convert_to_tensor(self.window)
        re, im = ops.rfft(f, fft_length=NFFT)                  # [B, M, 257]
        mag = ops.sqrt(re * re + im * im)
        # 7. per-row normalisation over time (axis 1 here); a mirrored row k = 512 - j has
        # the values of row j, so its statistics and output are row j's
        n = ops.cast(frames, "float32")
        mean = ops.mean(mag, axis=1, keepdims=True)
        centred = mag - mean
        var = ops.sum(centred * centred, axis=1, keepdims=True) / ops.maximum(n - 1.0, 1.0)
        std = ops.sqrt(var)
        safe = ops.where(std > 0, std, ops.ones_like(std))
        out = ops.where(std > 0, centred / safe, ops.zeros_like(centred))
        if self.crop == "bucket":
            out = self._bucket(out, frames)
        out = ops.transpose(out, (0, 2, 1))                     # [B, 257, M]
        out = ops.concatenate([out, ops.flip(out[:, 1:NFFT // 2, :], axis=1)], axis=1)
        return ops.expand_dims(out, -1)                         # [B, 512, M, 1]

    def _bucket(self, spec, frames):
        if isinstance(frames, int):
            w, start = bucket_width(frames), bucket_start(frames)
            return spec[:, start:start + w, :]
        w = ops.minimum((frames // BUCKET_STEP) * BUCKET_STEP, MAX_BUCKET)
        start = ops.maximum(ops.cast(ops.floor(ops.cast(frames - w, "float32") / 2.0 + 0.5),
                                     "int32"), 1) - 1
        idx = start + ops.arange(0, w, dtype="int32")
        return ops.take(spec, idx, axis=1)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({"dither": self.dither, "crop": self.crop})
        cfg.pop("dtype", None)
        return cfg
