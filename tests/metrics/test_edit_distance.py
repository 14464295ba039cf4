from __future__ import annotations

import random

import numpy as np
import pytest

from surrogate_search.metrics import get_metric


def reference_levenshtein(a: str, b: str) -> int:
    """Plain dynamic programming, independent of the editdistance package."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


ALPHABET = "abcde01é漢字🙂"


def random_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    preds = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 9))) for _ in range(n)]
    labels = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 9))) for _ in range(n)]
    preds[:3], labels[:3] = ["", "abc", ""], ["", "", "xyz"]  # empty strings on either side
    return preds, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edit_distance_matches_dynamic_programming(seed: int) -> None:
    preds, labels = random_pairs(200, seed)
    expected = np.array([reference_levenshtein(p, t) for p, t in zip(preds, labels)], dtype=float)
    metric = get_metric("edit_distance")
    np.testing.assert_array_equal(metric.per_sample(preds, labels), expected)
    assert metric.compute(preds, labels) == expected.sum()  # total over the split
    assert metric.mode == "min"


def test_normalized_edit_distance_divides_by_label_length() -> None:
    preds, labels = random_pairs(200, 3)
    expected = np.array([reference_levenshtein(p, t) / max(len(t), 1) for p, t in zip(preds, labels)])
    metric = get_metric("normalized_edit_distance")
    np.testing.assert_allclose(metric.per_sample(preds, labels), expected)
    assert metric.compute(preds, labels) == pytest.approx(expected.mean())
    # an empty label counts as length 1: predicting "abc" for "" costs 3
    assert metric.per_sample(["abc"], [""])[0] == 3.0


def test_word_accuracy_and_char_error_rate() -> None:
    preds, labels = ["cat", "dog", "", "漢字"], ["cat", "dig", "", "漢"]
    assert get_metric("word_accuracy").compute(preds, labels) == pytest.approx(2 / 4)
    assert get_metric("char_error_rate").compute(preds, labels) == pytest.approx((0 + 1 + 0 + 1) / (3 + 3 + 0 + 1))


def test_edit_distance_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        get_metric("edit_distance").compute(["a", "b"], ["a"])
