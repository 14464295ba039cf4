"""Edit-distance metrics between decoded strings and labels (text recognition)."""

from __future__ import annotations

from collections.abc import Sequence

import editdistance
import numpy as np

from surrogate_search.metrics.base import Metric, check_same_length, register_metric


def edit_distances(predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Levenshtein distance of each prediction to its target (unit insert/delete/substitute costs)."""
    check_same_length(predictions, targets, "edit_distance")
    return np.fromiter((editdistance.eval(p, t) for p, t in zip(predictions, targets)), dtype=np.float64, count=len(targets))


@register_metric("edit_distance")
class EditDistance(Metric):
    """Per sample: the Levenshtein distance. Over a split: the TOTAL, as the LS-ED paper reports it."""

    name = "edit_distance"
    higher_is_better = False

    def per_sample(self, predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        return edit_distances(predictions, targets)

    def compute(self, predictions: Sequence[str], targets: Sequence[str]) -> float:
        return float(edit_distances(predictions, targets).sum())


@register_metric("normalized_edit_distance")
class NormalizedEditDistance(Metric):
    """Per sample: distance divided by the label's length (an empty label counts as length 1). Over a split: the mean."""

    name = "normalized_edit_distance"
    higher_is_better = False

    def per_sample(self, predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        lengths = np.fromiter((max(len(t), 1) for t in targets), dtype=np.float64, count=len(targets))
        return edit_distances(predictions, targets) / lengths

    def compute(self, predictions: Sequence[str], targets: Sequence[str]) -> float:
        values = self.per_sample(predictions, targets)
        return float(values.mean()) if len(values) else 0.0


@register_metric("char_error_rate")
class CharErrorRate(Metric):
    """Total edit distance divided by the total number of label characters."""

    name = "char_error_rate"
    higher_is_better = False
    decomposable = False

    def compute(self, predictions: Sequence[str], targets: Sequence[str]) -> float:
        total_chars = sum(len(t) for t in targets)
        return float(edit_distances(predictions, targets).sum() / max(total_chars, 1))


@register_metric("word_accuracy")
class WordAccuracy(Metric):
    """Fraction of predictions equal to their label."""

    name = "word_accuracy"
    higher_is_better = True

    def per_sample(self, predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        check_same_length(predictions, targets, self.name)
        return np.fromiter((p == t for p, t in zip(predictions, targets)), dtype=np.float64, count=len(targets))

    def compute(self, predictions: Sequence[str], targets: Sequence[str]) -> float:
        values = self.per_sample(predictions, targets)
        return float(values.mean()) if len(values) else 0.0
