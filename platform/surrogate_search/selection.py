"""Whether the model a run selected on val beats the base beyond val's noise.

A run's best-validation selection takes any improvement, and on a converged base the "improvement"
is often a handful of samples out of a thousand: as likely to be val's noise as a better model,
and then worse on test. :func:`win_share` measures how sure val is: on many random halves of val,
the share on which the selected model scores better than the base (a tie counts one half). Halves
drawn without replacement spread the metric about as much as val's own sampling does, and work for
set-level metrics (F1, recall@k) as well as per-sample ones, since no sample is ever repeated.
``leave_base_confidence`` in the post-tuning config is the share a run needs before it hands back
anything but the base.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from surrogate_search.metrics import ConfusionMatrixMetric
from surrogate_search.tasks import Split, Task

HALVES = 500
"""Random halves of val drawn per decision."""


def split_scorer(task: Task, model: nn.Module, split: Split, *, at_best_threshold: bool,
                 device: torch.device | str = "cpu") -> Callable[[np.ndarray], float]:
    """``score(indices)``: ``model``'s metric on those samples of ``split``. With
    ``at_best_threshold`` (confusion-matrix metrics) the decisions are taken at the threshold that is
    best on the whole split, as the selection and the reported figure take them."""
    metric = task.metric
    predictions = task.predict_split(model, split, device=device)
    if at_best_threshold:
        assert isinstance(metric, ConfusionMatrixMetric)
        probabilities = predictions.numpy().ravel()
        targets = np.asarray(split.labels)
        threshold, _ = metric.best_threshold(probabilities, targets)
        return lambda indices: metric.at_threshold(probabilities[indices], targets[indices], threshold)
    decoded: Sequence[Any] = task.decode(predictions)
    if metric.decomposable:
        values = metric.per_sample(decoded, split.labels)
        return lambda indices: float(values[indices].mean())
    items, labels = np.empty(len(decoded), dtype=object), np.empty(len(decoded), dtype=object)
    items[:], labels[:] = list(decoded), list(split.labels)  # object arrays: any item indexes whole
    return lambda indices: metric.compute(list(items[indices]), list(labels[indices]))


def win_share(task: Task, base: nn.Module, selected: nn.Module, split: Split, *, at_best_threshold: bool,
              seed: int = 0, halves: int = HALVES, device: torch.device | str = "cpu") -> float:
    """The share of ``halves`` random halves of ``split`` on which ``selected`` scores better than
    ``base`` (ties count one half): 0.5 when val cannot tell them apart, near 1 when every half agrees."""
    score_base = split_scorer(task, base, split, at_best_threshold=at_best_threshold, device=device)
    score_selected = split_scorer(task, selected, split, at_best_threshold=at_best_threshold, device=device)
    rng = np.random.default_rng(seed)
    n = len(split)
    sign = 1.0 if task.metric.higher_is_better else -1.0
    wins = 0.0
    for _ in range(halves):
        half = rng.choice(n, size=max(1, n // 2), replace=False)
        gain = sign * (score_selected(half) - score_base(half))
        wins += 1.0 if gain > 0 else 0.5 if gain == 0 else 0.0
    return wins / halves
