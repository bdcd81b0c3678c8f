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


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """``make_demo_data --size tiny --seed 0`` output, shared by every test (read-only)."""
    from tf_cme.demo import corpus as dc
    out = tmp_path_factory.mktemp("corpus") / "demo"
    dc.generate(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
