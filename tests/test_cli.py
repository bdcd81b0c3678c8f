"""tf-cme console command (tf_cme/cli.py): lists every stage, dispatches with hyphens,
and neither --help nor an unknown command imports TensorFlow."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import sys
from tf_cme import cli
try:
    cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("CODE", code)
print("TF", "tensorflow" in sys.modules)
"""


def _probe(*args):
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=120)
    return p.stdout, p.stderr


def test_help_lists_every_command_hyphenated_without_tensorflow():
    from tf_cme.commands import COMMANDS
    out, _ = _probe("--help")
    assert "CODE 0" in out and "TF False" in out
    for name in COMMANDS:
        assert f"  {name.replace('_', '-')} " in out, name


def test_unknown_command_fails_with_code_2_without_tensorflow():
    out, err = _probe("no-such-stage")
    assert "CODE 2" in out and "TF False" in out
    assert "unknown command 'no-such-stage'" in err


def test_subcommand_help_runs_the_command_parser():
    out, _ = _probe("train-student", "--help")
    assert "usage: tf-cme train-student" in out and "CODE 0" in out


def test_pyproject_declares_the_console_command_and_extras():
    import tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"] == {"tf-cme": "tf_cme.cli:main"}
    assert {"serving", "import", "tfio", "test", "bench", "tflite", "demo"} <= set(
        meta["optional-dependencies"])
    # the demo installs neither torch nor jax (issue 13.4)
    demo = " ".join(meta["optional-dependencies"]["demo"])
    assert "torch" not in demo and "jax" not in demo


# Every command checks its arguments before TensorFlow's start-up (issue 13.6): a missing
# input is an error naming it, with TensorFlow never imported.
_M = "/nonexistent-tf-cme/x"
_MISSING = {
    "predict-default-model": (["predict", "missing.wav"], "no such model"),
    "predict-all-files-missing": (["predict", "--model", "tests", "missing.wav"], "missing.wav"),
    "predict-model": (["predict", "--model", _M, "tests/__init__.py"], "no such model"),
    "benchmark-external": (["benchmark-external", "--model", _M, "--records", _M], _M),
    "evaluate-student": (["evaluate-student", "--records", _M, _M], _M),
    "evaluate-teacher": (["evaluate-teacher", "--run", _M, "--records", _M], _M),
    "export-model": (["export-model", _M], "no such run folder"),
    "import-student": (["import-student", _M, "/tmp/x.keras"], _M),
    "label-faces": (["label-faces", "--records", _M, "--teacher", _M, "--out", "/tmp/x"], _M),
    "report": (["report", "--out", "/tmp/x", _M], _M),
    "serve-client": (["serve-client", "missing.wav"], "missing.wav"),
    "train-student": (["train-student", "--records", _M, "--out", "/tmp/x"], _M),
    "train-teacher": (["train-teacher", "--records", _M, "--out", "/tmp/x"], _M),
    "build-ferplus": (["build-records", "ferplus", "--fer-csv", _M, "--ferplus-csv", _M,
                       "--out", "/tmp/x"], _M),
    "build-emovox": (["build-records", "emovox", "--root", _M, "--out", "/tmp/x"], _M),
    "build-external": (["build-records", "external", "--root", _M, "--out", "/tmp/x"], _M),
    "verify": (["build-records", "verify", _M], _M),
    "tensorboard": (["run-tensorboard", "--logdir", _M], _M),
    # a bad option value, not only a missing file
    "train-student-profile-batch": (["train-student", "--records", _M, "--out", "/tmp/x",
                                     "--profile-batch", "5,2"], "--profile-batch: '5,2'"),
    "train-teacher-profile-batch": (["train-teacher", "--records", _M, "--out", "/tmp/x",
                                     "--profile-batch", "0"], "--profile-batch: '0'"),
}


@pytest.mark.parametrize("case", sorted(_MISSING))
def test_missing_inputs_fail_before_tensorflow(case):
    args, named = _MISSING[case]
    out, err = _probe(*args)
    assert "TF False" in out, (case, out, err)
    assert "CODE 0" not in out and "CODE None" not in out, (case, out)
    assert named in err, (case, err)


@pytest.mark.parametrize("command", ["train-student", "train-teacher"])
def test_bad_profile_batch_with_good_records_fails_before_tensorflow(command, tmp_path):
    """Records that pass their checks, then a bad --profile-batch: still refused without
    TensorFlow's start-up (its parser is not in the Keras callbacks' module)."""
    import json

    from tf_cme.data import schema
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "manifest.json").write_text(json.dumps(
        {"schema": "ferplus", "schema_version": schema.SCHEMAS["ferplus"].version}))
    out, err = _probe(command, "--records", str(rec), "--out", str(tmp_path / "run"),
                      "--profile-batch", "a")
    assert "TF False" in out and "CODE 0" not in out, (out, err)
    assert "--profile-batch: 'a' is not N or N,M" in err, err


def test_output_folder_that_is_a_file_fails_before_tensorflow(tmp_path):
    from tf_cme.utils import CmeError, check_output_dir
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CmeError, match="exists and is not a folder"):
        check_output_dir(f)
    with pytest.raises(CmeError, match="is not a folder"):
        check_output_dir(f / "sub")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_command_reference_is_current():
    """docs/commands.md is `tf-cme --reference` (every command's --help): regenerate it with
    `.venv/bin/python -m tf_cme.cli --reference > docs/commands.md` after changing options."""
    from tf_cme import cli
    want = cli.reference() + "\n"
    assert (ROOT / "docs" / "commands.md").read_text() == want
    for flag in ("--skip-corrupt", "--keep-epochs", "--embedding", "--epoch", "--from"):
        assert flag in want, flag
