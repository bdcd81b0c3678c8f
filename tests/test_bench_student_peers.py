"""The student benchmark's peers compute what the Keras front end computes (a peer that
computes something else would make the bench's rates meaningless)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _np_frontend as ref  # noqa: E402

from tf_cme.audio.frontend import Spectrogram  # noqa: E402
from tf_cme.benchmarks.student import _clips, numpy_spectrogram  # noqa: E402


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_numpy_and_torch_peers_match_the_layer():
    torch = pytest.importorskip("torch")
    from tf_cme.benchmarks.student import torch_student
    x = _clips(2, 17760, seed=3)
    x[1] += 0.05                                                  # a DC offset
    want = np.asarray(Spectrogram()(x))
    assert _rel(numpy_spectrogram(x), want) <= 1e-4
    front = torch_student(0.125).front
    with torch.no_grad():
        got = front(torch.from_numpy(x)).numpy()                  # N, 1, 512, M
    assert got.shape == (2, 1, 512, want.shape[2])
    for b in range(2):
        assert _rel(got[b, 0], ref.spectrogram(x[b])) <= 1e-4
        assert _rel(got[b, 0], want[b, :, :, 0]) <= 1e-4
