"""The metric interface and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from surrogate_search.registry import Registry


class NotDecomposableError(TypeError):
    """Raised when per-sample values are asked of a set-level metric such as F1."""


class Metric(ABC):
    """A non-differentiable quality measure of predictions against targets.

    ``compute`` gives the value over a whole split, in the units papers report (total edit
    distance, F1 in [0, 1], mean IoU). ``per_sample`` gives one value per sample where the metric
    decomposes; set-level metrics (F1, G-mean, ...) raise :class:`NotDecomposableError`.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    decomposable: ClassVar[bool] = True

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``, as Ray Tune and Optuna spell the direction."""
        return "max" if self.higher_is_better else "min"

    @abstractmethod
    def compute(self, predictions: Sequence[Any] | np.ndarray, targets: Sequence[Any] | np.ndarray) -> float:
        """The metric over a whole batch or split."""

    def per_sample(self, predictions: Sequence[Any] | np.ndarray, targets: Sequence[Any] | np.ndarray) -> np.ndarray:
        raise NotDecomposableError(f"metric {self.name!r} is defined on a whole set, not per sample")

    def __call__(self, predictions: Sequence[Any] | np.ndarray, targets: Sequence[Any] | np.ndarray) -> float:
        return self.compute(predictions, targets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_same_length(predictions: Sequence[Any] | np.ndarray, targets: Sequence[Any] | np.ndarray, name: str) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{name}: got {len(predictions)} predictions for {len(targets)} targets")


METRICS: Registry[Metric] = Registry("metric")
register_metric = METRICS.register


def get_metric(name: str, **options: Any) -> Metric:
    """Build the metric registered under ``name``, e.g. ``get_metric("f_beta", beta=2.0)``."""
    return METRICS.create(name, **options)


def list_metrics() -> list[str]:
    return METRICS.names()
