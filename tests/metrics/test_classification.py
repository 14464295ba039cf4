from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, fbeta_score, recall_score

from surrogate_search.metrics import NotDecomposableError, confusion_counts, get_metric


def random_binary(seed: int, n: int = 300, positive_rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random(n) < positive_rate).astype(int)
    predictions = np.where(rng.random(n) < 0.8, targets, 1 - targets)
    return predictions, targets


@pytest.mark.parametrize("seed", range(5))
def test_against_scikit_learn(seed: int) -> None:
    preds, targets = random_binary(seed)
    assert get_metric("f1").compute(preds, targets) == pytest.approx(f1_score(targets, preds))
    assert get_metric("f_beta", beta=2.0).compute(preds, targets) == pytest.approx(fbeta_score(targets, preds, beta=2.0))
    assert get_metric("balanced_accuracy").compute(preds, targets) == pytest.approx(balanced_accuracy_score(targets, preds))
    assert get_metric("accuracy").compute(preds, targets) == pytest.approx(accuracy_score(targets, preds))
    gmean = np.sqrt(recall_score(targets, preds, pos_label=1) * recall_score(targets, preds, pos_label=0))
    assert get_metric("gmean").compute(preds, targets) == pytest.approx(gmean)


@pytest.mark.parametrize("fill", [0, 1])
def test_all_one_class_batches_are_defined(fill: int) -> None:
    targets = np.full(20, fill)
    for preds in (np.full(20, fill), np.full(20, 1 - fill), np.r_[np.full(10, fill), np.full(10, 1 - fill)]):
        with np.errstate(all="raise"):  # no division by zero anywhere
            f1 = get_metric("f1").compute(preds, targets)
            bal = get_metric("balanced_accuracy").compute(preds, targets)
            gm = get_metric("gmean").compute(preds, targets)
        assert f1 == pytest.approx(f1_score(targets, preds, zero_division=1.0))
        assert bal == pytest.approx(balanced_accuracy_score(targets, preds))
        assert 0.0 <= gm <= 1.0 and np.isfinite(gm)


def test_f1_with_no_positives_anywhere_is_perfect_and_one_miss_is_zero() -> None:
    assert get_metric("f1").compute([0, 0, 0], [0, 0, 0]) == 1.0
    assert get_metric("f1").compute([1, 0, 0], [0, 0, 0]) == 0.0


def test_confusion_counts() -> None:
    assert confusion_counts([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == (2, 1, 1, 1)


def test_set_level_metrics_refuse_per_sample() -> None:
    with pytest.raises(NotDecomposableError, match="'f1' is defined on a whole set"):
        get_metric("f1").per_sample([1, 0], [1, 1])
    np.testing.assert_array_equal(get_metric("accuracy").per_sample([1, 0], [1, 1]), [1.0, 0.0])


def test_bad_beta_names_the_value() -> None:
    with pytest.raises(ValueError, match="beta must be > 0, got -1"):
        get_metric("f_beta", beta=-1)


@pytest.mark.parametrize("seed", range(3))
def test_best_threshold_is_the_best_split_of_the_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = (rng.random(200) < 0.1).astype(int)
    probabilities = np.clip(0.3 * targets + rng.normal(0.3, 0.15, 200), 0, 1).round(2)  # ties in probabilities
    threshold, value = get_metric("f1").best_threshold(probabilities, targets)
    # Every way to cut the sorted probabilities, scored by scikit-learn.
    cuts = np.r_[np.unique(probabilities), probabilities.min() - 1]
    assert value == pytest.approx(max(f1_score(targets, probabilities > t, zero_division=1.0) for t in cuts))
    assert f1_score(targets, probabilities > threshold) == pytest.approx(value)
    assert get_metric("f1").at_threshold(probabilities, targets, threshold) == pytest.approx(value)


def test_best_threshold_breaks_ties_towards_one_half() -> None:
    # F1 2/3 by calling only 0.9 positive (threshold 0.75) or by calling all positive (just below 0.1).
    threshold, value = get_metric("f1").best_threshold([0.1, 0.3, 0.6, 0.9], [1, 0, 0, 1])
    assert (threshold, value) == (pytest.approx(0.75), pytest.approx(2 / 3))


def test_at_threshold_decides_strictly_above() -> None:
    assert get_metric("f1").at_threshold([0.5, 0.7], [0, 1]) == 1.0  # 0.5 is not above 0.5
    assert get_metric("accuracy").at_threshold([0.5, 0.7], [0, 1], threshold=0.8) == 0.5
