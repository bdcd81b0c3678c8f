"""tf-cme console command (tf_cme/cli.py): lists every stage, dispatches with hyphens,
and neither --help nor an unknown command imports TensorFlow."""
import subprocess
import sys
from pathlib import Path

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


def test_setup_declares_the_console_command():
    assert '"tf-cme = tf_cme.cli:main"' in (ROOT / "setup.py").read_text()
