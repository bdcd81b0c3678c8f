"""The student's spectrogram front end, as a Keras layer (SPEC §3.1 steps 1-7, §3.2).

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

``crop="bucket"`` then takes the centred crop of SPEC §3.2 (after the whole-clip
normalisation): width ``w`` = the largest of 100, 200, ..., 1000 frames that is at most
``M``; start (0-based) ``max(round((M - w) / 2), 1) - 1`` (MATLAB's 1-based
``rstart = round((N - w)/2)`` with 0 mapped to 1).

The IIR filter runs without a per-sample loop and exactly to float32: the signal is
cut into blocks of :data:`BLOCK` samples; inside a block the filter is a matrix product
with the lower-triangular Toeplitz matrix of ``0.99**k``; the block-end states follow a
recurrence with pole ``0.99**BLOCK`` (= 0.53), evaluated as a causal convolution
truncated where ``0.53**k < 1e-11``; each sample then gets its block's carried-in state
times ``0.99**(i+1)``.
"""
from __future__ import annotations

import math

import numpy as np

import keras
from keras import ops

SAMPLE_RATE = 16000
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
TRAIN_CROP_SAMPLES = 64384   # 4.024 s -> 400 frames
BLOCK = 64
_CARRY_TAPS = 40          # (0.99 ** 64) ** 40 ~ 7e-12


def num_frames(num_samples: int) -> int:
    """Frames of a clip of ``num_samples`` samples (0 when shorter than one frame)."""
    return 0 if num_samples < FRAME else (num_samples - FRAME) // HOP + 1


def samples_for_frames(frames: int) -> int:
    """The fewest samples that give ``frames`` frames (400 frames -> 64,384 - 160 + ...)."""
    return FRAME + (frames - 1) * HOP


def bucket_width(frames: int) -> int:
    """Largest 100-frame bucket (100..1000) not above ``frames`` (SPEC §3.2)."""
    if frames < MIN_BUCKET_FRAMES:
        raise ValueError(f"a bucket crop needs at least {MIN_BUCKET_FRAMES} frames "
                         f"({samples_for_frames(MIN_BUCKET_FRAMES)} samples); got {frames}")
    return min(MAX_BUCKET, (frames // BUCKET_STEP) * BUCKET_STEP)


def bucket_start(frames: int) -> int:
    """0-based first frame of the bucket crop of a clip with ``frames`` frames."""
    w = bucket_width(frames)
    return max(int(math.floor((frames - w) / 2 + 0.5)), 1) - 1


def _iir_matrices():
    k = np.arange(BLOCK)
    diff = k[None, :] - k[:, None]                      # [src k, dst i] = i - k
    tri = np.where(diff >= 0, DC_POLE ** np.maximum(diff, 0), 0.0)   # float64
    carry_in = DC_POLE ** (k + 1.0)                     # effect of the previous state
    pole_block = DC_POLE ** BLOCK
    taps = pole_block ** np.arange(_CARRY_TAPS)[::-1]   # causal conv as correlation
    return (tri.astype(np.float32), carry_in.astype(np.float32),
            taps.astype(np.float32))


@keras.saving.register_keras_serializable(package="tf_cme")
class Spectrogram(keras.layers.Layer):
    """Waveform ``[B, L]`` (16 kHz) -> normalised spectrogram ``[B, 512, M, 1]`` float32.

    Args:
      dither: add the tiny triangular dither of ``rm_dc_n_dither`` while training.
      crop: ``"none"`` (all frames) or ``"bucket"`` (SPEC §3.2 centred bucket crop).
    Always computes in float32, whatever the global dtype policy.
    """

    def __init__(self, dither: bool = False, crop: str = "none", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if crop not in ("none", "bucket"):
            raise ValueError(f"Spectrogram crop must be 'none' or 'bucket', got {crop!r}")
        self.dither = bool(dither)
        self.crop = crop
        self._tri, self._carry_in, self._taps = _iir_matrices()
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
    def _dc_removal(self, x, length):
        """``filter([1 -1], [1 -0.99], x)`` along the last axis, blockwise and exact."""
        d = x - ops.pad(x, [[0, 0], [1, 0]])[:, :-1]           # x[n] - x[n-1]
        nblocks = (length + BLOCK - 1) // BLOCK
        d = ops.pad(d, [[0, 0], [0, BLOCK * nblocks - length]])
        blocks = ops.reshape(d, (-1, nblocks, BLOCK))
        local = ops.matmul(blocks, ops.convert_to_tensor(self._tri))   # zero-state blocks
        ends = local[:, :, BLOCK - 1:BLOCK]                     # [B, nb, 1]
        ends = ops.pad(ends, [[0, 0], [_CARRY_TAPS - 1, 0], [0, 0]])
        kernel = ops.reshape(ops.convert_to_tensor(self._taps), (_CARRY_TAPS, 1, 1))
        states = ops.conv(ends, kernel, strides=1, padding="valid")    # y at block ends
        prev = ops.pad(states, [[0, 0], [1, 0], [0, 0]])[:, :-1, :]    # carried-in state
        y = local + prev * ops.convert_to_tensor(self._carry_in)[None, None, :]
        return ops.reshape(y, (-1, nblocks * BLOCK))[:, :length]

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
        # 2. DC removal (+ dither)
        y = self._dc_removal(x, length)
        if self.dither and training:
            y = self._add_dither(y, length)
        # 3. pre-emphasis
        z = y - PREEMPH * ops.pad(y, [[0, 0], [1, 0]])[:, :-1]
        # 4-6. frames, window, |FFT_512| with all 512 bins
        frames = (length - FRAME) // HOP + 1
        f = self._frames(z, length, frames) * ops.convert_to_tensor(self.window)
        re, im = ops.rfft(f, fft_length=NFFT)                  # [B, M, 257]
        mag = ops.sqrt(re * re + im * im)
        mag = ops.concatenate([mag, ops.flip(mag[..., 1:NFFT // 2], axis=-1)], axis=-1)
        # 7. per-row normalisation over time (axis 1 here)
        n = ops.cast(frames, "float32")
        mean = ops.mean(mag, axis=1, keepdims=True)
        centred = mag - mean
        var = ops.sum(centred * centred, axis=1, keepdims=True) / ops.maximum(n - 1.0, 1.0)
        std = ops.sqrt(var)
        safe = ops.where(std > 0, std, ops.ones_like(std))
        out = ops.where(std > 0, centred / safe, ops.zeros_like(centred))
        if self.crop == "bucket":
            out = self._bucket(out, frames)
        out = ops.transpose(out, (0, 2, 1))                     # [B, 512, M]
        return ops.expand_dims(out, -1)

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
