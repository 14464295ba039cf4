"""Binary classification metrics, computed from a confusion matrix.

The ``*_from_counts`` formulas take plain floats, numpy arrays or torch tensors alike, so the
AnyLoss baseline evaluates exactly these formulas on a soft confusion matrix.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from surrogate_search.metrics.base import Metric, check_same_length, register_metric

Num = TypeVar("Num")  # float, np.ndarray or torch.Tensor


def confusion_counts(predictions: Sequence[int] | np.ndarray, targets: Sequence[int] | np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of binary 0/1 predictions against 0/1 targets."""
    check_same_length(predictions, targets, "confusion matrix")
    p = np.asarray(predictions).astype(bool).ravel()
    t = np.asarray(targets).astype(bool).ravel()
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    tn = int(np.sum(~p & ~t))
    return tp, fp, fn, tn


def f_beta_from_counts(tp: Num, fp: Num, fn: Num, beta: float = 1.0, eps: float = 0.0) -> Num:
    b2 = beta * beta
    return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + eps)  # type: ignore[operator]


def recalls_from_counts(tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> tuple[Num, Num]:
    """(true-positive rate, true-negative rate)."""
    return tp / (tp + fn + eps), tn / (tn + fp + eps)  # type: ignore[operator]


def balanced_accuracy_from_counts(tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
    tpr, tnr = recalls_from_counts(tp, fp, fn, tn, eps)
    return (tpr + tnr) / 2  # type: ignore[operator]


def gmean_from_counts(tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
    tpr, tnr = recalls_from_counts(tp, fp, fn, tn, eps)
    return (tpr * tnr + eps) ** 0.5  # type: ignore[operator]


def accuracy_from_counts(tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
    return (tp + tn) / (tp + fp + fn + tn + eps)  # type: ignore[operator]


def _present_class_recalls(tp: int, fp: int, fn: int, tn: int) -> list[float]:
    # A class absent from the targets has no recall; like scikit-learn's balanced accuracy we
    # average over the classes that are present (an empty batch scores 0).
    recalls = []
    if tp + fn:
        recalls.append(tp / (tp + fn))
    if tn + fp:
        recalls.append(tn / (tn + fp))
    return recalls


class ConfusionMatrixMetric(Metric):
    """A metric of 0/1 predictions that is a function of the confusion matrix (TP, FP, FN, TN).

    ``formula`` must accept soft counts (torch tensors) as well as integers: the AnyLoss and
    weighted-BCE baselines apply to every such metric, a user's own included, and AnyLoss
    minimises exactly this formula on a soft confusion matrix."""

    higher_is_better = True
    decomposable = False

    def compute(self, predictions: Any, targets: Any) -> float:
        return float(self.from_counts(*confusion_counts(predictions, targets)))

    def from_counts(self, tp: int, fp: int, fn: int, tn: int) -> float:
        """The metric of hard counts; override where an empty class needs a defined value."""
        return float(self.formula(tp, fp, fn, tn))

    @abstractmethod
    def formula(self, tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
        """The metric as arithmetic on the counts; ``eps`` keeps soft-count divisions finite."""

    # --- decisions from probabilities --------------------------------------------------------------
    def at_threshold(self, probabilities: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray,
                     threshold: float = 0.5) -> float:
        """The metric of the decisions ``probability > threshold`` against 0/1 ``targets``."""
        return self.compute(np.asarray(probabilities, dtype=np.float64).ravel() > threshold, targets)

    def best_threshold(self, probabilities: Sequence[float] | np.ndarray,
                       targets: Sequence[int] | np.ndarray) -> tuple[float, float]:
        """``(threshold, value)``: the decision threshold that maximises the metric of
        ``probability > threshold`` on these samples, and the metric there.

        Every distinct split of the samples is a candidate, its threshold halfway between the two
        probabilities it separates (or just below the lowest, which makes every sample positive).
        Ties go to the threshold nearest 0.5, then to the lower one, so the default moves only as
        far as the data asks. Choose it on validation and apply it to test::

            threshold, _ = metric.best_threshold(val_probabilities, val_labels)
            metric.at_threshold(test_probabilities, test_labels, threshold)
        """
        p = np.asarray(probabilities, dtype=np.float64).ravel()
        y = np.asarray(targets).astype(bool).ravel()
        check_same_length(p, y, "threshold")
        if len(p) == 0:
            raise ValueError(f"{self.name}: no samples to choose a threshold on")
        order = np.argsort(-p, kind="stable")
        p, y = p[order], y[order]
        # Cut after the k highest probabilities (k = 0..n), only where the probability changes.
        distinct = np.flatnonzero(p[:-1] > p[1:]) + 1
        cuts = np.r_[0, distinct, len(p)]
        true_pos = np.r_[0, np.cumsum(y)]
        positives = int(y.sum())
        values, thresholds = [], []
        for k in cuts:
            tp = int(true_pos[k])
            fp, fn = int(k) - tp, positives - tp
            values.append(self.from_counts(tp, fp, fn, len(p) - positives - fp))
            if k == 0:
                thresholds.append(float(p[0]))  # nothing above the highest probability
            elif k == len(p):
                thresholds.append(float(np.nextafter(p[-1], -np.inf)))
            else:
                thresholds.append(float((p[k - 1] + p[k]) / 2))
        best = max(values)
        threshold = min((t for t, v in zip(thresholds, values) if v == best), key=lambda t: (abs(t - 0.5), t))
        return threshold, best


@register_metric("f_beta")
class FBeta(ConfusionMatrixMetric):
    """F-beta of the positive class. With no positive target and no positive prediction it is 1.0
    (nothing to find, nothing wrongly found), never a division by zero."""

    name = "f_beta"

    def __init__(self, beta: float = 1.0) -> None:
        if not beta > 0:
            raise ValueError(f"f_beta: beta must be > 0, got {beta!r}")
        self.beta = float(beta)

    def from_counts(self, tp: int, fp: int, fn: int, tn: int) -> float:
        if tp + fp + fn == 0:
            return 1.0
        return float(f_beta_from_counts(tp, fp, fn, self.beta))

    def formula(self, tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
        return f_beta_from_counts(tp, fp, fn, self.beta, eps)

    def __repr__(self) -> str:
        return f"FBeta(beta={self.beta})"


@register_metric("f1")
class F1(FBeta):
    """F1 of the positive class (F-beta with beta = 1)."""

    name = "f1"

    def __init__(self) -> None:
        super().__init__(beta=1.0)


@register_metric("balanced_accuracy")
class BalancedAccuracy(ConfusionMatrixMetric):
    """Mean of the per-class recalls, over the classes present in the targets."""

    name = "balanced_accuracy"

    def from_counts(self, tp: int, fp: int, fn: int, tn: int) -> float:
        recalls = _present_class_recalls(tp, fp, fn, tn)
        return float(np.mean(recalls)) if recalls else 0.0

    def formula(self, tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
        return balanced_accuracy_from_counts(tp, fp, fn, tn, eps)


@register_metric("gmean")
class GMean(ConfusionMatrixMetric):
    """Geometric mean of the per-class recalls, over the classes present in the targets."""

    name = "gmean"

    def from_counts(self, tp: int, fp: int, fn: int, tn: int) -> float:
        recalls = _present_class_recalls(tp, fp, fn, tn)
        return float(np.prod(recalls) ** (1 / len(recalls))) if recalls else 0.0

    def formula(self, tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
        return gmean_from_counts(tp, fp, fn, tn, eps)


@register_metric("accuracy")
class Accuracy(ConfusionMatrixMetric):
    """Fraction of correct predictions."""

    name = "accuracy"
    decomposable = True

    def from_counts(self, tp: int, fp: int, fn: int, tn: int) -> float:
        total = tp + fp + fn + tn
        return (tp + tn) / total if total else 0.0

    def formula(self, tp: Num, fp: Num, fn: Num, tn: Num, eps: float = 0.0) -> Num:
        return accuracy_from_counts(tp, fp, fn, tn, eps)

    def per_sample(self, predictions: Any, targets: Any) -> np.ndarray:
        check_same_length(predictions, targets, self.name)
        return (np.asarray(predictions).astype(bool).ravel() == np.asarray(targets).astype(bool).ravel()).astype(np.float64)
