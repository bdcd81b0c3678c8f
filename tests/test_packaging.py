"""`pip install .` gives a working `tf-cme` command outside the checkout (issue 13.3).

The package is built from pyproject.toml into a wheel and installed with ``--target``
(no dependencies: they are this venv's); the command then runs from an empty folder,
where neither scripts/ nor the checkout's tf_cme/ can be found.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_gives_a_working_command_outside_the_checkout(tmp_path):
    target, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    script = target / "bin" / "tf-cme"
    assert script.exists()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}
    probe = ("import sys, tf_cme; print(tf_cme.__file__); "
             "sys.argv = ['tf-cme', '--help']; from tf_cme.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=120)
    assert p.returncode == 0, p.stderr
    first, rest = p.stdout.split("\n", 1)
    assert Path(first).is_relative_to(target), first      # the installed copy, not ROOT
    assert "train-student" in rest and "predict" in rest
    # the console script pip wrote runs the same entry point
    text = script.read_text()
    assert "from tf_cme.cli import main" in text
    p = subprocess.run([sys.executable, str(script), "predict", "missing.wav"],
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    assert p.returncode == 1
    # outside the checkout the default model says where it comes from
    assert "exists only in a checkout" in p.stderr
    assert not (cwd / "runs").exists() and os.listdir(cwd) == []
