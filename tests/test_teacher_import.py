"""Weight import (MatConvNet .mat v5 / v7.3, pytorch-mcn .pth) with parity against an
independent float64 NumPy forward pass (tests/_np_resnet.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import _np_resnet as ref  # noqa: E402
from tf_cme.models import resnet
from tf_cme.models.importers import import_weights
from tf_cme.demo.files import write_dagnn_mat
from tf_cme.models.matconvnet import read_dagnn
from tf_cme.utils import CmeError

WIDTH, SIZE = 0.0625, 40


def _save_pth(path, params):
    import torch
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ref.to_pytorch(params).items()}
    for k in [k for k in sd if k.endswith(".running_var")]:
        sd[k[:-12] + ".num_batches_tracked"] = torch.tensor(0)
    torch.save(sd, path)


def _images(seed=0):
    """Grey and RGB test images at the model size. RGB pixels whose rgb2gray sum falls
    within 1e-3 of a .5 rounding tie are redrawn (float32 vs float64 may round a tie
    either way; that is not what the parity test is about)."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (3, SIZE, SIZE, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    w = np.asarray(resnet.RGB2GRAY, np.float64)
    while True:
        frac = (rgb.astype(np.float64) @ w) % 1.0
        tie = np.abs(frac - 0.5) < 1e-3
        if not tie.any():
            return grey, rgb
        rgb[tie] = rng.integers(0, 256, (int(tie.sum()), 3), dtype=np.uint8)


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("se", [False, True], ids=["resnet50", "senet50"])
def test_import_parity(tmp_path, se):
    """.mat (v5) through import_weights and the saved .keras; then .pth (and, for the
    SE-ResNet, a v7.3 .mat with the short ``f`` naming) into the same model."""
    from tf_cme.models.importers import assign_weights, load_params
    from tf_cme.models.io import load_model
    arch = "senet50-ferplus" if se else "resnet50-ferplus"
    params = ref.random_params(se, WIDTH, seed=3 + se)
    src = tmp_path / f"{arch}.mat"
    write_dagnn_mat(src, params)
    out = tmp_path / "teacher.keras"
    import_weights(src, out, width=WIDTH, input_size=SIZE)       # arch from the file name
    model = load_model(out)                  # what was written is what is used
    assert model.cme_metadata["name"] == arch
    assert model.cme_metadata["imported_from"]["format"] == "matconvnet"

    def check(p):
        for x in _images():
            want = ref.forward(p, x, se, rgb2gray=resnet.RGB2GRAY)
            assert _rel_err(np.asarray(model(x, training=False)), want) <= 1e-4
        import keras
        x = _images()[0]
        emb = np.asarray(keras.Model(model.input, model.get_layer("pool5").output)(x))
        _, want = ref.forward(p, x, se, return_pool5=True, rgb2gray=resnet.RGB2GRAY)
        assert _rel_err(emb.reshape(len(x), -1), want) <= 1e-4

    check(params)
    params2 = ref.random_params(se, WIDTH, seed=11 + se)
    pth = tmp_path / ("senet50_ferplus_dag.pth" if se else "resnet50_ferplus_dag.pth")
    _save_pth(pth, params2)
    sd, fmt = load_params(pth)
    assert fmt == "pytorch" and "conv1_7x7_s2.weight" in sd
    assign_weights(model, sd, fmt, path=pth)
    check(params2)
    if se:
        params3 = ref.random_params(se, WIDTH, seed=21)
        short = {(k[:-7] + "f" if k.endswith("_filter") else k): v for k, v in params3.items()}
        mat73 = tmp_path / "v73.mat"
        write_dagnn_mat(mat73, short, version="7.3")
        p3, fmt = load_params(mat73)
        assign_weights(model, p3, fmt, path=mat73)
        check(params3)


def test_reader_round_trip_layers_and_meta(tmp_path):
    layers = [{"name": "conv1", "type": "dagnn.Conv", "inputs": ["data"], "outputs": ["x1"],
               "params": ["conv1f", "conv1b"], "block": {"hasBias": True}}]
    p = {"conv1f": np.ones((3, 3, 2, 1), np.float32), "conv1b": np.zeros((1,), np.float32)}
    write_dagnn_mat(tmp_path / "n.mat", p, layers,
                    {"normalization": {"imageSize": np.array([224.0, 224.0, 3.0])}})
    net = read_dagnn(tmp_path / "n.mat")
    assert list(net.params) == ["conv1f", "conv1b"]
    assert net.params["conv1f"].shape[:3] == (3, 3, 2)
    assert net.layer("conv1")["params"] == ["conv1f", "conv1b"]
    assert net.layer("conv1")["inputs"] == ["data"]
    np.testing.assert_array_equal(np.ravel(net.meta["normalization"]["imageSize"]),
                                  [224, 224, 3])


def test_vggface2_base_trunk_only(tmp_path):
    params = ref.random_params(True, WIDTH, seed=5, num_classes=8631)
    src = tmp_path / "senet50_ft-dag.mat"
    write_dagnn_mat(src, params)
    with pytest.raises(CmeError, match="'classifier_filter' has 8631 classes"):
        import_weights(src, tmp_path / "x.keras", width=WIDTH, input_size=SIZE)
    assert not (tmp_path / "x.keras").exists()
    model = import_weights(src, tmp_path / "b.keras", width=WIDTH, input_size=SIZE, base=True)
    assert model.cme_metadata["imported_from"]["skipped_layers"] == ["classifier"]
    import keras
    x = _images()[0]
    emb = np.asarray(keras.Model(model.input, model.get_layer("pool5").output)(x))
    _, want = ref.forward(params, x, True, return_pool5=True, rgb2gray=resnet.RGB2GRAY)
    assert _rel_err(emb.reshape(len(x), -1), want) <= 1e-4
    w = model.get_layer("classifier").get_weights()
    assert w[0].shape[-1] == 8 and np.all(w[1] == 0)


@pytest.fixture(scope="module")
def small_models():
    from tf_cme.models import build_model
    return {a: build_model(a, width=WIDTH, input_size=SIZE)
            for a in ("resnet50-ferplus", "senet50-ferplus")}


def _expect_error(model, params, match):
    from tf_cme.models.importers import assign_weights
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CmeError, match=match):
        assign_weights(model, params, "matconvnet", path="bad.mat")
    for a, b in zip(before, model.get_weights()):   # nothing assigned
        np.testing.assert_array_equal(a, b)


def test_bad_files_name_the_parameter(tmp_path, small_models):
    resnet50, senet50 = small_models["resnet50-ferplus"], small_models["senet50-ferplus"]
    good = ref.random_params(False, WIDTH, seed=7)
    missing = dict(good)
    del missing["conv3_2_3x3_filter"]
    _expect_error(resnet50, missing, "missing parameter 'conv3_2_3x3_filter'")
    shaped = dict(good)
    shaped["conv4_1_1x1_proj_bn_moments"] = np.zeros((7, 2), np.float32)
    _expect_error(resnet50, shaped, "'conv4_1_1x1_proj_bn_moments' has shape \\(7, 2\\)")
    classes = ref.random_params(False, WIDTH, seed=7, num_classes=7)
    _expect_error(resnet50, classes, "'classifier_filter' has 7 classes")
    # an SE-ResNet file is not a ResNet: its SE parameters are left over
    _expect_error(resnet50, ref.random_params(True, WIDTH, seed=7),
                  "unexpected parameter 'conv2_1_1x1_down_filter'")
    # a ResNet file is not an SE-ResNet: the SE parameters are missing
    _expect_error(senet50, good, "missing parameter 'conv2_1_1x1_down_filter'")
    # through the importer: nothing written
    write_dagnn_mat(tmp_path / "resnet50-ferplus.mat", missing)
    with pytest.raises(CmeError, match="conv3_2_3x3_filter"):
        import_weights(tmp_path / "resnet50-ferplus.mat", tmp_path / "bad.keras",
                       width=WIDTH, input_size=SIZE)
    assert not list(tmp_path.glob("bad.keras*"))


def test_script_reports_errors(tmp_path, repo_root):
    (tmp_path / "resnet50-ferplus.mat").write_bytes(b"not a mat file at all")
    r = subprocess.run([sys.executable, str(repo_root / "scripts/import_weights.py"),
                        str(tmp_path / "resnet50-ferplus.mat"), str(tmp_path / "o.keras")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "resnet50-ferplus.mat" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.keras").exists()
