"""Importing emovoxceleb-student.mat (MatConvNet DagNN) vs a float64 NumPy student forward pass."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _np_frontend as ref  # noqa: E402

from tf_cme.demo.files import write_dagnn_mat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1 / 16
# (name, bn name VGGVox-style, cout, kh, kw, stride, pad)
LAYERS = [("conv1", "bn1", 6, 7, 7, 2, 1), ("conv2", "bn2", 16, 5, 5, 2, 1),
          ("conv3", "bn3", 24, 3, 3, 1, 1), ("conv4", "bn4", 16, 3, 3, 1, 1),
          ("conv5", "bn5", 16, 3, 3, 1, 1), ("fc6", "bn6", 256, 9, 1, 1, 0),
          ("fc7", "bn7", 64, 1, 1, 1, 0)]
POOLS = {"conv1": (3, 3, 2, 2), "conv2": (3, 3, 2, 2), "conv5": (5, 3, 3, 2)}


def random_student_params(seed=0):
    rng = np.random.default_rng(seed)
    params, layers, cin = {}, [], 1
    for name, bn, cout, kh, kw, stride, pad in LAYERS:
        params[f"{name}f"] = rng.normal(0, np.sqrt(2 / (kh * kw * cin)), (kh, kw, cin, cout))
        params[f"{name}b"] = rng.normal(0, 0.05, (cout, 1))
        params[f"{bn}m"] = rng.uniform(0.5, 1.5, (cout, 1))
        params[f"{bn}b"] = rng.normal(0, 0.1, (cout, 1))
        params[f"{bn}x"] = np.stack([rng.normal(0, 0.2, cout), rng.uniform(0.5, 2.0, cout)], 1)
        layers.append({"name": name, "type": "dagnn.Conv", "params": [f"{name}f", f"{name}b"],
                       "inputs": ["x"], "outputs": ["y"],
                       "block": {"stride": [stride, stride], "pad": [pad] * 4}})
        layers.append({"name": bn, "type": "dagnn.BatchNorm",
                       "params": [f"{bn}m", f"{bn}b", f"{bn}x"], "inputs": ["y"],
                       "outputs": ["z"]})
        cin = cout
    params["fc8f"] = rng.normal(0, np.sqrt(2 / cin), (1, 1, cin, 8))
    params["fc8b"] = rng.normal(0, 0.1, (8, 1))
    layers.append({"name": "fc8", "type": "dagnn.Conv", "params": ["fc8f", "fc8b"],
                   "inputs": ["z"], "outputs": ["prediction"]})
    return {k: np.asarray(v, np.float32) for k, v in params.items()}, layers


def _conv(x, w, b, stride, pad):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    win = sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]
    return np.einsum("hwcij,ijco->hwo", win, w) + b.reshape(-1)


def _maxpool(x, kh, kw, sh, sw):
    win = sliding_window_view(x, (kh, kw), axis=(0, 1))[::sh, ::sw]
    return win.max(axis=(3, 4))


def numpy_student(wave, params):
    """float64 forward pass of protocol §5 with MatConvNet BN (x - mu) / sigma * g + b."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = ref.spectrogram(wave)[:, :, None]                  # 512 x T x 1
    for name, bn, cout, kh, kw, stride, pad in LAYERS:
        x = _conv(x, p[f"{name}f"], p[f"{name}b"], stride, pad)
        mom = p[f"{bn}x"]
        x = (x - mom[:, 0]) / mom[:, 1] * p[f"{bn}m"].reshape(-1) + p[f"{bn}b"].reshape(-1)
        x = np.maximum(x, 0)
        if name in POOLS:
            x = _maxpool(x, *POOLS[name])
        if name == "fc6":
            x = x.mean(axis=1, keepdims=True)              # pool6: mean over time
    x = _conv(x, p["fc8f"], p["fc8b"], 1, 0)
    return x.reshape(8)


@pytest.mark.parametrize("with_layers", [True, False])
def test_import_matches_numpy_forward(tmp_path, with_layers):
    from tf_cme.models.io import load_model
    from tf_cme.models.student_import import import_student
    params, layers = random_student_params(1)
    mat = write_dagnn_mat(tmp_path / "emovoxceleb-student.mat", params,
                          layers if with_layers else None)
    model = import_student(mat, tmp_path / "student.keras", dither=False)
    assert model.cme_metadata["imported_from"]["parameters"] == len(params)
    assert model.get_layer("conv1").filters == 6
    rng = np.random.default_rng(2)
    t = np.arange(20000) / 16000
    waves = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
                      + 0.02 * rng.standard_normal(t.size),
                      0.2 * rng.standard_normal(t.size)]).astype(np.float32)
    got = np.asarray(load_model(tmp_path / "student.keras")(waves))
    for b in range(2):
        want = numpy_student(waves[b], params)
        err = np.max(np.abs(got[b] - want)) / np.max(np.abs(want))
        assert err < 1e-4, err


def test_import_errors(tmp_path):
    from tf_cme.models.student_import import import_student
    from tf_cme.utils import CmeError
    params, layers = random_student_params(0)
    bad = dict(params)
    bad["conv3f"] = bad["conv3f"][:, :, :, :5]
    with pytest.raises(CmeError, match="conv3f.*shape"):
        import_student(write_dagnn_mat(tmp_path / "a.mat", bad, layers))
    extra = dict(params, extra_param=np.zeros(3, np.float32))
    with pytest.raises(CmeError, match="extra_param.*not used"):
        import_student(write_dagnn_mat(tmp_path / "b.mat", extra))
    # BN folded into the convolutions (no BN parameters): identity BN layers
    folded = {k: v for k, v in params.items() if not k.startswith("bn")}
    m = import_student(write_dagnn_mat(tmp_path / "c.mat", folded))
    assert m.cme_metadata["imported_from"]["bn_folded"]
    bn = m.get_layer("conv1_bn")
    np.testing.assert_allclose(np.asarray(bn.moving_variance) + bn.epsilon, 1.0, atol=1e-7)


def test_import_script(tmp_path, monkeypatch, capsys):
    import runpy
    params, layers = random_student_params(3)
    mat = write_dagnn_mat(tmp_path / "emovoxceleb-student.mat", params, layers)
    script = str(ROOT / "scripts" / "import_student.py")
    monkeypatch.setattr(sys, "argv", [script, str(mat), str(tmp_path / "s.keras")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 0
    assert (tmp_path / "s.keras").exists() and "imported 37 parameters" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [script, str(tmp_path / "no.mat"), str(tmp_path / "t.keras")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 1 and "no such file" in capsys.readouterr().err
