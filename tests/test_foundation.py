"""The taxonomy, configs, run folders, model metadata I/O and the packaging contract."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tf_cme import config, emotions
from tf_cme.runs import Run
from tf_cme.utils import CmeError, atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]


# --- emotions ---------------------------------------------------------------------------

def test_ferplus_order_is_the_vote_column_order():
    assert emotions.FERPLUS == ("neutral", "happiness", "surprise", "sadness",
                                "anger", "disgust", "fear", "contempt")
    assert emotions.FERPLUS_VOTE_COLUMNS[8:] == ("unknown", "NF")


def test_fer2013_codes_map_by_name():
    # FER2013 code 0 = Angry, 3 = Happy, 6 = Neutral
    assert emotions.label_to_ferplus(0, "fer2013") == 4
    assert emotions.label_to_ferplus(3, "fer2013") == 1
    assert emotions.label_to_ferplus(6, "fer2013") == 0
    assert emotions.ferplus_indices("rml") == [4, 5, 6, 1, 3, 2]
    assert emotions.ferplus_indices("afew") == [4, 5, 6, 1, 0, 3, 2]


def test_to_ferplus_reorders_and_fills_missing_classes():
    rml_scores = np.array([[1., 2., 3., 4., 5., 6.]], dtype=np.float32)
    out = emotions.to_ferplus(rml_scores, "rml")
    assert out.shape == (1, 8)
    # neutral and contempt are missing from RML: documented fill value
    np.testing.assert_array_equal(out[0], [emotions.MISSING_LOGIT, 4, 6, 5, 1, 2, 3,
                                           emotions.MISSING_LOGIT])
    probs = emotions.to_ferplus(np.full(6, 1 / 6), "enterface", fill=emotions.MISSING_PROB)
    assert probs[0] == 0 and probs[7] == 0 and probs.sum() == pytest.approx(1.0)


def test_to_ferplus_accepts_arbitrary_spellings():
    out = emotions.to_ferplus([0.1, 0.2, 0.7], ["Happy", "SAD", "angry"])
    assert out[1] == pytest.approx(0.1) and out[3] == pytest.approx(0.2)
    assert out[4] == pytest.approx(0.7)


def test_unmappable_names_are_all_listed():
    with pytest.raises(ValueError, match=r"'bored'.*'sleepy'"):
        emotions.resolve_classes(["happy", "bored", "sleepy"])
    with pytest.raises(ValueError, match="duplicate"):
        emotions.resolve_classes(["happy", "happiness"])
    with pytest.raises(ValueError, match="3 classes but the taxonomy has 6"):
        emotions.to_ferplus(np.zeros(3), "rml")


# --- config -----------------------------------------------------------------------------

@dataclasses.dataclass
class Optim:
    lr: float = 0.01
    momentum: float = 0.9


@dataclasses.dataclass
class Cfg:
    name: str = "x"
    epochs: int = 3
    flag: bool = False
    sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    loss: str = "softmaxlog"
    optim: Optim = dataclasses.field(default_factory=Optim)
    init: str | None = None


def test_overrides_parse_and_type_check():
    cfg = Cfg()
    for s in ["epochs=7", "flag=true", "sizes=[3,4,5]", "optim.lr=1e-3", "name=hello world",
              "init=/tmp/w.keras"]:
        cfg = config.apply_override(cfg, s)
    assert (cfg.epochs, cfg.flag, cfg.sizes, cfg.optim.lr, cfg.name, cfg.init) == \
        (7, True, [3, 4, 5], 1e-3, "hello world", "/tmp/w.keras")
    assert config.apply_override(cfg, "optim.lr=1").optim.lr == 1.0   # int accepted as float


@pytest.mark.parametrize("bad, msg", [
    ("epoch=3", "unknown config key 'epoch'"),
    ("optim.lrr=3", "unknown config key 'optim.lrr'"),
    ("epochs=three", "epochs: expected an integer"),
    ("flag=maybe", "flag: expected true or false"),
    ("noequals", "expects key=value"),
])
def test_bad_overrides(bad, msg):
    with pytest.raises(config.ConfigError, match=msg):
        config.apply_override(Cfg(), bad)


def test_json_round_trip_and_precedence(tmp_path):
    path = config.save(Cfg(epochs=5, optim=Optim(lr=0.5)), tmp_path / "c.json")
    assert config.load(Cfg, path) == Cfg(epochs=5, optim=Optim(lr=0.5))
    import argparse
    p = config.add_config_args(argparse.ArgumentParser())
    p.add_argument("--epochs", type=int)
    args = p.parse_args(["--config", str(path), "--set", "epochs=9", "--set", "flag=1"])
    assert config.resolve(Cfg, args).epochs == 9          # --set beats the file
    assert config.resolve(Cfg, args, {"epochs": 11}).epochs == 11   # explicit beats --set
    assert config.resolve(Cfg, args, {"epochs": None}).epochs == 9
    (tmp_path / "bad.json").write_text(json.dumps({"epochz": 1}))
    with pytest.raises(config.ConfigError, match="epochz"):
        config.load(Cfg, tmp_path / "bad.json")


def test_resolve_or_exit_is_one_line_exit_2(capsys):
    import argparse
    p = config.add_config_args(argparse.ArgumentParser())
    with pytest.raises(SystemExit) as e:
        config.resolve_or_exit(Cfg, p.parse_args(["--set", "epochs=1.5"]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "epochs" in err


# --- utils and runs ---------------------------------------------------------------------

def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_run_folder(tmp_path):
    run = Run.create(tmp_path / "run")
    run.save_config(Cfg())
    assert run.config()["optim"]["lr"] == 0.01
    run.update_metrics(a=1)
    assert run.update_metrics(b=np.float32(0.5)) == {"a": 1, "b": 0.5}
    with pytest.raises(CmeError, match="no model.keras"):
        run.require_model()
    with pytest.raises(CmeError, match="no such run folder"):
        Run.open(tmp_path / "missing")


# --- model registry and metadata I/O ----------------------------------------------------

def test_save_and_load_model_with_metadata(tmp_path):
    import keras
    from tf_cme.models import io, registry

    @registry.register("unit-test-tiny", kind="student", metadata={"sample_rate": 16000},
                       defaults={"units": 3})
    def _tiny(units):
        x = keras.Input((4,))
        return keras.Model(x, keras.layers.Dense(units, name="d")(x))

    model = registry.build_model("unit-test-tiny", units=2)
    assert model.cme_metadata["options"] == {"units": 2}
    assert model.cme_metadata["class_names"] == list(emotions.FERPLUS)
    path = io.save_model(model, tmp_path / "m.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    again = io.load_model(path)
    assert again.cme_metadata == model.cme_metadata
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry.build_model("nope")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(CmeError, match="not a .keras file"):
        io.load_model(tmp_path / "junk.keras")


# --- packaging contract -----------------------------------------------------------------

def _constraints(name: str) -> dict:
    lines = (ROOT / name).read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), name                  # exact versions only
    return dict(pins)


def test_pyproject_pins_the_stack_and_extras():
    import tomllib
    text = (ROOT / "pyproject.toml").read_text()
    meta = tomllib.loads(text)["project"]
    core, extras = meta["dependencies"], meta["optional-dependencies"]
    for pin in ["tensorflow>=2.17.1,<2.22", "keras>=3.15.1,<3.16", "numpy==1.26.4",
                "opencv-python-headless<5", "soundfile>=0.12"]:
        assert pin in core, pin
    assert meta["requires-python"] == ">=3.11,<3.12"
    assert extras["tfio"] == ["tensorflow-io==0.37.1"]
    assert "torch==2.13.0" in extras["bench"] and "torch==2.13.0" in extras["import"]
    assert not any("tensorflow-io" in d or "setuptools" in d for d in core)  # optional / CLI
    assert not any(d.startswith(("tensorflow-cpu", "tensorflow-addons", "torch", "jax"))
                   for d in core)
    assert "setup()" in (ROOT / "setup.py").read_text()          # the shim
    cons = _constraints("constraints.txt")                        # the pinned default stack
    assert cons["tensorflow"] == "2.17.1" and cons["keras"] == "3.15.1"
    assert cons["tensorflow-io"] == "0.37.1" and cons["numpy"] == "1.26.4"
    assert cons["tensorflow-serving-api"] == "2.17.1"
    assert int(cons["setuptools"].split(".")[0]) < 81             # tensorboard 2.17's CLI
    new = _constraints("constraints-tf221.txt")                   # the newest tested stack
    assert new["tensorflow"].startswith("2.21.") and new["keras"] == "3.15.1"
    assert new["tensorflow-serving-api"].startswith("2.21.")
    assert "tensorflow-io" not in new and new["numpy"] == "1.26.4"
    assert set(new) <= set(cons) | {"wheel"}


def test_readme_starts_with_the_two_commands():
    lines = []
    inside = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip():
            lines.append(line.strip().lstrip("$ ").strip())
    assert lines[:2] == ["make demo", "make test"]


def test_ci_runs_make_test():
    text = (ROOT / ".ci" / "run").read_text()
    assert "make test\n" in text and "make test-tf221" in text
