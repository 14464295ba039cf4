"""AnyLoss (Han et al., KDD 2024): any confusion-matrix metric made differentiable.

Probabilities are sharpened by ``A(p) = 1 / (1 + exp(-L (p - 0.5)))`` so they sit near 0 or 1,
a soft confusion matrix is built from them (TP = sum y A, FP = sum A - TP, FN = sum y - TP,
TN = N - sum y - sum A + TP), and the loss is the metric's error on that matrix, evaluated with
the metric's own formula (:class:`~surrogate_search.metrics.ConfusionMatrixMetric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surrogate_search.metrics import METRICS, ConfusionMatrixMetric, get_metric
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.surrogates.proxy import judged_by_confusion_matrix
from surrogate_search.tasks import Split, Task

EPS = 1e-7
AMPLIFICATION = 73.0
"""L of the AnyLoss paper and its notebooks: the largest whole L for which ``A(1)`` stays below 1
in 64-bit floats (``exp(-L/2)`` under half the machine epsilon rounds ``A`` to a hard label)."""
AMPLIFICATION_RANGE = (10.0, 73.0)
"""The L that meet the AnyLoss paper's two conditions on ``A``: it sharpens, ``A(p) > p`` for every
p in (0.5, 0.99] (L >= 10; L = 9 leaves A(0.99) = 0.988), and it never reaches 0 or 1, where its
gradient ``L A (1 - A)`` is exactly 0 (L <= 73, above)."""


def amplify(probabilities: torch.Tensor, amplification: float = AMPLIFICATION) -> torch.Tensor:
    return torch.sigmoid(amplification * (probabilities - 0.5))


def soft_confusion(probabilities: torch.Tensor, targets: torch.Tensor, amplification: float = AMPLIFICATION
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(TP, FP, FN, TN) of amplified probabilities against 0/1 targets."""
    a = amplify(probabilities, amplification)
    y = targets.float()
    tp = (y * a).sum()
    fp = a.sum() - tp
    fn = y.sum() - tp
    tn = y.numel() - y.sum() - a.sum() + tp
    return tp, fp, fn, tn


def confusion_matrix_metrics() -> list[str]:
    """Registered metrics that AnyLoss can optimise."""
    return [n for n in METRICS.in_order() if isinstance(METRICS.get(n), type)
            and issubclass(METRICS.get(n), ConfusionMatrixMetric)]  # type: ignore[arg-type]


def anyloss(probabilities: torch.Tensor, targets: torch.Tensor, metric: str | ConfusionMatrixMetric = "f1",
            amplification: float = AMPLIFICATION) -> torch.Tensor:
    """The error (``1 - value``, or the value of a lower-is-better metric) of ``metric`` on the
    soft confusion matrix of ``probabilities`` against 0/1 ``targets``."""
    if isinstance(metric, str):
        if metric not in confusion_matrix_metrics():
            raise ValueError(f"anyloss: unknown metric {metric!r}; known: {', '.join(confusion_matrix_metrics())}")
        metric = get_metric(metric)  # type: ignore[assignment]
    assert isinstance(metric, ConfusionMatrixMetric)
    value = metric.formula(*soft_confusion(probabilities, targets, amplification), eps=EPS)
    return 1.0 - value if metric.higher_is_better else value


@dataclass
class AnyLossOptions:
    metric: str | None = None
    """The confusion-matrix metric to optimise; None: the task's own metric (what it is judged by)."""
    amplification: float = AMPLIFICATION
    """L in ``A(p) = 1 / (1 + exp(-L (p - 0.5)))``, in [10, 73] (:data:`AMPLIFICATION_RANGE`); 73 as
    in the AnyLoss paper and notebooks. A smaller L sharpens less and reaches further from 0.5: at
    L = 73 a probability more than 0.11 from 0.5 gets under 1/1000 of the peak gradient, so from a
    confident base model AnyLoss moves mostly the samples near the decision threshold (at L = 10,
    every probability is within that)."""

    def validate(self) -> None:
        low, high = AMPLIFICATION_RANGE
        value = self.amplification
        if not low <= value <= high:  # NaN fails too
            raise ValueError(f"post-tuning config: anyloss.amplification must be in [{low:g}, {high:g}] (AnyLoss's L: "
                             f"below {low:g} A(p) no longer sharpens confident probabilities, above {high:g} it rounds "
                             f"to exactly 0 or 1 and its gradient vanishes), got {value!r}")
        if self.metric is not None and self.metric not in confusion_matrix_metrics():
            raise ValueError(f"post-tuning config: anyloss.metric {self.metric!r} is not a confusion-matrix metric; "
                             f"known: {', '.join(confusion_matrix_metrics())}")


@register_loss("anyloss")
class AnyLoss(PostTuneLoss):
    """The metric's error on the soft confusion matrix of a batch (F1, G-mean, balanced accuracy, ...)."""

    Options = AnyLossOptions

    def __init__(self, task: Task, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(task, config)
        self.metric = get_metric(self.options.metric) if self.options.metric else task.metric

    @classmethod
    def supports(cls, task: Task) -> bool:
        return judged_by_confusion_matrix(task)

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        predictions = self.task.predict(outputs.float())
        loss = anyloss(predictions, batch.tensors["targets"], self.metric, self.options.amplification)
        return loss, {"anyloss": float(loss.detach())}
