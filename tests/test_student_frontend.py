"""Student front end (protocol §3.1/§3.2), the student network (protocol §5) and the losses (protocol §6)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _np_frontend as ref  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_cme.audio import frontend  # noqa: E402
from tf_cme.audio.frontend import Spectrogram  # noqa: E402


def _speech_like(n, rng, rate=16000):
    """Voiced harmonics with a moving pitch, syllable envelope, pauses, noise, DC offset."""
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    x = 0.3 * voiced * env + 0.01 * rng.standard_normal(n) + 0.02
    return np.clip(x, -1, 1)


def _voiced_with_dc(n, rng, dc=0.02, rate=16000):
    """A DC-offset speech-like clip in [-1, 1]: voiced harmonics (pitch contour 100-170 Hz,
    three formant-like bumps, smooth roll-off above 3.5 kHz), smooth syllables with
    amplitude modulation, slow pauses, faint noise (-100 dBFS). Its rows above ~4 kHz are
    60 dB below the loudest: there a front end's white rounding noise shows once each row
    is normalised."""
    t = np.arange(n) / rate
    f0 = 120 + 35 * np.sin(2 * np.pi * 0.4 * t) + 15 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros(n)
    for k in range(1, 60):
        fk = k * f0
        formants = sum(np.exp(-0.5 * ((fk - f) / bw) ** 2)
                       for f, bw in ((600, 150), (1100, 150), (2500, 250)))
        voiced += (formants + 0.05) / k / (1 + (fk / 3500) ** 8) * np.sin(k * phase)
    syllables = np.sin(np.pi * 2.7 * t) ** 2 * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    pauses = (0.5 - 0.5 * np.cos(2 * np.pi * t / 1.5)) ** 2
    x = 0.5 * voiced / np.max(np.abs(voiced)) * syllables * pauses
    return x + 1e-5 * rng.standard_normal(n) + dc


def _rel_err(out, expected):
    return float(np.max(np.abs(out - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("length", [560, 17760, 64384])
def test_parity_random_and_speech(length):
    rng = np.random.default_rng(length)
    x = np.stack([0.2 * rng.standard_normal(length), _speech_like(length, rng),
                  rng.uniform(-1, 1, length) * 0.9]).astype(np.float32)
    out = np.asarray(Spectrogram(dither=True)(x))          # inference: no dither
    assert out.dtype == np.float32
    assert out.shape == (3, 512, frontend.num_frames(length), 1)
    for b in range(3):
        err = _rel_err(out[b, :, :, 0], ref.spectrogram(x[b]))
        assert err <= 1e-4, (b, err)


@pytest.mark.parametrize("seed,dc", [(0, 0.02), (1, 0.1)])
def test_parity_dc_offset_speech_with_quiet_rows(seed, dc):
    """3 s of DC-offset voiced speech, as floats in [-1, 1] and as int16 values: within
    1e-4 of max|ref| of the float64 reference everywhere, the quiet rows included (a
    plain float32 block product for the DC filter gave 1.6-2.9e-4 here)."""
    x = _voiced_with_dc(16000 * 3 + 400, np.random.default_rng(seed), dc)
    clips = np.stack([x, np.round(x * 32767)]).astype(np.float32)
    out = np.asarray(Spectrogram()(clips))
    for b in range(2):
        err = _rel_err(out[b, :, :, 0], ref.spectrogram(clips[b]))
        assert err <= 1e-4, (b, err)


def test_block_filters_to_float32_precision():
    """Steps 2-3 alone against scipy's float64 lfilter, in units of float32's spacing at
    the signal's peak: ``z`` (no dither) within one, ``y`` (the dither path) within 3
    (a plain float32 block product was 6.5 and 5.2 here)."""
    from scipy.signal import lfilter
    x = np.round(_voiced_with_dc(16000 * 3 + 400, np.random.default_rng(0)) * 32767)
    x = x.astype(np.float32)[None]
    y_ref = lfilter([1.0, -1.0], [1.0, -0.99], x[0].astype(np.float64))
    z_ref = lfilter([1.0, -0.97], [1.0], y_ref)
    layer = Spectrogram()
    n = x.shape[1]
    for to_z, want, ulps in ((True, z_ref, 1.0), (False, y_ref, 3.0)):
        got = np.asarray(layer._block_filter(x, n, to_z=to_z))[0]
        err = np.max(np.abs(got - want)) / np.spacing(np.float32(np.max(np.abs(want))))
        assert err <= ulps, (to_z, err)


def test_split_dot_rounds_once():
    """``_split_dot`` = the float64 product of the same float32 operands within half a
    float32 spacing plus a quarter unit roundoff of sum|u||w| (rows with a large common
    offset, where a plain float32 product is ~8 unit roundoffs off)."""
    rng = np.random.default_rng(1)
    u = (100 * rng.standard_normal((4, 300, frontend.BLOCK))
         + rng.uniform(-3e4, 3e4, (4, 300, 1))).astype(np.float32)
    u[0, :5] = 0.0                                                # all-zero rows
    u[1, 5:10] *= 1e-30                                           # tiny rows
    w_hi, w_rest = frontend._iir_matrices()["z"]
    w = w_rest[frontend.BLOCK:].astype(np.float64)
    got = np.asarray(frontend._split_dot(u, w_hi, w_rest))
    exact = u.astype(np.float64) @ w
    bound = (0.5 * np.spacing(np.abs(exact).astype(np.float32))
             + 0.25 * 2.0 ** -24 * (np.abs(u.astype(np.float64)) @ np.abs(w)))
    assert np.all(np.abs(got - exact) <= bound)
    assert np.all(got[0, :5] == 0)


def test_scale_free_for_large_inputs():
    """A clip with peak > 1 is used as it is: at 2**40 times int16 scale the normalised
    spectrogram is the same (the splitting grid follows the signal's scale)."""
    x = _voiced_with_dc(17760, np.random.default_rng(5)).astype(np.float32)
    layer = Spectrogram()
    a = np.asarray(layer(x[None]))
    b = np.asarray(layer(x[None] * np.float32(2.0 ** 55)))
    assert np.all(np.isfinite(b))
    assert _rel_err(b[0, :, :, 0], a[0, :, :, 0]) <= 1e-5


def test_400_frames_and_int16_scale_and_dynamic_shape():
    rng = np.random.default_rng(1)
    x = _speech_like(64384, rng).astype(np.float32)
    layer = Spectrogram()
    fn = tf.function(lambda w: layer(w), input_signature=[tf.TensorSpec([None, None])])
    out = fn(x[None]).numpy()
    assert out.shape == (1, 512, 400, 1)
    # an int16-scaled clip (max > 1) is used as it is: same result as the [-1, 1] clip
    out16 = np.asarray(layer(x[None] * 32768.0))
    np.testing.assert_allclose(out16, out, atol=2e-4)
    assert _rel_err(out[0, :, :, 0], ref.spectrogram(x)) <= 1e-4
    # all 512 bins: row k mirrors row 512 - k
    np.testing.assert_allclose(out[0, 1:256, :, 0], out[0, 511:256:-1, :, 0], atol=1e-5)


def test_silence_gives_zeros_and_single_frame():
    out = np.asarray(Spectrogram(dither=True)(np.zeros((2, 16000), np.float32), training=True))
    assert np.all(np.isfinite(out)) and np.all(out == 0)
    one = np.asarray(Spectrogram()(np.random.default_rng(0).uniform(-.5, .5, (1, 400))
                                   .astype(np.float32)))
    assert one.shape == (1, 512, 1, 1) and np.all(one == 0)      # N-1 = 0: no spread


def test_dither_only_when_training_and_tiny():
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((2, 8000))).astype(np.float32)
    layer = Spectrogram(dither=True)
    a = np.asarray(layer(x, training=False))
    b = np.asarray(layer(x, training=True))
    c = np.asarray(layer(x, training=True))
    np.testing.assert_array_equal(b, c)                 # seeded by the batch: reproducible
    assert 0 < np.max(np.abs(a - b)) < 1e-3
    np.testing.assert_array_equal(a, np.asarray(Spectrogram(dither=False)(x, training=True)))


@pytest.mark.parametrize("frames", [100, 101, 102, 103, 104, 250, 1234])
def test_bucket_crop(frames):
    n = frontend.samples_for_frames(frames)
    x = _speech_like(n, np.random.default_rng(frames)).astype(np.float32)
    w = min(1000, frames // 100 * 100)
    start = max(math.floor((frames - w) / 2 + 0.5), 1) - 1
    assert (frontend.bucket_width(frames), frontend.bucket_start(frames)) == (w, start)
    full = np.asarray(Spectrogram()(x[None]))[0, :, :, 0]
    layer = Spectrogram(crop="bucket")
    out = np.asarray(layer(x[None]))[0, :, :, 0]
    dyn = tf.function(lambda v: layer(v), input_signature=[tf.TensorSpec([None, None])])
    out_dyn = dyn(x[None]).numpy()[0, :, :, 0]
    assert out.shape == (512, w) and out_dyn.shape == (512, w)
    np.testing.assert_array_equal(out, full[:, start:start + w])   # crop after normalising
    np.testing.assert_array_equal(out_dyn, out)
    assert _rel_err(out, ref.spectrogram(x, crop="bucket")) <= 1e-4


def test_bucket_start_values():
    # MATLAB rstart = round((N - w) / 2), 0 -> 1 (1-based)
    assert [frontend.bucket_start(n) for n in (100, 101, 102, 103, 105, 199, 1500)] == \
        [0, 0, 0, 1, 2, 49, 249]


def test_short_clips_are_clear_errors():
    with pytest.raises(ValueError, match="shorter than one frame"):
        Spectrogram()(np.zeros((1, 399), np.float32))
    with pytest.raises(ValueError, match="100 frames"):
        Spectrogram(crop="bucket")(np.zeros((1, frontend.samples_for_frames(99)), np.float32))
    fn = tf.function(lambda w: Spectrogram()(w), input_signature=[tf.TensorSpec([None, None])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than one frame"):
        fn(np.zeros((1, 300), np.float32))
    with pytest.raises(ValueError, match="crop"):
        Spectrogram(crop="centre")


def test_float32_under_mixed_precision_and_serialisation():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = Spectrogram(dither=False, crop="bucket")
        out = layer(np.zeros((1, 17760), np.float32) + 0.1)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    cfg = layer.get_config()
    again = Spectrogram.from_config(cfg)
    assert (again.dither, again.crop) == (False, "bucket")
    assert keras.saving.get_registered_name(Spectrogram) == "tf_cme>Spectrogram"


# ------------------------------------------------------------------ the student network
def test_student_full_size_parameter_count():
    from tf_cme.models import build_model
    from tf_cme.models.student import num_weights
    m = build_model("emovoxceleb-student")
    # kernels 16,618,080 (protocol §5: "about 16.6 M"; fc6 9,437,184) + 6,376 biases
    # + 4 x 6,368 BN parameters
    assert num_weights() == 16_618_080
    assert m.count_params() == 16_649_928
    assert m.get_layer("fc6").kernel.shape == (9, 1, 256, 4096)
    assert m.cme_metadata["sample_rate"] == 16000 and m.cme_metadata["kind"] == "student"
    shapes = {n: m.get_layer(n).output.shape[1:] for n in ("conv1", "mpool1", "conv2", "mpool2",
                                                         "conv5", "mpool5", "fc6")}
    assert shapes["conv1"][0] == 254 and shapes["mpool1"][0] == 126
    assert shapes["conv2"][0] == 62 and shapes["mpool2"][0] == 30
    assert shapes["mpool5"][0] == 9 and shapes["fc6"][0] == 1


def test_student_geometry_small_width_and_with_frontend(tmp_path):
    from tf_cme.models import build_model
    from tf_cme.models.io import load_model, save_model
    from tf_cme.models.student import with_frontend
    keras.utils.set_random_seed(0)
    m = build_model("emovoxceleb-student", width=1 / 16, input_samples=64384)
    assert m.get_layer("conv1").filters == 6 and m.get_layer("prediction").filters == 8
    # protocol §5 output sizes for 512 x 400
    assert tuple(m.get_layer("conv1").output.shape[1:3]) == (254, 198)
    assert tuple(m.get_layer("mpool2").output.shape[1:3]) == (30, 23)
    assert tuple(m.get_layer("mpool5").output.shape[1:3]) == (9, 11)
    assert tuple(m.get_layer("fc6").output.shape[1:3]) == (1, 11)
    x = _speech_like(17760, np.random.default_rng(3)).astype(np.float32)[None]
    m2 = build_model("emovoxceleb-student", width=1 / 16)
    m2.set_weights(m.get_weights())
    y = np.asarray(m2(x))
    assert y.shape == (1, 8) and np.all(np.isfinite(y))
    emb = keras.Model(m2.input, m2.get_layer("fc7_relu").output)(x)
    assert emb.shape == (1, 1, 1, 64)
    ev = with_frontend(m2, crop="bucket", dither=False)
    assert ev.get_layer("spectrogram").crop == "bucket"
    assert not ev.get_layer("spectrogram").dither
    assert ev.cme_metadata["options"]["crop"] == "bucket"
    # 17760 samples = 108 frames -> bucket 100 frames from frame 3 (round(4) - 1)
    spec = ev.get_layer("spectrogram")(x)
    assert spec.shape == (1, 512, 100, 1)
    np.testing.assert_allclose(np.asarray(with_frontend(ev, crop="none")(x)), y, atol=1e-5)
    path = save_model(ev, tmp_path / "student.keras")
    back = load_model(path)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(ev(x)), atol=1e-6)
    assert back.cme_metadata["options"]["crop"] == "bucket"


# ------------------------------------------------------------------------------ losses
def test_hot_cross_entropy_hand_computed():
    from tf_cme.training import losses
    x = np.array([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0],
                  [0.5, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    z = np.array([[4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
    # by hand, T = 2: p = softmax(z/2), log q = x/2 - logsumexp(x/2)
    e2 = math.exp(2.0)
    p0 = [e2 / (e2 + 7)] + [1 / (e2 + 7)] * 7
    lse0 = math.log(math.exp(0.5) + math.exp(1.0) + 5 + math.exp(-0.5))
    logq0 = [0.5 - lse0, 1.0 - lse0] + [-lse0] * 5 + [-0.5 - lse0]
    loss0 = -sum(a * b for a, b in zip(p0, logq0))
    e1 = math.exp(1.0)
    p1 = [1 / (e1 + 7)] * 4 + [e1 / (e1 + 7)] + [1 / (e1 + 7)] * 3
    lse1 = math.log(math.exp(0.25) + 6 + math.exp(1.5))
    logq1 = [0.25 - lse1, -lse1, -lse1, 1.5 - lse1] + [-lse1] * 4
    loss1 = -sum(a * b for a, b in zip(p1, logq1))
    got = np.asarray(losses.get("hot-cross-ent")(z, x))
    np.testing.assert_allclose(got, [loss0, loss1], rtol=1e-6)
    # gradient w.r.t. x is (q - p) / T per example (no T^2 factor)
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        v = tf.reduce_sum(losses.get("hot-cross-ent")(z, xv))
    q = tf.nn.softmax(x / 2).numpy()
    p = tf.nn.softmax(z / 2).numpy()
    np.testing.assert_allclose(tape.gradient(v, xv).numpy(), (q - p) / 2, atol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.get("euclidean")(z, x)),
                               0.5 * np.sum((x - z) ** 2, axis=1), rtol=1e-6)
    sm = np.asarray(losses.get("softmaxlog")(z, x))
    np.testing.assert_allclose(sm, [-(1.0 - math.log(e1 + e2 + 5 + math.exp(-1.0))),
                                    -(0.0 - math.log(math.exp(0.5) + 6 + math.exp(3.0)))],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        losses.get("huber")


def test_distiller_step_matches_manual_sgd():
    """One train_step = SGD(momentum) on batch-mean loss + MatConvNet decay on kernels."""
    from tf_cme.models import build_model
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.optim import sgd
    from tf_cme.training import losses
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(4)
    x = _speech_like(17760, rng)[None].repeat(4, 0) * rng.uniform(0.5, 1, (4, 1))
    x = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)
    z = (2 * rng.standard_normal((4, 8))).astype(np.float32)
    s = build_model("emovoxceleb-student", width=1 / 16, dither=False)
    ref_model = build_model("emovoxceleb-student", width=1 / 16, dither=False)
    ref_model.set_weights(s.get_weights())
    d = Distiller(s, weight_decay=1e-2)
    d.compile(optimizer=sgd(0.1, 0.9))
    logs = d.train_step((tf.constant(x), {"logits": tf.constant(z)}))
    with tf.GradientTape() as tape:
        out = ref_model(x, training=True)
        loss = tf.reduce_mean(losses.hot_cross_entropy(z, out))
    tv = ref_model.trainable_variables
    grads = tape.gradient(loss, tv)
    for v, g, new in zip(tv, grads, s.trainable_variables):
        g = g.numpy() + (1e-2 * v.numpy() if v.path.endswith("kernel") else 0)
        np.testing.assert_allclose(new.numpy(), v.numpy() - 0.1 * g, atol=2e-5)
    assert abs(float(logs["loss"]) - float(loss)) < 1e-5
    assert float(logs["top1_error"]) in (0.0, 0.25, 0.5, 0.75, 1.0)
    shares = [float(logs[f"share_{n}"]) for n in ("neutral", "happiness", "surprise", "sadness",
                                                  "anger", "disgust", "fear", "contempt")]
    expected = np.bincount(np.argmax(z, 1), minlength=8) / 4
    np.testing.assert_allclose(shares, expected)


def test_distiller_bad_targets():
    from tf_cme.models import build_model
    from tf_cme.training.distiller import Distiller
    from tf_cme.training.optim import sgd
    from tf_cme.utils import CmeError
    s = build_model("emovoxceleb-student", width=1 / 16, dither=False)
    d = Distiller(s)
    d.compile(optimizer=sgd(0.1))
    x = tf.zeros((2, 17760))
    with pytest.raises(CmeError, match="width 7"):
        d.train_step((x, {"logits": tf.zeros((2, 7))}))
    with pytest.raises(CmeError, match="no teacher logits"):
        d.train_step((x, {"label": tf.zeros((2,), tf.int32)}))
    with pytest.raises(CmeError, match="expected a Keras model"):
        Distiller(s, teacher=object())


_JAX_CHILD = r"""
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np, keras
from tf_cme.models.student import build_student
assert keras.backend.backend() == "jax"
m = build_student(width=0.125, dither=False, crop="bucket")
m.load_weights(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(m(x, training=False)))
spec = m.get_layer(index=1)(x)
np.save(sys.argv[4], np.asarray(spec))
from tf_cme.audio.frontend import Spectrogram
np.save(sys.argv[6], np.asarray(Spectrogram()(np.load(sys.argv[5]))))
"""


def test_student_runs_on_the_jax_backend(tmp_path):
    """The front end and the VGGVox student use keras.ops only (TF-only branches are
    guarded), so the same weights give the same logits on Keras's JAX backend."""
    import subprocess

    from _proc import PY, env
    from tf_cme.models.student import build_student
    keras.utils.set_random_seed(0)
    m = build_student(width=0.125, dither=False, crop="bucket")
    m.save_weights(tmp_path / "w.weights.h5")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 16000 * 3)) * 0.1).astype("float32")
    x[1, :8000] = 0.0                                           # a silent stretch too
    np.save(tmp_path / "x.npy", x)
    speech = _voiced_with_dc(16000 * 3 + 400, np.random.default_rng(0))
    np.save(tmp_path / "v.npy", np.stack([speech, np.round(speech * 32767)]).astype("float32"))
    (tmp_path / "child.py").write_text(_JAX_CHILD)
    r = subprocess.run([PY, str(tmp_path / "child.py"), str(tmp_path / "w.weights.h5"),
                        str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "s.npy"),
                        str(tmp_path / "v.npy"), str(tmp_path / "vs.npy")],
                       env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    want = m(x, training=False).numpy()
    got = np.load(tmp_path / "y.npy")
    assert got.shape == (2, 8)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    spec_tf = m.get_layer(index=1)(x).numpy()
    spec_jax = np.load(tmp_path / "s.npy")
    assert spec_jax.shape == spec_tf.shape == (2, 512, 200, 1)
    assert np.abs(spec_jax - spec_tf).max() <= 1e-4 * np.abs(spec_tf).max()
    # the DC-offset speech parity (quiet rows) holds on JAX too
    v, vs = np.load(tmp_path / "v.npy"), np.load(tmp_path / "vs.npy")
    for b in range(2):
        assert _rel_err(vs[b, :, :, 0], ref.spectrogram(v[b])) <= 1e-4, b
