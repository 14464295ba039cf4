"""Every registered metric: found by name, knows its direction, and a perfect prediction scores best."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from surrogate_search.metrics import METRICS, Metric, get_metric, list_metrics, register_metric
from surrogate_search.registry import UnknownNameError

TEXT = (["cat", "dog", "", "a1"], ["cat", "dig", "x", "a1"])
BINARY = ([1, 0, 0, 1, 0], [1, 1, 0, 0, 0])
BOXES = ([[0, 0, 2, 2], [0, 0, 1, 1]], [[1, 1, 3, 3], [0, 0, 1, 1]])
ROTATED = ([[1, 1, 2, 2, 0.7], [5, 0, 2, 1, 0.0]], [[1, 1, 2, 2, 0.0], [0, 0, 2, 1, 0.0]])  # IoU 0.71 and 0
# 1-D embeddings; the labels as embeddings are a perfect one. Class 0 sits at both ends of the
# line, 10 samples apart: out of each other's 8 nearest neighbours.
RANKED = ([[0], [11], *([i] for i in range(1, 11))], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
SAMPLES: dict[str, tuple[Any, Any]] = {
    "edit_distance": TEXT, "normalized_edit_distance": TEXT, "char_error_rate": TEXT, "word_accuracy": TEXT,
    "f1": BINARY, "f_beta": BINARY, "balanced_accuracy": BINARY, "gmean": BINARY, "accuracy": BINARY,
    "iou": BOXES, "iou_ge_50": BOXES, "iou_ge_75": BOXES,
    "rotated_iou": ROTATED, "rotated_iou_ge_50": ROTATED, "rotated_iou_ge_75": ROTATED,
    "recall_at_1": RANKED, "recall_at_2": RANKED, "recall_at_4": RANKED, "recall_at_8": RANKED,
}


def test_every_builtin_metric_has_a_sample() -> None:
    assert set(list_metrics()) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_perfect_predictions_score_best(name: str) -> None:
    metric = get_metric(name)
    predictions, targets = SAMPLES[name]
    imperfect = metric.compute(predictions, targets)
    perfect = metric.compute(targets, targets)
    best = 1.0 if metric.higher_is_better else 0.0
    assert perfect == pytest.approx(best)
    assert (imperfect < perfect) if metric.higher_is_better else (imperfect > perfect)
    if metric.decomposable:
        assert len(metric.per_sample(predictions, targets)) == len(targets)


def test_unknown_metric_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown metric 'f2'; known metrics: accuracy, balanced_accuracy"):
        get_metric("f2")


def test_user_registered_metric_is_found_by_name() -> None:
    @register_metric("test_top1_error")
    class Top1Error(Metric):
        name = "test_top1_error"
        higher_is_better = False

        def compute(self, predictions: Any, targets: Any) -> float:
            return float((np.asarray(predictions) != np.asarray(targets)).mean())

    try:
        assert "test_top1_error" in list_metrics()
        assert get_metric("test_top1_error").compute([1, 2, 3], [1, 2, 4]) == pytest.approx(1 / 3)
    finally:
        METRICS._factories.pop("test_top1_error")
