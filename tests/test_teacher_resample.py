"""The teacher's resampling is the original's (protocol §4.2 steps 2-5, §4.3): mean subtracted
first, ONE align-corners vl_nnbilinearsampler interpolation 48 -> S carrying the augmentation
affine, out-of-image samples 0 (the mean colour). Checked against an independent float64
NumPy sampler (tests/_np_sampler.py): max |difference| <= 1e-3 on the 0-255 scale."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests import _np_sampler as ref
from tf_cme.models import build_model
from tf_cme.vision.resample import affine_sample

TOL = 1e-3


def _faces(n, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def _random_affines(n, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    lin = np.eye(2)[None] + spread * rng.standard_normal((n, 2, 2))
    t = 2 * spread * rng.standard_normal((n, 2, 1))
    return np.concatenate([lin, t], axis=2)


def _centred(g):
    return np.repeat(g.astype(np.float64), 3, axis=-1) - ref.MEAN


def test_identity_grid_48_to_224_matches_the_float64_sampler():
    g = _faces(2)
    got = affine_sample(tf.constant(_centred(g), tf.float32), 224).numpy()
    want = ref.ferplus_input(g, 224)
    assert np.abs(got - want).max() <= TOL
    # align corners: the corner pixels of the output are the input's corner pixels
    np.testing.assert_allclose(got[:, [0, -1]][:, :, [0, -1]],
                               _centred(g)[:, [0, -1]][:, :, [0, -1]], atol=1e-4)


@pytest.mark.parametrize("size", [48, 61])
def test_random_affine_grids_match_the_float64_sampler(size):
    g = _faces(3, seed=size)
    a = _random_affines(3, seed=size)
    got = affine_sample(tf.constant(_centred(g), tf.float32), size,
                        tf.constant(a, tf.float32)).numpy()
    want = ref.bilinear_sampler(_centred(g), ref.affine_grid(a.astype(np.float32), size, size))
    assert np.abs(got - want).max() <= TOL
    # large shifts put samples outside the image: those are exactly 0 (the mean colour)
    far = np.array([[[1.0, 0, 3.0], [0, 1.0, 0]]])
    out = affine_sample(tf.constant(_centred(g[:1]), tf.float32), size, far).numpy()
    assert (out == 0).all()


def test_teacher_preprocess_and_augmentation_are_one_interpolation(tmp_path):
    """The model's preprocess layer (evaluation: identity grid) and teacher training's
    forward pass with the pipeline's affine draw give the reference's pixels."""
    from tf_cme.data import pipelines
    from tf_cme.models.teacher import forward
    size = 64
    model = build_model("senet50-ferplus", width=0.0625, input_size=size)
    pre = model.get_layer("preprocess")
    g = _faces(4, seed=3)
    np.testing.assert_array_less(np.abs(np.asarray(pre(g)) - ref.ferplus_input(g, size)),
                                 TOL)
    flipped, a = pipelines.augment_faces(tf.constant(g), tf.constant([5, 6], tf.int64))
    a = a.numpy()
    assert a.shape == (4, 2, 3)
    got = np.asarray(pre(flipped, affine=a))
    want = ref.ferplus_input(flipped.numpy(), size, affines=a)
    assert np.abs(got - want).max() <= TOL
    # forward() runs the rest of the network on exactly that input
    logits = np.asarray(forward(model, flipped, a))
    same = np.asarray(forward(model, flipped, np.tile([[[1, 0, 0], [0, 1, 0]]], (4, 1, 1))
                              .astype(np.float32)))
    np.testing.assert_allclose(same, np.asarray(model(flipped)), rtol=1e-5, atol=1e-5)
    assert logits.shape == (4, 8) and not np.allclose(logits, same)


def test_pipeline_draws_the_affine_and_keeps_the_records_pixels(tmp_path):
    from tf_cme.benchmarks.records import make_fer_csvs
    from tf_cme.data import ferplus, pipelines
    a, b = make_fer_csvs(tmp_path / "csv", 40, seed=5)
    d = tmp_path / "rec"
    ferplus.build(d, ferplus.FerplusBuildConfig(fer_csv=str(a), ferplus_csv=str(b),
                                                shard_size=8, workers=1))
    plain = next(iter(pipelines.faces_dataset(d, "train", batch_size=8, training=True,
                                              seed=1, augment="flip")))
    aug = next(iter(pipelines.faces_dataset(d, "train", batch_size=8, training=True, seed=1)))
    assert "affine" not in plain[1] and aug[1]["affine"].shape == (8, 2, 3)
    # the images are the flipped uint8 records either way: no interpolation, no grey fill
    np.testing.assert_array_equal(plain[0].numpy(), aug[0].numpy())
    tr = pipelines.ferplus_affine(tf.constant([3, 4], tf.int64), 64).numpy()
    ident = np.all(tr == np.array([[1, 0, 0], [0, 1, 0]], np.float32), axis=(1, 2))
    assert 10 < ident.sum() < 54
    lin = tr[~ident][:, :, :2]
    det = np.linalg.det(lin)
    # det = s^2 (1 - s1 s2) with s in [0.96, 1.04], s1 s2 in {0, +-0.01}
    assert (det > 0.96 ** 2 * 0.99 - 1e-4).all() and (det < 1.04 ** 2 * 1.01 + 1e-4).all()
    # |t| = s z |1 - 2m| <= 0.04 * 17
    assert (np.abs(tr[~ident][:, :, 2]) <= 0.04 * 17 + 1e-5).all()
