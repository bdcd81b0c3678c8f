"""A vectorised procedural face renderer (numpy only).

Faces live in a *face box* coordinate system ``(u, v)`` with ``u`` to the right and ``v``
down; the face box spans ``[-1, 1]^2``. An image with ``view=1`` shows exactly the face
box (FER2013 framing); ``view=1.6`` shows the box enlarged 1.6x around its centre (the
VoxCeleb ``1.6`` dense-frame convention: the face is the central 1/1.6 of the image).

Three groups of parameters, each a dict of float arrays of shape ``[N]``:

* identity (:func:`sample_identities`): head shape, skin tone, hair, eye/brow/mouth
  geometry, background;
* expression (:func:`expression_params`): mouth curve/opening/width, eye opening, brow
  raise/tilt, mouth asymmetry, nose wrinkle, teeth, built from an emotion (FER+ index)
  and an intensity;
* pose (:func:`sample_poses`): in-plane rotation, scale, translation, yaw, lighting,
  image noise.
"""
from __future__ import annotations

import numpy as np

from ... import emotions

#: Expression parameters, one row per FER+ emotion (FER+ order), at full intensity.
EXPR_KEYS = ("curve", "open", "width", "eye", "brow_raise", "brow_tilt", "asym",
             "wrinkle", "teeth")
_EXPR = {
    #             curve open  width  eye   raise tilt  asym  wrinkle teeth
    "neutral":   (0.0,  0.0,  0.0,   0.0,  0.0,  0.0,  0.0,  0.0,  0.0),
    "happiness": (1.0,  0.45, 0.30, -0.30, 0.1,  0.0,  0.0,  0.0,  1.0),
    "surprise":  (0.0,  1.0, -0.35,  0.60, 1.0, -0.2,  0.0,  0.0,  0.0),
    "sadness":   (-0.8, 0.0, -0.05, -0.25, 0.2, -1.0,  0.0,  0.0,  0.0),
    "anger":     (-0.35, 0.25, -0.1, -0.15, -0.8, 1.0, 0.0,  0.2,  1.0),
    "disgust":   (-0.5, 0.3,  0.1, -0.5,  -0.5, 0.4,  0.3,  1.0,  0.8),
    "fear":      (-0.3, 0.6,  0.25,  0.55, 0.7, -0.7,  0.0,  0.0,  0.3),
    "contempt":  (0.15, 0.0,  0.0,  -0.10, 0.0,  0.2,  1.0,  0.0,  0.0),
}
EXPR_TABLE = np.array([_EXPR[e] for e in emotions.FERPLUS], dtype=np.float32)

RGB2GRAY = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def sample_identities(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Appearance of ``n`` random people."""
    def u(lo, hi):
        return rng.uniform(lo, hi, n).astype(np.float32)
    tone = rng.beta(2.0, 2.0, n).astype(np.float32)
    light = np.array([236, 204, 180], np.float32)
    dark = np.array([105, 72, 52], np.float32)
    skin = light[None] * (1 - tone[:, None]) + dark[None] * tone[:, None]
    skin *= rng.uniform(0.93, 1.07, (n, 3)).astype(np.float32)
    hair_choice = rng.integers(0, 5, n)
    hair_pal = np.array([[25, 20, 18], [70, 45, 30], [120, 85, 50], [200, 170, 110],
                         [150, 150, 150]], np.float32)
    hair = hair_pal[hair_choice] * rng.uniform(0.8, 1.2, (n, 1)).astype(np.float32)
    bg = rng.uniform(30, 220, (n, 3)).astype(np.float32)
    return {
        "head_w": u(0.58, 0.72), "head_h": u(0.78, 0.92), "jaw": u(0.0, 0.35),
        "skin_r": skin[:, 0], "skin_g": skin[:, 1], "skin_b": skin[:, 2],
        "hair_r": hair[:, 0], "hair_g": hair[:, 1], "hair_b": hair[:, 2],
        "hairline": u(-0.62, -0.40), "hair_side": u(0.0, 1.0),
        "bg_r": bg[:, 0], "bg_g": bg[:, 1], "bg_b": bg[:, 2],
        "eye_x": u(0.24, 0.31), "eye_y": u(-0.16, -0.06), "eye_size": u(0.9, 1.2),
        "iris": u(25, 110),
        "brow_gap": u(0.12, 0.17), "brow_thick": u(0.035, 0.055), "brow_dark": u(0.35, 0.75),
        "nose_len": u(0.15, 0.27),
        "mouth_y": u(0.38, 0.48), "mouth_w": u(0.22, 0.29), "lip_dark": u(0.6, 0.85),
    }


def take(params: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    """Select rows of a parameter dict (``index``: int array or slice)."""
    return {k: v[index] for k, v in params.items()}


def expression_params(labels, intensity, rng: np.random.Generator | None = None,
                      jitter: float = 0.12) -> dict[str, np.ndarray]:
    """Expression parameters of FER+ emotions ``labels`` at ``intensity`` in [0, 1].

    ``intensity`` 0 is a neutral face; ``jitter`` adds idiosyncratic per-face variation.
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = np.asarray(intensity, dtype=np.float32).reshape(-1)
    if k.size == 1:
        k = np.full(labels.shape, k.item(), np.float32)
    e = EXPR_TABLE[labels] * k[:, None]
    if rng is not None and jitter > 0:
        e = e + rng.normal(0, jitter, e.shape).astype(np.float32)
    return {key: e[:, j] for j, key in enumerate(EXPR_KEYS)}


def sample_poses(rng: np.random.Generator, n: int, strength: float = 1.0) -> dict[str, np.ndarray]:
    """Random head pose, lighting and camera noise for ``n`` images."""
    def g(sd):
        return (rng.normal(0, sd * strength, n)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi, n)
    return {
        "rot": g(0.12), "scale": (1 + g(0.07)), "tx": g(0.06), "ty": g(0.06),
        "yaw": np.clip(g(0.35), -0.8, 0.8),
        "light": rng.uniform(0.0, 0.45, n).astype(np.float32) * strength,
        "light_dx": np.cos(ang).astype(np.float32), "light_dy": np.sin(ang).astype(np.float32),
        "bright": rng.uniform(0.75, 1.15, n).astype(np.float32),
        "gaze_x": g(0.3), "gaze_y": g(0.2),
        "noise": rng.uniform(1.0, 6.0, n).astype(np.float32),
    }


def _clip01(x):
    """Clip a temporary array to [0, 1] in place (faster than np.clip)."""
    np.maximum(x, 0.0, out=x)
    np.minimum(x, 1.0, out=x)
    return x


def _soft(d_px):
    """Coverage of a shape from a signed distance in pixels (negative = inside)."""
    return _clip01(0.5 - d_px)


def _mix(img, color, alpha):
    """img [3,N,H,W] <- img*(1-a) + color*a; color [N,3]; alpha [N,H,W] (channel-first
    so that every operation runs over long contiguous rows)."""
    for ch in range(3):
        c = color[:, ch][:, None, None]
        img[ch] += (c - img[ch]) * alpha
    return img


def render(ident: dict, expr: dict, pose: dict, size: int, view: float = 1.0,
           supersample: int = 1, rng: np.random.Generator | None = None,
           chunk: int = 256) -> np.ndarray:
    """Render ``N`` faces as uint8 RGB ``[N, size, size, 3]``.

    All parameter dicts must have the same ``N``. ``rng`` adds camera noise (none if None).
    """
    n = len(next(iter(ident.values())))
    out = np.empty((n, size, size, 3), np.uint8)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        img = _render_float(take(ident, sl), take(expr, sl), take(pose, sl),
                            size * supersample, view).transpose(1, 2, 3, 0)
        if supersample > 1:
            m = img.shape[0]
            img = img.reshape(m, size, supersample, size, supersample, 3).mean(axis=(2, 4))
        if rng is not None:
            sd = pose["noise"][sl][:, None, None, None]
            img = img + rng.standard_normal(img.shape, dtype=np.float32) * sd
        out[sl] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] -> uint8 grey [...] with the rgb2gray weights."""
    x = rgb.astype(np.float32)
    g = x[..., 0] * RGB2GRAY[0] + x[..., 1] * RGB2GRAY[1] + x[..., 2] * RGB2GRAY[2]  # no BLAS
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def _render_float(I, E, P, size, view):
    n = len(I["head_w"])
    col = lambda *ks: np.stack([I[k] for k in ks], axis=1)  # noqa: E731
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # [-1, 1]
    y, x = np.meshgrid(c * view, c * view, indexing="ij")
    x = x[None]
    y = y[None]
    e = lambda a: a[:, None, None]  # noqa: E731
    # pixel -> face coordinates (rotation, scale, translation)
    sc = e(P["scale"])
    cr, sr = e(np.cos(P["rot"])), e(np.sin(P["rot"]))
    xs, ys = (x - e(P["tx"])) / sc, (y - e(P["ty"])) / sc
    u = cr * xs + sr * ys
    v = -sr * xs + cr * ys
    ppu = size / (2 * view) * sc  # pixels per face unit
    # background with a gradient
    bg = col("bg_r", "bg_g", "bg_b")
    grad = (1 + 0.15 * x * e(P["light_dx"])) * np.ones_like(y)
    img = np.stack([grad * bg[:, ch][:, None, None] for ch in range(3)]).astype(np.float32)
    # hair (behind the head)
    hw, hh = e(I["head_w"]), e(I["head_h"])
    hair_d = (np.sqrt((u / (hw * 1.1)) ** 2 + ((v + 0.06) / (hh * 1.02)) ** 2) - 1) * hw
    hair_a = _soft(hair_d * ppu) * _clip01(0.5 - (v - (-0.1 + 0.5 * e(I["hair_side"]))) * ppu)
    img = _mix(img, col("hair_r", "hair_g", "hair_b"), hair_a)
    # head: an ellipse whose lower half narrows with the jaw
    jaw = 1 - e(I["jaw"]) * _clip01(v / hh) * 0.45
    head_d = (np.sqrt((u / (hw * jaw)) ** 2 + ((v - 0.05) / hh) ** 2) - 1) * hw
    head_a = _soft(head_d * ppu)
    skin = col("skin_r", "skin_g", "skin_b")
    yaw = e(P["yaw"])
    fu = u - 0.12 * yaw  # features shift with yaw
    img = _mix(img, skin, head_a)
    # hair fringe above the hairline, inside the head
    fringe = head_a * _clip01(0.5 - (v - e(I["hairline"]) - 0.04 * np.cos(3 * u)) * ppu)
    img = _mix(img, col("hair_r", "hair_g", "hair_b"), fringe)
    # shading of the face: lighting direction and a darker rim
    shade = (1 + e(P["light"]) * (u * e(P["light_dx"]) + v * e(P["light_dy"]))
             - 0.18 * _clip01(1 + head_d / hw * 4) * head_a)
    img *= shade[None]
    dark = lambda f: skin * f  # noqa: E731
    # brows
    for s in (-1.0, 1.0):
        ex = e(I["eye_x"]) * s
        bw = 0.12
        t = s * (fu - ex) / bw
        bc = e(I["eye_y"]) - e(I["brow_gap"]) - 0.09 * e(E["brow_raise"])
        vline = bc - 0.085 * e(E["brow_tilt"]) * t - 0.025 * (1 - t * t)
        thick = e(I["brow_thick"])
        d = np.maximum(np.abs(v - vline) - thick, (np.abs(t) - 1) * bw)
        img = _mix(img, dark(I["brow_dark"][:, None] * 0.5), _soft(d * ppu))
    # eyes: sclera and iris
    for s in (-1.0, 1.0):
        ex = e(I["eye_x"]) * s
        ey = e(I["eye_y"])
        rx = 0.11 * e(I["eye_size"])
        ry = np.maximum(0.06 * e(I["eye_size"]) * (1 + e(E["eye"])), 0.008)
        dd = (np.sqrt(((fu - ex) / rx) ** 2 + ((v - ey) / ry) ** 2) - 1) * ry
        eye_a = _soft(dd * ppu)
        # dark eyelid line around the eye
        lid_a = _soft((np.abs(dd) - 0.012) * ppu) * head_a
        img = _mix(img, dark(0.45), lid_a)
        img = _mix(img, np.full((n, 3), 225.0, np.float32) * e(P["bright"])[:, :, 0], eye_a)
        ir = (np.sqrt((fu - ex - 0.03 * e(P["gaze_x"])) ** 2 + (v - ey - 0.02 * e(P["gaze_y"])) ** 2)
              - 0.045 * e(I["eye_size"]))
        iris_col = np.repeat(I["iris"][:, None], 3, axis=1)
        img = _mix(img, iris_col, _soft(ir * ppu) * eye_a)
    # nose: a shaded side line, nostrils, wrinkles (disgust)
    nl = e(I["nose_len"])
    nose_side = np.maximum(np.abs(fu - 0.035 * np.sign(yaw + 1e-6)) - 0.012, np.abs(v - nl / 2) - nl / 2)
    img = _mix(img, dark(0.7), _soft(nose_side * ppu) * 0.6)
    for s in (-1.0, 1.0):
        nd = np.sqrt(((fu - s * 0.05) / 0.03) ** 2 + ((v - nl - 0.01) / 0.018) ** 2) - 1
        img = _mix(img, dark(0.45), _soft(nd * 0.018 * ppu) * (1 + 0.3 * e(np.clip(E["wrinkle"], 0, 1))))
    wr = np.clip(e(E["wrinkle"]), 0, 1.5)
    for k in range(3):
        wv = -0.06 + 0.055 * k
        wd = np.maximum(np.abs(v - wv) - 0.014, np.abs(fu) - 0.09)
        img = _mix(img, dark(0.5), _soft(wd * ppu) * np.clip(wr, 0, 1))
    # mouth: lips band around a curved centre line, dark cavity when open, teeth
    mw = e(I["mouth_w"]) * (1 + 0.3 * e(E["width"]))
    xn = np.clip(fu / mw, -1.5, 1.5)
    my = e(I["mouth_y"]) - 0.035 * wr
    yc = my - 0.12 * e(E["curve"]) * (xn * xn - 0.35) - 0.14 * e(E["asym"]) * np.clip(xn, 0, 1) ** 2
    edge = _clip01(1 - xn * xn)
    h = np.clip(e(E["open"]), 0, 1.5) * 0.12 * np.sqrt(edge)
    lip_t = 0.03
    inside_u = (np.abs(fu) - mw)
    lips = np.maximum(np.abs(v - yc) - h - lip_t, inside_u)
    img = _mix(img, dark(e(I["lip_dark"])[:, 0, 0][:, None] * np.array([[1.0, 0.78, 0.78]], np.float32)),
               _soft(lips * ppu))
    cav = np.maximum(np.abs(v - yc) - h, inside_u + 0.02)
    cav_a = _soft(cav * ppu) * _clip01(h * ppu)
    img = _mix(img, np.full((n, 3), 35.0, np.float32), cav_a)
    teeth = np.maximum(cav, (v - (yc - h * 0.15)))
    img = _mix(img, np.full((n, 3), 215.0, np.float32),
               _soft(teeth * ppu) * cav_a * np.clip(e(E["teeth"]), 0, 1))
    img *= e(P["bright"])[None]
    return img
