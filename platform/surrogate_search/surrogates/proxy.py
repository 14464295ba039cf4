"""Fixed baselines: proxy continuation (the honest control) and weighted BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from surrogate_search.metrics import ConfusionMatrixMetric
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.tasks import Split, Task


@register_loss("proxy")
class ProxyContinuation(PostTuneLoss):
    """Keep training with the task's own proxy loss (CTC, BCE) for the same extra budget."""

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.task.proxy_loss(outputs, batch)
        return loss, {"proxy_loss": float(loss.detach())}


def judged_by_confusion_matrix(task: Task) -> bool:
    """Whether the task's metric is a function of a binary confusion matrix (F1, G-mean, a user's own)."""
    return isinstance(task.metric, ConfusionMatrixMetric)


@register_loss("weighted_proxy")
class WeightedBCE(PostTuneLoss):
    """BCE with positives weighted by the negative/positive ratio of the training split."""

    def __init__(self, task: Task, config, pos_weight: float | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(task, config)
        self.register_buffer("pos_weight", torch.tensor(1.0 if pos_weight is None else pos_weight))

    @classmethod
    def supports(cls, task: Task) -> bool:
        return judged_by_confusion_matrix(task)

    def prepare(self, train: Split) -> None:
        labels = train.tensors["targets"]
        positives = float(labels.sum())
        self.pos_weight.fill_((len(labels) - positives) / max(positives, 1.0))

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.binary_cross_entropy_with_logits(outputs.float(), batch.tensors["targets"], pos_weight=self.pos_weight)
        return loss, {"weighted_bce": float(loss.detach())}
