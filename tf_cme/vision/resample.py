"""The teacher's resampler: MatConvNet's ``vl_nnbilinearsampler`` (protocol §4.2 step 4, §4.3).

The original prepares a FER+ face as: 48x48 grey, replicated to 3 channels, **minus the mean**,
then ONE bilinear interpolation to 224x224 on a sampling grid in normalised coordinates
where -1 and +1 are the centres of the corner pixels (align corners); the training
augmentation (protocol §4.2 step 5) only changes that grid. A sample tap that falls outside
the image contributes 0, which after the mean subtraction is the mean colour.

:func:`affine_sample` is that sampler in TensorFlow ops (no tensorflow-io, exportable): for
output pixel (row i, column j) of an ``S_h x S_w`` output, the normalised output coordinates
are ``u = -1 + 2 j / (S_w - 1)``, ``v = -1 + 2 i / (S_h - 1)``; the affine ``A = [L | t]``
(``[2, 3]``, acting on ``(x, y)``, output -> input) gives ``(x, y) = L (u, v) + t``, read at
pixel ``((x + 1) / 2 (W - 1), (y + 1) / 2 (H - 1))`` (0-based) of the ``H x W`` input with the
four bilinear taps; taps outside the image count as 0. ``affine=None`` is the identity grid.
The coordinates and tap weights are computed in float64 and the taps summed in float32, so
the result is within about 1e-4 of a float64 evaluation on the 0-255 scale.
"""
from __future__ import annotations

__all__ = ["affine_sample", "identity_affine"]


def identity_affine(batch):
    """``[batch, 2, 3]`` float32 identity affines (``[I | 0]``)."""
    import tensorflow as tf
    eye = tf.concat([tf.eye(2), tf.zeros([2, 1])], axis=1)
    return tf.tile(eye[None], tf.stack([batch, 1, 1]))


def _normalised(n, dtype):
    """``n`` align-corners positions in [-1, 1] (0 when n == 1)."""
    import tensorflow as tf
    n = tf.cast(n, dtype)
    i = tf.range(n, dtype=dtype)
    return tf.where(n > 1, -1.0 + 2.0 * i / tf.maximum(n - 1.0, 1.0), tf.zeros_like(i))


def affine_sample(images, size, affine=None):
    """``vl_nnbilinearsampler`` of float ``images [B, H, W, C]`` on an affine grid.

    ``size``: the output side (int) or ``(S_h, S_w)``; ``affine``: None (identity) or
    ``[B, 2, 3]`` normalised output -> input maps on ``(x, y)``. Returns float32
    ``[B, S_h, S_w, C]``; taps outside the image are 0 (subtract the mean first).
    """
    import tensorflow as tf
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    x = tf.convert_to_tensor(images)
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    f64 = tf.float64
    gu = _normalised(sw, f64)                                   # [S_w]
    gv = _normalised(sh, f64)                                   # [S_h]
    hf, wf = tf.cast(h, f64), tf.cast(w, f64)
    if affine is None:
        # the identity grid is separable: the same columns for every row and image
        px = tf.broadcast_to((gu[None, None, :] + 1.0) / 2.0 * (wf - 1.0), [1, sh, sw])
        py = tf.broadcast_to((gv[None, :, None] + 1.0) / 2.0 * (hf - 1.0), [1, sh, sw])
        px = tf.tile(px, tf.stack([b, 1, 1]))
        py = tf.tile(py, tf.stack([b, 1, 1]))
    else:
        a = tf.cast(tf.convert_to_tensor(affine), f64)          # [B, 2, 3]
        a = tf.ensure_shape(a, [None, 2, 3])
        uu = tf.broadcast_to(gu[None, :], [sh, sw])
        vv = tf.broadcast_to(gv[:, None], [sh, sw])
        xin = (a[:, 0, 0, None, None] * uu + a[:, 0, 1, None, None] * vv
               + a[:, 0, 2, None, None])
        yin = (a[:, 1, 0, None, None] * uu + a[:, 1, 1, None, None] * vv
               + a[:, 1, 2, None, None])
        px = (xin + 1.0) / 2.0 * (wf - 1.0)
        py = (yin + 1.0) / 2.0 * (hf - 1.0)
    x0 = tf.floor(px)
    y0 = tf.floor(py)
    wx1 = px - x0
    wy1 = py - y0
    # pad one zero pixel all round: every tap index is clipped into the padded image,
    # and a tap outside the real image either lands on the zero border or gets weight 0
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    flat = tf.reshape(xp, tf.stack([b, -1, c]))
    wp = w + 2

    def tap(yi, xi, wgt):
        inside = (xi >= 0) & (xi <= wf - 1.0) & (yi >= 0) & (yi <= hf - 1.0)
        wgt = tf.where(inside, wgt, tf.zeros_like(wgt))
        xi = tf.cast(tf.clip_by_value(xi, -1.0, wf), tf.int32) + 1
        yi = tf.cast(tf.clip_by_value(yi, -1.0, hf), tf.int32) + 1
        idx = tf.reshape(yi * wp + xi, tf.stack([b, -1]))
        vals = tf.gather(flat, idx, batch_dims=1)               # [B, S_h*S_w, C]
        return vals * tf.reshape(tf.cast(wgt, tf.float32), tf.stack([b, -1, 1]))

    out = (tap(y0, x0, (1.0 - wy1) * (1.0 - wx1)) + tap(y0, x0 + 1.0, (1.0 - wy1) * wx1)
           + tap(y0 + 1.0, x0, wy1 * (1.0 - wx1)) + tap(y0 + 1.0, x0 + 1.0, wy1 * wx1))
    return tf.reshape(out, tf.stack([b, sh, sw, c]))
