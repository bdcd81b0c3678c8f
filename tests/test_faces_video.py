"""tf_cme.vision: face detection (Haar, MTCNN) on a real photograph, exact crop / centre-crop /
alignment geometry, MATLAB rgb2gray, and 25 fps frame sampling of generated videos."""
from __future__ import annotations

import math
import pickle

import av
import cv2
import numpy as np
import pytest
from matplotlib import cbook

from tf_cme.utils import CmeError
from tf_cme.vision import faces as F
from tf_cme.vision import video as V


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """Grace Hopper's portrait (600x512 RGB), shipped inside matplotlib."""
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _iou(a, b):
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# --------------------------------------------------------------------------- grey / crops

def test_rgb_to_grey_matches_matlab_by_hand():
    assert F.RGB2GRAY == (0.2989, 0.5870, 0.1140)
    img = np.array([[[100, 150, 200], [1, 1, 1], [255, 255, 255]],
                    [[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # 29.89+88.05+22.8=140.74 -> 141; 0.9999 -> 1; 254.9745 -> 255; 76.2195 -> 76;
    # 149.685 -> 150; 29.07 -> 29
    expected = np.array([[141, 1, 255], [76, 150, 29]], np.uint8)
    g = F.rgb_to_grey(img)
    assert g.dtype == np.uint8 and g.shape == (2, 3)
    np.testing.assert_array_equal(g, expected)
    assert F.rgb_to_grey(img, keepdims=True).shape == (2, 3, 1)
    np.testing.assert_array_equal(F.rgb_to_grey(expected), expected)        # grey passes


def _coded(h, w):
    """An image whose pixel (y, x) holds (y, x, 7) + 1, so crops can be checked exactly."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy + 1, xx + 1, np.full_like(yy, 7)], -1).astype(np.uint8)


def test_crop_face_geometry_inside_and_at_borders():
    img = _coded(100, 120)
    # inside: box 40x40 at (50, 30): side 64, centre (70, 50) -> x 38..101, y 18..81
    assert F.crop_box((50, 30, 40, 40)) == (38, 18, 64)
    c = F.crop_face(img, (50, 30, 40, 40), size=None)
    np.testing.assert_array_equal(c, img[18:82, 38:102])
    # the face box is exactly the central 1/1.6 of the crop
    np.testing.assert_array_equal(F.center_crop_fraction(c), img[30:70, 50:90])
    # leaves the image at the top-left: box (10, 20, 50, 50) -> side 80 at (-5, 5)
    assert F.crop_box((10, 20, 50, 50, 0.9)) == (-5, 5, 80)
    z = F.crop_face(img, (10, 20, 50, 50), size=None)
    assert z.shape == (80, 80, 3)
    np.testing.assert_array_equal(z[:, :5], 0)                           # zero padding
    np.testing.assert_array_equal(z[:, 5:], img[5:85, 0:75])
    e = F.crop_face(img, (10, 20, 50, 50), size=None, pad="edge")
    np.testing.assert_array_equal(e[:, :5], np.repeat(img[5:85, :1], 5, axis=1))
    np.testing.assert_array_equal(e[:, 5:], img[5:85, 0:75])
    # bottom-right corner and a non-square box: side = 1.6 * max(w, h)
    assert F.crop_box((100, 80, 20, 30)) == (86, 71, 48)
    b = F.crop_face(img, (100, 80, 20, 30), size=None)
    np.testing.assert_array_equal(b[:29, :34], img[71:100, 86:120])
    assert not b[29:].any() and not b[:, 34:].any()
    # resizing: an exact 2x box -> same pixels after shrinking by whole blocks
    r = F.crop_face(np.repeat(np.repeat(img, 2, 0), 2, 1), (100, 60, 80, 80), size=64)
    np.testing.assert_array_equal(r, c)
    assert F.crop_face(img, (50, 30, 40, 40), size=224).shape == (224, 224, 3)
    with pytest.raises(ValueError):
        F.crop_face(img, (0, 0, 0, 10))


def test_center_crop_fraction_spec_4_4():
    assert F.center_crop_box(224, 224) == (42, 42, 140)
    assert F.center_crop_box(100, 80) == (25, 15, 50)           # 0.625 * 80 = 50
    assert F.center_crop_box(61, 64) == (11, 13, 38)            # 38.125 -> 38
    img = _coded(100, 80)
    np.testing.assert_array_equal(F.center_crop_fraction(img), img[25:75, 15:65])
    np.testing.assert_array_equal(F.center_crop_fraction(img[..., 0], 0.5), img[30:70, 20:60, 0])


def test_alignment_recovers_a_known_similarity():
    size, enlarge = 224, 1.6
    target = (F.ALIGN_TEMPLATE - 0.5) * (size / enlarge) + size / 2
    # landmarks = a known similarity of the target layout (rotated 20 degrees, scaled)
    a, s, t = math.radians(20), 0.7, np.array([31.0, -12.0])
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    landmarks = (s * target @ R.T) + t
    M = F.alignment_matrix(landmarks, size, enlarge)
    mapped = landmarks @ M[:, :2].T + M[:, 2]
    np.testing.assert_allclose(mapped, target, atol=1e-9)
    # perturbed landmarks: the eyes still end up exactly level
    noisy = landmarks + np.random.default_rng(0).normal(0, 2.0, landmarks.shape)
    M = F.alignment_matrix(noisy, size, enlarge)
    eyes = noisy[:2] @ M[:, :2].T + M[:, 2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-9 and eyes[0, 0] < eyes[1, 0]
    # the warp itself: a constant image stays constant inside, zeros outside
    img = np.full((300, 300, 3), 200, np.uint8)
    out, M2 = F.align_face(img, landmarks, size=size, return_matrix=True)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(M2, F.alignment_matrix(landmarks, size, enlarge))


def test_face_tuple_semantics():
    lm = np.arange(10, dtype=np.float32).reshape(5, 2)
    f = F.Face(1, 2, 30, 40, 0.5, lm)
    x, y, w, h, score = f
    assert (x, y, w, h, score) == (1, 2, 30, 40, 0.5) and f.area == 1200
    g = pickle.loads(pickle.dumps(f))
    assert g == f and np.array_equal(g.landmarks, lm)
    assert F.Face(0, 0, 1, 1).landmarks is None


# ------------------------------------------------------------------------------ detection

def test_haar_detects_the_face_and_nothing_on_blank(hopper):
    found = F.detect_faces(hopper, method="haar")
    assert len(found) >= 1
    best = found[0]
    assert _iou(best, (155, 105, 222, 222)) > 0.7        # the face (checked by eye)
    assert all(a.area >= b.area for a, b in zip(found, found[1:]))
    assert F.detect_faces(np.zeros((240, 320, 3), np.uint8)) == []
    assert F.detect_faces(np.full((240, 320, 3), 128, np.uint8), min_size=200) == []
    with pytest.raises(ValueError, match="method"):
        F.detect_faces(hopper, method="dlib")
    with pytest.raises(ValueError, match="RGB"):
        F.detect_faces(hopper[..., 0])


def test_mtcnn_landmarks_and_alignment(hopper):
    small = cv2.resize(hopper, (256, 300), interpolation=cv2.INTER_AREA)
    found = F.detect_faces(small, method="mtcnn")
    assert len(found) == 1
    face = found[0]
    assert face.score > 0.9 and face.landmarks.shape == (5, 2)
    x, y, w, h, _ = face
    lm = face.landmarks
    assert np.all(lm[:, 0] > x) and np.all(lm[:, 0] < x + w)
    assert np.all(lm[:, 1] > y) and np.all(lm[:, 1] < y + h)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]            # image-left first
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])   # eyes, nose, mouth
    assert _iou(face, tuple(v * 0.5 for v in (155, 105, 222, 222))) > 0.5
    out, M = F.align_face(small, lm, size=112, return_matrix=True)
    eyes = lm[:2].astype(np.float64) @ M[:, :2].T + M[:, 2]
    assert out.shape == (112, 112, 3) and abs(eyes[0, 1] - eyes[1, 1]) < 1e-6


# ---------------------------------------------------------------------------------- video

def _binary_frame(k):
    """Frame k shows k in binary as 6 black / white 8x8 blocks (readable after lossy coding)."""
    img = np.full((32, 48, 3), 128, np.uint8)
    for bit in range(6):
        img[8:16, 8 * bit:8 * bit + 8] = 235 if (k >> bit) & 1 else 16
    return img


def _write_video(path, n_frames, fps, audio=None, vcodec="libx264", frame=_binary_frame,
                 crf="0"):
    """``n_frames`` images ``frame(k)`` (RGB uint8, even sides) at ``fps``, with an AAC
    16 kHz mono track of ``audio`` when given."""
    h, w = frame(0).shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": crf, "preset": "ultrafast"} if vcodec == "libx264" else {"qscale": "1"}
        if audio is not None:
            a = c.add_stream("aac", rate=16000, layout="mono")
        for k in range(n_frames):
            img = frame(k)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio is not None:
            for i in range(0, len(audio), 1024):
                fr = av.AudioFrame.from_ndarray(audio[None, i:i + 1024].astype(np.float32),
                                                format="fltp", layout="mono")
                fr.sample_rate, fr.pts = 16000, i
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def _source_frame(rgb):
    return sum(1 << bit for bit in range(6) if rgb[10:14, 8 * bit + 2:8 * bit + 6].mean() > 128)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    return {"25": _write_video(d / "v25.mp4", 50, 25, audio=tone),
            "30": _write_video(d / "v30.mp4", 60, 30),
            "avi": _write_video(d / "v25.avi", 50, 25, vcodec="mpeg4")}


def test_read_video_25fps(videos):
    frames, audio = V.read_video(videos["25"])
    got = [(i, t, _source_frame(rgb), rgb.shape, rgb.dtype) for i, t, rgb in frames]
    assert [g[0] for g in got] == list(range(0, 50, 6))
    assert [g[1] for g in got] == pytest.approx([n / 25 for n in range(0, 50, 6)])
    assert [g[2] for g in got] == list(range(0, 50, 6))                # frame n of the file
    assert got[0][3] == (32, 48, 3) and got[0][4] == np.uint8
    assert audio.dtype == np.float32 and 32000 <= len(audio) <= 33024   # AAC pads its last frame
    spec = np.abs(np.fft.rfft(audio[:32000]))
    assert abs(np.argmax(spec) * 16000 / 32000 - 440) < 1
    # stride 1, max_seconds, frame-only reading
    idx = [f.index for f in V.iter_frames(videos["25"], stride=1, max_seconds=0.5)]
    assert idx == list(range(13))
    frames, audio = V.read_video(videos["avi"], audio=True)
    assert audio is None                                               # no audio track
    assert [(f.index, _source_frame(f.rgb)) for f in frames] == [(n, n) for n in range(0, 50, 6)]


def test_read_video_30fps_is_resampled_to_25(videos):
    # FFmpeg fps-filter rule: source frame k goes to slot round(k * 25 / 30); the last
    # frame in a slot wins; slot n takes the latest source frame with slot <= n
    slots = [math.floor(k * 25 / 30 + 0.5) for k in range(60)]
    expected = [max(k for k in range(60) if slots[k] <= n) for n in range(0, 50, 6)]
    frames = list(V.iter_frames(videos["30"]))
    assert [f.index for f in frames] == list(range(0, 50, 6))
    assert [f.time_s for f in frames] == pytest.approx([n / 25 for n in range(0, 50, 6)])
    assert [_source_frame(f.rgb) for f in frames] == expected
    info = V.video_info(videos["30"])
    assert info["fps"] == pytest.approx(30) and info["frames"] == 60
    assert (info["width"], info["height"], info["has_audio"]) == (48, 32, False)
    assert info["duration_s"] == pytest.approx(2.0, abs=0.05)


def test_video_errors(tmp_path, videos):
    with pytest.raises(CmeError, match="no such file"):
        V.read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CmeError, match="junk.mp4"):
        V.read_video(junk)
    wav = tmp_path / "a.wav"
    from tf_cme.audio.io import write_wav
    write_wav(wav, np.zeros(1600), 16000)
    with pytest.raises(CmeError, match="no video stream"):
        V.iter_frames(wav)
    with pytest.raises(CmeError, match="no audio track"):
        V.read_video_audio(videos["30"])
    assert V.read_video(videos["30"]).audio is None


def test_raw_video_build_with_mtcnn_and_haar(hopper, tmp_path):
    """End to end: a talking-head video (Grace Hopper's portrait drifting across the
    frame, a tone as audio) built into emovox records with each detector; every
    sampled frame (25 fps, stride 6) gives a face_size crop whose face is centred."""
    from tf_cme.data import emovox, pipelines

    small = cv2.resize(hopper, (256, 300), interpolation=cv2.INTER_AREA)
    path = tmp_path / "vids" / "Person_A" / "talk.mp4"
    path.parent.mkdir(parents=True)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)

    def drifting(k):                                  # drifts 25 px to the right
        img = np.full((320, 320, 3), 90, np.uint8)
        img[10:310, 20 + k // 2:276 + k // 2] = small
        return img

    _write_video(path, 50, 25, audio=tone, frame=drifting, crf="18")
    for det in ("mtcnn", "haar"):
        out = tmp_path / f"rec-{det}"
        m = emovox.build(out, emovox.EmovoxBuildConfig(
            videos=str(path.parent.parent), detector=det, face_size=160, workers=1))
        assert m["splits"]["train"]["examples"] == 1 and m["skipped"] == {}
        (clip,) = list(pipelines.clips_dataset(out))
        assert clip["key"].numpy().decode() == "Person_A/talk/00001"
        np.testing.assert_array_equal(clip["frame_index"].numpy(), np.arange(0, 50, 6))
        assert 31000 <= clip["waveform"].shape[0] <= 33100
        for jpg in clip["frames"].numpy():
            crop = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            assert crop.shape == (160, 160, 3)
            (face,) = F.detect_faces(np.ascontiguousarray(crop), method="mtcnn")
            cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
            # the face follows the drift: centred in every crop, filling a 1.6x-ish box
            assert abs(cx - 80) < 8 and abs(cy - 80) < 16, (det, face)
            assert 160 / 2.6 < face[2] < 160 / 1.6, (det, face)
            if det == "mtcnn":                                         # aligned: eyes level
                eyes = face.landmarks[:2]
                assert abs(eyes[0, 1] - eyes[1, 1]) < 4
