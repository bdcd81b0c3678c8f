"""The external benchmark's fold spread is MATLAB's ``std`` (N-1), protocol §7.3."""
from __future__ import annotations

import math

import numpy as np

from tf_cme.evaluation.external import CvResult


def _result(accs):
    return CvResult(np.asarray(accs, float), np.zeros((2, 2), np.int64), np.zeros(4, np.int64))


def test_fold_std_is_n_minus_1():
    r = _result([0.5, 0.7, 0.6])
    # by hand: mean 0.6, squared deviations 0.01 + 0.01 + 0 over N - 1 = 2 -> 0.1
    # (the population std would be sqrt(0.02 / 3) = 0.0816)
    assert math.isclose(r.mean, 0.6)
    assert math.isclose(r.std, 0.1, rel_tol=1e-12)
    assert math.isclose(r.to_json(["a", "b"])["accuracy_std"], 0.1, rel_tol=1e-12)
    ten = _result([0.3, 0.4] * 5)                      # 10 folds: sqrt(10 * 0.0025 / 9)
    assert math.isclose(ten.std, math.sqrt(0.025 / 9), rel_tol=1e-12)
    assert _result([0.42]).std == 0.0                  # one fold: no spread, not NaN
