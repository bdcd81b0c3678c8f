"""Teacher architectures (protocol §4.1): parameter counts, layer names, preprocessing, I/O."""
from __future__ import annotations

import numpy as np
import pytest

from tf_cme import emotions
from tf_cme.models import build_model, get_spec
from tf_cme.models import io as model_io
from tf_cme.models import resnet


def _trainable(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("name,count", [("resnet50-ferplus", 23_524_424),
                                        ("senet50-ferplus", 26_055_416)])
def test_full_width_parameter_counts(name, count):
    model = build_model(name)
    assert _trainable(model) == count
    names = {l.name for l in model.layers}
    for n in ("conv1_7x7_s2", "conv1_7x7_s2_bn", "pool1_3x3_s2", "conv2_1_1x1_reduce",
              "conv2_1_1x1_reduce_bn", "conv2_1_3x3", "conv2_1_1x1_increase",
              "conv2_1_1x1_proj", "conv3_1_1x1_proj_bn", "conv5_3_1x1_increase_bn",
              "pool5", "classifier", "preprocess"):
        assert n in names, n
    assert model.get_layer("classifier").kernel.shape == (1, 1, 2048, 8)
    assert model.get_layer("conv3_1_1x1_reduce").strides == (2, 2)
    assert model.get_layer("conv3_1_3x3").strides == (1, 1)
    assert model.get_layer("conv1_7x7_s2").use_bias is False
    assert model.get_layer("conv2_1_1x1_reduce_bn").epsilon == 1e-5
    if name == "senet50-ferplus":
        assert model.get_layer("conv2_1_1x1_down").kernel.shape == (1, 1, 256, 16)
        assert model.get_layer("conv5_3_1x1_down").kernel.shape == (1, 1, 2048, 128)
        assert {"conv5_3_1x1_down_drop", "conv5_3_1x1_up_drop"} <= names
    else:
        assert "conv2_1_1x1_down" not in names
        assert {"conv5_3_3x3_drop", "conv5_3_1x1_increase_drop"} <= names
    # the pooled 7x7 at 224: 56 -> 28 -> 14 -> 7
    assert model.get_layer("conv5_3_relu").output.shape[1:3] == (7, 7)
    assert model.get_layer("pool1_3x3_s2").output.shape[1:3] == (56, 56)


def test_registry_metadata():
    spec = get_spec("senet50-ferplus")
    assert spec.kind == "teacher"
    md = spec.describe(width=0.125, input_size=48)
    assert md["input_size"] == 48 and md["colour"] == "grey"
    assert md["mean"] == [131.0912, 103.8827, 91.4953]
    assert md["class_names"] == list(emotions.FERPLUS)


def test_ceil_mode_pool_sizes():
    # 40 -> conv1 20 -> ceil((20-3)/2)+1 = 10 (floor mode would give 9)
    model = build_model("resnet50-ferplus", width=0.0625, input_size=40)
    assert model.get_layer("conv1_relu_7x7_s2").output.shape[1:3] == (20, 20)
    assert model.get_layer("pool1_3x3_s2").output.shape[1:3] == (10, 10)


def test_preprocessing_grey_rgb_and_any_size():
    import keras
    model = build_model("senet50-ferplus", width=0.0625, input_size=32)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    mean = np.asarray(resnet.MEAN_RGB, np.float32)
    grey = np.full((2, 50, 70, 1), 100, np.uint8)
    out = np.asarray(pre(grey))
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out, 100 - mean + np.zeros_like(out), atol=1e-3)
    # RGB with R=G=B=v is grey v; a coloured pixel uses the rgb2gray weights, rounded
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    want = np.round(200 * resnet.RGB2GRAY[0] + 100 * resnet.RGB2GRAY[1] + 50 * resnet.RGB2GRAY[2])
    np.testing.assert_allclose(np.asarray(pre(rgb))[0, 5, 5], want - mean, atol=1e-3)
    # both channel counts and sizes go through the same model
    a = np.asarray(model(np.repeat(grey[:, :32, :32], 3, axis=-1)))
    b = np.asarray(model(grey[:, :32, :32]))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = build_model("resnet50-ferplus", width=0.0625, input_size=32)
    x = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    before = np.asarray(model(x))
    model_io.save_model(model, tmp_path / "t.keras")
    loaded = model_io.load_model(tmp_path / "t.keras")
    assert loaded.cme_metadata["name"] == "resnet50-ferplus"
    assert loaded.cme_metadata["options"]["width"] == 0.0625
    np.testing.assert_allclose(np.asarray(loaded(x)), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("se,count", [(False, 23_524_424), (True, 26_055_416)])
def test_benchmark_pytorch_peer_has_the_same_parameter_count(se, count):
    from tf_cme.benchmarks.teacher import torch_param_count, torch_teacher
    assert torch_param_count(torch_teacher(se)) == count
