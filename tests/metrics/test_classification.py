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
