"""An independent float64 NumPy ``vl_nnbilinearsampler`` (MatConvNet's bilinearsampler.cpp
forward pass) and the original's FER+ input preparation (protocol §4.2 steps 2-5, §4.3).

Written from MatConvNet's loop, not from tf_cme: for every output pixel the normalised grid
point (x, y) is mapped to ``(x + 1) / 2 * (W - 1)``, ``(y + 1) / 2 * (H - 1)`` (0-based), and
the four neighbours that lie inside the image are summed with their bilinear weights.
"""
from __future__ import annotations

import numpy as np

MEAN = np.array([131.0912, 103.8827, 91.4953])


def affine_grid(affines, out_h, out_w):
    """``[B, 2, Ho, Wo]`` sampling grid (x, y) of ``[B, 2, 3]`` affines on (x, y), as
    ``vl_nnaffinegrid`` builds it (align corners: linspace(-1, 1, n))."""
    u = np.linspace(-1.0, 1.0, out_w)
    v = np.linspace(-1.0, 1.0, out_h)
    uu, vv = np.meshgrid(u, v)                  # [Ho, Wo]
    pts = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)])    # [3, Ho*Wo]
    out = []
    for a in np.asarray(affines, np.float64):
        out.append((a @ pts).reshape(2, out_h, out_w))
    return np.stack(out)


def bilinear_sampler(images, grid):
    """``images`` float64 [B, H, W, C], ``grid`` [B, 2, Ho, Wo] (x, y) -> [B, Ho, Wo, C]."""
    images = np.asarray(images, np.float64)
    b, h, w, c = images.shape
    _, _, ho, wo = grid.shape
    out = np.zeros((b, ho, wo, c))
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                x = (grid[n, 0, i, j] + 1.0) / 2.0 * (w - 1)
                y = (grid[n, 1, i, j] + 1.0) / 2.0 * (h - 1)
                sx, sy = int(np.floor(x)), int(np.floor(y))
                wx, wy = x - sx, y - sy
                acc = np.zeros(c)
                for dy, ky in ((0, 1.0 - wy), (1, wy)):
                    for dx, kx in ((0, 1.0 - wx), (1, wx)):
                        yy, xx = sy + dy, sx + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            acc += ky * kx * images[n, yy, xx]
                out[n, i, j] = acc
    return out


def ferplus_input(grey_uint8, size, affines=None, mean=MEAN):
    """The original's FER+ teacher input: grey [B, H, W, 1] -> replicated, minus the mean,
    one bilinear sampling to size x size on the (identity or given) affine grid."""
    g = np.asarray(grey_uint8, np.float64)
    x = np.repeat(g[..., :1], 3, axis=-1) - np.asarray(mean, np.float64)
    if affines is None:
        affines = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (len(g), 1, 1))
    return bilinear_sampler(x, affine_grid(affines, size, size))
