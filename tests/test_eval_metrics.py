"""ROC / AUC / accuracy against hand-computed cases, folds, logistic regression, baselines."""
from __future__ import annotations

import numpy as np
import pytest

from tf_cme.evaluation import external
from tf_cme.metrics import classification, roc
from tf_cme.utils import CmeError


# ---------------------------------------------------------------- ROC and AUC

def test_auc_hand_computed_without_ties():
    s = [0.9, 0.8, 0.7, 0.1]
    assert roc.roc_auc([1, 1, 0, 0], s) == 1.0
    assert roc.roc_auc([0, 0, 1, 1], s) == 0.0
    # positives {0.9, 0.7}, negatives {0.8, 0.1}: 3 of 4 pairs ordered right
    assert roc.roc_auc([1, 0, 1, 0], s) == pytest.approx(0.75, abs=1e-15)
    fpr, tpr, thr = roc.roc_curve([1, 0, 1, 0], s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and list(thr[1:]) == s


def test_auc_hand_computed_with_ties():
    # positives {0.5, 0.5}, negatives {0.5, 0.1}: pairs 0.5 vs 0.5 count 1/2 -> 3/4
    labels, s = [1, 0, 1, 0], [0.5, 0.5, 0.5, 0.1]
    assert roc.roc_auc(labels, s) == pytest.approx(0.75, abs=1e-15)
    fpr, tpr, thr = roc.roc_curve(labels, s)
    # the three tied scores make one diagonal step
    np.testing.assert_allclose(fpr, [0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1, 1])
    np.testing.assert_allclose(thr[1:], [0.5, 0.1])
    # all scores tied: exactly 0.5
    assert roc.roc_auc([1, 0, 0, 1, 0], [3, 3, 3, 3, 3]) == 0.5
    # +1/-1 labels (vl_roc convention) and bools give the same answer
    assert roc.roc_auc([1, -1, 1, -1], s) == roc.roc_auc(np.array([1, 0, 1, 0], bool), s)
    # 2 positives {2, 1}, 3 negatives {2, 1, 0}: (0.5 + 1 + 1) + (0 + 0.5 + 1) = 4 of 6
    assert roc.roc_auc([1, 1, 0, 0, 0], [2, 1, 2, 1, 0]) == pytest.approx(4 / 6, abs=1e-15)


def test_auc_matches_sklearn_and_mann_whitney_with_many_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        s = rng.integers(0, 4, n).astype(float)          # heavy ties
        ours = roc.roc_auc(y, s)
        assert ours == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        pos, neg = s[y == 1], s[y == 0]
        mw = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
        assert ours == pytest.approx(mw / (pos.size * neg.size), abs=1e-12)


def test_not_evaluable_is_never_half_or_nan():
    r = roc.binary_roc([0, 0, 0], [0.1, 0.2, 0.3], emotion="fear", split="heard")
    assert not r.evaluable and r.auc is None and r.reason == "no positive example"
    assert r.to_json() == {"auc": None, "evaluable": False, "positives": 0, "negatives": 3,
                           "reason": "no positive example"}
    r = roc.binary_roc([1, 1], [0.1, 0.2])
    assert r.auc is None and r.reason == "no negative example"
    with pytest.raises(roc.NotEvaluable, match="no positive"):
        roc.roc_auc([0, 0], [1, 2])
    assert "not evaluable" in r.describe()


def test_per_emotion_roc_and_mean_auc():
    # 6 tracks, teacher labels: 3 x neutral, 2 x happiness, 1 x fear (ignored), none else
    labels = np.array([0, 0, 0, 1, 1, 6])
    probs = np.full((6, 8), 0.05)
    probs[:, 0] = [0.9, 0.8, 0.3, 0.4, 0.1, 0.2]      # neutral: pos {.9,.8,.3} neg {.4,.1,.2}
    probs[:, 1] = [0.1, 0.2, 0.3, 0.6, 0.2, 0.2]      # happiness: pos {.6,.2} neg {.1,.2,.3,.2}
    res = roc.per_emotion_roc(labels, probs, split="train")
    assert set(res) == set(roc.emotions.FERPLUS)
    # neutral: .9 > all 3, .8 > all 3, .3 > {.1,.2} -> 8 / 9
    assert res["neutral"].auc == pytest.approx(8 / 9)
    # happiness: .6 > all 4; .2 > .1, ties .2 x2 (0.5 each), < .3 -> (4 + 1 + 1) / 8
    assert res["happiness"].auc == pytest.approx(6 / 8)
    assert res["fear"].evaluable                       # present, but ignored in the mean
    for e in ("surprise", "sadness", "anger", "disgust", "contempt"):
        assert not res[e].evaluable and res[e].positives == 0
    assert roc.mean_auc(res) == pytest.approx((8 / 9 + 6 / 8) / 2)
    assert roc.mean_auc(res, ignore=()) == pytest.approx((8 / 9 + 6 / 8 + res["fear"].auc) / 3)
    assert roc.mean_auc(res, ignore=["neutral", "happy", "fear"]) is None


def test_accuracy_confusion_row_normalise():
    assert classification.accuracy([0, 1, 2, 2], [0, 2, 2, 2]) == 0.75
    cm = classification.confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2], 4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    rn = classification.row_normalise(cm)
    assert rn[3].tolist() == [0, 0, 0, 0] and np.isfinite(rn).all()
    np.testing.assert_allclose(rn.sum(1), [1, 1, 1, 0])
    with pytest.raises(ValueError, match="outside"):
        classification.confusion_matrix([0, 5], [0, 0], 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        roc.roc_auc([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        roc.roc_auc([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="shape"):
        roc.per_emotion_roc([0, 1], np.zeros((2, 3)))


# ---------------------------------------------------------------- folds

def test_matlab_round_is_half_away_from_zero():
    np.testing.assert_array_equal(external.matlab_round([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999]),
                                  [1, 2, 3, -1, -3, 2])


@pytest.mark.parametrize("n,expected", [
    (720, [0, 72, 144, 216, 288, 360, 432, 504, 576, 648, 720]),
    # 129.3 k: 646.5 rounds up (NumPy's round would give 646)
    (1293, [0, 129, 259, 388, 517, 647, 776, 905, 1034, 1164, 1293]),
    # 2.5 k: every half rounds up (NumPy: 2, 12, 22 and 8/18 by luck)
    (25, [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25]),
])
def test_fold_boundaries(n, expected):
    b = external.fold_boundaries(n, 10)
    assert b.tolist() == expected
    folds = external.fold_indices(n, 10, seed=0)
    assert [len(f) for f in folds] == np.diff(expected).tolist()
    together = np.concatenate(folds)
    assert sorted(together.tolist()) == list(range(n))          # a partition
    np.testing.assert_array_equal(together, np.random.default_rng(0).permutation(n))


def test_numpy_round_differs_for_1293_and_25():
    assert np.round(np.linspace(0, 1293, 11))[5] == 646
    assert np.round(np.linspace(0, 25, 11)).astype(int).tolist()[1] == 2


def test_check_labels_messages():
    with pytest.raises(CmeError, match="fewer than the 10 folds"):
        external.check_labels([0, 1, 0, 1, 0], 6, 10)
    with pytest.raises(CmeError, match="at least 2 classes"):
        external.check_labels([3] * 20, 6, 10)


# ---------------------------------------------------------------- logistic regression

def test_fit_logistic_is_the_unregularised_mle():
    from scipy.optimize import minimize
    from scipy.special import logsumexp
    rng = np.random.default_rng(1)
    x = rng.standard_normal((90, 3))
    y = rng.integers(0, 3, 90)

    def nll(w):
        z = x @ w[:9].reshape(3, 3) + w[9:]
        return -(z[np.arange(90), y] - logsumexp(z, axis=1)).sum()

    layer = external.fit_logistic(x, y, 3)
    best = minimize(nll, np.zeros(12), method="BFGS", options={"gtol": 1e-9}).fun
    ours = nll(np.r_[layer.weights.ravel(), layer.bias])
    assert ours == pytest.approx(best, abs=1e-4)
    assert layer.weights.shape == (3, 3) and layer.bias.shape == (3,)


def test_fit_logistic_binary_and_missing_classes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 2))
    y = np.where(x[:, 0] + 0.3 * rng.standard_normal(40) > 0, 4, 1)   # classes 1 and 4 of 6
    layer = external.fit_logistic(x, y, 6)
    assert layer.weights.shape == (2, 6)
    pred = layer.predict(x)
    assert set(pred.tolist()) <= {1, 4}
    assert classification.accuracy(y, pred) > 0.8
    single = external.fit_logistic(x, np.full(40, 2), 6)
    assert set(single.predict(x).tolist()) == {2}


def test_cross_validation_on_informative_features():
    rng = np.random.default_rng(3)
    n, k = 300, 6
    y = np.arange(n) % k
    feats = np.eye(8)[y] * 2.0 + rng.standard_normal((n, 8))
    r = external.cross_validate(feats, y, k, folds=10, seed=0)
    assert r.fold_accuracies.shape == (10,)
    assert r.confusion.sum() == n
    assert r.mean == pytest.approx(np.mean(r.fold_accuracies))
    assert r.std == pytest.approx(np.std(r.fold_accuracies, ddof=1))
    assert r.mean > 0.6
    assert classification.accuracy(y, r.predictions) == pytest.approx(np.trace(r.confusion) / n)
    # fold accuracies recomputed by hand from the held-out predictions
    for acc, idx in zip(r.fold_accuracies, external.fold_indices(n, 10, 0)):
        assert acc == pytest.approx(np.mean(r.predictions[idx] == y[idx]))


def test_random_baseline_is_near_chance():
    y = np.arange(720) % 6                 # a balanced 6-class set, RML-sized
    rb = external.random_baseline(y, 6, width=8, draws=10, seed=0)
    assert rb["draws"] == 10 and len(rb["draw_accuracies"]) == 10
    assert abs(rb["accuracy_mean"] - 1 / 6) < 0.05


def test_calibration_layout():
    layer = external.LogisticLayer(np.arange(48.0).reshape(8, 6), np.arange(6.0))
    c = external.calibration("rml", ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise"],
                             layer)
    assert c["dataset"] == "rml"
    assert np.array(c["weights"]).shape == (8, 6) and len(c["bias"]) == 6
