"""Face detection, alignment and cropping, and the grey conversion of protocol §4.4.

- :func:`detect_faces`: OpenCV's bundled Haar frontal-face cascade (default, fast) or
  MTCNN (the ``mtcnn`` package, weights inside its wheel; gives 5 landmarks).  Detectors
  are built lazily on first use and cached per process.
- :func:`crop_face`: the VoxCeleb dense-frames convention: a square of side
  ``enlarge * max(w, h)`` (1.6 by default) centred on the face box, zero (or edge) padded
  where it leaves the image, resized to ``size``; the face is then the central
  ``1/enlarge`` of the crop, which :func:`center_crop_fraction` (protocol §4.4) takes back.
- :func:`align_face`: the same kind of square crop, but placed by a similarity transform
  from the 5 MTCNN landmarks (eyes level).
- :func:`rgb_to_grey`: MATLAB ``rgb2gray`` (:data:`RGB2GRAY` weights, rounded), uint8.

Importing this module is cheap (OpenCV, TensorFlow and MTCNN load on first use).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

__all__ = ["RGB2GRAY", "Face", "detect_faces", "crop_box", "crop_face", "center_crop_box",
           "center_crop_fraction", "alignment_matrix", "align_face", "rgb_to_grey",
           "LANDMARK_NAMES", "ALIGN_TEMPLATE"]

#: MATLAB ``rgb2gray`` weights (R, G, B), protocol §4.4.  The one definition in tf-cme: the
#: teacher model (``tf_cme.models.resnet``) imports it from here.
RGB2GRAY: tuple[float, float, float] = (0.2989, 0.5870, 0.1140)

#: Order of :attr:`Face.landmarks` rows (image-left eye first, as MTCNN names them).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Canonical 5-point layout of a tight face box of side 1 (the ArcFace 112x112 template
#: divided by 112, made left-right symmetric so the eyes are exactly level).
ALIGN_TEMPLATE = np.array([
    [38.3814, 51.5989],
    [73.6186, 51.5989],
    [56.0000, 71.7366],
    [41.4097, 92.2848],
    [70.5903, 92.2848],
], dtype=np.float64) / 112.0


class Face(tuple):
    """A detected face: the tuple ``(x, y, w, h, score)`` (pixels, top-left corner and
    size; ``score``: MTCNN confidence or the Haar cascade's level weight), plus
    ``landmarks``: float32 ``[5, 2]`` (x, y) in :data:`LANDMARK_NAMES` order, or None."""

    def __new__(cls, x, y, w, h, score=1.0, landmarks=None):
        self = super().__new__(cls, (int(x), int(y), int(w), int(h), float(score)))
        self._landmarks = None if landmarks is None else np.asarray(landmarks, np.float32)
        return self

    def __reduce__(self):
        return (Face, tuple(self) + (self.landmarks,))

    x = property(lambda self: self[0])
    y = property(lambda self: self[1])
    w = property(lambda self: self[2])
    h = property(lambda self: self[3])
    score = property(lambda self: self[4])
    landmarks = property(lambda self: self._landmarks)
    area = property(lambda self: self[2] * self[3])

    def __repr__(self) -> str:
        lm = "" if self.landmarks is None else ", landmarks=[5x2]"
        return f"Face(x={self[0]}, y={self[1]}, w={self[2]}, h={self[3]}, score={self[4]:.3f}{lm})"


# ---------------------------------------------------------------------------- detection

def _check_rgb(rgb, name="rgb") -> np.ndarray:
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB image [H, W, 3], got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {img.dtype}")
    return img


@functools.lru_cache(maxsize=None)
def _haar():
    import cv2
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError(f"cannot load OpenCV's Haar cascade {path}")
    return cascade


@functools.lru_cache(maxsize=None)
def _mtcnn(device: str = "CPU:0"):
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mtcnn import MTCNN
    return MTCNN(device=device)


def default_min_size(height: int, width: int) -> int:
    """Default smallest face side: 8% of the smaller image side, at least 24 pixels."""
    return max(24, int(round(0.08 * min(height, width))))


def detect_faces(rgb_uint8, method: str = "haar", min_size: int | None = None, *,
                 max_faces: int | None = None, min_score: float | None = None,
                 device: str = "CPU:0") -> list[Face]:
    """Faces in an RGB uint8 image ``[H, W, 3]``, largest first (then by score).

    ``method``: ``"haar"`` (OpenCV ``haarcascade_frontalface_default.xml``,
    ``scaleFactor=1.1``, ``minNeighbors=5``, on the histogram-equalised grey image) or
    ``"mtcnn"`` (with 5 landmarks).  ``min_size``: smallest face side in pixels (default
    :func:`default_min_size`).  ``min_score`` drops weaker detections; ``max_faces``
    keeps the first ones.  Returns a list of :class:`Face` (empty when none).
    """
    img = _check_rgb(rgb_uint8)
    h, w = img.shape[:2]
    if min_size is None:
        min_size = default_min_size(h, w)
    min_size = max(int(min_size), 1)
    if method == "haar":
        import cv2
        grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        grey = cv2.equalizeHist(grey)
        if min(h, w) < max(min_size, 24):
            return []
        rects, _, weights = _haar().detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size),
            outputRejectLevels=True)
        faces = [Face(x, y, bw, bh, float(s))
                 for (x, y, bw, bh), s in zip(np.asarray(rects).reshape(-1, 4),
                                              np.asarray(weights).reshape(-1))]
    elif method == "mtcnn":
        # mtcnn 1.0 misses large faces when its pyramid starts coarse (min_face_size
        # above ~24 px): keep its default pyramid and apply min_size afterwards
        found = _mtcnn(device).detect_faces(np.ascontiguousarray(img),
                                            min_face_size=min(20, min_size))
        faces = []
        for d in found or []:
            x, y, bw, bh = d["box"]
            kp = d.get("keypoints") or {}
            lm = (np.array([kp[k] for k in LANDMARK_NAMES], np.float32)
                  if all(k in kp for k in LANDMARK_NAMES) else None)
            if min(bw, bh) >= min_size:
                faces.append(Face(x, y, bw, bh, float(d["confidence"]), lm))
    else:
        raise ValueError(f"detect_faces: method must be 'haar' or 'mtcnn', got {method!r}")
    if min_score is not None:
        faces = [f for f in faces if f.score >= min_score]
    faces.sort(key=lambda f: (-f.area, -f.score))
    return faces[:max_faces] if max_faces is not None else faces


# ----------------------------------------------------------------------------- cropping

def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def crop_box(box: Sequence[float], enlarge: float = 1.6) -> tuple[int, int, int]:
    """``(x0, y0, side)``: the square of side ``round(enlarge * max(w, h))`` centred on
    the box ``(x, y, w, h, ...)`` (pixel-edge coordinates; may leave the image)."""
    x, y, w, h = (float(v) for v in box[:4])
    if not (w > 0 and h > 0):
        raise ValueError(f"crop_box: box width and height must be positive, got {box[:4]}")
    side = max(_round_half_up(enlarge * max(w, h)), 1)
    cx, cy = x + w / 2.0, y + h / 2.0
    return _round_half_up(cx - side / 2.0), _round_half_up(cy - side / 2.0), side


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interp)
    return out.reshape(size, size, *img.shape[2:])


def crop_face(rgb, box: Sequence[float], enlarge: float = 1.6, size: int | None = 224,
              pad: str = "zero") -> np.ndarray:
    """The VoxCeleb 1.6x face crop: the square :func:`crop_box` of ``box``, padded with
    zeros (``pad="zero"``) or the nearest edge pixels (``pad="edge"``) where it leaves the
    image, resized to ``size x size`` (area averaging when shrinking, bilinear when
    enlarging; ``size=None`` keeps the crop's own size).  Same dtype and channels as
    ``rgb``."""
    img = np.asarray(rgb)
    if img.ndim not in (2, 3):
        raise ValueError(f"crop_face: expected [H, W] or [H, W, C], got {img.shape}")
    x0, y0, side = crop_box(box, enlarge)
    H, W = img.shape[:2]
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + side, W), min(y0 + side, H)
    if pad == "zero":
        out = np.zeros((side, side) + img.shape[2:], img.dtype)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = img[iy0:iy1, ix0:ix1]
    elif pad == "edge":
        ys = np.clip(np.arange(y0, y0 + side), 0, H - 1)
        xs = np.clip(np.arange(x0, x0 + side), 0, W - 1)
        out = img[ys[:, None], xs[None, :]]
    else:
        raise ValueError(f"crop_face: pad must be 'zero' or 'edge', got {pad!r}")
    return _resize(out, int(size)) if size is not None else out


def center_crop_box(height: int, width: int, fraction: float = 1 / 1.6) -> tuple[int, int, int]:
    """``(top, left, side)`` of protocol §4.4's centre crop: ``side = round(min(H, W) *
    fraction)`` (round half to even, at least 1), ``top = (H - side) // 2``,
    ``left = (W - side) // 2`` (the same numbers as the tf.data pipeline's in-graph crop)."""
    side = max(int(np.round(np.float32(min(height, width)) * np.float32(fraction))), 1)
    return (height - side) // 2, (width - side) // 2, side


def center_crop_fraction(img, fraction: float = 1 / 1.6) -> np.ndarray:
    """protocol §4.4: the centred square whose side is ``fraction`` (0.625) of the largest
    square that fits; undoes :func:`crop_face`'s 1.6x enlargement."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"center_crop_fraction: expected [H, W] or [H, W, C], got {img.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"center_crop_fraction: fraction must be in (0, 1], got {fraction}")
    top, left, side = center_crop_box(img.shape[0], img.shape[1], fraction)
    return img[top:top + side, left:left + side]


# ---------------------------------------------------------------------------- alignment

def alignment_matrix(landmarks, size: int = 224, enlarge: float = 1.6) -> np.ndarray:
    """The 2x3 similarity transform (image -> aligned crop) used by :func:`align_face`.

    The rotation levels the eyes (it maps the left-to-right eye vector onto the x axis);
    scale and translation are the least-squares fit of all 5 landmarks to
    :data:`ALIGN_TEMPLATE` placed as a tight face box of side ``size / enlarge`` centred
    in the ``size x size`` output.
    """
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    if not np.all(np.isfinite(src)):
        raise ValueError("alignment_matrix: landmarks must be finite")
    dst = (ALIGN_TEMPLATE - 0.5) * (size / enlarge) + size / 2.0
    eye = src[1] - src[0]
    if not np.hypot(*eye) > 0:
        raise ValueError("alignment_matrix: the two eye landmarks coincide")
    angle = -math.atan2(eye[1], eye[0])
    R = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    ps = src - src.mean(0)
    pd = dst - dst.mean(0)
    rp = ps @ R.T
    scale = float(np.sum(rp * pd) / np.sum(ps * ps))
    t = dst.mean(0) - scale * (R @ src.mean(0))
    return np.hstack([scale * R, t[:, None]])


def align_face(rgb, landmarks, size: int = 224, enlarge: float = 1.6,
               return_matrix: bool = False):
    """An aligned ``size x size`` face crop from 5 landmarks (``[5, 2]``,
    :data:`LANDMARK_NAMES` order, e.g. ``Face.landmarks`` from MTCNN): eyes level, the
    face's tight box in the central ``1/enlarge`` (the same framing as
    :func:`crop_face`), bilinear, zero outside the image.  With ``return_matrix`` also
    the 2x3 image-to-crop matrix."""
    import cv2
    img = np.asarray(rgb)
    M = alignment_matrix(landmarks, size, enlarge)
    out = cv2.warpAffine(np.ascontiguousarray(img), M, (int(size), int(size)),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = out.reshape((int(size), int(size)) + img.shape[2:])
    return (out, M) if return_matrix else out


# ---------------------------------------------------------------------------------- grey

def rgb_to_grey(img, keepdims: bool = False) -> np.ndarray:
    """MATLAB ``rgb2gray`` for uint8 RGB: ``round(0.2989 R + 0.5870 G + 0.1140 B)``
    (computed in float64, halves rounded up as MATLAB's ``round``), uint8 ``[H, W]``
    (``[H, W, 1]`` with ``keepdims``).  Grey input (``[H, W]`` / ``[H, W, 1]``) passes."""
    a = np.asarray(img)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        g = a.reshape(a.shape[:2]).astype(np.uint8)
    elif a.ndim == 3 and a.shape[2] == 3:
        v = a.astype(np.float64) @ np.asarray(RGB2GRAY, np.float64)
        g = np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"rgb_to_grey: expected [H, W, 3] RGB, got shape {a.shape}")
    return g[..., None] if keepdims else g
