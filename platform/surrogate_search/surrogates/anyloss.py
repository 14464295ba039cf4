"""AnyLoss (Han et al., KDD 2024): any confusion-matrix metric made differentiable.

Probabilities are sharpened by ``A(p) = 1 / (1 + exp(-L (p - 0.5)))`` so they sit near 0 or 1,
a soft confusion matrix is built from them (TP = sum y A, FP = sum A - TP, FN = sum y - TP,
TN = N - sum y - sum A + TP), and the loss is ``1 - metric`` of that matrix, evaluated with the
same formulas as the hard metric.
"""

from __future__ import annotations

import torch

from surrogate_search.metrics.classification import (
    accuracy_from_counts,
    balanced_accuracy_from_counts,
    f_beta_from_counts,
    gmean_from_counts,
)
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.surrogates.proxy import is_binary
from surrogate_search.tasks import Split, Task

EPS = 1e-7


def amplify(probabilities: torch.Tensor, amplification: float = 73.0) -> torch.Tensor:
    return torch.sigmoid(amplification * (probabilities - 0.5))


def soft_confusion(probabilities: torch.Tensor, targets: torch.Tensor, amplification: float = 73.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(TP, FP, FN, TN) of amplified probabilities against 0/1 targets."""
    a = amplify(probabilities, amplification)
    y = targets.float()
    tp = (y * a).sum()
    fp = a.sum() - tp
    fn = y.sum() - tp
    tn = y.numel() - y.sum() - a.sum() + tp
    return tp, fp, fn, tn


def anyloss(probabilities: torch.Tensor, targets: torch.Tensor, metric: str = "f1", beta: float = 1.0,
            amplification: float = 73.0) -> torch.Tensor:
    tp, fp, fn, tn = soft_confusion(probabilities, targets, amplification)
    if metric == "f1":
        value = f_beta_from_counts(tp, fp, fn, beta, eps=EPS)
    elif metric == "gmean":
        value = gmean_from_counts(tp, fp, fn, tn, eps=EPS)
    elif metric == "balanced_accuracy":
        value = balanced_accuracy_from_counts(tp, fp, fn, tn, eps=EPS)
    elif metric == "accuracy":
        value = accuracy_from_counts(tp, fp, fn, tn, eps=EPS)
    else:
        raise ValueError(f"anyloss: unknown metric {metric!r}; known: f1, gmean, balanced_accuracy, accuracy")
    return 1.0 - value


@register_loss("anyloss")
class AnyLoss(PostTuneLoss):
    """1 - metric of the soft confusion matrix of a batch (F-beta, G-mean, balanced accuracy, accuracy)."""

    name = "anyloss"

    def __init__(self, task: Task, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(task, config)
        anyloss(torch.zeros(1), torch.zeros(1), config.anyloss.metric)  # fail now on an unknown metric

    @classmethod
    def supports(cls, task: Task) -> bool:
        return is_binary(task)

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config.anyloss
        loss = anyloss(self.task.predict(outputs.float()), batch.tensors["targets"], c.metric, c.beta, c.amplification)
        return loss, {"anyloss": float(loss.detach())}
