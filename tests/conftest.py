"""Shared fixtures: a tiny demo corpus in the real dataset formats, generated once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CME_QUIET", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

# before any test module imports TensorFlow: tf_cme.runtime's oneDNN workaround (TF >= 2.20
# on AMD CPUs) and quiet TensorFlow import apply to the whole session
import tf_cme  # noqa: E402,F401


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """``make_demo_data --size tiny --seed 0`` output, shared by every test (read-only)."""
    from tf_cme.demo import corpus as dc
    out = tmp_path_factory.mktemp("corpus") / "demo"
    dc.generate(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """A tiny student and teacher trained, exported and calibrated (tf_cme.demo.runs), built
    once per session for the serving, prediction and audio-warning tests."""
    from tf_cme.demo.runs import make_tiny_runs
    return make_tiny_runs(tmp_path_factory.getbasetemp() / "serving-tiny")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


_MISSING = ("No module named", "could not import")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``TF_CME_STRICT_SKIPS=1`` (``make test``, ``make test-tf221``), a test skipped
    because a Python package is missing fails: a venv that lacks an extra must not pass
    by running fewer tests.  Other skips (a missing server binary) stay skips."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TF_CME_STRICT_SKIPS") == "1":
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if any(m in reason for m in _MISSING):
            report.outcome = "failed"
            report.longrepr = f"skipped for a missing package (TF_CME_STRICT_SKIPS=1): {reason}"
