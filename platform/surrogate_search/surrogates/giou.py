"""GIoU loss (Rezatofighi et al., CVPR 2019): the standard hand-designed differentiable IoU loss.

IoU has no gradient once two boxes stop overlapping. Generalised IoU subtracts the share of the
smallest enclosing box ``C`` that neither box covers, ``GIoU = IoU - |C minus (A or B)| / |C|``, which
lies in (-1, 1], equals IoU for nested boxes and keeps pulling disjoint boxes together. The loss is
``1 - GIoU`` averaged over the batch.
"""

from __future__ import annotations

import torch

from surrogate_search.metrics.iou import IoU
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.tasks import Split, Task

EPS = 1e-7


def generalized_iou(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(giou, iou)`` of each predicted box with its target; boxes are rows ``(x1, y1, x2, y2)``
    with ``x1 <= x2`` and ``y1 <= y2``, in any common unit."""
    p, t = predictions, targets.to(predictions.dtype)
    inter_w = (torch.minimum(p[:, 2], t[:, 2]) - torch.maximum(p[:, 0], t[:, 0])).clamp_min(0)
    inter_h = (torch.minimum(p[:, 3], t[:, 3]) - torch.maximum(p[:, 1], t[:, 1])).clamp_min(0)
    inter = inter_w * inter_h
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = area_p + area_t - inter
    iou = inter / (union + EPS)
    hull = (torch.maximum(p[:, 2], t[:, 2]) - torch.minimum(p[:, 0], t[:, 0])) * (
        torch.maximum(p[:, 3], t[:, 3]) - torch.minimum(p[:, 1], t[:, 1]))
    return iou - (hull - union) / (hull + EPS), iou


@register_loss("giou")
class GIoULoss(PostTuneLoss):
    """``1 - GIoU`` of the predicted boxes against the targets, for every task judged by box IoU
    whose ``predict`` gives boxes ``(x1, y1, x2, y2)`` (its ``surrogate_targets`` the true ones)."""

    @classmethod
    def supports(cls, task: Task) -> bool:
        return isinstance(task.metric, IoU) and type(task).surrogate_targets is not Task.surrogate_targets

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        giou, iou = generalized_iou(self.task.predict(outputs.float()), self.task.surrogate_targets(batch))
        loss = (1.0 - giou).mean()
        return loss, {"giou_loss": float(loss.detach()), "batch_iou": float(iou.detach().mean())}
